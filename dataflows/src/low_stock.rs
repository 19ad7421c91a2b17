//! SPEC §3's low-stock states and the transitions stream: one record per change of state.

use serde::{Deserialize, Serialize};

use crate::atp::Row;
use crate::model::Millis;
use crate::Key;

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
            Some(_) if row.numbers.available <= 0 => LowState::Out,
            Some(rp) if row.numbers.position <= rp => LowState::Low,
            Some(_) => LowState::Ok,
        };
        LowView {
            state,
            position: row.numbers.position,
            reorder_point: row.reorder_point,
            available: row.numbers.available,
        }
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
fn signal(row: Option<&Row>) -> Option<LowView> {
    row.map(LowView::of).filter(|view| view.state != LowState::Ok)
}

/// What a change of a key's row from `old` to `new` does to the set of keys currently LOW or
/// OUT (what a snapshot shows): `Some(new view or None)` when the key's entry changes.
pub fn current_change(old: Option<&Row>, new: Option<&Row>) -> Option<Option<LowView>> {
    let (old, new) = (signal(old), signal(new));
    (old != new).then_some(new)
}

/// The transition a change of `key`'s row at `time` makes, if its state changes; a key's
/// first record has previous `OK`. The row before the change gives the previous state, so
/// transitions need no memory of their own.
pub fn transition(time: Millis, key: &Key, old: Option<&Row>, new: Option<&Row>) -> Option<Transition> {
    let previous = old.map_or(LowState::Ok, |row| LowView::of(row).state);
    let view = new.map(LowView::of).unwrap_or_default();
    (view.state != previous).then(|| Transition { time, key: key.clone(), previous, view })
}
