#!/usr/bin/env bash
# checkpoint-compat.sh OLD_DIR NEW_DIR — checkpoints written by one build load in the other.
#
# For a change that keeps the checkpoint format (docs/checkpoints.md) while it changes how the
# state sits in memory. OLD_DIR and NEW_DIR each hold a `stockflow` binary. On a tansu broker
# (scripts/kafka-broker.sh, port $KAFKA_PORT, default 23992) it sends a generated network
# (`gen --kafka`), then, for each pair (old then new, new then old, new then new), `batch -w 2`
# to the middle of the day with a `--checkpoint-dir`, and `batch -w 2` to the end of the day
# from that checkpoint. Checks, each printed as ok or FAIL:
#   - every resumed run's outputs (snapshot and the change streams after the checkpoint) are
#     the same bytes, whichever build wrote the checkpoint. Not its dead letters: a resumed run
#     re-reads from the offsets the checkpoint holds, which depend on how far each reader had
#     read when it was cut (docs/checkpoints.md), so it dead-letters more or fewer of the
#     rejected lines after them;
#   - their snapshot is the one a run from scratch writes;
#   - `checkpoint show --ledger-only` prints the same entries with either build, of checkpoints
#     written by either.
# Exits 1 if any check fails.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -ne 2 ]; then
  echo "usage: scripts/checkpoint-compat.sh OLD_DIR NEW_DIR (each holding a stockflow binary)" >&2
  exit 2
fi
OLD=$1 NEW=$2
PORT=${KAFKA_PORT:-23992}
BROKERS=127.0.0.1:$PORT
WORK=$(mktemp -d /tmp/checkpoint-compat.XXXX)
KAFKA_PORT=$PORT scripts/kafka-broker.sh start >/dev/null || { echo "the broker did not start on $BROKERS" >&2; exit 1; }
trap 'KAFKA_PORT=$PORT scripts/kafka-broker.sh stop >/dev/null 2>&1' EXIT

topic="compat-$$"
net=(--events 40000 --skus 40 --stores 8 --dcs 2 --partitions 3 --seed 11 --bad 0.01)
"$NEW/stockflow" gen --quiet --kafka "$topic" --brokers "$BROKERS" "${net[@]}" || exit 1
middle=(--until 1700043200000 --lateness-ms 0)
end=(--until 1700086400000 --lateness-ms 0)

batch() { # bin group out batch-args...
  local bin=$1 group=$2 out=$3
  shift 3
  if ! timeout 300 "$bin/stockflow" batch --brokers "$BROKERS" --topics "$topic" --group "$topic-$group" \
    --prefix "$topic-$group" --out "$out" -w 2 --quiet "$@" 2>"$out.err"; then
    echo "FAIL: batch ($bin, $group)" >&2
    cat "$out.err" >&2
    exit 1
  fi
}
digest() { # dir: its files but the summary (which records timings) and the dead letters (above)
  (cd "$1" && find . -type f ! -name summary.json ! -name dead_letter.jsonl | LC_ALL=C sort | xargs b2sum) |
    b2sum | cut -c1-16
}
failed=0
check() { # description a b
  if [ "$2" = "$3" ]; then echo "ok: $1 ($2)"; else echo "FAIL: $1 ($2 != $3)"; failed=1; fi
}

batch "$NEW" scratch "$WORK/scratch" "${end[@]}"
scratch=$(digest "$WORK/scratch/snapshot")
resumed=()
for pair in "old-new $OLD $NEW" "new-old $NEW $OLD" "new-new $NEW $NEW"; do
  read -r name first second <<<"$pair"
  batch "$first" "$name" "$WORK/$name-middle" --checkpoint-dir "$WORK/ck-$name" "${middle[@]}"
  batch "$second" "$name" "$WORK/$name-end" --checkpoint-dir "$WORK/ck-$name" "${end[@]}"
  check "$name: the snapshot from the checkpoint is the one from scratch" "$(digest "$WORK/$name-end/snapshot")" "$scratch"
  resumed+=("$(digest "$WORK/$name-end")")
done
check "old-new and new-new resumed runs wrote the same" "${resumed[0]}" "${resumed[2]}"
check "new-old and new-new resumed runs wrote the same" "${resumed[1]}" "${resumed[2]}"
show() { "$1/stockflow" checkpoint show --ledger-only "$2" | b2sum | cut -c1-16; }
want=$(show "$NEW" "$WORK/ck-new-new")
for bin in "$OLD" "$NEW"; do
  for ck in old-new new-old; do
    check "checkpoint show by $bin of ck-$ck" "$(show "$bin" "$WORK/ck-$ck")" "$want"
  done
done
echo "work directory: $WORK"
exit $failed
