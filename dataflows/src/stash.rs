//! Per-tick stashes that hold one capability, not one per stashed tick.
//!
//! The keyed operators hold a tick's updates until the frontier has passed it. Holding a
//! capability per stashed tick made timely's progress tracking the largest cost of a replay
//! (callgrind: `ChangeBatch::compact` and `MutableAntichain` rebuilds ~40% of instructions at
//! 100k events): a read batch spans thousands of one-second ticks, so every operator held
//! thousands of capabilities, and each tick's release re-sorted them. A [`TickStash`] holds
//! one capability (per output port) at its earliest tick, hands out capabilities only for the
//! first tick an activation closes, and moves its own on once per activation.
//!
//! For the same reason, an operator that closes several ticks in one activation emits all of
//! them at the first (earliest) tick's capability: every record carries its own tick (as
//! differential's updates may lie later than their capability), and progress tracking then
//! sees one time per activation instead of one per tick (callgrind: 14.5 G -> 6.8 G
//! instructions at 100k events; docs/benchmarks.md).

use std::collections::BTreeMap;
use std::marker::PhantomData;

use timely::dataflow::operators::{Capability, InputCapability};

use crate::model::Millis;

/// What a [`TickStash`] keeps one tick's items in: a vector, or a packed layout
/// (crate::packed) where the items are many and large.
pub trait TickItems<U>: Default {
    /// Adds an item.
    fn push(&mut self, item: U);
    /// Adds every item of `other`, after this one's.
    fn append(&mut self, other: Self);
}

impl<U> TickItems<U> for Vec<U> {
    fn push(&mut self, item: U) {
        Vec::push(self, item);
    }

    fn append(&mut self, mut other: Self) {
        Vec::append(self, &mut other);
    }
}

/// How many items a [`Chunks`] chunk holds: ~5.6 MB of the row operator's base updates.
const CHUNK_ITEMS: usize = 1 << 16;

/// A tick's items in chunks of at most [`CHUNK_ITEMS`], for a consumer that walks them once
/// in order: [`Chunks::into_iter`] frees each chunk as the walk leaves it. In one vector, the
/// setup tick's items (one per key) stayed alive until the walk ended, beside everything the
/// walk had made of them.
pub struct Chunks<U> {
    chunks: Vec<Vec<U>>,
}

impl<U> Default for Chunks<U> {
    fn default() -> Self {
        Chunks { chunks: Vec::new() }
    }
}

impl<U> TickItems<U> for Chunks<U> {
    fn push(&mut self, item: U) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK_ITEMS => last.push(item),
            last => {
                // A tick that filled a chunk is a large one: the next is made whole at once.
                let mut chunk = if last.is_some() { Vec::with_capacity(CHUNK_ITEMS) } else { Vec::new() };
                chunk.push(item);
                self.chunks.push(chunk);
            }
        }
    }

    fn append(&mut self, mut other: Self) {
        self.chunks.append(&mut other.chunks);
    }
}

impl<U> Chunks<U> {
    /// One chunk of all of `items`.
    pub fn from_vec(items: Vec<U>) -> Self {
        Chunks { chunks: vec![items] }
    }

    /// How many items there are.
    pub fn len(&self) -> usize {
        self.chunks.iter().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.chunks.iter().all(Vec::is_empty)
    }

    /// The items, in order.
    pub fn iter(&self) -> impl Iterator<Item = &U> {
        self.chunks.iter().flatten()
    }

    /// Adds `items` after these as a chunk of their own, without a copy: a consumer that
    /// hands on vectors of items (an operator's containers) keeps their sizes.
    pub fn push_chunk(&mut self, items: Vec<U>) {
        if !items.is_empty() {
            self.chunks.push(items);
        }
    }

    /// Sorts the items by `cmp`, unless they already are in it (stable).
    pub fn sort_by(&mut self, mut cmp: impl FnMut(&U, &U) -> std::cmp::Ordering) {
        let sorted = self.iter().zip(self.iter().skip(1)).all(|(a, b)| cmp(a, b).is_le());
        if !sorted {
            let mut all = std::mem::take(self).into_vec();
            all.sort_by(cmp);
            *self = Chunks::from_vec(all);
        }
    }

    /// The chunks, in order: each a container to hand on whole.
    pub fn into_chunks(self) -> impl Iterator<Item = Vec<U>> {
        self.chunks.into_iter()
    }

    /// All items in one vector.
    pub fn into_vec(self) -> Vec<U> {
        let mut chunks = self.chunks.into_iter();
        let mut all = chunks.next().unwrap_or_default();
        chunks.for_each(|mut chunk| all.append(&mut chunk));
        all
    }
}

impl<U> IntoIterator for Chunks<U> {
    type Item = U;
    type IntoIter = std::iter::Flatten<std::vec::IntoIter<Vec<U>>>;

    /// The items in order; each chunk is freed once the walk has left it.
    fn into_iter(self) -> Self::IntoIter {
        self.chunks.into_iter().flatten()
    }
}

impl<'a, U> IntoIterator for &'a Chunks<U> {
    type Item = &'a U;
    type IntoIter = std::iter::Flatten<std::slice::Iter<'a, Vec<U>>>;

    fn into_iter(self) -> Self::IntoIter {
        self.chunks.iter().flatten()
    }
}

impl<U: std::fmt::Debug> std::fmt::Debug for Chunks<U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Items by logical time, with one capability per output port at the earliest time held.
pub struct TickStash<U, C: TickItems<U> = Vec<U>> {
    items: BTreeMap<Millis, C>,
    /// The items of the latest pushed time, not yet in `items`: records arrive in runs of one
    /// tick, and a map lookup per record cost 6% of a replay's instructions.
    run: Option<(Millis, C)>,
    /// One capability per output port, at the earliest stashed time (empty when nothing is).
    held: Vec<Capability<Millis>>,
    ports: usize,
    item: PhantomData<fn(U)>,
}

impl<U, C: TickItems<U>> Default for TickStash<U, C> {
    fn default() -> Self {
        Self::with_ports(1)
    }
}

impl<U, C: TickItems<U>> TickStash<U, C> {
    /// A stash for an operator with `ports` outputs, holding a capability for each.
    pub fn with_ports(ports: usize) -> Self {
        TickStash { items: BTreeMap::new(), run: None, held: Vec::new(), ports, item: PhantomData }
    }

    /// Stashes `item` at `time` (not before `cap`'s time).
    pub fn push(&mut self, cap: &InputCapability<Millis>, time: Millis, item: U) {
        if self.held.first().is_none_or(|held| time < *held.time()) {
            self.held = (0..self.ports).map(|port| cap.delayed(&time, port)).collect();
        }
        match &mut self.run {
            Some((run_time, items)) if *run_time == time => items.push(item),
            _ => {
                self.end_run();
                let mut items = C::default();
                items.push(item);
                self.run = Some((time, items));
            }
        }
    }

    fn end_run(&mut self) {
        if let Some((time, items)) = self.run.take() {
            match self.items.entry(time) {
                std::collections::btree_map::Entry::Vacant(entry) => {
                    entry.insert(items);
                }
                std::collections::btree_map::Entry::Occupied(mut entry) => entry.get_mut().append(items),
            }
        }
    }

    /// The earliest stashed time.
    pub fn first_time(&self) -> Option<Millis> {
        let run = self.run.as_ref().map(|(time, _)| *time);
        self.items.keys().next().copied().into_iter().chain(run).min()
    }

    /// Whether nothing is stashed.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty() && self.run.is_none()
    }

    /// The items stashed at `time` or later, by time.
    pub fn from(&mut self, time: Millis) -> impl Iterator<Item = &C> {
        self.end_run();
        self.items.range(time..).map(|(_, items)| items)
    }

    /// Removes the items of `time` (`None` when nothing is stashed there). The held
    /// capabilities stay where they are until [`TickStash::settle`].
    pub fn take(&mut self, time: Millis) -> Option<C> {
        self.remove(time)
    }

    /// A capability for each output port at `time`, which must not be before the earliest time
    /// stashed since the last [`TickStash::settle`].
    pub fn caps(&self, time: Millis) -> Vec<Capability<Millis>> {
        self.held.iter().map(|held| held.delayed(&time)).collect()
    }

    /// Moves the held capabilities on to the earliest stashed time (or drops them when nothing
    /// is left). Call once at the end of every activation: moving them per tick taken cost a
    /// capability update per port and tick (callgrind: ~10% of a replay's instructions).
    pub fn settle(&mut self) {
        self.end_run();
        match self.items.keys().next() {
            Some(next) => self.held.iter_mut().for_each(|held| held.downgrade(next)),
            None => self.held.clear(),
        }
    }

    fn remove(&mut self, time: Millis) -> Option<C> {
        self.end_run();
        self.items.remove(&time)
    }
}

/// Sends `records` (if any) as one container at `cap`, leaving `records` empty: the keyed
/// operators send what an activation produced this way, one container per output port.
pub fn give_all<D: Clone + 'static>(
    output: &mut timely::dataflow::channels::pushers::Output<Millis, Vec<D>>,
    cap: &Capability<Millis>,
    records: &mut Vec<D>,
) {
    if !records.is_empty() {
        output.activate().give(cap, records);
        records.clear();
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
    fn chunks_keep_their_items_in_order() {
        let mut chunks = Chunks::default();
        let items = 2 * CHUNK_ITEMS + 3;
        (0..items).for_each(|item| chunks.push(item));
        let mut more = Chunks::default();
        more.push(items);
        chunks.append(more);
        assert_eq!(chunks.chunks.len(), 4, "three chunks pushed, one appended");
        assert!(chunks.chunks.iter().all(|chunk| chunk.len() <= CHUNK_ITEMS));
        assert_eq!(chunks.len(), items + 1);
        let want: Vec<usize> = (0..=items).collect();
        assert!(chunks.iter().copied().eq(want.iter().copied()));
        assert_eq!(chunks.into_vec(), want);
        let mut chunks = Chunks::from_vec(want.clone());
        chunks.push(items + 1);
        assert!(chunks.into_iter().eq((0..=items + 1).into_iter()));
        assert!(Chunks::<u8>::default().is_empty());
    }

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
                                    data.drain(..).for_each(|(time, item)| stash.push(&cap, time, item))
                                });
                                while let Some(time) = stash.first_time().filter(|t| !frontier.less_equal(t)) {
                                    let cap = stash.caps(time).remove(0);
                                    let items = stash.take(time).expect("stashed");
                                    assert_eq!(*cap.time(), time, "a tick's capability is at the tick");
                                    output.session(&cap).give((time, items));
                                }
                                stash.settle();
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
