//! Kafka source and sink against librdkafka's in-process mock cluster: `stockflow produce`,
//! `batch` over a golden case (snapshot byte-identical to the replay's), partition assignment
//! across workers, tombstones, dead letters, and offsets committed only after the outputs are
//! acknowledged.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

fn stockflow(args: &[&str]) -> common::RunOutput {
    let out = common::run_with_timeout(args, Duration::from_secs(60));
    if !out.success() {
        eprintln!("{}", out.describe());
    }
    out
}

fn mock() -> MockCluster<'static, DefaultProducerContext> {
    MockCluster::new(1).expect("mock cluster")
}

/// Every message of `topic` as (partition, offset, key, value).
fn read_all(brokers: &str, topic: &str) -> Vec<(i32, i64, String, Option<String>)> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", "test-reader").create().unwrap();
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for p in md.topics()[0].partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).unwrap();
        if high > low {
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low)).unwrap();
            ends.insert(p.id(), high);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ends.is_empty() && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push((
                m.partition(),
                m.offset(),
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.payload().map(|v| String::from_utf8_lossy(v).into_owned()),
            ));
            if m.offset() + 1 >= ends[&m.partition()] {
                ends.remove(&m.partition());
            }
        }
    }
    assert!(ends.is_empty(), "{topic}: did not read to the end");
    out.sort();
    out
}

/// A fixture directory `in/` inside `dir` holding `files` (name, text).
fn write_fixture(dir: &Path, files: &[(&str, &str)]) -> std::path::PathBuf {
    let input = dir.join("in");
    std::fs::create_dir(&input).unwrap();
    for (name, text) in files {
        std::fs::write(input.join(name), text).unwrap();
    }
    input
}

#[test]
fn batch_over_the_basic_case_matches_the_golden_snapshot() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let input = common::fixtures_dir().join("basic/input");
    cluster.create_topic("basic", 3, 1).unwrap();
    let out = stockflow(&["produce", input.to_str().unwrap(), "--topic", "basic", "--brokers", &brokers]);
    assert!(out.success());
    let dir = common::tempdir();
    let outdir = dir.path().join("out");
    for workers in ["1", "2"] {
        let out = stockflow(&[
            "batch",
            "--brokers",
            &brokers,
            "--topics",
            "basic",
            "--group",
            &format!("g{workers}"),
            "--until",
            "10000",
            "--lateness-ms",
            "0",
            "--out",
            outdir.to_str().unwrap(),
            "-w",
            workers,
            "--prefix",
            &format!("p{workers}"),
            "--quiet",
        ]);
        assert!(out.success());
        let expected = common::fixtures_dir().join("basic/expected/snapshot");
        for name in ["atp.jsonl", "low_stock.jsonl", "order_plan.jsonl", "network_atp.jsonl"] {
            let got = std::fs::read(outdir.join("snapshot").join(name)).unwrap();
            let want = std::fs::read(expected.join(name)).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "-w {workers} {name}");
        }
        for name in ["atp.jsonl", "order_plan.jsonl", "network_atp.jsonl", "low_stock.jsonl"] {
            let got = std::fs::read(outdir.join(name)).unwrap();
            let want = std::fs::read(common::fixtures_dir().join("basic/expected").join(name)).unwrap();
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "-w {workers} {name}");
        }
        // The atp topic's records equal the directory's change stream, keyed sku@loc, in order.
        let atp = read_all(&brokers, &format!("p{workers}.atp"));
        let lines: Vec<String> =
            std::fs::read_to_string(outdir.join("atp.jsonl")).unwrap().lines().map(String::from).collect();
        // Topics have several partitions: compare per key, where order is guaranteed.
        let mut values: Vec<(String, String)> =
            atp.iter().map(|r| (r.2.clone(), r.3.clone().expect("no deletions in basic"))).collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        let mut lines: Vec<(String, String)> = lines
            .into_iter()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).unwrap();
                (format!("{}@{}", v["sku"].as_str().unwrap(), v["loc"].as_str().unwrap()), l)
            })
            .collect();
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(values, lines);
        for (_, _, key, value) in &atp {
            let v: serde_json::Value = serde_json::from_str(value.as_ref().unwrap()).unwrap();
            assert_eq!(key, &format!("{}@{}", v["sku"].as_str().unwrap(), v["loc"].as_str().unwrap()));
        }
        // Offsets committed to the end of every partition.
        let ends: Vec<Option<i64>> = read_ends(&brokers, "basic", 3).into_iter().map(Some).collect();
        assert_eq!(common::committed(&brokers, &format!("g{workers}"), "basic", 3), ends);
    }
}

fn read_ends(brokers: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    (0..partitions).map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap().1).collect()
}

#[test]
fn tombstones_dead_letters_and_assignment_across_workers() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = common::tempdir();
    // Partition 0 sets stock, partition 1 removes it again (a deletion) and holds a bad line;
    // partition 2 and 3 make sure 2 workers each get partitions.
    let input = write_fixture(
        dir.path(),
        &[
            ("a.jsonl", "{\"type\":\"receipt\",\"ts\":1000,\"sku\":\"A\",\"loc\":\"S1\",\"qty\":5}\n"),
            ("b.jsonl", "{\"type\":\"sale\",\"ts\":3000,\"sku\":\"A\",\"loc\":\"S1\",\"qty\":5}\nnot json\n"),
            ("c.jsonl", "{\"type\":\"receipt\",\"ts\":1500,\"sku\":\"B\",\"loc\":\"S1\",\"qty\":1}\n"),
            ("d.jsonl", "{\"type\":\"receipt\",\"ts\":1500,\"sku\":\"C\",\"loc\":\"S1\",\"qty\":1}\n"),
        ],
    );
    cluster.create_topic("t", 4, 1).unwrap();
    assert!(stockflow(&["produce", input.to_str().unwrap(), "--topic", "t", "--brokers", &brokers]).success());
    let out =
        stockflow(&["batch", "--brokers", &brokers, "--topics", "t", "--until", "5000", "-w", "2", "--group", "g"]);
    assert!(out.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (worker, partition) in [(0, 0), (1, 1), (0, 2), (1, 3)] {
        assert!(stderr.contains(&format!("worker {worker}/2 reads t[{partition}] from offset 0")), "{stderr}");
    }
    let atp = read_all(&brokers, "stockflow.atp");
    let a: Vec<_> = atp.iter().filter(|r| r.2 == "A@S1").map(|r| r.3.clone()).collect();
    assert_eq!(a.len(), 2, "{atp:?}");
    assert!(a[0].as_ref().unwrap().contains("\"on_hand\":5"));
    assert_eq!(a[1], None, "the deletion is a tombstone");
    let net = read_all(&brokers, "stockflow.network_atp");
    assert!(net.iter().any(|r| r.2 == "A" && r.3.is_none()), "{net:?}");
    let dead = read_all(&brokers, "stockflow.dead_letter");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0].3.as_deref(),
        Some("{\"source\":\"t\",\"partition\":1,\"offset\":1,\"reason\":\"invalid_json\",\"payload\":\"not json\"}")
    );
    assert_eq!(common::committed(&brokers, "g", "t", 4), vec![Some(1), Some(2), Some(1), Some(1)]);
}

#[test]
fn offsets_are_not_committed_when_outputs_are_not_acknowledged() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = common::tempdir();
    let input = write_fixture(
        dir.path(),
        &[("a.jsonl", "{\"type\":\"receipt\",\"ts\":1000,\"sku\":\"A\",\"loc\":\"S1\",\"qty\":5}\n")],
    );
    cluster.create_topic("t", 1, 1).unwrap();
    assert!(stockflow(&["produce", input.to_str().unwrap(), "--topic", "t", "--brokers", &brokers]).success());
    // Every produce request to the output fails: the tick is never acknowledged.
    cluster
        .topic_error("stockflow.atp", rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        .unwrap();
    let out = stockflow(&[
        "batch",
        "--brokers",
        &brokers,
        "--topics",
        "t",
        "--until",
        "5000",
        "--group",
        "g",
        "-X",
        "message.timeout.ms=3000",
    ]);
    assert!(!out.success(), "the run must fail when outputs are not delivered");
    assert_eq!(common::committed(&brokers, "g", "t", 1), vec![None]);
    // Once the outputs can be delivered, the same group reads from the start and commits.
    cluster.topic_error("stockflow.atp", rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR).unwrap();
    let out = stockflow(&["batch", "--brokers", &brokers, "--topics", "t", "--until", "5000", "--group", "g"]);
    assert!(out.success());
    assert_eq!(common::committed(&brokers, "g", "t", 1), vec![Some(1)]);
}

/// A topic that does not exist when `run` starts is waited for and read once it appears, each
/// partition by its owning worker, from its beginning. (A partition added to an existing topic
/// takes the same path, `discover`; neither the mock cluster nor tansu implements
/// CreatePartitions, so that is not tested against a broker.)
#[test]
fn run_reads_a_topic_created_while_it_runs() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = common::tempdir();
    let out = dir.path().join("out");
    // A worker without partitions follows the wall clock, so these times are ahead of it (with
    // room for a slow machine): nothing may arrive behind the frontier, where it would be
    // applied at the current time. Once both workers read a partition, the messages' own times
    // close the ticks.
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 + 60_000;
    let event =
        |sku: &str, ts: u64| format!("{{\"type\":\"receipt\",\"ts\":{ts},\"sku\":\"{sku}\",\"loc\":\"S1\",\"qty\":3}}");
    let running = common::spawn([
        "run",
        "--brokers",
        &brokers,
        "--topics",
        "late",
        "--group",
        "g",
        "--out",
        out.to_str().unwrap(),
        "--lateness-ms",
        "0",
        "--idle-ms",
        "600000",
        "--metadata-refresh-ms",
        "200",
        "-w",
        "2",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    cluster.create_topic("late", 2, 1).unwrap();
    common::produce_one(&brokers, "late", 0, &event("A", base));
    common::produce_one(&brokers, "late", 1, &event("B", base + 3000));
    common::produce_one(&brokers, "late", 0, &event("A", base + 9000));
    common::produce_one(&brokers, "late", 1, &event("B", base + 9000));
    let atp = out.join("atp.jsonl");
    let rows = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    // The files are flushed after every tick, so they can be followed while `run` runs.
    assert!(
        common::eventually(40, || rows(&atp).contains("\"sku\":\"A\"") && rows(&atp).contains("\"sku\":\"B\"")),
        "not written while running: {}",
        rows(&atp)
    );
    // SIGTERM: finish, commit, exit 0.
    assert_eq!(unsafe { libc_kill(running.pid() as i32, 15) }, 0);
    let done = common::wait_all(vec![running], Duration::from_secs(30), Duration::from_secs(1));
    assert!(done[0].success(), "{}", done[0].describe());
    let stderr = done[0].stderr_str();
    assert!(stderr.contains("input topic late does not exist yet"), "{stderr}");
    assert!(stderr.contains("worker 0/2 new partition: reads late[0] from offset 0"), "{stderr}");
    assert!(stderr.contains("worker 1/2 new partition: reads late[1] from offset 0"), "{stderr}");
    // Each first receipt is on_hand 3 at its own tick: not lost, not moved.
    for (sku, ts) in [("A", base), ("B", base + 3000)] {
        let first = rows(&atp).lines().find(|l| l.contains(&format!("\"sku\":\"{sku}\""))).map(String::from);
        let tick = ts.div_ceil(1000) * 1000;
        assert!(
            first.as_ref().is_some_and(|l| l.contains(&format!("\"ts\":{tick},")) && l.contains("\"on_hand\":3")),
            "{sku}: {first:?}"
        );
    }
    // Everything read is committed.
    assert_eq!(common::committed(&brokers, "g", "late", 2), vec![Some(2), Some(2)]);
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// `gen --kafka TOPIC` sends, to partition i, exactly the non-blank lines `gen --out` writes to
/// file i (bad lines included), in order; a topic with too few partitions is refused.
#[test]
fn gen_to_a_topic_sends_the_lines_gen_writes_to_files() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    let dir = common::tempdir();
    let files = dir.path().join("files");
    let network = ["--events", "3000", "--skus", "20", "--stores", "6", "--partitions", "3", "--seed", "5", "--bad", "0.02"];
    let out_dir = files.to_str().unwrap();
    assert!(stockflow(&[&["gen", "--quiet", "--out", out_dir][..], &network].concat()).success());
    cluster.create_topic("generated", 3, 1).unwrap();
    let to_kafka = ["gen", "--quiet", "--kafka", "generated", "--brokers", &brokers];
    assert!(stockflow(&[&to_kafka[..], &network].concat()).success());

    let mut want = Vec::new();
    for (partition, name) in ["part-00.jsonl", "part-01.jsonl", "part-02.jsonl"].iter().enumerate() {
        let text = std::fs::read(files.join(name)).unwrap();
        let lines = text.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
        want.extend(lines.map(|l| (partition as i32, String::from_utf8_lossy(l).into_owned())));
    }
    let got: Vec<_> = read_all(&brokers, "generated").into_iter().map(|(p, _, _, v)| (p, v.unwrap())).collect();
    assert!(want.len() > 3000, "{} lines generated", want.len());
    assert!(want.iter().any(|(_, l)| serde_json::from_str::<serde_json::Value>(l).is_err()), "a bad line is among them");
    assert_eq!(got, want);

    cluster.create_topic("narrow", 1, 1).unwrap();
    let narrow = ["gen", "--quiet", "--kafka", "narrow", "--brokers", &brokers];
    let out = common::run_with_timeout([&narrow[..], &network].concat(), Duration::from_secs(60));
    assert!(!out.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("topic narrow has 1 partitions but gen --partitions 3"), "{stderr}");
}

/// Docs/format.md (Window): a continuous run writes every tick the watermark has passed, also a
/// tick whose only change is a hold expiring. Holds are opened and then nothing is sent: the
/// idle partition's watermark follows the wall clock past the expiry, and the hold's release
/// reaches `--out` and the output topic within about a tick plus `--idle-ms`.
#[test]
fn run_writes_hold_expiries_after_the_input_goes_quiet() {
    let cluster = mock();
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("holds", 1, 1).unwrap();
    let dir = common::tempdir();
    let out = dir.path().join("out");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let expires = now + 4_000;
    let receipt = format!(r#"{{"type":"receipt","ts":{now},"sku":"A","loc":"S1","qty":10}}"#);
    let reserve =
        format!(r#"{{"type":"reserve","ts":{now},"sku":"A","loc":"S1","res_id":"r1","qty":4,"expires_at":{expires}}}"#);
    common::produce_one(&brokers, "holds", 0, &receipt);
    common::produce_one(&brokers, "holds", 0, &reserve);
    let (tick_ms, idle_ms) = (500, 1_000);
    let running = common::spawn([
        "run",
        "--brokers",
        &brokers,
        "--topics",
        "holds",
        "--group",
        "g",
        "--prefix",
        "o",
        "--out",
        out.to_str().unwrap(),
        "--tick-ms",
        &tick_ms.to_string(),
        "--idle-ms",
        &idle_ms.to_string(),
        "--lateness-ms",
        "0",
        "--exactly-once=false",
    ]);
    let atp = out.join("atp.jsonl");
    let rows = || std::fs::read_to_string(&atp).unwrap_or_default();
    let expiry_tick = expires.div_ceil(tick_ms) * tick_ms;
    let released = format!(r#""ts":{expiry_tick},"sku":"A","loc":"S1","on_hand":10,"reserved":0,"#);
    let written = common::eventually(60, || rows().contains(&released));
    assert!(written, "the expiry at {expiry_tick} was not written: {}", rows());
    let late_by = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
        - expiry_tick;
    // A tick plus --idle-ms, with room for a busy machine (the bound is the point: before, the
    // expiry waited for the next message, which never came).
    assert!(late_by < tick_ms + idle_ms + 10_000, "written {late_by} ms after the expiry");
    assert!(rows().contains(r#""reserved":4,"#), "{}", rows());
    assert_eq!(unsafe { libc_kill(running.pid() as i32, 15) }, 0);
    let done = common::wait_all(vec![running], Duration::from_secs(30), Duration::from_secs(1));
    assert!(done[0].success(), "{}", done[0].describe());
    let topic = read_all(&brokers, "o.atp");
    let values: Vec<&str> = topic.iter().filter_map(|(_, _, _, v)| v.as_deref()).collect();
    assert!(values.iter().any(|v| v.contains(&released)), "o.atp: {values:?}");
    // The stopped run's snapshot shows the hold expired too.
    let snapshot = std::fs::read_to_string(out.join("snapshot/atp.jsonl")).unwrap();
    assert!(snapshot.contains(r#""reserved":0,"#), "{snapshot}");
}
