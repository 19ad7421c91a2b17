//! Fixture-file transport: the lines of one file with their 1-based line numbers, and the
//! [`FileSource`] of one worker's share of the files.
//!
//! Knows nothing of JSON: it yields raw bytes (line ending and one trailing CR removed) and
//! skips blank lines while still counting them, as docs/format.md says.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataflows::clock::Ticks;
use dataflows::model::{Event, Millis};

use super::{Decoded, Discovery, NewPartition, PartitionDecoder, ReadPosition, Source, SourceError};
use crate::config::InputFile;

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
    pub fn open(path: &Path) -> Result<Self, SourceError> {
        let file = File::open(path).map_err(|error| SourceError::Open { path: path.to_path_buf(), error })?;
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
    pub fn next_message(&mut self) -> Result<Option<(u64, &[u8])>, SourceError> {
        loop {
            self.buffer.clear();
            let n = self.reader.read_until(b'\n', &mut self.buffer).map_err(|error| SourceError::Read {
                path: self.path.clone(),
                line: self.line_number,
                error,
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

/// One file of a worker's share.
struct OpenFile {
    /// The file's source id (its index among the inputs, sorted by name).
    source: u32,
    name: String,
    lines: LineReader,
    done: bool,
}

/// A worker's share of the input files: file `i` (in name order) is read by worker
/// `i mod peers`, so files are the unit of parallel reading.
pub struct FileSource {
    files: Vec<OpenFile>,
    announced: bool,
}

impl FileSource {
    /// Opens the files of worker `index` out of `peers`.
    pub fn open(inputs: &[InputFile], index: usize, peers: usize) -> Result<Self, SourceError> {
        let mut files = Vec::new();
        for (source, input) in inputs.iter().enumerate().filter(|(source, _)| source % peers == index) {
            let lines = LineReader::open(&input.path)?;
            files.push(OpenFile { source: source as u32, name: input.name.clone(), lines, done: false });
        }
        Ok(FileSource { files, announced: false })
    }
}

impl Source for FileSource {
    fn discover(&mut self) -> Result<Discovery, SourceError> {
        if std::mem::replace(&mut self.announced, true) {
            return Ok(Discovery::Added(Vec::new()));
        }
        Ok(Discovery::Added(self.files.iter().map(|f| NewPartition { source: f.source, partition: 0 }).collect()))
    }

    fn discovery_due(&self) -> bool {
        false
    }

    /// Reads from one file only: `behind`, else the first one not at its end.
    fn read(
        &mut self,
        behind: Option<usize>,
        budget: usize,
        _wait: Duration,
        each: &mut dyn FnMut(usize, u64, &[u8]),
    ) -> Result<(u64, u64), SourceError> {
        let Some(slot) = behind.or_else(|| self.files.iter().position(|f| !f.done)) else {
            return Ok((0, 0));
        };
        let file = &mut self.files[slot];
        let before = file.lines.bytes_read();
        let mut read = 0;
        while read < budget as u64 {
            let Some((offset, raw)) = file.lines.next_message()? else {
                file.done = true;
                break;
            };
            read += 1;
            each(slot, offset, raw);
        }
        Ok((read, file.lines.bytes_read() - before))
    }

    fn exhausted(&self, slot: usize) -> bool {
        self.files[slot].done
    }

    fn idle(&mut self, _after: Duration) -> Vec<bool> {
        vec![false; self.files.len()]
    }

    fn may_be_quiet(&self) -> bool {
        false
    }

    fn commits_offsets(&self) -> bool {
        false
    }

    fn lags(&self) -> Vec<Option<u64>> {
        Vec::new()
    }

    fn position(&self, slot: usize) -> ReadPosition {
        let f = &self.files[slot];
        ReadPosition { name: f.name.clone(), partition: 0, next: f.lines.line_number as i64 + 1 }
    }

    fn commit(&mut self, _offsets: &[(usize, i64)]) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Calls `each` with every valid message within the window, decoded and stamped exactly as
/// the replay's sources do (file by file; the caller sorts if it needs SPEC order).
pub fn for_each_event(
    inputs: &[InputFile],
    lateness_ms: Millis,
    ticks: Ticks,
    mut each: impl FnMut(Event),
) -> Result<(), SourceError> {
    for (source, input) in inputs.iter().enumerate() {
        let mut lines = LineReader::open(&input.path)?;
        let mut decoder = PartitionDecoder::new(source as u32, 0, lateness_ms, ticks);
        while let Some((offset, raw)) = lines.next_message()? {
            if let Decoded::Event(event) = decoder.decode(offset, raw) {
                each(event);
            }
        }
    }
    Ok(())
}
