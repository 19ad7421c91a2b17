//! Output directories are transactional (docs/operations.md, "Output directories"): a replay
//! killed at any moment, a full disk, a report that cannot be written leave `--out` holding the
//! previous complete result or the new complete one, never a mix; a second run on the same
//! `--out` is refused naming the first; `run` marks its directory running, then complete.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const SIGINT: i32 = 2;
const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0);
}

/// A generated input that takes a second or more to replay.
fn generated(dir: &Path) -> PathBuf {
    let input = dir.join("input");
    let args = ["gen", "--out", input.to_str().unwrap(), "--events", "150000", "--skus", "300", "--stores", "20"];
    let r = run([&args[..], &["--seed", "11", "-q"]].concat());
    assert!(r.success(), "{}", r.describe());
    input
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    list_files(dir).into_iter().map(|f| (f.clone(), std::fs::read(dir.join(&f)).unwrap())).collect()
}

/// The entries of `dir`, sorted (hidden ones included).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// `stockflow replay` succeeded.
fn replayed(r: RunOutput) -> RunOutput {
    assert!(r.success(), "{}", r.describe());
    r
}

#[test]
fn a_replay_killed_at_random_moments_leaves_the_previous_result_or_the_new_one() {
    let tmp = tempdir();
    let input = generated(tmp.path());
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    replayed(replay(&[&input], &old, &["-q"]));
    // The shorter of two runs: one slowed by a busy moment would put most kills after the end.
    let took = replayed(replay(&[&input], &new, &["-q", "--tick-ms", "700"])).elapsed;
    let again = replayed(replay(&[&input], &tmp.path().join("new-again"), &["-q", "--tick-ms", "700"])).elapsed;
    let took = took.min(again);
    let (old, new) = (contents(&old), contents(&new));
    assert_ne!(old, new, "the two results must differ for the test to tell them apart");
    let parent = tmp.path().join("target");
    let out = parent.join("out");
    replayed(replay(&[&input], &out, &["-q"]));

    let mut rng = Rng(19);
    let mut interrupted = 0;
    for round in 0..9 {
        let sig = [SIGTERM, SIGINT, SIGKILL][round % 3];
        let delay = Duration::from_millis(rng.range(0, took.as_millis() as i64 * 5 / 4) as u64);
        let running = spawn(replay_args(&[&input], &out, &["-q", "--tick-ms", "700"]));
        std::thread::sleep(delay);
        signal(running.pid(), sig);
        let r = wait_all(vec![running], RUN_TIMEOUT, Duration::ZERO).pop().unwrap();
        let now = contents(&out);
        // A signal after the outputs were put in place stops nothing that matters; a SIGKILL
        // there cannot say so.
        let finished = r.success()
            || r.stderr_str().contains("stopped after its outputs were complete and in place")
            || (sig == SIGKILL && now == new);
        eprintln!("round {round}: signal {sig} after {delay:?} of {took:?}: {}", if finished { "finished first" } else { "stopped" });
        assert!(
            now == if finished { new.clone() } else { old.clone() },
            "round {round}: signal {sig} after {delay:?} ({}) left out holding neither the previous result nor the new one alone:\n{}",
            if finished { "the run had finished" } else { "the run was stopped" },
            r.describe()
        );
        if finished {
            // The previous result again, for the next round to tell apart.
            replayed(replay(&[&input], &out, &["-q"]));
            continue;
        }
        interrupted += 1;
        let status = r.status.unwrap();
        if sig == SIGKILL {
            assert_eq!(status.signal(), Some(SIGKILL), "{}", r.describe());
            continue;
        }
        if status.signal() == Some(sig) {
            // Signalled before its handlers were installed: nothing had been written yet.
            assert!(r.stderr.is_empty(), "{}", r.describe());
            continue;
        }
        assert_eq!(status.code(), Some(128 + sig), "{}", r.describe());
        // One line (besides a lock taken over from the SIGKILL of the round before).
        let stderr = r.stderr_str();
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("taking the lock over")).collect();
        let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
        let expected =
            format!("stockflow: warning: {name}: replay stopped before its end; {} keeps its previous complete result", out.display());
        assert_eq!(lines, vec![expected.as_str()], "{}", r.describe());
        assert_eq!(entries(&parent), vec!["out"], "a stopped replay leaves nothing beside out");
    }
    assert!(interrupted >= 3, "only {interrupted} of 9 rounds were stopped before their end: the test proved little");
}

#[test]
fn a_full_disk_leaves_the_previous_result() {
    let tmp = tempdir();
    let (basic, medium) = (fixtures_dir().join("basic/input"), fixtures_dir().join("medium/input"));

    // A file-size limit: the first file past 16 KiB fails.
    let parent = tmp.path().join("limited");
    let out = parent.join("out");
    replayed(replay(&[&basic], &out, &["-q"]));
    let before = contents(&out);
    let r = with_file_size_limit(&replay_args(&[&medium], &out, &["-q"]), 16 << 10);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot write {}/", out.display())) && stderr.contains("File too large"), "{stderr}");
    assert!(stderr.contains(&format!("{} keeps its previous complete result", out.display())), "{stderr}");
    assert_eq!(contents(&out), before, "the failed run changed out");
    assert_eq!(entries(&parent), vec!["out"]);

    // A full disk, where this test may mount a small one.
    let disk = tmp.path().join("disk");
    let Some(_disk) = SmallDisk::mount(&disk, "96k") else {
        eprintln!("skipped the full tmpfs: cannot mount one here (needs root with CAP_SYS_ADMIN)");
        return;
    };
    let out = disk.join("out");
    replayed(replay(&[&basic], &out, &["-q"]));
    let before = contents(&out);
    let r = replay(&[&medium], &out, &["-q"]);
    assert!(!r.success() && r.stderr_str().contains("No space left on device"), "{}", r.describe());
    assert_eq!(contents(&out), before, "the failed run changed out");
    assert_eq!(entries(&disk), vec!["out"], "the unfinished output is removed, freeing the disk");
    replayed(replay(&[&basic], &out, &["-q", "--tick-ms", "2000"]));
}

#[test]
fn a_second_run_on_the_same_out_is_refused_naming_the_first() {
    let tmp = tempdir();
    let input = generated(tmp.path());
    let out = tmp.path().join("out");
    let lock = tmp.path().join(".out.stockflow-lock");
    let first = spawn(replay_args(&[&input], &out, &["-q"]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.ends_with('\n')) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let pid = first.pid();
    let second = replay(&[&input], &out, &["-q"]);
    let err = second.stderr_str();
    assert_eq!(second.status.and_then(|s| s.code()), Some(1), "{}", second.describe());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let named = format!("{} is being written by stockflow replay (pid {pid} on host {}, started ", out.display(), host.trim());
    assert!(err.starts_with(&format!("Error: {named}")), "{err}");
    assert!(err.contains("wait for that run to end, stop it, or choose another --out"), "{err}");
    let first = wait_all(vec![first], RUN_TIMEOUT, Duration::ZERO).pop().unwrap();
    assert!(first.success(), "{}", first.describe());
    let reference = tmp.path().join("reference");
    replayed(replay(&[&input], &reference, &["-q"]));
    compare_dirs_bytes(&reference, &out).unwrap();
    assert!(!lock.exists(), "the lock is removed when the run ends");

    // A lock left by a process of this host that died is taken over, with a warning.
    let dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    drop(dead.wait_with_output());
    let left = serde_json::json!({"pid": dead_pid, "host": host.trim(), "mode": "replay", "started": "2024-03-01T08:00:00.000Z"});
    std::fs::write(&lock, format!("{left}\n")).unwrap();
    let basic = fixtures_dir().join("basic/input");
    let r = replayed(replay(&[&basic], &out, &["-q"]));
    let warned = format!("{} was left locked by stockflow replay (pid {dead_pid} on host", out.display());
    assert!(r.stderr_str().contains(&warned) && r.stderr_str().contains("which no longer runs"), "{}", r.describe());

    // One of another host cannot be checked from here: refused, saying what to do.
    let elsewhere = serde_json::json!({"pid": 1, "host": "elsewhere", "mode": "batch", "started": "2024-03-01T08:00:00.000Z"});
    std::fs::write(&lock, format!("{elsewhere}\n")).unwrap();
    let r = replay(&[&basic], &out, &["-q"]);
    assert!(!r.success(), "{}", r.describe());
    assert!(r.stderr_str().contains(&format!("remove {}", lock.display())), "{}", r.describe());
}

#[test]
fn a_report_that_cannot_be_written_leaves_out_intact() {
    let tmp = tempdir();
    let (basic, medium) = (fixtures_dir().join("basic/input"), fixtures_dir().join("medium/input"));
    let out = tmp.path().join("out");
    replayed(replay(&[&basic], &out, &["-q"]));
    let before = contents(&out);
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for report in [PathBuf::from("/proc/no-such-process/r.html"), file.join("r.html")] {
        let r = replay(&[&medium], &out, &["-q", "--report", report.to_str().unwrap()]);
        assert!(!r.success(), "{}", r.describe());
        assert!(r.stderr_str().contains(&format!("cannot write the report {}", report.display())), "{}", r.describe());
        assert_eq!(contents(&out), before, "a report that cannot be written changed out");
    }

    // A report inside --out is part of the new result.
    let report = out.join("report.html");
    replayed(replay(&[&medium], &out, &["-q", "--report", report.to_str().unwrap()]));
    let page = std::fs::read_to_string(&report).unwrap();
    assert!(page.contains("<html"), "{}", &page[..page.len().min(200)]);
    let reference = tmp.path().join("reference");
    replayed(replay(&[&medium], &reference, &["-q"]));
    std::fs::remove_file(&report).unwrap();
    compare_dirs_bytes(&reference, &out).unwrap();
}

#[test]
fn a_directory_that_is_not_an_earlier_output_is_refused_and_left_alone() {
    let tmp = tempdir();
    let basic = fixtures_dir().join("basic/input");
    let dir = tmp.path().join("work");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();
    let r = replay(&[&basic], &dir, &["-q"]);
    assert!(!r.success(), "{}", r.describe());
    let expected = format!("{} exists and is not an output of stockflow (it holds notes.txt)", dir.display());
    assert!(r.stderr_str().contains(&expected), "{}", r.describe());
    assert_eq!(entries(&dir), vec!["notes.txt"]);
    assert_eq!(entries(tmp.path()), vec!["work"]);
}

/// `run` writes in place under a marker: running (with its pid and host) while it runs, refused
/// to a second run, complete once stopped.
#[test]
fn run_marks_its_directory_running_then_complete() {
    let (_cluster, brokers) = basic_on_a_mock_cluster();
    let tmp = tempdir();
    let out = tmp.path().join("out");
    let args = |group: &str| {
        let out = out.to_str().unwrap().to_string();
        ["run", "--brokers", &brokers, "--topics", "basic", "--group", group, "--no-kafka-out", "--out", &out, "-q"]
            .map(String::from)
            .to_vec()
    };
    let running = spawn(args("first"));
    let marker = || -> Option<serde_json::Value> { serde_json::from_str(&std::fs::read_to_string(out.join("stockflow-run.json")).ok()?).ok() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while marker().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let m = marker().expect("no stockflow-run.json while running");
    assert_eq!((m["state"].as_str(), m["mode"].as_str(), m["pid"].as_u64()), (Some("running"), Some("run"), Some(running.pid() as u64)), "{m}");
    assert!(!out.join("summary.json").exists(), "a summary before the run ends");

    let second = run_with_timeout(args("second"), Duration::from_secs(30));
    assert!(!second.success() && second.stderr_str().contains("is being written by stockflow run (pid "), "{}", second.describe());

    std::thread::sleep(Duration::from_millis(1500));
    signal(running.pid(), SIGTERM);
    let done = wait_all(vec![running], Duration::from_secs(60), Duration::ZERO).pop().unwrap();
    assert!(done.success(), "{}", done.describe());
    let m = marker().unwrap();
    assert_eq!(m["state"], "complete", "{m}");
    assert!(m["ended"].is_string(), "{m}");
    assert!(out.join("summary.json").exists() && out.join("snapshot/atp.jsonl").exists());

    // A batch replaces --out whole: checkpoints inside it would go with it.
    let inside = out.join("checkpoints");
    let mut batch = args("batch");
    batch[0] = "batch".to_string();
    batch.extend(["--until", "1700000100000", "--checkpoint-dir", inside.to_str().unwrap()].map(String::from));
    let r = run_with_timeout(&batch, Duration::from_secs(60));
    let expected = format!("--checkpoint-dir {} lies inside --out {}, which batch replaces whole", inside.display(), out.display());
    assert!(!r.success() && r.stderr_str().contains(&expected), "{}", r.describe());
    assert!(!inside.exists());
}
