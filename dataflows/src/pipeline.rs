//! The whole of SPEC §3 wired together: from ordered events to the output change streams.

use crate::allocation::{allocate, PlanLine};
use crate::atp::{counters, key_base, network_atp, row_changes, rows, Row};
use crate::changes::{changes, Change};
use crate::clock::Ticks;
use crate::ledger::{ledger, Control, Counter, Saved};
use crate::low_stock::{current, transitions, LowView, Transition};
use crate::model::{Event, Name};
use crate::order_plan::order_lines;
use crate::{Collection, Key, Stream};
use timely::dataflow::operators::vec::Map;

/// An ATP record's numbers (SPEC §4 `atp`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Atp {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of active holds.
    pub reserved: i64,
    /// Sum of open purchase orders.
    pub on_order: i64,
    /// on_hand - reserved.
    pub available: i64,
    /// max(0, available - safety_stock).
    pub atp: i64,
    /// on_hand + on_order - reserved - outbound.
    pub position: i64,
}

impl From<&Row> for Atp {
    fn from(r: &Row) -> Self {
        Atp {
            on_hand: r.on_hand,
            reserved: r.reserved,
            on_order: r.on_order,
            available: r.available,
            atp: r.atp,
            position: r.position,
        }
    }
}

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
}

/// Builds the dataflow from ordered events (sent at or before their tick) to every output;
/// `control` restores a checkpoint's state and asks for new checkpoints (see [`ledger`]).
pub fn stockflow<'s>(events: Stream<'s, Event>, control: Stream<'s, Control>, ticks: Ticks) -> Outputs<'s> {
    let (facts, saved) = ledger(events, control, ticks);
    let counters = counters(facts.clone());
    let base = key_base(facts);
    let (lines, outbound) = order_lines(base.standalone, base.source_planners);
    let row_changes = row_changes(base.base, outbound);
    let rows = rows(row_changes.clone());
    let plan = allocate(lines, rows.clone());
    Outputs {
        atp: row_changes.clone().flat_map(|c| {
            let (old, new) = (c.old.as_ref().map(Atp::from), c.new.as_ref().map(Atp::from));
            (old != new).then_some(Change { time: c.time, key: c.key, value: new })
        }),
        low_stock: transitions(row_changes.clone()),
        low_stock_current: current(row_changes),
        order_plan: changes(plan, "OrderPlanChanges"),
        network_atp: network_atp(rows),
        counters,
        saved,
    }
}
