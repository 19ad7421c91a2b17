#!/usr/bin/env python3
"""DuckDB peer: the batch-recompute alternative to stockflow, in SQL.

Reads the same JSON-lines fixture files as `stockflow replay` and recomputes the final state
SPEC.md defines (§1-§3) for the end of the window: per key on_hand / reserved / on_order /
available / atp / position, low-stock states, the order lines with their allocation, and
network_atp. Everything is SQL run by DuckDB; Python only builds the statements, drives the
order-line fixpoint (one SQL round per level of the sourcing graph) and writes no data itself.

  duckdb_plan.py run INPUT... [--out DIR] [--tick-ms N] [--lateness-ms N] [--until T] [--threads N]
  duckdb_plan.py check [FIXTURES_DIR]     # compare with every fixtures/<case>/expected/snapshot

`run` writes snapshot/{atp,low_stock,order_plan,network_atp}.jsonl under --out (sorted by key,
the same fields as stockflow's snapshot) and prints timings and row counts on stderr.
`check` runs each golden fixture with the options in its options.txt and prints, per case, how
many ATP rows, order lines, low-stock rows and network_atp rows match stockflow's expected
snapshot exactly.

What is faithful: validation of every field (types, ranges, byte limits, RFC 3339 times; only
validity matters here, so the order of the checks does not), effective time per (source,
partition) with --lateness-ms, the window (--until, or the tick of the largest effective time),
the total order (effective time, source, partition, offset), counts as barriers on their key
(absorbed messages change nothing), holds with the default 15-minute expiry, duplicates,
expired-on-arrival and orphans (each hold's messages are folded in order by list_reduce), the
latest po per po_id and the latest policy per key, the order-line fixpoint over the sourcing
graph, and the allocation of short internal sources (largest-remainder rounds, exact rational
comparison, ties by dest; a recursive CTE walks the rounds line by line).

What is simplified (SQL/DuckDB cannot reasonably express it, and none of it changes the state
of valid workloads): JSON strictness beyond what DuckDB's parser checks — duplicate member
names (DuckDB keeps one of them instead of rejecting the line), nesting deeper than 128, lone
surrogate escapes — is not enforced; a line that is not valid UTF-8 is dropped by the CSV
reader (it is rejected anyway). Only the final snapshot is computed, not the per-tick change
streams, dead letters or the summary counters. A sourcing cycle stops the fixpoint after 64
rounds (SPEC leaves values on a cycle unspecified).
"""

import argparse
import json
import os
import sys
import time

import duckdb

MAX_TIME_MS = 253402300799999
HOLD_DEFAULT_MS = 15 * 60 * 1000
FIXPOINT_ROUNDS = 64

# Field list in the order of json_extract's result (1-based in SQL).
FIELDS = [
    "type", "ts", "sku", "loc", "qty", "delta", "reason", "res_id", "expires_at", "po_id",
    "status", "eta", "reorder_point", "order_up_to", "safety_stock", "pack_size", "moq",
    "source", "deleted",
]
F = {name: i + 1 for i, name in enumerate(FIELDS)}

MACROS = f"""
CREATE OR REPLACE MACRO absent(ty) AS (ty IS NULL OR ty = 'NULL');
CREATE OR REPLACE MACRO int_of(ty, st) AS
  CASE WHEN ty IN ('UBIGINT', 'BIGINT') THEN TRY_CAST(st AS BIGINT) END;
CREATE OR REPLACE MACRO str_of(ty, st) AS CASE WHEN ty = 'VARCHAR' THEN st END;
CREATE OR REPLACE MACRO str_ok(s, hi) AS coalesce(strlen(s) BETWEEN 1 AND hi, false);
CREATE OR REPLACE MACRO rfc3339_ms(s) AS (
  CASE WHEN regexp_full_match(s,
      '\\d{{4}}-\\d{{2}}-\\d{{2}}[Tt]\\d{{2}}:\\d{{2}}:\\d{{2}}(\\.\\d+)?([Zz]|[+-]\\d{{2}}:\\d{{2}})')
  THEN epoch_ms(try_strptime(substr(s, 1, 10) || ' ' || substr(s, 12, 8), '%Y-%m-%d %H:%M:%S'))
     + CAST(substr(rpad(regexp_extract(s, '\\.(\\d+)', 1), 3, '0'), 1, 3) AS BIGINT)
     - CASE WHEN upper(right(s, 1)) = 'Z' THEN 0
            ELSE (CASE WHEN substr(right(s, 6), 1, 1) = '-' THEN -1 ELSE 1 END)
                 * (CAST(substr(right(s, 5), 1, 2) AS BIGINT) * 60
                    + CAST(right(s, 2) AS BIGINT)) * 60000 END
  END);
CREATE OR REPLACE MACRO time_of(ty, st) AS (
  CASE WHEN ty IN ('UBIGINT', 'BIGINT')
         THEN CASE WHEN TRY_CAST(st AS BIGINT) BETWEEN 0 AND {MAX_TIME_MS} THEN TRY_CAST(st AS BIGINT) END
       WHEN ty = 'VARCHAR'
         THEN CASE WHEN rfc3339_ms(st) BETWEEN 0 AND {MAX_TIME_MS} THEN rfc3339_ms(st) END
  END);
"""


def sql_list(paths):
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


def input_files(inputs):
    """Directories contribute every *.jsonl inside (names sorted), like `stockflow replay`."""
    files = []
    for item in inputs:
        if os.path.isdir(item):
            files += [os.path.join(item, n) for n in sorted(os.listdir(item)) if n.endswith(".jsonl")]
        else:
            files.append(item)
    names = [os.path.basename(f) for f in files]
    if len(set(names)) != len(names):
        sys.exit("duckdb_plan: two inputs share a base name; SPEC §2 makes that an error")
    if not files:
        sys.exit("duckdb_plan: no .jsonl input files")
    return files


def load_and_validate(con, files, lateness_ms, until_ms, tick_ms):
    """Builds table `ev`: the applied messages with their effective time; returns as_of."""
    # One VARCHAR column per physical line: the CSV reader keeps blank lines (as NULL) so the
    # table's rowid order is (file, line) order, which is all the offset is needed for.
    con.execute(f"""
      CREATE OR REPLACE TABLE raw AS
      SELECT regexp_extract(filename, '[^/]+$') AS source, raw
      FROM read_csv({sql_list(files)}, columns = {{'raw': 'VARCHAR'}}, header = false,
                    delim = '\\x01', quote = '', escape = '', filename = true,
                    auto_detect = false, ignore_errors = true, strict_mode = false)""")
    paths = "[" + ", ".join("'$." + n + "'" for n in FIELDS) + "]"

    def ty(name):
        return f"t[{F[name]}]"

    def val(name, kind):
        return f"{kind}_of(t[{F[name]}], s[{F[name]}])"

    n9 = "BETWEEN 0 AND 1000000000"
    # Each line is parsed twice: once for the JSON type of every field, once for its text;
    # a line that is not JSON gets NULL lists (try) and no type. Non-objects have no `type`.
    con.execute(f"""
      CREATE OR REPLACE TABLE valid AS
      WITH parsed AS (
        SELECT source, rowid AS pos, try(json_type(raw, {paths})) AS t,
               try(json_extract_string(raw, {paths})) AS s
        FROM raw WHERE raw IS NOT NULL),
      typed AS (
        SELECT source, pos, t, s, {val('type', 'str')} AS type, {val('ts', 'time')} AS ts,
               {val('sku', 'str')} AS sku, {val('loc', 'str')} AS loc, {val('qty', 'int')} AS qty,
               {val('delta', 'int')} AS delta, {val('res_id', 'str')} AS res_id,
               {val('expires_at', 'time')} AS expires_at, {val('po_id', 'str')} AS po_id,
               {val('status', 'str')} AS status, {val('reorder_point', 'int')} AS reorder_point,
               {val('order_up_to', 'int')} AS order_up_to, {val('safety_stock', 'int')} AS safety_stock,
               {val('pack_size', 'int')} AS pack_size, {val('moq', 'int')} AS moq,
               {val('source', 'str')} AS src,
               coalesce({ty('deleted')} = 'BOOLEAN' AND s[{F['deleted']}] = 'true', false) AS deleted
        FROM parsed WHERE t IS NOT NULL),
      checked AS (
        SELECT *, str_ok(sku, 64) AND str_ok(loc, 64) AS key_ok,
               coalesce(qty BETWEEN 1 AND 1000000000, false) AS qty1,
               coalesce(qty {n9}, false) AS qty0
        FROM typed WHERE ts IS NOT NULL)
      SELECT source, pos, type, ts, sku, loc, qty, delta, res_id, expires_at, po_id,
             coalesce(status, 'open') AS status, deleted, reorder_point, order_up_to,
             coalesce(safety_stock, 0) AS safety_stock, coalesce(pack_size, 1) AS pack_size,
             coalesce(moq, 0) AS moq, src
      FROM checked
      WHERE CASE type
        WHEN 'sale' THEN key_ok AND qty1
        WHEN 'return' THEN key_ok AND qty1
        WHEN 'receipt' THEN key_ok AND qty1 AND (absent({ty('po_id')}) OR str_ok(po_id, 128))
        WHEN 'adjust' THEN key_ok
             AND coalesce(delta BETWEEN -1000000000 AND 1000000000 AND delta <> 0, false)
             AND (absent({ty('reason')}) OR {ty('reason')} = 'VARCHAR')
        WHEN 'count' THEN key_ok AND qty0
        WHEN 'reserve' THEN key_ok AND str_ok(res_id, 128) AND qty1
             AND (absent({ty('expires_at')}) OR expires_at IS NOT NULL)
        WHEN 'release' THEN key_ok AND str_ok(res_id, 128)
        WHEN 'fulfill' THEN key_ok AND str_ok(res_id, 128) AND qty1
        WHEN 'po' THEN str_ok(po_id, 128) AND key_ok AND qty0
             AND (absent({ty('status')}) OR coalesce(status IN ('open', 'closed', 'cancelled'), false))
             AND (absent({ty('eta')}) OR {val('eta', 'time')} IS NOT NULL)
        WHEN 'policy' THEN key_ok
             AND (absent({ty('deleted')}) OR {ty('deleted')} = 'BOOLEAN')
             AND (deleted OR (
                  coalesce(reorder_point {n9}, false) AND coalesce(order_up_to {n9}, false)
                  AND order_up_to >= reorder_point
                  AND (absent({ty('safety_stock')}) OR coalesce(safety_stock {n9}, false))
                  AND (absent({ty('pack_size')}) OR coalesce(pack_size BETWEEN 1 AND 1000000000, false))
                  AND (absent({ty('moq')}) OR coalesce(moq {n9}, false))
                  AND (absent({ty('source')}) OR str_ok(src, 64))))
        ELSE false END""")
    # Effective time (SPEC §2): never more than `lateness` behind the largest earlier valid ts
    # of the (source, partition); a fixture file is one. greatest(ts, max(earlier) - L) equals
    # greatest(ts, max(earlier and this) - L) for L >= 0, which a streaming frame computes.
    eff = (f"greatest(ts, max(ts) OVER (PARTITION BY source ORDER BY pos ROWS UNBOUNDED PRECEDING)"
           f" - {int(lateness_ms)})")
    if until_ms is not None:
        con.execute(f"CREATE OR REPLACE TABLE ev AS SELECT *, {eff} AS eff FROM valid "
                    f"QUALIFY eff <= {int(until_ms)}")
        return until_ms
    con.execute(f"CREATE OR REPLACE TABLE ev AS SELECT *, {eff} AS eff FROM valid")
    max_eff = con.execute("SELECT max(eff) FROM ev").fetchone()[0]
    # Without --until a finite input ends at the tick of its largest effective time.
    return None if max_eff is None else -(-max_eff // tick_ms) * tick_ms


def derive_state(con, as_of):
    """Builds table `k`: per key on_hand, reserved, on_order and the latest policy."""
    # Counts are barriers: a stock message whose own ts is earlier than the ts of the latest
    # count applied before it (in the total order) on its key changes nothing. Applied counts
    # have non-decreasing ts, so that is the largest ts among the earlier counts.
    con.execute("""
      CREATE OR REPLACE TABLE on_hand AS
      WITH stock AS (
        SELECT sku, loc, eff, source, pos, ts, type = 'count' AS is_count,
               CASE type WHEN 'sale' THEN -qty WHEN 'fulfill' THEN -qty WHEN 'return' THEN qty
                         WHEN 'receipt' THEN qty WHEN 'count' THEN qty ELSE delta END AS v,
               max(CASE WHEN type = 'count' THEN ts END) OVER w_before AS barrier
        FROM ev WHERE type IN ('sale', 'return', 'receipt', 'adjust', 'count', 'fulfill')
        WINDOW w_before AS (PARTITION BY sku, loc ORDER BY eff, source, pos
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
      applied AS (
        SELECT *, count(*) FILTER (WHERE is_count) OVER (
                    PARTITION BY sku, loc ORDER BY eff, source, pos
                    ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS counts_from_here
        FROM stock WHERE barrier IS NULL OR ts >= barrier)
      -- the last applied count sets the level; only what follows it moves it
      SELECT sku, loc, sum(v) FILTER (WHERE counts_from_here = 0
                                      OR (is_count AND counts_from_here = 1)) AS on_hand
      FROM applied GROUP BY sku, loc""")
    # Holds: each (key, res_id) is a small state machine; its messages are gathered in order
    # and folded by list_reduce. State = the active hold's (qty, expires_at), or NULLs.
    none = "struct_pack(type := 'state', eff := 0::BIGINT, qty := NULL::BIGINT, exp := NULL::BIGINT)"
    con.execute(f"""
      CREATE OR REPLACE TABLE holds AS
      WITH per_hold AS (
        SELECT sku, loc,
               list(struct_pack(type, eff, qty,
                                exp := CASE WHEN type = 'reserve'
                                            THEN coalesce(expires_at, eff + {HOLD_DEFAULT_MS}) END)
                    ORDER BY eff, source, pos) AS msgs
        FROM ev WHERE type IN ('reserve', 'release', 'fulfill') GROUP BY sku, loc, res_id),
      final AS (
        SELECT sku, loc, list_reduce(msgs, lambda acc, m:
          CASE WHEN acc.qty IS NOT NULL AND m.eff < acc.exp  -- a hold is active at m.eff:
                 THEN CASE WHEN m.type = 'reserve' THEN acc ELSE {none} END  -- duplicate / ended
               WHEN m.type = 'reserve' AND m.exp > m.eff  -- opens (else expired on arrival)
                 THEN struct_pack(type := 'state', eff := 0::BIGINT, qty := m.qty, exp := m.exp)
               ELSE acc END,  -- orphan release / fulfill
          {none}) AS st
        FROM per_hold)
      SELECT sku, loc, sum(st.qty) AS reserved
      FROM final WHERE st.qty IS NOT NULL AND st.exp > {as_of}
      GROUP BY sku, loc""")
    con.execute("""
      CREATE OR REPLACE TABLE on_order AS
      WITH latest AS (
        SELECT arg_max(struct_pack(sku, loc, qty, status), (eff, source, pos)) AS p
        FROM ev WHERE type = 'po' GROUP BY po_id)
      SELECT p.sku AS sku, p.loc AS loc, sum(p.qty) AS on_order
      FROM latest WHERE p.status = 'open' GROUP BY ALL""")
    con.execute("""
      CREATE OR REPLACE TABLE policy AS
      SELECT sku, loc, p.* EXCLUDE (deleted) FROM (
        SELECT sku, loc,
               arg_max(struct_pack(deleted, reorder_point, order_up_to, safety_stock, pack_size,
                                   moq, src), (eff, source, pos)) AS p
        FROM ev WHERE type = 'policy' GROUP BY sku, loc)
      WHERE NOT p.deleted""")
    con.execute("""
      CREATE OR REPLACE TABLE k AS
      WITH keys AS (SELECT sku, loc FROM on_hand UNION SELECT sku, loc FROM holds
                    UNION SELECT sku, loc FROM on_order UNION SELECT sku, loc FROM policy)
      SELECT keys.sku, keys.loc, coalesce(on_hand, 0) AS on_hand, coalesce(reserved, 0) AS reserved,
             coalesce(on_order, 0) AS on_order, p.reorder_point IS NOT NULL AS has_policy,
             p.reorder_point, p.order_up_to, coalesce(p.safety_stock, 0) AS safety_stock,
             p.pack_size, p.moq, p.src
      FROM keys LEFT JOIN on_hand USING (sku, loc) LEFT JOIN holds USING (sku, loc)
           LEFT JOIN on_order USING (sku, loc) LEFT JOIN policy p USING (sku, loc)""")


def order_lines(con):
    """Order lines (fixpoint over the sourcing graph), then allocation; builds `lines`, `rows`."""
    con.execute("CREATE OR REPLACE TABLE outbound (sku VARCHAR, loc VARCHAR, outbound BIGINT)")
    rounds = 0
    while True:
        rounds += 1
        con.execute("""
          CREATE OR REPLACE TABLE lines AS
          WITH pos AS (
            SELECT k.*, k.on_hand + k.on_order - k.reserved - coalesce(o.outbound, 0) AS position
            FROM k LEFT JOIN outbound o USING (sku, loc) WHERE k.src IS NOT NULL)
          SELECT sku, loc AS dest, src AS source, pack_size,
                 (greatest(order_up_to - position, moq) + pack_size - 1) // pack_size * pack_size
                   AS requested
          FROM pos WHERE position <= reorder_point AND order_up_to - position > 0""")
        con.execute("""
          CREATE OR REPLACE TABLE outbound_next AS
          SELECT sku, source AS loc, sum(requested) AS outbound FROM lines
          WHERE NOT starts_with(source, 'vendor:') GROUP BY ALL""")
        changed = con.execute("""
          SELECT count(*) FROM ((SELECT * FROM outbound EXCEPT SELECT * FROM outbound_next)
                                UNION ALL (SELECT * FROM outbound_next EXCEPT SELECT * FROM outbound))
        """).fetchone()[0]
        con.execute("CREATE OR REPLACE TABLE outbound AS SELECT * FROM outbound_next")
        if changed == 0 or rounds >= FIXPOINT_ROUNDS:
            break
    # ATP rows: keys with state, a policy, or outbound demand (which may name a bare location).
    con.execute("""
      CREATE OR REPLACE TABLE rows AS
      WITH all_keys AS (
        SELECT * FROM k
        UNION ALL BY NAME
        SELECT o.sku, o.loc, 0 AS on_hand, 0 AS reserved, 0 AS on_order, false AS has_policy,
               0 AS safety_stock
        FROM outbound o ANTI JOIN k USING (sku, loc))
      SELECT a.*, coalesce(o.outbound, 0) AS outbound,
             a.on_hand - a.reserved AS available,
             greatest(0, a.on_hand - a.reserved - a.safety_stock) AS atp,
             a.on_hand + a.on_order - a.reserved - coalesce(o.outbound, 0) AS position
      FROM all_keys a LEFT JOIN outbound o USING (sku, loc)
      WHERE a.on_hand <> 0 OR a.reserved <> 0 OR a.on_order <> 0 OR coalesce(o.outbound, 0) <> 0
            OR a.has_policy""")
    # Allocation of internal sources that are short (R > A): floor shares, then the leftover
    # one pack at a time, largest remainder first, in rounds (SPEC §3).
    con.execute("""
      CREATE OR REPLACE TABLE short AS
      WITH g AS (
        SELECT l.*, coalesce(r.atp, 0)::HUGEINT AS a, sum(l.requested) OVER (PARTITION BY l.sku, l.source)::HUGEINT AS rr
        FROM lines l LEFT JOIN rows r ON r.sku = l.sku AND r.loc = l.source
        WHERE NOT starts_with(l.source, 'vendor:'))
      SELECT *, (a * requested) // (rr * pack_size) * pack_size AS q0,
             (a * requested) % (rr * pack_size) AS rem
      FROM g WHERE rr > a""")
    # Exact rank of remainder fractions rem/(R p): compare rem_i * p_j with rem_j * p_i.
    con.execute("""
      CREATE OR REPLACE TABLE short_ranked AS
      SELECT s.sku, s.source, s.dest, s.requested, s.pack_size, s.q0,
             1 + count(t.dest) AS rank, count(*) OVER (PARTITION BY s.sku, s.source) AS n,
             s.a - sum(s.q0) OVER (PARTITION BY s.sku, s.source) AS leftover
      FROM short s LEFT JOIN short t
        ON t.sku = s.sku AND t.source = s.source
       AND (t.rem * s.pack_size > s.rem * t.pack_size
            OR (t.rem * s.pack_size = s.rem * t.pack_size AND t.dest < s.dest))
      GROUP BY s.sku, s.source, s.dest, s.requested, s.pack_size, s.q0, s.a, s.rem""")
    # The rounds walk line by line: step s visits the line of rank s % n + 1; a round that hands
    # out nothing ends the walk. `extra` counts the packs each line got so far.
    con.execute("""
      CREATE OR REPLACE TABLE extras AS
      WITH RECURSIVE walk(sku, source, n, s, leftover, gave, extra) AS (
        SELECT sku, source, any_value(n), 0, any_value(leftover), false,
               list_transform(range(any_value(n)), lambda x: 0::BIGINT)
        FROM short_ranked GROUP BY sku, source HAVING any_value(leftover) > 0
        UNION ALL
        SELECT w.sku, w.source, w.n, w.s + 1,
               w.leftover - CASE WHEN ok THEN l.pack_size ELSE 0 END,
               CASE WHEN l.rank = 1 THEN ok ELSE w.gave OR ok END,
               CASE WHEN ok THEN list_concat(w.extra[1:l.rank - 1], [w.extra[l.rank] + 1],
                                             w.extra[l.rank + 1:]) ELSE w.extra END
        FROM walk w JOIN short_ranked l
          ON l.sku = w.sku AND l.source = w.source AND l.rank = w.s % w.n + 1,
        LATERAL (SELECT l.q0 + (w.extra[l.rank] + 1) * l.pack_size <= l.requested
                        AND l.pack_size <= w.leftover AS ok)
        WHERE w.leftover > 0 AND NOT (w.s > 0 AND w.s % w.n = 0 AND NOT w.gave))
      SELECT sku, source, arg_max(extra, s) AS extra FROM walk GROUP BY sku, source""")
    con.execute("""
      CREATE OR REPLACE TABLE plan AS
      SELECT l.source, l.dest, l.sku, l.requested,
             CASE WHEN s.dest IS NULL THEN l.requested
                  ELSE (s.q0 + coalesce(e.extra[s.rank], 0) * s.pack_size)::BIGINT END AS qty
      FROM lines l
        LEFT JOIN short_ranked s ON s.sku = l.sku AND s.source = l.source AND s.dest = l.dest
        LEFT JOIN extras e ON e.sku = l.sku AND e.source = l.source""")
    return rounds


def write_snapshot(con, out):
    snap = os.path.join(out, "snapshot")
    os.makedirs(snap, exist_ok=True)
    queries = {
        "atp": """SELECT sku, loc, on_hand, reserved, on_order, available, atp, position
                  FROM rows ORDER BY sku, loc""",
        "low_stock": """SELECT sku, loc, CASE WHEN available <= 0 THEN 'OUT' ELSE 'LOW' END AS state,
                               position, reorder_point, available
                        FROM rows WHERE has_policy AND (available <= 0 OR position <= reorder_point)
                        ORDER BY sku, loc""",
        "order_plan": "SELECT source, dest, sku, requested, qty FROM plan ORDER BY dest, sku",
        "network_atp": "SELECT sku, sum(atp)::BIGINT AS atp FROM rows GROUP BY sku ORDER BY sku",
    }
    for name, query in queries.items():
        path = os.path.join(snap, name + ".jsonl")
        con.execute(f"COPY ({query}) TO '{path}' (FORMAT JSON)")


def run_plan(inputs, out=None, tick_ms=1000, lateness_ms=0, until_ms=None, threads=None, quiet=False):
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    con.execute(MACROS)
    t0 = time.perf_counter()
    files = input_files(inputs)
    as_of = load_and_validate(con, files, lateness_ms, until_ms, tick_ms)
    t1 = time.perf_counter()
    if as_of is None:
        con.execute("CREATE OR REPLACE TABLE rows AS SELECT NULL::VARCHAR sku WHERE false")
        rounds = 0
    else:
        derive_state(con, as_of)
        rounds = order_lines(con)
    t2 = time.perf_counter()
    if out and as_of is not None:
        write_snapshot(con, out)
    t3 = time.perf_counter()
    if not quiet:
        lines = con.execute("SELECT count(*) FROM raw").fetchone()[0]
        applied = con.execute("SELECT count(*) FROM ev").fetchone()[0]
        nrows = con.execute("SELECT count(*) FROM rows").fetchone()[0]
        nplan = con.execute("SELECT count(*) FROM plan").fetchone()[0] if as_of is not None else 0
        print(f"duckdb {duckdb.__version__}: {lines} lines, {applied} applied, as_of {as_of}, "
              f"{nrows} ATP rows, {nplan} order lines, {rounds} fixpoint rounds; "
              f"load+validate {t1 - t0:.2f}s, state+plan {t2 - t1:.2f}s, write {t3 - t2:.2f}s",
              file=sys.stderr)
    return con


def parse_time(text):
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        return int(text)
    con = duckdb.connect()
    con.execute(MACROS)
    value = con.execute("SELECT rfc3339_ms(?)", [text]).fetchone()[0]
    if value is None:
        sys.exit(f"duckdb_plan: --until {text!r} is neither milliseconds nor RFC 3339")
    return value


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check(fixtures_dir, out_root):
    """Runs every golden case and compares the snapshot files record by record."""
    total_ok = True
    print("| case | ATP rows matching | order lines matching | low_stock matching | network_atp matching |")
    print("|---|---|---|---|---|")
    for case in sorted(os.listdir(fixtures_dir)):
        case_dir = os.path.join(fixtures_dir, case)
        if not os.path.isdir(os.path.join(case_dir, "input")):
            continue
        opts = {"tick_ms": 1000, "lateness_ms": 0, "until_ms": None}
        opt_path = os.path.join(case_dir, "options.txt")
        if os.path.exists(opt_path):
            words = open(opt_path).read().split()
            for flag, value in zip(words[::2], words[1::2]):
                if flag == "--tick-ms":
                    opts["tick_ms"] = int(value)
                elif flag == "--lateness-ms":
                    opts["lateness_ms"] = int(value)
                elif flag == "--until":
                    opts["until_ms"] = parse_time(value)
        out = os.path.join(out_root, case)
        run_plan([os.path.join(case_dir, "input")], out=out, quiet=True, **opts)
        cells = []
        for name, key in [("atp", ("sku", "loc")), ("order_plan", ("dest", "sku")),
                          ("low_stock", ("sku", "loc")), ("network_atp", ("sku",))]:
            want = {tuple(r[x] for x in key): r for r in
                    read_jsonl(os.path.join(case_dir, "expected", "snapshot", name + ".jsonl"))}
            got = {tuple(r[x] for x in key): r for r in
                   read_jsonl(os.path.join(out, "snapshot", name + ".jsonl"))}
            same = sum(1 for k, r in want.items() if got.get(k) == r)
            extra = len(set(got) - set(want))
            cells.append(f"{same}/{len(want)}" + (f" (+{extra} extra)" if extra else ""))
            if same != len(want) or extra:
                total_ok = False
                for k in sorted(set(want) | set(got), key=str)[:200]:
                    if want.get(k) != got.get(k):
                        print(f"  {case}/{name} {k}: expected {want.get(k)} got {got.get(k)}",
                              file=sys.stderr)
        print(f"| {case} | " + " | ".join(cells) + " |")
    return total_ok


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="recompute the final snapshot of INPUT files")
    run.add_argument("inputs", nargs="+")
    run.add_argument("--out")
    run.add_argument("--tick-ms", type=int, default=1000)
    run.add_argument("--lateness-ms", type=int, default=0)
    run.add_argument("--until")
    run.add_argument("--threads", type=int, help="DuckDB threads (default: all cores)")
    chk = sub.add_parser("check", help="compare with the golden fixtures' expected snapshots")
    chk.add_argument("fixtures", nargs="?",
                     default=os.path.join(os.path.dirname(__file__), "..", "..", "fixtures"))
    chk.add_argument("--out", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "duckdb-plan-check"))
    args = parser.parse_args()
    if args.cmd == "run":
        run_plan(args.inputs, out=args.out, tick_ms=args.tick_ms, lateness_ms=args.lateness_ms,
                 until_ms=parse_time(args.until), threads=args.threads)
    else:
        sys.exit(0 if check(args.fixtures, args.out) else 1)


if __name__ == "__main__":
    main()
