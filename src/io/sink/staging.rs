//! A run's output directory and report as one transaction, so that a reader never sees a mix
//! of two runs. `replay` and `batch` write into `.NAME.stockflow-new` beside `--out` (the same
//! filesystem) and, once every file is written and synced, exchange it with the previous result
//! in one `renameat2(RENAME_EXCHANGE)` (where the filesystem has no exchange: the previous result
//! renamed to `.NAME.stockflow-old`, the new one into place, the old one removed); the previous
//! result is then deleted. `run`, whose directory grows while it runs, writes in place under a
//! marker, [`MARKER`], that says `running`, then `complete` or `incomplete`, with the run's
//! identity. Both hold the directory's lock ([`super::lock`]) throughout. A report is written
//! beside its path and renamed into place with the directory (or, inside `--out`, is part of it).
//! A failure, or a signal ([`abandon_all`]), removes what was not published.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::lock::{Holder, OutputLock};
use super::lines::TABLES;
use super::SinkError;

/// The marker file of a directory written in place (`run`).
pub const MARKER: &str = "stockflow-run.json";

/// How an output directory is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirMode {
    /// Staged beside the target and put in place whole when the run completes (`replay`, `batch`).
    Replace,
    /// Written in place under a marker (`run`).
    InPlace,
}

/// What a run writes.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    /// The command, for the lock and the marker.
    pub mode: &'static str,
    /// `--out DIR`.
    pub dir: Option<(&'a Path, DirMode)>,
    /// `--report FILE`.
    pub report: Option<&'a Path>,
}

/// A run's outputs while they are written; dropped without [`Outputs::publish`], they are
/// abandoned and the previous complete result stays.
#[derive(Debug)]
pub struct Outputs {
    id: u64,
    dir: Option<PathBuf>,
    report: Option<PathBuf>,
}

/// The outputs of this process not yet published, for a signal to abandon.
static OPEN: Mutex<BTreeMap<u64, Open>> = Mutex::new(BTreeMap::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Whether outputs of this process were put in place (a signal after that stops nothing).
static PUBLISHED: AtomicBool = AtomicBool::new(false);

fn open_outputs() -> std::sync::MutexGuard<'static, BTreeMap<u64, Open>> {
    OPEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Outputs {
    /// Locks and prepares `plan`'s directory and report (which must be writable: nothing is
    /// read or computed before this says so).
    pub fn begin(plan: Plan<'_>) -> Result<Outputs, SinkError> {
        let holder = Holder::this_process(plan.mode);
        let dir = plan.dir.map(|(target, mode)| DirTx::begin(target, mode, holder.clone())).transpose()?;
        let mut open = Open { dir, report: None };
        if let Some(report) = plan.report {
            open.report = Some(FileTx::begin(report, open.dir.as_ref())?);
        }
        let outputs = Outputs {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            dir: open.dir.as_ref().map(|d| d.write.clone()),
            report: open.report.as_ref().map(|r| r.write.clone()),
        };
        open_outputs().insert(outputs.id, open);
        Ok(outputs)
    }

    /// Where the directory sink writes (the staging directory, or `--out` itself for `run`).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Where the report is written until it is published.
    pub fn report(&self) -> Option<&Path> {
        self.report.as_deref()
    }

    /// The run failed: removes what it wrote (`run`: marks it incomplete) and says what each
    /// output holds now.
    pub fn abandon(self) -> Vec<String> {
        let entry = open_outputs().remove(&self.id);
        entry.map(|mut e| e.abandon()).unwrap_or_default()
    }

    /// The run is complete: puts its directory and report in place (or marks the directory
    /// complete) and releases the lock. On failure the previous result stays.
    pub fn publish(self) -> Result<(), SinkError> {
        let mut open = open_outputs();
        let Some(mut entry) = open.remove(&self.id) else { return Ok(()) };
        // Still under the registry's lock: a signal now waits until the outputs are in place.
        // Dropping the entry abandons what a failure left unpublished.
        entry.publish()?;
        PUBLISHED.store(true, Ordering::SeqCst);
        Ok(())
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        let entry = open_outputs().remove(&self.id);
        drop(entry);
    }
}

/// Whether this process has put outputs in place.
pub fn published() -> bool {
    PUBLISHED.load(Ordering::SeqCst)
}

/// Abandons every unpublished output of this process (a signal stops it): staging removed,
/// `run`'s marker set to `incomplete`, locks released. Returns what each output holds now.
pub fn abandon_all() -> Vec<String> {
    let mut open = open_outputs();
    let entries: Vec<Open> = std::mem::take(&mut *open).into_values().collect();
    entries.into_iter().flat_map(|mut entry| entry.abandon()).collect()
}

/// One run's unpublished outputs.
#[derive(Debug)]
struct Open {
    dir: Option<DirTx>,
    report: Option<FileTx>,
}

impl Open {
    /// Publishes the directory, then the report; each is let go of once in place.
    fn publish(&mut self) -> Result<(), SinkError> {
        if let Some(dir) = self.dir.as_mut() {
            dir.publish()?;
        }
        self.dir = None;
        if let Some(report) = self.report.as_mut() {
            report.publish()?;
        }
        self.report = None;
        Ok(())
    }

    /// Removes what was not published; returns what the user sees at each output now.
    fn abandon(&mut self) -> Vec<String> {
        let dir = self.dir.take().map(DirTx::abandon);
        let report = self.report.take().and_then(FileTx::abandon);
        dir.into_iter().chain(report).collect()
    }
}

/// Whatever was not published when it is dropped (a failure, a panic) is abandoned.
impl Drop for Open {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// An output directory being written.
#[derive(Debug)]
struct DirTx {
    /// `--out` as given, for messages.
    shown: PathBuf,
    /// `--out` with symlinks resolved: what is replaced.
    target: PathBuf,
    /// Where the sink writes.
    write: PathBuf,
    mode: DirMode,
    /// Whether a previous result was there.
    existed: bool,
    holder: Holder,
    /// Released last, once the directory is in place or cleaned up.
    lock: Option<OutputLock>,
}

/// The hidden sibling `.NAME.stockflow-SUFFIX` of `target`.
fn sibling(target: &Path, suffix: &str) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.stockflow-{suffix}"))
}

impl DirTx {
    fn begin(shown: &Path, mode: DirMode, holder: Holder) -> Result<DirTx, SinkError> {
        let target = resolve(shown)?;
        let lock = OutputLock::acquire(&sibling(&target, "lock"), shown, &holder)?;
        let (new, old) = (sibling(&target, "new"), sibling(&target, "old"));
        recover_interrupted_exchange(&target, &old, shown)?;
        for leftover in [&new, &old] {
            remove_dir(leftover).map_err(SinkError::write(leftover))?;
        }
        let existed = check_replaceable(&target, shown)?;
        let write = match mode {
            DirMode::Replace => new,
            DirMode::InPlace => target.clone(),
        };
        let tx = DirTx { shown: shown.to_path_buf(), target, write, mode, existed, holder, lock: Some(lock) };
        match mode {
            DirMode::Replace => fs::create_dir(&tx.write).map_err(SinkError::write(&tx.write))?,
            DirMode::InPlace => {
                fs::create_dir_all(&tx.target).map_err(SinkError::write(shown))?;
                tx.write_marker("running")?;
                // The final files of an earlier run would sit beside this run's growing streams.
                for name in ["summary.json", "dead_letter.jsonl", "snapshot"] {
                    let path = tx.target.join(name);
                    remove_dir(&path).and_then(|()| remove_file(&path)).map_err(SinkError::write(&path))?;
                }
            }
        }
        Ok(tx)
    }

    fn publish(&mut self) -> Result<(), SinkError> {
        let failed = |error| SinkError::Publish { path: self.shown.clone(), error };
        match self.mode {
            DirMode::InPlace => return self.write_marker("complete"),
            DirMode::Replace => {
                sync_dir(&self.write.join("snapshot")).map_err(failed)?;
                sync_dir(&self.write).map_err(failed)?;
                put_in_place(&self.write, &self.target).map_err(failed)?;
            }
        }
        if let Some(parent) = self.target.parent() {
            sync_dir(parent).map_err(failed)?;
        }
        self.lock = None;
        Ok(())
    }

    fn abandon(mut self) -> String {
        let note = match self.mode {
            DirMode::Replace => {
                let _ = remove_dir(&self.write);
                if self.existed { "keeps its previous complete result" } else { "was not created" }
            }
            DirMode::InPlace => match self.write_marker("incomplete") {
                Ok(()) => "is marked incomplete in its stockflow-run.json",
                Err(_) => "is incomplete",
            },
        };
        self.lock = None;
        format!("{} {note}", self.shown.display())
    }

    /// Writes `run`'s marker, whole (a temporary file renamed over it).
    fn write_marker(&self, state: &str) -> Result<(), SinkError> {
        let h = &self.holder;
        let mut marker = serde_json::json!({
            "state": state, "mode": h.mode, "pid": h.pid, "host": h.host, "started": h.started,
        });
        if state != "running" {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            marker["ended"] = crate::io::format::rfc3339(now as u64).into();
        }
        let path = self.target.join(MARKER);
        let temp = self.target.join(format!(".{MARKER}.new"));
        let write = || -> io::Result<()> {
            fs::write(&temp, format!("{marker}\n"))?;
            fs::File::open(&temp)?.sync_all()?;
            fs::rename(&temp, &path)?;
            sync_dir(&self.target)
        };
        write().map_err(SinkError::write(&self.shown.join(MARKER)))
    }
}

/// `--out` with its symlinks resolved (the directory a symlink names is what is replaced, beside
/// itself); its parent is created.
fn resolve(shown: &Path) -> Result<PathBuf, SinkError> {
    if fs::symlink_metadata(shown).is_ok() {
        return fs::canonicalize(shown).map_err(SinkError::write(shown));
    }
    let name = shown.file_name().ok_or_else(|| SinkError::NotAnOutput {
        path: shown.to_path_buf(),
        why: "it names no directory".to_string(),
    })?;
    let parent = match shown.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if fs::symlink_metadata(parent).is_ok_and(|m| !m.is_dir()) && !parent.is_dir() {
        return Err(SinkError::write(shown)(io::Error::from_raw_os_error(libc::ENOTDIR)));
    }
    fs::create_dir_all(parent).map_err(SinkError::write(parent))?;
    Ok(fs::canonicalize(parent).map_err(SinkError::write(parent))?.join(name))
}

/// A run stopped between the two renames of an exchange without `RENAME_EXCHANGE` left the
/// previous result at `.NAME.stockflow-old` and no `NAME`: it is put back.
fn recover_interrupted_exchange(target: &Path, old: &Path, shown: &Path) -> Result<(), SinkError> {
    if fs::symlink_metadata(target).is_err() && old.is_dir() {
        fs::rename(old, target).map_err(SinkError::write(shown))?;
        tracing::warn!("{} was being replaced when its run stopped: its previous result is back in place", shown.display());
    }
    Ok(())
}

/// The names a directory written by stockflow holds: its files, and reports (`--report
/// out/report.html`).
fn is_output_name(name: &str) -> bool {
    let table = name.strip_suffix(".jsonl").is_some_and(|t| TABLES.contains(&t) || t == "dead_letter");
    table || ["summary.json", "snapshot", MARKER].contains(&name) || name.ends_with(".html")
}

/// Whether `target` holds a previous result: refuses anything but an empty directory or one
/// holding only what stockflow writes, since replacing it deletes it.
fn check_replaceable(target: &Path, shown: &Path) -> Result<bool, SinkError> {
    let refuse = |why: String| SinkError::NotAnOutput { path: shown.to_path_buf(), why };
    let meta = match fs::symlink_metadata(target) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(SinkError::write(shown)(e)),
        Ok(meta) => meta,
    };
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".to_string()));
    }
    let mut names: Vec<String> = crate::io::fs::read_dir(target)
        .map_err(SinkError::write(shown))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names.iter().all(|n| is_output_name(n)) {
        return Ok(true);
    }
    let others: Vec<&str> = names.iter().filter(|n| !is_output_name(n)).map(String::as_str).collect();
    let more = if others.len() > 5 { format!(" and {} more", others.len() - 5) } else { String::new() };
    Err(refuse(format!("it holds {}{more}", others[..others.len().min(5)].join(", "))))
}

/// Puts the complete directory `new` at `target`: exchanged with the previous result in one
/// step, which is then removed; renamed when there is none.
fn put_in_place(new: &Path, target: &Path) -> io::Result<()> {
    if fs::symlink_metadata(target).is_err() {
        return fs::rename(new, target);
    }
    match exchange(new, target) {
        // `new` now holds the previous result.
        Ok(()) => remove_dir(new),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)) => {
            let old = sibling(target, "old");
            fs::rename(target, &old)?;
            fs::rename(new, target)?;
            remove_dir(&old)
        }
        Err(e) => Err(e),
    }
}

/// `renameat2(a, b, RENAME_EXCHANGE)`: swaps two paths atomically.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other);
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, a.as_ptr(), libc::AT_FDCWD, b.as_ptr(), libc::RENAME_EXCHANGE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a directory's entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    match fs::File::open(dir) {
        Ok(d) => d.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a directory tree; nothing there is fine.
fn remove_dir(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory => Ok(()),
        other => other,
    }
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The report: written beside its path and renamed into place, or, inside a staged `--out`,
/// written into the staging directory and published with it.
#[derive(Debug)]
struct FileTx {
    shown: PathBuf,
    write: PathBuf,
    /// Whether it lies inside the staged directory (published with it).
    inside: bool,
    existed: bool,
}

impl FileTx {
    fn begin(shown: &Path, dir: Option<&DirTx>) -> Result<FileTx, SinkError> {
        let failed = |error| SinkError::Report { path: shown.to_path_buf(), error };
        let within = dir.filter(|d| d.mode == DirMode::Replace).and_then(|d| Some((d, relative_to(shown, &d.target)?)));
        let (write, inside) = match within {
            Some((dir, rel)) => (dir.write.join(rel), true),
            None => {
                let name = shown.file_name().ok_or_else(|| failed(io::ErrorKind::InvalidInput.into()))?;
                let temp = format!(".{}.stockflow-new-{}", name.to_string_lossy(), std::process::id());
                (shown.with_file_name(temp), false)
            }
        };
        if let Some(parent) = write.parent().filter(|_| inside) {
            fs::create_dir_all(parent).map_err(failed)?;
        }
        // Fail now rather than after a long run when the report cannot be written.
        fs::File::create(&write).map_err(failed)?;
        Ok(FileTx { shown: shown.to_path_buf(), write, inside, existed: shown.exists() })
    }

    fn publish(&mut self) -> Result<(), SinkError> {
        if self.inside {
            return Ok(());
        }
        let failed = |error| SinkError::Report { path: self.shown.clone(), error };
        fs::File::open(&self.write).and_then(|f| f.sync_all()).map_err(failed)?;
        fs::rename(&self.write, &self.shown).map_err(failed)?;
        self.inside = true;
        Ok(())
    }

    fn abandon(self) -> Option<String> {
        if self.inside {
            return None;
        }
        let _ = fs::remove_file(&self.write);
        let note = if self.existed { "keeps its previous version" } else { "was not written" };
        Some(format!("{} {note}", self.shown.display()))
    }
}

/// Whether `path` lies inside the directory `dir` (both as they will be once created).
pub fn lies_inside(path: &Path, dir: &Path) -> bool {
    resolved(dir).is_some_and(|dir| relative_to(path, &dir).is_some())
}

/// `path` relative to the directory `dir` (symlinks resolved) when it lies inside it.
fn relative_to(path: &Path, dir: &Path) -> Option<PathBuf> {
    let path = resolved(path)?;
    let rel = path.strip_prefix(dir).ok()?;
    (!rel.as_os_str().is_empty()).then(|| rel.to_path_buf())
}

/// `path` made absolute, its deepest existing ancestor with symlinks resolved and the rest as
/// written.
fn resolved(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut base = absolute.as_path();
    let mut rest = Vec::new();
    while fs::symlink_metadata(base).is_err() {
        rest.push(base.file_name()?);
        base = base.parent()?;
    }
    let mut resolved = fs::canonicalize(base).ok()?;
    resolved.extend(rest.iter().rev());
    Some(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() {
                out.insert(name, fs::read_to_string(e.path()).unwrap());
            } else {
                out.insert(name, "<dir>".to_string());
            }
        }
        out
    }

    #[test]
    fn a_staged_directory_replaces_the_previous_result_only_when_published() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let plan = Plan { mode: "replay", dir: Some((&out, DirMode::Replace)), report: None };
        let first = Outputs::begin(plan).unwrap();
        fs::write(first.dir().unwrap().join("summary.json"), "first").unwrap();
        assert!(!out.exists(), "nothing in place before publishing");
        first.publish().unwrap();
        assert_eq!(files(&out), BTreeMap::from([("summary.json".to_string(), "first".to_string())]));

        // Abandoned: the first result stays, the staging directory goes.
        let second = Outputs::begin(plan).unwrap();
        let staging = second.dir().unwrap().to_path_buf();
        fs::write(staging.join("atp.jsonl"), "partial").unwrap();
        drop(second);
        assert!(!staging.exists());
        assert_eq!(files(&out)["summary.json"], "first");

        let third = Outputs::begin(plan).unwrap();
        fs::write(third.dir().unwrap().join("summary.json"), "third").unwrap();
        third.publish().unwrap();
        assert_eq!(files(&out)["summary.json"], "third");
        let siblings: Vec<String> = files(tmp.path()).into_keys().collect();
        assert_eq!(siblings, vec!["out"], "no staging, old result or lock left beside it");
    }

    #[test]
    fn a_directory_that_is_no_earlier_output_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        fs::create_dir(&home).unwrap();
        fs::write(home.join("thesis.tex"), "years of work").unwrap();
        // Even beside what looks like an earlier output.
        fs::write(home.join("summary.json"), "{}").unwrap();
        let plan = Plan { mode: "replay", dir: Some((&home, DirMode::Replace)), report: None };
        let err = Outputs::begin(plan).unwrap_err().to_string();
        assert!(err.contains("is not an output of stockflow (it holds thesis.tex)"), "{err}");
        assert_eq!(files(&home)["thesis.tex"], "years of work");
        assert!(lies_inside(&home.join("ckpt/at-1"), &home) && !lies_inside(&tmp.path().join("ckpt"), &home));
    }

    #[test]
    fn a_directory_written_in_place_carries_its_state_in_the_marker() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("summary.json"), "an earlier run").unwrap();
        let plan = Plan { mode: "run", dir: Some((&out, DirMode::InPlace)), report: None };
        let marker = || -> serde_json::Value { serde_json::from_str(&fs::read_to_string(out.join(MARKER)).unwrap()).unwrap() };
        let running = Outputs::begin(plan).unwrap();
        assert_eq!(running.dir(), Some(fs::canonicalize(&out).unwrap().as_path()));
        assert_eq!(marker()["state"], "running");
        assert_eq!(marker()["pid"], std::process::id());
        assert!(!out.join("summary.json").exists(), "an earlier run's summary is gone while this one runs");
        running.publish().unwrap();
        assert_eq!(marker()["state"], "complete");
        drop(Outputs::begin(plan).unwrap());
        assert_eq!(marker()["state"], "incomplete");
    }

    #[test]
    fn a_report_is_renamed_into_place_or_published_inside_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (out, beside, inside) = (tmp.path().join("out"), tmp.path().join("r.html"), tmp.path().join("out/r.html"));
        fs::write(&beside, "old report").unwrap();
        let plan = Plan { mode: "replay", dir: Some((&out, DirMode::Replace)), report: Some(&beside) };
        let run = Outputs::begin(plan).unwrap();
        fs::write(run.report().unwrap(), "new report").unwrap();
        drop(run);
        assert_eq!(fs::read_to_string(&beside).unwrap(), "old report");
        let run = Outputs::begin(plan).unwrap();
        fs::write(run.report().unwrap(), "new report").unwrap();
        run.publish().unwrap();
        assert_eq!(fs::read_to_string(&beside).unwrap(), "new report");

        let plan = Plan { report: Some(&inside), ..plan };
        let run = Outputs::begin(plan).unwrap();
        assert!(run.report().unwrap().starts_with(run.dir().unwrap()));
        fs::write(run.report().unwrap(), "inside").unwrap();
        run.publish().unwrap();
        assert_eq!(fs::read_to_string(&inside).unwrap(), "inside");
    }
}
