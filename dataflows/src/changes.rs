//! Turns a keyed collection into a change stream: per tick, one record per key whose value
//! changed, carrying the new value or `None` for a deletion (SPEC §4's upsert streams).

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::model::Millis;
use crate::stash::TickStash;
use crate::{shard, Collection, Stream};

/// A key's value changed at `time`: the new value, or `None` when the key left the collection.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Change<K, V> {
    /// The tick at which the change takes effect.
    pub time: Millis,
    /// The record's key.
    pub key: K,
    /// The value from `time` on; `None` is a deletion.
    pub value: Option<V>,
}

/// The change stream of a collection that holds at most one value per key.
///
/// Updates are exchanged by key, held until their tick is complete, and consolidated, so a
/// value that changed and changed back within a tick produces nothing.
pub fn changes<'s, K, V>(collection: Collection<'s, (K, V)>, name: &str) -> Stream<'s, Change<K, V>>
where
    K: differential_dataflow::ExchangeData + std::hash::Hash,
    V: differential_dataflow::ExchangeData,
{
    collection.inner.unary_frontier(Exchange::new(|((k, _), _, _): &((K, V), Millis, isize)| shard(k)), name, |_, _| {
        let mut stash: TickStash<((K, V), isize)> = TickStash::default();
        move |(input, frontier), output| {
            // Every tick this activation closes goes out at the earliest one's capability
            // (see `stash`).
            let mut batch_cap: Option<Capability<Millis>> = None;
            let mut batch = Vec::new();
            input.for_each(|cap, data| {
                for (kv, time, diff) in data.drain(..) {
                    stash.push(&cap, time, (kv, diff));
                }
            });
            while let Some(time) = stash.first_time() {
                if frontier.less_equal(&time) {
                    break;
                }
                batch_cap.get_or_insert_with(|| stash.caps(time).remove(0));
                let mut updates = stash.take(time).expect("stashed");
                differential_dataflow::consolidation::consolidate(&mut updates);
                let mut updates = updates.into_iter().peekable();
                while let Some(((key, value), diff)) = updates.next() {
                    // Per key: at most a retraction of the old value and an insertion of the
                    // new one, adjacent after sorting.
                    let mut new = (diff > 0).then_some(value);
                    while let Some(((_, next_value), next_diff)) = updates.next_if(|((k, _), _)| *k == key) {
                        if next_diff > 0 {
                            new = Some(next_value);
                        }
                    }
                    batch.push(Change { time, key, value: new });
                }
            }
            if let Some(cap) = batch_cap.filter(|_| !batch.is_empty()) {
                output.session(&cap).give_container(&mut batch);
            }
            stash.settle();
        }
    })
}
