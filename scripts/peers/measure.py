#!/usr/bin/env python3
"""Runs a command and reports its whole process tree's wall time, CPU time and peak RSS.

  measure.py RESULT_JSON -- COMMAND...

`/usr/bin/time -v` reports the largest single waited-for process, which misses PyFlink's JVM
(a grandchild started by py4j) and does not add the RSS of processes that run side by side. This
samples /proc every 50 ms: peak RSS is the largest sum of VmRSS over the tree at one sample, CPU
is the sum over every process seen of its last utime+stime (so up to one interval of a process's
last CPU can be missed). The command's own stdout/stderr pass through; its exit status is ours.
"""

import json
import os
import subprocess
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        kids.setdefault(int(fields[1]), []).append((int(entry), fields))
    return kids


def sample(root, cpu_seen):
    kids = children_map()
    total_rss = 0
    stack = [root]
    seen = set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total_rss += int(line.split()[1]) * 1024
            with open(f"/proc/{pid}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()
            cpu_seen[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except (OSError, IndexError, ValueError):
            pass
        stack += [child for child, _ in kids.get(pid, [])]
    return total_rss


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit("usage: measure.py RESULT_JSON -- COMMAND...")
    out_path, command = sys.argv[1], sys.argv[3:]
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    cpu_seen = {}
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sample(proc.pid, cpu_seen))
        time.sleep(0.05)
    wall = time.perf_counter() - start
    own = os.times()
    # The direct child is reaped: use its exact rusage when it is larger than what was sampled.
    reaped = own.children_user + own.children_system
    cpu = max(sum(cpu_seen.values()), reaped)
    with open(out_path, "w") as fh:
        json.dump({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_bytes": peak,
                   "status": proc.returncode}, fh)
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
