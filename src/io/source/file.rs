//! Fixture-file transport: the lines of one file with their 1-based line numbers.
//!
//! Knows nothing of JSON: it yields raw bytes (line ending and one trailing CR removed) and
//! skips blank lines while still counting them, as SPEC §1 asks.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Reads one fixture file line by line.
pub struct LineReader {
    path: PathBuf,
    reader: BufReader<File>,
    line_number: u64,
    buffer: Vec<u8>,
    bytes_read: u64,
}

/// Whether a line holds only spaces, tabs or CRs: not a message, but it keeps its number.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The message a line (without its `\n`) holds: the line without one trailing CR, or `None`
/// when it is blank.
pub fn message_of(line: &[u8]) -> Option<&[u8]> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    (!is_blank(line)).then_some(line)
}

impl LineReader {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::open(path)?;
        Ok(LineReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line_number: 0,
            buffer: Vec::with_capacity(4096),
            bytes_read: 0,
        })
    }

    /// Bytes consumed so far, line endings included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next non-blank line as (line number, bytes), or `None` at the end of the file.
    pub fn next_message(&mut self) -> std::io::Result<Option<(u64, &[u8])>> {
        loop {
            self.buffer.clear();
            let n = self.reader.read_until(b'\n', &mut self.buffer).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!("error reading {} after line {}: {e}", self.path.display(), self.line_number),
                )
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes_read += n as u64;
            self.line_number += 1;
            let line = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            if let Some(end) = message_of(line).map(<[u8]>::len) {
                return Ok(Some((self.line_number, &self.buffer[..end])));
            }
        }
    }
}
