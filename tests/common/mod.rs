//! Shared helpers for the end-to-end tests (golden, cluster, cli): locating the
//! binary and the fixtures, running `stockflow replay` with a timeout, and
//! comparing output directories — by SPEC fields (the rules of
//! `../shared/tools/compare-outputs.py`) or byte for byte.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// SplitMix64: small, seeded, the same sequence on every machine (the tests' random inputs).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in lo..=hi.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Default time limit for one replay run.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// The `stockflow` binary of the current cargo profile.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stockflow"))
}

/// The project root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The project's golden cases, `fixtures/<case>/{input,expected,options.txt}`.
pub fn fixtures_dir() -> PathBuf {
    repo_root().join("fixtures")
}

/// Names of every case directory under `fixtures/` (those with an `input/`), sorted.
pub fn case_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("read fixtures/")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("input").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The extra CLI arguments of a case: `options.txt` split on whitespace (none if absent).
pub fn case_options(case: &str) -> Vec<String> {
    match std::fs::read_to_string(fixtures_dir().join(case).join("options.txt")) {
        Ok(s) => s.split_whitespace().map(str::to_owned).collect(),
        Err(_) => Vec::new(),
    }
}

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("stockflow-test-").tempdir().expect("create temp dir")
}

/// The outcome of one child process.
pub struct RunOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit status; `None` if it was killed on timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub elapsed: Duration,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Whether the child panicked (Rust's panic message on stderr).
    pub fn panicked(&self) -> bool {
        self.stderr_str().contains("panicked")
    }

    /// A readable account: command, status, time, tail of stderr and stdout.
    pub fn describe(&self) -> String {
        let status = if self.timed_out {
            format!("killed after timeout ({:.1?})", self.elapsed)
        } else {
            match self.status {
                Some(s) => format!("{s} after {:.1?}", self.elapsed),
                None => "unknown status".to_owned(),
            }
        };
        format!(
            "$ {}\n  status: {}\n  stderr:\n{}\n  stdout (head):\n{}",
            self.cmdline,
            status,
            indent(&head_and_tail(&self.stderr_str())),
            indent(&head(&self.stdout_str(), 10, 2000)),
        )
    }
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

/// The first 10 and the last 20 lines of `s` (about 6 kB at most).
pub fn head_and_tail(s: &str) -> String {
    let n = s.lines().count();
    if n <= 30 {
        return clip(s, 6000);
    }
    format!("{}\n…({} lines)…\n{}", head(s, 10, 2000), n - 30, tail(s, 20, 4000))
}

/// The last `lines` lines of `s`, at most `max` bytes.
pub fn tail(s: &str, lines: usize, max: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    let t = v[v.len().saturating_sub(lines)..].join("\n");
    if t.len() > max {
        let mut cut = t.len() - max;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        format!("…{}", &t[cut..])
    } else {
        t
    }
}

/// The first `lines` lines of `s`, at most `max` bytes.
pub fn head(s: &str, lines: usize, max: usize) -> String {
    let t = s.lines().take(lines).collect::<Vec<_>>().join("\n");
    clip(&t, max)
}

/// `s` cut to at most `max` bytes (on a char boundary), marked when cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// A spawned child with threads draining its stdout and stderr.
pub struct Running {
    cmdline: String,
    child: Child,
    started: Instant,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    })
}

fn quote(a: &OsStr) -> String {
    let s = a.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@+,".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Spawns `stockflow ARGS...` (cwd = project root, stdin closed, output captured).
pub fn spawn<I, S>(args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_in(&repo_root(), args)
}

/// Spawns `stockflow ARGS...` in `cwd` (stdin closed, output captured).
pub fn spawn_in<I, S>(cwd: &Path, args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_with(cwd, args, &[])
}

/// Spawns `stockflow ARGS...` in `cwd` with `env` set (stdin closed, output captured).
pub fn spawn_with<I, S>(cwd: &Path, args: I, env: &[(&str, &str)]) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let cmdline = std::iter::once(bin().into_os_string())
        .chain(args.iter().cloned())
        .map(|a| quote(&a))
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = Command::new(bin())
        .args(&args)
        .current_dir(cwd)
        // No backtraces: anyhow would print one under every error message.
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    Running { cmdline, child, started: Instant::now(), out, err }
}

/// A test that fails while its child runs must not leave the child behind.
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// The child's process id (to signal it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Waits for all children, at most `timeout` in total. When one fails, the
/// others get `grace` more before they are killed (a cluster peer whose partner
/// died would otherwise wait for it until the timeout).
pub fn wait_all(mut running: Vec<Running>, timeout: Duration, grace: Duration) -> Vec<RunOutput> {
    let start = Instant::now();
    let mut deadline = start + timeout;
    let mut statuses: Vec<Option<ExitStatus>> = vec![None; running.len()];
    let mut killed = vec![false; running.len()];
    loop {
        for (i, r) in running.iter_mut().enumerate() {
            if statuses[i].is_none() {
                if let Ok(Some(s)) = r.child.try_wait() {
                    statuses[i] = Some(s);
                    if !s.success() {
                        deadline = deadline.min(Instant::now() + grace);
                    }
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if Instant::now() >= deadline {
            for (i, r) in running.iter_mut().enumerate() {
                if statuses[i].is_none() {
                    let _ = r.child.kill();
                    let _ = r.child.wait();
                    killed[i] = true;
                }
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running
        .into_iter()
        .enumerate()
        .map(|(i, mut r)| {
            let elapsed = r.started.elapsed();
            RunOutput {
                cmdline: std::mem::take(&mut r.cmdline),
                status: statuses[i],
                timed_out: killed[i],
                elapsed,
                stdout: r.out.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default(),
                stderr: r.err.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default(),
            }
        })
        .collect()
}

/// Runs `stockflow ARGS...` to completion (killed after `timeout`).
pub fn run_with_timeout<I, S>(args: I, timeout: Duration) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    wait_all(vec![spawn(args)], timeout, Duration::ZERO).pop().unwrap()
}

/// Runs `stockflow ARGS...` with the default timeout.
pub fn run<I, S>(args: I) -> RunOutput
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_with_timeout(args, RUN_TIMEOUT)
}

/// Arguments of `stockflow replay INPUTS... --out OUT EXTRA...`.
pub fn replay_args<P: AsRef<Path>>(inputs: &[P], out: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["replay".into()];
    a.extend(inputs.iter().map(|p| p.as_ref().as_os_str().to_owned()));
    a.push("--out".into());
    a.push(out.as_os_str().to_owned());
    a.extend(extra.iter().map(OsString::from));
    a
}

/// Runs `stockflow replay INPUTS... --out OUT EXTRA...` with the default timeout.
pub fn replay<P: AsRef<Path>>(inputs: &[P], out: &Path, extra: &[&str]) -> RunOutput {
    run(replay_args(inputs, out, extra))
}

/// Replays the golden case `case` (its `options.txt`, then `extra`) into `out`,
/// returning an error describing the run when it does not exit 0.
pub fn replay_case(case: &str, out: &Path, extra: &[&str]) -> Result<RunOutput, String> {
    let opts = case_options(case);
    let mut all: Vec<&str> = opts.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let input = fixtures_dir().join(case).join("input");
    let r = replay(&[input], out, &all);
    if r.success() {
        Ok(r)
    } else {
        Err(format!("replay of {case} failed:\n{}", r.describe()))
    }
}

// ---------------------------------------------------------------------------
// Output comparison by SPEC fields (== ../shared/tools/compare-outputs.py).
// ---------------------------------------------------------------------------

/// The compared fields of each output (compare-outputs.py's FIELDS).
pub const FIELDS: &[(&str, &[&str])] = &[
    ("atp", &["ts", "sku", "loc", "on_hand", "reserved", "on_order", "available", "atp", "position", "deleted"]),
    ("low_stock", &["ts", "sku", "loc", "state", "previous", "position", "reorder_point", "available"]),
    ("order_plan", &["ts", "source", "dest", "sku", "requested", "qty", "deleted"]),
    ("network_atp", &["ts", "sku", "atp", "deleted"]),
    ("dead_letter", &["source", "partition", "offset", "reason"]),
];

/// The compared keys of summary.json.
pub const SUMMARY: &[&str] = &[
    "read",
    "applied",
    "rejected",
    "late",
    "beyond_window",
    "orphan",
    "duplicate",
    "expired_on_arrival",
    "absorbed",
    "as_of",
];

/// The four change streams, which also have a snapshot.
pub const STREAMS: &[&str] = &["atp", "low_stock", "order_plan", "network_atp"];

fn fields_of(name: &str) -> &'static [&'static str] {
    FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f).unwrap()
}

/// A canonical text for a JSON value: object keys sorted, and numbers compared
/// by value as Python does (`1 == 1.0`), so `canon` equality is the script's `==`.
pub fn canon(v: &Value) -> String {
    let mut s = String::new();
    canon_into(v, &mut s);
    s
}

fn canon_into(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::String(_) => out.push_str(&v.to_string()),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                let _ = write!(out, "{i}");
            } else if let Some(u) = n.as_u64() {
                let _ = write!(out, "{u}");
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 {
                    let _ = write!(out, "{}", f as i64);
                } else {
                    let _ = write!(out, "{n}");
                }
            }
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                canon_into(x, out);
            }
            out.push(']');
        }
        Value::Object(m) => {
            let sorted: BTreeMap<&String, &Value> = m.iter().collect();
            out.push('{');
            for (i, (k, x)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                canon_into(x, out);
            }
            out.push('}');
        }
    }
}

/// Loads a JSON-lines output keeping only `fields` (those present; `deleted:
/// false` dropped), one canonical string per non-blank line. `None` if absent.
pub fn load_records(path: &Path, fields: &[&str]) -> Result<Option<Vec<String>>, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let text = String::from_utf8(bytes).map_err(|e| format!("{}: not UTF-8: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let rec = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => {
                let mut rec = serde_json::Map::new();
                for f in fields {
                    if let Some(v) = o.get(*f) {
                        if *f == "deleted" && *v == Value::Bool(false) {
                            continue;
                        }
                        rec.insert((*f).to_owned(), v.clone());
                    }
                }
                Value::Object(rec)
            }
            Ok(_) => serde_json::json!({ "_not_an_object_line": n }),
            Err(_) => serde_json::json!({ "_unparseable_line": n }),
        };
        out.push(canon(&rec));
    }
    Ok(Some(out))
}

/// Compares the outputs in `actual` with the golden outputs in `expected` by
/// the fields SPEC names: change streams record by record in order, snapshots
/// and dead letters as multisets, the summary's keys. `Err` holds one line per
/// difference (a few examples per file), like compare-outputs.py.
pub fn compare_outputs(expected: &Path, actual: &Path, snapshot_only: bool) -> Result<(), String> {
    let mut report = String::new();
    let mut jobs: Vec<(String, Vec<&str>, bool)> = Vec::new();
    for name in STREAMS {
        let f: Vec<&str> =
            fields_of(name).iter().copied().filter(|x| !matches!(*x, "ts" | "previous" | "deleted")).collect();
        jobs.push((format!("snapshot/{name}.jsonl"), f, true));
        if !snapshot_only {
            jobs.push((format!("{name}.jsonl"), fields_of(name).to_vec(), false));
        }
    }
    jobs.push(("dead_letter.jsonl".to_owned(), fields_of("dead_letter").to_vec(), true));

    for (rel, fields, as_set) in jobs {
        let e = load_records(&expected.join(&rel), &fields);
        let a = load_records(&actual.join(&rel), &fields);
        let (mut e, mut a) = match (e, a) {
            (Err(err), _) | (_, Err(err)) => {
                let _ = writeln!(report, "{rel}: {err}");
                continue;
            }
            (_, Ok(None)) => {
                let _ = writeln!(report, "{rel}: missing");
                continue;
            }
            (Ok(None), _) => {
                let _ = writeln!(report, "{rel}: missing in expected/ ({})", expected.display());
                continue;
            }
            (Ok(Some(e)), Ok(Some(a))) => (e, a),
        };
        if as_set {
            e.sort();
            a.sort();
        }
        if e != a {
            let es: BTreeSet<&String> = e.iter().collect();
            let as_: BTreeSet<&String> = a.iter().collect();
            let miss: Vec<_> = es.difference(&as_).collect();
            let extra: Vec<_> = as_.difference(&es).collect();
            let _ = writeln!(
                report,
                "{rel}: expected {} records, got {}; missing {}, unexpected {}",
                e.len(),
                a.len(),
                miss.len(),
                extra.len()
            );
            for m in miss.iter().take(3) {
                let _ = writeln!(report, "  missing    {m}");
            }
            for x in extra.iter().take(3) {
                let _ = writeln!(report, "  unexpected {x}");
            }
            if miss.is_empty() && extra.is_empty() {
                let _ = writeln!(report, "  same records, different order");
            }
            if !as_set {
                if let Some(i) = (0..e.len().max(a.len())).find(|&i| e.get(i) != a.get(i)) {
                    let show = |v: Option<&String>| v.map_or("<end of file>".to_owned(), |s| s.clone());
                    let _ = writeln!(
                        report,
                        "  first difference at record #{}: expected {} got {}",
                        i + 1,
                        show(e.get(i)),
                        show(a.get(i))
                    );
                }
            }
        }
    }

    let load_summary = |dir: &Path| -> Result<serde_json::Map<String, Value>, String> {
        let p = dir.join("summary.json");
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(format!("{}: not a JSON object", p.display())),
            Err(e) => Err(format!("{}: {e}", p.display())),
        }
    };
    match (load_summary(expected), load_summary(actual)) {
        (Ok(es), Ok(as_)) => {
            for k in SUMMARY {
                let ev = es.get(*k).map(canon).unwrap_or_else(|| "None".into());
                let av = as_.get(*k).map(canon).unwrap_or_else(|| "None".into());
                if ev != av {
                    let _ = writeln!(report, "summary.json: {k} expected {ev} got {av}");
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            let _ = writeln!(report, "summary.json: {e}");
        }
    }

    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

// ---------------------------------------------------------------------------
// Byte-for-byte directory comparison.
// ---------------------------------------------------------------------------

/// Every regular file under `dir`, as paths relative to it, sorted.
pub fn list_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Where two byte strings first differ, as a readable line-based report.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
    let line_no = a[..at].iter().filter(|&&c| c == b'\n').count() + 1;
    let line_of = |s: &[u8]| -> String {
        let start = s[..at.min(s.len())].iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
        let end = s[start..].iter().position(|&c| c == b'\n').map_or(s.len(), |i| start + i);
        if start >= s.len() {
            "<end of file>".to_owned()
        } else {
            clip(&String::from_utf8_lossy(&s[start..end]), 400)
        }
    };
    Some(format!(
        "sizes {} vs {} bytes; first difference at byte {at}, line {line_no}:\n      left:  {}\n      right: {}",
        a.len(),
        b.len(),
        line_of(a),
        line_of(b)
    ))
}

/// Compares two directories byte for byte (all files, recursively). `Err`
/// lists files present on one side only and, per differing file, the first
/// differing line.
pub fn compare_dirs_bytes(left: &Path, right: &Path) -> Result<(), String> {
    let l: BTreeSet<PathBuf> = list_files(left).into_iter().collect();
    let r: BTreeSet<PathBuf> = list_files(right).into_iter().collect();
    let mut report = String::new();
    if l.is_empty() && r.is_empty() {
        let _ = writeln!(report, "both directories are empty or absent");
    }
    for p in l.difference(&r) {
        let _ = writeln!(report, "{}: only in {}", p.display(), left.display());
    }
    for p in r.difference(&l) {
        let _ = writeln!(report, "{}: only in {}", p.display(), right.display());
    }
    for p in l.intersection(&r) {
        let a = std::fs::read(left.join(p)).unwrap_or_default();
        let b = std::fs::read(right.join(p)).unwrap_or_default();
        if let Some(d) = first_difference(&a, &b) {
            let _ = writeln!(report, "{}: {d}", p.display());
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(format!("{} vs {}:\n{report}", left.display(), right.display()))
    }
}

/// Reads a JSON-lines file into values (panics with the path on error).
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{}:{}: {e}: {}", path.display(), i + 1, clip(l, 300)))
        })
        .collect()
}

/// Reads a JSON file (panics with the path on error).
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The SPEC's output files of a directory run.
pub const OUTPUT_FILES: &[&str] = &[
    "atp.jsonl",
    "low_stock.jsonl",
    "order_plan.jsonl",
    "network_atp.jsonl",
    "dead_letter.jsonl",
    "snapshot/atp.jsonl",
    "snapshot/low_stock.jsonl",
    "snapshot/order_plan.jsonl",
    "snapshot/network_atp.jsonl",
    "summary.json",
];

/// Polls `cond` every 100 ms for at most `secs` seconds; whether it held.
pub fn eventually(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Produces one message, `value` without a key, to `topic[partition]` and waits for it.
pub fn produce_one(brokers: &str, topic: &str, partition: i32, value: &str) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).create().unwrap();
    producer.send(BaseRecord::<(), str>::to(topic).partition(partition).payload(value)).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
}

/// `group`'s committed offsets of every partition of `topic` (`None`: none committed).
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    let consumer: BaseConsumer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions)
        .map(|p| match c.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Hostile environments: a full disk, a file-size limit; a broker.
// ---------------------------------------------------------------------------

/// A tmpfs mounted for one test, unmounted when dropped.
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`64k`) at `at`; `None` where this test may not mount one
    /// (it needs root with CAP_SYS_ADMIN).
    pub fn mount(at: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk(at.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs `stockflow ARGS` to completion under a file-size limit (`ulimit -f`) of `bytes`.
pub fn with_file_size_limit<S: AsRef<OsStr>>(args: &[S], bytes: u64) -> std::process::Output {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(bin());
    command.args(args).env("RUST_BACKTRACE", "0");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    command.output().unwrap()
}

/// librdkafka's in-process mock cluster with `fixtures/basic/input` produced to topic `basic`
/// (3 partitions), and its bootstrap servers.
pub fn basic_on_a_mock_cluster() -> (rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>, String)
{
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    cluster.create_topic("basic", 3, 1).unwrap();
    let basic = fixtures_dir().join("basic/input");
    let produced = run(["produce", basic.to_str().unwrap(), "--topic", "basic", "--brokers", &brokers]);
    assert!(produced.success(), "{}", produced.describe());
    (cluster, brokers)
}
