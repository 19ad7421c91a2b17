//! Tests of `stockflow gen`, the workload generator: determinism, strict validity of every
//! clean line, a plausible message mix, bad lines that replay rejects without losing count,
//! and replays of a generated network that do not depend on the worker count.

use dataflows::model::Name;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use dataflows::decode::decode;
use dataflows::model::{Body, PoStatus};
use serde_json::Value;

const START: u64 = 1_700_000_000_000;

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stockflow"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("stockflow-gen-test-").tempdir().expect("create a temporary directory")
}

/// Runs `stockflow gen --out DIR --quiet ARGS...`; panics with its stderr when it fails.
fn gen(dir: &Path, args: &[&str]) {
    let out = Command::new(bin())
        .arg("gen")
        .arg("--out")
        .arg(dir)
        .arg("--quiet")
        .args(args)
        .output()
        .expect("run stockflow gen");
    assert!(out.status.success(), "stockflow gen {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn replay(input: &Path, out: &Path, extra: &[&str]) {
    let res = Command::new(bin())
        .arg("replay")
        .arg(input)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("run stockflow replay");
    assert!(res.status.success(), "stockflow replay {extra:?} failed: {}", String::from_utf8_lossy(&res.stderr));
}

/// The `*.jsonl` files of a directory, sorted by name, with their bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("read the generated directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

/// Every file under `dir` (recursively), keyed by its path relative to `dir`.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, acc: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, acc);
            } else {
                acc.insert(path.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&path).unwrap());
            }
        }
    }
    let mut acc = BTreeMap::new();
    walk(dir, dir, &mut acc);
    acc
}

fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let (a, b, c) = (tempdir(), tempdir(), tempdir());
    let args = [
        "--skus",
        "40",
        "--stores",
        "8",
        "--events",
        "30000",
        "--partitions",
        "3",
        "--disorder",
        "0.02",
        "--bad",
        "0.01",
    ];
    gen(a.path(), &[&args[..], &["--seed", "7"]].concat());
    gen(b.path(), &[&args[..], &["--seed", "7"]].concat());
    gen(c.path(), &[&args[..], &["--seed", "8"]].concat());
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert_eq!(fa.keys().collect::<Vec<_>>(), ["part-00.jsonl", "part-01.jsonl", "part-02.jsonl"]);
    assert!(fa.values().all(|f| !f.is_empty()), "every partition gets messages");
    assert!(fa == fb, "the same seed must give byte-identical files");
    assert_eq!(fa.keys().collect::<Vec<_>>(), fc.keys().collect::<Vec<_>>());
    assert!(fa != fc, "another seed must give another workload");
}

#[derive(Default, Debug)]
struct Mix {
    sale: usize,
    ret: usize,
    receipt_store: usize,
    receipt_dc: usize,
    adjust: usize,
    count_later: usize,
    reserve: usize,
    release: usize,
    fulfill: usize,
    po_open: usize,
    po_closed: usize,
    policy_later: usize,
}

#[test]
fn clean_workload_decodes_and_looks_like_retail() {
    let dir = tempdir();
    let (skus, stores, dcs, events) = (30u32, 12u32, 3u32, 60_000usize);
    gen(
        dir.path(),
        &["--skus", "30", "--stores", "12", "--dcs", "3", "--events", "60000", "--partitions", "4", "--seed", "3"],
    );
    let mut mix = Mix::default();
    let mut start_policies: BTreeMap<(Name, Name), Option<Name>> = BTreeMap::new();
    let mut start_counts = BTreeSet::new();
    let mut partition_of: HashMap<(Name, Name), String> = HashMap::new();
    let mut reserved: HashMap<Name, (Name, Name)> = HashMap::new();
    let mut total = 0;
    for (name, bytes) in files(dir.path()) {
        let mut last_ts = 0;
        for (i, line) in lines(&bytes).enumerate() {
            total += 1;
            let m = decode(line)
                .unwrap_or_else(|r| panic!("{name}:{}: rejected ({r}): {}", i + 1, String::from_utf8_lossy(line)));
            assert!(m.ts >= last_ts, "{name}:{}: ts goes back without --disorder", i + 1);
            last_ts = m.ts;
            let key = (m.sku.clone(), m.loc.clone());
            let home = partition_of.entry(key.clone()).or_insert_with(|| name.clone());
            assert_eq!(*home, name, "all messages of key {key:?} stay in one partition");
            let at_dc = m.loc.starts_with("DC");
            match m.body {
                Body::Sale { .. } => mix.sale += 1,
                Body::Return { .. } => mix.ret += 1,
                Body::Receipt { .. } if at_dc => mix.receipt_dc += 1,
                Body::Receipt { .. } => mix.receipt_store += 1,
                Body::Adjust { .. } => mix.adjust += 1,
                Body::Count { .. } if m.ts == START => assert!(start_counts.insert(key), "one starting count per key"),
                Body::Count { .. } => mix.count_later += 1,
                Body::Reserve { res_id, expires_at, .. } => {
                    mix.reserve += 1;
                    assert!(expires_at.is_none_or(|e| e == m.ts + 900_000), "holds last 15 minutes");
                    assert!(reserved.insert(res_id, key).is_none(), "res_ids are unique");
                }
                Body::Release { res_id } => {
                    mix.release += 1;
                    assert_eq!(reserved.get(&res_id), Some(&key), "a hold ends after its reserve, on its key");
                }
                Body::Fulfill { res_id, .. } => {
                    mix.fulfill += 1;
                    assert_eq!(reserved.get(&res_id), Some(&key), "a hold ends after its reserve, on its key");
                }
                Body::Po { status: PoStatus::Open, .. } => {
                    assert!(at_dc, "POs are at DCs");
                    mix.po_open += 1;
                }
                Body::Po { .. } => mix.po_closed += 1,
                Body::Policy(Some(p)) if m.ts == START => {
                    assert!(start_policies.insert(key, p.source).is_none(), "one starting policy per key")
                }
                Body::Policy(_) => mix.policy_later += 1,
            }
        }
    }
    let keys = (skus * (stores + dcs)) as usize;
    assert_eq!(total, events + 2 * keys, "setup (a policy and a count per key) plus --events messages");
    for s in 0..skus {
        for j in 0..stores {
            let key: (Name, Name) = (format!("K{s:06}").into(), format!("S{j:04}").into());
            assert_eq!(
                start_policies.get(&key),
                Some(&Some(Name::from(format!("DC{:02}", j % dcs)))),
                "policy of {key:?}"
            );
            assert!(start_counts.contains(&key), "starting count of {key:?}");
        }
        for d in 0..dcs {
            let key: (Name, Name) = (format!("K{s:06}").into(), format!("DC{d:02}").into());
            assert_eq!(
                start_policies.get(&key),
                Some(&Some(Name::from(format!("vendor:V{}", s % 7)))),
                "policy of {key:?}"
            );
            assert!(start_counts.contains(&key), "starting count of {key:?}");
        }
    }
    assert_eq!(start_policies.len(), keys);
    let share = |n: usize| n as f64 / events as f64;
    assert!((0.72..0.88).contains(&share(mix.sale)), "sales dominate: {mix:?}");
    assert!((0.01..0.06).contains(&share(mix.ret)), "returns: {mix:?}");
    assert!((0.01..0.04).contains(&share(mix.count_later)), "cycle counts: {mix:?}");
    assert!(mix.adjust > 0 && mix.policy_later > 0, "adjusts and policy updates: {mix:?}");
    assert!(share(mix.reserve) > 0.03, "holds: {mix:?}");
    assert!(mix.release > 0 && mix.fulfill > 0, "holds end: {mix:?}");
    assert!(mix.release + mix.fulfill < mix.reserve, "some holds are left to expire: {mix:?}");
    assert!(mix.receipt_store > 0 && mix.receipt_dc > 0, "receipts at stores and DCs: {mix:?}");
    assert!(mix.po_open > 0 && mix.po_closed > 0, "PO lifecycles: {mix:?}");
}

#[test]
fn bad_lines_are_rejected_and_counted_by_replay() {
    let (clean, dirty, out) = (tempdir(), tempdir(), tempdir());
    let args = ["--skus", "20", "--stores", "10", "--events", "20000", "--partitions", "3", "--disorder", "0.05"];
    gen(clean.path(), &args);
    gen(dirty.path(), &[&args[..], &["--bad", "0.01"]].concat());

    let (mut read, mut rejected) = (0u64, 0u64);
    for ((name, clean_bytes), (_, dirty_bytes)) in files(clean.path()).iter().zip(files(dirty.path()).iter()) {
        let mut kept = Vec::new();
        for line in lines(dirty_bytes) {
            read += 1;
            if decode(line).is_err() {
                rejected += 1;
            } else {
                kept.extend_from_slice(line);
                kept.push(b'\n');
            }
        }
        assert!(kept == *clean_bytes, "{name}: without its bad lines, the workload is the clean one");
    }
    assert!(rejected > 0, "--bad 0.01 writes bad lines");
    assert!((rejected as f64) < read as f64 * 0.02, "about 1% bad lines: {rejected} of {read}");

    replay(dirty.path(), out.path(), &[]);
    let summary: Value = serde_json::from_slice(&std::fs::read(out.path().join("summary.json")).unwrap()).unwrap();
    let n = |k: &str| summary[k].as_u64().unwrap_or_else(|| panic!("summary.{k} in {summary}"));
    assert_eq!(n("read"), n("applied") + n("rejected") + n("beyond_window"), "{summary}");
    assert_eq!(n("read"), read, "every non-blank line is read");
    assert_eq!(n("rejected"), rejected, "{summary}");
    assert!(n("late") > 0, "--disorder makes some messages late: {summary}");
}

#[test]
fn generated_network_replays_the_same_on_one_and_two_workers() {
    let (input, w1, w2) = (tempdir(), tempdir(), tempdir());
    gen(input.path(), &["--skus", "20", "--stores", "10", "--dcs", "2", "--events", "20000", "--partitions", "3"]);
    replay(input.path(), w1.path(), &["-w", "1"]);
    replay(input.path(), w2.path(), &["-w", "2"]);
    let (t1, t2) = (tree(w1.path()), tree(w2.path()));
    assert!(t1.contains_key(Path::new("snapshot/order_plan.jsonl")));
    assert_eq!(t1.keys().collect::<Vec<_>>(), t2.keys().collect::<Vec<_>>());
    for (path, bytes) in &t1 {
        assert!(bytes == &t2[path], "{} differs between -w 1 and -w 2", path.display());
    }
    let plan = String::from_utf8(t1[Path::new("snapshot/order_plan.jsonl")].clone()).unwrap();
    let sources: Vec<String> = plan
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["source"].as_str().unwrap().to_owned())
        .collect();
    assert!(sources.iter().any(|s| s.starts_with("DC")), "stores order on their DC: {plan}");
    assert!(sources.iter().any(|s| s.starts_with("vendor:")), "DCs order on vendors: {plan}");
    assert!(!t1[Path::new("atp.jsonl")].is_empty() && !t1[Path::new("low_stock.jsonl")].is_empty());
}

#[test]
fn unusable_output_directory_is_reported() {
    let dir = tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"").unwrap();
    let target = file.join("out");
    let res = Command::new(bin()).args(["gen", "--quiet", "--events", "10", "--out"]).arg(&target).output().unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("cannot create") && stderr.contains(&*target.to_string_lossy()), "{stderr}");
}
