#!/usr/bin/env bash
# Installs and runs a Kafka-compatible broker (tansu, in-memory storage) on loopback, for the
# end-to-end tests and demos.
#
#   scripts/kafka-broker.sh install   build tansu into cargo's bin directory, outside the clone, so
#                                     a fresh clone (CI) reuses it (rebuilt only when missing)
#   scripts/kafka-broker.sh start     install if needed, start on 127.0.0.1:$KAFKA_PORT, wait
#   scripts/kafka-broker.sh stop      stop the broker started by `start`
#   scripts/kafka-broker.sh ensure    reuse any broker answering on the port, else `start`;
#                                     the last line is `started` when this call started one
#
# Building tansu takes ~15-20 min on 2 cores; `install` once, early.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION="${TANSU_VERSION:-0.6.0}"
PORT="${KAFKA_PORT:-19092}"
# Outside the clone: CI starts from a fresh clone each time, and building tansu takes ~15 min.
ROOT="${TANSU_ROOT:-${CARGO_HOME:-$HOME/.cargo}}"
STATE="${TANSU_STATE:-$PWD/target/kafka-broker}"
mkdir -p "$STATE"

find_tansu() {
  # A binary of the pinned version: $TANSU_ROOT first, then cargo's bin dir, then an older
  # project-local build.
  for bin in "$ROOT/bin/tansu" "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" "$PWD/.tools/bin/tansu"; do
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q " $TANSU_VERSION\$"; then
      echo "$bin"
      return 0
    fi
  done
  return 1
}

install() {
  if bin=$(find_tansu); then
    echo "tansu $TANSU_VERSION: $bin"
    return 0
  fi
  echo "building tansu $TANSU_VERSION into $ROOT (takes ~15-20 min on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$ROOT"
  find_tansu
}

start() {
  install >/dev/null
  bin=$(find_tansu)
  if [ -f "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
    echo "broker already running (pid $(cat "$STATE/pid")) on 127.0.0.1:$PORT"
    return 0
  fi
  "$bin" broker \
    --listener-url "tcp://127.0.0.1:$PORT" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine "memory://tansu/" \
    >"$STATE/broker.log" 2>&1 &
  echo $! >"$STATE/pid"
  for _ in $(seq 1 100); do
    if listening; then
      echo "broker up on 127.0.0.1:$PORT (pid $(cat "$STATE/pid"), log $STATE/broker.log)"
      return 0
    fi
    if ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
      echo "broker exited; its log:" >&2
      cat "$STATE/broker.log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "broker did not answer on 127.0.0.1:$PORT within 20 s; see $STATE/broker.log" >&2
  return 1
}

listening() {
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
}

ensure() {
  if listening; then
    echo "reusing the broker on 127.0.0.1:$PORT"
  else
    start
    echo started
  fi
}

stop() {
  if [ -f "$STATE/pid" ]; then
    pid=$(cat "$STATE/pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$STATE/pid"
  fi
}

case "${1:-start}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  ensure) ensure ;;
  *) echo "usage: $0 install|start|stop|ensure" >&2; exit 2 ;;
esac
