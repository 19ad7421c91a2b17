//! Exactly-once Kafka output against librdkafka's in-process mock cluster, which implements
//! InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn: every
//! worker produces the keys it owns in transactions of its own, each with its progress record;
//! a transactional `batch` writes the golden streams (each key's records in order); a restart
//! in the same group that re-reads everything writes nothing again; a run cut short and
//! restarted on fewer or more workers writes every record once; a kill between one worker's
//! commit and another's loses and repeats nothing; an instance fenced by a second one stops and
//! commits nothing more, offsets included, also when its new ticks write no record; a broker
//! whose EndTxn fails gets at-least-once output and one log line.
//!
//! The mock cluster keeps records of aborted transactions visible (it writes no transaction
//! markers), so these tests prove the protocol flow and the skipping, not read_committed
//! filtering: after a kill, the dead run's records beyond its workers' committed progress are
//! taken as aborted. scripts/e2e-kafka.sh covers a real broker (tansu, without transactions).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;

const CASE: &str = "medium";
const STREAMS: [&str; 4] = ["atp", "low_stock", "order_plan", "network_atp"];

fn stockflow(args: &[&str]) -> common::RunOutput {
    let out = common::run_with_timeout(args, Duration::from_secs(120));
    if !out.success() {
        eprintln!("{}", out.describe());
    }
    out
}

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster")
}

/// The input topic: the case's fixture files, file i on partition i. The mock cluster has no
/// CreateTopics: the output topics (`out.*`, and `out.progress` unless `progress` is false)
/// are made here with one partition, as stockflow creates them by default.
fn produce_case(cluster: &MockCluster<'static, DefaultProducerContext>, topic: &str, progress: bool) {
    produce_dir(cluster, &common::fixtures_dir().join(CASE).join("input"), topic, progress);
}

fn produce_dir(cluster: &MockCluster<'static, DefaultProducerContext>, input: &Path, topic: &str, progress: bool) {
    let outputs = ["atp", "low_stock", "order_plan", "network_atp", "dead_letter", "progress"];
    for name in outputs.iter().filter(|n| progress || **n != "progress") {
        cluster.create_topic(&format!("out.{name}"), 1, 1).unwrap();
    }
    let files = std::fs::read_dir(input).unwrap().count() as i32;
    cluster.create_topic(topic, files, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    assert!(stockflow(&["produce", input.to_str().unwrap(), "--topic", topic, "--brokers", &brokers]).success());
}

/// `stockflow batch` over the case's input topic, with the case's options and `extra`.
fn batch(brokers: &str, topic: &str, group: &str, until: &str, extra: &[&str]) -> common::RunOutput {
    let options = common::case_options(CASE);
    let mut args = vec!["batch", "--brokers", brokers, "--topics", topic, "--group", group, "--prefix", "out"];
    args.extend(["--until", until, "--quiet"]);
    args.extend(options.iter().map(String::as_str));
    args.extend(extra);
    stockflow(&args)
}

/// Every record of partition 0 of `topic`, in offset order, as a read_committed consumer sees
/// them: (key, value).
fn read_committed(brokers: &str, topic: &str) -> Vec<(String, Option<String>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning).unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "{topic}: did not read to the end");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => out.push((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            )),
            Some(Err(KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("{topic}: {e}"),
            None => {}
        }
    }
}

/// The key an output record of `stream` has on its topic.
fn key_of(stream: &str, v: &Value) -> String {
    let s = |f: &str| v[f].as_str().unwrap().to_string();
    match stream {
        "order_plan" => format!("{}@{}", s("dest"), s("sku")),
        "network_atp" => s("sku"),
        _ => format!("{}@{}", s("sku"), s("loc")),
    }
}

/// The case's expected change stream as the records its topic must hold, in order: (key,
/// value), a deletion as a tombstone.
fn expected_records(stream: &str) -> Vec<(String, Option<Value>)> {
    let path = common::fixtures_dir().join(CASE).join("expected").join(format!("{stream}.jsonl"));
    common::read_jsonl(&path)
        .into_iter()
        .map(|v| {
            let deleted = v["deleted"] == Value::Bool(true);
            (key_of(stream, &v), (!deleted).then_some(v))
        })
        .collect()
}

fn parsed(records: Vec<(String, Option<String>)>) -> Vec<(String, Option<Value>)> {
    records.into_iter().map(|(k, v)| (k, v.map(|v| serde_json::from_str(&v).unwrap()))).collect()
}

/// The case's expected dead letters as the dead-letter topic must hold them, in position order
/// (a batch run's): file i is partition i of `topic`, line n (1-based; the fixtures have no
/// blank lines) offset n - 1.
fn expected_dead_letters(topic: &str) -> Vec<(String, Option<Value>)> {
    let mut files: Vec<String> = std::fs::read_dir(common::fixtures_dir().join(CASE).join("input"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let path = common::fixtures_dir().join(CASE).join("expected/dead_letter.jsonl");
    let mut records: Vec<(String, Option<Value>)> = common::read_jsonl(&path)
        .into_iter()
        .map(|mut v| {
            let partition = files.iter().position(|f| v["source"] == f.as_str()).unwrap();
            let offset = v["offset"].as_i64().unwrap() - 1;
            v["source"] = Value::from(topic);
            v["partition"] = Value::from(partition);
            v["offset"] = Value::from(offset);
            (format!("{topic}@{partition}@{offset}"), Some(v))
        })
        .collect();
    let position = |v: &Option<Value>| {
        let v = v.as_ref().unwrap();
        (v["partition"].as_i64().unwrap(), v["offset"].as_i64().unwrap())
    };
    records.sort_by_key(|r| position(&r.1));
    records
}

/// The output topics hold the case's expected streams and dead letters, each record once, each
/// key's records in order (workers produce their keys in transactions of their own, so the
/// order across keys is not the files').
fn assert_topics_hold_the_case(brokers: &str, input_topic: &str) {
    let want_dead = expected_dead_letters(input_topic);
    let expected =
        STREAMS.iter().map(|s| (s.to_string(), expected_records(s))).chain([("dead_letter".into(), want_dead)]);
    for (stream, want) in expected {
        let got = parsed(read_committed(brokers, &format!("out.{stream}")));
        assert_eq!(got.len(), want.len(), "out.{stream}: {} records, expected {}", got.len(), want.len());
        assert_eq!(per_key(&got), per_key(&want), "out.{stream}: a key's records differ");
    }
}

/// Like [`assert_topics_hold_the_case`]; with `aborted`, a topic may first hold the records of
/// an aborted transaction (the mock cluster cannot hide them from read_committed readers as a
/// broker does): the first records of the stream, then the whole stream.
fn assert_topics_hold_the_case_after_aborted(brokers: &str, input_topic: &str, aborted: bool) {
    let want_dead = expected_dead_letters(input_topic);
    let expected =
        STREAMS.iter().map(|s| (s.to_string(), expected_records(s))).chain([("dead_letter".into(), want_dead)]);
    for (stream, want) in expected {
        let got = parsed(read_committed(brokers, &format!("out.{stream}")));
        let extra = got.len().saturating_sub(want.len());
        assert!(aborted || extra == 0, "out.{stream}: {} records, expected {}", got.len(), want.len());
        assert_eq!(got.len(), want.len() + extra, "out.{stream}: {} records, expected {}", got.len(), want.len());
        assert_eq!(got[..extra], want[..extra], "out.{stream}: the aborted records are not the stream's first");
        for (i, (g, w)) in got[extra..].iter().zip(&want).enumerate() {
            assert_eq!(g, w, "out.{stream} record {i} after {extra} aborted ones");
        }
    }
}

/// Every tick the case's expected streams hold a record at, ascending.
fn expected_ticks() -> Vec<u64> {
    let mut ticks: Vec<u64> = STREAMS
        .iter()
        .flat_map(|s| {
            common::read_jsonl(&common::fixtures_dir().join(CASE).join("expected").join(format!("{s}.jsonl")))
        })
        .map(|v| v["ts"].as_u64().unwrap())
        .collect();
    ticks.sort();
    ticks.dedup();
    ticks
}

fn as_of() -> String {
    let summary = common::read_json(&common::fixtures_dir().join(CASE).join("expected/summary.json"));
    summary["as_of"].as_u64().unwrap().to_string()
}

fn high_watermarks(brokers: &str, topics: &[String]) -> Vec<i64> {
    topics.iter().map(|t| high_watermarks_of(brokers, t, 0)).collect()
}

fn high_watermarks_of(brokers: &str, topic: &str, partition: i32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    consumer.fetch_watermarks(topic, partition, Duration::from_secs(10)).unwrap().1
}

/// Sets `group`'s committed offsets of every partition of `topic` back to 0, as if the job had
/// died after its transactions but before any offset commit reached the broker.
fn rewind(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
    }
    consumer.commit(&tpl, CommitMode::Sync).unwrap();
}

/// The latest progress record of each worker (read_committed), parsed, by key.
fn progress(brokers: &str) -> BTreeMap<String, Value> {
    let mut latest = BTreeMap::new();
    for (key, value) in read_committed(brokers, "out.progress") {
        assert!(key.starts_with("progress/"), "{key}");
        latest.insert(key, serde_json::from_str(&value.unwrap()).unwrap());
    }
    latest
}

/// The newest generation's records, in worker order.
fn newest(progress: &BTreeMap<String, Value>) -> Vec<Value> {
    let generation = progress.values().map(|p| p["generation"].as_u64().unwrap()).max().unwrap();
    progress.values().filter(|p| p["generation"].as_u64() == Some(generation)).cloned().collect()
}

/// The last tick any worker of the newest generation wrote.
fn last_tick(brokers: &str) -> Option<u64> {
    newest(&progress(brokers)).iter().filter_map(|p| p["tick"].as_u64()).max()
}

/// What a restart said it skipped, summed over its workers: records (from `worker W: skipped
/// R records of N ticks (through tick T)`, at most once per worker) and dead letters (`skipped
/// D dead letters`, worker 0, at most once).
fn skipped(stderr: &str) -> (usize, usize) {
    let records: Vec<usize> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("stockflow: worker "))
        .filter_map(|l| l.split_once(": skipped ").map(|(_, rest)| rest.split_whitespace().next().unwrap().parse().unwrap()))
        .collect();
    let dead: Vec<usize> = stderr
        .lines()
        .filter(|l| l.starts_with("stockflow: skipped ") && l.contains(" dead letters "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse().unwrap())
        .collect();
    assert!(dead.len() <= 1, "{stderr}");
    (records.iter().sum(), dead.first().copied().unwrap_or(0))
}

/// How many records the case's streams hold.
fn expected_record_count() -> usize {
    STREAMS.iter().map(|s| expected_records(s).len()).sum()
}

/// The records of `got` grouped by key, each key's in topic order.
fn per_key(records: &[(String, Option<Value>)]) -> BTreeMap<&str, Vec<&Option<Value>>> {
    let mut by_key: BTreeMap<&str, Vec<&Option<Value>>> = BTreeMap::new();
    for (key, value) in records {
        by_key.entry(key).or_default().push(value);
    }
    by_key
}

#[test]
fn a_transactional_batch_writes_the_case_and_a_restart_writes_nothing_again() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", true);
    let out = batch(&brokers, "in", "g", &as_of(), &["-w", "1"]);
    assert!(out.success());
    let stderr = out.stderr_str();
    assert!(!stderr.contains("does not support transactions"), "{stderr}");
    assert_eq!(skipped(&stderr), (0, 0), "nothing to skip on a first run");
    assert_topics_hold_the_case(&brokers, "in");

    // The one worker's progress record: the last tick, the dead-letter marks, and every
    // partition's end.
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let ends: Vec<i64> =
        (0..3).map(|p| consumer.fetch_watermarks("in", p, Duration::from_secs(10)).unwrap().1).collect();
    let all = progress(&brokers);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["progress/0"], "{all:?}");
    let p = all["progress/0"].clone();
    let ticks = expected_ticks();
    assert_eq!((p["generation"].as_u64(), p["workers"].as_u64()), (Some(1), Some(1)), "{p}");
    assert_eq!(p["tick"].as_u64(), ticks.last().copied(), "{p}");
    let offsets: BTreeMap<String, i64> = (0..3).map(|i| (format!("in/{i}"), ends[i])).collect();
    let got: BTreeMap<String, i64> =
        p["offsets"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect();
    assert_eq!(got, offsets, "{p}");
    let mut marks: BTreeMap<String, i64> = BTreeMap::new();
    for (_, v) in expected_dead_letters("in") {
        let v = v.unwrap();
        let mark = marks.entry(format!("in/{}", v["partition"])).or_insert(-1);
        *mark = (*mark).max(v["offset"].as_i64().unwrap());
    }
    let got: BTreeMap<String, i64> =
        p["dead_letters"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap())).collect();
    assert_eq!(got, marks, "{p}");

    // Same group, same prefix, every message read again (offsets rewound), on 2 workers: every
    // record and dead letter is already out, so not one record is produced.
    let topics: Vec<String> =
        ["atp", "low_stock", "order_plan", "network_atp", "dead_letter", "progress"].map(|t| format!("out.{t}")).into();
    let before = high_watermarks(&brokers, &topics);
    rewind(&brokers, "g", "in", 3);
    let again = batch(&brokers, "in", "g", &as_of(), &["-w", "2"]);
    assert!(again.success());
    let stderr = again.stderr_str();
    let dead = expected_dead_letters("in").len();
    assert_eq!(skipped(&stderr), (expected_record_count(), dead), "{stderr}");
    // The output topics hold not one record more; the progress topic only the new generation's
    // records: each worker's start-up transaction, which says it has written nothing and what it
    // started from, then the transactions that commit its read positions as they move (with no
    // records: every one was skipped), the last through the last tick.
    let after = high_watermarks(&brokers, &topics);
    assert_eq!(after[..5], before[..5], "a restart produced records again");
    let log = progress_log(&brokers);
    let new = &log[before[5] as usize..];
    assert!(new.len() >= 2 && new.iter().all(|r| r["generation"] == 2), "{new:?}");
    assert!(new[..2].iter().all(|r| r["tick"] == Value::Null), "{new:?}");
    let again = newest(&progress(&brokers));
    assert_eq!(again.len(), 2);
    for (worker, r) in again.iter().enumerate() {
        assert_eq!((r["generation"].as_u64(), r["workers"].as_u64(), r["worker"].as_u64()), (Some(2), Some(2), Some(worker as u64)));
        assert_eq!(r["before"], serde_json::json!([{ "workers": 1, "ticks": [ticks.last()] }]), "{r}");
        assert_eq!(r["tick"].as_u64(), ticks.last().copied(), "{r}");
        assert_eq!(r["dead_letters"], p["dead_letters"], "{r}");
    }
    assert_topics_hold_the_case(&brokers, "in");
}

/// Deletions (tombstones) at or before `cut`: their expected record carries no value, so
/// [`expected_records`] cannot tell their tick; the expected files do.
fn expected_deletions_through(cut: u64) -> usize {
    STREAMS
        .iter()
        .flat_map(|s| common::read_jsonl(&common::fixtures_dir().join(CASE).join("expected").join(format!("{s}.jsonl"))))
        .filter(|v| v["deleted"] == Value::Bool(true) && v["ts"].as_u64().unwrap() <= cut)
        .count()
}

#[test]
fn a_run_cut_short_and_restarted_on_fewer_and_more_workers_writes_every_record_once() {
    let ticks = expected_ticks();
    // Cut halfway: the first run writes the ticks through the cut, the restart the rest.
    let cut = ticks[ticks.len() / 2];
    for (first_workers, rest_workers, group) in [("2", "1", "fewer"), ("1", "3", "more")] {
        let cluster = mock();
        let brokers = cluster.bootstrap_servers();
        produce_case(&cluster, "in", true);
        let first = batch(&brokers, "in", group, &cut.to_string(), &["-w", first_workers]);
        assert!(first.success());
        assert_eq!(last_tick(&brokers), Some(cut), "{group}");
        rewind(&brokers, group, "in", 3);
        let rest = batch(&brokers, "in", group, &as_of(), &["-w", rest_workers]);
        assert!(rest.success());
        let stderr = rest.stderr_str();
        let written: usize = STREAMS
            .iter()
            .flat_map(|s| expected_records(s))
            .filter(|(_, v)| v.as_ref().is_some_and(|v| v["ts"].as_u64().unwrap() <= cut))
            .count();
        let deleted_through_cut = expected_deletions_through(cut);
        assert_eq!(skipped(&stderr).0, written + deleted_through_cut, "{group}: {stderr}");
        assert_topics_hold_the_case(&brokers, "in");
        assert_eq!(last_tick(&brokers), ticks.last().copied(), "{group}");
    }
}

/// The tick a progress level says the key with shard `hash` is written through.
fn mark(level_workers: u64, ticks: &Value, hash: u64) -> Option<u64> {
    ticks[(hash % level_workers) as usize].as_u64()
}

/// The last tick written of `key` (as its topic keys it) of `stream`, as the newest generation's
/// progress records and the levels they carry say: each key is owned by worker
/// `shard(key) % workers` of each generation.
fn written_through(progress: &BTreeMap<String, Value>, stream: &str, key: &str) -> Option<u64> {
    use dataflows::model::Name;
    let hash = match stream {
        "network_atp" => dataflows::shard(&Name::from(key)),
        _ => {
            let (a, b) = key.split_once('@').unwrap();
            dataflows::shard(&(Name::from(a), Name::from(b)))
        }
    };
    let records = newest(progress);
    let workers = records[0]["workers"].as_u64().unwrap();
    let mut ticks = vec![Value::Null; workers as usize];
    for r in &records {
        ticks[r["worker"].as_u64().unwrap() as usize] = r["tick"].clone();
    }
    let own = mark(workers, &Value::from(ticks), hash);
    let before = records[0]["before"].as_array().unwrap().iter().filter_map(|l| mark(l["workers"].as_u64().unwrap(), &l["ticks"], hash));
    own.into_iter().chain(before).max()
}

/// `batch` as [`batch`] does, with the crash point set: worker `worker` ends the process right
/// after its `commit`-th transaction.
fn batch_killed_after(brokers: &str, until: &str, (worker, commit): (usize, usize), workers: &str) -> common::RunOutput {
    let options = common::case_options(CASE);
    let mut args = vec!["batch", "--brokers", brokers, "--topics", "in", "--group", "g", "--prefix", "out"];
    args.extend(["--until", until, "--quiet", "-w", workers]);
    args.extend(options.iter().map(String::as_str));
    let point = format!("{worker}:{commit}");
    let running = common::spawn_with(&common::repo_root(), &args, &[("STOCKFLOW_CRASH_AFTER_COMMIT", &point)]);
    common::wait_all(vec![running], Duration::from_secs(120), Duration::ZERO).pop().unwrap()
}

/// The case's expected change stream of `stream` per key, in order, each record with its tick:
/// what a replay of the input writes for the key.
fn expected_per_key(stream: &str) -> BTreeMap<String, Vec<(u64, Option<Value>)>> {
    let path = common::fixtures_dir().join(CASE).join("expected").join(format!("{stream}.jsonl"));
    let mut by_key: BTreeMap<String, Vec<(u64, Option<Value>)>> = BTreeMap::new();
    for v in common::read_jsonl(&path) {
        let tick = v["ts"].as_u64().unwrap();
        let deleted = v["deleted"] == Value::Bool(true);
        by_key.entry(key_of(stream, &v)).or_default().push((tick, (!deleted).then_some(v)));
    }
    by_key
}

/// A run killed between one worker's commit and the others' next ones, then restarted on
/// another worker count: for every key of every stream, the records of committed transactions
/// (the killed run's that its progress records cover, then the restart's) are the key's
/// records of a replay, nothing lost, nothing repeated; and the dead letters likewise.
///
/// The kill is exact (`STOCKFLOW_CRASH_AFTER_COMMIT=W:N`, see `src/io/sink/kafka/crash.rs`):
/// worker W commits its N-th transaction, then no worker commits again; each produces the rest
/// of its records into its open transaction, and the process aborts once all are acknowledged.
/// So the state at the kill is every worker between two commits, with nothing in flight, and
/// every progress record on the topic is one of a committed transaction (a worker produces its
/// progress record only when it commits). librdkafka's mock cluster writes no transaction
/// markers and shows records of open and aborted transactions to read_committed readers
/// (`rdkafka_mock_handlers.c`: Fetch answers LastStableOffset = the end and no aborted
/// transactions; EndTxn only checks the producer id). So the killed run's records beyond its
/// committed progress are here read as a broker would hide them: the held transactions, which
/// the restart's fencing aborts. Each key's killed-run records must still be a prefix of its
/// replay (the held transactions carry the right records), and the restart must write exactly
/// the rest.
#[test]
fn a_kill_between_one_workers_commit_and_anothers_loses_and_repeats_nothing() {
    // (kill point, workers of the killed run, workers of the restart)
    for (point, workers, rest_workers) in [((1, 20), "2", "3"), ((0, 30), "3", "2")] {
        let cluster = mock();
        let brokers = cluster.bootstrap_servers();
        produce_case(&cluster, "in", true);
        let killed = batch_killed_after(&brokers, &as_of(), point, workers);
        assert!(!killed.success(), "{}", killed.describe());
        assert!(killed.stderr_str().contains("ends the process after commit"), "{}", killed.describe());
        let committed = progress(&brokers);
        let killed_worker = format!("progress/{}", point.0);
        let last = expected_ticks().last().copied();
        let unfinished = committed[&killed_worker]["tick"].as_u64() < last;
        assert!(unfinished, "{point:?}: worker {} committed everything before the kill: {committed:?}", point.0);
        let outputs: Vec<String> = STREAMS.iter().chain(&["dead_letter"]).map(|t| format!("out.{t}")).collect();
        let at_kill = high_watermarks(&brokers, &outputs);
        rewind(&brokers, "g", "in", 3);
        let rest = batch(&brokers, "in", "g", &as_of(), &["-w", rest_workers]);
        assert!(rest.success(), "{}", rest.describe());
        let mut committed_records = 0;
        for (i, stream) in STREAMS.iter().enumerate() {
            let all = parsed(read_committed(&brokers, &format!("out.{stream}")));
            let (killed_records, restart_records) = all.split_at(at_kill[i] as usize);
            let (killed_records, restart_records) = (per_key(killed_records), per_key(restart_records));
            for (key, want) in expected_per_key(stream) {
                let replay: Vec<&Option<Value>> = want.iter().map(|(_, v)| v).collect();
                let through = written_through(&committed, stream, &key);
                let kept = want.iter().take_while(|(tick, _)| through.is_some_and(|t| *tick <= t)).count();
                committed_records += kept;
                let killed = killed_records.get(key.as_str()).cloned().unwrap_or_default();
                assert!(killed.len() >= kept, "{point:?} out.{stream} {key}: committed {kept} records, wrote {}", killed.len());
                assert_eq!(killed, replay[..killed.len()], "{point:?} out.{stream} {key}: the killed run's records");
                let restart = restart_records.get(key.as_str()).cloned().unwrap_or_default();
                assert_eq!(restart, replay[kept..], "{point:?} out.{stream} {key}: after {kept} committed records");
            }
            let keys = expected_per_key(stream);
            let unknown: Vec<&&str> = restart_records.keys().filter(|k| !keys.contains_key(**k)).collect();
            assert!(unknown.is_empty(), "{point:?} out.{stream}: keys not in the replay: {unknown:?}");
        }
        // The restart skipped exactly what the committed progress records cover.
        assert_eq!(skipped(&rest.stderr_str()).0, committed_records, "{point:?}: {}", rest.stderr_str());
        let dead = parsed(read_committed(&brokers, "out.dead_letter"));
        let newest = newest(&committed);
        let mark = |partition: &Value| newest.iter().filter_map(|p| p["dead_letters"][format!("in/{partition}")].as_i64()).max();
        let committed_dead = dead[..at_kill[4] as usize].iter().filter(|(_, v)| {
            let v = v.as_ref().unwrap();
            mark(&v["partition"]).is_some_and(|m| v["offset"].as_i64().unwrap() <= m)
        });
        let got: Vec<(String, Option<Value>)> = committed_dead.chain(&dead[at_kill[4] as usize..]).cloned().collect();
        assert_eq!(got, expected_dead_letters("in"), "{point:?} out.dead_letter");
    }
}

/// Every record of the progress topic as a read_committed reader sees it, parsed, in offset
/// order.
fn progress_log(brokers: &str) -> Vec<Value> {
    read_committed(brokers, "out.progress")
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v.unwrap()).unwrap())
        .collect()
}

/// Two instances with one `--prefix` and `--group`: the second's `init_transactions` on the
/// per-worker ids `stockflow/out/g/<w>` fences the first's producers, so the first must stop at
/// its next transaction, non-zero and saying so, having committed nothing after the second
/// started (no output record, no progress record, no consumer offset).
///
/// librdkafka's mock cluster cannot fence: its InitProducerId gives every caller a new producer
/// id and never bumps the epoch of the one the transactional id had (librdkafka 2.12,
/// `rdkafka_mock_handlers.c`, `rd_kafka_mock_pid_new`), so there a zombie's transactions
/// commit. Once the second instance is done, the mock answers the first's next
/// AddPartitionsToTxn as a broker answers a fenced producer (PRODUCER_FENCED); what the test
/// checks is what the first instance does with that answer.
#[test]
fn a_second_instance_fences_the_first() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let sale = format!(r#"{{"type":"sale","ts":{},"sku":"SKU00000","loc":"DC00","qty":1}}"#, now + 1000);
    fence_the_first_instance(&[sale]);
}

/// As [`a_second_instance_fences_the_first`], with new messages whose tick writes no record (an
/// adjustment and its reverse, in one tick): the fenced instance has no record to produce, yet
/// must not move the group's offsets past them. Its read positions move only in its
/// transactions (one with just the progress record and the offsets when a tick writes nothing),
/// so it finds out that it is fenced there, and stops before anything else commits offsets.
#[test]
fn a_fenced_instance_whose_new_ticks_write_nothing_moves_no_offsets() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let adjust = |delta: i64| {
        format!(r#"{{"type":"adjust","ts":{},"sku":"SKU00000","loc":"DC00","delta":{delta}}}"#, now + 1000)
    };
    fence_the_first_instance(&[adjust(-1), adjust(1)]);
}

/// A `run` on 2 workers catches up with the case, a `batch` in the same group and prefix runs to
/// the end, and `new` messages arrive on partition 0: the first instance, fenced, must stop
/// having committed nothing after the second started.
fn fence_the_first_instance(new: &[String]) {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", true);
    let options = common::case_options(CASE);
    let mut args = vec!["run", "--brokers", &brokers, "--topics", "in", "--group", "g", "--prefix", "out", "-w", "2"];
    // Idle partitions follow the wall clock after 1 s, so a message stamped now closes its tick
    // about a second later.
    args.extend(["--idle-ms", "1000"]);
    args.extend(options.iter().map(String::as_str));
    let first = common::spawn(&args);
    // Caught up: the workers' transactions committed every partition's end.
    let ends: BTreeMap<String, i64> =
        (0..3).map(|p| (format!("in/{p}"), high_watermarks_of(&brokers, "in", p))).collect();
    let caught_up = || {
        let p = progress(&brokers);
        let offsets = p.values().flat_map(|r| r["offsets"].as_object().cloned().unwrap_or_default());
        p.len() == 2 && offsets.map(|(k, v)| (k, v.as_i64().unwrap())).collect::<BTreeMap<_, _>>() == ends
    };
    assert!(common::eventually(90, caught_up), "the first instance did not write the case: {:?}", progress(&brokers));
    // And idle: the ticks its partitions' wall-clock frontier closes next hold no records.
    let quiet = || {
        let before = high_watermarks_of(&brokers, "out.progress", 0);
        std::thread::sleep(Duration::from_secs(2));
        high_watermarks_of(&brokers, "out.progress", 0) == before
    };
    assert!(common::eventually(30, quiet), "the first instance keeps committing");
    let outputs: Vec<String> = STREAMS.iter().chain(&["dead_letter"]).map(|t| format!("out.{t}")).collect();
    let written = high_watermarks(&brokers, &outputs);

    let second = batch(&brokers, "in", "g", &as_of(), &["-w", "2"]);
    assert!(second.success(), "{}", second.describe());
    assert!(!second.stderr_str().contains("does not support transactions"), "{}", second.stderr_str());
    let log = progress_log(&brokers);
    let second_started = log.iter().position(|r| r["generation"] == 2).expect("the second instance's progress records");
    let offsets = common::committed(&brokers, "g", "in", 3);

    // The broker's answer to a fenced producer, for whichever of the first's workers writes next.
    let fenced = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED; 2];
    cluster.request_errors(RDKafkaApiKey::AddPartitionsToTxn, &fenced);
    for message in new {
        common::produce_one(&brokers, "in", 0, message);
    }
    let first = common::wait_all(vec![first], Duration::from_secs(60), Duration::ZERO).pop().unwrap();
    assert!(!first.timed_out && !first.success(), "the first instance must fail: {}", first.describe());
    let stderr = first.stderr_str();
    let line = stderr.lines().find(|l| l.contains("fenced")).unwrap_or_else(|| panic!("no line says fenced: {stderr}"));
    assert!(line.contains("transactional id stockflow/out/g/"), "{line}");

    // Nothing of the first instance's is committed after the second started.
    assert_eq!(high_watermarks(&brokers, &outputs), written, "the fenced instance wrote records");
    let log = progress_log(&brokers);
    let late: Vec<&Value> = log[second_started..].iter().filter(|r| r["generation"] != 2).collect();
    assert!(late.is_empty(), "progress records of the fenced instance: {late:?}");
    assert_eq!(common::committed(&brokers, "g", "in", 3), offsets, "the fenced instance committed offsets");
    assert_eq!(offsets[0], Some(ends["in/0"]), "the group's offset must stop before the new messages");
    assert_eq!(high_watermarks_of(&brokers, "in", 0), ends["in/0"] + new.len() as i64);
}

/// A producer fenced during its start-up transaction (a newer instance initialised the same id
/// just after it) stops the job: taking the failure for a broker without transactions and
/// going on at-least-once would write beside the newer instance.
#[test]
fn a_producer_fenced_at_start_up_stops_instead_of_going_on_without_transactions() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", true);
    cluster.request_errors(RDKafkaApiKey::AddPartitionsToTxn, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED]);
    let out = batch(&brokers, "in", "g", &as_of(), &["-w", "1"]);
    assert!(!out.timed_out && !out.success(), "{}", out.describe());
    let stderr = out.stderr_str();
    assert!(!stderr.contains("does not support transactions"), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("fenced") && l.contains("transactional id stockflow/out/g/0")),
        "{stderr}"
    );
    let outputs: Vec<String> = STREAMS.iter().chain(&["dead_letter", "progress"]).map(|t| format!("out.{t}")).collect();
    assert_eq!(high_watermarks(&brokers, &outputs), vec![0; outputs.len()], "a fenced job wrote records");
}

#[test]
fn a_broker_whose_end_txn_fails_gets_at_least_once_output_and_one_line() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", true);
    // Every EndTxn fails (the probe's commit and its abort), as on tansu 0.6.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION; 8];
    cluster.request_errors(RDKafkaApiKey::EndTxn, &errors);
    let out = batch(&brokers, "in", "g", &as_of(), &["-w", "2"]);
    assert!(out.success());
    let stderr = out.stderr_str();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("does not support transactions")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    eprintln!("{stderr}");
    assert!(lines[0].contains(&brokers) && lines[0].contains("at-least-once"), "{}", lines[0]);
    assert_topics_hold_the_case(&brokers, "in");
}

#[test]
fn a_transaction_the_broker_aborts_is_produced_again() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", true);
    // The probe's EndTxn passes; the first real commit fails as if the broker had lost the
    // producer id (as after transaction.timeout.ms): abort, produce it again, commit.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR, RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_PRODUCER_ID];
    cluster.request_errors(RDKafkaApiKey::EndTxn, &errors);
    let out = batch(&brokers, "in", "g", &as_of(), &["-w", "1"]);
    assert!(out.success());
    let stderr = out.stderr_str();
    assert!(!stderr.contains("does not support transactions"), "{stderr}");
    assert!(stderr.contains("the broker aborted a transaction"), "{stderr}");
    assert_topics_hold_the_case_after_aborted(&brokers, "in", true);
    assert_eq!(last_tick(&brokers), expected_ticks().last().copied());
}

#[test]
fn at_least_once_on_request_uses_no_transactions_and_no_progress_topic() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    produce_case(&cluster, "in", false);
    for (group, flag) in [("g1", "--at-least-once"), ("g2", "--exactly-once=false")] {
        let out = batch(&brokers, "in", group, &as_of(), &[flag]);
        assert!(out.success());
        assert!(!out.stderr_str().contains("transactions"), "{flag}: {}", out.stderr_str());
    }
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    let md = consumer.fetch_metadata(Some("out.progress"), Duration::from_secs(10)).unwrap();
    let progress = &md.topics()[0];
    assert!(progress.error().is_some() || progress.partitions().is_empty(), "out.progress was created");
    // And the two flags conflict with an explicit --exactly-once.
    let out = batch(&brokers, "in", "g3", &as_of(), &["--at-least-once", "--exactly-once"]);
    assert!(!out.success() && out.stderr_str().contains("cannot be used with"), "{}", out.stderr_str());
}

/// `batch` times on the mock cluster with and without transactions (not a test of speed: it
/// checks the outputs and prints the times; see docs/benchmarks.md). The medium case by
/// default; `TXN_INPUT=DIR TXN_UNTIL=MS TXN_OPTS="..."` another fixture directory (then both
/// modes' topics must hold the same records). `TXN_RUNS` runs of each (default 5).
/// `cargo test --release --test kafka_txn measure -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_batch_with_and_without_transactions() {
    let env = |k: &str| std::env::var(k).ok();
    let runs: usize = env("TXN_RUNS").and_then(|r| r.parse().ok()).unwrap_or(5);
    let input = env("TXN_INPUT").map(std::path::PathBuf::from);
    let until = env("TXN_UNTIL").unwrap_or_else(as_of);
    let options: Vec<String> = match &input {
        Some(_) => env("TXN_OPTS").unwrap_or_default().split_whitespace().map(String::from).collect(),
        None => common::case_options(CASE),
    };
    let topics: Vec<String> =
        ["atp", "low_stock", "order_plan", "network_atp", "dead_letter"].map(|t| format!("out.{t}")).into();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in 0..runs {
        let mut outputs = Vec::new();
        for (mode, flag) in [("exactly-once", "--exactly-once"), ("at-least-once", "--at-least-once")] {
            let cluster = mock();
            let brokers = cluster.bootstrap_servers();
            let dir = input.clone().unwrap_or_else(|| common::fixtures_dir().join(CASE).join("input"));
            produce_dir(&cluster, &dir, "in", flag == "--exactly-once");
            let mut args = vec!["batch", "--brokers", &brokers, "--topics", "in", "--group", "g", "--prefix", "out"];
            args.extend(["--until", &until, "--quiet", flag, "-w", "1"]);
            args.extend(options.iter().map(String::as_str));
            let out = stockflow(&args);
            assert!(out.success());
            if input.is_none() {
                assert_topics_hold_the_case(&brokers, "in");
            }
            outputs.push(topics.iter().map(|t| read_committed(&brokers, t)).collect::<Vec<_>>());
            let transactions =
                if flag == "--exactly-once" { read_committed(&brokers, "out.progress").len() } else { 0 };
            eprintln!("run {i} {mode}: {:.3} s, {transactions} progress records", out.elapsed.as_secs_f64());
            times.entry(mode).or_default().push(out.elapsed.as_secs_f64());
        }
        // The mock cluster keeps about 5 MB per partition, dropping the oldest record
        // batches, whose sizes differ between the modes: compare what both kept.
        for (t, (a, b)) in topics.iter().zip(outputs[0].iter().zip(&outputs[1])) {
            let kept = a.len().min(b.len());
            assert!(a[a.len() - kept..] == b[b.len() - kept..], "{t}: the two modes wrote different records");
        }
    }
    for (mode, mut t) in times {
        t.sort_by(f64::total_cmp);
        let (median, min, max) = (t[t.len() / 2], t[0], t[t.len() - 1]);
        eprintln!("{mode}: median {median:.3} s, min {min:.3} s, max {max:.3} s over {runs} runs");
    }
}
