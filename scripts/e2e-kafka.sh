#!/usr/bin/env bash
# End to end against a real Kafka-compatible broker (tansu on loopback, scripts/kafka-broker.sh):
# every golden case is produced to its own topic, then
#   - `stockflow batch` (-w 1, -w 2, and 2 processes) must write the case's expected snapshot,
#     change streams and summary byte for byte;
#   - `stockflow run` is stopped (SIGTERM) once its change streams caught up, and must have
#     written the same streams and snapshot.
# Dead letters are not compared: their source names differ (topic vs file) by design.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${STOCKFLOW_BIN:-target/release/stockflow}"
PORT="${KAFKA_PORT:-19092}"
BROKERS="127.0.0.1:$PORT"
SEED="${E2E_SEED:-$(date +%s)-$$}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-e2e.XXXXXX")"
STARTED_BROKER=0
RUN_PID=

cleanup() {
  if [ -n "$RUN_PID" ]; then kill "$RUN_PID" 2>/dev/null || true; fi
  if [ "$STARTED_BROKER" = 1 ]; then KAFKA_PORT="$PORT" scripts/kafka-broker.sh stop || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || cargo build --release
if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  KAFKA_PORT="$PORT" scripts/kafka-broker.sh start
  STARTED_BROKER=1
fi

passed=0
failed=0
check() { # name, command...
  local name=$1
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok   $name"
  else
    failed=$((failed + 1))
    echo "FAIL $name"
  fi
}

same_outputs() { # expected_dir, out_dir, what ("all" or "streams")
  local exp=$1 out=$2 what=$3 ok=0
  for f in atp.jsonl low_stock.jsonl order_plan.jsonl network_atp.jsonl; do
    cmp -s "$exp/snapshot/$f" "$out/snapshot/$f" || { echo "  snapshot/$f differs" >&2; diff "$exp/snapshot/$f" "$out/snapshot/$f" | head -5 >&2; ok=1; }
    cmp -s "$exp/$f" "$out/$f" || { echo "  $f differs" >&2; diff "$exp/$f" "$out/$f" | head -5 >&2; ok=1; }
  done
  if [ "$what" = all ]; then
    cmp -s "$exp/summary.json" "$out/summary.json" || { echo "  summary.json differs" >&2; diff "$exp/summary.json" "$out/summary.json" >&2; ok=1; }
  fi
  return $ok
}

batch_case() { # expected_dir, out_dir, batch args...
  local exp=$1 out=$2
  shift 2
  if ! timeout 300 "$BIN" batch --brokers "$BROKERS" --out "$out" --quiet "$@" 2>"$WORK/batch.err"; then
    cat "$WORK/batch.err" >&2
    return 1
  fi
  same_outputs "$exp" "$out" all
}

streams_caught_up() { # expected_dir, out_dir
  for f in atp.jsonl low_stock.jsonl order_plan.jsonl network_atp.jsonl; do
    cmp -s "$1/$f" "$2/$f" || return 1
  done
}

for case_dir in fixtures/*/; do
  case=$(basename "$case_dir")
  [ -d "$case_dir/input" ] || continue
  topic="e2e-$SEED-$case"
  read -r -a opts <<<"$(cat "$case_dir/options.txt" 2>/dev/null || true)"
  # Replay's lateness default is 0, Kafka's 5000: pass the replay's unless the case sets it.
  if ! printf '%s\n' "${opts[@]}" | grep -qx -- --lateness-ms; then opts+=(--lateness-ms 0); fi
  # batch needs --until: the case's own, else the expected window end.
  until_opt=()
  if ! printf '%s\n' "${opts[@]}" | grep -qx -- --until; then
    as_of=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["as_of"])' "$case_dir/expected/summary.json")
    until_opt=(--until "$as_of")
  fi
  "$BIN" produce "$case_dir/input" --topic "$topic" --brokers "$BROKERS"

  for w in 1 2; do
    out="$WORK/$case-batch-w$w"
    check "$case batch -w $w" batch_case "$case_dir/expected" "$out" \
      --topics "$topic" --group "$topic-b$w" --prefix "$topic-b$w" -w "$w" "${opts[@]}" "${until_opt[@]}"
  done

  # Two processes of one worker each, on loopback; process 0 writes --out.
  out="$WORK/$case-batch-n2"
  hosts="$WORK/hosts-$case"
  base=$((23000 + RANDOM % 20000))
  printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$base" $((base + 1)) >"$hosts"
  n2=(--topics "$topic" --group "$topic-n2" --prefix "$topic-n2" -n 2 -h "$hosts" "${opts[@]}" "${until_opt[@]}")
  timeout 300 "$BIN" batch --brokers "$BROKERS" -p 1 --quiet "${n2[@]}" >/dev/null 2>"$WORK/p1.err" &
  p1=$!
  check "$case batch -n 2" batch_case "$case_dir/expected" "$out" -p 0 "${n2[@]}"
  wait "$p1" || { echo "  process 1 failed:" >&2; cat "$WORK/p1.err" >&2; failed=$((failed + 1)); }

  # run: continuous; stop it once its change streams caught up with the expected ones.
  if [ ${#until_opt[@]} -gt 0 ]; then
    out="$WORK/$case-run"
    "$BIN" run --brokers "$BROKERS" --topics "$topic" --group "$topic-run" --prefix "$topic-run" --out "$out" \
      --idle-ms 1000 --quiet "${opts[@]}" 2>"$WORK/run.err" &
    RUN_PID=$!
    for _ in $(seq 1 300); do
      streams_caught_up "$case_dir/expected" "$out" && break
      sleep 0.2
    done
    kill -TERM "$RUN_PID"
    run_status=0
    wait "$RUN_PID" || run_status=$?
    RUN_PID=
    if [ "$run_status" = 0 ] && same_outputs "$case_dir/expected" "$out" streams; then
      passed=$((passed + 1)); echo "ok   $case run"
    else
      failed=$((failed + 1)); echo "FAIL $case run (exit $run_status)"; tail -20 "$WORK/run.err" >&2
    fi
  fi
done

echo "e2e-kafka: $passed passed, $failed failed"
[ "$failed" = 0 ]
