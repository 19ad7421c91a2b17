//! Multi-process runs on localhost: `fixtures/medium` replayed by a 2-process
//! timely cluster (1 and 2 workers each) must write, from process 0, exactly
//! the bytes of a single-process run (SPEC §4, determinism).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::*;

const CASE: &str = "medium";
/// Time limit for the two processes of one cluster run.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a peer may outlive a failed partner before it is killed.
const GRACE: Duration = Duration::from_secs(10);

/// Two distinct free ports on 127.0.0.1 (bound together, then released).
fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    [a.local_addr().unwrap().port(), b.local_addr().unwrap().port()]
}

/// Whether a failed run looks like a lost race for a port.
fn port_race(runs: &[RunOutput]) -> bool {
    runs.iter().any(|r| {
        let e = r.stderr_str().to_lowercase();
        !r.success()
            && (e.contains("address already in use")
                || e.contains("addrinuse")
                || e.contains("os error 98")
                || e.contains("bind"))
    })
}

/// One attempt: both processes of a 2-process cluster with `workers` each.
fn cluster_attempt(dir: &Path, workers: &str) -> Vec<RunOutput> {
    let [p0, p1] = free_ports();
    let hostfile = dir.join("hosts.txt");
    std::fs::write(&hostfile, format!("127.0.0.1:{p0}\n127.0.0.1:{p1}\n")).unwrap();
    let _ = std::fs::remove_dir_all(dir.join("out0"));
    let _ = std::fs::remove_dir_all(dir.join("out1"));
    let input = fixtures_dir().join(CASE).join("input");
    let opts = case_options(CASE);
    let children = (0..2)
        .map(|p| {
            let out = dir.join(format!("out{p}"));
            let mut extra: Vec<String> =
                vec!["-n".into(), "2".into(), "-p".into(), p.to_string(), "--hostfile".into(), hostfile.display().to_string()];
            extra.extend(opts.iter().cloned());
            extra.extend(["-w".into(), workers.into()]);
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            spawn(replay_args(&[&input], &out, &extra))
        })
        .collect();
    wait_all(children, CLUSTER_TIMEOUT, GRACE)
}

fn check_cluster(workers: &str) {
    let tmp = tempdir();
    let mut runs = cluster_attempt(tmp.path(), workers);
    if port_race(&runs) {
        eprintln!("cluster run failed, probably a port race; retrying with new ports");
        runs = cluster_attempt(tmp.path(), workers);
    }
    for (p, r) in runs.iter().enumerate() {
        assert!(
            r.success(),
            "cluster process {p} of 2 (-w {workers}) failed:\n{}\n\nthe other process:\n{}",
            r.describe(),
            runs[1 - p].describe()
        );
    }
    let out0 = tmp.path().join("out0");
    let out1 = tmp.path().join("out1");
    let written_by_1 = list_files(&out1);
    assert!(written_by_1.is_empty(), "process 1 wrote into its --out dir (only process 0 writes): {written_by_1:?}");

    let single = tmp.path().join("single");
    replay_case(CASE, &single, &["-w", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    if let Err(d) = compare_outputs(&fixtures_dir().join(CASE).join("expected"), &out0, false) {
        failures.push(format!("cluster output differs from fixtures/{CASE}/expected:\n{d}"));
    }
    if let Err(d) = compare_dirs_bytes(&single, &out0) {
        failures.push(format!("2 processes x {workers} workers vs 1 process x 1 worker not byte-identical: {d}"));
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn two_processes_one_worker_each() {
    check_cluster("1");
}

#[test]
fn two_processes_two_workers_each() {
    check_cluster("2");
}
