#!/usr/bin/env bash
# bench-peers.sh — stockflow against its peers on the same files: DuckDB recomputing the final
# state and order plan in SQL (the batch-recompute alternative) and Apache Flink maintaining the
# per-key aggregate as a streaming job (local mini-cluster). Prints markdown tables.
#
# Workload: `stockflow gen` with 4 partitions, seed 1, kept under $BENCH_DIR in the same layout as
# scripts/bench.sh (so both scripts share generated files). Sizes by environment:
#   PEERS_EVENTS (1000000)  PEERS_SKUS (1000)  PEERS_STORES (98)   — 2 DCs; keys = skus x 100
#   10M events over 1M keys: PEERS_EVENTS=10000000 PEERS_SKUS=10000 scripts/bench-peers.sh
#   PEERS_REPEATS (1)       every job runs this many times; the table shows each run
#   PEERS_WORKERS ("1 2")   stockflow workers = DuckDB threads = Flink parallelism, per job
#   PEERS_FLINK (1)         0 skips Flink (its JVM needs ~1.5 GB and the longest time)
#   PEERS_VERIFY (1)        compare DuckDB's snapshot with stockflow's, Flink's totals with DuckDB's
# Python tools go into a venv under .tools/ (pip from PyPI: duckdb, apache-flink); Flink needs a
# Java 11/17 runtime on PATH. Not part of .ci/run: it downloads ~600 MB and takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
events=${PEERS_EVENTS:-1000000}
skus=${PEERS_SKUS:-1000}
stores=${PEERS_STORES:-98}
repeats=${PEERS_REPEATS:-1}
with_flink=${PEERS_FLINK:-1}
verify=${PEERS_VERIFY:-1}
workers=${PEERS_WORKERS:-1 2}
dcs=2
keys=$((skus * (stores + dcs)))
root=${BENCH_DIR:-/tmp/stockflow-bench}
dir="$root/e$events-k$keys"
venv=.tools/peers-venv
py="$venv/bin/python"
work="$dir/peers"

if [ ! -x "$py" ] || ! "$py" -c 'import duckdb, pyflink' 2>/dev/null; then
  echo "installing duckdb and apache-flink into $venv (PyPI)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet duckdb apache-flink >&2
fi
cargo build --release --bin stockflow --bin ceiling >&2
bin=target/release
if [ ! -f "$dir/input/.complete" ]; then
  rm -rf "$dir/input"
  "$bin/stockflow" gen --out "$dir/input" --events "$events" --skus "$skus" --stores "$stores" \
    --dcs "$dcs" --partitions 4 --seed 1 --quiet
  touch "$dir/input/.complete"
fi
mkdir -p "$work"
lines=$(cat "$dir"/input/*.jsonl | grep -c '[^[:space:]]')
mb=$(du -sm "$dir/input" | cut -f1)
cores=$(nproc)

echo "machine: $cores cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -r); commit $(git rev-parse --short HEAD)"
echo "workload: $lines lines ($events events + setup), $keys keys, $mb MB, 4 partitions, $dir/input"
echo "versions: duckdb $("$py" -c 'import duckdb; print(duckdb.__version__)'), apache-flink $("$venv/bin/pip" show apache-flink | awk '/^Version/ {print $2}'), $(java -version 2>&1 | head -1)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

rows=()
# measure NAME CORES COMMAND... — runs COMMAND under measure.py (process tree: wall, CPU, peak
# RSS) inside /usr/bin/time -v (RSS of the command's own process); appends a table row.
measure() {
  local name=$1 used_cores=$2
  shift 2
  local res="$work/measure.json" tv="$work/time-v.txt"
  /usr/bin/time -v -o "$tv" "$py" scripts/peers/measure.py "$res" -- "$@" >"$work/stdout.txt"
  local own_rss
  "$py" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], r["wall_s"], r["cpu_s"], sep="\t")' \
    "$res" "$name" "$used_cores" >>"$work/results.tsv"
  own_rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tv")
  rows+=("$("$py" - "$res" "$name" "$used_cores" "$lines" "$own_rss" "$(cut -d' ' -f1 /proc/loadavg)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); name, used, n, own, load = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
print(f"| {name} | {used} | {r['wall_s']:.2f} | {n / r['wall_s']:,.0f} | {n / r['wall_s'] / used:,.0f} | "
      f"{r['cpu_s']:.2f} | {n / max(r['cpu_s'], 1e-9):,.0f} | {r['peak_rss_bytes'] / 2**20:,.0f} | {own / 1024:,.0f} | {load} |")
EOF
)")
}

flink_job=()
: >"$work/results.tsv"
for run in $(seq "$repeats"); do
  for w in $workers; do
    measure "stockflow replay (full job, all outputs)" "$w" \
      "$bin/stockflow" replay "$dir/input" --out "$work/stockflow-w$w" -w "$w" -q
    measure "ceiling (decode, exchange, count per key)" "$w" "$bin/ceiling" "$dir/input" -w "$w"
    measure "DuckDB final snapshot + order plan (SQL)" "$w" \
      "$py" scripts/peers/duckdb_plan.py run "$dir/input" --out "$work/duckdb-t$w" --threads "$w"
    if [ "$with_flink" = 1 ]; then
      measure "Flink streaming GROUP BY (sku, loc)" "$w" \
        "$py" scripts/peers/flink_aggregate.py "$dir/input" --parallelism "$w"
      flink_job+=("$(cat "$work/stdout.txt")")
      measure "Flink streaming GROUP BY, mini-batch" "$w" \
        "$py" scripts/peers/flink_aggregate.py "$dir/input" --parallelism "$w" --mini-batch
      flink_job+=("$(cat "$work/stdout.txt")")
    fi
  done
done

echo "### All jobs (wall time of the whole process, start-up included)"
echo
echo "cores = workers / DuckDB threads / Flink parallelism; per core = lines/s ÷ cores; per CPU-s = lines ÷ (user+sys CPU seconds of the process tree)."
echo
echo "| job | cores | seconds | lines/s | lines/s per core | CPU s | lines per CPU-s | peak RSS MB (tree) | peak RSS MB (time -v) | load |"
echo "|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
if [ "${#flink_job[@]}" -gt 0 ]; then
  echo
  echo "### Flink job time alone (submit to finish; JVM and Python start-up excluded)"
  echo
  echo "| parallelism | mini-batch | job seconds | lines/s | lines/s per task |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${flink_job[@]}" | "$py" -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(f"| {r['"'"'parallelism'"'"']} | {r['"'"'mini_batch'"'"']} | {r['"'"'job_seconds'"'"']:.2f} | "
          f"{r['"'"'lines_per_s'"'"']:,} | {r['"'"'lines_per_s_per_task'"'"']:,} |")'
fi
echo
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "### Against the targets (best run of each job)"
echo
printf '%s\n' "${flink_job[@]}" >"$work/flink-jobs.jsonl"
"$py" - "$work/results.tsv" "$work/flink-jobs.jsonl" "$lines" <<'EOF'
import json, sys
best = {}
for line in open(sys.argv[1]):
    name, cores, wall, cpu = line.rstrip("\n").split("\t")
    key = (name.split(" (")[0].split(" final")[0].split(" streaming")[0], int(cores), "mini" in name)
    best[key] = min(best.get(key, float("inf")), float(wall))
lines = int(sys.argv[3])
def fastest(prefix):
    runs = [(w, c) for (n, c, _), w in best.items() if n == prefix]
    return min(runs) if runs else None
sf, duck, flink = fastest("stockflow replay"), fastest("DuckDB"), fastest("Flink")
print(f"- batch window, final snapshot: stockflow {sf[0]:.2f} s ({sf[1]} workers), "
      f"DuckDB {duck[0]:.2f} s ({duck[1]} threads)"
      + (f", Flink (aggregate only) {flink[0]:.2f} s (parallelism {flink[1]})" if flink else "")
      + f" — stockflow faster than {'both peers' if flink else 'DuckDB'}: "
      + ("yes" if sf[0] < duck[0] and (not flink or sf[0] < flink[0]) else "NO"))
jobs = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
if jobs:
    flink_task = max(j["lines_per_s_per_task"] for j in jobs)
    def per_core(prefix):
        return max(lines / w / c for (n, c, _), w in best.items() if n == prefix)
    sf1, ceil1 = per_core("stockflow replay"), per_core("ceiling")
    print(f"- streaming aggregate per core: Flink's best {flink_task:,} lines/s per task (job time only, "
          f"start-up excluded); stockflow replay's best {sf1:,.0f} lines/s per worker = {sf1 / flink_task:.2f}x "
          f"(target 5x: {'met' if sf1 >= 5 * flink_task else 'NOT met'}); the ceiling job (decode, "
          f"exchange, count per key) {ceil1:,.0f} lines/s = {ceil1 / flink_task:.2f}x")
EOF

if [ "$verify" = 1 ] && [ -d "$work/stockflow-w1" ] && [ -d "$work/duckdb-t1" ]; then
  echo
  echo "### Same answers?"
  echo
  for f in atp low_stock order_plan network_atp; do
    if cmp -s "$work/stockflow-w1/snapshot/$f.jsonl" "$work/duckdb-t1/snapshot/$f.jsonl"; then
      echo "- snapshot/$f.jsonl: DuckDB and stockflow byte-identical ($(wc -l <"$work/duckdb-t1/snapshot/$f.jsonl") rows)"
    else
      echo "- snapshot/$f.jsonl: DuckDB and stockflow DIFFER in $(diff "$work/stockflow-w1/snapshot/$f.jsonl" "$work/duckdb-t1/snapshot/$f.jsonl" | grep -c '^[<>]') lines"
    fi
  done
  if [ "$with_flink" = 1 ]; then
    flink_totals=$("$py" scripts/peers/flink_aggregate.py "$dir/input" --collect 2>/dev/null | tail -1)
    duck_totals=$("$py" - "$dir/input" <<'EOF'
import json, sys, duckdb
con = duckdb.connect()
path = sys.argv[1] + "/*.jsonl"
r = con.execute(f"""
  SELECT count(DISTINCT (sku, loc)), count(*),
         sum(CASE type WHEN 'sale' THEN -qty WHEN 'fulfill' THEN -qty WHEN 'return' THEN qty
                       WHEN 'receipt' THEN qty WHEN 'adjust' THEN delta ELSE 0 END),
         sum(CASE WHEN type = 'reserve' THEN qty ELSE 0 END)
  FROM read_json('{path}', format = 'newline_delimited',
                 columns = {{type: 'VARCHAR', sku: 'VARCHAR', loc: 'VARCHAR', qty: 'BIGINT', delta: 'BIGINT'}})
  WHERE sku IS NOT NULL AND loc IS NOT NULL""").fetchone()
print(json.dumps({"keys": r[0], "messages": r[1], "on_hand_moved": int(r[2]), "reserved": int(r[3])}))
EOF
)
    echo "- Flink per-key aggregate totals: $flink_totals"
    echo "- the same aggregate in DuckDB:   $duck_totals"
  fi
fi
