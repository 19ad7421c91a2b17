#!/usr/bin/env bash
# bench-decode.sh BEFORE AFTER [EVENTS] — the decoder alone at two commits, in one run.
#
# BEFORE and AFTER are commits (anything `git rev-parse` takes). Each is unpacked (`git archive`)
# into one bench tree under $BENCH_DIR, this checkout's dataflows/examples/decode_bench.rs is put
# in (it calls only `dataflows::decode::decode(&[u8])`, the same at both), and the example is
# built there and kept as bin/decode_bench-<commit> (built once per commit; the bench tree's
# target dir is seeded from ./target the first time). The workload is `stockflow gen` output
# (EVENTS events, default 1M, over 100k keys, 1% bad lines, 1% disorder, seed 7) from $STOCKFLOW
# (default target/release/stockflow).
#
# The two binaries then run alternately for DECODE_ROUNDS rounds (default 7), so that a shared,
# noisy machine hits both alike; each run decodes every line DECODE_PASSES times (default 3) and
# reports its fastest pass: CPU ns per line (the thread's own CPU time) and lines per second. The
# script prints each round, the median of each side and the median of the per-round ratios, and
# fails unless both decode every line to the same result (a digest of every result).
set -euo pipefail
cd "$(dirname "$0")/.."
usage="usage: bench-decode.sh BEFORE_COMMIT AFTER_COMMIT [EVENTS]"
before=$(git rev-parse --short "${1:?$usage}^{commit}")
after=$(git rev-parse --short "${2:?$usage}^{commit}")
events=${3:-1000000}
rounds=${DECODE_ROUNDS:-7}
passes=${DECODE_PASSES:-3}
root=${BENCH_DIR:-/tmp/stockflow-bench}/decode
stockflow=${STOCKFLOW:-target/release/stockflow}
[ -x "$stockflow" ] || { echo "bench-decode.sh: no $stockflow; run cargo build --release first (or set STOCKFLOW)" >&2; exit 2; }
mkdir -p "$root/bin"

# One bench tree for every commit: each build unpacks its commit with fresh mtimes, so cargo
# rebuilds the workspace crates and reuses the dependencies.
build() {
  local commit=$1 bin="$root/bin/decode_bench-$1"
  [ -x "$bin" ] && return
  [ -d "$root/target" ] || cp -r target "$root/target"
  rm -rf "$root/src" && mkdir -p "$root/src"
  git archive "$commit" | tar -x -m -C "$root/src"
  mkdir -p "$root/src/dataflows/examples"
  cp dataflows/examples/decode_bench.rs "$root/src/dataflows/examples/"
  echo "building decode_bench at $commit ..." >&2
  (cd "$root/src" && CARGO_TARGET_DIR="$root/target" cargo build --release --locked -q -p dataflows --example decode_bench)
  cp "$root/target/release/examples/decode_bench" "$bin"
}
build "$before"
build "$after"

input="$root/input-e$events"
if [ ! -f "$input/.complete" ]; then
  rm -rf "$input"
  "$stockflow" gen --out "$input" --events "$events" --skus 1000 --stores 98 --dcs 2 --partitions 4 \
    --bad 0.01 --disorder 0.01 --seed 7 --quiet
  touch "$input/.complete"
fi

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
sums=$(for c in "$before" "$after"; do "$root/bin/decode_bench-$c" --passes 1 --digest "$input" | field digest; done | sort -u | wc -l)
lines=$("$root/bin/decode_bench-$after" --passes 1 "$input" | sed 's/^lines=\([0-9]*\).*/\1/')

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "before: $before; after: $after; workload: $lines lines ($input), $passes passes a run, fastest kept"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | before ns/line | after ns/line | before / after |"
echo "|---|---|---|---|"
results=$(mktemp)
for round in $(seq 1 "$rounds"); do
  b=$("$root/bin/decode_bench-$before" --passes "$passes" "$input" | field ns_per_line)
  a=$("$root/bin/decode_bench-$after" --passes "$passes" "$input" | field ns_per_line)
  echo "$b $a" | tee -a "$results" | awk -v r="$round" '{ printf "| %d | %.1f | %.1f | %.2f |\n", r, $1, $2, $1 / $2 }'
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
mb=$(awk '{ print $1 }' "$results" | median)
ma=$(awk '{ print $2 }' "$results" | median)
mr=$(awk '{ print $1 / $2 }' "$results" | median)
rm -f "$results"
echo
awk -v b="$mb" -v a="$ma" -v r="$mr" 'BEGIN {
  printf "median: before %.1f ns/line (%.2fM lines/s), after %.1f ns/line (%.2fM lines/s); ratio of medians %.2f, median ratio %.2f\n", b, 1e3 / b, a, 1e3 / a, b / a, r }'
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$sums" -ne 1 ]; then
  echo "RESULTS DIFFER: the two decoders do not decode every line alike"
  exit 1
fi
echo "both decoded every line to the same results"
