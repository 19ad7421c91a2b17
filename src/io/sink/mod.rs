//! Sinks: they receive the typed records of each closed tick, sorted by key, and know nothing
//! of the dataflow. `dir` writes the output files of docs/format.md, `kafka` the output topics,
//! `stdout` prints the final snapshot, `report` renders an HTML page of the run.

pub mod dir;
pub mod kafka;
pub mod lines;
pub mod lock;
pub mod report;
pub mod staging;
pub mod stdout;

use std::collections::BTreeMap;

use dataflows::allocation::PlanLine;
use dataflows::changes::Change;
use dataflows::ledger::Counter;
use dataflows::low_stock::{LowView, Transition};
use dataflows::model::{DeadLetter, Millis};
use dataflows::pipeline::Atp;
use dataflows::keys::KeyTable;
use dataflows::stash::Chunks;
use dataflows::{FastMap, Key};

use crate::io::source::SourceStats;

/// The records of one closed tick, each stream sorted by key.
#[derive(Default, Debug)]
pub struct TickBatch {
    /// `atp` changes, in the containers the row operator sent them in: the setup tick's
    /// changes (one per key) are formatted and freed a container at a time.
    pub atp: Chunks<Change<Key, Atp>>,
    /// `low_stock` transitions.
    pub low_stock: Vec<Transition>,
    /// Changes of the current LOW/OUT keys (not an output stream; feeds the snapshot).
    pub low_stock_current: Vec<Change<Key, LowView>>,
    /// `order_plan` changes, keyed by (dest, sku).
    pub order_plan: Vec<Change<Key, PlanLine>>,
    /// `network_atp` changes.
    pub network_atp: Vec<Change<dataflows::model::Name, i64>>,
}

impl TickBatch {
    /// Sorts every stream by key (SPEC §4: records at a tick come in key order).
    pub fn sort(&mut self) {
        self.atp.sort_by(|a, b| a.key.cmp(&b.key));
        self.low_stock.sort_by(|a, b| a.key.cmp(&b.key));
        self.low_stock_current.sort_by(|a, b| a.key.cmp(&b.key));
        self.order_plan.sort_by(|a, b| a.key.cmp(&b.key));
        self.network_atp.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

/// The state at the end of the window, kept up to date tick by tick.
#[derive(Default, Debug)]
pub struct Snapshot {
    /// Current ATP rows.
    pub atp: BTreeMap<Key, Atp>,
    /// Current LOW/OUT keys.
    pub low_stock: BTreeMap<Key, LowView>,
    /// Current order lines by (dest, sku).
    pub order_plan: BTreeMap<Key, PlanLine>,
    /// Current network ATP per sku.
    pub network_atp: BTreeMap<dataflows::model::Name, i64>,
}

/// How many ATP rows the final snapshot sorts at a time (~100 MB of them).
const SNAPSHOT_SLICE: usize = 1 << 20;

/// A worker's share of the final snapshot: the current value of each key whose changes this
/// worker produced. Keeping shares, instead of applying every change on one worker, spreads
/// the work and the memory over the workers; the shares meet once, at the end.
#[derive(Default)]
pub struct SnapshotShare {
    /// Current ATP rows, unless `written_atp` keeps them.
    pub atp: FastMap<Key, Atp>,
    /// The worker's key table, which keeps the written ATP rows at almost no cost (only the
    /// rows that changed since they were written are stored apart; `dataflows::keys`).
    pub written_atp: Option<KeyTable>,
    /// Current LOW/OUT keys.
    pub low_stock: FastMap<Key, LowView>,
    /// Current order lines by (dest, sku).
    pub order_plan: FastMap<Key, PlanLine>,
    /// Current network ATP per sku.
    pub network_atp: FastMap<dataflows::model::Name, i64>,
}

/// Sets `key` to `value` in `map`, removing it for `None`.
pub fn upsert<K: std::hash::Hash + Eq, V>(map: &mut FastMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => map.insert(key, v),
        None => map.remove(&key),
    };
}

fn upsert_all<'a, K: std::hash::Hash + Eq + Clone + 'a, V: Clone + 'a>(
    map: &mut FastMap<K, V>,
    changes: impl IntoIterator<Item = &'a Change<K, V>>,
) {
    for c in changes {
        upsert(map, c.key.clone(), c.value.clone());
    }
}

impl SnapshotShare {
    /// Keys per table: atp, low_stock, order_plan, network_atp (for the metrics).
    pub fn sizes(&self) -> [u64; 4] {
        let atp = self.written_atp.as_ref().map_or(self.atp.len(), KeyTable::written_rows);
        [atp, self.low_stock.len(), self.order_plan.len(), self.network_atp.len()].map(|n| n as u64)
    }

    /// A share whose ATP rows `keys` keeps.
    pub fn over_key_table(keys: KeyTable) -> Self {
        keys.track_written();
        SnapshotShare { written_atp: Some(keys), ..SnapshotShare::default() }
    }

    /// Applies the changes of tick `time`, written.
    pub fn apply(&mut self, time: Millis, batch: &TickBatch) {
        match &self.written_atp {
            Some(keys) => keys.write_atp(time, &batch.atp),
            None => upsert_all(&mut self.atp, &batch.atp),
        }
        upsert_all(&mut self.low_stock, &batch.low_stock_current);
        upsert_all(&mut self.order_plan, &batch.order_plan);
        upsert_all(&mut self.network_atp, &batch.network_atp);
    }

    /// The share as one run per table, sorted by key (snapshot records carry no `ts`).
    pub fn runs(&self) -> Vec<lines::Run> {
        use crate::io::format;
        fn sorted<K: Ord, V>(map: &FastMap<K, V>) -> Vec<(&K, &V)> {
            let mut entries: Vec<(&K, &V)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            entries
        }
        let mut runs: Vec<lines::Run> = (0..lines::TABLES.len()).map(|table| lines::Run::snapshot(table)).collect();
        let push_atp = |run: &mut lines::Run, (key, value): (Key, Atp)| {
            run.push(&key, |out| format::atp(out, None, &key, Some(&value)))
        };
        match &self.written_atp {
            Some(keys) => keys.with_written_atp(SNAPSHOT_SLICE, |len, rows| lines::fill(&mut runs[0], (len, rows), push_atp)),
            None => {
                let rows = sorted(&self.atp).into_iter().map(|(key, atp)| (key.clone(), atp.clone()));
                lines::fill(&mut runs[0], (self.atp.len(), rows), push_atp);
            }
        }
        let low_stock = sorted(&self.low_stock);
        lines::fill(&mut runs[1], (low_stock.len(), low_stock), |run, (key, view)| {
            run.push(key, |out| format::low_stock(out, None, key, view, None))
        });
        let order_plan = sorted(&self.order_plan);
        lines::fill(&mut runs[2], (order_plan.len(), order_plan), |run, (key, line)| {
            run.push(key, |out| format::order_plan(out, None, key, Some(line)))
        });
        let network_atp = sorted(&self.network_atp);
        lines::fill(&mut runs[3], (network_atp.len(), network_atp), |run, (sku, atp)| {
            run.push_names((sku, ""), |out| format::network_atp(out, None, sku, Some(*atp)))
        });
        runs
    }
}

/// The run summary (SPEC §4 `summary.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Input-side counts.
    pub sources: SourceStats,
    /// Ledger outcome counts.
    pub counters: BTreeMap<Counter, i64>,
    /// The window's end; `None` when nothing was applied and there was no `--until`.
    pub as_of: Option<Millis>,
}

impl Summary {
    /// The summary as SPEC §4's JSON object, keys sorted, one field per line.
    pub fn to_json(&self) -> String {
        let body: Vec<String> = self.fields().iter().map(|(k, v)| format!(" \"{k}\": {v}")).collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    /// The summary's fields in key order, each with its JSON value.
    pub fn fields(&self) -> [(&'static str, String); 10] {
        let counter = |c| self.counters.get(&c).copied().unwrap_or(0);
        let s = &self.sources;
        let as_of = self.as_of.map_or("null".to_string(), |t| t.to_string());
        [
            ("absorbed", counter(Counter::Absorbed).to_string()),
            ("applied", s.applied.to_string()),
            ("as_of", as_of),
            ("beyond_window", s.beyond_window.to_string()),
            ("duplicate", counter(Counter::Duplicate).to_string()),
            ("expired_on_arrival", counter(Counter::ExpiredOnArrival).to_string()),
            ("late", s.late.to_string()),
            ("orphan", counter(Counter::Orphan).to_string()),
            ("read", s.read.to_string()),
            ("rejected", s.rejected.to_string()),
        ]
    }
}

/// Where a run's results go. The harness calls, in order: [`Sink::tick`] for each closed tick
/// (in time order), [`Sink::dead_letters`] as dead letters arrive, [`Sink::commit`] after each
/// drained batch of ticks, and [`Sink::finish`] once, when the run ends.
pub trait Sink {
    /// Start-up that must run in step with the other workers' sinks: the harness calls stages
    /// 0, 1 and 2 in order, every worker finishing one before any starts the next.
    fn start(&mut self, _stage: usize) -> Result<(), SinkError> {
        Ok(())
    }

    /// Writes the records of closed tick `time` (already sorted).
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> Result<(), SinkError>;

    /// New dead letters, in position order, as they arrive. A sink that writes them only at
    /// the end (in [`Sink::finish`]) ignores these.
    fn dead_letters(&mut self, _dead_letters: &[DeadLetter]) -> Result<(), SinkError> {
        Ok(())
    }

    /// Makes the ticks and dead letters given so far durable (a flush; a Kafka transaction
    /// that also commits `offsets`: (input topic, partition, next offset) covered by them).
    fn commit(&mut self, _offsets: &[(String, i32, i64)]) -> Result<(), SinkError> {
        Ok(())
    }

    /// The least tick not yet durably written (records unacknowledged, a transaction open);
    /// `None` when every tick given so far is.
    fn unacknowledged(&self) -> Result<Option<Millis>, SinkError> {
        Ok(None)
    }

    /// Ends the run: every dead letter in position order, the final snapshot and the summary.
    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> Result<(), SinkError>;
}

/// Why a sink cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file of an output directory or report cannot be written.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// What the system said (part of the message, so not a `source`: it is said once).
        error: std::io::Error,
    },
    /// The HTML report cannot be written.
    #[error("cannot write the report {path}: {error}")]
    Report {
        /// The report file.
        path: std::path::PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// Another run holds the output directory, or its lock cannot be taken.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// `--out` names something that is not an earlier output, which replacing would delete.
    #[error("{} exists and is not an output of stockflow ({why}); a run replaces --out whole once it completes: choose a new or empty directory, or remove this one", path.display())]
    NotAnOutput {
        /// `--out`.
        path: std::path::PathBuf,
        /// What it is or holds.
        why: String,
    },
    /// The complete result could not be put in place.
    #[error("cannot put the new result in place at {}: {error}", path.display())]
    Publish {
        /// `--out`.
        path: std::path::PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// Standard output is failing.
    #[error("cannot write to standard output: {0}")]
    Stdout(std::io::Error),
    /// The report sink cannot read the inputs it counts messages of.
    #[error(transparent)]
    Input(#[from] crate::io::source::SourceError),
    /// The Kafka producer failed in a way that retrying does not mend; the message says what
    /// was not committed and what a restart does.
    #[error("{0}")]
    Kafka(String),
}

impl SinkError {
    /// A write error of `path`.
    pub fn write(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
        move |error| SinkError::Write { path: path.to_path_buf(), error }
    }
}
