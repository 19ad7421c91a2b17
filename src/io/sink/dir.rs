//! The directory sink: the change streams of docs/format.md as JSON-lines files, then
//! `dead_letter.jsonl`, `snapshot/` and `summary.json` when the run ends, each synced to disk
//! before the run's directory is put in place ([`super::staging`]).

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dataflows::model::{DeadLetter, Millis};

use super::lines::{LineSink, Lines, TABLES};
use super::{SinkError, Summary};
use crate::io::format;

/// One change-stream file being written.
struct StreamFile {
    /// The file's path in `--out`, for messages.
    shown: PathBuf,
    writer: BufWriter<File>,
}

impl StreamFile {
    fn create(dir: &Path, shown: &Path, name: &str) -> Result<Self, SinkError> {
        let shown = shown.join(name);
        let file = File::create(dir.join(name)).map_err(SinkError::write(&shown))?;
        Ok(StreamFile { writer: BufWriter::with_capacity(1 << 20, file), shown })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        self.writer.write_all(bytes).map_err(SinkError::write(&self.shown))
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.writer.flush().map_err(SinkError::write(&self.shown))
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        self.flush()?;
        self.writer.get_ref().sync_all().map_err(SinkError::write(&self.shown))
    }
}

/// Writes a run's outputs into one directory.
pub struct DirSink {
    /// Where the files are written (a staging directory, or `--out` itself).
    dir: PathBuf,
    /// `--out` as given: errors name the files there, where the user looks for them.
    shown: PathBuf,
    sources: Vec<String>,
    /// The change-stream files, in [`TABLES`] order.
    streams: Vec<StreamFile>,
}

impl DirSink {
    /// Creates `dir/snapshot` and the change-stream files in `dir`, which stands for `shown`
    /// (`--out`) in messages. `sources` names the source ids, for dead letters.
    pub fn create(dir: &Path, shown: &Path, sources: Vec<String>) -> Result<Self, SinkError> {
        let snapshot = dir.join("snapshot");
        fs::create_dir_all(&snapshot).map_err(SinkError::write(&shown.join("snapshot")))?;
        let streams = TABLES
            .iter()
            .map(|table| StreamFile::create(dir, shown, &format!("{table}.jsonl")))
            .collect::<Result<_, _>>()?;
        Ok(DirSink { dir: dir.to_path_buf(), shown: shown.to_path_buf(), sources, streams })
    }

    /// Writes the file `name` of the directory whole with `fill` and syncs it, naming it in
    /// an error.
    fn write_file(
        &self,
        name: &str,
        fill: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
    ) -> Result<(), SinkError> {
        let write = || -> std::io::Result<()> {
            let mut file = BufWriter::with_capacity(1 << 20, File::create(self.dir.join(name))?);
            fill(&mut file)?;
            file.into_inner().map_err(|e| e.into_error())?.sync_all()
        };
        write().map_err(SinkError::write(&self.shown.join(name)))
    }
}

impl LineSink for DirSink {
    fn tick(&mut self, _time: Millis, lines: &Lines<'_>) -> Result<(), SinkError> {
        for (file, table) in self.streams.iter_mut().zip(&lines.tables) {
            table.write(|bytes| file.write(bytes))?;
        }
        Ok(())
    }

    /// Writes out the buffered change streams, so the files can be followed while `run` runs.
    fn commit(&mut self) -> Result<(), SinkError> {
        self.streams.iter_mut().try_for_each(StreamFile::flush)
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Lines<'_>, summary: &Summary) -> Result<(), SinkError> {
        self.streams.iter_mut().try_for_each(StreamFile::sync)?;
        let mut buf = Vec::new();
        for d in dead_letters {
            format::dead_letter(&mut buf, &self.sources[d.position.source as usize], d);
        }
        self.write_file("dead_letter.jsonl", |file| file.write_all(&buf))?;
        for (name, table) in TABLES.iter().zip(&snapshot.tables) {
            self.write_file(&format!("snapshot/{name}.jsonl"), |file| table.write(|bytes| file.write_all(bytes)))?;
        }
        self.write_file("summary.json", |file| file.write_all(summary.to_json().as_bytes()))
    }
}
