#!/usr/bin/env bash
# Crash test of checkpoints and restart against a real broker (tansu, scripts/kafka-broker.sh).
#
# A generated workload (about 1.2 million messages, 102k keys) is produced to a topic in 11
# chunks (every partition split alike). Then:
#   1. crash: `stockflow run -w 2` with checkpoints, killed with SIGKILL 10 times at random
#      moments (seeded), one of them right at start-up (during the restore) and one while a
#      checkpoint share is being written; a chunk is produced before each incarnation, so that
#      every one has input to read, checkpoint and produce when it is killed;
#   2. reference: once the last chunk is out, one uninterrupted run over the whole topic, stopped
#      once caught up; then the crashed run restarts a last time and catches up to the same point;
#   3. cluster: the same as 2 processes x 1 worker, one process killed 3 times; the survivor must
#      end by itself with one line naming the lost process, and the script (the supervisor)
#      restarts both with the next --cluster-generation; each process must have produced
#      output records (every worker produces the keys it owns);
#   4. damage: a share of the newest checkpoint is truncated; a restart must refuse it, name it,
#      fall back to the previous checkpoint and still end with the same results.
# Each crashed run's output topics must equal the reference's: latest value per key of .atp,
# .order_plan and .network_atp; each key's .low_stock transitions in order (every worker produces
# the keys it owns, so keys interleave differently), where a key's tick may repeat (the broker
# has no transactions: output is at-least-once) only as a byte-identical copy of its first
# appearance, or complete a first copy the kill cut short; every reference dead letter
# present and none other. Prints recovery times and checkpoint sizes.
#
#   scripts/crash-test.sh                uses a broker on 127.0.0.1:$KAFKA_PORT, else starts one
#   CRASH_SEED=7 CRASH_EVENTS=1000000    the kill moments' seed and the workload size
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${STOCKFLOW_BIN:-target/release/stockflow}"
PORT="${KAFKA_PORT:-19092}"
BROKERS="127.0.0.1:$PORT"
SEED="${CRASH_SEED:-$(date +%s)}"
EVENTS="${CRASH_EVENTS:-1000000}"
RANDOM=$SEED
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-crash.XXXXXX")"
STARTED_BROKER=0
PIDS=()

cleanup() {
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  if [ "$STARTED_BROKER" = 1 ]; then KAFKA_PORT="$PORT" scripts/kafka-broker.sh stop || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

[ -x "$BIN" ] || cargo build --release
ensured=$(KAFKA_PORT="$PORT" scripts/kafka-broker.sh ensure)
grep -vx started <<<"$ensured" || true
if [ "$(tail -1 <<<"$ensured")" = started ]; then STARTED_BROKER=1; fi
echo "crash-test: seed $SEED, $EVENTS events, broker $BROKERS, work dir $WORK"

TOPIC="crash-$SEED-$$"
"$BIN" gen --out "$WORK/in" --skus 1000 --stores 100 --dcs 2 --events "$EVENTS" --partitions 4 \
  --duration-ms 14400000 --disorder 0.01 --bad 0.001 --seed 7 -q
CHUNKS=11
python3 - "$WORK" "$CHUNKS" <<'EOF'
import os, sys
work, chunks = sys.argv[1], int(sys.argv[2])
for name in sorted(os.listdir(f"{work}/in")):
    lines = open(f"{work}/in/{name}", "rb").read().splitlines(keepends=True)
    for k in range(chunks):
        os.makedirs(f"{work}/chunk-{k + 1}", exist_ok=True)
        part = lines[len(lines) * k // chunks : len(lines) * (k + 1) // chunks]
        open(f"{work}/chunk-{k + 1}/{name}", "wb").writelines(part)
EOF
produce_chunk() { "$BIN" produce "$WORK/chunk-$1" --topic "$TOPIC" --brokers "$BROKERS" 2>&1 | sed "s/^/chunk $1: /"; }

# The fixture times lie in the past: a large --idle-ms keeps the wall clock out of the results.
FLAGS=(--brokers "$BROKERS" --topics "$TOPIC" --lateness-ms 5000 --tick-ms 1000 --idle-ms 36000000
  --checkpoint-every 2s -q)

# start NAME METRICS_PORT ARGS...: starts a run in the background, its pid in $STARTED.
start() {
  local name=$1 mport=$2
  shift 2
  # Topic-specific group and prefix: a broker kept from an earlier run holds their old records.
  "$BIN" run "${FLAGS[@]}" --group "$TOPIC.$name" --prefix "$TOPIC.$name" --checkpoint-dir "$WORK/$name.ckpt" \
    --metrics-addr "127.0.0.1:$mport" "$@" >>"$WORK/$name.log" 2>&1 &
  STARTED=$!
  PIDS+=("$STARTED")
}

# The metrics a run serves, for the checks below: scrape(PORT) is {metric name: value summed
# over its labels}, or None while the process does not answer.
cat >"$WORK/metrics.py" <<'EOF'
import urllib.request
def scrape(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except Exception:
        return None
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            name = series.split("{", 1)[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values
EOF

# caught_up TARGET METRICS_PORT...: the input watermark (least over the processes) has reached
# TARGET and no tick has been written for 2 s (within 300 s: a run reads the whole topic in
# under 30 s here, so a run that has not caught up by then has stopped or hangs). With TARGET
# 0, the watermark must instead stay unchanged for 5 s (the uninterrupted run, which tells the
# others their target). Prints the watermark. (The lag metric is not used: tansu's fetch
# responses carry a high watermark that can trail the log end, so lag 0 does not mean read to
# the end.)
caught_up() {
  PYTHONPATH="$WORK" python3 - "$@" <<'EOF'
import os, sys, time
import metrics
target, ports = int(sys.argv[1]), sys.argv[2:]
everything = int(os.environ.get("PRODUCED", "0"))
def scrape(port):
    """(watermark in ms or None, ticks written, messages read), or None."""
    m = metrics.scrape(port)
    if m is None:
        return None
    watermark = m.get("stockflow_watermark_timestamp_seconds")
    watermark = None if watermark is None else round(watermark * 1000)
    return watermark, m.get("stockflow_ticks_written_total", 0.0), m.get("stockflow_messages_read_total", 0.0)
deadline = time.time() + 300
state, since = None, time.time()
while time.time() < deadline:
    seen = [scrape(p) for p in ports]
    if all(s is not None and s[0] for s in seen):
        watermark, ticks, read = min(s[0] for s in seen), sum(s[1] for s in seen), sum(s[2] for s in seen)
        # The uninterrupted run must also have read every message produced (a busy machine can
        # hold its watermark still for 5 s while it reads).
        if target == 0 and read < everything:
            time.sleep(0.25)
            continue
        now = (watermark, ticks) if target == 0 else (watermark >= target, ticks)
        if now != state:
            state, since = now, time.time()
        elif (target == 0 and time.time() - since >= 5) or (target and now[0] and time.time() - since >= 2):
            print(watermark)
            sys.exit(0)
    time.sleep(0.25)
print(f"caught_up: not at {target} after 300 s; last seen per process (watermark, ticks written, "
      f"messages read): {[scrape(p) for p in ports]}", file=sys.stderr)
sys.exit(1)
EOF
}

# stop PID...: SIGTERM and wait; a stopped run must exit 0.
stop() {
  local pid rc=0
  for pid in "$@"; do kill -TERM "$pid"; done
  for pid in "$@"; do wait "$pid" || rc=$?; done
  return $rc
}

kill9() {
  local pid
  for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# new_checkpoint DIR SINCE: waits (up to 60 s) until DIR holds a complete checkpoint newer than
# the newest at SINCE (a directory listing), so that every incarnation makes progress.
new_checkpoint() {
  python3 - "$1" "$2" <<'EOF'
import os, re, sys, time
root, before = sys.argv[1], sys.argv[2].split()
def complete():
    found = []
    for at in (os.scandir(root) if os.path.isdir(root) else []):
        shares = [f.name for f in os.scandir(at.path) if f.name.endswith(".ckpt")]
        counts = {int(m.group(2)) for m in (re.match(r"share-(\d+)-of-(\d+)\.ckpt$", s) for s in shares) if m}
        if any(len([s for s in shares if s.endswith(f"-of-{n}.ckpt")]) == n for n in counts):
            found.append(at.name)
    return found
deadline = time.time() + 60
newest = max(before) if before else ""
while time.time() < deadline:
    if any(name > newest for name in complete()):
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
EOF
}

# Waits (up to 20 s) until a checkpoint share is being written in DIR; returns 1 if none was seen.
wait_for_share_write() {
  python3 - "$1" <<'EOF'
import os, sys, time
root, deadline = sys.argv[1], time.time() + 20
while time.time() < deadline:
    for at in os.scandir(root) if os.path.isdir(root) else []:
        if at.is_dir() and any(f.name.endswith(".ckpt.tmp") for f in os.scandir(at.path)):
            sys.exit(0)
    time.sleep(0.001)
sys.exit(1)
EOF
}

summary=()
failed=0

# ---- 1. crash: 10 kills, one at start-up, one during a share write; a chunk before each
recoveries=()
for kill in $(seq 1 10); do
  produce_chunk "$kill"
  start crash 19602 -w 2
  case $kill in
    3) sleep 0.3; how="at start-up" ;;
    6) if wait_for_share_write "$WORK/crash.ckpt"; then how="during a checkpoint write"; else how="(no write seen in 20 s)"; fi ;;
    *)
      # A random moment after the incarnation's first new checkpoint, so that it makes progress.
      new_checkpoint "$WORK/crash.ckpt" "$(ls "$WORK/crash.ckpt" 2>/dev/null | tr '\n' ' ')" || true
      delay=$((RANDOM % 4)).$((RANDOM % 10))
      sleep "$delay"
      how="$delay s after a new checkpoint"
      ;;
  esac
  kill9 "$STARTED"
  echo "crash-test: kill -9 #$kill $how; checkpoints: $(ls "$WORK/crash.ckpt" 2>/dev/null | tr '\n' ' ')"
done
produce_chunk "$CHUNKS"

# ---- 2. reference: the whole topic, uninterrupted; then the crashed run's last restart
t0=$SECONDS
start reference 19601 -w 2
FINAL=$(PRODUCED=$(cat "$WORK"/in/*.jsonl | wc -l) caught_up 0 19601) || { echo "FAIL reference run did not settle"; exit 1; }
stop "$STARTED" || { echo "FAIL reference run did not stop cleanly"; tail "$WORK/reference.log"; exit 1; }
summary+=("reference run: read everything in $((SECONDS - t0 - 5)) s; input watermark $FINAL")

t0=$SECONDS
start crash 19602 -w 2
caught_up "$FINAL" 19602 >/dev/null || { echo "FAIL crashed run did not catch up"; tail "$WORK/crash.log"; exit 1; }
recoveries+=("$((SECONDS - t0))")
stop "$STARTED" || { echo "FAIL crashed run did not stop cleanly"; tail "$WORK/crash.log"; exit 1; }

# ---- 3. cluster of 2 processes; one of them killed 3 times
printf '127.0.0.1:19611\n127.0.0.1:19612\n' >"$WORK/hosts"
GENERATION=0
start_cluster() {
  GENERATION=$((GENERATION + 1))
  start cluster 19603 -n 2 -p 0 -w 1 --hostfile "$WORK/hosts" --cluster-generation "$GENERATION"
  P0=$STARTED
  start cluster 19604 -n 2 -p 1 -w 1 --hostfile "$WORK/hosts" --cluster-generation "$GENERATION"
  P1=$STARTED
}
# survivor_ends PID VICTIM: the process left after VICTIM was killed ends by itself within 10 s,
# non-zero, with one more line naming VICTIM and its address.
survivor_ends() {
  local pid=$1 victim=$2 rc=0 lost
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "FAIL cluster: the survivor still runs 10 s after process $victim was killed"; return 1
  fi
  wait "$pid" || rc=$?
  [ "$rc" != 0 ] || { echo "FAIL cluster: the survivor exited 0 after losing process $victim"; return 1; }
  lost=$(grep "lost cluster peer" "$WORK/cluster.log" | tail -1)
  [ "$(grep -c "lost cluster peer" "$WORK/cluster.log")" = "$LOST_LINES" ] &&
    grep -q "lost cluster peer process $victim (127.0.0.1:1961$((victim + 1)))" <<<"$lost" || {
    echo "FAIL cluster: expected line $LOST_LINES to name process $victim: $lost"; return 1; }
}
# produced PORT: the output records the process behind metrics PORT has handed to its own
# producer so far (0 when it does not answer).
produced() {
  PYTHONPATH="$WORK" python3 -c 'import sys, metrics
print(int((metrics.scrape(sys.argv[1]) or {}).get("stockflow_output_records_total", 0)))' "$1"
}
# Records produced by each process over its incarnations (scraped before each kill and at the end).
PRODUCED_BY=(0 0)
count_produced() {
  PRODUCED_BY[0]=$((PRODUCED_BY[0] + $(produced 19603)))
  PRODUCED_BY[1]=$((PRODUCED_BY[1] + $(produced 19604)))
}
LOST_LINES=0
for kill in 1 2 3; do
  before=$(ls "$WORK/cluster.ckpt" 2>/dev/null | tr '\n' ' ' || true)
  start_cluster
  new_checkpoint "$WORK/cluster.ckpt" "$before" || true
  delay=$((RANDOM % 4)).$((RANDOM % 10))
  sleep "$delay"
  victim=$((RANDOM % 2))
  count_produced
  if [ $victim = 0 ]; then kill9 "$P0"; survivor=$P1; else kill9 "$P1"; survivor=$P0; fi
  LOST_LINES=$((LOST_LINES + 1))
  survivor_ends "$survivor" "$victim" || { tail "$WORK/cluster.log"; exit 1; }
  echo "crash-test: cluster: kill -9 of process $victim $delay s after a new checkpoint; checkpoints: $(ls "$WORK/cluster.ckpt" 2>/dev/null | tr '\n' ' ')"
done
t0=$SECONDS
start_cluster
caught_up "$FINAL" 19603 19604 >/dev/null || { echo "FAIL cluster did not catch up"; tail "$WORK/cluster.log"; exit 1; }
recoveries+=("$((SECONDS - t0))")
count_produced
stop "$P0" "$P1" || { echo "FAIL cluster did not stop cleanly"; exit 1; }
# Every worker produces the keys it owns: both processes must have written to the topics.
if [ "${PRODUCED_BY[0]}" -gt 0 ] && [ "${PRODUCED_BY[1]}" -gt 0 ]; then
  echo "ok   cluster: both processes produced (output records: process 0 ${PRODUCED_BY[0]}, process 1 ${PRODUCED_BY[1]})"
else
  echo "FAIL cluster: a process produced nothing (output records: process 0 ${PRODUCED_BY[0]}, process 1 ${PRODUCED_BY[1]})"; failed=1
fi

# ---- 4. a damaged share: refused, named, the previous checkpoint used
newest=$(ls -d "$WORK/crash.ckpt"/at-* | sort | tail -1)
share=$(ls "$newest"/*.ckpt | head -1)
truncate -s -7 "$share"
start crash 19602 -w 2
caught_up "$FINAL" 19602 >/dev/null || { echo "FAIL run after damage did not catch up"; tail "$WORK/crash.log"; exit 1; }
stop "$STARTED" || { echo "FAIL run after damage did not stop cleanly"; exit 1; }
if grep -q "refused: $share: truncated" "$WORK/crash.log" && grep -q "falling back to the previous complete checkpoint" "$WORK/crash.log"; then
  echo "ok   damaged share refused and named, previous checkpoint used"
else
  echo "FAIL damaged share not reported"; grep -i "checkpoint" "$WORK/crash.log" | tail -5; failed=1
fi

# ---- compare
for name in reference crash cluster; do
  for t in atp order_plan network_atp; do "$BIN" consume "$TOPIC.$name.$t" --brokers "$BROKERS" >"$WORK/$name.$t"; done
  "$BIN" consume --all "$TOPIC.$name.low_stock" --brokers "$BROKERS" >"$WORK/$name.low_stock"
  "$BIN" consume --all "$TOPIC.$name.dead_letter" --brokers "$BROKERS" >"$WORK/$name.dead_letter"
done
for name in crash cluster; do
  if python3 - "$WORK" "$name" <<'EOF'; then echo "ok   $name: outputs equal the uninterrupted run's"; else echo "FAIL $name"; failed=1; fi
import json, sys
work, name = sys.argv[1], sys.argv[2]
def lines(run, topic):
    return open(f"{work}/{run}.{topic}").read().splitlines()
ok = True
for topic in ["atp", "order_plan", "network_atp"]:
    if lines(name, topic) != lines("reference", topic):
        ref, got = set(lines("reference", topic)), set(lines(name, topic))
        print(f"{topic}: {len(ref - got)} latest values missing, {len(got - ref)} different, e.g. {sorted(ref ^ got)[:2]}")
        ok = False
def ticks(run):
    """Per key (each worker produces the keys it owns), its transitions with their ticks."""
    keys = {}
    for line in lines(run, "low_stock"):
        key, value = line.split("\t", 1)
        ts = json.loads(value)["ts"]
        # A key has at most one transition per tick: a second line of the same tick is a repeat.
        keys.setdefault(key, []).append((ts, [line]))
    return keys
repeats, completed, deduplicated = 0, 0, {}
for key, blocks in sorted(ticks(name).items()):
    first, order = {}, []
    for ts, block in blocks:
        if ts not in first:
            if order and ts < order[-1]:
                print(f"low_stock: {key}: tick {ts} appears first after tick {order[-1]}")
                ok = False
            first[ts] = block
            order.append(ts)
        elif block == first[ts]:
            repeats += 1
        elif block[: len(first[ts])] == first[ts]:
            first[ts] = block  # the first copy was cut short by a kill
            completed += 1
        else:
            print(f"low_stock: {key}: tick {ts} repeated with other records: {block[:2]} vs {first[ts][:2]}")
            ok = False
    deduplicated[key] = [line for ts in order for line in first[ts]]
reference = {key: [line for _, block in blocks for line in block] for key, blocks in ticks("reference").items()}
if deduplicated != reference:
    differing = sorted(k for k in set(deduplicated) | set(reference) if deduplicated.get(k) != reference.get(k))
    print(f"low_stock: {len(differing)} keys' transitions differ from the uninterrupted run's after removing repeated ticks, e.g. {differing[:3]}")
    ok = False
dead_ref, dead = set(lines("reference", "dead_letter")), set(lines(name, "dead_letter"))
if dead != dead_ref:
    print(f"dead letters: {len(dead_ref - dead)} missing, {len(dead - dead_ref)} extra")
    ok = False
print(f"{name}: {sum(map(len, deduplicated.values()))} transitions as uninterrupted; {repeats} key-ticks repeated whole, {completed} completed after a cut")
sys.exit(0 if ok else 1)
EOF
done

# ---- figures
python3 - "$WORK" <<'EOF'
import re, sys
work = sys.argv[1]
sizes = []
for name in ["crash", "cluster"]:
    for m in re.finditer(r"share (\d+) bytes, (\d+) keys, encoded in (\d+) ms, written in (\d+) ms", open(f"{work}/{name}.log").read()):
        sizes.append(tuple(int(x) for x in m.groups()))
if sizes:
    per_key = [b / k for b, k, _, _ in sizes if k]
    print(f"checkpoint shares logged: {len(sizes)}; bytes per key {min(per_key):.0f}..{max(per_key):.0f}; "
          f"encode {max(s[2] for s in sizes)} ms, write {max(s[3] for s in sizes)} ms at most (worker 0's share)")
EOF
for line in "${summary[@]}"; do echo "crash-test: $line"; done
echo "crash-test: recovery (restart to caught up, final restart): 1 process ${recoveries[0]} s, 2 processes ${recoveries[1]} s"
[ "$failed" = 0 ] && echo "crash-test: passed" || { echo "crash-test: FAILED"; exit 1; }
