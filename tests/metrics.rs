//! The metrics endpoint (`--metrics-addr`) scraped over HTTP while `stockflow replay` and
//! `stockflow run` (against librdkafka's mock cluster) run: the Prometheus text is parsed
//! and its values compared with the golden cases' summaries, outputs and snapshots; and the
//! endpoint under idle, slow and oversized clients.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde_json::Value;

/// How long a child may take to reach a state before the test gives up (a guard against a
/// hang, not a performance assertion).
const PATIENCE: Duration = Duration::from_secs(120);

/// A running `stockflow` with its metrics address; killed when dropped.
struct Job {
    child: Child,
    addr: String,
    stderr: mpsc::Receiver<String>,
}

impl Job {
    fn start(args: &[&str]) -> Job {
        let mut child = Command::new(common::bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stockflow");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("no metrics address on stderr: {seen:?}"));
            if let Some(rest) = line.strip_prefix("stockflow: metrics on http://") {
                let addr = rest.split('/').next().unwrap().to_string();
                return Job { child, addr, stderr: rx };
            }
            seen.push(line);
        }
    }

    /// (status code, body) of `GET path`.
    fn get(&self, path: &str) -> (u16, String) {
        let (status, head, body) = self.request("GET", path);
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        (status, body)
    }

    /// (status code, head in lower case, body) of one request on a connection of its own.
    fn request(&self, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to the metrics endpoint");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Scrapes until `done` holds.
    fn scrape_until(&self, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let scrape = self.scrape();
            if done(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                let stderr: Vec<String> = self.stderr.try_iter().collect();
                panic!("never {what}; last scrape:\n{}\nstderr: {stderr:?}", scrape.text);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get("/ready");
            if status == 200 {
                assert_eq!(body, "ok\n");
                return;
            }
            assert_eq!(status, 503);
            assert!(body.starts_with("not ready: ") && body.ends_with('\n') && body.lines().count() == 1, "{body:?}");
            if Instant::now() > deadline {
                panic!("never ready: {body}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A parsed Prometheus text exposition (format 0.0.4).
struct Scrape {
    text: String,
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    /// Parses `text`, checking the format: every family has HELP and TYPE before its
    /// samples, label values are quoted, values are numbers.
    fn parse(text: &str) -> Scrape {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        let mut helped = BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty(), "{line}");
                assert!(helped.insert(name.to_string()), "two HELP lines for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(types.insert(name.to_string(), kind.to_string()).is_none(), "two TYPE lines: {line}");
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let (series, value) = line.rsplit_once(' ').expect("name value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series.to_string(), BTreeMap::new()),
                Some((name, rest)) => (name.to_string(), parse_labels(rest.strip_suffix('}').expect("closing }"))),
            };
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'), "{name}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram")))
                .unwrap_or(&name);
            assert!(types.contains_key(family), "sample before its TYPE: {line}");
            samples.push((name, labels, value));
        }
        Scrape { text: text.to_string(), samples, types }
    }

    /// The sum of `name`'s samples whose labels include every pair of `filter`.
    fn sum(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name && filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .sum()
    }

    fn count(&self, name: &str, filter: &[(&str, &str)]) -> u64 {
        let v = self.sum(name, filter);
        assert_eq!(v.fract(), 0.0, "{name} {filter:?} = {v}");
        v as u64
    }

    fn one(&self, name: &str, filter: &[(&str, &str)]) -> f64 {
        let matching: Vec<_> = self
            .samples
            .iter()
            .filter(|(n, labels, _)| {
                n == name && filter.iter().all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(matching.len(), 1, "{name} {filter:?} in\n{}", self.text);
        matching[0].2
    }

    /// A latency `stockflow_<name>_latency`: a histogram `_seconds` whose cumulative buckets
    /// rise with `le` up to `+Inf` = its count, whose sum fits its count and max; this process's
    /// quantiles `_quantile_seconds` in order and at most its `_max_seconds`. Returns the count.
    fn check_latency(&self, name: &str) -> u64 {
        let histogram = format!("stockflow_{name}_latency_seconds");
        assert_eq!(self.types.get(&histogram).map(String::as_str), Some("histogram"), "{histogram}");
        let count = self.count(&format!("{histogram}_count"), &[]);
        let mut buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|(n, _, _)| *n == format!("{histogram}_bucket"))
            .map(|(_, labels, v)| (labels["le"].replace("+Inf", "inf").parse().unwrap(), *v))
            .collect();
        assert!(buckets.len() > 10, "{histogram}: {buckets:?}");
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{histogram} buckets not cumulative: {buckets:?}");
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count as f64), "{histogram}");
        let max = self.one(&format!("stockflow_{name}_latency_max_seconds"), &[]);
        let mut previous = 0.0;
        for q in ["0.5", "0.9", "0.99", "0.999"] {
            let v = self.one(&format!("stockflow_{name}_latency_quantile_seconds"), &[("quantile", q)]);
            assert!(v >= previous && v <= max, "{name} quantile {q} = {v} (previous {previous}, max {max})");
            previous = v;
        }
        let sum = self.one(&format!("{histogram}_sum"), &[]);
        assert!(sum >= 0.0 && sum <= max * count as f64 * 1.001 + 1e-6, "{name}: sum {sum}, count {count}, max {max}");
        if count > 0 {
            assert!(max > 0.0 && sum > 0.0, "{name}: {count} recorded but max {max}, sum {sum}");
            // The largest latency lies in the first bucket that holds every value.
            let (bound, _) = buckets.iter().find(|(_, n)| *n == count as f64).unwrap();
            assert!(max <= *bound, "{name}: max {max} above the bucket {bound} that holds all {count}");
        }
        count
    }

    /// The process and build metrics every scrape carries.
    fn check_process(&self) {
        assert!(self.one("process_resident_memory_bytes", &[]) > 0.0);
        assert!(self.one("process_virtual_memory_bytes", &[]) >= self.one("process_resident_memory_bytes", &[]));
        assert!(self.one("process_cpu_seconds_total", &[]) >= 0.0);
        assert!(self.one("process_open_fds", &[]) >= 3.0);
        assert!(self.one("process_max_fds", &[]) >= self.one("process_open_fds", &[]));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = self.one("process_start_time_seconds", &[]);
        assert!(started <= now + 1.0 && started > now - PATIENCE.as_secs_f64() * 10.0, "started {started}, now {now}");
        assert_eq!(self.types["process_cpu_seconds_total"], "counter");
        let build = self.samples.iter().find(|s| s.0 == "stockflow_build_info").expect("stockflow_build_info");
        assert_eq!(build.2, 1.0);
        assert_eq!(build.1["version"], env!("CARGO_PKG_VERSION"));
        let commit = &build.1["commit"];
        assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "commit {commit:?}");
        assert!(build.1["rustc"].chars().next().is_some_and(|c| c.is_ascii_digit()), "{:?}", build.1);
    }
}

fn parse_labels(mut rest: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"").expect("label=\"value\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (i, '"') => break i,
                (_, '\\') => match chars.next().expect("escape").1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
    }
    labels
}

fn summary(case: &str) -> BTreeMap<String, u64> {
    let text = std::fs::read_to_string(common::fixtures_dir().join(case).join("expected/summary.json")).unwrap();
    let v: BTreeMap<String, Value> = serde_json::from_str(&text).unwrap();
    v.into_iter().filter_map(|(k, v)| Some((k, v.as_u64()?))).collect()
}

fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap().lines().count() as u64
}

/// Per (file, type): the input's valid messages, i.e. its non-blank lines that are not dead
/// letters (the cases used here have nothing beyond the window).
fn applied_by_type(case: &str) -> BTreeMap<(String, String), u64> {
    let dir = common::fixtures_dir().join(case);
    let dead: BTreeSet<(String, u64)> = std::fs::read_to_string(dir.join("expected/dead_letter.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["source"].as_str().unwrap().to_string(), v["offset"].as_u64().unwrap())
        })
        .collect();
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(dir.join("input")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for (i, line) in String::from_utf8_lossy(&std::fs::read(&path).unwrap()).lines().enumerate() {
            if line.trim().is_empty() || dead.contains(&(name.clone(), i as u64 + 1)) {
                continue;
            }
            let v: Value = serde_json::from_str(line).unwrap();
            *counts.entry((name.clone(), v["type"].as_str().unwrap().to_string())).or_default() += 1;
        }
    }
    counts
}

/// Rejections per (file, reason) from the golden dead letters.
fn rejected_by_reason(case: &str) -> BTreeMap<(String, String), u64> {
    let text = std::fs::read_to_string(common::fixtures_dir().join(case).join("expected/dead_letter.jsonl")).unwrap();
    let mut counts = BTreeMap::new();
    for l in text.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let key = (v["source"].as_str().unwrap().to_string(), v["reason"].as_str().unwrap().to_string());
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// Replays `case` with `workers` workers and checks every count against the golden files.
fn replay_case(case: &str, workers: &str) -> Scrape {
    let dir = common::tempdir();
    let out = dir.path().join("out");
    let input = common::fixtures_dir().join(case).join("input");
    let mut args = vec![
        "replay".to_string(),
        input.display().to_string(),
        "--out".into(),
        out.display().to_string(),
        "-w".into(),
        workers.into(),
        "--metrics-addr".into(),
        "127.0.0.1:0".into(),
        "--metrics-linger-secs".into(),
        "600".into(),
        "-q".into(),
    ];
    args.extend(common::case_options(case));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let job = Job::start(&args);
    job.wait_ready();
    assert_eq!(job.get("/health"), (200, "ok\n".to_string()));
    assert_eq!(job.get("/nothing-here").0, 404);
    let m = job.scrape();
    let want = summary(case);

    assert_eq!(m.count("stockflow_messages_read_total", &[]), want["read"], "{case}");
    assert_eq!(m.count("stockflow_messages_applied_total", &[]), want["applied"], "{case}");
    assert_eq!(m.count("stockflow_messages_rejected_total", &[]), want["rejected"], "{case}");
    assert_eq!(m.count("stockflow_messages_late_total", &[]), want["late"], "{case}");
    assert_eq!(m.count("stockflow_messages_beyond_window_total", &[]), want["beyond_window"], "{case}");
    for outcome in ["absorbed", "orphan", "duplicate", "expired_on_arrival"] {
        let got = m.count("stockflow_ledger_outcomes_total", &[("outcome", outcome)]);
        assert_eq!(got, want[outcome], "{case} {outcome}");
    }
    // Per partition (a file is partition 0 of its own topic) and per type / reason.
    for entry in std::fs::read_dir(&input).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let non_blank = text.lines().filter(|l| !l.trim().is_empty()).count() as u64;
        let got = m.count("stockflow_messages_read_total", &[("topic", &name), ("partition", "0")]);
        assert_eq!(got, non_blank, "{case} {name}");
    }
    let by_type = applied_by_type(case);
    assert!(by_type.len() > 1, "{by_type:?}");
    for ((file, kind), n) in &by_type {
        assert_eq!(
            m.count("stockflow_messages_applied_total", &[("topic", file), ("type", kind)]),
            *n,
            "{file} {kind}"
        );
    }
    for ((file, reason), n) in rejected_by_reason(case) {
        let got = m.count("stockflow_messages_rejected_total", &[("topic", &file), ("reason", &reason)]);
        assert_eq!(got, n, "{file} {reason}");
    }
    // Outputs: one record per line of the change files; keys: one per snapshot line.
    let expected = common::fixtures_dir().join(case).join("expected");
    for stream in ["atp", "low_stock", "order_plan", "network_atp"] {
        let got = m.count("stockflow_output_records_total", &[("stream", stream)]);
        assert_eq!(got, lines(&expected.join(format!("{stream}.jsonl"))), "{case} {stream}");
        let keys = m.count("stockflow_state_keys", &[("table", stream)]);
        assert_eq!(keys, lines(&expected.join("snapshot").join(format!("{stream}.jsonl"))), "{case} {stream} keys");
    }
    // Every applied message's latency is recorded once its tick is written; every written
    // tick applied a message or held a timer, so at least one tick close is recorded.
    assert_eq!(m.check_latency("end_to_end"), want["applied"], "{case}");
    let ticks = m.check_latency("tick_close");
    assert!(ticks > 0 && ticks <= m.count("stockflow_ticks_written_total", &[]), "{case}: {ticks} tick closes");
    assert_eq!(m.one("stockflow_ready", &[]), 1.0);
    assert_eq!(m.one("stockflow_healthy", &[]), 1.0);
    // After the run, the watermark is the window's end (as_of, in seconds), not a stale value.
    let as_of = summary_as_of(case);
    assert_eq!(m.one("stockflow_watermark_timestamp_seconds", &[]), as_of as f64 / 1e3, "{case}");
    m.check_process();
    m
}

/// The golden case's `as_of`.
fn summary_as_of(case: &str) -> u64 {
    let text = std::fs::read_to_string(common::fixtures_dir().join(case).join("expected/summary.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["as_of"].as_u64().expect("a case with an as_of")
}

/// Every metric name the sample Grafana dashboard queries is one the endpoint serves.
fn check_dashboard(m: &Scrape) {
    let text = std::fs::read_to_string(common::repo_root().join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut names = BTreeSet::new();
    let mut histogram_quantiles = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            // Latencies are histograms, aggregated over processes by their buckets.
            if expr.contains("histogram_quantile(") {
                assert!(expr.contains("sum by (le)") && expr.contains("_latency_seconds_bucket"), "{expr}");
                histogram_quantiles += 1;
            }
            let mut rest = expr;
            while let Some(at) = rest.find("stockflow_").or_else(|| rest.find("process_")) {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                names.insert(name);
            }
        }
    }
    assert!(histogram_quantiles >= 4, "{histogram_quantiles} histogram_quantile queries");
    assert!(names.len() > 10, "{names:?}");
    for name in names {
        assert!(m.samples.iter().any(|s| s.0 == name) || m.types.contains_key(&name), "dashboard queries {name}");
    }
}

#[test]
fn replay_metrics_match_the_medium_case_at_two_workers() {
    let m = replay_case("medium", "2");
    // The order plan's lines stay in differential arrangements: after the run the gauge keeps
    // their final size (it read 0 once the dataflow's teardown dropped its traces).
    assert!(m.one("stockflow_arrangement_updates", &[]) > 0.0, "{}", m.text);
    assert!(m.one("stockflow_arrangement_bytes", &[]) > 0.0);
    check_dashboard(&m);
}

#[test]
fn replay_metrics_match_the_late_and_bad_case() {
    replay_case("late_and_bad", "1");
}

#[test]
fn metrics_addr_that_cannot_be_bound_is_an_error_naming_the_flag() {
    let input = common::fixtures_dir().join("basic/input");
    let out = common::run_with_timeout(
        &["replay", input.to_str().unwrap(), "--out", "-", "--metrics-addr", "not-an-address"],
        Duration::from_secs(60),
    );
    assert!(!out.success());
    assert!(out.stderr_str().contains("--metrics-addr not-an-address"), "{}", out.stderr_str());
}

/// `run` over the medium case produced to a 3-partition topic of the mock cluster.
fn run_job(brokers: &str, group: &str, idle_ms: &str) -> Job {
    Job::start(&[
        "run",
        "--brokers",
        brokers,
        "--topics",
        "medium",
        "--group",
        group,
        "--prefix",
        group,
        "--tick-ms",
        "100",
        "--lateness-ms",
        "200",
        "--idle-ms",
        idle_ms,
        "--metrics-addr",
        "127.0.0.1:0",
        "-q",
    ])
}

/// A mock cluster holding the medium case in a 3-partition topic `medium`, and its brokers.
fn medium_on_a_mock_cluster() -> (MockCluster<'static, DefaultProducerContext>, String) {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("medium", 3, 1).unwrap();
    let input = common::fixtures_dir().join("medium/input");
    let produced = common::run_with_timeout(
        &["produce", input.to_str().unwrap(), "--topic", "medium", "--brokers", &brokers],
        PATIENCE,
    );
    assert!(produced.success(), "{}", produced.describe());
    (cluster, brokers)
}

/// A partition with messages left to read is not idle, however short --idle-ms: reading the
/// backlog with a 1 ms idle time applies every message at its own tick, so the ledger's
/// outcomes are a replay's. (When any pause of the worker loop longer than --idle-ms moved the
/// watermark to the wall clock, the rest of the backlog was applied at the wall clock's tick,
/// after holds had expired: more releases found no hold.)
#[test]
fn a_partition_with_a_backlog_is_not_idle() {
    let (_cluster, brokers) = medium_on_a_mock_cluster();
    let want = summary("medium");
    let job = run_job(&brokers, "eager", "1");
    let m = job.scrape_until("acknowledged every applied message", |m| {
        m.count("stockflow_end_to_end_latency_seconds_count", &[]) >= want["applied"]
    });
    assert_eq!(m.count("stockflow_messages_applied_total", &[]), want["applied"]);
    assert_eq!(m.count("stockflow_ledger_outcomes_total", &[("outcome", "orphan")]), want["orphan"]);
}

#[test]
fn run_metrics_over_the_mock_cluster_count_lag_and_latency() {
    let (_cluster, brokers) = medium_on_a_mock_cluster();
    let want = summary("medium");
    let caught_up = |m: &Scrape| {
        m.count("stockflow_messages_read_total", &[]) == want["read"]
            && (0..3).all(|p| {
                let p = p.to_string();
                m.samples.iter().any(|(n, l, v)| {
                    n == "stockflow_consumer_lag_messages" && l.get("partition") == Some(&p) && *v == 0.0
                })
            })
    };

    // Partitions that never go idle hold the watermark at the data's times (2023): caught up
    // on the topic, but not ready, and /ready says why.
    let held = run_job(&brokers, "held", "600000");
    let m = held.scrape_until("read everything with no lag", caught_up);
    let (status, body) = held.get("/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("behind the wall clock"), "{body}");
    let watermark = m.one("stockflow_watermark_timestamp_seconds", &[]);
    assert!((1_700_000_000.0..=1_700_000_060.0).contains(&watermark), "{watermark}");
    assert!(m.one("stockflow_watermark_delay_seconds", &[]) > 86400.0);
    assert_eq!(held.get("/health").0, 200);
    drop(held);

    // Idle partitions follow the wall clock: ready once caught up.
    let job = run_job(&brokers, "live", "200");
    job.wait_ready();
    let m = job.scrape_until("acknowledged every applied message", |m| {
        m.count("stockflow_end_to_end_latency_seconds_count", &[]) == want["applied"]
    });
    assert_eq!(m.count("stockflow_messages_read_total", &[]), want["read"]);
    assert_eq!(m.count("stockflow_messages_applied_total", &[]), want["applied"]);
    assert_eq!(m.count("stockflow_messages_rejected_total", &[]), want["rejected"]);
    assert_eq!(m.count("stockflow_messages_late_total", &[]), want["late"]);
    assert_eq!(m.count("stockflow_ledger_outcomes_total", &[("outcome", "orphan")]), want["orphan"]);
    for p in 0..3 {
        let p = p.to_string();
        assert_eq!(m.one("stockflow_consumer_lag_messages", &[("topic", "medium"), ("partition", &p)]), 0.0);
        assert!(m.count("stockflow_messages_read_total", &[("topic", "medium"), ("partition", &p)]) > 0);
    }
    assert!(m.check_latency("tick_close") > 0);
    assert_eq!(m.check_latency("end_to_end"), want["applied"]);
    m.check_process();
    assert!(m.count("stockflow_output_records_total", &[("stream", "atp")]) > 0);
    assert!(m.count("stockflow_state_keys", &[("table", "atp")]) > 0);
    // The order plan's fair shares live in differential arrangements.
    assert!(m.one("stockflow_arrangement_updates", &[]) > 0.0, "{}", m.text);
    let delay = m.one("stockflow_watermark_delay_seconds", &[]);
    assert!(delay.abs() < 3600.0, "watermark {delay} s from the wall clock");
    assert_eq!(m.one("stockflow_ready", &[]), 1.0);
    drop(job);

    // `batch` is ready once its window is read and written; the final counts stay served.
    let batch = Job::start(&[
        "batch",
        "--brokers",
        &brokers,
        "--topics",
        "medium",
        "--group",
        "batch",
        "--prefix",
        "batch",
        "--until",
        "1700000060000",
        "--tick-ms",
        "500",
        "--lateness-ms",
        "200",
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-linger-secs",
        "600",
        "-q",
    ]);
    batch.wait_ready();
    let m = batch.scrape();
    assert_eq!(m.count("stockflow_messages_read_total", &[]), want["read"]);
    assert_eq!(m.count("stockflow_messages_applied_total", &[]), want["applied"]);
    assert_eq!(m.check_latency("end_to_end"), want["applied"]);
    // The window's end, and the arrangements' final size, after the run.
    assert_eq!(m.one("stockflow_watermark_timestamp_seconds", &[]), 1_700_000_060.0);
    assert!(m.one("stockflow_arrangement_updates", &[]) > 0.0, "{}", m.text);
    let expected = common::fixtures_dir().join("medium/expected");
    for table in ["atp", "low_stock", "order_plan", "network_atp"] {
        let keys = m.count("stockflow_state_keys", &[("table", table)]);
        assert_eq!(keys, lines(&expected.join("snapshot").join(format!("{table}.jsonl"))), "batch {table} keys");
    }
}

/// A finished replay of the basic case whose endpoint stays up (`--metrics-linger-secs`).
fn lingering_replay() -> (Job, tempfile::TempDir) {
    let dir = common::tempdir();
    let out = dir.path().join("out");
    let input = common::fixtures_dir().join("basic/input");
    let job = Job::start(&[
        "replay",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-linger-secs",
        "600",
        "-q",
    ]);
    job.wait_ready();
    (job, dir)
}

/// Sends `request` one byte every `pause`, watching for the server to close the connection;
/// returns the bytes sent before it did (all of them if it never did) and what it answered.
fn slow_client(addr: &str, request: &'static [u8], pause: Duration) -> std::thread::JoinHandle<(usize, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(pause)).unwrap();
    std::thread::spawn(move || {
        let mut answer = Vec::new();
        for (sent, byte) in request.iter().enumerate() {
            if stream.write_all(&[*byte]).is_err() {
                return (sent, answer);
            }
            let mut buf = [0; 4096];
            match stream.read(&mut buf) {
                Ok(0) => return (sent + 1, answer),
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return (sent + 1, answer),
            }
        }
        (request.len(), answer)
    })
}

/// 200 idle connections (a quarter of them stopped half-way through their request line) and a
/// client sending its request a byte every 2 s do not hold up a scrape: each is served by a task
/// of its own. The slow client is cut off by the header-read timeout (5 s) long before its
/// request is complete. (The endpoint used to answer one connection at a time with a 5 s read
/// timeout: 3 idle connections made a scrape take 15 s, a byte every 4 s blocked it for good.)
#[test]
fn idle_and_slow_connections_do_not_delay_a_scrape() {
    let (job, _dir) = lingering_replay();
    let request: &'static [u8] = b"GET /metrics HTTP/1.1\r\nHost: stockflow\r\nConnection: close\r\n\r\n";
    let slow = slow_client(&job.addr, request, Duration::from_secs(2));
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&job.addr).expect("an idle connection")).collect();
    for mut stream in idle.iter().step_by(4) {
        stream.write_all(b"GET /metr").unwrap();
    }
    for _ in 0..3 {
        let started = Instant::now();
        let m = job.scrape();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "a scrape took {took:?} beside 200 idle connections and a slow client");
        assert!(m.count("stockflow_messages_read_total", &[]) > 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let (sent, answer) = slow.join().unwrap();
    assert!(sent < request.len() / 2, "the slow client sent {sent} of {} bytes before being cut off", request.len());
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    drop(idle);
    // The other methods and paths keep their answers.
    let (status, head, body) = job.request("HEAD", "/metrics");
    assert_eq!((status, body.as_str()), (200, ""), "{head}");
    assert!(head.contains("content-type: text/plain; version=0.0.4"), "{head}");
    let (status, head, _) = job.request("POST", "/metrics");
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    assert_eq!(job.get("/ready"), (200, "ok\n".to_string()));
}

/// The resident set of process `pid`, in bytes (VmRSS of /proc/PID/status).
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("a VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A 10 MB request line without a newline is answered 431 once the request head passes its
/// 16 KiB cap, and the process's resident set does not grow by it (it grew with every byte:
/// 400 MB sent took RSS from 36 MB to 967 MB).
#[test]
fn a_ten_megabyte_request_line_is_refused_without_growing_memory() {
    let (job, _dir) = lingering_replay();
    let pid = job.child.id();
    job.scrape();
    let before = resident_bytes(pid);
    let mut stream = TcpStream::connect(&job.addr).expect("connect to the metrics endpoint");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(b"GET /").unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let (mut sent, mut peak) = (0, before);
    while sent < 10 << 20 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
        peak = peak.max(resident_bytes(pid));
    }
    let mut answer = Vec::new();
    // The server closes with the rest of the line unread, so the read may end in a reset.
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431"), "after {sent} bytes: {answer:?}");
    let grown = peak.max(resident_bytes(pid)).saturating_sub(before);
    assert!(grown < 4 << 20, "the resident set grew by {grown} bytes while {sent} bytes were sent");
    assert!(job.scrape().count("stockflow_messages_read_total", &[]) > 0);
}
