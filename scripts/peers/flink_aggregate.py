#!/usr/bin/env python3
"""Apache Flink peer: the per-key streaming aggregate of the same fixture files, in Flink SQL.

  flink_aggregate.py INPUT_DIR [--parallelism N] [--mini-batch] [--collect]

A PyFlink Table API job in streaming mode on the local mini-cluster: the filesystem source
reads every file of INPUT_DIR (JSON format; lines that do not parse are skipped), and a
continuous GROUP BY (sku, loc) maintains the on_hand movement (sale/fulfill minus,
return/receipt plus, adjust delta), the quantity reserved and the number of messages per key.
Counts, holds' ends, POs and policies are not modelled: this is the aggregate core of the job,
the part Flink is built for, and deliberately less than stockflow computes.

The result goes to a `blackhole` sink, so the time is the aggregate's, not a sink's. The
continuous aggregate emits an update per input row (or per mini-batch with --mini-batch, Flink's
own throughput switch: 1 s / 5000 rows). --collect instead sums the per-key rows in Flink (keys,
messages, on_hand movement, reserved; mini-batch on) and prints the final totals, to check the
job against another engine; it is not for timing.

Prints one JSON line on stdout: parallelism, rows in, job seconds (submit to finish, the
JVM and Python start-up excluded), rows/s and rows/s per parallel task.
"""

import argparse
import json
import os
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input_dir")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--mini-batch", action="store_true")
    parser.add_argument("--collect", action="store_true")
    args = parser.parse_args()
    path = os.path.abspath(args.input_dir)
    lines = 0
    for name in sorted(os.listdir(path)):
        if name.endswith(".jsonl"):
            with open(os.path.join(path, name), "rb") as fh:
                lines += sum(1 for line in fh if line.strip())

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("pipeline.name", "stockflow-peer-aggregate")
    if args.mini_batch or args.collect:
        conf.set("table.exec.mini-batch.enabled", "true")
        conf.set("table.exec.mini-batch.allow-latency", "1 s")
        conf.set("table.exec.mini-batch.size", "5000")
    # Hidden files (such as bench.sh's `.complete` marker) are skipped by the filesystem source.
    env.execute_sql(f"""
      CREATE TABLE events (
        `type` STRING, sku STRING, loc STRING, qty BIGINT, delta BIGINT
      ) WITH (
        'connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'json',
        'json.ignore-parse-errors' = 'true', 'json.fail-on-missing-field' = 'false'
      )""")
    env.execute_sql("""
      CREATE TABLE per_key (
        sku STRING, loc STRING, on_hand_moved BIGINT, reserved BIGINT, messages BIGINT
      ) WITH ('connector' = 'blackhole')""")
    aggregate = """
      SELECT sku, loc,
             SUM(CASE `type` WHEN 'sale' THEN -qty WHEN 'fulfill' THEN -qty
                             WHEN 'return' THEN qty WHEN 'receipt' THEN qty
                             WHEN 'adjust' THEN delta ELSE CAST(0 AS BIGINT) END) AS on_hand_moved,
             SUM(CASE WHEN `type` = 'reserve' THEN qty ELSE CAST(0 AS BIGINT) END) AS reserved,
             COUNT(*) AS messages
      FROM events WHERE sku IS NOT NULL AND loc IS NOT NULL
      GROUP BY sku, loc"""
    start = time.perf_counter()
    if args.collect:
        # Totals over the per-key rows, computed in Flink on the same streaming aggregate, so a
        # handful of changelog rows (not one per input line) reach Python; the last one counts.
        totals = None
        with env.execute_sql(f"""
            SELECT COUNT(*), SUM(messages), SUM(on_hand_moved), SUM(reserved)
            FROM ({aggregate})""").collect() as results:
            for row in results:
                kind = str(row.get_row_kind())
                if not (kind.endswith("DELETE") or kind.endswith("UPDATE_BEFORE")):
                    totals = row
        keys, messages, moved, reserved = (int(x or 0) for x in totals)
        print(json.dumps({"keys": keys, "messages": messages, "on_hand_moved": moved,
                          "reserved": reserved}))
        return
    env.execute_sql(f"INSERT INTO per_key {aggregate}").wait()
    seconds = time.perf_counter() - start
    print(json.dumps({
        "engine": "flink", "parallelism": args.parallelism, "mini_batch": args.mini_batch,
        "lines": lines, "job_seconds": round(seconds, 3), "lines_per_s": round(lines / seconds),
        "lines_per_s_per_task": round(lines / seconds / args.parallelism),
    }))


if __name__ == "__main__":
    sys.exit(main())
