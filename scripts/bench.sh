#!/usr/bin/env bash
# bench.sh [EVENTS] [SKUS] [STORES] — replay throughput, memory and the engine's ceiling.
#
# Generates a workload with `stockflow gen` (kept between runs under $BENCH_DIR), replays it
# end to end (JSON files in, every output written) at 1 and 2 workers, runs the minimal
# differential job (`ceiling`: decode, exchange by key, count per key) on the same files, then
# the replay as a cluster of 2 processes x 1 worker on loopback, checks that every replay wrote
# identical bytes, and prints a markdown table row per run (peak RSS of a cluster: the sum).
# Defaults: 10M events over 1M SKU-locations (10000 skus x (98 stores + 2 DCs)).
#
# BENCH_DROP_OUTPUTS=1 keeps only a digest of each replay's output files (compared instead of
# the files) and deletes them once digested: at 100M events a replay writes ~21 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
skus=${2:-10000}
stores=${3:-98}
dcs=2
keys=$((skus * (stores + dcs)))
root=${BENCH_DIR:-/tmp/stockflow-bench}
dir="$root/e$events-k$keys"

# BENCH_BIN: a directory holding already built `stockflow` and `ceiling` (e.g. copies, so that
# a rebuild during a long run cannot swap the binaries under it); default: build them here.
if [ -n "${BENCH_BIN:-}" ]; then
  bin=$BENCH_BIN
else
  cargo build --release --bin stockflow --bin ceiling >&2
  bin=target/release
fi
if [ ! -f "$dir/input/.complete" ]; then
  rm -rf "$dir/input"
  "$bin/stockflow" gen --out "$dir/input" --events "$events" --skus "$skus" --stores "$stores" \
    --dcs "$dcs" --partitions 4 --seed 1 --quiet
  touch "$dir/input/.complete"
fi
lines=$(cat "$dir"/input/*.jsonl | wc -l)
mb=$(du -sm "$dir/input" | cut -f1)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: $lines lines ($events events + setup), $keys keys, $mb MB, 4 partitions"
echo
echo "| job | workers | seconds | lines/s | MB/s | peak RSS MB | RSS bytes/key | ratio to ceiling |"
echo "|---|---|---|---|---|---|---|---|"
# Digest of an output directory (file names and contents), written beside it; the directory
# itself goes when BENCH_DROP_OUTPUTS=1.
digest_outputs() {
  (cd "$dir/$1" && find . -type f | LC_ALL=C sort | xargs b2sum) >"$dir/$1.b2sum"
  if [ "${BENCH_DROP_OUTPUTS:-0}" = 1 ]; then rm -rf "${dir:?}/$1"; fi
}

for w in 1 2; do
  ceiling_out=$( { /usr/bin/time -f "%e %M" "$bin/ceiling" "$dir/input" -w "$w" 2>&1 >/dev/null; } | tail -1)
  read -r csecs crss <<<"$ceiling_out"
  replay_out=$( { /usr/bin/time -f "%e %M" "$bin/stockflow" replay "$dir/input" --out "$dir/out-w$w" -w "$w" -q 2>&1 >/dev/null; } | tail -1)
  read -r secs rss <<<"$replay_out"
  digest_outputs "out-w$w"
  awk -v job=ceiling -v w="$w" -v s="$csecs" -v rss="$crss" -v n="$lines" -v mb="$mb" -v k="$keys" \
    'BEGIN { printf "| %s | %d | %.1f | %.0f | %.1f | %.0f | %.0f | 1 |\n", job, w, s, n/s, mb/s, rss/1024, rss*1024/k }'
  awk -v job=stockflow -v w="$w" -v s="$secs" -v rss="$rss" -v n="$lines" -v mb="$mb" -v k="$keys" -v cs="$csecs" \
    'BEGIN { printf "| %s | %d | %.1f | %.0f | %.1f | %.0f | %.0f | %.2f |\n", job, w, s, n/s, mb/s, rss/1024, rss*1024/k, cs/s }'
done

# The same replay as 2 processes x 1 worker; process 0 writes the outputs.
hosts="$dir/hosts"
printf '127.0.0.1:%d\n127.0.0.1:%d\n' 23101 23102 >"$hosts"
start=$(date +%s.%N)
/usr/bin/time -f "%M" -o "$dir/p1.rss" "$bin/stockflow" replay "$dir/input" --out "$dir/out-n2-p1" -n 2 -p 1 --hostfile "$hosts" -q \
  >/dev/null 2>"$dir/p1.err" &
p1=$!
/usr/bin/time -f "%M" -o "$dir/p0.rss" "$bin/stockflow" replay "$dir/input" --out "$dir/out-n2" -n 2 -p 0 --hostfile "$hosts" -q \
  >/dev/null 2>"$dir/p0.err"
wait "$p1"
secs=$(echo "$(date +%s.%N) - $start" | bc)
digest_outputs out-n2
rss=$(( $(tail -1 "$dir/p0.rss") + $(tail -1 "$dir/p1.rss") ))
awk -v job="stockflow, 2 processes" -v w=2 -v s="$secs" -v rss="$rss" -v n="$lines" -v mb="$mb" -v k="$keys" \
  'BEGIN { printf "| %s | %d | %.1f | %.0f | %.1f | %.0f | %.0f | |\n", job, w, s, n/s, mb/s, rss/1024, rss*1024/k }'

echo; echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
same=1
for other in out-w2 out-n2; do
  cmp -s "$dir/out-w1.b2sum" "$dir/$other.b2sum" || { echo "outputs of $other DIFFER from out-w1"; same=0; }
done
if [ "$same" = 1 ]; then
  echo; echo "outputs at 1 worker, 2 workers and 2 processes: byte-identical"
else
  exit 1
fi
