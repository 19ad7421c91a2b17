//! Output that pipes (docs/cli.md, "Output on stdout"): `--out -` and `--print` write JSON
//! lines, each an object with a leading `stream` field, holding exactly what the directory's
//! `snapshot/`, `dead_letter.jsonl` and `summary.json` hold; and a reader that closes the pipe
//! early (`| head -1`) ends every command quietly with exit status 0.

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The streams on stdout, in the order they come.
const STREAMS: [&str; 6] = ["atp", "low_stock", "order_plan", "network_atp", "dead_letter", "summary"];

/// stdout's lines: each parsed as a JSON object, with its `stream` and the line without it.
fn parse_lines(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let value: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("line {}: {e}: {line}", i + 1));
            let stream = value["stream"].as_str().unwrap_or_else(|| panic!("line {}: no stream: {line}", i + 1)).to_string();
            let prefix = format!("{{\"stream\":\"{stream}\",");
            let rest = line.strip_prefix(&prefix).unwrap_or_else(|| panic!("line {}: stream is not first: {line}", i + 1));
            (stream, format!("{{{rest}\n"))
        })
        .collect()
}

#[test]
fn out_dash_prints_json_lines_naming_their_stream() {
    let tmp = tempdir();
    let input = fixtures_dir().join("late_and_bad/input");
    let options = case_options("late_and_bad");
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    let dir = tmp.path().join("out");
    let printed = replay(&[&input], &dir, &[&options[..], &["-q", "--print"]].concat());
    assert!(printed.success(), "{}", printed.describe());
    let piped = replay(&[&input], std::path::Path::new("-"), &[&options[..], &["-q"]].concat());
    assert!(piped.success() && piped.stderr.is_empty(), "{}", piped.describe());
    assert_eq!(piped.stdout_str(), printed.stdout_str(), "--out - and --print differ");

    let lines = parse_lines(&piped.stdout_str());
    let order: Vec<usize> = lines.iter().map(|(s, _)| STREAMS.iter().position(|x| x == s).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "streams out of order: {order:?}");
    let of = |stream: &str| -> String { lines.iter().filter(|(s, _)| s == stream).map(|(_, l)| l.as_str()).collect() };
    for table in &STREAMS[..4] {
        let file = std::fs::read_to_string(dir.join("snapshot").join(format!("{table}.jsonl"))).unwrap();
        assert_eq!(of(table), file, "stream {table} differs from snapshot/{table}.jsonl");
    }
    let dead = std::fs::read_to_string(dir.join("dead_letter.jsonl")).unwrap();
    assert!(!dead.is_empty(), "the case has dead letters");
    assert_eq!(of("dead_letter"), dead);
    let summary: Vec<&(String, String)> = lines.iter().filter(|(s, _)| s == "summary").collect();
    assert_eq!(summary.len(), 1);
    assert_eq!(lines.last().unwrap().0, "summary", "the summary comes last");
    let printed: Value = serde_json::from_str(&summary[0].1).unwrap();
    assert_eq!(printed, read_json(&dir.join("summary.json")));
}

/// Runs `stockflow ARGS` with a stdout whose reader has already gone.
fn into_closed_pipe(args: &[&str]) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(repo_root())
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

fn quiet_success(args: &[&str], r: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success() && stderr.is_empty(), "stockflow {}: {}\n{stderr}", args.join(" "), r.status);
}

#[test]
fn a_closed_pipe_ends_every_command_quietly() {
    let basic = fixtures_dir().join("basic/input");
    let basic = basic.to_str().unwrap();
    let example = repo_root().join("docs/stockflow.example.toml");
    let commands: Vec<Vec<&str>> = vec![
        vec!["replay", basic, "--out", "-", "-q"],
        vec!["explain", basic, "--sku", "A", "--loc", "DC1"],
        vec!["explain", basic, "--sku", "A", "--loc", "DC1", "--json"],
        vec!["config", "check", example.to_str().unwrap()],
        vec!["--help"],
        vec!["replay", "--help"],
        vec!["--version"],
    ];
    for args in &commands {
        quiet_success(args, &into_closed_pipe(args));
    }

    // `| head -1` on an output larger than the pipe's buffer: the rest meets a closed pipe.
    let tmp = tempdir();
    let input = tmp.path().join("input");
    let generated = run(["gen", "--out", input.to_str().unwrap(), "--events", "20000", "--skus", "3000", "--stores", "20", "-q"]);
    assert!(generated.success(), "{}", generated.describe());
    let mut child = Command::new(bin())
        .args(["replay", input.to_str().unwrap(), "--out", "-", "-q"])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let r = child.wait_with_output().unwrap();
    quiet_success(&["replay", "INPUT", "--out", "-", "-q", "| head -1"], &r);
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["stream"], "atp", "{first}");
}

/// `consume` and `checkpoint show` against librdkafka's mock cluster: a `batch` writes the
/// output topics and a checkpoint, which the two commands print into a closed pipe.
#[test]
fn consume_and_checkpoint_show_end_quietly_on_a_closed_pipe() {
    let (_cluster, brokers) = basic_on_a_mock_cluster();
    let tmp = tempdir();
    let checkpoints = tmp.path().join("checkpoints");
    let batch = run_with_timeout(
        [
            "batch", "--brokers", &brokers, "--topics", "basic", "--prefix", "o", "--until", "1700000100000", "-q",
            "--exactly-once=false", "--lateness-ms", "0", "--checkpoint-dir", checkpoints.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(batch.success(), "{}", batch.describe());
    for args in [
        vec!["consume", "o.atp", "--brokers", &brokers],
        vec!["consume", "o.low_stock", "--all", "--brokers", &brokers],
        vec!["checkpoint", "show", checkpoints.to_str().unwrap()],
    ] {
        let open = run_with_timeout(&args, Duration::from_secs(60));
        assert!(open.success() && !open.stdout.is_empty(), "{}", open.describe());
        quiet_success(&args, &into_closed_pipe(&args));
    }
}
