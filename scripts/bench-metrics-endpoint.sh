#!/usr/bin/env bash
# The metrics endpoint under hostile or careless clients (issue 19, point 3): how long a scrape
# takes beside idle connections and beside a client that sends its request a byte every 4 s,
# and how much the process's resident set grows while a 10 MB request line without a newline
# is sent. Runs a finished replay of fixtures/basic that keeps serving (--metrics-linger-secs).
#
#   scripts/bench-metrics-endpoint.sh [BINARY]      (default: target/release/stockflow)
#
# Env: METRICS_PORT (19194). Prints one table row per probe; a scrape that takes longer than
# 30 s is reported as such. Loopback only; every connection is closed when its probe ends.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-target/release/stockflow}"
PORT="${METRICS_PORT:-19194}"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/stockflow-endpoint.XXXXXX")"
"$BIN" replay fixtures/basic/input --out "$OUT/out" --metrics-addr "127.0.0.1:$PORT" \
  --metrics-linger-secs 900 -q 2>"$OUT/replay.log" &
job=$!
trap 'kill $job 2>/dev/null || true; wait $job 2>/dev/null || true; rm -rf "$OUT"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null 2>&1 && break; sleep 0.1; done

echo "binary: $BIN ($("$BIN" --version 2>/dev/null || echo '?')); $(nproc) cores; $(uptime | sed 's/.*load/load/')"
python3 - "$PORT" "$job" <<'EOF'
import socket, sys, threading, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
addr = ("127.0.0.1", port)
LIMIT = 30.0

def scrape_seconds():
    """Seconds for one GET /metrics on a fresh connection; None past LIMIT."""
    started = time.time()
    try:
        s = socket.create_connection(addr, timeout=LIMIT)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        return time.time() - started if data.startswith(b"HTTP/1.1 200") else None
    except OSError:
        return None

def show(probe, seconds):
    print(f"| {probe} | {'> %d s (gave up)' % LIMIT if seconds is None else '%.3f s' % seconds} |")

def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

print("| probe | scrape took |")
print("|---|---|")
show("nothing else connected", scrape_seconds())
for n in (3, 130, 200):
    idle = []
    for _ in range(n):
        try:
            idle.append(socket.create_connection(addr, timeout=2))
        except OSError:
            break
    show(f"{n} idle connections ({len(idle)} connected)", scrape_seconds())
    for s in idle:
        s.close()
    time.sleep(6)  # the old endpoint works through them one by one

stop = threading.Event()
def slow_client():
    s = socket.create_connection(addr)
    for byte in b"GET /metrics HTTP/1.1\r\nHost: bench\r\n\r\n":
        if stop.wait(4):
            break
        try:
            s.send(bytes([byte]))
        except OSError:
            break
    s.close()
slow = threading.Thread(target=slow_client)
slow.start()
time.sleep(1)
show("a client sending a byte every 4 s", scrape_seconds())
stop.set()
slow.join()
time.sleep(6)

before = peak = rss()
s = socket.create_connection(addr)
sent = 0
try:
    s.sendall(b"GET /")
    chunk = b"a" * 65536
    while sent < 10 << 20:
        s.sendall(chunk)
        sent += len(chunk)
        peak = max(peak, rss())
except OSError:
    pass
s.settimeout(LIMIT)
try:
    answer = s.recv(100).split(b"\r\n")[0].decode()
except OSError as e:
    answer = f"({e.__class__.__name__})"
s.close()
time.sleep(1)
after = rss()
print()
print("| 10 MB request line | sent before refused | answer | VmRSS before | peak while sending | after |")
print("|---|---|---|---|---|---|")
mb = lambda b: "%.1f MB" % (b / 1e6)
print(f"| | {mb(sent)} | {answer or '(closed)'} | {mb(before)} | {mb(peak)} | {mb(after)} |")
EOF
