//! `--config FILE.toml` end to end: a file drives a real replay (and a batch on librdkafka's
//! mock cluster) exactly as its flags do, flags override it, unknown keys are refused by name
//! and line, `config check` masks secrets, the documented examples pass it; and the progress
//! lines on a stderr that is not a terminal.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

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
        &format!("inputs = [{}]\nout = \"-\"\n\n# the tick\ntick_size = 500\n", toml_str(&input)),
    );
    let r = run(["replay", "--config", config.to_str().unwrap()]);
    assert!(!r.success() && !r.panicked(), "{}", r.describe());
    let err = r.stderr_str();
    assert!(err.contains("typo.toml, line 5: unknown key `tick_size`"), "{}", r.describe());
    assert!(err.contains("tick_ms"), "the message should list the keys:\n{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());

    // A Kafka key is unknown to replay; a bad value names its key.
    std::fs::write(&config, "topics = [\"inv\"]\n").unwrap();
    let r = run(["replay", "--config", config.to_str().unwrap(), "--out", "-", input.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("unknown key `topics`"), "{}", r.describe());
    std::fs::write(&config, "lateness_ms = \"soon\"\n").unwrap();
    let r = run(["replay", "--config", config.to_str().unwrap(), "--out", "-", input.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("line 1: key `lateness_ms`"), "{}", r.describe());
    assert!(r.stderr_str().contains("soon"), "{}", r.describe());
    // Not TOML at all: the parser's message with its line.
    std::fs::write(&config, "tick_ms = 500\nout = \n").unwrap();
    let r = run(["replay", "--config", config.to_str().unwrap(), "--out", "-", input.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("is not valid TOML"), "{}", r.describe());
    assert!(r.stderr_str().contains("line 2"), "{}", r.describe());
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
    let err = r.stderr_str();
    assert!(!r.success() && err.contains("run.toml, line 2: key `tick_ms`: invalid value '0' for '--tick-ms"), "{err}");
    assert!(err.contains("a tick is at least 1ms"), "{}", r.describe());
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
        "brokers = \"broker1:9093\"\ntopics = [\"inv\", \"po\"]\ngroup = \"planner\"\nlateness_ms = 10000\n\
         checkpoint_dir = \"/var/lib/ckpt\"\ncheckpoint_every = \"5m\"\nexactly_once = false\n\
         metrics_addr = \"127.0.0.1:9464\"\n\n\
         [kafka]\nsecurity.protocol = \"SASL_SSL\"\nsasl.mechanism = \"SCRAM-SHA-512\"\nsasl.username = \"stockflow\"\n\
         sasl.password = \"hunter2-pw\"\n\"ssl.key.password\" = \"k3y-pw\"\n\"ssl.key.pem\" = \"PEM-BODY\"\n\
         \"ssl.keystore.password\" = \"keystore-s3cret\"\n",
    );
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let out = r.stdout_str();
    for line in [
        "# stockflow run:",
        "brokers = \"broker1:9093\"\n",
        "topics = [\"inv\", \"po\"]\n",
        "group = \"planner\"\n",
        "lateness_ms = 10000\n",
        "checkpoint_dir = \"/var/lib/ckpt\"\n",
        "checkpoint_every = \"5m\"\n",
        "exactly_once = false\n",
        "metrics_addr = \"127.0.0.1:9464\"\n",
        "tick_ms = 1000  # default\n",
        "idle_ms = 10000  # default\n",
        "prefix = \"stockflow\"  # default\n",
        "# out: not set\n",
        "\n[kafka]\n",
        "\"sasl.password\" = \"****\"\n",
        "\"ssl.key.password\" = \"****\"\n",
        "\"ssl.key.pem\" = \"****\"\n",
        "\"ssl.keystore.password\" = \"****\"\n",
        "\"sasl.username\" = \"stockflow\"\n",
        "\"security.protocol\" = \"SASL_SSL\"\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    for secret in ["hunter2", "k3y", "PEM-BODY", "s3cret"] {
        assert!(!out.contains(secret), "a secret is shown:\n{out}");
    }

    // The printed configuration is itself a valid config file of the same command, resolving
    // to the same values (its secrets now the mask itself).
    let again = write_config(tmp.path(), "resolved.toml", &out);
    let r = run(["config", "check", again.to_str().unwrap(), "--mode", "run"]);
    assert!(r.success(), "{}", r.describe());
    let lines = |text: &str| -> Vec<String> {
        text.lines().filter(|l| !l.starts_with("# stockflow")).map(|l| l.replace("  # default", "")).collect()
    };
    assert_eq!(lines(&r.stdout_str()), lines(&out));

    // As a batch config, --until is reported as still needed.
    let r = run(["config", "check", config.to_str().unwrap(), "--mode", "batch"]);
    assert!(r.success(), "{}", r.describe());
    assert!(r.stdout_str().contains("# until: not set (required"), "{}", r.describe());

    // Checks go beyond the syntax: a librdkafka property that does not exist, a key below
    // [kafka] that belongs above it, a replay input that is missing, an unknown key.
    std::fs::write(&config, "topics = [\"inv\"]\n[kafka]\n\"no.such.property\" = 1\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("no.such.property"), "{}", r.describe());
    assert!(r.stdout.is_empty(), "{}", r.describe());
    // A secret librdkafka refuses (this build has no OAuth) is not repeated in the message.
    std::fs::write(&config, "topics = [\"inv\"]\n[kafka]\n\"sasl.oauthbearer.client.secret\" = \"oauth-s3cret\"\n")
        .unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("sasl.oauthbearer.client.secret"), "{}", r.describe());
    assert!(!r.stderr_str().contains("oauth-s3cret"), "{}", r.describe());
    std::fs::write(&config, "topics = [\"inv\"]\n[kafka]\n\"client.id\" = \"x\"\ntick_ms = 500\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("`tick_ms` is in [kafka]"), "{}", r.describe());
    std::fs::write(&config, "inputs = [\"no/such/dir\"]\nout = \"-\"\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("no/such/dir"), "{}", r.describe());
    std::fs::write(&config, "topics = [\"inv\"]\ngroup = \"g\"\ncheckpoint_evry = \"5m\"\n").unwrap();
    let r = run(["config", "check", config.to_str().unwrap(), "--mode", "run"]);
    assert!(!r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains("kafka.toml, line 3: unknown key `checkpoint_evry`"), "{}", r.describe());
}

/// The ```toml blocks of docs/cli.md's "Configuration file" section.
fn documented_examples() -> Vec<String> {
    let page = std::fs::read_to_string(repo_root().join("docs").join("cli.md")).unwrap();
    let from = page.find("## Configuration file").expect("docs/cli.md's section");
    let section = &page[from..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    section.split("```toml\n").skip(1).map(|block| block[..block.find("```").unwrap()].to_string()).collect()
}

#[test]
fn the_documented_examples_pass_config_check() {
    let example = repo_root().join("docs").join("stockflow.example.toml");
    let r = run(["config", "check", example.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let out = r.stdout_str();
    assert!(out.starts_with("# stockflow run:"), "{out}");
    assert!(out.contains("\"sasl.password\" = \"****\"") && !out.contains("change-me"), "{out}");
    // Everything the example sets is in the resolved configuration (no default took its place).
    for key in ["brokers", "topics", "group", "tick_ms", "lateness_ms", "idle_ms", "prefix", "metrics_addr"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{key} = ")) && !l.ends_with("# default")), "{key}: {out}");
    }
    for key in ["checkpoint_dir", "checkpoint_every", "exactly_once", "workers"] {
        assert!(out.lines().any(|l| l.starts_with(&format!("{key} = ")) && !l.ends_with("# default")), "{key}: {out}");
    }
    let r = run(["config", "check", example.to_str().unwrap(), "--mode", "batch"]);
    assert!(r.success(), "{}", r.describe());

    let tmp = tempdir();
    let blocks = documented_examples();
    assert_eq!(blocks.len(), 3, "docs/cli.md's examples: {blocks:?}");
    for (i, (block, mode)) in blocks.iter().zip(["run", "replay", "explain"]).enumerate() {
        let path = write_config(tmp.path(), &format!("documented-{i}.toml"), block);
        // Relative paths (the replay's inputs) are as on the command line: from the repository.
        let r = run_in(&repo_root(), &["config", "check", path.to_str().unwrap()]);
        assert!(r.status.success(), "docs/cli.md example {i}: {}", String::from_utf8_lossy(&r.stderr));
        let out = String::from_utf8_lossy(&r.stdout);
        assert!(out.starts_with(&format!("# stockflow {mode}:")), "docs/cli.md example {i}:\n{out}");
    }
}

/// `explain --config FILE`: the inputs, the key, the tick and the times given only in the file
/// explain exactly as the same flags do; `config check --mode explain` accepts that file.
#[test]
fn explain_takes_everything_from_its_config_file() {
    let tmp = tempdir();
    let input = fixtures_dir().join("medium").join("input");
    let config = write_config(
        tmp.path(),
        "explain.toml",
        &format!(
            "inputs = [{}]\nsku = \"SKU00008\"\nloc = \"DC00\"\ntick_ms = \"500ms\"\nlateness_ms = 200\n\
             at = 2023-11-14T22:13:50Z\nworkers = 2\njson = true\n",
            toml_str(&input)
        ),
    );
    let from_file = run(["explain", "--config", config.to_str().unwrap()]);
    assert!(from_file.success(), "{}", from_file.describe());
    let from_flags = run([
        "explain",
        input.to_str().unwrap(),
        "--sku",
        "SKU00008",
        "--loc",
        "DC00",
        "--tick-ms",
        "500",
        "--lateness-ms",
        "200",
        "--at",
        "1700000030000",
        "-w",
        "2",
        "--json",
    ]);
    assert!(from_flags.success(), "{}", from_flags.describe());
    assert_eq!(first_difference(&from_flags.stdout, &from_file.stdout), None);
    let explanation: serde_json::Value = serde_json::from_slice(&from_file.stdout).unwrap();
    assert!(explanation.to_string().contains("SKU00008"), "{explanation}");

    // The command line still wins: another key, the rest from the file.
    let other = run(["explain", "--config", config.to_str().unwrap(), "--loc", "ST0001"]);
    assert!(other.success(), "{}", other.describe());
    assert_ne!(other.stdout, from_file.stdout);

    let r = run(["config", "check", config.to_str().unwrap(), "--mode", "explain"]);
    assert!(r.success(), "{}", r.describe());
    for line in ["sku = \"SKU00008\"\n", "tick_ms = \"500ms\"\n", "at = \"2023-11-14T22:13:50Z\"\n", "workers = 2\n"] {
        assert!(r.stdout_str().contains(line), "missing {line:?}:\n{}", r.describe());
    }
    let r = run(["config", "check", config.to_str().unwrap()]);
    assert!(r.success() && r.stdout_str().starts_with("# stockflow explain:"), "{}", r.describe());

    // Neither inputs nor a checkpoint: said so, not a clap "required" without the file.
    std::fs::write(&config, "sku = \"A\"\nloc = \"S1\"\n").unwrap();
    let r = run(["explain", "--config", config.to_str().unwrap()]);
    assert!(!r.success() && r.stderr_str().contains("explain needs INPUT..."), "{}", r.describe());
}

/// Durations and times in a config file go through the flags' own parsers: `tick_ms = "1s"`
/// works, and a bad `until` names the file, the line and the corrected form, in the words the
/// flag uses.
#[test]
fn config_file_values_are_checked_by_the_flags_parsers_naming_file_and_line() {
    let tmp = tempdir();
    let input = fixtures_dir().join("basic").join("input");
    let units = tmp.path().join("units");
    let config = write_config(
        tmp.path(),
        "units.toml",
        &format!(
            "inputs = [{}]\nout = {}\ntick_ms = \"1s\"\nuntil = \"2023-11-14T22:13:50Z\"\nquiet = true\n",
            toml_str(&input),
            toml_str(&units)
        ),
    );
    let r = run(["replay", "--config", config.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
    let numbers = tmp.path().join("numbers");
    let r = replay(&[&input], &numbers, &["--tick-ms", "1000", "--until", "1700000030000", "-q"]);
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&numbers, &units).unwrap();

    let bad = write_config(
        tmp.path(),
        "bad-until.toml",
        &format!("inputs = [{}]\nout = \"-\"\n\n# the window\nuntil = \"2023-11-14\"\n", toml_str(&input)),
    );
    let r = run(["replay", "--config", bad.to_str().unwrap()]);
    let by_flag = run(["replay", input.to_str().unwrap(), "--out", "-", "--until", "2023-11-14"]);
    assert!(!r.success() && !by_flag.success(), "{}\n{}", r.describe(), by_flag.describe());
    let flag_message = by_flag.stderr_str().lines().next().unwrap().trim_start_matches("error: ").to_string();
    assert!(flag_message.contains("write 2023-11-14T00:00:00Z for midnight UTC"), "{}", by_flag.describe());
    let expected = format!("bad-until.toml, line 5: key `until`: {flag_message}");
    assert!(r.stderr_str().contains(&expected), "expected {expected:?}:\n{}", r.describe());
    // A local date-time written as a bare TOML value reads the same as the string.
    std::fs::write(&bad, format!("inputs = [{}]\nout = \"-\"\nuntil = 2023-11-14T22:13:50\n", toml_str(&input)))
        .unwrap();
    let r = run(["replay", "--config", bad.to_str().unwrap()]);
    assert!(
        r.stderr_str().contains("line 3: key `until`") && r.stderr_str().contains("write 2023-11-14T22:13:50Z for UTC"),
        "{}",
        r.describe()
    );
    // An unknown key gets the closest one.
    std::fs::write(&bad, "out = \"-\"\nlatenes_ms = 5\n").unwrap();
    let r = run(["replay", "--config", bad.to_str().unwrap(), input.to_str().unwrap()]);
    assert!(
        r.stderr_str()
            .contains("line 2: unknown key `latenes_ms` for `stockflow replay` (did you mean `lateness_ms`?)"),
        "{}",
        r.describe()
    );
}

/// A planted secret never reaches stdout or stderr, whatever the error: TOML syntax errors of
/// several kinds on its line, bad and unknown values and keys next to it, misspelled `-X` and
/// `--kafka-config` properties, librdkafka refusing it, and `config check`'s own output.
#[test]
fn secrets_never_reach_the_output() {
    const SECRET: &str = "HUNTER2-planted";
    let tmp = tempdir();
    let files = std::cell::Cell::new(0);
    // Each case its own file: the cases run after all are written.
    let file = |extension: &str, text: &str| {
        files.set(files.get() + 1);
        let path = tmp.path().join(format!("secret-{}.{extension}", files.get()));
        std::fs::write(&path, text.replace("$S", SECRET)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let toml = |text: &str| file("toml", text);
    let props = |text: &str| file("properties", text);
    let base = "topics = [\"inv\"]\n";
    let mut cases: Vec<(Vec<String>, bool)> = Vec::new();
    let mut case = |args: Vec<String>, ok: bool| cases.push((args, ok));
    let s = |items: &[&str]| items.iter().map(|i| i.to_string()).collect::<Vec<_>>();
    for file in [
        format!("{base}[kafka]\nsasl.password = \"$S\n"), // unterminated string
        format!("{base}[kafka]\nsasl.password = \"$S\\q\"\n"), // bad escape
        format!("{base}[kafka]\nsasl.password = \"$S\"\nsasl.password = \"$S\"\n"), // duplicate key
        format!("{base}[kafka]\nsasl.password = $S\n"),   // unquoted
        format!("{base}[kafka]\n\"sasl.password\" = \"$S\" junk\n"), // trailing text
        format!("{base}sasl_password = \"$S\"\n"),        // unknown key
        format!("{base}[kafka]\nsasl.passwort = \"$S\"\n"), // misspelled property
        format!("{base}[kafka]\nsasl.password = [\"$S\"]\n"), // not a scalar
        format!("{base}[kafka]\nssl.key.password = \"$S\"\nsecurity.protocol = \"nope\"\n"),
        format!("{base}tick_ms = \"soon\"\n[kafka]\nsasl.password = \"$S\"\n"), // a bad value beside it
        format!("{base}[kafka]\nsasl.oauthbearer.client.secret = \"$S\"\n"),    // refused by this librdkafka
    ] {
        let path = toml(&file);
        case(s(&["config", "check", &path]), false);
        case(s(&["run", "--config", &path]), false);
    }
    for line in ["sasl.passwort=$S", "sasl.password $S", "sasl.password:$S"] {
        let path = props(&format!("security.protocol=SASL_SSL\n{line}\n"));
        case(s(&["run", "--topics", "inv", "--kafka-config", &path]), false);
        let path = toml(&format!("{base}kafka_config = {}\n", serde_json::to_string(&path).unwrap()));
        case(s(&["config", "check", &path]), false);
        case(s(&["run", "-X", &line.replace("$S", SECRET), "--topics", "inv"]), false);
        case(s(&["batch", "--until", "1000", "-X", &line.replace("$S", SECRET), "--topics", "inv"]), false);
    }
    // config check succeeding prints the file resolved, the secret masked.
    let path = toml(&format!(
        "{base}[kafka]\nsasl.password = \"$S\"\n\"ssl.key.pem\" = \"$S\"\nsasl.username = \"stockflow\"\n"
    ));
    case(s(&["config", "check", &path]), true);
    let mut leaks = Vec::new();
    for (args, ok) in &cases {
        let r = run(args);
        if r.success() != *ok || r.panicked() {
            leaks.push(format!("expected success = {ok}:\n{}", r.describe()));
        }
        if r.stdout_str().contains(SECRET) || r.stderr_str().contains(SECRET) || r.stderr_str().contains("HUNTER2") {
            leaks.push(format!("the secret is printed:\n{}", r.describe()));
        }
    }
    assert!(leaks.is_empty(), "{}", leaks.join("\n"));
}

/// `stockflow ARGS` run in `dir`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin()).args(args).current_dir(dir).env("RUST_BACKTRACE", "0").output().unwrap()
}

/// A mock Kafka cluster holding the `medium` case on 3 partitions of topic `medium`.
fn medium_on_a_mock_cluster() -> rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("medium", 3, 1).unwrap();
    let input = fixtures_dir().join("medium").join("input");
    let brokers = cluster.bootstrap_servers();
    let r = run_with_timeout(
        ["produce", input.to_str().unwrap(), "--topic", "medium", "--brokers", &brokers],
        Duration::from_secs(60),
    );
    assert!(r.success(), "{}", r.describe());
    cluster
}

#[test]
fn a_config_file_drives_a_batch_on_kafka_like_its_flags() {
    let cluster = medium_on_a_mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let tmp = tempdir();
    let (from_file, from_flags) = (tmp.path().join("from-file"), tmp.path().join("from-flags"));
    let config = write_config(
        tmp.path(),
        "batch.toml",
        &format!(
            "brokers = {}\ntopics = [\"medium\"]\ngroup = \"from-file\"\nprefix = \"file\"\nuntil = \"1700000060000\"\n\
             tick_ms = 500\nlateness_ms = 200\nno_kafka_out = true\nout = {}\nworkers = 2\nexactly_once = false\n\
             [kafka]\n\"client.id\" = \"config-test\"\nsocket.timeout.ms = 30000\n",
            serde_json::to_string(&brokers).unwrap(),
            toml_str(&from_file)
        ),
    );
    let r = run_with_timeout(["batch", "--config", config.to_str().unwrap()], Duration::from_secs(120));
    assert!(r.success(), "{}", r.describe());
    let r = run_with_timeout(
        [
            "batch",
            "--brokers",
            &brokers,
            "--topics",
            "medium",
            "--group",
            "from-flags",
            "--prefix",
            "flags",
            "--until",
            "1700000060000",
            "--tick-ms",
            "500",
            "--lateness-ms",
            "200",
            "--no-kafka-out",
            "--out",
            from_flags.to_str().unwrap(),
            "-w",
            "2",
            "--at-least-once",
        ],
        Duration::from_secs(120),
    );
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&from_flags, &from_file).unwrap();
    assert!(read_json(&from_file.join("summary.json"))["read"].as_u64().unwrap() > 0);

    // A flag that conflicts with the file's key wins too: --at-least-once over exactly_once.
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("exactly_once = false", "exactly_once = true")).unwrap();
    let overruled = tmp.path().join("overruled");
    let r = run_with_timeout(
        [
            "batch",
            "--config",
            config.to_str().unwrap(),
            "--at-least-once",
            "--group",
            "g2",
            "--out",
            overruled.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&from_flags, &overruled).unwrap();

    // A librdkafka property from [kafka] reaches the client: a value it refuses stops the job.
    std::fs::write(
        &config,
        format!(
            "brokers = {}\ntopics = [\"medium\"]\nuntil = \"1700000060000\"\nno_kafka_out = true\nout = {}\n\
             [kafka]\nsocket.timeout.ms = \"soon\"\n",
            serde_json::to_string(&brokers).unwrap(),
            toml_str(&tmp.path().join("never"))
        ),
    )
    .unwrap();
    let r = run_with_timeout(["batch", "--config", config.to_str().unwrap()], Duration::from_secs(60));
    assert!(!r.success() && !r.panicked(), "{}", r.describe());
    assert!(r.stderr_str().contains("socket.timeout.ms"), "{}", r.describe());
}

/// `stockflow ARGS` with stderr a pipe (not a terminal), progress every `every_ms`.
fn with_progress(args: &[&str], every_ms: &str) -> Output {
    Command::new(bin())
        .args(args)
        .env("STOCKFLOW_PROGRESS_MS", every_ms)
        .env_remove("RUST_LOG")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// The size of the `*.jsonl` files of a fixture directory.
fn input_bytes(input: &Path) -> u64 {
    std::fs::read_dir(input)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn progress_on_a_pipe_is_plain_log_lines_and_quiet_silences_it() {
    let tmp = tempdir();
    let input = fixtures_dir().join("medium").join("input");
    let out = tmp.path().join("out");
    let r = with_progress(&["replay", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "-w", "2"], "1");
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{stderr}");
    assert!(!stderr.contains('\r') && !stderr.contains('\x1b'), "redraws or colours on a pipe:\n{stderr:?}");
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("stockflow: replay: ")).collect();
    assert!(lines.len() >= 2, "no periodic progress line:\n{stderr}");
    let total = input_bytes(&input);
    let read = read_json(&out.join("summary.json"))["read"].as_u64().unwrap();
    let last = lines.last().unwrap();
    assert!(
        last.starts_with(&format!("stockflow: replay: {read} messages, {:.1} MB in ", total as f64 / 1e6)),
        "the totals line: {stderr}"
    );
    // Periodic lines show the count, the share of the input's size (known in a replay), the
    // rate and the watermark; counts never go down.
    let mut previous = 0;
    for line in &lines[..lines.len() - 1] {
        assert!(line.contains(&format!(" of {:.1} MB (", total as f64 / 1e6)), "{line}");
        assert!(line.contains(" msg/s, watermark "), "{line}");
        let count: u64 = line["stockflow: replay: ".len()..].split(' ').next().unwrap().parse().unwrap();
        assert!(count >= previous && count <= read, "{line}");
        previous = count;
    }

    let out_quiet = tmp.path().join("quiet");
    let r = with_progress(&["replay", input.to_str().unwrap(), "--out", out_quiet.to_str().unwrap(), "--quiet"], "1");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(r.stderr.is_empty(), "--quiet printed: {}", String::from_utf8_lossy(&r.stderr));
    compare_dirs_bytes(&out, &out_quiet).unwrap();

    // Without the interval set, a short replay on a pipe writes only its totals line.
    let r = with_progress(&["replay", input.to_str().unwrap(), "--out", out_quiet.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with(&format!("stockflow: replay: {read} messages, ")), "{stderr}");

    // RUST_LOG filters: warnings only drops the info lines.
    let r = Command::new(bin())
        .args(["replay", input.to_str().unwrap(), "--out", out_quiet.to_str().unwrap()])
        .env("RUST_LOG", "stockflow=warn")
        .output()
        .unwrap();
    assert!(r.status.success() && r.stderr.is_empty(), "{}", String::from_utf8_lossy(&r.stderr));
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, signal: i32) -> i32;
}

/// The `stockflow: LABEL: N messages, ...` lines of a stderr (periodic lines and totals).
fn progress_lines<'a>(stderr: &'a str, label: &str) -> Vec<&'a str> {
    let prefix = format!("stockflow: {label}: ");
    stderr
        .lines()
        .filter(|l| l.strip_prefix(&prefix).is_some_and(|rest| rest.split(' ').nth(1) == Some("messages,")))
        .collect()
}

#[test]
fn batch_and_run_show_progress_with_lag_and_run_stops_once_caught_up() {
    let cluster = medium_on_a_mock_cluster();
    let brokers = cluster.bootstrap_servers();
    let tmp = tempdir();
    let common =
        ["--brokers", &brokers, "--topics", "medium", "--no-kafka-out", "--tick-ms", "500", "--lateness-ms", "200"];

    let out = tmp.path().join("batch");
    let mut batch = Command::new(bin());
    batch.args(["batch", "--until", "1700000060000", "--group", "batch", "--out", out.to_str().unwrap()]);
    let r = batch.args(common).env("STOCKFLOW_PROGRESS_MS", "1").env_remove("RUST_LOG").output().unwrap();
    let stderr = String::from_utf8_lossy(&r.stderr).into_owned();
    assert!(r.status.success(), "{stderr}");
    let read = read_json(&out.join("summary.json"))["read"].as_u64().unwrap();
    let lines = progress_lines(&stderr, "batch");
    assert!(lines.len() >= 2, "{stderr}");
    assert!(
        lines[..lines.len() - 1].iter().all(|l| l.contains(" msg/s, watermark ") && l.contains(", lag ")),
        "{stderr}"
    );
    assert!(lines.last().unwrap().starts_with(&format!("stockflow: batch: {read} messages, ")), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");

    // run: the line until caught up, one line saying so, then nothing until the totals.
    let out = tmp.path().join("run");
    let mut child = Command::new(bin())
        .args(["run", "--group", "run", "--idle-ms", "1000", "--out", out.to_str().unwrap()])
        .args(common)
        .env("STOCKFLOW_PROGRESS_MS", "1")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut before = Vec::new();
    let caught_up = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("run never said it caught up:\n{}", before.join("\n"));
        };
        if line.starts_with("stockflow: run: caught up with the input (") {
            break line;
        }
        before.push(line);
    };
    // Long enough for several more lines at a 1 ms interval, were they still written.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(unsafe { libc_kill(child.id() as i32, 15) }, 0);
    let status = child.wait().unwrap();
    reader.join().unwrap();
    let after: Vec<String> = rx.try_iter().collect();
    assert!(status.success(), "{status}: {after:?}");
    let read = read_json(&out.join("summary.json"))["read"].as_u64().unwrap();
    assert_eq!(caught_up, format!("stockflow: run: caught up with the input ({read} messages read)"));
    let before = before.join("\n");
    let lines = progress_lines(&before, "run");
    assert!(!lines.is_empty() && lines.iter().all(|l| l.contains(", lag ")), "{before}");
    let after = after.join("\n");
    let lines = progress_lines(&after, "run");
    assert_eq!(lines.len(), 1, "only the totals after catching up:\n{after}");
    assert!(
        lines[0].starts_with(&format!("stockflow: run: {read} messages, ")) && lines[0].contains(" MB in "),
        "{after}"
    );
}
