//! The directory sink: the change streams of docs/format.md as JSON-lines files, then
//! `dead_letter.jsonl`, `snapshot/` and `summary.json` when the run ends.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dataflows::model::{DeadLetter, Millis};

use super::lines::{LineSink, Lines, TABLES};
use super::{SinkError, Summary};
use crate::io::format;

/// One change-stream file being written.
struct StreamFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl StreamFile {
    fn create(dir: &Path, name: &str) -> Result<Self, SinkError> {
        let path = dir.join(name);
        let file = File::create(&path).map_err(SinkError::write(&path))?;
        Ok(StreamFile { writer: BufWriter::with_capacity(1 << 20, file), path })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.writer.write_all(bytes).map_err(SinkError::write(&self.path))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(SinkError::write(&self.path))
    }
}

/// Writes a run's outputs into one directory.
pub struct DirSink {
    dir: PathBuf,
    sources: Vec<String>,
    /// The change-stream files, in [`TABLES`] order.
    streams: Vec<StreamFile>,
}

impl DirSink {
    /// Creates `dir` (and `dir/snapshot`) and the change-stream files. `sources` names the
    /// source ids, for dead letters.
    pub fn create(dir: &Path, sources: Vec<String>) -> Result<Self, SinkError> {
        let snapshot = dir.join("snapshot");
        fs::create_dir_all(&snapshot).map_err(SinkError::write(&snapshot))?;
        let streams =
            TABLES.iter().map(|table| StreamFile::create(dir, &format!("{table}.jsonl"))).collect::<Result<_, _>>()?;
        Ok(DirSink { dir: dir.to_path_buf(), sources, streams })
    }
}

/// Writes `bytes` to `path`, naming the path in an error.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    fs::write(path, bytes).map_err(SinkError::write(path))
}

impl LineSink for DirSink {
    fn tick(&mut self, _time: Millis, lines: &Lines) -> Result<(), SinkError> {
        for (file, bytes) in self.streams.iter_mut().zip(&lines.tables) {
            file.write(bytes)?;
        }
        Ok(())
    }

    /// Writes out the buffered change streams, so the files can be followed while `run` runs.
    fn commit(&mut self) -> Result<(), SinkError> {
        self.streams.iter_mut().try_for_each(StreamFile::flush)
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Lines, summary: &Summary) -> Result<(), SinkError> {
        self.commit()?;
        let mut buf = Vec::new();
        for d in dead_letters {
            format::dead_letter(&mut buf, &self.sources[d.position.source as usize], d);
        }
        write_file(&self.dir.join("dead_letter.jsonl"), &buf)?;
        for (table, bytes) in TABLES.iter().zip(&snapshot.tables) {
            write_file(&self.dir.join("snapshot").join(format!("{table}.jsonl")), bytes)?;
        }
        write_file(&self.dir.join("summary.json"), summary.to_json().as_bytes())
    }
}
