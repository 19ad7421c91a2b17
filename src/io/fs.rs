//! File operations whose errors name the file: `Permission denied (os error 13)` alone does not
//! say which of a run's dozen files could not be written. Every error keeps its
//! [`std::io::ErrorKind`], so callers still tell a missing file from a full disk. (The sinks
//! and sources name theirs in their own typed errors.)

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// An IO error with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {error}", path.display())]
pub struct FileError {
    /// `create`, `write`, `read`, ...: the verb of the message.
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// What the operating system said (not a `source`: the message already quotes it, and
    /// error chains would print it twice).
    pub error: io::Error,
}

/// Wraps `error` so that it names `path`, keeping its kind. An error that already names its
/// path (it came from this module) is passed on as it is.
pub fn named<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> io::Error + 'p {
    move |error| {
        if error.get_ref().is_some_and(|inner| inner.is::<FileError>()) {
            return error;
        }
        io::Error::new(error.kind(), FileError { action, path: path.to_path_buf(), error })
    }
}

/// `File::create`, naming the path in its error.
pub fn create(path: &Path) -> io::Result<File> {
    File::create(path).map_err(named("create", path))
}

/// `fs::create_dir_all`, naming the path in its error.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path).map_err(named("create the directory", path))
}

/// `fs::read_dir`, naming the path in its error.
pub fn read_dir(path: &Path) -> io::Result<std::fs::ReadDir> {
    std::fs::read_dir(path).map_err(named("list", path))
}

/// Makes a write past the file-size limit (`ulimit -f`) an error that names the file instead
/// of a `SIGXFSZ` that kills the process without a word.
pub fn report_file_size_limit() {
    // SAFETY: setting a signal's disposition to "ignore" has no handler to race with.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_path_once_and_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("f.jsonl");
        let err = create(&missing).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let text = err.to_string();
        assert!(text.starts_with(&format!("cannot create {}: ", missing.display())), "{text}");
        // Naming it again changes nothing.
        let again = named("write", &missing)(err).to_string();
        assert_eq!(again, text);
    }
}
