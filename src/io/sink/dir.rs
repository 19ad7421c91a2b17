//! The directory sink: the change streams of docs/format.md as JSON-lines files, then
//! `dead_letter.jsonl`, `snapshot/` and `summary.json` when the run ends.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dataflows::model::{DeadLetter, Millis};

use super::{Sink, SinkError, Snapshot, Summary, TickBatch};
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
    atp: StreamFile,
    low_stock: StreamFile,
    order_plan: StreamFile,
    network_atp: StreamFile,
    line: Vec<u8>,
}

impl DirSink {
    /// Creates `dir` (and `dir/snapshot`) and the change-stream files. `sources` names the
    /// source ids, for dead letters.
    pub fn create(dir: &Path, sources: Vec<String>) -> Result<Self, SinkError> {
        let snapshot = dir.join("snapshot");
        fs::create_dir_all(&snapshot).map_err(SinkError::write(&snapshot))?;
        Ok(DirSink {
            dir: dir.to_path_buf(),
            sources,
            atp: StreamFile::create(dir, "atp.jsonl")?,
            low_stock: StreamFile::create(dir, "low_stock.jsonl")?,
            order_plan: StreamFile::create(dir, "order_plan.jsonl")?,
            network_atp: StreamFile::create(dir, "network_atp.jsonl")?,
            line: Vec::new(),
        })
    }

    /// Writes out the buffered change streams, so the files can be followed while `run` runs.
    fn flush(&mut self) -> Result<(), SinkError> {
        for w in [&mut self.atp, &mut self.low_stock, &mut self.order_plan, &mut self.network_atp] {
            w.flush()?;
        }
        Ok(())
    }
}

/// Writes `bytes` to `path`, naming the path in an error.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SinkError> {
    fs::write(path, bytes).map_err(SinkError::write(path))
}

/// Writes the snapshot files into `dir/snapshot/`.
pub fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> Result<(), SinkError> {
    let mut buf = Vec::new();
    for (key, value) in &snapshot.atp {
        format::atp(&mut buf, None, key, Some(value));
    }
    write_file(&dir.join("atp.jsonl"), &buf)?;
    buf.clear();
    for (key, view) in &snapshot.low_stock {
        format::low_stock(&mut buf, None, key, view, None);
    }
    write_file(&dir.join("low_stock.jsonl"), &buf)?;
    buf.clear();
    for (key, line) in &snapshot.order_plan {
        format::order_plan(&mut buf, None, key, Some(line));
    }
    write_file(&dir.join("order_plan.jsonl"), &buf)?;
    buf.clear();
    for (sku, atp) in &snapshot.network_atp {
        format::network_atp(&mut buf, None, sku, Some(*atp));
    }
    write_file(&dir.join("network_atp.jsonl"), &buf)
}

impl Sink for DirSink {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError> {
        let t = Some(time);
        let line = &mut self.line;
        line.clear();
        for c in &batch.atp {
            format::atp(line, t, &c.key, c.value.as_ref());
        }
        self.atp.write(line)?;
        line.clear();
        for tr in &batch.low_stock {
            format::transition(line, tr);
        }
        self.low_stock.write(line)?;
        line.clear();
        for c in &batch.order_plan {
            format::order_plan(line, t, &c.key, c.value.as_ref());
        }
        self.order_plan.write(line)?;
        line.clear();
        for c in &batch.network_atp {
            format::network_atp(line, t, &c.key, c.value);
        }
        self.network_atp.write(line)
    }

    fn commit(&mut self, _offsets: &[(String, i32, i64)]) -> Result<(), SinkError> {
        self.flush()
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> Result<(), SinkError> {
        self.flush()?;
        let mut buf = Vec::new();
        for d in dead_letters {
            format::dead_letter(&mut buf, &self.sources[d.position.source as usize], d);
        }
        write_file(&self.dir.join("dead_letter.jsonl"), &buf)?;
        write_snapshot(&self.dir.join("snapshot"), snapshot)?;
        write_file(&self.dir.join("summary.json"), summary.to_json().as_bytes())
    }
}
