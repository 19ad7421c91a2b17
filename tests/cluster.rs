//! Multi-process runs on localhost: `fixtures/medium` replayed by a 2-process
//! timely cluster (1 and 2 workers each) must write, from process 0, exactly
//! the bytes of a single-process run (SPEC §4, determinism); and the cluster
//! port (src/runtime/cluster/) refuses garbage, strangers, another secret, a
//! stale generation and other settings, naming the address, while the real
//! peer still gets in; a lost peer ends the survivor with one line naming it.

mod common;

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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

    assert_same_as_one_process(tmp.path(), &out0, &format!("2 processes x {workers} workers"));
}

/// `out` holds the case's expected outputs, byte for byte those of a 1-process run.
fn assert_same_as_one_process(tmp: &Path, out: &Path, label: &str) {
    let single = tmp.join("single");
    let _ = std::fs::remove_dir_all(&single);
    replay_case(CASE, &single, &["-w", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    if let Err(d) = compare_outputs(&fixtures_dir().join(CASE).join("expected"), out, false) {
        failures.push(format!("cluster output differs from fixtures/{CASE}/expected:\n{d}"));
    }
    if let Err(d) = compare_dirs_bytes(&single, out) {
        failures.push(format!("{label} vs 1 process x 1 worker not byte-identical: {d}"));
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

// ---------------------------------------------------------------------------------------------
// The cluster port: who gets in, and what a lost peer looks like.
// ---------------------------------------------------------------------------------------------

/// How long a test waits for a line it expects, or for a process to end.
const PATIENCE: Duration = Duration::from_secs(60);

/// A cluster process whose stderr the test reads while it runs (killed when dropped).
struct Watched {
    name: String,
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Watched {
    fn start(name: &str, args: Vec<OsString>) -> Watched {
        let mut child = Command::new(bin())
            .args(&args)
            .current_dir(repo_root())
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, sink) = (child.stderr.take().expect("stderr is piped"), Arc::clone(&stderr));
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        Watched { name: name.to_string(), child, stderr, reader: Some(reader) }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the process has said `what` on stderr.
    fn wait_for(&mut self, what: &str) {
        let start = Instant::now();
        while !self.stderr().contains(what) {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reader.take().map(JoinHandle::join);
                assert!(
                    self.stderr().contains(what),
                    "{} ended ({status}) without saying {what:?}:\n{}",
                    self.name,
                    self.stderr()
                );
                return;
            }
            assert!(
                start.elapsed() < PATIENCE,
                "{} did not say {what:?} in {PATIENCE:?}:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to end: its status and everything it said.
    fn exit(&mut self) -> (ExitStatus, String) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.reader.take().map(JoinHandle::join);
                return (status, self.stderr());
            }
            if start.elapsed() > PATIENCE {
                self.kill();
                panic!("{} did not end in {PATIENCE:?}:\n{}", self.name, self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful end.
    fn succeeds(&mut self) {
        let (status, stderr) = self.exit();
        assert!(status.success(), "{} failed ({status}):\n{stderr}", self.name);
        assert!(!stderr.contains("panicked"), "{} panicked:\n{stderr}", self.name);
    }

    /// SIGKILL, as an out-of-memory kill or a crash would end it.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 2-process cluster on loopback: a directory, the hostfile, and each process's command.
struct Loopback {
    dir: tempfile::TempDir,
    hosts: PathBuf,
    ports: [u16; 2],
}

impl Loopback {
    fn new() -> Loopback {
        let dir = tempdir();
        let ports = free_ports();
        let hosts = dir.path().join("hosts.txt");
        std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", ports[0], ports[1])).unwrap();
        Loopback { dir, hosts, ports }
    }

    fn address(&self, process: usize) -> String {
        format!("127.0.0.1:{}", self.ports[process])
    }

    fn out(&self, process: usize) -> PathBuf {
        self.dir.path().join(format!("out{process}"))
    }

    /// `replay INPUT --out outP -n 2 -p P --hostfile H -q EXTRA...` (the medium case's options
    /// with its own input).
    fn replay(&self, input: &Path, process: usize, extra: &[&str]) -> Vec<OsString> {
        let out = self.out(process);
        let _ = std::fs::remove_dir_all(&out);
        let (p, hosts) = (process.to_string(), self.hosts.display().to_string());
        let opts = if input.starts_with(fixtures_dir()) { case_options(CASE) } else { Vec::new() };
        let mut args: Vec<&str> = vec!["-n", "2", "-p", &p, "--hostfile", &hosts, "-q"];
        args.extend(opts.iter().map(String::as_str));
        args.extend_from_slice(extra);
        replay_args(&[input], &out, &args)
    }

    fn medium(&self, process: usize, extra: &[&str]) -> Vec<OsString> {
        self.replay(&fixtures_dir().join(CASE).join("input"), process, extra)
    }

    fn start(&self, process: usize, extra: &[&str]) -> Watched {
        Watched::start(&format!("process {process}"), self.medium(process, extra))
    }
}

/// A seeded generator of bytes (splitmix64), for garbage that is the same on every run.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// A secret file, readable by its owner only.
fn secret_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// 64 random bytes sent to process 0's port during start-up used to crash it (exit 101, index
/// out of bounds in timely's accept loop). Now garbage, a stranger that says nothing, and a
/// full-length handshake of random bytes are each refused with a line naming their address,
/// and the real process 1 still joins: the outputs are a 1-process run's.
#[test]
fn garbage_on_the_port_is_refused_and_the_real_peer_still_joins() {
    let cluster = Loopback::new();
    let mut p0 = cluster.start(0, &[]);
    p0.wait_for("listening on");
    let silent = TcpStream::connect(cluster.address(0)).unwrap();
    let mut refused = Vec::new();
    for (seed, len) in [(64, 64), (200, 200)] {
        let mut stranger = TcpStream::connect(cluster.address(0)).unwrap();
        stranger.write_all(&garbage(seed, len)).unwrap();
        stranger.shutdown(Shutdown::Write).unwrap();
        stranger.set_read_timeout(Some(PATIENCE)).unwrap();
        // Process 0 sends its challenge and closes (a reset when garbage is left unread).
        let closed = stranger.read_to_end(&mut Vec::new());
        assert!(
            !matches!(&closed, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
            "process 0 kept a connection of {len} random bytes open:\n{}",
            p0.stderr()
        );
        refused.push(stranger.local_addr().unwrap());
    }
    for address in &refused {
        p0.wait_for(&format!("refused a connection from {address}: "));
    }
    let mut p1 = cluster.start(1, &[]);
    p1.succeeds();
    p0.succeeds();
    drop(silent);
    assert_same_as_one_process(cluster.dir.path(), &cluster.out(0), "2 processes after garbage on the port");
}

/// A process with another secret file is refused by address, says why, and the right process
/// 1 then joins. Neither secret appears in any output.
#[test]
fn a_peer_with_another_secret_is_refused_naming_its_address() {
    let cluster = Loopback::new();
    let (good_text, bad_text) = ("7b1f0c3a9e24d6b85f0a1c2d3e4f5a6b", "00000000000000000000000000000000");
    let good = secret_file(cluster.dir.path(), "good.secret", good_text);
    let bad = secret_file(cluster.dir.path(), "bad.secret", bad_text);
    let (good, bad) = (good.display().to_string(), bad.display().to_string());
    let mut p0 = cluster.start(0, &["--cluster-secret-file", &good]);
    p0.wait_for("listening on");
    let mut stranger = cluster.start(1, &["--cluster-secret-file", &bad]);
    p0.wait_for("did not prove the cluster secret");
    stranger.wait_for("refused our proof of the cluster secret");
    stranger.kill();
    let (_, stranger_said) = stranger.exit();
    let refusal = p0.stderr().lines().find(|l| l.contains("did not prove")).unwrap_or_default().to_string();
    assert!(
        refusal.contains("refused a connection from 127.0.0.1:"),
        "the refusal does not name the address: {refusal}"
    );
    let mut p1 = cluster.start(1, &["--cluster-secret-file", &good]);
    p1.succeeds();
    p0.succeeds();
    for said in [p0.stderr(), p1.stderr(), stranger_said] {
        assert!(!said.contains(good_text) && !said.contains(bad_text), "a secret was printed:\n{said}");
    }
    assert_same_as_one_process(cluster.dir.path(), &cluster.out(0), "2 processes with a secret");
}

/// A process of an older generation ends, naming the newer peer and the generation to use;
/// the newer one refuses it and keeps waiting for a process of its own generation. Both ways
/// round: the stale one connecting, and the stale one accepting.
#[test]
fn a_stale_generation_cannot_join() {
    let cluster = Loopback::new();
    let mut p0 = cluster.start(0, &["--cluster-generation", "2"]);
    p0.wait_for("listening on");
    let mut stale = cluster.start(1, &["--cluster-generation", "1"]);
    let (status, said) = stale.exit();
    assert!(!status.success(), "a stale process 1 joined:\n{said}");
    let expected = format!("process 0 at {} belongs to generation 2, this process to 1", cluster.address(0));
    assert!(said.contains(&expected) && said.contains("--cluster-generation 2"), "{said}");
    p0.wait_for("process 1 belongs to generation 1, older than this cluster's 2");
    cluster.start(1, &["--cluster-generation", "2"]).succeeds();
    p0.succeeds();

    let cluster = Loopback::new();
    let mut p1 = cluster.start(1, &["--cluster-generation", "5"]);
    p1.wait_for("connecting to the others");
    let mut stale = cluster.start(0, &["--cluster-generation", "4"]);
    let (status, said) = stale.exit();
    assert!(!status.success(), "a stale process 0 formed a cluster:\n{said}");
    assert!(said.contains("belongs to generation 5, this process to 4"), "{said}");
    p1.wait_for("older than this process's 5; waiting for it to be restarted with --cluster-generation 5");
    cluster.start(0, &["--cluster-generation", "5"]).succeeds();
    p1.succeeds();
}

/// Processes started with different -w used to crash inside timely; now the one connecting
/// ends naming the difference and the other names it too.
#[test]
fn different_settings_are_named() {
    let cluster = Loopback::new();
    let mut p0 = cluster.start(0, &["-w", "1"]);
    p0.wait_for("listening on");
    let (status, said) = cluster.start(1, &["-w", "2"]).exit();
    assert!(!status.success(), "{said}");
    assert!(
        said.contains(&format!("process 0 at {} runs with -w 1 (this process: -w 2)", cluster.address(0))),
        "{said}"
    );
    p0.wait_for("process 1 runs with -w 2 (this process: -w 1)");
}

/// A killed peer used to end the survivor with timely's `MergeQueue poisoned` panics and no
/// word of which process was lost. Now the survivor says it in one line, naming the peer's
/// index and address, and exits non-zero. Both ways round.
#[test]
fn a_lost_peer_ends_the_survivor_with_one_line_naming_it() {
    let work = tempdir();
    let input = work.path().join("input");
    let made = run(["gen", "--out", input.to_str().unwrap(), "--events", "500000", "--seed", "19", "-q"]);
    assert!(made.success(), "{}", made.describe());
    for lost in [1, 0] {
        let cluster = Loopback::new();
        let mut processes: Vec<Watched> =
            (0..2).map(|p| Watched::start(&format!("process {p}"), cluster.replay(&input, p, &[]))).collect();
        for p in &mut processes {
            p.wait_for("all 2 processes connected");
        }
        processes[lost].kill();
        let (status, said) = processes[1 - lost].exit();
        assert!(!status.success(), "process {} ended well after losing its peer:\n{said}", 1 - lost);
        let lines: Vec<&str> = said.lines().filter(|l| l.contains("lost cluster peer")).collect();
        let expected = format!("stockflow: error: lost cluster peer process {lost} ({}): ", cluster.address(lost));
        assert!(lines.len() == 1 && lines[0].starts_with(&expected), "expected one line {expected:?}…:\n{said}");
        assert!(!said.contains("panicked") && !said.contains("MergeQueue"), "{said}");
    }
}

/// Refused at start, before any connection: a hostfile naming an address beyond loopback
/// without --cluster-secret-file, and a hostfile that does not exist (named).
#[test]
fn a_hostfile_beyond_loopback_needs_a_secret_file() {
    let cluster = Loopback::new();
    let hosts = cluster.dir.path().join("remote.txt");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n192.0.2.10:2101\n", cluster.ports[0])).unwrap();
    let input = fixtures_dir().join(CASE).join("input");
    let out = cluster.out(0);
    let remote = ["-n", "2", "-p", "0", "--hostfile", hosts.to_str().unwrap()];
    let r = run_with_timeout(replay_args(&[&input], &out, &remote), PATIENCE);
    let said = r.stderr_str();
    assert!(!r.success(), "{}", r.describe());
    assert!(said.contains(&format!("{}:2: 192.0.2.10:2101 is not a loopback address", hosts.display())), "{said}");
    assert!(said.contains("--cluster-secret-file"), "{said}");
    assert!(!out.exists(), "the refused run created its --out directory");

    let missing = ["-n", "2", "-p", "0", "--hostfile", "nosuchfile"];
    let r = run_with_timeout(replay_args(&[&input], &out, &missing), PATIENCE);
    assert!(!r.success() && r.stderr_str().contains("hostfile nosuchfile"), "{}", r.describe());
}
