#!/usr/bin/env bash
# bench-ab.sh BEFORE AFTER [EVENTS] [SKUS] [STORES] — the same replay by two binaries, in one run.
#
# BEFORE and AFTER are directories holding a built `stockflow` (copies: a rebuild during the run
# cannot swap them). Generates the workload with AFTER's `stockflow gen` (kept under $BENCH_DIR),
# then replays it with each binary at 1 and 2 workers (and as 2 processes x 1 worker with
# AB_CLUSTER=1), alternating BEFORE and AFTER for AB_ROUNDS rounds (default 2), so that a noisy
# machine hits both alike. Prints one markdown row per run: wall seconds, CPU seconds (user +
# sys), peak RSS, and the b2sum of the outputs; the script fails if any two runs' outputs differ
# (a change that moves one output byte is a bug). The machine, commit and load go first.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: bench-ab.sh BEFORE_DIR AFTER_DIR [EVENTS] [SKUS] [STORES]}
after=${2:?usage: bench-ab.sh BEFORE_DIR AFTER_DIR [EVENTS] [SKUS] [STORES]}
events=${3:-10000000}
skus=${4:-10000}
stores=${5:-98}
rounds=${AB_ROUNDS:-2}
. scripts/bench-common.sh
bench_workload "$after" "$events" "$skus" "$stores"

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
echo "before: $before ($(stat -c %y "$before/stockflow" | cut -d. -f1)); after: $after ($(stat -c %y "$after/stockflow" | cut -d. -f1))"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: $lines lines, $keys keys, 4 partitions ($dir/input)"
echo
echo "| binary | round | layout | wall s | CPU s | lines/s (wall) | peak RSS MB | outputs b2sum |"
echo "|---|---|---|---|---|---|---|---|"


# One replay: $1 label, $2 binary dir, $3 round, $4 layout (w1, w2, 2x1).
replay() {
  local out="$dir/ab-$1-$4" t0 t1 stats
  rm -rf "$out"
  t0=$(date +%s.%N)
  case "$4" in
    w1 | w2)
      stats=$( { /usr/bin/time -f "%U %S %M" "$2/stockflow" replay "$dir/input" --out "$out" -w "${4#w}" -q 2>&1 >/dev/null; } | tail -1) ;;
    2x1)
      printf '127.0.0.1:%s\n127.0.0.1:%s\n' 22101 22102 >"$dir/hosts"
      /usr/bin/time -o "$dir/time-p1" -f "%U %S %M" "$2/stockflow" replay "$dir/input" --out "$out" -n 2 -p 1 --hostfile "$dir/hosts" -q >/dev/null 2>&1 &
      local p1=$!
      stats=$( { /usr/bin/time -f "%U %S %M" "$2/stockflow" replay "$dir/input" --out "$out" -n 2 -p 0 --hostfile "$dir/hosts" -q 2>&1 >/dev/null; } | tail -1)
      wait "$p1"
      stats="$stats $(cat "$dir/time-p1")" ;;
  esac
  t1=$(date +%s.%N)
  local sum
  sum=$(bench_digest "$out")
  echo "$sum" >>"$dir/ab-digests"
  rm -rf "$out"
  echo "$stats" | awk -v b="$1" -v r="$3" -v l="$4" -v w0="$t0" -v w1="$t1" -v n="$lines" -v d="$sum" '
    { cpu = $1 + $2; rss = $3; if (NF >= 6) { cpu += $4 + $5; rss += $6 } }
    END { printf "| %s | %d | %s | %.1f | %.1f | %.0f | %.0f | %s |\n", b, r, l, w1 - w0, cpu, n / (w1 - w0), rss / 1024, d }'
}

rm -f "$dir/ab-digests"
layouts="w1 w2"
[ "${AB_CLUSTER:-0}" = 1 ] && layouts="$layouts 2x1"
for round in $(seq 1 "$rounds"); do
  for layout in $layouts; do
    replay before "$before" "$round" "$layout"
    replay after "$after" "$round" "$layout"
  done
done
distinct=$(sort -u "$dir/ab-digests" | wc -l)
echo
if [ "$distinct" -ne 1 ]; then
  echo "OUTPUTS DIFFER: $distinct distinct digests"
  exit 1
fi
echo "every run wrote the same bytes ($(head -1 "$dir/ab-digests"))"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
