#!/usr/bin/env bash
# bench-exchange.sh [EVENTS] [SKUS] [STORES] — bytes sent between the processes of a cluster, per input event.
#
# Replays the bench.sh workload (same generator and defaults: 10M events over 1M keys, kept
# under $BENCH_DIR) as 2 processes x 1 worker, with the one connection between the processes
# going through a counting relay (scripts/byte-relay.py): process 1's hostfile names the
# relay's port as process 0's address, the relay forwards to process 0 and counts the bytes
# each way. No binary is changed or asked for its numbers, so any build is measured the same
# way. `ceiling` (one exchange of (sku, loc) per line: the least a keyed job sends) runs the
# same way as the reference.
#
# The counts are TCP payload (timely's message headers, progress traffic and the cluster
# handshake included; IP/TCP headers not). The relay costs CPU, so the run's seconds are not
# a throughput figure (use bench.sh); the bytes are.
#
# Binaries as in bench.sh: BENCH_BIN=DIR (default: build here), BENCH_BEFORE=DIR to measure
# another build in the same run. The replays' outputs must be byte-identical (b2sum).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
skus=${2:-10000}
stores=${3:-98}
. scripts/bench-common.sh
bench_builds
bench_workload "$after" "$events" "$skus" "$stores"

echo "machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: $lines lines ($events events + setup), $keys keys, 4 partitions; 2 processes x 1 worker"
echo
echo "| binary | job | process 1 -> 0 MB | process 0 -> 1 MB | total MB | bytes/event | bytes/line | wall s |"
echo "|---|---|---|---|---|---|---|---|"

port=24101
relay=
trap '[ -n "$relay" ] && kill "$relay" 2>/dev/null || true' EXIT

# $1 label, $2 binary dir, $3 job (stockflow, ceiling).
measure() {
  local label=$1 bin=$2 job=$3 out="$dir/xchg-out-$1" counts="$dir/xchg-counts" t0 t1
  port=$((port + 3))
  local p0=$port p1=$((port + 1)) via=$((port + 2))
  printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$p0" "$p1" >"$dir/hosts-p0"
  printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$via" "$p1" >"$dir/hosts-p1"
  rm -rf "$out" "$counts"
  scripts/byte-relay.py "$via" "$p0" "$counts" &
  relay=$!
  local cmd=("$bin/ceiling" "$dir/input") hostflag=-h
  [ "$job" = stockflow ] && cmd=("$bin/stockflow" replay "$dir/input" --out "$out" -q) && hostflag=--hostfile
  t0=$(date +%s.%N)
  "${cmd[@]}" -n 2 -p 1 "$hostflag" "$dir/hosts-p1" >/dev/null 2>"$dir/xchg-p1.err" &
  local second=$!
  "${cmd[@]}" -n 2 -p 0 "$hostflag" "$dir/hosts-p0" >/dev/null 2>"$dir/xchg-p0.err" ||
    { cat "$dir/xchg-p0.err" >&2; exit 1; }
  wait "$second" || { cat "$dir/xchg-p1.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  for _ in $(seq 1 100); do [ -s "$counts" ] && break; sleep 0.1; done
  [ -s "$counts" ] || kill -TERM "$relay"
  wait "$relay" || true
  relay=
  local sum=-
  if [ "$job" = stockflow ]; then sum=$(bench_digest "$out"); rm -rf "$out"; echo "$sum" >>"$dir/xchg-digests"; fi
  awk -v b="$label" -v j="$job" -v e="$events" -v n="$lines" -v s="$(echo "$t1 - $t0" | bc)" '
    { up = $1; down = $2; t = up + down
      printf "| %s | %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f |\n", b, j, up / 1e6, down / 1e6, t / 1e6, t / e, t / n, s }' "$counts"
}

rm -f "$dir/xchg-digests"
for job in ceiling stockflow; do
  for i in "${!labels[@]}"; do
    measure "${labels[$i]}" "${bins[$i]}" "$job"
  done
done
echo
if [ "$(sort -u "$dir/xchg-digests" | wc -l)" -ne 1 ]; then
  echo "OUTPUTS DIFFER: $(sort -u "$dir/xchg-digests" | tr '\n' ' ')"
  exit 1
fi
echo "replays through the relay (${labels[*]}) wrote the same bytes: $(head -1 "$dir/xchg-digests"); load after $(cut -d' ' -f1-3 /proc/loadavg)"
