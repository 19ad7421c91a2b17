//! Checkpoints through the CLI on librdkafka's mock cluster: a batch window continues from the
//! previous window's checkpoint, on another number of workers (rescale 3 -> 1 and 1 -> 4), and
//! its outputs equal those of one batch over both windows; incompatible settings are refused.

mod common;

use std::path::Path;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

const FIRST_END: u64 = 1_700_000_030_000;
const SECOND_END: u64 = 1_700_000_060_000;

fn stockflow(args: &[&str]) -> common::RunOutput {
    let out = common::run_with_timeout(args, Duration::from_secs(120));
    assert!(out.success(), "stockflow {args:?} failed:\n{}", out.describe());
    out
}

/// `batch` over the medium case's topic with its replay options, writing into `out`.
fn batch(brokers: &str, group: &str, workers: usize, until: u64, out: &Path, checkpoints: Option<&Path>) -> String {
    let (until, workers) = (until.to_string(), workers.to_string());
    let mut args = vec![
        "batch", "--brokers", brokers, "--topics", "medium", "--group", group, "--no-kafka-out", "-q",
        "--lateness-ms", "200", "--tick-ms", "500", "--until", &until, "-w", &workers,
        "--out", out.to_str().unwrap(),
    ];
    if let Some(dir) = checkpoints {
        args.extend(["--checkpoint-dir", dir.to_str().unwrap()]);
    }
    stockflow(&args).stderr_str()
}

/// The lines of a change stream whose `ts` is after `after`.
fn stream_after(path: &Path, after: u64) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["ts"].as_u64().unwrap() > after
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn a_batch_window_continues_from_the_last_windows_checkpoint_on_any_worker_count() {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("medium", 3, 1).unwrap();
    let input = common::fixtures_dir().join("medium/input");
    stockflow(&["produce", input.to_str().unwrap(), "--topic", "medium", "--brokers", &brokers]);
    let dir = common::tempdir();
    let whole = dir.path().join("whole");
    let whole_checkpoints = dir.path().join("checkpoints-whole");
    batch(&brokers, "whole", 2, SECOND_END, &whole, Some(&whole_checkpoints));

    for (first_workers, second_workers) in [(3, 1), (1, 4)] {
        let name = format!("{first_workers}-to-{second_workers}");
        let checkpoints = dir.path().join(format!("checkpoints-{name}"));
        let (first, second) = (dir.path().join(format!("first-{name}")), dir.path().join(format!("second-{name}")));
        let log = batch(&brokers, &name, first_workers, FIRST_END, &first, Some(&checkpoints));
        assert!(log.contains(&format!("checkpoint at {}", FIRST_END + 1)), "{name}: no final checkpoint:\n{log}");
        let shares = std::fs::read_dir(checkpoints.join(format!("at-{:020}", FIRST_END + 1))).unwrap().count();
        assert_eq!(shares, first_workers, "{name}: one share per worker");

        let log = batch(&brokers, &name, second_workers, SECOND_END, &second, Some(&checkpoints));
        assert!(log.contains(&format!("starting from the checkpoint at {}", FIRST_END + 1)), "{name}:\n{log}");
        for stream in ["atp", "low_stock", "order_plan", "network_atp"] {
            let file = format!("{stream}.jsonl");
            let expected = stream_after(&whole.join(&file), FIRST_END);
            let actual = stream_after(&second.join(&file), 0);
            assert!(!expected.is_empty(), "{stream}: the second window must have changes to compare");
            assert_eq!(actual, expected, "{name}: {stream} of the second window differs from one batch's");
        }
        common::compare_dirs_bytes(&whole.join("snapshot"), &second.join("snapshot"))
            .unwrap_or_else(|e| panic!("{name}: snapshot: {e}"));
        // Counts carry over, so the second window's summary is the whole run's.
        assert_eq!(
            std::fs::read_to_string(second.join("summary.json")).unwrap(),
            std::fs::read_to_string(whole.join("summary.json")).unwrap(),
            "{name}: summary"
        );
    }

    // Whatever the worker counts and windows that led to it, the ledger at the end of the second
    // window is the same: `checkpoint show --ledger-only` prints it merged and sorted.
    let ledger = |name: &str| stockflow(&["checkpoint", "show", "--ledger-only", dir.path().join(name).to_str().unwrap()]);
    let whole_ledger = ledger("checkpoints-whole").stdout_str();
    assert!(whole_ledger.lines().filter(|l| l.starts_with("{\"Key\"")).count() > 10, "{whole_ledger}");
    for name in ["checkpoints-3-to-1", "checkpoints-1-to-4"] {
        assert_eq!(ledger(name).stdout_str(), whole_ledger, "{name}: the saved ledger differs from one window's");
    }
    let shown = stockflow(&["checkpoint", "show", dir.path().join("checkpoints-1-to-4").to_str().unwrap()]).stdout_str();
    let headers = shown.lines().filter(|l| l.contains("\"header\"")).count();
    assert_eq!(headers, 4, "one header per share of the 4-worker checkpoint:\n{shown}");

    // `explain --checkpoint` restores the newest checkpoint (the end of the second window) and
    // must tell the same story, number for number, as explaining a replay of that window.
    let checkpoints = dir.path().join("checkpoints-1-to-4");
    let input = common::fixtures_dir().join("medium/input");
    for (sku, loc) in [("SKU00003", "ST0001"), ("SKU00001", "DC01"), ("SKU00000", "DC00")] {
        let saved = stockflow(&["explain", "--checkpoint", checkpoints.to_str().unwrap(), "--sku", sku, "--loc", loc]);
        let saved = saved.stdout_str();
        assert!(!saved.contains("MISMATCH"), "{sku}@{loc}: the saved ledger disagrees with the restored engine:\n{saved}");
        let replayed = stockflow(&[
            "explain", input.to_str().unwrap(), "--sku", sku, "--loc", loc, "--tick-ms", "500", "--lateness-ms", "200",
            "--until", &SECOND_END.to_string(),
        ]);
        let engine_part = |text: &str| -> String {
            let from = text.find("Position [engine]").expect("a position section");
            let to = text.find("Checks").unwrap_or(text.len());
            text[from..to].to_string()
        };
        assert_eq!(engine_part(&saved), engine_part(&replayed.stdout_str()), "{sku}@{loc}");
    }
    // A key the checkpoint saves nothing for is refused, with the saved keys nearest to it.
    let unknown = common::run_with_timeout(
        ["explain", "--checkpoint", checkpoints.to_str().unwrap(), "--sku", "SKU00003", "--loc", "S9999"],
        Duration::from_secs(120),
    );
    assert!(!unknown.success() && unknown.stdout.is_empty(), "{}", unknown.describe());
    let err = unknown.stderr_str();
    assert!(err.contains(r#"no saved entry in the checkpoint names sku "SKU00003" at loc "S9999""#), "{err}");
    assert!(err.contains("the closest keys in the checkpoint: --sku SKU00003 --loc "), "{err}");

    // A checkpoint computed with other clocks is refused, naming the setting.
    let (checkpoints, other) = (dir.path().join("checkpoints-3-to-1"), dir.path().join("other"));
    let out = common::run_with_timeout(
        [
            "batch", "--brokers", &brokers, "--topics", "medium", "--group", "other", "--no-kafka-out", "-q",
            "--tick-ms", "1000", "--until", "1700000060000", "--checkpoint-dir", checkpoints.to_str().unwrap(),
            "--out", other.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(!out.success(), "an incompatible checkpoint must be refused");
    assert!(out.stderr_str().contains("--tick-ms 500"), "{}", out.describe());
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// The last tick a `run` over the whole medium case writes before it is stopped: the latest
/// tick of the replay's `atp` stream that lies before the input frontier the messages leave
/// (every partition's largest `ts` minus the lateness, rounded up to the tick).
fn last_tick_of_a_run() -> u64 {
    let case = common::fixtures_dir().join("medium");
    let frontier = common::list_files(&case.join("input"))
        .iter()
        .map(|file| {
            // Bad lines (the case has some) carry no clock.
            let text = std::fs::read_to_string(case.join("input").join(file)).unwrap();
            let max_ts = text
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok()?["ts"].as_u64())
                .max()
                .expect("every partition has messages");
            (max_ts - 200).div_ceil(500) * 500
        })
        .min()
        .unwrap();
    let ticks = common::read_jsonl(&case.join("expected/atp.jsonl"));
    ticks.iter().filter_map(|v| v["ts"].as_u64()).filter(|&t| t < frontier).max().unwrap()
}

/// Waits until the `atp` stream in `out` has reached `tick` (each tick is flushed whole).
fn reached(out: &Path, tick: u64, secs: u64) -> bool {
    let needle = format!("{{\"ts\":{tick},");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(out.join("atp.jsonl")).is_ok_and(|text| text.contains(&needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn signal(running: &common::Running, signal: i32) {
    assert_eq!(unsafe { libc_kill(running.pid() as i32, signal) }, 0);
}

/// The medium case cut into `parts` fixture directories: part k holds the k-th slice of every
/// file's lines, so producing the parts in turn appends to each partition in order.
fn medium_in_parts(dir: &Path, parts: usize) -> Vec<std::path::PathBuf> {
    let input = common::fixtures_dir().join("medium/input");
    let dirs: Vec<_> = (0..parts).map(|k| dir.join(format!("part{k}"))).collect();
    dirs.iter().for_each(|d| std::fs::create_dir_all(d).unwrap());
    for file in common::list_files(&input) {
        let text = std::fs::read_to_string(input.join(&file)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let per = lines.len().div_ceil(parts);
        for (k, d) in dirs.iter().enumerate() {
            let slice = &lines[(k * per).min(lines.len())..((k + 1) * per).min(lines.len())];
            let mut body = slice.join("\n");
            body.push('\n');
            std::fs::write(d.join(&file), body).unwrap();
        }
    }
    dirs
}

/// The times of the complete checkpoints of a one-worker run in `dir`.
fn checkpoint_times(dir: &Path) -> Vec<u64> {
    let mut times: Vec<u64> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("share-0-of-1.ckpt").exists())
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("at-")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    times.sort();
    times
}

#[test]
fn a_run_killed_after_a_checkpoint_resumes_on_three_workers_with_the_same_outputs() {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("medium", 3, 1).unwrap();
    let dir = common::tempdir();
    let parts = medium_in_parts(dir.path(), 3);
    let produce = |part: &Path| {
        stockflow(&["produce", part.to_str().unwrap(), "--topic", "medium", "--brokers", &brokers]);
    };
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    // The fixture's times lie in the past: a large --idle-ms keeps the wall clock out of it, so
    // the outputs depend on the messages only.
    let run = |group: &str, workers: &str, out: &str, checkpoints: &str| {
        common::spawn([
            "run", "--brokers", &brokers, "--topics", "medium", "--group", group, "--no-kafka-out", "--out", out,
            "--lateness-ms", "200", "--tick-ms", "500", "--idle-ms", "600000", "-w", workers,
            "--checkpoint-dir", checkpoints, "--checkpoint-every", "4",
        ])
    };

    // Two thirds of the input, a checkpoint after each, then kill -9.
    let crashed = run("crashed", "1", &path("before"), &path("checkpoints"));
    for (k, part) in parts[..2].iter().enumerate() {
        produce(part);
        let written = || checkpoint_times(&dir.path().join("checkpoints")).len() > k;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !written() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(written(), "no checkpoint after part {k}");
    }
    signal(&crashed, 9);
    drop(crashed);

    // The rest arrives while the job is down; it resumes on three workers.
    produce(&parts[2]);
    let resumed = run("crashed", "3", &path("after"), &path("checkpoints"));
    let last = last_tick_of_a_run();
    assert!(reached(&dir.path().join("after"), last, 60), "the resumed run did not reach tick {last}");
    signal(&resumed, 15);
    let done = common::wait_all(vec![resumed], Duration::from_secs(30), Duration::from_secs(1));
    assert!(done[0].success(), "{}", done[0].describe());
    let log = done[0].stderr_str();
    let at: u64 = log
        .split("starting from the checkpoint at ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("the resumed run did not start from the checkpoint:\n{log}"));

    // An uninterrupted run over the same messages.
    let reference = run("reference", "2", &path("reference"), &path("reference-checkpoints"));
    assert!(reached(&dir.path().join("reference"), last, 60), "the reference run did not reach tick {last}");
    signal(&reference, 15);
    let done = common::wait_all(vec![reference], Duration::from_secs(30), Duration::from_secs(1));
    assert!(done[0].success(), "{}", done[0].describe());

    // From the checkpoint on, the resumed run writes exactly what the uninterrupted one did.
    for stream in ["atp", "low_stock", "order_plan", "network_atp"] {
        let file = format!("{stream}.jsonl");
        let expected = stream_after(&dir.path().join("reference").join(&file), at - 1);
        let actual = stream_after(&dir.path().join("after").join(&file), 0);
        if actual != expected {
            let first = actual.iter().zip(&expected).position(|(a, e)| a != e).unwrap_or(actual.len().min(expected.len()));
            panic!(
                "{stream} after the checkpoint at {at}: {} lines resumed vs {} uninterrupted, first difference at line {first}:\n  resumed:       {:?}\n  uninterrupted: {:?}",
                actual.len(),
                expected.len(),
                actual.get(first),
                expected.get(first)
            );
        }
    }
    assert!(stream_after(&dir.path().join("after/atp.jsonl"), 0).len() > 100, "too little to compare after {at}");
}

/// A share file around `header` (JSON) and `body`, checksums computed as stockflow does.
fn share_bytes(header: &serde_json::Value, body: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    let mut out = b"SFCKPT\r\n".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// `checkpoint show` refuses what is not a share before reading it (a symlink to /dev/zero,
/// read whole, never ends; a fifo blocks its reader) and a share whose header, checksum
/// recomputed, claims what its checkpoint cannot hold; each refusal names the file.
#[test]
fn checkpoint_show_refuses_devices_fifos_and_forged_headers_by_name() {
    let tmp = common::tempdir();
    let root = tmp.path();
    let at = root.join("at-00000000000000005000");
    std::fs::create_dir(&at).unwrap();
    let share = at.join("share-0-of-1.ckpt");
    let show = |dir: &Path| {
        let r = common::run_with_timeout(["checkpoint", "show", dir.to_str().unwrap()], Duration::from_secs(60));
        assert!(!r.success() && !r.timed_out && !r.panicked(), "not refused:\n{}", r.describe());
        r.stderr_str()
    };

    std::os::unix::fs::symlink("/dev/zero", &share).unwrap();
    let err = show(&at);
    assert!(err.contains(&format!("{}: a symlink to a character device", share.display())), "{err}");

    std::fs::remove_file(&share).unwrap();
    let c_path = std::ffi::CString::new(share.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let err = show(&at);
    assert!(err.contains(&format!("{}: a fifo", share.display())), "{err}");

    // An empty body (two empty lists, 16 bytes) whose header says 198 entries, and a header of
    // zero workers: both once restarted a run from an empty state.
    std::fs::remove_file(&share).unwrap();
    let body = [0u8; 16];
    let header = |workers: u64, entries: u64| {
        serde_json::json!({
            "format_version": 1, "stockflow_version": "0.1.0", "at": 5000, "worker": 0, "workers": workers,
            "topics": ["t"], "tick_ms": 1000, "lateness_ms": 0, "until": null, "written_at_ms": 0,
            "partitions": [],
            "stats": {"read": 0, "applied": 0, "rejected": 0, "late": 0, "beyond_window": 0, "max_effective": null},
            "entries": entries, "keys": 0, "body_bytes": 16, "body_crc32": crc32fast::hash(&body),
        })
    };
    for (workers, entries, expected) in [(1, 198, "the header says 198 entries"), (0, 0, "the header says workers: 0")] {
        std::fs::write(&share, share_bytes(&header(workers, entries), &body)).unwrap();
        for dir in [&at, root] {
            let err = show(dir);
            assert!(err.contains(&format!("{}: {expected}", share.display())), "{err}");
        }
    }
    // The same share, honest, is shown.
    std::fs::write(&share, share_bytes(&header(1, 0), &body)).unwrap();
    let r = common::run_with_timeout(["checkpoint", "show", at.to_str().unwrap()], Duration::from_secs(60));
    assert!(r.success() && r.stdout_str().contains("\"header\""), "{}", r.describe());
}
