//! `stockflow explain`: golden explanations (tests/explain/*, byte for byte), the numbers of an
//! explanation against the snapshot of the same replay, `--at` against the change streams, and
//! the errors a user can act on.
//!
//! Regenerate the golden files after an intended change of the text with
//! `STOCKFLOW_BLESS=1 cargo test --release --test explain`, and review the diff.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// (golden file, fixture case, sku, loc, extra arguments after the case's options).
const GOLDEN: &[(&str, &str, &str, &str, &[&str])] = &[
    ("basic.A.ST1.txt", "basic", "A", "ST1", &[]),
    ("basic.A.ST2.txt", "basic", "A", "ST2", &[]),
    ("basic.A.DC1.txt", "basic", "A", "DC1", &[]),
    ("basic.A.DC1.at-5000.txt", "basic", "A", "DC1", &["--at", "5000"]),
    ("basic.A.ST1.json", "basic", "A", "ST1", &["--json"]),
    ("allocation.B.S3.txt", "allocation", "B", "S3", &[]),
    ("allocation.B.DC9.txt", "allocation", "B", "DC9", &[]),
    ("allocation.B.DC9.at-2000.txt", "allocation", "B", "DC9", &["--at", "2000"]),
    ("allocation.B.S2.txt", "allocation", "B", "S2", &[]),
    ("late_and_bad.C.L1.txt", "late_and_bad", "C", "L1", &[]),
    ("medium.SKU00008.ST0003.txt", "medium", "SKU00008", "ST0003", &[]),
    ("medium.SKU00008.DC00.txt", "medium", "SKU00008", "DC00", &[]),
    ("window.SKU00001.ST0001.txt", "window", "SKU00001", "ST0001", &[]),
];

fn golden_dir() -> PathBuf {
    repo_root().join("tests").join("explain")
}

/// `stockflow explain <case input> <case options> --sku S --loc L EXTRA...`.
fn explain(case: &str, sku: &str, loc: &str, extra: &[&str]) -> RunOutput {
    let mut args: Vec<String> = vec!["explain".into(), fixtures_dir().join(case).join("input").display().to_string()];
    args.extend(case_options(case));
    args.extend(["--sku".into(), sku.into(), "--loc".into(), loc.into()]);
    args.extend(extra.iter().map(|a| a.to_string()));
    run(args)
}

fn explain_json(case: &str, sku: &str, loc: &str, extra: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(extra);
    let r = explain(case, sku, loc, &all);
    assert!(r.success(), "{}", r.describe());
    serde_json::from_slice(&r.stdout).unwrap_or_else(|e| panic!("explain --json is not JSON: {e}\n{}", r.describe()))
}

#[test]
fn explanations_match_the_golden_files() {
    let bless = std::env::var_os("STOCKFLOW_BLESS").is_some();
    let mut failures = Vec::new();
    for (file, case, sku, loc, extra) in GOLDEN {
        let r = explain(case, sku, loc, extra);
        if !r.success() {
            failures.push(format!("{file}: explain failed:\n{}", r.describe()));
            continue;
        }
        let path = golden_dir().join(file);
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &r.stdout).unwrap();
            continue;
        }
        match std::fs::read(&path) {
            Ok(expected) => {
                if let Some(d) = first_difference(&expected, &r.stdout) {
                    failures.push(format!("{file} (left: expected, right: actual): {d}"));
                }
            }
            Err(e) => failures.push(format!("{}: {e} (create it with STOCKFLOW_BLESS=1)", path.display())),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every golden file is produced by an entry of GOLDEN (none is left behind unchecked).
#[test]
fn every_golden_file_is_checked() {
    let listed: Vec<&str> = GOLDEN.iter().map(|g| g.0).collect();
    for entry in std::fs::read_dir(golden_dir()).expect("tests/explain/") {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(listed.contains(&name.as_str()), "tests/explain/{name} is not in GOLDEN");
    }
}

/// The keys of a snapshot: ATP rows and order-line dests, sorted.
fn snapshot_keys(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut keys = std::collections::BTreeSet::new();
    for row in read_jsonl(&dir.join("snapshot/atp.jsonl")) {
        keys.insert((row["sku"].as_str().unwrap().to_string(), row["loc"].as_str().unwrap().to_string()));
    }
    for line in read_jsonl(&dir.join("snapshot/order_plan.jsonl")) {
        keys.insert((line["sku"].as_str().unwrap().to_string(), line["dest"].as_str().unwrap().to_string()));
    }
    keys.into_iter().collect()
}

fn atp_fields(row: &Value) -> Vec<i64> {
    ["on_hand", "reserved", "on_order", "available", "atp", "position"]
        .iter()
        .map(|f| row[f].as_i64().unwrap_or_else(|| panic!("{f} missing in {row}")))
        .collect()
}

/// The numbers an explanation prints are the snapshot's of the same replay, and every
/// input-derived total and formula agrees with them.
#[test]
fn explained_numbers_equal_the_snapshot_of_the_same_replay() {
    let mut failures = Vec::new();
    let mut explained = 0;
    for case in case_names() {
        let tmp = tempdir();
        let out = tmp.path().join("out");
        replay_case(&case, &out, &[]).unwrap();
        let atp: BTreeMap<(String, String), Value> = read_jsonl(&out.join("snapshot/atp.jsonl"))
            .into_iter()
            .map(|r| ((r["sku"].as_str().unwrap().into(), r["loc"].as_str().unwrap().into()), r))
            .collect();
        let plan: BTreeMap<(String, String), Value> = read_jsonl(&out.join("snapshot/order_plan.jsonl"))
            .into_iter()
            .map(|r| ((r["sku"].as_str().unwrap().into(), r["dest"].as_str().unwrap().into()), r))
            .collect();
        let low: BTreeMap<(String, String), String> = read_jsonl(&out.join("snapshot/low_stock.jsonl"))
            .into_iter()
            .map(|r| ((r["sku"].as_str().unwrap().into(), r["loc"].as_str().unwrap().into()), r["state"].as_str().unwrap().to_string()))
            .collect();
        let mut keys = snapshot_keys(&out);
        // Large cases: a spread of keys, not all of them, to keep the suite quick.
        let step = keys.len().div_ceil(24).max(1);
        keys = keys.into_iter().step_by(step).collect();
        for (sku, loc) in keys {
            let e = explain_json(&case, &sku, &loc, &[]);
            explained += 1;
            let key = (sku.clone(), loc.clone());
            let whom = format!("{case} {sku}@{loc}");
            match (atp.get(&key), e["engine"]["atp"].is_null()) {
                (Some(row), false) => {
                    if atp_fields(row) != atp_fields(&e["engine"]["atp"]) {
                        failures.push(format!("{whom}: atp {} vs snapshot {row}", e["engine"]["atp"]));
                    }
                }
                (None, true) => {}
                (row, _) => failures.push(format!("{whom}: atp {} vs snapshot {row:?}", e["engine"]["atp"])),
            }
            let line = &e["engine"]["order_line"];
            match plan.get(&key) {
                Some(p) => {
                    for f in ["source", "requested", "qty"] {
                        if line[f] != p[f] {
                            failures.push(format!("{whom}: order line {line} vs snapshot {p}"));
                        }
                    }
                }
                None if !line.is_null() => failures.push(format!("{whom}: order line {line}, none in the snapshot")),
                None => {}
            }
            let state = low.get(&key).map_or("OK", String::as_str);
            if e["engine"]["low_stock"].as_str() != Some(state) {
                failures.push(format!("{whom}: low stock {} vs snapshot {state}", e["engine"]["low_stock"]));
            }
            let as_of = read_json(&out.join("summary.json"))["as_of"].clone();
            if e["as_of"] != as_of {
                failures.push(format!("{whom}: as_of {} vs summary {as_of}", e["as_of"]));
            }
            for check in e["checks"].as_array().unwrap() {
                if check["ok"] != Value::Bool(true) {
                    failures.push(format!("{whom}: check failed: {check}"));
                }
            }
        }
    }
    assert!(explained > 50, "only {explained} keys explained");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// `--at T` explains the state at T: the change streams of the full replay folded up to T.
#[test]
fn at_time_equals_the_change_streams_folded_up_to_it() {
    let case = "medium";
    let at: u64 = 1_700_000_030_000; // a multiple of the case's 500 ms tick
    let tmp = tempdir();
    let out = tmp.path().join("out");
    replay_case(case, &out, &[]).unwrap();
    let mut atp: BTreeMap<(String, String), Value> = BTreeMap::new();
    for r in read_jsonl(&out.join("atp.jsonl")) {
        if r["ts"].as_u64().unwrap() > at {
            break;
        }
        let key = (r["sku"].as_str().unwrap().to_string(), r["loc"].as_str().unwrap().to_string());
        if r.get("deleted").is_some() {
            atp.remove(&key);
        } else {
            atp.insert(key, r);
        }
    }
    let mut plan: BTreeMap<(String, String), Value> = BTreeMap::new();
    for r in read_jsonl(&out.join("order_plan.jsonl")) {
        if r["ts"].as_u64().unwrap() > at {
            break;
        }
        let key = (r["sku"].as_str().unwrap().to_string(), r["dest"].as_str().unwrap().to_string());
        if r.get("deleted").is_some() {
            plan.remove(&key);
        } else {
            plan.insert(key, r);
        }
    }
    let keys: Vec<(String, String)> = atp.keys().step_by(atp.len().div_ceil(10)).cloned().collect();
    assert!(keys.len() >= 5);
    for (sku, loc) in keys {
        let e = explain_json(case, &sku, &loc, &["--at", &at.to_string()]);
        assert_eq!(e["as_of"].as_u64(), Some(at));
        let key = (sku.clone(), loc.clone());
        assert_eq!(atp_fields(&e["engine"]["atp"]), atp_fields(&atp[&key]), "{sku}@{loc} at {at}");
        match plan.get(&key) {
            Some(p) => assert_eq!(e["engine"]["order_line"]["qty"], p["qty"], "{sku}@{loc} at {at}"),
            None => assert!(e["engine"]["order_line"].is_null(), "{sku}@{loc} at {at}: {}", e["engine"]["order_line"]),
        }
        for check in e["checks"].as_array().unwrap() {
            assert_eq!(check["ok"], Value::Bool(true), "{sku}@{loc} at {at}: {check}");
        }
    }
}

/// The text does not depend on the number of workers.
#[test]
fn explanation_is_the_same_at_any_worker_count() {
    let one = explain("medium", "SKU00008", "DC00", &["-w", "1"]);
    let three = explain("medium", "SKU00008", "DC00", &["-w", "3"]);
    assert!(one.success() && three.success(), "{}\n{}", one.describe(), three.describe());
    assert_eq!(first_difference(&one.stdout, &three.stdout), None);
}

#[test]
fn errors_say_what_to_do() {
    let r = explain("window", "SKU00001", "ST0001", &["--at", "1700000040000"]);
    assert!(!r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains("--at 1700000040000 lies after --until"), "{}", r.describe());
    let r = explain("basic", "A", "ST1", &["--at", "yesterday"]);
    assert!(!r.success());
    assert!(r.stderr_str().contains("invalid value 'yesterday' for '--at <TIME>': not a time"), "{}", r.describe());
    let r = run(["explain", "no/such/dir", "--sku", "A", "--loc", "B"]);
    assert!(!r.success());
    assert!(r.stderr_str().contains("no/such/dir cannot be read"), "{}", r.describe());
    assert!(!r.panicked(), "{}", r.describe());
}

/// A key no message names is a mistake to point out, not an explanation of zeros with every
/// check `ok`: the error names the key, what the input does name around it, and the closest
/// keys, and the exit status says it failed.
#[test]
fn a_key_no_message_names_is_refused_with_the_closest_keys() {
    let r = explain("basic", "b", "s3", &[]);
    assert!(!r.success() && !r.panicked(), "{}", r.describe());
    assert!(r.stdout.is_empty(), "nothing on stdout: {}", r.describe());
    let err = r.stderr_str();
    assert!(err.contains(r#"no message in the input names sku "b" at loc "s3""#), "{}", r.describe());
    assert!(err.contains(r#"no message names sku "b"; no message names loc "s3""#), "{}", r.describe());
    assert!(
        err.contains("the closest keys in the input: --sku A --loc ST1, --sku A --loc ST2, --sku A --loc DC1"),
        "{}",
        r.describe()
    );
    // The sku exists elsewhere: its locations are listed; so are the skus at an existing loc.
    let r = explain("basic", "A", "S9", &["--json"]);
    assert!(!r.success() && r.stdout.is_empty(), "{}", r.describe());
    assert!(r.stderr_str().contains(r#"sku "A" is named at 3 other location(s): DC1, ST1, ST2"#), "{}", r.describe());
    let r = explain("allocation", "Z", "S3", &[]);
    assert!(!r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains(r#"loc "S3" is named with 1 other sku(s): B"#), "{}", r.describe());
    assert!(r.stderr_str().contains("the closest keys in the input: --sku B --loc S3"), "{}", r.describe());
    // A key whose messages all lie after the window is real: its (empty) state is explained.
    let r = explain("basic", "A", "ST2", &["--at", "500"]);
    assert!(r.success(), "{}", r.describe());
    assert!(r.stdout_str().contains("no stock messages for this key"), "{}", r.describe());
}
