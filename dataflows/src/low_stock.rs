//! SPEC §3's low-stock states and the transitions stream: one record per change of state.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::atp::Row;
use crate::changes::{changes, Change};
use crate::model::Millis;
use crate::{Collection, Key, Stream};

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

/// The keys currently LOW or OUT, with their numbers (what a snapshot shows).
pub fn signals<'s>(rows: Collection<'s, (Key, Row)>) -> Collection<'s, (Key, LowView)> {
    rows.flat_map(|(key, row)| {
        let view = LowView::of(&row);
        (view.state != LowState::Ok).then_some((key, view))
    })
}

/// The transitions of every key's state; a key's first record has previous `OK`.
pub fn transitions<'s>(rows: Collection<'s, (Key, Row)>) -> Stream<'s, Transition> {
    let views = changes(rows.map(|(key, row)| (key, LowView::of(&row))), "LowStockViews");
    // `changes` already placed each key on its worker and emits ticks in order.
    views.unary(Pipeline, "LowStockTransitions", |_, _| {
        // Only keys that are not OK are remembered.
        let mut states: HashMap<Key, LowState> = HashMap::new();
        move |input, output| {
            input.for_each(|cap, data| {
                let mut session = output.session(&cap);
                for Change { time, key, value } in data.drain(..) {
                    let view = value.unwrap_or_default();
                    let previous = states.get(&key).copied().unwrap_or_default();
                    if view.state == previous {
                        continue;
                    }
                    if view.state == LowState::Ok {
                        states.remove(&key);
                    } else {
                        states.insert(key.clone(), view.state);
                    }
                    session.give(Transition { time, key, previous, view });
                }
            });
        }
    })
}
