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
    batch(&brokers, "whole", 2, SECOND_END, &whole, None);

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

    // `explain --checkpoint` restores the newest checkpoint (the end of the second window) and
    // must tell the same story, number for number, as explaining a replay of that window.
    let checkpoints = dir.path().join("checkpoints-1-to-4");
    let input = common::fixtures_dir().join("medium/input");
    for (sku, loc) in [("SKU00003", "S0001"), ("SKU00001", "DC01"), ("SKU00000", "DC00")] {
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
