//! `--config FILE.toml` end to end: a file drives a real replay exactly as its flags do, flags
//! override it, unknown keys are refused by name, `config check` masks secrets; and the
//! progress lines on a stderr that is not a terminal.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// A TOML string literal (JSON's escapes are TOML's).
fn toml_str(path: &Path) -> String {
    serde_json::to_string(path.to_str().unwrap()).unwrap()
}

fn write_config(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// The `ts` of every record of a change stream.
fn times(out: &Path, file: &str) -> Vec<u64> {
    read_jsonl(&out.join(file)).iter().map(|r| r["ts"].as_u64().unwrap()).collect()
}

#[test]
fn a_config_file_replays_like_its_flags_and_flags_override_it() {
    let tmp = tempdir();
    let input = fixtures_dir().join("medium").join("input");
    let from_file = tmp.path().join("from-file");
    let config = write_config(
        tmp.path(),
        "replay.toml",
        &format!(
            "inputs = [{}]\nout = {}\ntick_ms = 500\nlateness_ms = 200\nworkers = 2\nquiet = true\n",
            toml_str(&input),
            toml_str(&from_file)
        ),
    );
    let config_arg = config.to_str().unwrap();

    let r = run(["replay", "--config", config_arg]);
    assert!(r.success(), "{}", r.describe());
    let from_flags = tmp.path().join("from-flags");
    let r = replay(&[&input], &from_flags, &["--tick-ms", "500", "--lateness-ms", "200", "-w", "2", "--quiet"]);
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&from_flags, &from_file).unwrap();
    let ticks = times(&from_file, "atp.jsonl");
    assert!(ticks.iter().any(|t| t % 1000 != 0), "tick_ms = 500 from the file did not apply");

    // --tick-ms and --out on the command line win over the file's; the rest still comes from it.
    let overridden = tmp.path().join("overridden");
    let r = run(["replay", "--config", config_arg, "--tick-ms", "2000", "--out", overridden.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    assert!(r.stderr.is_empty(), "quiet = true from the file did not apply:\n{}", r.describe());
    let ticks = times(&overridden, "atp.jsonl");
    assert!(!ticks.is_empty() && ticks.iter().all(|t| t % 2000 == 0), "--tick-ms 2000 did not win: {ticks:?}");
    let by_flags = tmp.path().join("by-flags-2000");
    let r = replay(&[&input], &by_flags, &["--tick-ms", "2000", "--lateness-ms", "200", "--quiet"]);
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&by_flags, &overridden).unwrap();

    // Inputs on the command line replace the file's.
    let other = fixtures_dir().join("basic").join("input");
    let replaced = tmp.path().join("replaced");
    let r = run(["replay", "--config", config_arg, "--out", replaced.to_str().unwrap(), other.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let basic = tmp.path().join("basic");
    let r = replay(&[&other], &basic, &["--tick-ms", "500", "--lateness-ms", "200", "--quiet"]);
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&basic, &replaced).unwrap();
}

#[test]
fn unknown_keys_and_bad_values_fail_naming_key_and_file() {
    let tmp = tempdir();
    let input = fixtures_dir().join("basic").join("input");
    let config = write_config(
        tmp.path(),
        "typo.toml",
        &format!("inputs = [{}]\nout = \"-\"\ntick_size = 500\n", toml_str(&input)),
    );
    let r = run(["replay", "--config", config.to_str().unwrap()]);
    assert!(!r.success() && !r.panicked(), "{}", r.describe());
    let err = r.stderr_str();
    assert!(err.contains("unknown key `tick_size`") && err.contains("typo.toml"), "{}", r.describe());
    assert!(err.contains("tick_ms"), "the message should list the keys:\n{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());

    // A Kafka key is unknown to replay; a bad value names its key.
    std::fs::write(&config, "topics = [\"inv\"]\n").unwrap();
    let r = run(["replay", "--config", config.to_str().unwrap(), "--out", "-", input.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("unknown key `topics`"), "{}", r.describe());
    std::fs::write(&config, "lateness_ms = \"soon\"\n").unwrap();
    let r = run(["replay", "--config", config.to_str().unwrap(), "--out", "-", input.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("key `lateness_ms`"), "{}", r.describe());
    // A missing file says so.
    let r = run(["replay", "--config", tmp.path().join("absent.toml").to_str().unwrap(), "--out", "-"]);
    assert!(!r.success() && r.stderr_str().contains("absent.toml"), "{}", r.describe());
}

#[test]
fn run_and_batch_take_their_flags_from_the_file() {
    let tmp = tempdir();
    // Rejected before any broker is contacted, so no Kafka is needed: the file's values reached
    // the command's own checks.
    let config = write_config(tmp.path(), "run.toml", "topics = [\"inv\"]\ntick_ms = 0\n");
    let r = run(["run", "--config", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("--tick-ms must be at least 1"), "{}", r.describe());
    let config = write_config(tmp.path(), "batch.toml", "topics = [\"inv\"]\nno_kafka_out = true\n");
    let r = run(["batch", "--config", config.to_str().unwrap(), "--until", "1000"]);
    assert!(!r.success() && r.stderr_str().contains("--no-kafka-out needs --out"), "{}", r.describe());
}

#[test]
fn config_check_prints_the_resolved_configuration_with_secrets_masked() {
    let tmp = tempdir();
    let config = write_config(
        tmp.path(),
        "kafka.toml",
        "brokers = \"broker1:9093\"\ntopics = [\"inv\", \"po\"]\ngroup = \"planner\"\nlateness_ms = 10000\n\n\
         [kafka]\nsecurity.protocol = \"SASL_SSL\"\nsasl.mechanism = \"SCRAM-SHA-512\"\nsasl.username = \"stockflow\"\n\
         sasl.password = \"hunter2-pw\"\n\"ssl.key.password\" = \"k3y-pw\"\n",
    );
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let out = r.stdout_str();
    for line in [
        "# stockflow run:",
        "brokers = \"broker1:9093\"",
        "topics = [\"inv\", \"po\"]",
        "group = \"planner\"",
        "lateness_ms = 10000\n",
        "tick_ms = 1000  # default",
        "prefix = \"stockflow\"  # default",
        "[kafka]",
        "\"sasl.password\" = \"****\"",
        "\"ssl.key.password\" = \"****\"",
        "\"sasl.username\" = \"stockflow\"",
        "\"security.protocol\" = \"SASL_SSL\"",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    assert!(!out.contains("hunter2") && !out.contains("k3y"), "a secret is shown:\n{out}");

    // The printed configuration is itself a valid config file of the same command.
    let again = write_config(tmp.path(), "resolved.toml", &out);
    let r = run(["config", "check", again.to_str().unwrap(), "--mode", "run"]);
    assert!(r.success() && r.stdout_str().contains("group = \"planner\""), "{}", r.describe());

    // As a batch config, --until is reported as still needed.
    let r = run(["config", "check", config.to_str().unwrap(), "--mode", "batch"]);
    assert!(r.success(), "{}", r.describe());
    assert!(r.stdout_str().contains("# until: not set (required"), "{}", r.describe());

    // Checks go beyond the syntax: a librdkafka property that does not exist, a key below
    // [kafka] that belongs above it, and a replay input that is missing.
    std::fs::write(&config, "topics = [\"inv\"]\n[kafka]\n\"no.such.property\" = 1\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("no.such.property"), "{}", r.describe());
    std::fs::write(&config, "topics = [\"inv\"]\n[kafka]\n\"client.id\" = \"x\"\ntick_ms = 500\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("`tick_ms` is in [kafka]"), "{}", r.describe());
    std::fs::write(&config, "inputs = [\"no/such/dir\"]\nout = \"-\"\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("no/such/dir"), "{}", r.describe());
}

/// `stockflow ARGS` with stderr a pipe (not a terminal), progress every millisecond.
fn with_progress(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("STOCKFLOW_PROGRESS_MS", "1")
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

#[test]
fn progress_on_a_pipe_is_plain_log_lines_and_quiet_silences_it() {
    let tmp = tempdir();
    let input = fixtures_dir().join("medium").join("input");
    let out = tmp.path().join("out");
    let r = with_progress(&["replay", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "-w", "2"]);
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains('\x1b'), "redraws or colours on a pipe:\n{stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(" INFO ") && l.contains("replay: ")).collect();
    assert!(!lines.is_empty(), "no progress line:\n{stderr}");
    let total: u64 = std::fs::read_dir(&input)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let last = lines.last().unwrap();
    let read = read_json(&out.join("summary.json"))["read"].as_u64().unwrap();
    assert!(last.contains(&format!("replay: {read} messages, {:.1} MB in ", total as f64 / 1e6)), "{stderr}");
    // Periodic lines show the share of the input's size (known in a replay).
    for line in &lines[..lines.len() - 1] {
        assert!(line.contains(&format!(" of {:.1} MB (", total as f64 / 1e6)), "{line}");
    }

    let r = with_progress(&["replay", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(r.stderr.is_empty(), "--quiet printed: {}", String::from_utf8_lossy(&r.stderr));
}
