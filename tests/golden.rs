//! Golden files: every `fixtures/<case>` replayed with its `options.txt` at 1
//! and 3 workers, compared with `expected/` on SPEC's fields, and the two runs
//! compared with each other byte for byte (determinism, SPEC §4).

mod common;

use common::*;
use std::time::Duration;

/// Replays `case` at -w 1 and -w 3; returns every failure found.
fn check_case(case: &str) -> Result<(), String> {
    let expected = fixtures_dir().join(case).join("expected");
    let tmp = tempdir();
    let mut failures = Vec::new();
    let mut outs = Vec::new();
    for w in ["1", "3"] {
        let out = tmp.path().join(format!("w{w}"));
        match replay_case(case, &out, &["-w", w]) {
            Ok(_) => {
                if let Err(d) = compare_outputs(&expected, &out, false) {
                    failures.push(format!("{case} (-w {w}) differs from fixtures/{case}/expected:\n{d}"));
                }
                outs.push(out);
            }
            Err(e) => failures.push(format!("{case} (-w {w}): {e}")),
        }
    }
    if let [w1, w3] = &outs[..] {
        if let Err(d) = compare_dirs_bytes(w1, w3) {
            failures.push(format!("{case}: -w 1 and -w 3 outputs are not byte-identical: {d}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

macro_rules! golden {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Err(e) = check_case(stringify!($name)) {
                    panic!("\n{e}");
                }
            }
        )*
        const LISTED: &[&str] = &[$(stringify!($name)),*];
    };
}

golden!(allocation, basic, late_and_bad, medium, ties, window);

/// A case added to `fixtures/` must get its own test above.
#[test]
fn every_fixture_case_has_a_test() {
    let missing: Vec<String> = case_names().into_iter().filter(|c| !LISTED.contains(&c.as_str())).collect();
    assert!(
        missing.is_empty(),
        "fixtures without a golden test (add them to golden!(...) in tests/golden.rs): {missing:?}"
    );
    for c in LISTED {
        assert!(fixtures_dir().join(c).join("expected").is_dir(), "fixtures/{c}/expected is missing");
    }
}

/// `--out -` prints the final snapshot on stdout and writes no directory.
#[test]
fn out_dash_prints_snapshot_on_stdout() {
    let tmp = tempdir();
    let input = fixtures_dir().join("basic").join("input");
    let args = replay_args(&[input], std::path::Path::new("-"), &[]);
    // Run inside an empty directory so that a stray `./-` output dir is visible.
    let r = wait_all(vec![spawn_in(tmp.path(), args)], RUN_TIMEOUT, Duration::ZERO).pop().unwrap();
    assert!(r.success(), "replay fixtures/basic/input --out - failed:\n{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
    assert!(!tmp.path().join("-").exists(), "--out - created a directory named '-'");
    let stdout = r.stdout_str();

    // Every JSON object printed (at any nesting depth, whatever the envelope).
    let mut objects = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<serde_json::Map<String, serde_json::Value>>) {
        match v {
            serde_json::Value::Object(m) => {
                out.push(m.clone());
                m.values().for_each(|x| collect(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
            _ => {}
        }
    }
    for line in stdout.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            collect(&v, &mut objects);
        }
    }
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&stdout) {
        collect(&v, &mut objects);
    }
    let snap = fixtures_dir().join("basic/expected/snapshot");
    let mut missing = Vec::new();
    for file in ["atp.jsonl", "low_stock.jsonl", "order_plan.jsonl", "network_atp.jsonl"] {
        for row in read_jsonl(&snap.join(file)) {
            let row = row.as_object().unwrap().clone();
            let found = objects.iter().any(|o| row.iter().all(|(k, v)| o.get(k) == Some(v)));
            if !found {
                missing.push(format!("{file}: {}", serde_json::Value::Object(row)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "--out - stdout lacks snapshot rows of fixtures/basic:\n  {}\nstdout (head):\n{}",
        missing.join("\n  "),
        head(&stdout, 20, 3000)
    );
    // The DC1 row explicitly (the brief's example).
    assert!(
        objects.iter().any(|o| o.get("loc") == Some(&"DC1".into())
            && o.get("on_hand") == Some(&64.into())
            && o.get("atp") == Some(&54.into())
            && o.get("position") == Some(&28.into())),
        "no DC1 atp row (on_hand 64, atp 54, position 28) on stdout"
    );
}
