//! The directory sink: SPEC §4's change streams as JSON-lines files, then `dead_letter.jsonl`,
//! `snapshot/` and `summary.json` when the run ends.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use dataflows::model::{DeadLetter, Millis};

use super::{Sink, Snapshot, Summary, TickBatch};
use crate::io::format;

/// Writes a run's outputs into one directory.
pub struct DirSink {
    dir: PathBuf,
    sources: Vec<String>,
    atp: BufWriter<File>,
    low_stock: BufWriter<File>,
    order_plan: BufWriter<File>,
    network_atp: BufWriter<File>,
    line: Vec<u8>,
}

fn create(dir: &Path, name: &str) -> std::io::Result<BufWriter<File>> {
    let path = dir.join(name);
    let file = File::create(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    Ok(BufWriter::with_capacity(1 << 20, file))
}

impl DirSink {
    /// Creates `dir` (and `dir/snapshot`) and the change-stream files. `sources` names the
    /// source ids, for dead letters.
    pub fn create(dir: &Path, sources: Vec<String>) -> std::io::Result<Self> {
        fs::create_dir_all(dir.join("snapshot"))
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))?;
        Ok(DirSink {
            dir: dir.to_path_buf(),
            sources,
            atp: create(dir, "atp.jsonl")?,
            low_stock: create(dir, "low_stock.jsonl")?,
            order_plan: create(dir, "order_plan.jsonl")?,
            network_atp: create(dir, "network_atp.jsonl")?,
            line: Vec::new(),
        })
    }

    /// Writes out the buffered change streams: `run` does so after every tick, so the files
    /// can be followed while it runs.
    pub fn flush(&mut self) -> std::io::Result<()> {
        for w in [&mut self.atp, &mut self.low_stock, &mut self.order_plan, &mut self.network_atp] {
            w.flush()?;
        }
        Ok(())
    }
}

/// Writes the snapshot files into `dir/snapshot/`.
pub fn write_snapshot(dir: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let mut buf = Vec::new();
    for (key, value) in &snapshot.atp {
        format::atp(&mut buf, None, key, Some(value));
    }
    fs::write(dir.join("atp.jsonl"), &buf)?;
    buf.clear();
    for (key, view) in &snapshot.low_stock {
        format::low_stock(&mut buf, None, key, view, None);
    }
    fs::write(dir.join("low_stock.jsonl"), &buf)?;
    buf.clear();
    for (key, line) in &snapshot.order_plan {
        format::order_plan(&mut buf, None, key, Some(line));
    }
    fs::write(dir.join("order_plan.jsonl"), &buf)?;
    buf.clear();
    for (sku, atp) in &snapshot.network_atp {
        format::network_atp(&mut buf, None, sku, Some(*atp));
    }
    fs::write(dir.join("network_atp.jsonl"), &buf)
}

impl Sink for DirSink {
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()> {
        let t = Some(time);
        let line = &mut self.line;
        line.clear();
        for c in &batch.atp {
            format::atp(line, t, &c.key, c.value.as_ref());
        }
        self.atp.write_all(line)?;
        line.clear();
        for tr in &batch.low_stock {
            format::transition(line, tr);
        }
        self.low_stock.write_all(line)?;
        line.clear();
        for c in &batch.order_plan {
            format::order_plan(line, t, &c.key, c.value.as_ref());
        }
        self.order_plan.write_all(line)?;
        line.clear();
        for c in &batch.network_atp {
            format::network_atp(line, t, &c.key, c.value);
        }
        self.network_atp.write_all(line)
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> std::io::Result<()> {
        self.flush()?;
        let mut buf = Vec::new();
        for d in dead_letters {
            format::dead_letter(&mut buf, &self.sources[d.position.source as usize], d);
        }
        fs::write(self.dir.join("dead_letter.jsonl"), &buf)?;
        write_snapshot(&self.dir.join("snapshot"), snapshot)?;
        fs::write(self.dir.join("summary.json"), summary.to_json())
    }
}
