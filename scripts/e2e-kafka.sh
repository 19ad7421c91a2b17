#!/usr/bin/env bash
# End to end against a real Kafka-compatible broker (tansu on loopback, scripts/kafka-broker.sh).
# Every golden case is produced to its own topic (one fixture file per partition), then:
#   - `stockflow batch` at -w 1, -w 2 and as 2 processes must write the case's expected outputs
#     (SPEC's fields) and the very bytes `stockflow replay` writes for the same files; the
#     output topics read back with `stockflow consume` must hold the snapshot (latest value per
#     key) and the low_stock transition stream (in order per key: each worker produces the keys it owns);
#   - `stockflow run` is stopped (SIGTERM) once its change streams caught up, and must have
#     written the streams of a replay without window end (hold expiries after the last message
#     are written once the watermark passes them); a second run in the same consumer group must
#     then find nothing left to read (its offsets were committed).
#   - outages (when the script started the broker itself): the broker is frozen (SIGSTOP) as a
#     `run` starts and again once it caught up; the run waits, resumes, and ends with the same
#     outputs and its offsets committed.
# Dead letters of fixture file i must come from partition i of the topic, at the same offset.
# A network from `stockflow gen --kafka` must batch to what `replay` writes for its files.
#
#   scripts/e2e-kafka.sh            uses a broker on 127.0.0.1:$KAFKA_PORT, else starts one
#   E2E_CASES="basic window" ...    only these cases
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
  if [ -f target/kafka-broker/pid ]; then kill -CONT "$(cat target/kafka-broker/pid)" 2>/dev/null || true; fi
  if [ "$STARTED_BROKER" = 1 ]; then KAFKA_PORT="$PORT" scripts/kafka-broker.sh stop || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || cargo build --release
ensured=$(KAFKA_PORT="$PORT" scripts/kafka-broker.sh ensure)
grep -vx started <<<"$ensured" || true
if [ "$(tail -1 <<<"$ensured")" = started ]; then STARTED_BROKER=1; fi

passed=0
failed=0
check() { # name, command...
  local name=$1 started=$SECONDS
  shift
  if "$@"; then
    passed=$((passed + 1))
    echo "ok   $name ($((SECONDS - started)) s)"
  else
    failed=$((failed + 1))
    echo "FAIL $name ($((SECONDS - started)) s)"
  fi
}

STREAMS="atp.jsonl low_stock.jsonl order_plan.jsonl network_atp.jsonl"

# expected_dir out_dir streams|all [topic input_dir]: SPEC's fields equal. A dead letter of fixture
# file i (sorted names) must come from partition i of the topic, at the same offset.
same_as_expected() {
  python3 - "$@" <<'PY'
import json, sys, os
exp, out = sys.argv[1], sys.argv[2]
only_streams = sys.argv[3] == "streams"
def lines(path, drop=()):
    if not os.path.exists(path):
        return None
    rows = []
    for l in open(path):
        if l.strip():
            r = json.loads(l)
            for k in drop: r.pop(k, None)
            rows.append(r)
    return rows
ok = True
names = ["atp.jsonl", "low_stock.jsonl", "order_plan.jsonl", "network_atp.jsonl"]
files = names + ([] if only_streams else ["snapshot/" + n for n in names])
for f in files:
    a, b = lines(os.path.join(exp, f)), lines(os.path.join(out, f))
    if a != b:
        print(f"  {f} differs from expected", file=sys.stderr); ok = False
if not only_streams:
    topic, inputs = sys.argv[4], sys.argv[5]
    files = sorted(f for f in os.listdir(inputs) if f.endswith(".jsonl"))
    want = lines(os.path.join(exp, "dead_letter.jsonl")) or []
    # A file's offsets are line numbers (1-based, blank lines counted); `produce` skips blank
    # lines, so the Kafka offset is the count of non-blank lines before it.
    kafka_offset = {}
    for f in files:
        non_blank = [n for n, l in enumerate(open(os.path.join(inputs, f), "rb"), 1) if l.strip()]
        kafka_offset[f] = {n: i for i, n in enumerate(non_blank)}
    for r in want:
        r["offset"] = kafka_offset[r["source"]][r["offset"]]
        r["partition"] = files.index(r["source"]); r["source"] = topic
    if want != (lines(os.path.join(out, "dead_letter.jsonl")) or []):
        print("  dead_letter.jsonl differs (file i = partition i of the topic)", file=sys.stderr); ok = False
    se, so = json.load(open(os.path.join(exp, "summary.json"))), json.load(open(os.path.join(out, "summary.json")))
    for k, v in se.items():
        if so.get(k) != v:
            print(f"  summary.json {k}: expected {v}, got {so.get(k)}", file=sys.stderr); ok = False
sys.exit(0 if ok else 1)
PY
}

# replay_dir out_dir: the same bytes as the replay, but for dead letters' source names.
same_as_replay() {
  local ok=0
  for f in $STREAMS snapshot/atp.jsonl snapshot/low_stock.jsonl snapshot/order_plan.jsonl snapshot/network_atp.jsonl summary.json; do
    cmp -s "$1/$f" "$2/$f" || { echo "  $f: not the replay's bytes" >&2; diff "$1/$f" "$2/$f" | head -5 >&2; ok=1; }
  done
  return $ok
}

# prefix expected_dir: the output topics hold the snapshot and the transition stream.
topics_hold() {
  local prefix=$1 exp=$2 ok=0
  for t in atp order_plan network_atp; do
    "$BIN" consume "$prefix.$t" --brokers "$BROKERS" >"$WORK/topic.$t" || return 1
    python3 - "$WORK/topic.$t" "$exp/snapshot/$t.jsonl" <<'PY' || { echo "  topic $prefix.$t does not hold the snapshot" >&2; ok=1; }
import json, sys
got = []
for l in open(sys.argv[1]):
    key, value = l.rstrip("\n").split("\t", 1)
    v = json.loads(value); v.pop("ts", None); got.append(v)
want = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
key = lambda r: json.dumps(r, sort_keys=True)
sys.exit(0 if sorted(got, key=key) == sorted(want, key=key) else 1)
PY
  done
  "$BIN" consume --all "$prefix.low_stock" --brokers "$BROKERS" | cut -f2 >"$WORK/topic.low_stock"
  # Each worker produces the keys it owns: every key's transitions are in order, keys of
  # different workers interleave.
  python3 - "$WORK/topic.low_stock" "$exp/low_stock.jsonl" <<'PY' || { echo "  topic $prefix.low_stock is not the transition stream" >&2; ok=1; }
import json, sys
def per_key(path):
    keys = {}
    for l in open(path):
        if l.strip():
            r = json.loads(l); keys.setdefault((r["sku"], r["loc"]), []).append(r)
    return keys
sys.exit(0 if per_key(sys.argv[1]) == per_key(sys.argv[2]) else 1)
PY
  return $ok
}

batch_case() { # expected_dir replay_dir out_dir prefix batch-args...
  local exp=$1 replay=$2 out=$3 prefix=$4
  shift 4
  if ! timeout 300 "$BIN" batch --brokers "$BROKERS" --out "$out" --prefix "$prefix" --quiet "$@" 2>"$WORK/batch.err"; then
    cat "$WORK/batch.err" >&2
    return 1
  fi
  same_as_expected "$exp" "$out" all "$topic" "$(dirname "$exp")/input" && same_as_replay "$replay" "$out" && topics_hold "$prefix" "$exp"
}

streams_caught_up() { # expected_dir out_dir
  for f in $STREAMS; do
    cmp -s "$1/$f" "$2/$f" || return 1
  done
}

# run until the change streams caught up, then SIGTERM. With `outage`, the broker is frozen
# (SIGSTOP) when the run starts and for 12 s once it caught up: the run must wait, resume, and
# stop cleanly with the same outputs.
run_case() { # expected_dir out_dir group prefix outage opts...
  local exp=$1 out=$2 group=$3 prefix=$4 outage=$5 broker
  shift 5
  broker=$(cat target/kafka-broker/pid 2>/dev/null || true)
  if [ "$outage" = 1 ]; then kill -STOP "$broker"; fi
  "$BIN" run --brokers "$BROKERS" --topics "$topic" --group "$group" --prefix "$prefix" --out "$out" \
    --idle-ms 2000 "$@" 2>"$WORK/run.err" &
  RUN_PID=$!
  if [ "$outage" = 1 ]; then
    sleep 6
    kill -CONT "$broker"
  fi
  for _ in $(seq 1 300); do
    streams_caught_up "$exp" "$out" && break
    sleep 0.2
  done
  if [ "$outage" = 1 ]; then
    kill -STOP "$broker"
    sleep 12
    kill -CONT "$broker"
    sleep 3
  fi
  kill -TERM "$RUN_PID"
  local status=0
  wait "$RUN_PID" || status=$?
  RUN_PID=
  if [ "$status" != 0 ]; then
    echo "  run exited $status" >&2
    grep -v '^ *[0-9]*: \|^ *at ' "$WORK/run.err" | tail -20 >&2
    return 1
  fi
  same_as_expected "$exp" "$out" streams
}

# After a run stopped, the group's committed offsets cover everything: a second run reads nothing.
nothing_left() { # group prefix opts...
  local group=$1 prefix=$2 out="$WORK/rerun"
  shift 2
  rm -rf "$out"
  "$BIN" run --brokers "$BROKERS" --topics "$topic" --group "$group" --prefix "$prefix-again" --out "$out" \
    --idle-ms 500 --no-kafka-out "$@" 2>"$WORK/rerun.err" &
  local pid=$!
  sleep 4
  kill -TERM "$pid"
  wait "$pid" || { tail "$WORK/rerun.err" >&2; return 1; }
  python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["read"]==0 else 1)' "$out/summary.json" ||
    { echo "  a second run in group $group read $(grep '"read"' "$out/summary.json")" >&2; return 1; }
}

for case_dir in fixtures/*/; do
  case=$(basename "$case_dir")
  [ -d "$case_dir/input" ] || continue
  if [ -n "${E2E_CASES:-}" ] && ! [[ " $E2E_CASES " == *" $case "* ]]; then continue; fi
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
  replay="$WORK/$case-replay"
  "$BIN" replay "$case_dir/input" --out "$replay" --quiet "${opts[@]}" "${until_opt[@]}"
  "$BIN" produce "$case_dir/input" --topic "$topic" --brokers "$BROKERS" 2>/dev/null

  for w in 1 2; do
    check "$case batch -w $w" batch_case "$case_dir/expected" "$replay" "$WORK/$case-batch-w$w" "$topic-b$w" \
      --topics "$topic" --group "$topic-b$w" -w "$w" "${opts[@]}" "${until_opt[@]}"
  done

  # Two processes of one worker each, on loopback; process 0 writes --out and produces.
  hosts="$WORK/hosts-$case"
  # Below Linux's ephemeral range (32768-60999), where a Kafka client's own connection may sit
  # on the port, and free now.
  base=$(python3 -c '
import random, socket
rng = random.Random()
while True:
    base = rng.randrange(20000, 32000)
    try:
        for port in (base, base + 1):
            socket.create_server(("127.0.0.1", port)).close()
        print(base)
        break
    except OSError:
        pass')
  printf '127.0.0.1:%d\n127.0.0.1:%d\n' "$base" $((base + 1)) >"$hosts"
  n2=(--topics "$topic" --group "$topic-n2" -n 2 --hostfile "$hosts" "${opts[@]}" "${until_opt[@]}")
  timeout 300 "$BIN" batch --brokers "$BROKERS" --prefix "$topic-n2" -p 1 --quiet "${n2[@]}" >/dev/null 2>"$WORK/p1.err" &
  p1=$!
  check "$case batch -n 2" batch_case "$case_dir/expected" "$replay" "$WORK/$case-batch-n2" "$topic-n2" -p 0 "${n2[@]}"
  wait "$p1" || { echo "  process 1 failed:" >&2; cat "$WORK/p1.err" >&2; failed=$((failed + 1)); }

  # run: continuous, without --until; only for cases whose window is their data. A run has no
  # window end: once its idle partitions follow the wall clock, every tick up to now is written,
  # hold expiries after the last message included (docs/format.md, Window). Its streams are a
  # replay's whose window ends at the end of time.
  if [ ${#until_opt[@]} -gt 0 ]; then
    "$BIN" replay "$case_dir/input" --out "$WORK/$case-run-reference" --quiet "${opts[@]}" --until 253402300799999
    check "$case run -w 2" run_case "$WORK/$case-run-reference" "$WORK/$case-run" "$topic-run" "$topic-run" 0 -w 2 "${opts[@]}"
    check "$case run: offsets committed" nothing_left "$topic-run" "$topic-run" "${opts[@]}"
  fi
done

# A generated network sent by `gen --kafka` (which creates the topic) must batch to the bytes
# `replay` writes for the same network generated to files.
generated_case() {
  local topic="e2e-$SEED-generated"
  local net=(--events 20000 --skus 40 --stores 8 --dcs 2 --partitions 3 --seed 7 --bad 0.01)
  local window=(--until 1700086400000 --lateness-ms 0)
  "$BIN" gen --quiet --out "$WORK/generated-files" "${net[@]}" &&
    "$BIN" gen --quiet --kafka "$topic" --brokers "$BROKERS" "${net[@]}" &&
    "$BIN" replay "$WORK/generated-files" --out "$WORK/generated-replay" --quiet "${window[@]}" &&
    timeout 300 "$BIN" batch --brokers "$BROKERS" --topics "$topic" --group "$topic" --prefix "$topic" \
      --out "$WORK/generated-batch" -w 2 --quiet "${window[@]}" &&
    same_as_replay "$WORK/generated-replay" "$WORK/generated-batch"
}
if [ -z "${E2E_CASES:-}" ] || [[ " $E2E_CASES " == *" generated "* ]]; then
  check "generated network: gen --kafka, batch -w 2" generated_case
fi

# Broker outages (at start-up and while running) on the medium case, with our own broker only.
if [ "$STARTED_BROKER" = 1 ] && { [ -z "${E2E_CASES:-}" ] || [[ " $E2E_CASES " == *" medium "* ]]; }; then
  topic="e2e-$SEED-medium"
  read -r -a opts <<<"$(cat fixtures/medium/options.txt 2>/dev/null || true)"
  if ! printf '%s\n' "${opts[@]}" | grep -qx -- --lateness-ms; then opts+=(--lateness-ms 0); fi
  "$BIN" replay fixtures/medium/input --out "$WORK/medium-outage-reference" --quiet "${opts[@]}" --until 253402300799999
  # The broker is frozen for 6 s as the run starts: --connect-timeout (default 5s, for a
  # broker that is not there at all) is raised so the run waits for it.
  check "medium run through broker outages" run_case "$WORK/medium-outage-reference" "$WORK/medium-outage" "$topic-outage" "$topic-outage" 1 -w 2 --connect-timeout 30s "${opts[@]}"
  check "medium run through broker outages: offsets committed" nothing_left "$topic-outage" "$topic-outage" "${opts[@]}"
fi

echo "e2e-kafka: $passed passed, $failed failed"
[ "$failed" = 0 ]
