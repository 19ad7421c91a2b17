//! The lock of an output directory: a file beside it, `.NAME.stockflow-lock`, held with
//! `flock` for as long as a run writes the directory, and holding the holder's identity (pid,
//! host, command, start) so that a second run is refused with a message naming the first. A lock
//! file left by a process that died (no `flock` on it any more) is taken over with a warning when
//! it was written on this host; one written on another host is refused with what to check, since
//! this host cannot tell whether that process still runs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Who holds (or held) an output directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// The host name.
    pub host: String,
    /// The command: `replay`, `run`, `batch`.
    pub mode: String,
    /// When the run started, RFC 3339.
    pub started: String,
}

impl Holder {
    /// This process, running `mode`.
    pub fn this_process(mode: &str) -> Holder {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Holder { pid: std::process::id(), host: host_name(), mode: mode.to_string(), started: crate::io::format::rfc3339(started) }
    }

    fn describe(&self) -> String {
        format!("stockflow {} (pid {} on host {}, started {})", self.mode, self.pid, self.host, self.started)
    }
}

/// Why an output directory cannot be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds it.
    #[error("{target} is being written by {holder}; wait for that run to end, stop it, or choose another --out (lock file {lock})")]
    Held {
        /// The output directory.
        target: String,
        /// The holder's identity.
        holder: String,
        /// The lock file.
        lock: String,
    },
    /// A lock file of another host, which this host cannot check.
    #[error("{target} is locked by {holder}, which this host cannot check; if no stockflow writes {target} there any more, remove {lock}")]
    OtherHost {
        /// The output directory.
        target: String,
        /// The holder's identity.
        holder: String,
        /// The lock file.
        lock: String,
    },
    /// The lock file cannot be created, read or written.
    #[error("cannot lock {target}: {path}: {error}")]
    Io {
        /// The output directory.
        target: String,
        /// The lock file.
        path: String,
        /// What the system said.
        error: std::io::Error,
    },
}

/// A held lock, released (the file removed) when dropped.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: File,
}

impl OutputLock {
    /// Locks the output directory `target` with the lock file `path`, writing `holder` into it.
    pub fn acquire(path: &Path, target: &Path, holder: &Holder) -> Result<OutputLock, LockError> {
        let io = |error| LockError::Io { target: target.display().to_string(), path: path.display().to_string(), error };
        // A file removed by its holder between our open and our flock is not the lock any more:
        // open it again (a few times at most; each round means another run just finished).
        for _ in 0..8 {
            let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
            let locked = try_flock(&file).map_err(io)?;
            let previous = read_holder(&mut file).map_err(io)?;
            if !locked {
                let holder = previous.map_or("another stockflow".to_string(), |h| h.describe());
                return Err(LockError::Held { target: target.display().to_string(), holder, lock: path.display().to_string() });
            }
            if !same_file(&file, path) {
                continue;
            }
            if let Some(stale) = previous {
                take_over(&stale, path, target)?;
            }
            write_holder(&mut file, holder).map_err(io)?;
            return Ok(OutputLock { path: path.to_path_buf(), file });
        }
        Err(io(std::io::Error::other("the lock file kept being replaced; is another stockflow starting and stopping on it?")))
    }
}

/// Accepts the lock file of a process that died, saying so; refuses one of another host.
fn take_over(stale: &Holder, path: &Path, target: &Path) -> Result<(), LockError> {
    if stale.host != host_name() {
        let (target, lock) = (target.display().to_string(), path.display().to_string());
        return Err(LockError::OtherHost { target, holder: stale.describe(), lock });
    }
    tracing::warn!(
        "{} was left locked by {}, which no longer runs; taking the lock over (its unfinished output is removed)",
        target.display(),
        stale.describe()
    );
    Ok(())
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Removed while still held, so that no one takes over a file about to disappear.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.set_len(0);
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `false` when another process holds it. A filesystem without
/// locks counts as unlocked: the holder's identity in the file is then what protects it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor this function borrows.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL) => Ok(!holder_alive(file)),
        _ => Err(error),
    }
}

/// Without `flock`: whether the file names a live process of this host.
fn holder_alive(file: &File) -> bool {
    let mut file = file;
    let mut text = String::new();
    let _ = file.rewind().and_then(|()| file.read_to_string(&mut text));
    serde_json::from_str::<Holder>(text.trim()).is_ok_and(|h| h.host != host_name() || pid_alive(h.pid))
}

/// Whether process `pid` exists on this host.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 checks for the process without sending anything.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The holder written in the lock file, if any (an empty or unreadable file holds none).
fn read_holder(file: &mut File) -> std::io::Result<Option<Holder>> {
    let mut text = String::new();
    file.rewind()?;
    file.read_to_string(&mut text)?;
    Ok(serde_json::from_str(text.trim()).ok())
}

fn write_holder(file: &mut File, holder: &Holder) -> std::io::Result<()> {
    let mut line = serde_json::to_string(holder).map_err(std::io::Error::other)?;
    line.push('\n');
    file.set_len(0)?;
    file.rewind()?;
    file.write_all(line.as_bytes())?;
    file.sync_all()
}

/// Whether `path` still names the open `file`.
fn same_file(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// This machine's host name.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is writable for its length.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_refused_naming_its_holder_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let (path, target) = (dir.path().join(".out.stockflow-lock"), dir.path().join("out"));
        let holder = Holder::this_process("replay");
        let lock = OutputLock::acquire(&path, &target, &holder).unwrap();
        // flock locks belong to the open file: a second open in this process conflicts too.
        let err = OutputLock::acquire(&path, &target, &Holder::this_process("run")).unwrap_err().to_string();
        assert!(err.contains(&format!("stockflow replay (pid {} on host {}", holder.pid, holder.host)), "{err}");
        assert!(err.contains("wait for that run to end"), "{err}");
        drop(lock);
        assert!(!path.exists());
        OutputLock::acquire(&path, &target, &holder).unwrap();
    }

    #[test]
    fn a_dead_holder_of_this_host_is_taken_over_and_one_of_another_host_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (path, target) = (dir.path().join(".out.stockflow-lock"), dir.path().join("out"));
        let mut dead = Holder::this_process("replay");
        dead.pid = u32::MAX / 2;
        std::fs::write(&path, serde_json::to_string(&dead).unwrap()).unwrap();
        let lock = OutputLock::acquire(&path, &target, &Holder::this_process("batch")).unwrap();
        let written: Holder = serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!((written.pid, written.mode.as_str()), (std::process::id(), "batch"));
        drop(lock);

        let elsewhere = Holder { host: "another-host".into(), ..dead };
        std::fs::write(&path, serde_json::to_string(&elsewhere).unwrap()).unwrap();
        let err = OutputLock::acquire(&path, &target, &Holder::this_process("replay")).unwrap_err().to_string();
        assert!(err.contains("on host another-host") && err.contains(&format!("remove {}", path.display())), "{err}");
    }
}
