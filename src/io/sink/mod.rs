//! Sinks: they receive the typed records of each closed tick, sorted by key, and know nothing
//! of the dataflow. `dir` writes SPEC §4's files, `stdout` prints the final snapshot.

pub mod dir;
pub mod kafka;
pub mod report;
pub mod stdout;

use std::collections::BTreeMap;

use dataflows::allocation::PlanLine;
use dataflows::changes::Change;
use dataflows::ledger::Counter;
use dataflows::low_stock::{LowView, Transition};
use dataflows::model::{DeadLetter, Millis};
use dataflows::pipeline::Atp;
use dataflows::Key;

use crate::io::source::SourceStats;

/// The records of one closed tick, each stream sorted by key.
#[derive(Default, Debug)]
pub struct TickBatch {
    /// `atp` changes.
    pub atp: Vec<Change<Key, Atp>>,
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

fn apply<K: Ord + Clone, V: Clone>(map: &mut BTreeMap<K, V>, changes: &[Change<K, V>]) {
    for c in changes {
        match &c.value {
            Some(v) => map.insert(c.key.clone(), v.clone()),
            None => map.remove(&c.key),
        };
    }
}

impl Snapshot {
    /// Applies one tick's changes.
    pub fn apply(&mut self, batch: &TickBatch) {
        apply(&mut self.atp, &batch.atp);
        apply(&mut self.low_stock, &batch.low_stock_current);
        apply(&mut self.order_plan, &batch.order_plan);
        apply(&mut self.network_atp, &batch.network_atp);
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
    /// The summary as SPEC §4's JSON object, keys sorted.
    pub fn to_json(&self) -> String {
        let counter = |c| self.counters.get(&c).copied().unwrap_or(0);
        let s = &self.sources;
        let as_of = self.as_of.map_or("null".to_string(), |t| t.to_string());
        let fields: [(&str, String); 10] = [
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
        ];
        let body: Vec<String> = fields.iter().map(|(k, v)| format!(" \"{k}\": {v}")).collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }
}

/// Where a run's results go.
pub trait Sink {
    /// Writes the records of closed tick `time` (already sorted).
    fn tick(&mut self, time: Millis, batch: &TickBatch) -> std::io::Result<()>;
    /// Ends the run: dead letters in position order, the final snapshot and the summary.
    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> std::io::Result<()>;
}
