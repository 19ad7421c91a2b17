//! SPEC §3's low-stock states and the transitions stream: one record per change of state.

use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;

use crate::atp::{Row, RowChange};
use crate::changes::Change;
use crate::model::Millis;
use crate::{Key, Stream};

/// A key's low-stock state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LowState {
    /// Nothing to signal (also every key without a policy or an ATP row).
    #[default]
    Ok,
    /// position <= reorder_point.
    Low,
    /// available <= 0.
    Out,
}

impl LowState {
    /// The state as SPEC §4 spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            LowState::Ok => "OK",
            LowState::Low => "LOW",
            LowState::Out => "OUT",
        }
    }
}

/// What a low-stock record shows of a key.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LowView {
    /// The state.
    pub state: LowState,
    /// The key's position (0 without an ATP row).
    pub position: i64,
    /// The policy's reorder point (`None` without a policy).
    pub reorder_point: Option<i64>,
    /// The key's available (0 without an ATP row).
    pub available: i64,
}

impl LowView {
    /// The view of a key with this ATP row.
    pub fn of(row: &Row) -> Self {
        let state = match row.reorder_point {
            None => LowState::Ok,
            Some(_) if row.available <= 0 => LowState::Out,
            Some(rp) if row.position <= rp => LowState::Low,
            Some(_) => LowState::Ok,
        };
        LowView { state, position: row.position, reorder_point: row.reorder_point, available: row.available }
    }
}

/// A change of a key's low-stock state.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Transition {
    /// The tick of the change.
    pub time: Millis,
    /// The key.
    pub key: Key,
    /// The state before.
    pub previous: LowState,
    /// The new state and the key's numbers at `time`.
    pub view: LowView,
}

/// The view of a key's row as a low-stock signal: `None` while the key is OK.
fn signal(row: &Option<Row>) -> Option<LowView> {
    row.as_ref().map(LowView::of).filter(|view| view.state != LowState::Ok)
}

/// The keys currently LOW or OUT, with their numbers (what a snapshot shows), as changes.
pub fn current<'s>(rows: Stream<'s, RowChange>) -> Stream<'s, Change<Key, LowView>> {
    rows.flat_map(|c| {
        let (old, new) = (signal(&c.old), signal(&c.new));
        (old != new).then_some(Change { time: c.time, key: c.key, value: new })
    })
}

/// The transitions of every key's state; a key's first record has previous `OK`.
///
/// A row change carries the row before it, so the previous state needs no memory of its own.
pub fn transitions<'s>(rows: Stream<'s, RowChange>) -> Stream<'s, Transition> {
    rows.flat_map(|c| {
        let previous = c.old.as_ref().map_or(LowState::Ok, |row| LowView::of(row).state);
        let view = c.new.as_ref().map(LowView::of).unwrap_or_default();
        (view.state != previous).then_some(Transition { time: c.time, key: c.key, previous, view })
    })
}
