#!/usr/bin/env bash
# bench-state.sh [EVENTS] [SKUS] [STORES] — bytes of state per key: steady and peak RSS of a
# 1-worker replay, without and with an open hold on every key.
#
# Generates a workload with `stockflow gen` (bench-common.sh: kept under $BENCH_DIR, 4
# partitions, 2 DCs, seed 1); the "holds" variant adds one file with a `reserve` per key at the
# setup's time (qty 1, expiring two days later), so that every key holds one hold all day. Both
# replays run with `--until` the end of the generated day, so the holds never expire inside the
# run. RSS is sampled every 0.2 s from /proc: `peak` is the kernel's high-water mark (VmHWM),
# the setup tick's; `steady` is the median of the samples of the run's second half, the state
# after the setup tick. Bytes per key divide by the workload's keys.
# Defaults: 2M events over 1M SKU-locations (10000 skus x (98 stores + 2 DCs)).
#
# Binaries: BENCH_BIN=DIR and BENCH_BEFORE=DIR as in bench.sh (each variant runs BEFORE then
# the binary above, and both must write the same bytes). BENCH_WORKERS=N (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
skus=${2:-10000}
stores=${3:-98}
workers=${BENCH_WORKERS:-1}
. scripts/bench-common.sh
bench_builds
bench_workload "$after" "$events" "$skus" "$stores"

# The holds file: one reserve per key, from the setup's policy lines (one per key).
holds="$dir/holds"
if [ ! -f "$holds/.complete" ]; then
  rm -rf "$holds" && mkdir -p "$holds"
  cat "$dir"/input/*.jsonl | grep '^{"type":"policy"' | awk -F'"' '
    !seen[$10 "," $14]++ {
      ts = substr($7, 2, length($7) - 2)
      printf "{\"type\":\"reserve\",\"ts\":%s,\"sku\":\"%s\",\"loc\":\"%s\",\"res_id\":\"H\",\"qty\":1,\"expires_at\":%.0f}\n", ts, $10, $14, ts + 2 * 86400000
    }' >"$holds/holds.jsonl"
  touch "$holds/.complete"
fi
start=$(head -1 "$dir/input/part-00.jsonl" | sed 's/.*"ts":\([0-9]*\).*/\1/')
until=$((start + 86400000))

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
for i in "${!labels[@]}"; do echo "${labels[$i]}: ${bins[$i]}"; done
echo "workload: $lines lines, $keys keys ($dir/input); holds: $(wc -l <"$holds/holds.jsonl") reserves; $workers worker(s); --until $until"
echo
echo "| binary | holds | load | wall s | peak RSS MB | steady RSS MB | peak B/key | steady B/key | digest |"
echo "|---|---|---|---|---|---|---|---|---|"

# One run: $1 label, $2 binary dir, $3 variant (none, one). Prints the row; digests go to $sums.
sums="$dir/state-digests"
: >"$sums"
run_one() {
  local label=$1 bin=$2 variant=$3 out="$dir/out-state-$1" samples="$dir/rss-$1-$3" load t0 t1 pid hwm=0
  local inputs=("$dir/input")
  [ "$variant" = one ] && inputs+=("$holds/holds.jsonl")
  rm -rf "$out"; : >"$samples"
  load=$(cut -d' ' -f1 /proc/loadavg)
  t0=$(date +%s.%N)
  "$bin/stockflow" replay "${inputs[@]}" --out "$out" --until "$until" -w "$workers" -q &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    awk '/^VmRSS/ {r = $2} /^VmHWM/ {h = $2} END {if (r) print r, h}' "/proc/$pid/status" 2>/dev/null >>"$samples" || true
    sleep 0.2
  done
  wait "$pid"
  t1=$(date +%s.%N)
  local digest
  digest=$(bench_digest "$out")
  rm -rf "$out"
  echo "$label $variant $digest" >>"$sums"
  local n steady
  n=$(wc -l <"$samples")
  hwm=$(awk '$2 > h { h = $2 } END { print h + 0 }' "$samples")
  steady=$(tail -n $((n - n / 2)) "$samples" | cut -d' ' -f1 | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] + 0 }')
  awk -v b="$label" -v v="$variant" -v load="$load" -v w0="$t0" -v w1="$t1" -v k="$keys" -v d="$digest" \
    -v hwm="$hwm" -v steady="$steady" 'BEGIN {
      printf "| %s | %s | %s | %.1f | %.0f | %.0f | %.0f | %.0f | %s |\n", b, v, load, w1 - w0, hwm / 1024, steady / 1024,
        hwm * 1024 / k, steady * 1024 / k, d
    }'
}

for variant in none one; do
  for i in "${!labels[@]}"; do run_one "${labels[$i]}" "${bins[$i]}" "$variant"; done
done
echo; echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
for variant in none one; do
  if [ "$(awk -v v="$variant" '$2 == v { print $3 }' "$sums" | sort -u | wc -l)" -ne 1 ]; then
    echo "OUTPUTS DIFFER (holds: $variant):"; cat "$sums"; exit 1
  fi
done
echo "every binary wrote the same bytes, per variant"
