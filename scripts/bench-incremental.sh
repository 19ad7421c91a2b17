#!/usr/bin/env bash
# bench-incremental.sh [EVENTS] [SKUS] [STORES] — the cost of absorbing 1% more events into a
# loaded state, against the cost of loading it.
#
# Generates a workload (as scripts/bench.sh) and a continuation: 1% as many events again, in the
# hour after the workload ends, without the setup messages (policies and counts at the start
# time). Produces the workload to a topic on the broker (scripts/kafka-broker.sh), runs
# `stockflow run -w 2 --out DIR` until its watermark reaches the workload's last tick (the load),
# then produces the continuation and measures until the watermark reaches the continuation's
# last tick (the increment). Prints both times, their ratio, and the resident memory after each.
# The run's own metrics tell the watermark; a large --idle-ms keeps the wall clock out of it.
#
#   scripts/bench-incremental.sh                 1M events over 100k keys
#   scripts/bench-incremental.sh 10000000 10000  10M events over 1M keys
#
# RUN_ARGS adds flags to `stockflow run` (e.g. "-X fetch.wait.max.ms=500" for an A/B of a
# consumer setting).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-1000000}
skus=${2:-1000}
stores=${3:-98}
dcs=2
keys=$((skus * (stores + dcs)))
start_ms=1700000000000
duration_ms=86400000
PORT="${KAFKA_PORT:-19092}"
BROKERS="127.0.0.1:$PORT"
bin=${BENCH_BIN:-target/release}
[ -n "${BENCH_BIN:-}" ] || cargo build --release --bin stockflow >&2
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-incr.XXXXXX")"
STARTED_BROKER=0
RUN_PID=
cleanup() {
  [ -z "$RUN_PID" ] || kill -9 "$RUN_PID" 2>/dev/null || true
  if [ "$STARTED_BROKER" = 1 ]; then KAFKA_PORT="$PORT" scripts/kafka-broker.sh stop || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
ensured=$(KAFKA_PORT="$PORT" scripts/kafka-broker.sh ensure)
grep -vx started <<<"$ensured" || true
if [ "$(tail -1 <<<"$ensured")" = started ]; then STARTED_BROKER=1; fi

"$bin/stockflow" gen --out "$WORK/base" --events "$events" --skus "$skus" --stores "$stores" --dcs "$dcs" \
  --partitions 4 --seed 1 --start-ms "$start_ms" --duration-ms "$duration_ms" --quiet
more=$((events / 100))
"$bin/stockflow" gen --out "$WORK/more-all" --events "$more" --skus "$skus" --stores "$stores" --dcs "$dcs" \
  --partitions 4 --seed 2 --start-ms $((start_ms + duration_ms)) --duration-ms 3600000 --quiet
mkdir -p "$WORK/more"
for f in "$WORK"/more-all/*.jsonl; do
  # The continuation's setup would re-send every key's policy and count: not 1%.
  grep -v "\"ts\":$((start_ms + duration_ms))," "$f" >"$WORK/more/$(basename "$f")" || true
done
base_lines=$(cat "$WORK"/base/*.jsonl | wc -l)
more_lines=$(cat "$WORK"/more/*.jsonl | wc -l)

topic="incr-$$-$RANDOM"
"$bin/stockflow" produce "$WORK/base" --topic "$topic" --brokers "$BROKERS" 2>/dev/null
metrics=19681
t0=$(date +%s.%N)
"$bin/stockflow" run --brokers "$BROKERS" --topics "$topic" --group "$topic" --no-kafka-out --out "$WORK/out" \
  --idle-ms 36000000 -w 2 -q --metrics-addr "127.0.0.1:$metrics" ${RUN_ARGS:-} 2>"$WORK/run.log" &
RUN_PID=$!
disown "$RUN_PID" # killed at the end: no "Killed" notice

# reach TARGET LINES: waits until the run has read LINES messages, its watermark is at least
# TARGET and no tick has been written for 0.5 s; prints the resident memory and the moment (epoch
# seconds) the last tick was written, so the 0.5 s of waiting is not counted. (Before the
# partitions are known, the watermark of `run` is the wall clock.)
reach() {
  python3 - "$1" "$2" "$metrics" <<'EOF'
import sys, time, urllib.request
target, lines, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
state, since, deadline = None, time.time(), time.time() + 3600
while time.time() < deadline:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        time.sleep(0.05)
        continue
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    read = sum(float(v) for k, v in values.items() if k.startswith("stockflow_messages_read_total"))
    done = read >= lines and round(float(values.get("stockflow_watermark_timestamp_seconds", 0)) * 1000) >= target
    now = (done, values.get("stockflow_ticks_written_total"))
    if now != state:
        state, since = now, time.time()
    elif now[0] and time.time() - since >= 0.5:
        print(int(float(values["process_resident_memory_bytes"])), since)
        sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
EOF
}
# Where the watermark stops once a part is read: the least over the partitions of their largest
# ts, minus the lateness (5 s by default).
settles_at() {
  for f in "$1"/*.jsonl; do grep -o '"ts":[0-9]*' "$f" | cut -d: -f2 | sort -n | tail -1; done | sort -n | head -1 |
    awk '{ printf "%d\n", $1 - 5000 }'
}
base_end=$(settles_at "$WORK/base")
more_end=$(settles_at "$WORK/more")

read -r rss_load t_loaded < <(reach "$base_end" "$base_lines") || { echo "the load did not finish"; tail "$WORK/run.log"; exit 1; }
t1=$(date +%s.%N)
"$bin/stockflow" produce "$WORK/more" --topic "$topic" --brokers "$BROKERS" 2>/dev/null
read -r rss_more t2 < <(reach "$more_end" $((base_lines + more_lines))) || { echo "the increment was not absorbed"; tail "$WORK/run.log"; exit 1; }

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; commit $(git rev-parse --short HEAD); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: $base_lines lines over $keys keys; increment: $more_lines lines (no setup), ts after the load's"
awk -v a="$t0" -v loaded="$t_loaded" -v b="$t1" -v c="$t2" -v r1="$rss_load" -v r2="$rss_more" -v n1="$base_lines" -v n2="$more_lines" 'BEGIN {
  load = loaded - a; inc = c - b
  printf "| part | lines | seconds | lines/s | RSS after, MB |\n|---|---|---|---|---|\n"
  printf "| load | %d | %.2f | %.0f | %.0f |\n", n1, load, n1 / load, r1 / 1048576
  printf "| +1%% | %d | %.2f | %.0f | %.0f |\n", n2, inc, n2 / inc, r2 / 1048576
  printf "\nincrement / load: %.1f%% of the time for %.1f%% of the lines\n", 100 * inc / load, 100 * n2 / n1
}'
