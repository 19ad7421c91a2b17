#!/usr/bin/env python3
"""A counting TCP relay for benchmarks: the bytes two cluster processes send each other.

    byte-relay.py LISTEN_PORT TARGET_PORT COUNTS_FILE

Listens on 127.0.0.1:LISTEN_PORT; every connection it accepts is joined to a new connection to
127.0.0.1:TARGET_PORT and the bytes are copied both ways unchanged. When the last connection
closes (or on SIGTERM), COUNTS_FILE gets one line `to_target from_target connections` (bytes
from the connecting side to the target, bytes back, connections relayed).

It measures any binary the same way, without a line of its code: put the relay's port in the
hostfile of the process that connects (the higher index) in place of the target's address.
The counts are TCP payload: the handshake and timely's message headers included, IP and TCP
headers not.
"""

import signal
import socket
import sys
import threading

BUFFER = 1 << 20


def main():
    listen_port, target_port, counts_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    counts = {"to_target": 0, "from_target": 0, "connections": 0, "open": 0}
    lock = threading.Lock()
    done = threading.Event()

    def write_counts(*_):
        with lock, open(counts_file, "w") as f:
            f.write(f"{counts['to_target']} {counts['from_target']} {counts['connections']}\n")
        done.set()

    def copy(src, dst, key):
        buf = bytearray(BUFFER)
        view = memoryview(buf)
        try:
            while True:
                n = src.recv_into(buf)
                if n == 0:
                    break
                dst.sendall(view[:n])
                with lock:
                    counts[key] += n
        except OSError:
            pass
        finally:
            # Pass the end on, so that each side sees the other close.
            for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def relay(client):
        try:
            target = socket.create_connection(("127.0.0.1", target_port))
        except OSError:
            client.close()  # the target is not up yet: the connecting process retries
            return
        for s in (client, target):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with lock:
            counts["connections"] += 1
            counts["open"] += 1
        threads = [
            threading.Thread(target=copy, args=(client, target, "to_target"), daemon=True),
            threading.Thread(target=copy, args=(target, client, "from_target"), daemon=True),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.close()
        target.close()
        with lock:
            counts["open"] -= 1
            last = counts["open"] == 0
        if last:
            write_counts()

    signal.signal(signal.SIGTERM, write_counts)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(16)
    server.settimeout(0.2)
    while not done.is_set():
        try:
            client, _ = server.accept()
        except socket.timeout:
            continue
        threading.Thread(target=relay, args=(client,), daemon=True).start()


if __name__ == "__main__":
    main()
