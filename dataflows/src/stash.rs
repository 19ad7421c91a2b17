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

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use timely::container::CapacityContainerBuilder;
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::Operator;
    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::ProbeHandle;

    use super::*;

    #[test]
    fn ticks_leave_in_order_and_the_held_capability_moves_to_the_next_one() {
        let taken = timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let taken = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&taken);
            let mut input = worker.dataflow::<Millis, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<(Millis, u32)>>();
                stream
                    .unary_frontier::<CapacityContainerBuilder<Vec<(Millis, Vec<u32>)>>, _, _, _>(
                        Pipeline,
                        "Stash",
                        |_, _| {
                            let mut stash = TickStash::default();
                            move |(input, frontier), output| {
                                input.for_each(|cap, data| {
                                    data.drain(..).for_each(|(time, item)| stash.push(&cap, 0, time, item))
                                });
                                while let Some(time) = stash.first_time().filter(|t| !frontier.less_equal(t)) {
                                    let (cap, items) = stash.take(time).expect("stashed");
                                    assert_eq!(*cap.time(), time, "a tick's capability is at the tick");
                                    output.session(&cap).give((time, items));
                                }
                            }
                        },
                    )
                    .inspect(move |(time, items): &(Millis, Vec<u32>)| sink.borrow_mut().push((*time, items.clone())))
                    .probe_with(&probe);
                input
            });
            for (time, item) in [(30, 1), (10, 2), (30, 3)] {
                input.send((time, item));
            }
            input.advance_to(20);
            for _ in 0..100 {
                worker.step();
            }
            // Tick 10 has left and the capability moved on to 30: the output frontier is the
            // input's 20, not stuck at 10.
            assert_eq!(taken.borrow().len(), 1);
            assert!(!probe.less_than(&20) && probe.less_equal(&20), "the output frontier is 20");
            drop(input);
            worker.step_while(|| !probe.done());
            let taken = taken.borrow().clone();
            taken
        });
        assert_eq!(taken, vec![(10, vec![2]), (30, vec![1, 3])]);
    }
}
