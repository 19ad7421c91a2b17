//! Per-tick stashes that hold one capability, not one per stashed tick.
//!
//! The keyed operators hold a tick's updates until the frontier has passed it. Holding a
//! capability per stashed tick made timely's progress tracking the largest cost of a replay
//! (callgrind: `ChangeBatch::compact` and `MutableAntichain` rebuilds ~40% of instructions at
//! 100k events): a read batch spans thousands of one-second ticks, so every operator held
//! thousands of capabilities, and each tick's release re-sorted them. A [`TickStash`] holds
//! one capability at its earliest tick and hands out a capability for a tick as it is taken.
//!
//! For the same reason, an operator that closes several ticks in one activation emits all of
//! them at the first (earliest) tick's capability: every record carries its own tick (as
//! differential's updates may lie later than their capability), and progress tracking then
//! sees one time per activation instead of one per tick (callgrind: 14.5 G -> 6.8 G
//! instructions at 100k events; docs/benchmarks.md).

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, InputCapability};

use crate::model::Millis;

/// Items by logical time, with one capability at the earliest time held.
pub struct TickStash<U> {
    items: BTreeMap<Millis, Vec<U>>,
    held: Option<Capability<Millis>>,
}

impl<U> Default for TickStash<U> {
    fn default() -> Self {
        TickStash { items: BTreeMap::new(), held: None }
    }
}

impl<U> TickStash<U> {
    /// Stashes `item` at `time` (not before `cap`'s time), for output port `port`.
    pub fn push(&mut self, cap: &InputCapability<Millis>, port: usize, time: Millis, item: U) {
        if self.held.as_ref().is_none_or(|held| time < *held.time()) {
            self.held = Some(cap.delayed(&time, port));
        }
        self.items.entry(time).or_default().push(item);
    }

    /// The earliest stashed time.
    pub fn first_time(&self) -> Option<Millis> {
        self.items.keys().next().copied()
    }

    /// Whether nothing is stashed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items stashed at `time` or later, by time.
    pub fn from(&self, time: Millis) -> impl Iterator<Item = &Vec<U>> {
        self.items.range(time..).map(|(_, items)| items)
    }

    /// Removes the items of `time` with a capability for it (`None` when nothing is stashed
    /// at `time`); the held capability moves on to the next stashed time.
    pub fn take(&mut self, time: Millis) -> Option<(Capability<Millis>, Vec<U>)> {
        let items = self.items.remove(&time)?;
        let held = self.held.as_mut().expect("a stashed time holds a capability");
        let cap = held.delayed(&time);
        match self.items.keys().next() {
            Some(next) => held.downgrade(next),
            None => self.held = None,
        }
        Some((cap, items))
    }
}
