#!/usr/bin/env bash
# bench-kafka-scale.sh [EVENTS] [SKUS] [STORES] — `stockflow run` from a Kafka backlog to Kafka,
# 1 process x 1 worker against 2 processes x 1 worker, and which workers produced the outputs.
#
# Starts tansu on loopback (scripts/kafka-broker.sh, in-memory storage), produces one backlog
# with `stockflow gen --kafka` (defaults: 2M events over 200k SKU-locations, 4 partitions, a
# day of data), then runs `stockflow run --at-least-once --tick-ms 1000 --idle-ms 1000` over it
# once per layout, each in its own consumer group and output prefix, each process with its own
# metrics endpoint, scraped every 0.2 s. A run counts as done when the processes together have
# read every message, their consumer lag is 0, and no output record was handed to a producer
# for STABLE_SECS (3); it ended when the last one was (the same rule for any build: before the
# per-worker producers, a process other than 0 acknowledged nothing itself). It is then
# stopped (SIGTERM).
#
# Per layout it prints messages/s and output records/s over the processing time (first message
# read -> last output record handed to a producer; the start-up before the first read is shown
# apart), and the output records each process's worker handed to its own producer
# (`stockflow_output_records_total` of that process: with 1 worker per process, per worker).
#
# tansu 0.6 has no transactions, so the runs are at-least-once (each worker's idempotent
# producer); with transactions each worker also commits its own (docs/kafka.md).
#
# Env: BENCH_BIN (default target/release, built if missing), BENCH_BEFORE=DIR (also run this
# build, same backlog), LAYOUTS ("1x1 2x1"), KAFKA_PORT (19292), METRICS_PORT (19293..),
# CLUSTER_PORT (19301, 19302), OUTPUT_PARTITIONS (4), BENCH_DIR (target/bench-kafka-scale),
# TIMEOUT_SECS per run (900), STABLE_SECS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-2000000}
skus=${2:-2000}
stores=${3:-98}
KAFKA_PORT=${KAFKA_PORT:-19292}
METRICS_PORT=${METRICS_PORT:-19293}
CLUSTER_PORT=${CLUSTER_PORT:-19301}
OUTPUT_PARTITIONS=${OUTPUT_PARTITIONS:-4}
LAYOUTS=${LAYOUTS:-1x1 2x1}
TIMEOUT_SECS=${TIMEOUT_SECS:-900}
STABLE_SECS=${STABLE_SECS:-3}
DIR=${BENCH_DIR:-target/bench-kafka-scale}
BIN=${BENCH_BIN:-target/release}
BROKERS="127.0.0.1:$KAFKA_PORT"
export KAFKA_PORT TANSU_STATE="$DIR/broker"
[ -x "$BIN/stockflow" ] || cargo build --release
labels=(); bins=()
if [ -n "${BENCH_BEFORE:-}" ]; then
  labels+=(before after); bins+=("$BENCH_BEFORE" "$BIN")
else
  labels+=(this); bins+=("$BIN")
fi
mkdir -p "$DIR"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  scripts/kafka-broker.sh stop
}
trap cleanup EXIT
scripts/kafka-broker.sh start

topic=backlog
"$BIN/stockflow" gen --kafka "$topic" --brokers "$BROKERS" --events "$events" --skus "$skus" --stores "$stores" \
  --dcs 2 --partitions 4 --seed 1 --quiet
# The backlog's size: what the topic's partitions hold (the setup messages included).
"$BIN/stockflow" gen --out "$DIR/files" --events "$events" --skus "$skus" --stores "$stores" --dcs 2 --partitions 4 --seed 1 --quiet
lines=$(cat "$DIR"/files/*.jsonl | wc -l)
rm -rf "$DIR/files"
keys=$((skus * (stores + 2)))

echo "machine: $(nproc) cores, $(uname -r); commit $(git rev-parse --short HEAD)"
echo "backlog: topic $topic, $lines messages ($events events + setup), $keys keys, 4 partitions; outputs to $OUTPUT_PARTITIONS partitions"
echo

scrape() { curl -sf "http://127.0.0.1:$1/metrics" || true; }
# The sum of a metric's samples in a scrape on stdin.
sum_of() { awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $NF } END { printf "%.0f\n", s }'; }

# One run: $1 label, $2 binary dir, $3 layout (1x1, 2x1). Prints its rows into $DIR/rows.
run_layout() {
  local label=$1 bin=$2 layout=$3 procs=${3%x1}
  local run="$label-$layout-$$" hosts="$DIR/hosts" p
  printf "127.0.0.1:%d\n127.0.0.1:%d\n" "$CLUSTER_PORT" $((CLUSTER_PORT + 1)) >"$hosts"
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  local t0
  t0=$(date +%s.%N)
  pids=()
  for p in $(seq 0 $((procs - 1))); do
    local cluster=()
    [ "$procs" -gt 1 ] && cluster=(-n "$procs" -p "$p" --hostfile "$hosts")
    "$bin/stockflow" run --brokers "$BROKERS" --topics "$topic" --group "g-$run" --prefix "p-$run" \
      --output-partitions "$OUTPUT_PARTITIONS" --at-least-once --tick-ms 1000 --lateness-ms 0 --idle-ms 1000 \
      --metrics-addr "127.0.0.1:$((METRICS_PORT + p))" -q "${cluster[@]}" 2>"$DIR/run-$run-p$p.log" &
    pids+=($!)
  done
  local first= done_at= read=0 outputs_seen=-1 changed=
  while :; do
    sleep 0.2
    local now lag=0 total_out=0 m
    now=$(date +%s.%N)
    read=0
    for p in $(seq 0 $((procs - 1))); do
      m=$(scrape $((METRICS_PORT + p)))
      read=$((read + $(sum_of stockflow_messages_read_total <<<"$m")))
      lag=$((lag + $(sum_of stockflow_consumer_lag_messages <<<"$m")))
      total_out=$((total_out + $(sum_of stockflow_output_records_total <<<"$m")))
    done
    [ -z "$first" ] && [ "$read" -gt 0 ] && first=$now
    if [ "$total_out" != "$outputs_seen" ]; then outputs_seen=$total_out; changed=$now; fi
    # Done: every message read, no lag, and no output record for STABLE_SECS; the run ended
    # when the last record was handed to the producers.
    if [ "$read" -ge "$lines" ] && [ "$lag" -eq 0 ] && [ "$(echo "$now - $changed >= $STABLE_SECS" | bc)" = 1 ]; then
      done_at=$changed
      break
    fi
    if [ "$(echo "$now - $t0 > $TIMEOUT_SECS" | bc)" = 1 ]; then
      echo "$label $layout: not done after $TIMEOUT_SECS s (read $read of $lines)" >&2
      return 1
    fi
  done
  local outputs=() total=0
  for p in $(seq 0 $((procs - 1))); do
    local n
    n=$(scrape $((METRICS_PORT + p)) | sum_of stockflow_output_records_total)
    outputs+=("$n"); total=$((total + n))
  done
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  local who="" i
  for i in "${!outputs[@]}"; do
    who+="worker $i (process $i): ${outputs[$i]} ($(awk -v n="${outputs[$i]}" -v t="$total" 'BEGIN { printf "%.1f", 100 * n / t }')%); "
  done
  awk -v b="$label" -v l="$layout" -v t0="$t0" -v f="$first" -v d="$done_at" -v n="$lines" -v o="$total" -v who="${who%; }" -v load="$load" \
    'BEGIN { s = d - f; printf "| %s | %s | %s | %.1f | %.1f | %.0f | %.0f | %d | %s |\n", b, l, load, f - t0, s, n / s, o / s, o, who }' >>"$DIR/rows"
}

: >"$DIR/rows"
for layout in $LAYOUTS; do
  for i in "${!labels[@]}"; do
    run_layout "${labels[$i]}" "${bins[$i]}" "$layout"
  done
done
echo "| binary | layout | load before | start-up s | processing s | messages/s | output records/s | output records | produced by |"
echo "|---|---|---|---|---|---|---|---|---|"
cat "$DIR/rows"
echo
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
