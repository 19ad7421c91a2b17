//! CLI robustness: hostile input never makes the job panic or stop (SPEC §1,
//! "the job never stops on bad input"), input errors are reported with the
//! offending paths, `--until` accepts RFC 3339 like milliseconds (§2); help on `-h`
//! everywhere, the hostfile's long flag, and what every command says about a bad time,
//! duration or count.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{json, Value};

const TEN_MB: usize = 10 * 1024 * 1024;

/// One expected dead letter: (source, offset, reason); partition is 0.
type Dl = (&'static str, u64, &'static str);

/// Writes the hostile input directory; returns the dead letters it must yield,
/// in position order (source bytewise, then offset).
fn write_hostile_inputs(dir: &Path) -> Vec<Dl> {
    let w = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    let line = |s: &str| format!("{s}\n").into_bytes();

    // Invalid UTF-8: a bare bad prefix, and bad bytes inside a string value.
    let mut b = line(r#"{"type":"receipt","ts":1000,"sku":"A","loc":"L","qty":10}"#);
    b.extend_from_slice(b"\xff\xfe{\"type\":\"sale\",\"ts\":1000,\"sku\":\"A\",\"loc\":\"L\",\"qty\":1}\n");
    b.extend_from_slice(b"{\"type\":\"sale\",\"ts\":1000,\"sku\":\"A\xc3\",\"loc\":\"L\",\"qty\":1}\n");
    w("bad_utf8.jsonl", b);

    // CRLF endings, a CRLF blank line keeping its number, an invalid line.
    w(
        "crlf.jsonl",
        concat!(
            r#"{"type":"sale","ts":2000,"sku":"A","loc":"L","qty":1}"#,
            "\r\n",
            "\r\n",
            "oops\r\n",
            r#"{"type":"receipt","ts":2000,"sku":"B","loc":"L","qty":5}"#,
            "\r\n",
        )
        .as_bytes()
        .to_vec(),
    );

    // Deep nesting: 200 levels in a field, 200 nested objects, 100 000 arrays.
    let mut d = Vec::new();
    let arr200 = format!("{}{}", "[".repeat(200), "]".repeat(200));
    d.extend(line(&format!(r#"{{"type":"receipt","ts":1000,"sku":"Z","loc":"L","qty":1,"x":{arr200}}}"#)));
    let mut obj = String::from("1");
    for _ in 0..200 {
        obj = format!(r#"{{"a":{obj}}}"#);
    }
    d.extend(line(&obj));
    d.extend(line(&format!("{}{}", "[".repeat(100_000), "]".repeat(100_000))));
    w("deep.jsonl", d);

    // Empty file, and a file of blank lines only (spaces, tabs, CRs).
    w("empty.jsonl", Vec::new());
    w("blank.jsonl", b"\n   \n\t\n\r\n \t \r\n\n".to_vec());

    // 10 MB lines: a valid message with a huge unknown field (applied), the
    // same cut short (invalid JSON), and a short multi-byte invalid line.
    let mut h = Vec::with_capacity(2 * TEN_MB + 100);
    h.extend(line(&format!(
        r#"{{"type":"receipt","ts":1000,"sku":"C","loc":"L","qty":7,"junk":"{}"}}"#,
        "x".repeat(TEN_MB)
    )));
    h.extend(line(&format!(r#"{{"type":"sale","ts":1000,"junk":"{}"#, "x".repeat(TEN_MB))));
    h.extend(line(&format!(r#"{{"type":"sale","junk":"{}"#, "é".repeat(5000))));
    w("huge.jsonl", h);

    // Last line without a newline: one file ending in a bad line, one in a good one.
    let mut n = line(r#"{"type":"receipt","ts":3000,"sku":"D","loc":"L","qty":3}"#);
    n.extend_from_slice(br#"{"type":"bogus","ts":1}"#);
    w("nonl.jsonl", n);
    w("nonl_valid.jsonl", br#"{"type":"receipt","ts":3000,"sku":"E","loc":"L","qty":4}"#.to_vec());

    // Huge numbers: valid JSON, out of range (or not integers) for the field.
    let nums = [
        r#"{"type":"sale","ts":1000,"sku":"A","loc":"L","qty":1e400}"#,
        r#"{"type":"sale","ts":1000,"sku":"A","loc":"L","qty":99999999999999999999999}"#,
        r#"{"type":"sale","ts":99999999999999999999999,"sku":"A","loc":"L","qty":1}"#,
        r#"{"type":"sale","ts":1e400,"sku":"A","loc":"L","qty":1}"#,
        r#"{"type":"sale","ts":1000,"sku":"A","loc":"L","qty":-99999999999999999999999}"#,
        r#"{"type":"adjust","ts":1000,"sku":"A","loc":"L","delta":-1e400}"#,
    ];
    w("numbers.jsonl", nums.iter().flat_map(|l| line(l)).collect());

    vec![
        ("bad_utf8.jsonl", 2, "invalid_json"),
        ("bad_utf8.jsonl", 3, "invalid_json"),
        ("crlf.jsonl", 3, "invalid_json"),
        ("deep.jsonl", 1, "invalid_json"),
        ("deep.jsonl", 2, "invalid_json"),
        ("deep.jsonl", 3, "invalid_json"),
        ("huge.jsonl", 2, "invalid_json"),
        ("huge.jsonl", 3, "invalid_json"),
        ("nonl.jsonl", 2, "unknown_type"),
        ("numbers.jsonl", 1, "invalid_field:qty"),
        ("numbers.jsonl", 2, "invalid_field:qty"),
        ("numbers.jsonl", 3, "invalid_field:ts"),
        ("numbers.jsonl", 4, "invalid_field:ts"),
        ("numbers.jsonl", 5, "invalid_field:qty"),
        ("numbers.jsonl", 6, "invalid_field:delta"),
    ]
}

fn field<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

#[test]
fn hostile_input_is_dead_lettered_not_fatal() {
    let tmp = tempdir();
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let expected_dl = write_hostile_inputs(&input);
    let out = tmp.path().join("out");

    for w in ["1", "3"] {
        let _ = std::fs::remove_dir_all(&out);
        let r = replay(&[&input], &out, &["-w", w]);
        assert!(r.success(), "replay of hostile input (-w {w}) failed:\n{}", r.describe());
        assert!(!r.panicked(), "{}", r.describe());

        // Dead letters: exactly the bad lines, in position order.
        let dl = read_jsonl(&out.join("dead_letter.jsonl"));
        let got: Vec<(String, Value, Value, String)> = dl
            .iter()
            .map(|d| {
                (
                    field(d, "source").as_str().unwrap_or("?").to_owned(),
                    field(d, "partition").clone(),
                    field(d, "offset").clone(),
                    field(d, "reason").as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect();
        let want: Vec<(String, Value, Value, String)> =
            expected_dl.iter().map(|(s, o, r)| (s.to_string(), json!(0), json!(o), r.to_string())).collect();
        assert_eq!(got, want, "-w {w}: dead letters (source, partition, offset, reason) differ from the bad lines");

        let payload = |src: &str, off: u64| -> String {
            let d = dl.iter().find(|d| field(d, "source") == src && field(d, "offset") == off).unwrap();
            field(d, "payload").as_str().unwrap_or_else(|| panic!("payload of {src}:{off} is not a string")).to_owned()
        };
        // Invalid UTF-8 is replaced by U+FFFD.
        let p = payload("bad_utf8.jsonl", 2);
        assert!(p.starts_with('\u{FFFD}') && p.ends_with(r#""qty":1}"#), "bad_utf8.jsonl:2 payload {p:?}");
        let p = payload("bad_utf8.jsonl", 3);
        assert!(p.contains("\"A\u{FFFD}\""), "bad_utf8.jsonl:3 payload {p:?}");
        // The trailing CR belongs to the line ending.
        assert_eq!(payload("crlf.jsonl", 3), "oops", "crlf.jsonl:3 payload");
        assert_eq!(payload("nonl.jsonl", 2), r#"{"type":"bogus","ts":1}"#);
        // Payloads are cut to 4096 characters (characters, not bytes).
        let p = payload("huge.jsonl", 2);
        assert_eq!(p.chars().count(), 4096, "huge.jsonl:2 payload length (chars)");
        assert!(p.starts_with(r#"{"type":"sale","ts":1000,"junk":"xxx"#), "huge.jsonl:2 payload {}", clip(&p, 100));
        let p = payload("huge.jsonl", 3);
        assert_eq!(p.chars().count(), 4096, "huge.jsonl:3 payload length (chars, multi-byte)");
        assert!(p.starts_with(r#"{"type":"sale","junk":"éé"#), "huge.jsonl:3 payload {}", clip(&p, 100));
        let p = payload("deep.jsonl", 3);
        assert_eq!(p.chars().count(), 4096, "deep.jsonl:3 payload length");

        // Counters: blank lines are not read; nothing is lost.
        let s = read_json(&out.join("summary.json"));
        let n = |k: &str| field(&s, k).as_u64().unwrap_or_else(|| panic!("summary.json: {k} is not a count: {s}"));
        assert_eq!(n("read"), 21, "summary read (non-blank lines): {s}");
        assert_eq!(n("rejected"), expected_dl.len() as u64, "summary rejected: {s}");
        assert_eq!(n("applied"), 6, "summary applied: {s}");
        assert_eq!(n("beyond_window"), 0, "summary beyond_window: {s}");
        assert_eq!(
            n("read"),
            n("applied") + n("rejected") + n("beyond_window"),
            "read = applied + rejected + beyond_window: {s}"
        );

        // The valid lines, including the 10 MB one, were applied.
        let atp = read_jsonl(&out.join("snapshot/atp.jsonl"));
        let rows: Vec<(String, String, Value)> = atp
            .iter()
            .map(|r| {
                (
                    field(r, "sku").as_str().unwrap_or("?").to_owned(),
                    field(r, "loc").as_str().unwrap_or("?").to_owned(),
                    field(r, "on_hand").clone(),
                )
            })
            .collect();
        let want: Vec<(String, String, Value)> = [("A", 9), ("B", 5), ("C", 7), ("D", 3), ("E", 4)]
            .iter()
            .map(|(s, q)| (s.to_string(), "L".to_owned(), json!(q)))
            .collect();
        assert_eq!(rows, want, "-w {w}: snapshot/atp.jsonl (sku, loc, on_hand)");
    }
}

/// Two inputs with the same base name are an error naming both paths.
#[test]
fn duplicate_base_names_are_rejected() {
    let tmp = tempdir();
    let mut files = Vec::new();
    for d in ["d1", "d2"] {
        let dir = tmp.path().join(d);
        std::fs::create_dir(&dir).unwrap();
        let f = dir.join("a.jsonl");
        std::fs::write(&f, "{\"type\":\"receipt\",\"ts\":1000,\"sku\":\"A\",\"loc\":\"L\",\"qty\":1}\n").unwrap();
        files.push(f);
    }
    let out = tmp.path().join("out");
    let r = replay(&files, &out, &[]);
    assert!(!r.success() && !r.timed_out, "duplicate base names accepted:\n{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
    let err = r.stderr_str();
    assert!(err.contains("a.jsonl"), "stderr does not name a.jsonl:\n{}", r.describe());
    for f in &files {
        assert!(err.contains(&f.display().to_string()), "stderr does not name {}:\n{}", f.display(), r.describe());
    }

    // The same directory twice is the same clash.
    let dir: PathBuf = tmp.path().join("d1");
    let r = replay(&[&dir, &dir], &tmp.path().join("out2"), &[]);
    assert!(!r.success() && !r.timed_out, "same directory twice accepted:\n{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
    assert!(r.stderr_str().contains("a.jsonl"), "{}", r.describe());
}

/// A missing input is an error naming the path, not a panic.
#[test]
fn missing_input_is_an_error() {
    let tmp = tempdir();
    let missing = tmp.path().join("no-such-input.jsonl");
    let r = replay(&[&missing], &tmp.path().join("out"), &[]);
    assert!(!r.success() && !r.timed_out, "missing input accepted:\n{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
    assert!(
        r.stderr_str().contains(&missing.display().to_string()),
        "stderr does not name {}:\n{}",
        missing.display(),
        r.describe()
    );
}

/// `--until` as RFC 3339 equals the same instant in milliseconds.
#[test]
fn until_accepts_rfc3339() {
    // 1700000000 s is 2023-11-14T22:13:20Z, so 1700000030000 ms is 22:13:50Z.
    let ms = "1700000030000";
    let input = fixtures_dir().join("window").join("input");
    let tmp = tempdir();
    let base = tmp.path().join("ms");
    let r = replay(&[&input], &base, &["--until", ms, "--tick-ms", "5000"]);
    assert!(r.success(), "{}", r.describe());
    let as_of = read_json(&base.join("summary.json"))["as_of"].clone();
    assert_eq!(as_of, json!(1700000030000u64), "summary as_of with --until {ms}");

    let mut failures = Vec::new();
    for (i, t) in [
        "2023-11-14T22:13:50Z",
        "2023-11-14t22:13:50.0009z", // lower-case T/Z; sub-millisecond fraction truncated
        "2023-11-14T23:43:50+01:30", // offsets
        "2023-11-14T22:13:50.000-00:00",
    ]
    .iter()
    .enumerate()
    {
        let out = tmp.path().join(format!("rfc{i}"));
        let r = replay(&[&input], &out, &["--until", t, "--tick-ms", "5000"]);
        if !r.success() {
            failures.push(format!("--until {t} failed:\n{}", r.describe()));
        } else if let Err(d) = compare_dirs_bytes(&base, &out) {
            failures.push(format!("--until {t} differs from --until {ms}: {d}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every command, every subcommand: `-h` and `--help` print help on stdout and exit 0.
#[test]
fn help_prints_everywhere() {
    let commands: &[&[&str]] = &[
        &[],
        &["replay"],
        &["run"],
        &["batch"],
        &["explain"],
        &["gen"],
        &["produce"],
        &["consume"],
        &["config"],
        &["config", "check"],
        &["checkpoint"],
        &["checkpoint", "show"],
    ];
    let mut failures = Vec::new();
    for command in commands {
        for flag in ["-h", "--help"] {
            let r = run(command.iter().copied().chain([flag]));
            let usage = format!("Usage: stockflow{}", command.iter().map(|c| format!(" {c}")).collect::<String>());
            if !r.success() || !r.stdout_str().contains(&usage) || !r.stderr.is_empty() {
                failures.push(r.describe());
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    // The hostfile has a long flag only, and the help says where the formats are documented.
    let r = run(["replay", "--help"]);
    assert!(
        r.stdout_str().contains("--hostfile <FILE>") && !r.stdout_str().contains("-h, --hostfile"),
        "{}",
        r.describe()
    );
    assert!(r.stdout_str().contains("docs/format.md") && !r.stdout_str().contains("SPEC"), "{}", r.describe());
}

/// `-h FILE`, the old hostfile flag, is refused with the flag to write instead — not taken for
/// help (which would exit 0 without starting the cluster) — and a missing hostfile is named.
#[test]
fn the_old_hostfile_flag_names_the_new_one() {
    let tmp = tempdir();
    let hosts = tmp.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1:2101\n127.0.0.1:2102\n").unwrap();
    let hosts = hosts.to_str().unwrap();
    let input = fixtures_dir().join("basic").join("input");
    let out = tmp.path().join("out");
    for extra in [&["-n", "2", "-p", "1", "-h", hosts][..], &["-h", hosts], &["-n", "2", "-h", "nosuchfile"]] {
        let r = replay(&[&input], &out, extra);
        assert!(!r.success() && !r.panicked(), "{extra:?} accepted:\n{}", r.describe());
        let expected =
            format!("-h prints help; the hostfile flag is --hostfile: write --hostfile {}", extra.last().unwrap());
        assert!(r.stderr_str().contains(&expected), "{}", r.describe());
        assert!(r.stdout.is_empty() && !out.exists(), "{}", r.describe());
    }
    let r = replay(&[&input], &out, &["-n", "2", "-p", "1", "--hostfile", "nosuchfile"]);
    assert!(!r.success() && r.stderr_str().contains("--hostfile nosuchfile: No such file"), "{}", r.describe());
    let r = run(["run", "--topics", "t", "-n", "3", "--hostfile", hosts]);
    assert!(!r.success() && r.stderr_str().contains("2 host:port lines for -n 3 processes"), "{}", r.describe());
    let r = replay(&[&input], &out, &["-n", "2", "-p", "2"]);
    assert!(
        r.stderr_str().contains("-p 2 is not a process of -n 2: processes are numbered 0 to 1"),
        "{}",
        r.describe()
    );
}

/// The part of a clap error after the flag and value: what every command says about a value.
fn value_message(r: &RunOutput, flag: &str) -> String {
    let err = r.stderr_str();
    let at = err.find(flag).unwrap_or_else(|| panic!("{flag} not in:\n{}", r.describe()));
    let line = err[at..].lines().next().unwrap();
    line[line.find("': ").expect("clap's value error") + 3..].to_string()
}

/// A time without a zone, a date alone or a near miss is refused with its corrected form and the
/// forms that work, in the same words by every command (and by a config file, tests/config.rs).
#[test]
fn times_say_which_forms_work_in_every_command() {
    let input = fixtures_dir().join("basic").join("input");
    let input = input.to_str().unwrap();
    let forms = "a time is milliseconds since the epoch (1700000030000) or an RFC 3339 date-time with seconds and a \
                 zone (2023-11-14T22:13:50Z, 2023-11-14T23:13:50.250+01:00)";
    for (typed, says) in [
        (
            "2023-11-14T22:13:50",
            "no time zone; write 2023-11-14T22:13:50Z for UTC (or an offset such as +01:00 in place of Z)",
        ),
        ("2023-11-14", "a date without a time of day; write 2023-11-14T00:00:00Z for midnight UTC"),
        ("2023-11-14 22:13:50Z", "a space where the T goes; write 2023-11-14T22:13:50Z"),
        ("2023-11-14T22:13", "no seconds and no time zone; write 2023-11-14T22:13:00Z for UTC"),
        ("2023-02-30T00:00:00Z", "no such date or time"),
        ("-5", "times start at 1970-01-01T00:00:00Z (0)"),
    ] {
        let runs = [
            run(["replay", input, "--out", "-", "--until", typed]),
            run(["batch", "--topics", "t", "--until", typed]),
            run(["explain", input, "--sku", "A", "--loc", "S1", "--until", typed]),
        ];
        let explain_at = run(["explain", input, "--sku", "A", "--loc", "S1", "--at", typed]);
        let start = run(["run", "--topics", "t", "--start", typed]);
        let first = value_message(&runs[0], &format!("'{typed}' for '--until <TIME>'"));
        assert!(first.starts_with(says) && first.ends_with(forms), "{typed}: {first}");
        for r in &runs {
            assert!(!r.success() && !r.panicked(), "{}", r.describe());
            assert_eq!(value_message(r, &format!("'{typed}' for '--until <TIME>'")), first, "{}", r.describe());
        }
        assert_eq!(value_message(&explain_at, "--at <TIME>"), first, "{}", explain_at.describe());
        assert!(value_message(&start, "--start").ends_with(forms), "{}", start.describe());
    }
}

/// Durations take units wherever a duration is asked, a bare number is the flag's unit, and a
/// negative one is explained rather than taken for a flag.
#[test]
fn durations_take_units_and_negative_numbers_are_explained() {
    let input = fixtures_dir().join("medium").join("input");
    let tmp = tempdir();
    let by_numbers = tmp.path().join("numbers");
    let r = replay(&[&input], &by_numbers, &["--tick-ms", "500", "--lateness-ms", "200", "-q"]);
    assert!(r.success(), "{}", r.describe());
    let by_units = tmp.path().join("units");
    let r = replay(&[&input], &by_units, &["--tick-ms", "500ms", "--lateness-ms", "200ms", "-q"]);
    assert!(r.success(), "{}", r.describe());
    compare_dirs_bytes(&by_numbers, &by_units).unwrap();
    let seconds = tmp.path().join("seconds");
    let r = replay(&[&input], &seconds, &["--tick-ms", "1s", "-q"]);
    let thousand = tmp.path().join("thousand");
    let r2 = replay(&[&input], &thousand, &["--tick-ms", "1000", "-q"]);
    assert!(r.success() && r2.success(), "{}\n{}", r.describe(), r2.describe());
    compare_dirs_bytes(&thousand, &seconds).unwrap();

    let input = input.to_str().unwrap();
    for args in [
        vec!["replay", input, "--out", "-", "--tick-ms", "-5"],
        vec!["replay", input, "--out", "-", "--lateness-ms", "-5"],
        vec!["run", "--topics", "t", "--idle-ms", "-5"],
        vec!["run", "--topics", "t", "--metadata-refresh-ms", "-5"],
        vec!["replay", input, "--out", "-", "--metrics-linger-secs", "-5"],
    ] {
        let r = run(&args);
        let err = r.stderr_str();
        assert!(!r.success() && !err.contains("-- -5"), "{}", r.describe());
        assert!(
            err.contains("'-5'")
                && err.contains(
                    "a duration cannot be negative; a duration is a whole number with a unit (500ms, 2s, 5m, 1h)"
                ),
            "{}",
            r.describe()
        );
    }
    let r = run(["replay", input, "--out", "-", "--tick-ms", "0"]);
    assert!(r.stderr_str().contains("a tick is at least 1ms"), "{}", r.describe());
    let r = run(["replay", input, "--out", "-", "--tick-ms", "1.5s"]);
    assert!(r.stderr_str().contains("whole numbers only (write 1500ms)"), "{}", r.describe());
    let r = run(["replay", input, "--out", "-", "--metrics-linger-secs", "500ms"]);
    assert!(r.stderr_str().contains("not a whole number of seconds"), "{}", r.describe());
    let r = run(["replay", input, "--out", "-", "-w", "-1"]);
    assert!(
        !r.stderr_str().contains("-- -1") && r.stderr_str().contains("expected a whole number, 1 or more"),
        "{}",
        r.describe()
    );
    let r = run(["run", "--topics", "t", "--checkpoint-every", "5min"]);
    assert!(
        r.stderr_str().contains("a number of ticks above 0 (600) or a duration above 0 (30s, 5m, 1h)"),
        "{}",
        r.describe()
    );
    let r = run(["run", "--topics", "t", "--start", "earlest"]);
    assert!(r.stderr_str().contains("did you mean earliest?"), "{}", r.describe());
}
