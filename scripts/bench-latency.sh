#!/usr/bin/env bash
# Streaming latency (issue 4): a steady-rate load against a real broker (tansu on loopback),
# consumed by `stockflow run --tick-ms 100`; the job's own hdrhistograms (its metrics
# endpoint's `*_latency_quantile_seconds` and `*_latency_max_seconds`) give tick-close latency
# (the watermark passes a tick -> its outputs acknowledged by the broker) and end-to-end latency
# (a message's arrival in the consumer -> its tick's outputs acknowledged).
#
#   scripts/bench-latency.sh [RATE] [SECONDS]      (defaults: 200000 messages/s for 60 s)
#
# The workload is `stockflow gen` data whose times start now and span SECONDS, so data time
# moves with the wall clock; `stockflow produce --rate` sends it at RATE, every partition
# alike. Env: KAFKA_PORT (19192), METRICS_PORT (19193), WORKERS (1), LATENESS_MS (0),
# SKUS (1000), STORES (20), PARTITIONS (4), BENCH_BIN (target/release: the `run` measured),
# LOADGEN_BIN (BENCH_BIN: the `gen` and `produce` that make the load, so that an older build's
# `run` can be measured under the same load), BENCH_DIR
# (target/bench-latency), TANSU_ROOT (where scripts/kafka-broker.sh finds tansu; default cargo's bin directory),
# RUN_ARGS (more flags for `stockflow run`, e.g. "--no-kafka-out --out DIR": ticks are then
# acknowledged when written to files, which separates the broker's part of the latency).
# Every few seconds it prints the job's lag, so a rate the job cannot keep shows as growing lag.
set -euo pipefail
cd "$(dirname "$0")/.."

RATE="${1:-200000}"
SECS="${2:-60}"
KAFKA_PORT="${KAFKA_PORT:-19192}"
METRICS_PORT="${METRICS_PORT:-19193}"
WORKERS="${WORKERS:-1}"
LATENESS_MS="${LATENESS_MS:-0}"
SKUS="${SKUS:-1000}"
STORES="${STORES:-20}"
PARTITIONS="${PARTITIONS:-4}"
BIN="${BENCH_BIN:-target/release}"
LOADGEN="${LOADGEN_BIN:-$BIN}"
DIR="${BENCH_DIR:-target/bench-latency}"
export KAFKA_PORT
export TANSU_STATE="$DIR/broker"

if [ ! -x "$BIN/stockflow" ]; then
  cargo build --release
fi
rm -rf "$DIR/data" "$DIR/out"
mkdir -p "$DIR"

metrics() { curl -sf "http://127.0.0.1:$METRICS_PORT/metrics"; }
# The sum of a metric's samples (all label sets).
metric() { metrics | awk -v name="$1" '$1 == name || index($1, name "{") == 1 { s += $NF } END { printf "%.0f\n", s }'; }
# This process's exact quantile of a latency (tick_close, end_to_end), in ms. Builds before
# the histograms (3ed3111 and older) exposed it as a summary: `stockflow_X_latency_seconds{quantile=..}`.
quantile() {
  metrics | awk -v new="stockflow_$1_latency_quantile_seconds{quantile=\"$2\"}" -v old="stockflow_$1_latency_seconds{quantile=\"$2\"}" \
    '$1 == new || $1 == old { print $NF * 1000 }'
}
# The largest latency recorded, in ms (older builds: `stockflow_X_latency_seconds_max`).
latency_max() { metrics | awk -v new="stockflow_$1_latency_max_seconds" -v old="stockflow_$1_latency_seconds_max" '$1 == new || $1 == old { print $NF * 1000 }'; }

events=$((RATE * SECS))
# Data times start a little ahead, when production starts (after gen and the broker).
start_ms=$(( $(date +%s%3N) + 5000 ))
echo "== workload: $events events over $SECS s, $SKUS skus x $STORES stores, $PARTITIONS partitions"
"$LOADGEN/stockflow" gen --out "$DIR/data" --events "$events" --skus "$SKUS" --stores "$STORES" --dcs 2 \
  --partitions "$PARTITIONS" --seed 1 --start-ms "$start_ms" --duration-ms $((SECS * 1000)) -q
lines=$(cat "$DIR"/data/*.jsonl | wc -l)

cleanup() {
  if [ -n "${job:-}" ]; then kill "$job" 2>/dev/null || true; wait "$job" 2>/dev/null || true; fi
  scripts/kafka-broker.sh stop
}
trap cleanup EXIT
scripts/kafka-broker.sh start

echo "== load before: $(uptime)"
# The job waits for the topic, which `produce` creates.
"$BIN/stockflow" run --brokers "127.0.0.1:$KAFKA_PORT" --topics bench --group bench --prefix bench \
  --tick-ms 100 --lateness-ms "$LATENESS_MS" --idle-ms 2000 --metadata-refresh-ms 200 -w "$WORKERS" \
  --metrics-addr "127.0.0.1:$METRICS_PORT" -q ${RUN_ARGS:-} 2>"$DIR/run.log" &
job=$!
for _ in $(seq 1 100); do metrics >/dev/null 2>&1 && break; sleep 0.1; done

"$LOADGEN/stockflow" produce "$DIR/data" --topic bench --brokers "127.0.0.1:$KAFKA_PORT" --rate "$RATE" \
  2>"$DIR/produce.log" &
producer=$!
max_lag=0
while kill -0 "$producer" 2>/dev/null; do
  sleep 5
  lag=$(metric stockflow_consumer_lag_messages)
  [ "$lag" -gt "$max_lag" ] && max_lag=$lag
  echo "  read $(metric stockflow_messages_read_total) of $lines, lag $lag, tick-close p99 $(quantile tick_close 0.99) ms"
done
wait "$producer"
cat "$DIR/produce.log"
# Drain: every message read, and the last ticks acknowledged (the idle partitions then follow
# the wall clock past them).
for _ in $(seq 1 600); do
  [ "$(metric stockflow_messages_read_total)" -ge "$lines" ] && [ "$(metric stockflow_consumer_lag_messages)" -eq 0 ] &&
    [ "$(metric stockflow_end_to_end_latency_seconds_count)" -ge "$(metric stockflow_messages_applied_total)" ] && break
  sleep 0.5
done
echo "== load after: $(uptime)"
metrics >"$DIR/metrics.txt"
achieved=$(awk '/^stockflow: produce:/ { for (i = 1; i <= NF; i++) if ($i ~ /\/s\)$/) { gsub(/[()\/s]/, "", $i); print $i } }' "$DIR/produce.log")
echo
echo "offered $RATE msg/s for $SECS s; produced at $achieved msg/s; max lag seen $max_lag messages; workers $WORKERS; lateness $LATENESS_MS ms; tick 100 ms; run args: ${RUN_ARGS:-none}"
echo "| latency (ms) | p50 | p90 | p99 | p999 | max | count |"
echo "|---|---|---|---|---|---|---|"
for name in tick_close end_to_end; do
  printf "| %s | %s | %s | %s | %s | %s | %s |\n" "$name" "$(quantile "$name" 0.5)" "$(quantile "$name" 0.9)" \
    "$(quantile "$name" 0.99)" "$(quantile "$name" 0.999)" "$(latency_max "$name")" \
    "$(metric "stockflow_${name}_latency_seconds_count")"
done
echo "(full scrape: $DIR/metrics.txt)"
