#!/usr/bin/env bash
# bench-holds.sh BEFORE [AFTER] — many open holds on one key (a hot SKU at a busy distribution
# center during a sale): replay time and memory of two binaries on the same workloads.
#
# For each N in HOLDS_SIZES (default 10000 30000 100000 1000000) it generates, seeded and
# deterministic (SplitMix64, so every machine writes the same bytes), one file on one key: a
# policy and a count, N reserves one millisecond apart (res_ids in scrambled order, qty 1-5,
# expiring 1 to 61 minutes after the last reserve), a release or a fulfill of a random earlier
# hold after every tenth reserve, and a sale after the last expiry, so that the window also
# sees every hold expire. N = 0 is the same file without the holds: the memory baseline.
#
# Each file is replayed (1 worker, every output written) by BEFORE (e.g. /work/baseline/stockflow,
# a build of the commit before) and AFTER (default target/release/stockflow, built here) under
# /usr/bin/time -v; a replay longer than HOLDS_LIMIT seconds (default 300) is stopped and
# reported as such. Prints the machine, commit and load, then one markdown row per replay:
# CPU seconds (user + sys), wall seconds, peak RSS, the peak RSS above the N = 0 replay's per
# hold, and whether BEFORE and AFTER wrote identical bytes (b2sum of every output file).
#
#   scripts/bench-holds.sh /work/baseline/stockflow
#   HOLDS_SIZES="10000 100000" HOLDS_LIMIT=60 scripts/bench-holds.sh old/stockflow new/stockflow
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:?usage: scripts/bench-holds.sh BEFORE_BINARY [AFTER_BINARY]}
if [ -n "${2:-}" ]; then
  after=$2
else
  cargo build --release --bin stockflow >&2
  after=target/release/stockflow
fi
sizes=${HOLDS_SIZES:-10000 30000 100000 1000000}
limit=${HOLDS_LIMIT:-300}
root=${BENCH_DIR:-/tmp/stockflow-bench-holds}
mkdir -p "$root"

# generate N FILE: the workload described above.
generate() {
  python3 - "$1" "$2" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
state = 19
def rand():
    global state
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return z ^ (z >> 31)
def res_id(i):
    return "order-%08x" % (((i + 1) * 0x9E3779B1) & 0xFFFFFFFF)
start = 1_700_000_000_000
key = '"sku":"HOT","loc":"DC1"'
last_reserve = start + 2 + n + n // 10
with open(path, "w") as f:
    w = f.write
    w('{"type":"policy","ts":%d,%s,"reorder_point":100,"order_up_to":5000,"pack_size":10,"source":"vendor:V"}\n' % (start, key))
    w('{"type":"count","ts":%d,%s,"qty":1000000000}\n' % (start + 1, key))
    ts = start + 1
    for i in range(n):
        ts += 1
        qty = 1 + rand() % 5
        expires = last_reserve + 60_000 + rand() % 3_600_000
        w('{"type":"reserve","ts":%d,%s,"res_id":"%s","qty":%d,"expires_at":%d}\n' % (ts, key, res_id(i), qty, expires))
        if i % 10 == 9:
            ts += 1
            earlier = res_id(rand() % i)
            if rand() % 2 == 0:
                w('{"type":"release","ts":%d,%s,"res_id":"%s"}\n' % (ts, key, earlier))
            else:
                w('{"type":"fulfill","ts":%d,%s,"res_id":"%s","qty":2}\n' % (ts, key, earlier))
    w('{"type":"sale","ts":%d,%s,"qty":1}\n' % (last_reserve + 3_700_000, key))
EOF
}

# replay BINARY INPUT OUT: prints "status cpu_seconds wall_seconds peak_rss_kb", status "ok" or
# "stopped" (after $limit seconds; the CPU seconds are those spent until then).
replay() {
  local log="$3.time" status=ok
  rm -rf "$3"
  # time(1) outside timeout(1): a stopped replay still reports what it used.
  /usr/bin/time -v timeout "$limit" "$1" replay "$2" --out "$3" -q 2>"$log" >/dev/null || status=failed
  if grep -q "exited with non-zero status 124" "$log"; then status=stopped; fi
  [ "$status" != failed ] || { echo "replay failed: $1 $2" >&2; tail -5 "$log" >&2; exit 1; }
  awk -F': ' -v status="$status" '/User time/ {u=$2} /System time/ {s=$2} /Elapsed \(wall clock\)/ {e=$2}
    /Maximum resident set size/ {m=$2}
    END { n = split(e, p, ":"); wall = (n == 3) ? p[1]*3600 + p[2]*60 + p[3] : p[1]*60 + p[2];
          printf "%s %.2f %.2f %d\n", status, u + s, wall, m }' "$log"
}

digest() {
  (cd "$1" && find . -type f | LC_ALL=C sort | xargs b2sum) | b2sum | cut -c1-16
}

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
echo "before: $before; after: $after; limit ${limit} s per replay"
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| holds | lines | binary | CPU s | wall s | peak RSS MB | RSS bytes/hold | outputs (b2sum) |"
echo "|---|---|---|---|---|---|---|---|"
declare -A base_rss
for n in 0 $sizes; do
  input="$root/holds-$n.jsonl"
  [ -f "$input" ] || { generate "$n" "$input.tmp" && mv "$input.tmp" "$input"; }
  lines=$(wc -l <"$input")
  before_sum=
  for which in before after; do
    bin=${!which}
    out="$root/out-$which-$n"
    read -r status cpu wall rss <<<"$(replay "$bin" "$input" "$out")"
    if [ "$status" = stopped ]; then
      echo "| $n | $lines | $which | $cpu, not done (stopped at $limit s wall) | $wall | | | |"
      continue
    fi
    [ "$n" != 0 ] || base_rss[$which]=$rss
    per_hold=$(awk -v r="$rss" -v b="${base_rss[$which]:-}" -v n="$n" 'BEGIN { if (n > 0 && b != "") printf "%.0f", (r - b) * 1024 / n }')
    sum=$(digest "$out")
    note=$sum
    if [ "$which" = before ]; then
      before_sum=$sum
    elif [ -n "$before_sum" ]; then
      [ "$sum" = "$before_sum" ] && note="$sum, identical" || note="$sum, DIFFERENT"
    fi
    echo "| $n | $lines | $which | $cpu | $wall | $(awk -v r="$rss" 'BEGIN { printf "%.0f", r / 1024 }') | $per_hold | $note |"
    rm -rf "$out"
  done
done
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
