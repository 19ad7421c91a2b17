//! Wrong input is loud (issue 18): a directory without `*.jsonl` files, an input without a
//! message, a file whose every message is rejected and the entries a directory skips are each
//! named, with the likely fix. Every IO error names its file (issue 19): a read-only or
//! impossible output directory, a file-size limit, a full disk. A Kafka broker that is not
//! there is reported within `--connect-timeout`, by address (issue 18).

mod common;

use std::path::Path;

use common::*;

const SALE: &str = "{\"type\":\"sale\",\"ts\":1700000000000,\"sku\":\"A\",\"loc\":\"L\",\"qty\":1}\n";

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// `replay` that must fail without panicking; returns its stderr.
fn refused(r: RunOutput) -> String {
    assert!(!r.success() && !r.timed_out && !r.panicked(), "not refused:\n{}", r.describe());
    r.stderr_str()
}

#[test]
fn a_directory_without_jsonl_files_is_refused_with_the_likely_fix() {
    let tmp = tempdir();
    // The case directory instead of its input/: the error points at input/.
    let case = fixtures_dir().join("basic");
    let err = refused(replay(&[&case], &tmp.path().join("o1"), &[]));
    let fix = case.join("input").display().to_string();
    assert!(err.contains("holds no *.jsonl file") && err.contains(&format!("did you mean {fix}?")), "{err}");
    assert!(!tmp.path().join("o1").exists(), "refused before writing anything");

    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = refused(replay(&[&empty], &tmp.path().join("o2"), &[]));
    assert!(err.contains(&empty.display().to_string()) && err.contains("--allow-empty"), "{err}");

    // Asked for, it replays nothing, and says so.
    let r = replay(&[&empty], &tmp.path().join("o3"), &["--allow-empty"]);
    assert!(r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains("holds no messages (--allow-empty)"), "{}", r.describe());
    assert_eq!(read_json(&tmp.path().join("o3").join("summary.json"))["read"], 0);

    // The same from a config file.
    let config = tmp.path().join("empty.toml");
    write(&config, "allow_empty = true\n");
    let out = tmp.path().join("o4");
    let r = run(["replay", empty.to_str().unwrap(), "--out", out.to_str().unwrap(), "--config", config.to_str().unwrap()]);
    assert!(r.success(), "{}", r.describe());
}

#[test]
fn an_input_without_messages_is_refused_unless_allowed() {
    let tmp = tempdir();
    let (empty, blank, full) = (tmp.path().join("empty.jsonl"), tmp.path().join("blank.jsonl"), tmp.path().join("a.jsonl"));
    write(&empty, "");
    write(&blank, "  \n\t\r\n\n");
    write(&full, SALE);
    let err = refused(replay(&[&empty, &blank], &tmp.path().join("o1"), &[]));
    assert!(err.contains("the input holds no messages"), "{err}");
    for file in [&empty, &blank] {
        assert!(err.contains(&file.display().to_string()), "{err}");
    }
    let r = replay(&[&empty, &blank], &tmp.path().join("o2"), &["--allow-empty"]);
    assert!(r.success(), "{}", r.describe());

    // Among files with messages, an empty one is replayed and named in a warning.
    let r = replay(&[&empty, &full], &tmp.path().join("o3"), &[]);
    assert!(r.success(), "{}", r.describe());
    let warning = format!("warning: {} holds no messages", empty.display());
    assert!(r.stderr_str().contains(&warning), "{}", r.describe());
}

#[test]
fn a_file_whose_every_message_is_rejected_is_named_and_the_totals_count_the_rejections() {
    let tmp = tempdir();
    let (prose, good) = (tmp.path().join("notes.md"), tmp.path().join("good.jsonl"));
    write(&prose, "# Notes\n\nNot a message.\n- nor this\n");
    write(&good, &format!("{SALE}{{\"type\":\"sale\"}}\n"));
    let out = tmp.path().join("out");
    let r = replay(&[&prose, &good], &out, &[]);
    // Bad input is data (SPEC §1): the run completes and exits 0; the warning and the totals
    // are what make it loud.
    assert!(r.success(), "{}", r.describe());
    let stderr = r.stderr_str();
    assert!(
        stderr.contains("warning: notes.md: every message was rejected (3 of 3; the first, line 1: invalid_json)"),
        "{stderr}"
    );
    assert!(!stderr.contains("good.jsonl: every message"), "a partly valid file is not warned about:\n{stderr}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["rejected"], 4, "{summary}");
    let dead = out.join("dead_letter.jsonl").display().to_string();
    let totals = stderr.lines().find(|l| l.starts_with("stockflow: replay: 5 messages, ")).expect(&stderr);
    assert!(totals.ends_with(&format!(", 4 rejected (dead letters: {dead})")), "{totals}");

    let r = replay(&[&good], &tmp.path().join("out2"), &[]);
    assert!(r.stderr_str().contains(", 1 rejected (dead letters: "), "{}", r.describe());
}

#[test]
fn entries_a_directory_skips_are_named_in_a_warning() {
    let tmp = tempdir();
    let dir = tmp.path().join("in");
    std::fs::create_dir_all(dir.join("more")).unwrap();
    write(&dir.join("a.jsonl"), SALE);
    for name in ["B.JSONL", "c.ndjson", "d.json", "notes.txt", "more/e.jsonl", ".hidden"] {
        write(&dir.join(name), SALE);
    }
    let out = tmp.path().join("out");
    let r = replay(&[&dir], &out, &[]);
    assert!(r.success(), "{}", r.describe());
    let warning = r.stderr_str().lines().find(|l| l.contains("skipped")).map(str::to_string).expect(&r.describe());
    assert!(warning.starts_with(&format!("stockflow: warning: {}: read 1 *.jsonl files; skipped ", dir.display())), "{warning}");
    for named in ["B.JSONL", "c.ndjson", "d.json", "(JSON lines under another name?", "more/ (subdirectories are not read)", "notes.txt"] {
        assert!(warning.contains(named), "{named} missing: {warning}");
    }
    assert!(!warning.contains(".hidden"), "{warning}");
    assert_eq!(read_json(&out.join("summary.json"))["read"], 1, "only a.jsonl is read");
}

/// A bigger input, so that the outputs outgrow small limits.
fn medium() -> std::path::PathBuf {
    fixtures_dir().join("medium").join("input")
}

#[test]
fn an_output_that_cannot_be_created_is_named() {
    let tmp = tempdir();
    let file = tmp.path().join("a-file");
    write(&file, "");
    let out = file.join("out");
    let err = refused(replay(&[medium()], &out, &["-q"]));
    assert!(err.contains(&out.display().to_string()) && err.contains("Not a directory"), "{err}");

    // Permissions hold only for an unprivileged user: root writes anyway.
    let ro = tmp.path().join("read-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    if std::fs::write(ro.join("probe"), "").is_ok() {
        eprintln!("skipped the read-only directory: this user (root?) writes into it anyway");
        return;
    }
    let err = refused(replay(&[medium()], &ro.join("out"), &["-q"]));
    assert!(err.contains(&ro.join("out").display().to_string()) && err.contains("Permission denied"), "{err}");
}

#[test]
fn a_write_past_the_file_size_limit_names_the_file() {
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let r = with_file_size_limit(&replay_args(&[medium()], &out, &["-q"]), 16 << 10);
    let stderr = String::from_utf8_lossy(&r.stderr);
    // Not killed by SIGXFSZ: the binary turns the limit into an error naming the file.
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot write {}", out.join("atp.jsonl").display())), "{stderr}");
    assert!(stderr.contains("File too large"), "{stderr}");
}

#[test]
fn a_full_disk_names_the_file() {
    let tmp = tempdir();
    let mount = tmp.path().join("disk");
    let Some(_disk) = SmallDisk::mount(&mount, "64k") else {
        eprintln!("skipped the full disk: cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let err = refused(replay(&[medium()], &mount.join("out"), &["-q"]));
    assert!(err.contains(&format!("cannot write {}", mount.join("out").display())), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
}

#[test]
fn an_unreadable_kafka_config_is_named() {
    let tmp = tempdir();
    let missing = tmp.path().join("no-such.properties");
    let r = run(["consume", "t", "--kafka-config", missing.to_str().unwrap()]);
    let err = refused(r);
    assert!(err.contains(&format!("cannot read --kafka-config {}", missing.display())), "{err}");
}

#[test]
fn a_broker_that_is_not_there_is_named_within_the_connect_timeout() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let brokers = format!("127.0.0.1:{port}");
    let tmp = tempdir();
    let fixture = fixtures_dir().join("basic").join("input");
    let out = tmp.path().join("out");
    let commands: [Vec<&str>; 4] = [
        vec!["consume", "stockflow.atp"],
        vec!["produce", fixture.to_str().unwrap(), "--topic", "t"],
        vec!["gen", "--kafka", "t", "--events", "10"],
        vec!["batch", "--until", "1700000000000", "--topics", "t", "--no-kafka-out", "--out", out.to_str().unwrap()],
    ];
    for command in commands {
        let mut args = command.clone();
        args.extend(["--brokers", &brokers, "--connect-timeout", "1s"]);
        // Without the check, `consume` waited 30 s for its metadata request.
        let r = run_with_timeout(&args, std::time::Duration::from_secs(20));
        let err = refused(r);
        assert!(err.contains(&format!("no Kafka broker answered at {brokers} within 1000 ms")), "{command:?}: {err}");
        assert!(err.contains("Connection refused") && err.contains("--connect-timeout"), "{command:?}: {err}");
    }
}
