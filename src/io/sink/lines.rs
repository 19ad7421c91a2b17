//! Output records formatted where they are computed: each worker formats the records of the keys
//! it owns into [`Run`]s (one per output table, sorted by key), and one writer merges the
//! workers' runs of a tick into the bytes of the output files: no record is formatted on a
//! worker that does not own it, and the writer only compares keys and copies bytes.

use dataflows::model::{Millis, Name};
use dataflows::Key;
use serde::{Deserialize, Serialize};

use super::{SinkError, Summary, TickBatch};
use crate::io::format;

/// The four output tables, in file order.
pub const TABLES: [&str; 4] = ["atp", "low_stock", "order_plan", "network_atp"];

/// One worker's records of one table at one tick (or of the final snapshot), formatted as
/// JSON lines and sorted by key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The tick, or `None` for the final snapshot.
    pub tick: Option<Millis>,
    /// Index into [`TABLES`].
    pub table: u8,
    /// Each record's key (`network_atp`: the sku and an empty name), in order.
    pub keys: Vec<Key>,
    /// Where each record's line ends in `bytes`.
    pub ends: Vec<u32>,
    /// The lines, each ending in `\n`.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Run {
    fn new(tick: Option<Millis>, table: usize) -> Self {
        Run { tick, table: table as u8, ..Run::default() }
    }

    /// An empty run of the final snapshot's `table`.
    pub fn snapshot(table: usize) -> Self {
        Run::new(None, table)
    }

    /// Appends one record: `write` formats its line.
    pub fn push(&mut self, key: &Key, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.bytes);
        self.keys.push(key.clone());
        self.ends.push(self.bytes.len() as u32);
    }

    fn line(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// Whether the run holds no record.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// A tick's (already sorted) records as one run per table; empty tables are left out.
pub fn runs_of_tick(time: Millis, batch: &TickBatch) -> Vec<Run> {
    let t = Some(time);
    let mut runs: Vec<Run> = (0..TABLES.len()).map(|table| Run::new(t, table)).collect();
    for c in &batch.atp {
        runs[0].push(&c.key, |out| format::atp(out, t, &c.key, c.value.as_ref()));
    }
    for tr in &batch.low_stock {
        runs[1].push(&tr.key, |out| format::transition(out, tr));
    }
    for c in &batch.order_plan {
        runs[2].push(&c.key, |out| format::order_plan(out, t, &c.key, c.value.as_ref()));
    }
    for c in &batch.network_atp {
        runs[3].push(&(c.key.clone(), Name::default()), |out| format::network_atp(out, t, &c.key, c.value));
    }
    runs.retain(|run| !run.is_empty());
    runs
}

/// Merges runs of one table (each sorted by key) into one sequence of lines in key order. Keys
/// are unique across runs (each key has one owner), so the order is total.
pub fn merge(runs: &[&Run], out: &mut Vec<u8>) {
    let mut next = vec![0usize; runs.len()];
    loop {
        let least = (0..runs.len())
            .filter(|&r| next[r] < runs[r].keys.len())
            .min_by(|&a, &b| runs[a].keys[next[a]].cmp(&runs[b].keys[next[b]]));
        let Some(r) = least else { break };
        out.extend_from_slice(runs[r].line(next[r]));
        next[r] += 1;
    }
}

/// The lines of the four tables at one tick (or of the final snapshot), in key order.
#[derive(Debug, Default)]
pub struct Lines {
    /// Per table of [`TABLES`], its lines.
    pub tables: [Vec<u8>; 4],
}

impl Lines {
    /// Merges every table of `runs` (any tables, any workers).
    pub fn merged(runs: &[Run]) -> Lines {
        let mut lines = Lines::default();
        for (table, out) in lines.tables.iter_mut().enumerate() {
            let of_table: Vec<&Run> = runs.iter().filter(|r| r.table as usize == table).collect();
            merge(&of_table, out);
        }
        lines
    }
}

/// Where formatted, merged output goes: the directory of output files, or stdout.
pub trait LineSink {
    /// Writes tick `time`'s lines.
    fn tick(&mut self, time: Millis, lines: &Lines) -> Result<(), SinkError>;

    /// Makes the ticks given so far durable (a flush).
    fn commit(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Ends the run: dead letters in position order (formatted by the sink, which knows the
    /// source names), the final snapshot's lines and the summary.
    fn finish(&mut self, dead_letters: &[dataflows::model::DeadLetter], snapshot: &Lines, summary: &Summary)
        -> Result<(), SinkError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(keys: &[(&str, &str)]) -> Run {
        let mut run = Run::new(Some(1000), 0);
        for (sku, loc) in keys {
            let key: Key = (Name::from(*sku), Name::from(*loc));
            run.push(&key, |out| out.extend_from_slice(format!("{sku}@{loc}\n").as_bytes()));
        }
        run
    }

    #[test]
    fn runs_merge_in_key_order_part_by_part() {
        // Part by part, bytewise: ("a", "b") before ("a@", "") although "a@b" > "a@".
        let left = run(&[("a", "b"), ("b", "a")]);
        let right = run(&[("a", "c"), ("a@", ""), ("c", "")]);
        let mut out = Vec::new();
        merge(&[&left, &right], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a@b\na@c\na@@\nb@a\nc@\n");
        let mut out = Vec::new();
        merge(&[], &mut out);
        assert!(out.is_empty());
    }
}
