//! The whole of SPEC §3 wired together: from ordered events to the output change streams.

use crate::allocation::{allocate, PlanLine};
pub use crate::atp::Atp;
use crate::atp::{network_atp, row_outputs};
use crate::changes::{changes, Change};
use crate::clock::Ticks;
use crate::keys::KeyTable;
use crate::ledger::{ledger, Control, Counter, Saved};
use crate::low_stock::{LowView, Transition};
use crate::model::{Event, Name};
use crate::order_plan::order_lines;
use crate::{Collection, Key, Stream};

/// The output streams of one run, each partitioned across workers by key.
pub struct Outputs<'s> {
    /// `atp` changes per (sku, loc).
    pub atp: Stream<'s, Change<Key, Atp>>,
    /// `low_stock` transitions per (sku, loc).
    pub low_stock: Stream<'s, Transition>,
    /// The keys currently LOW/OUT and their numbers, as changes (for snapshots).
    pub low_stock_current: Stream<'s, Change<Key, LowView>>,
    /// `order_plan` changes per (dest, sku).
    pub order_plan: Stream<'s, Change<Key, PlanLine>>,
    /// `network_atp` changes per sku.
    pub network_atp: Stream<'s, Change<Name, i64>>,
    /// Ledger outcomes counted per tick (orphan, duplicate, expired_on_arrival, absorbed).
    pub counters: Collection<'s, Counter>,
    /// The ledgers' state at each checkpoint requested through `control`, on the worker that
    /// asked for it.
    pub saved: Stream<'s, Saved>,
    /// This worker's key table, which also keeps the ATP rows its sink writes
    /// ([`KeyTable::track_written`]).
    pub keys: KeyTable,
}

/// Builds the dataflow from ordered events (sent at or before their tick) to every output;
/// `control` restores a checkpoint's state and asks for new checkpoints (see [`ledger`]).
pub fn stockflow<'s>(events: Stream<'s, Event>, control: Stream<'s, Control>, ticks: Ticks) -> Outputs<'s> {
    // One table of the worker's keys, shared by the key ledger and the row operator.
    let keys = KeyTable::default();
    let ledgers = ledger(events, control, ticks, keys.clone());
    let (lines, outbound) = order_lines(ledgers.standalone, ledgers.source_planners);
    let rows = row_outputs(ledgers.base, outbound, keys.clone());
    let plan = allocate(lines, rows.supply);
    Outputs {
        atp: rows.atp,
        low_stock: rows.transitions,
        low_stock_current: rows.low_current,
        order_plan: changes(plan, "OrderPlanChanges"),
        network_atp: network_atp(rows.sku_atp),
        counters: ledgers.counters,
        saved: ledgers.saved,
        keys,
    }
}
