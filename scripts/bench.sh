#!/usr/bin/env bash
# bench.sh [EVENTS] [SKUS] [STORES] — replay throughput, scaling and memory, against the engine's ceiling.
#
# Generates a workload with `stockflow gen` (kept between runs under $BENCH_DIR), then runs two
# jobs on it in three layouts: `stockflow replay` end to end (JSON files in, every output file
# written) and `ceiling` (the minimal differential job: decode, exchange by key, count per key),
# each at 1 worker, 2 workers, and 2 processes x 1 worker on loopback. It prints one markdown row
# per run (wall and CPU seconds, peak RSS; a cluster's CPU and RSS are the sums of its two
# processes), then the speedups of 2 workers and of 2 processes over 1 worker, stockflow's beside
# the ceiling's, and checks that every replay wrote the same bytes (b2sum of every output file).
# Defaults: 10M events over 1M SKU-locations (10000 skus x (98 stores + 2 DCs)).
#
# Binaries:
#   BENCH_BIN=DIR      already built `stockflow` and `ceiling` (copies, so that a rebuild during a
#                      long run cannot swap them); default: build them here (target/release).
#   BENCH_BEFORE=DIR   another build to compare, in the same run: every (job, layout) runs
#                      BEFORE then the binary above ("after"), so that a noisy machine hits both
#                      alike, and the outputs of both must be byte-identical.
#   BENCH_ROUNDS=N     repeat everything N times (default 1); the speedups use each run's
#                      fastest round (the one least disturbed by other load).
# The 1-minute load average is printed before every run: on a shared machine compare the ratios
# of one table, not seconds across tables.
#
# Outputs are deleted once digested (a 10M-event replay writes ~2 GB);
# BENCH_KEEP_OUTPUTS=1 keeps the last round's under $BENCH_DIR/.../out-LABEL-LAYOUT.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
skus=${2:-10000}
stores=${3:-98}
rounds=${BENCH_ROUNDS:-1}
. scripts/bench-common.sh
bench_builds
bench_workload "$after" "$events" "$skus" "$stores"
mb=$(du -sm "$dir/input" | cut -f1)

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
for i in "${!labels[@]}"; do
  echo "${labels[$i]}: ${bins[$i]} (stockflow built $(stat -c %y "${bins[$i]}/stockflow" | cut -d. -f1))"
done
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "workload: $lines lines ($events events + setup), $keys keys, $mb MB, 4 partitions ($dir/input)"
echo
echo "| binary | job | layout | round | load | wall s | CPU s | lines/s | peak RSS MB | RSS bytes/key |"
echo "|---|---|---|---|---|---|---|---|---|---|"

runs="$dir/runs.tsv"
: >"$runs"
port=23101

# One run: $1 label, $2 binary dir, $3 job (stockflow, ceiling), $4 layout (w1, w2, 2x1), $5 round.
# Appends "label job layout round wall cpu rss digest" to $runs and prints the row.
run_one() {
  local label=$1 bin=$2 job=$3 layout=$4 round=$5 out="$dir/out-$1-$4" load t0 t1 stats sum=-
  rm -rf "$out"
  load=$(cut -d' ' -f1 /proc/loadavg)
  local cmd=("$bin/ceiling" "$dir/input")
  [ "$job" = stockflow ] && cmd=("$bin/stockflow" replay "$dir/input" --out "$out" -q)
  t0=$(date +%s.%N)
  case "$layout" in
    w1 | w2)
      stats=$( { /usr/bin/time -f "%U %S %M" "${cmd[@]}" -w "${layout#w}" 2>&1 >/dev/null; } | tail -1) ;;
    2x1)
      port=$((port + 2))
      printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$port" $((port + 1)) >"$dir/hosts"
      local hostflag=--hostfile
      [ "$job" = ceiling ] && hostflag=-h # timely's own flags
      /usr/bin/time -o "$dir/time-p1" -f "%U %S %M" "${cmd[@]}" -n 2 -p 1 "$hostflag" "$dir/hosts" >/dev/null 2>"$dir/p1.err" &
      local p1=$!
      stats=$( { /usr/bin/time -f "%U %S %M" "${cmd[@]}" -n 2 -p 0 "$hostflag" "$dir/hosts" 2>&1 >/dev/null; } | tail -1)
      wait "$p1" || { echo "process 1 failed:" >&2; cat "$dir/p1.err" >&2; exit 1; }
      stats="$stats $(tail -1 "$dir/time-p1")" ;;
  esac
  t1=$(date +%s.%N)
  if [ "$job" = stockflow ]; then
    sum=$(bench_digest "$out")
    if [ "${BENCH_KEEP_OUTPUTS:-0}" != 1 ]; then rm -rf "$out"; fi
  fi
  echo "$stats" | awk -v b="$label" -v j="$job" -v l="$layout" -v r="$round" -v load="$load" -v w0="$t0" -v w1="$t1" \
    -v n="$lines" -v k="$keys" -v d="$sum" -v runs="$runs" '
    { cpu = $1 + $2; rss = $3; if (NF >= 6) { cpu += $4 + $5; rss += $6 } }
    END {
      wall = w1 - w0
      printf "%s %s %s %d %.2f %.1f %d %s\n", b, j, l, r, wall, cpu, rss, d >> runs
      printf "| %s | %s | %s | %d | %s | %.1f | %.1f | %.0f | %.0f | %.0f |\n", b, j, l, r, load, wall, cpu, n / wall, rss / 1024, rss * 1024 / k
    }'
}

for round in $(seq 1 "$rounds"); do
  for layout in w1 w2 2x1; do
    for job in ceiling stockflow; do
      for i in "${!labels[@]}"; do
        run_one "${labels[$i]}" "${bins[$i]}" "$job" "$layout" "$round"
      done
    done
  done
done
echo; echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"

# Speedups from each (binary, job, layout)'s fastest round.
echo
echo "| binary | stockflow 1w s | 2w/1w | 2x1/1w | ceiling 1w s | 2w/1w | 2x1/1w | stockflow/ceiling at 1w | CPU s 1w -> 2w -> 2x1 (stockflow) |"
echo "|---|---|---|---|---|---|---|---|---|"
for label in "${labels[@]}"; do
  awk -v b="$label" '
    $1 == b {
      k = $2 " " $3
      if (!(k in wall) || $5 < wall[k]) { wall[k] = $5; cpu[k] = $6 }
    }
    END {
      s1 = wall["stockflow w1"]; c1 = wall["ceiling w1"]
      printf "| %s | %.1f | %.2fx | %.2fx | %.1f | %.2fx | %.2fx | %.2f | %.1f -> %.1f -> %.1f |\n", b,
        s1, s1 / wall["stockflow w2"], s1 / wall["stockflow 2x1"],
        c1, c1 / wall["ceiling w2"], c1 / wall["ceiling 2x1"], c1 / s1,
        cpu["stockflow w1"], cpu["stockflow w2"], cpu["stockflow 2x1"]
    }' "$runs"
done

echo
distinct=$(awk '$2 == "stockflow" { print $8 }' "$runs" | sort -u)
if [ "$(wc -l <<<"$distinct")" -ne 1 ]; then
  echo "OUTPUTS DIFFER: stockflow digests by run:"
  awk '$2 == "stockflow" { print "  " $1, $3, "round " $4 ": " $8 }' "$runs"
  exit 1
fi
echo "every replay (${labels[*]}; 1 worker, 2 workers, 2 processes; $rounds round(s)) wrote the same bytes: $distinct"
