# bench-common.sh — sourced by the replay benchmarks (bench.sh, bench-exchange.sh, bench-ab.sh):
# the builds to run and the generated workload, so that every script measures the same files.

# The builds to run, into the arrays `labels` and `bins` (and `after`, the newest): BENCH_BIN=DIR
# (copies of `stockflow` and `ceiling`) or a release build made here, and with BENCH_BEFORE=DIR
# an older build first.
bench_builds() {
  if [ -n "${BENCH_BIN:-}" ]; then
    after=$BENCH_BIN
  else
    cargo build --release --bin stockflow --bin ceiling >&2
    after=target/release
  fi
  labels=(); bins=()
  if [ -n "${BENCH_BEFORE:-}" ]; then
    labels+=(before after); bins+=("$BENCH_BEFORE" "$after")
  else
    labels+=(this); bins+=("$after")
  fi
}

# bench_workload BIN EVENTS SKUS STORES: sets `dir` ($BENCH_DIR/e<events>-k<keys>, kept between
# runs), `keys` and `lines`, generating `$dir/input` (4 partitions, 2 DCs, seed 1) with BIN's
# `stockflow gen` unless a complete one is there.
bench_workload() {
  local bin=$1 events=$2 skus=$3 stores=$4
  keys=$((skus * (stores + 2)))
  dir="${BENCH_DIR:-/tmp/stockflow-bench}/e$events-k$keys"
  mkdir -p "$dir"
  if [ ! -f "$dir/input/.complete" ]; then
    rm -rf "$dir/input"
    "$bin/stockflow" gen --out "$dir/input" --events "$events" --skus "$skus" --stores "$stores" \
      --dcs 2 --partitions 4 --seed 1 --quiet
    touch "$dir/input/.complete"
  fi
  lines=$(cat "$dir"/input/*.jsonl | wc -l)
}

# Digest of an output directory: the b2sum of every file's name and b2sum.
bench_digest() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs b2sum) | b2sum | cut -c1-16; }
