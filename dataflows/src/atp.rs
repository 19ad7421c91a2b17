//! SPEC §3's per-key state: the key base (on_hand, reserved, on_order, policy), the ATP rows
//! with position, and network ATP per sku.

use std::num::NonZeroU32;

use differential_dataflow::consolidation::consolidate;
use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::allocation::Supply;
use crate::changes::Change;
use crate::key::KeyRef;
use crate::keys::{warm, KeyEntry, KeyTable, Rows, Tables};
use crate::low_stock::{self, LowView, Transition};
use crate::model::{Millis, Name, Policy};
use crate::stash::{give_all, Chunks, TickStash};
use crate::{shard, Collection, FastMap, Key, Stream};

/// What the ledgers know of a key, before the order plan: its stock, open orders and policy.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Base {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of active holds.
    pub reserved: i64,
    /// Sum of open purchase orders.
    pub on_order: i64,
    /// The key's replenishment policy, if any.
    pub policy: Option<Policy>,
}

impl Base {
    /// Position before outbound demand: on_hand + on_order - reserved.
    pub fn own_position(&self) -> i64 {
        self.on_hand.saturating_add(self.on_order).saturating_sub(self.reserved)
    }

    /// A key with nothing of this has no base (and no ATP row unless it has outbound demand).
    pub fn is_empty(&self) -> bool {
        self.on_hand == 0 && self.reserved == 0 && self.on_order == 0 && self.policy.is_none()
    }
}

/// An ATP record's numbers (SPEC §4 `atp`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// A key's ATP row (SPEC §3): its `atp` record, with the outbound demand allocation needs and
/// the reorder point low stock needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Row {
    /// What the `atp` stream shows of the row.
    pub numbers: Atp,
    /// Requested quantity of the order lines sourced from this key (R in SPEC's allocation).
    pub outbound: i64,
    /// The policy's reorder point; `None` without a policy.
    pub reorder_point: Option<i64>,
}

/// Stashes the updates of each logical time until `frontier` has passed it; shared by the
/// keyed operators below, which all apply a tick's updates at once, in key order.
type Stash<U> = TickStash<(U, isize)>;

/// Moves everything `$input` holds into `$stash`, by logical time.
macro_rules! stash_input {
    ($stash:expr, $input:expr) => {
        $input.for_each(|cap, data| {
            for (update, time, diff) in data.drain(..) {
                $stash.push(&cap, time, (update, diff));
            }
        })
    };
}

/// A whole-record value (stock, policy, base, outbound) as a tick's consolidated updates leave it:
/// the inserted value if any, else nothing if the old one was retracted, else unchanged.
struct Replace<T> {
    inserted: Option<T>,
    retracted: bool,
}

impl<T> Default for Replace<T> {
    fn default() -> Self {
        Replace { inserted: None, retracted: false }
    }
}

impl<T> Replace<T> {
    fn update(&mut self, value: T, diff: isize) {
        if diff > 0 {
            self.inserted = Some(value);
        } else {
            self.retracted = true;
        }
    }

    /// Applies the tick to `current`; `None` when nothing changed.
    fn apply(self, current: &mut Option<T>) {
        if let Some(value) = self.inserted {
            *current = Some(value);
        } else if self.retracted {
            *current = None;
        }
    }
}

/// What a key's ATP row takes from its base: the stock, the open orders and two numbers of
/// the policy. The ledger publishes this, not the whole [`Base`]: a policy's sourcing is
/// the order plan's business, and the row operator moves and sorts every base change.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowBase {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of active holds.
    pub reserved: i64,
    /// Sum of open purchase orders.
    pub on_order: i64,
    /// (safety_stock, reorder_point) of the policy, if any, in 8 bytes (a base is 32 bytes, not
    /// 40: one is published and stashed per key in the setup tick).
    pub policy: Option<RowPolicy>,
}

impl From<&Base> for RowBase {
    fn from(base: &Base) -> Self {
        let number = |n: i64| u32::try_from(n).expect("the key ledger keeps policy numbers within 0..=1e9");
        RowBase {
            on_hand: base.on_hand,
            reserved: base.reserved,
            on_order: base.on_order,
            policy: base.policy.as_ref().map(|p| RowPolicy::new((number(p.safety_stock), number(p.reorder_point)))),
        }
    }
}

/// What the ATP row of a key depends on: its base and the outbound demand the order plan puts
/// on it. The default is a key without a row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RowInputs {
    on_hand: i64,
    reserved: i64,
    on_order: i64,
    /// (safety_stock, reorder_point) of the policy, if any (40 bytes in all, not 56).
    policy: Option<RowPolicy>,
    outbound: i64,
}

/// A policy's (safety_stock, reorder_point) as a row needs them, each held plus one: SPEC §1
/// bounds both to 0..=1e9, so zero is left as a niche and an optional one takes 8 bytes, not
/// the 12 of `Option<(u32, u32)>` (which padded every key's row inputs and base by 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RowPolicy(NonZeroU32, NonZeroU32);

impl RowPolicy {
    fn new((safety_stock, reorder_point): (u32, u32)) -> Self {
        let plus_one = |n: u32| NonZeroU32::MIN.saturating_add(n);
        RowPolicy(plus_one(safety_stock), plus_one(reorder_point))
    }

    fn safety_stock(self) -> i64 {
        i64::from(self.0.get() - 1)
    }

    fn reorder_point(self) -> i64 {
        i64::from(self.1.get() - 1)
    }
}

impl RowInputs {
    /// The inputs of a key with `on_hand` in stock and nothing else.
    #[cfg(test)]
    pub(crate) fn stock(on_hand: i64) -> Self {
        RowInputs { on_hand, ..RowInputs::default() }
    }

    /// The numbers of the key's ATP row, if it has one.
    pub(crate) fn numbers(&self) -> Option<Atp> {
        self.row().map(|row| row.numbers)
    }

    /// Whether the key has an ATP row: any of its inputs is set.
    pub(crate) fn has_row(&self) -> bool {
        self.on_hand != 0 || self.reserved != 0 || self.on_order != 0 || self.outbound != 0 || self.policy.is_some()
    }

    fn row(&self) -> Option<Row> {
        if !self.has_row() {
            return None;
        }
        let available = self.on_hand.saturating_sub(self.reserved);
        let safety_stock = self.policy.map_or(0, RowPolicy::safety_stock);
        let own_position = self.on_hand.saturating_add(self.on_order).saturating_sub(self.reserved);
        Some(Row {
            numbers: Atp {
                on_hand: self.on_hand,
                reserved: self.reserved,
                on_order: self.on_order,
                available,
                atp: available.saturating_sub(safety_stock).max(0),
                position: own_position.saturating_sub(self.outbound),
            },
            outbound: self.outbound,
            reorder_point: self.policy.map(RowPolicy::reorder_point),
        })
    }
}

/// What the ATP rows yield, each stream partitioned by key like the rows themselves.
pub struct RowOutputs<'s> {
    /// `atp` changes per (sku, loc).
    pub atp: Stream<'s, Change<Key, Atp>>,
    /// `low_stock` transitions per (sku, loc).
    pub transitions: Stream<'s, Transition>,
    /// The keys currently LOW/OUT and their numbers, as changes.
    pub low_current: Stream<'s, Change<Key, LowView>>,
    /// How each sku's rows on this worker changed per tick: network ATP's input.
    pub sku_atp: Stream<'s, (Name, Millis, SkuDelta)>,
    /// The supply status of each key with outbound demand (allocation's input).
    pub supply: Collection<'s, (Key, Supply)>,
}

/// How one worker's ATP rows of a sku changed at a tick: rows gained (negative: lost) and the
/// change of their atp sum. Network ATP only adds these up per sku, so a row change crosses to
/// the sku's owner as one record instead of a retraction and an insertion, and the rows of a
/// sku that change together on one worker as one (half the records and bytes of that exchange).
pub type SkuDelta = (isize, i128);

/// A tick with more base and outbound updates than this reserves room for its ATP changes,
/// and its activation's records leave right after it. ATP changes also leave in containers of
/// this many while a tick is walked: the sink formats and frees them one by one, where the
/// setup tick's changes in one vector (112 B a key) were alive beside their formatted lines.
const LARGE_TICK: usize = 1 << 16;

/// Output ports of the row operator, in [`RowOutputs`]'s order.
const ROW_PORTS: usize = 5;

/// The records a row operator's activation emits, one vector per output port. They go out as
/// one container per port at the earliest closed tick's capability (see `stash`): a session
/// per tick shipped mostly empty 8 KB containers, which at a read batch's thousands of ticks
/// were the largest part of the peak heap (massif: ~1.1 KB per key at 100k keys).
#[derive(Default)]
struct RowBatch {
    atp: Vec<Change<Key, Atp>>,
    transitions: Vec<Transition>,
    low_current: Vec<Change<Key, LowView>>,
    sku_atp: Vec<(Name, Millis, SkuDelta)>,
    supply: Vec<((Key, Supply), Millis, isize)>,
}

impl RowBatch {
    /// Records what one key's row change (`old` != `new`) at `time` makes of every output; an
    /// ATP change leaves the row before it in `rows` as written, until the sink writes it.
    fn change(&mut self, time: Millis, key: &Key, (old, new): (Option<&Row>, Option<&Row>), rows: &mut Rows) {
        let (old_atp, new_atp) = (old.map(|r| &r.numbers), new.map(|r| &r.numbers));
        if old_atp != new_atp {
            self.atp.push(Change { time, key: key.clone(), value: new_atp.cloned() });
            rows.row_changed(time, key, old_atp);
        }
        self.transitions.extend(low_stock::transition(time, key, old, new));
        if let Some(value) = low_stock::current_change(old, new) {
            self.low_current.push(Change { time, key: key.clone(), value });
        }
        let (old_sku_atp, new_sku_atp) = (old.map(|r| r.numbers.atp), new.map(|r| r.numbers.atp));
        if old_sku_atp != new_sku_atp {
            let rows = isize::from(new_sku_atp.is_some()) - isize::from(old_sku_atp.is_some());
            let atp = i128::from(new_sku_atp.unwrap_or(0)) - i128::from(old_sku_atp.unwrap_or(0));
            // A tick's keys come in key order, so a sku's rows on this worker are adjacent.
            match self.sku_atp.last_mut() {
                Some((sku, t, delta)) if *t == time && sku.as_bytes() == key.parts_bytes().0 => *delta = (delta.0 + rows, delta.1 + atp),
                _ => self.sku_atp.push((key.first().into(), time, (rows, atp))),
            }
        }
        // A source's row carries R (its outbound) and A (its atp); it changes with the source's
        // position every tick, its supply status far less often.
        let supply = |row: Option<&Row>| row.filter(|r| r.outbound > 0).map(|r| Supply::of(r.outbound, r.numbers.atp));
        let (old_supply, new_supply) = (supply(old), supply(new));
        if old_supply != new_supply {
            self.supply.extend(old_supply.map(|s| ((key.clone(), s), time, -1)));
            self.supply.extend(new_supply.map(|s| ((key.clone(), s), time, 1)));
        }
    }
}

/// The ATP rows and everything derived from them: every key with non-zero on_hand, reserved,
/// on_order or outbound, or a policy, has a row; per tick, each key whose row changed yields
/// its atp change, low-stock transition and LOW/OUT change, its network ATP updates and its
/// supply status, all from the row before and after, on the worker that owns the key (so
/// nothing derived from rows needs another exchange or another copy of the state).
///
/// `outbound` is the demand of order lines sourced from the key (internal sources only).
///
/// `base` must come from the key ledger ([`crate::ledger::ledger`]), which already runs each
/// key on the worker that owns it by [`shard`], the row operator's own partitioning: its
/// records are not exchanged again. The rows' inputs live in `keys`, the key table the ledger
/// keeps its books in.
pub(crate) fn row_outputs<'s>(
    base: Collection<'s, (Key, RowBase)>,
    outbound: Collection<'s, (Key, i64)>,
    keys: KeyTable,
) -> RowOutputs<'s> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
    type B = (Key, RowBase);
    type O = (Key, i64);
    let route_outbound = |((key, _), _, _): &(O, Millis, isize)| shard(key);
    let mut builder = OperatorBuilder::new("AtpRows".to_owned(), base.inner.scope());
    let mut base_input = builder.new_input(base.inner, Pipeline);
    let mut outbound_input = builder.new_input(outbound.inner, Exchange::new(route_outbound));
    let (mut atp_output, atp) = builder.new_output();
    let (mut transitions_output, transitions) = builder.new_output();
    let (mut low_output, low_current) = builder.new_output();
    let (mut sku_atp_output, sku_atp) = builder.new_output();
    let (mut supply_output, supply) = builder.new_output();
    builder.build(move |_initial| {
        let mut bases: TickStash<(B, isize), Chunks<(B, isize)>> = TickStash::with_ports(ROW_PORTS);
        let mut outbounds: Stash<O> = Stash::with_ports(ROW_PORTS);
        let mut batch = RowBatch::default();
        move |frontiers| {
            // Sends what the activation has made, one container per port, at the earliest
            // closed tick's capabilities.
            macro_rules! ship {
                ($caps:expr) => {
                    give_all(&mut atp_output, &$caps[0], &mut batch.atp);
                    give_all(&mut transitions_output, &$caps[1], &mut batch.transitions);
                    give_all(&mut low_output, &$caps[2], &mut batch.low_current);
                    give_all(&mut sku_atp_output, &$caps[3], &mut batch.sku_atp);
                    give_all(&mut supply_output, &$caps[4], &mut batch.supply);
                };
            }
            let (frontier1, frontier2) = (&frontiers[0], &frontiers[1]);
            let mut batch_caps: Option<Vec<Capability<Millis>>> = None;
            stash_input!(bases, base_input);
            stash_input!(outbounds, outbound_input);
            let mut table = keys.borrow_mut();
            loop {
                let Some(time) = bases.first_time().into_iter().chain(outbounds.first_time()).min() else { break };
                if frontier1.less_equal(&time) || frontier2.less_equal(&time) {
                    break;
                }
                batch_caps.get_or_insert_with(|| {
                    if bases.first_time() == Some(time) {
                        bases.caps(time)
                    } else {
                        outbounds.caps(time)
                    }
                });
                let updates = (bases.take(time).unwrap_or_default(), outbounds.take(time).unwrap_or_default());
                let count = updates.0.len() + updates.1.len();
                if count > LARGE_TICK {
                    // At most one ATP change per key: its container grows once, not by
                    // doubling (the old and new buffers together were the setup tick's peak).
                    batch.atp.reserve(LARGE_TICK);
                }
                let caps = batch_caps.as_ref().expect("set above");
                let mut ship_atp = |atp: &mut Vec<Change<Key, Atp>>| {
                    give_all(&mut atp_output, &caps[0], atp);
                    atp.reserve(LARGE_TICK);
                };
                close_tick(&mut table, time, updates, (&mut batch, &mut ship_atp));
                if let Some(caps) = batch_caps.as_ref().filter(|_| count > LARGE_TICK) {
                    // And it leaves at once: the next tick's first change would double it.
                    ship!(caps);
                }
            }
            drop(table);
            bases.settle();
            outbounds.settle();
            if let Some(caps) = batch_caps {
                ship!(caps);
            }
        }
    });
    RowOutputs { atp, transitions, low_current, sku_atp, supply: supply.as_collection() }
}

/// Applies one tick's base and outbound updates to the rows, a key at a time; `ship_atp` sends
/// the ATP changes on whenever [`LARGE_TICK`] of them are in `batch`.
fn close_tick(
    tables: &mut Tables,
    time: Millis,
    (base_updates, mut outbound_updates): (Chunks<((Key, RowBase), isize)>, Vec<((Key, i64), isize)>),
    (batch, ship_atp): (&mut RowBatch, &mut dyn FnMut(&mut Vec<Change<Key, Atp>>)),
) {
    consolidate(&mut outbound_updates);
    // The key ledger publishes a tick's bases in key order. Then they need no sort, only each
    // key's few updates consolidated on their own (the same as consolidating them all), and
    // the walk frees the stash's chunks as it goes: at the setup tick they were alive beside
    // all of its changes. Bases in any other order are sorted first.
    let in_key_order = base_updates.iter().zip(base_updates.iter().skip(1)).all(|(((a, _), _), ((b, _), _))| a <= b);
    let base_updates = if in_key_order {
        base_updates
    } else {
        let mut all = base_updates.into_vec();
        consolidate(&mut all);
        Chunks::from_vec(all)
    };
    warm(&tables.keys, base_updates.iter().map(|((key, _), _)| KeyRef::from(key)));
    // Both are sorted by key: walk them together, a key at a time.
    let mut base_updates = base_updates.into_iter().peekable();
    let mut outbound_updates = outbound_updates.into_iter().peekable();
    let mut key_bases = Vec::new();
    loop {
        let key = match (base_updates.peek(), outbound_updates.peek()) {
            (Some(((b, _), _)), Some(((o, _), _))) => b.min(o).clone(),
            (Some(((b, _), _)), None) => b.clone(),
            (None, Some(((o, _), _))) => o.clone(),
            (None, None) => break,
        };
        // One key's bases: consolidated by value alone, without comparing the key again.
        let of_key = std::iter::from_fn(|| base_updates.next_if(|((k, _), _)| *k == key));
        key_bases.extend(of_key.map(|((_, b), d)| (b, d)));
        consolidate(&mut key_bases);
        let mut base = Replace::default();
        for (b, d) in key_bases.drain(..) {
            base.update(b, d);
        }
        let mut outbound = Replace::default();
        while let Some(((_, o), d)) = outbound_updates.next_if(|((k, _), _)| *k == key) {
            outbound.update(o, d);
        }
        update_row(tables, key, (base, outbound), time, batch);
        if batch.atp.len() >= LARGE_TICK {
            ship_atp(&mut batch.atp);
        }
    }
}

/// One key's row inputs at `time`: applies its base and outbound updates, records the row's
/// change (if any) in `batch`, and keeps the inputs in the key's table entry while the key
/// has a row.
fn update_row(
    tables: &mut Tables,
    key: Key,
    updates: (Replace<RowBase>, Replace<i64>),
    time: Millis,
    batch: &mut RowBatch,
) {
    use indexmap::map::Entry;
    let Tables { keys, rows } = tables;
    match keys.entry(key) {
        Entry::Occupied(mut entry) => {
            let new_inputs = next_inputs(&entry.get().row, updates);
            let (old, new) = (entry.get().row.row(), new_inputs.row());
            if old != new {
                batch.change(time, entry.key(), (old.as_ref(), new.as_ref()), rows);
            }
            entry.get_mut().row = new_inputs;
            if entry.get().is_empty() {
                entry.swap_remove();
            }
        }
        Entry::Vacant(entry) => {
            let new_inputs = next_inputs(&RowInputs::default(), updates);
            if let Some(new) = new_inputs.row() {
                batch.change(time, entry.key(), (None, Some(&new)), rows);
                entry.insert(KeyEntry { book: None, row: new_inputs });
            }
        }
    }
}

/// A key's row inputs after its tick's base and outbound updates.
fn next_inputs(old: &RowInputs, (base, outbound): (Replace<RowBase>, Replace<i64>)) -> RowInputs {
    let mut new_inputs = old.clone();
    let mut current_outbound = Some(new_inputs.outbound).filter(|o| *o != 0);
    outbound.apply(&mut current_outbound);
    new_inputs.outbound = current_outbound.unwrap_or(0);
    if base.inserted.is_some() || base.retracted {
        let mut current_base = None;
        base.apply(&mut current_base);
        let b = current_base.unwrap_or_default();
        new_inputs.on_hand = b.on_hand;
        new_inputs.reserved = b.reserved;
        new_inputs.on_order = b.on_order;
        new_inputs.policy = b.policy;
    }
    new_inputs
}

/// Network ATP: per sku, the sum of atp over its ATP rows (present while the sku has a row),
/// as a change stream. A hash map of (rows, total) per sku, updated per tick by the workers'
/// deltas, so a sku's cost does not grow with its number of locations.
pub fn network_atp<'s>(deltas: Stream<'s, (Name, Millis, SkuDelta)>) -> Stream<'s, Change<Name, i64>> {
    let route = |(sku, _, _): &(Name, Millis, SkuDelta)| shard(sku);
    deltas.unary_frontier(Exchange::new(route), "NetworkAtp", |_, _| {
        let mut stash: TickStash<(Name, SkuDelta)> = TickStash::default();
        // rows and the exact total (atp >= 0, so a saturated sum is the exact one capped).
        let mut totals: FastMap<Name, (isize, i128)> = FastMap::default();
        let value = |(rows, total): (isize, i128)| (rows > 0).then(|| total.min(i128::from(i64::MAX)) as i64);
        move |(input, frontier), output| {
            // Every tick this activation closes goes out at the earliest one's capability
            // (see `stash`).
            let mut batch_cap: Option<Capability<Millis>> = None;
            let mut batch = Vec::new();
            input.for_each(|cap, data| {
                for (sku, time, delta) in data.drain(..) {
                    stash.push(&cap, time, (sku, delta));
                }
            });
            while let Some(time) = stash.first_time() {
                if frontier.less_equal(&time) {
                    break;
                }
                batch_cap.get_or_insert_with(|| stash.caps(time).remove(0));
                let mut deltas = stash.take(time).expect("stashed");
                deltas.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
                let mut deltas = deltas.into_iter().peekable();
                while let Some((sku, delta)) = deltas.next() {
                    let before = totals.get(&sku).copied().unwrap_or((0, 0));
                    let mut after = (before.0 + delta.0, before.1 + delta.1);
                    while let Some((_, delta)) = deltas.next_if(|(s, _)| *s == sku) {
                        after = (after.0 + delta.0, after.1 + delta.1);
                    }
                    if after.0 > 0 {
                        totals.insert(sku.clone(), after);
                    } else {
                        totals.remove(&sku);
                    }
                    let (old, new) = (value(before), value(after));
                    if old != new {
                        batch.push(Change { time, key: sku, value: new });
                    }
                }
            }
            if let Some(cap) = batch_cap.filter(|_| !batch.is_empty()) {
                output.session(&cap).give_container(&mut batch);
            }
            stash.settle();
        }
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use timely::dataflow::operators::{Input, Inspect, Probe};
    use timely::dataflow::ProbeHandle;

    use super::*;

    /// Bases out of key order (not what the key ledger publishes, but a restore or another
    /// producer might) are sorted first: every output is the same as for ordered ones.
    #[test]
    fn a_tick_closes_alike_whatever_the_order_of_its_bases() {
        use crate::stash::TickItems;
        let base = |on_hand: i64, policy: Option<(u32, u32)>| RowBase {
            on_hand,
            reserved: 1,
            on_order: 0,
            policy: policy.map(RowPolicy::new),
        };
        let key = Key::new;
        // Tick 1 gives three keys rows; tick 2 changes two of them (a retraction and an
        // insertion each), removes the third and adds a fourth.
        let first = vec![
            ((key("A", "S1"), base(5, Some((1, 3)))), 1),
            ((key("A", "S2"), base(0, None)), 1),
            ((key("B", "S1"), base(9, None)), 1),
        ];
        let second = vec![
            ((key("A", "S1"), base(5, Some((1, 3)))), -1),
            ((key("A", "S1"), base(2, Some((1, 3)))), 1),
            ((key("A", "S2"), base(0, None)), -1),
            ((key("A", "S3"), base(4, None)), 1),
            ((key("B", "S1"), base(9, None)), -1),
            ((key("B", "S1"), base(8, Some((0, 9)))), 1),
        ];
        let close = |ticks: &[Vec<((Key, RowBase), isize)>]| {
            let mut tables = Tables::default();
            let mut batch = RowBatch::default();
            for (time, updates) in (1..).zip(ticks) {
                let mut bases = Chunks::default();
                updates.iter().cloned().for_each(|update| bases.push(update));
                close_tick(&mut tables, time, (bases, Vec::new()), (&mut batch, &mut |_| unreachable!("small ticks")));
            }
            (batch.atp, batch.transitions, batch.low_current, batch.sku_atp)
        };
        let in_order = close([first.clone(), second.clone()].as_slice());
        assert_eq!(in_order.0.len(), 7, "three rows made; two changed, one removed, one made: {:?}", in_order.0);
        // Keys in reverse order, a key's retraction apart from its insertion.
        let scrambled = |updates: &[((Key, RowBase), isize)]| {
            let (retractions, insertions): (Vec<_>, Vec<_>) = updates.iter().cloned().partition(|(_, d)| *d < 0);
            retractions.into_iter().rev().chain(insertions.into_iter().rev()).collect::<Vec<_>>()
        };
        assert_eq!(close(&[scrambled(&first), scrambled(&second)]), in_order);
    }

    /// A large tick's ATP changes leave in containers of [`LARGE_TICK`] while it is walked, in
    /// key order, and the rest stays for the activation's end: together, every change once.
    #[test]
    fn a_large_tick_ships_its_atp_changes_in_containers_of_a_bounded_size() {
        use crate::stash::TickItems;
        let keys = LARGE_TICK + 5;
        let mut bases = Chunks::default();
        for i in (0..keys).rev().step_by(2).chain((0..keys).rev().skip(1).step_by(2)) {
            let base = RowBase { on_hand: i as i64 + 1, reserved: 0, on_order: 0, policy: None };
            bases.push(((Key::new("S", &format!("L{i:06}")), base), 1));
        }
        let (mut tables, mut batch, mut shipped) = (Tables::default(), RowBatch::default(), Vec::new());
        close_tick(&mut tables, 1, (bases, Vec::new()), (&mut batch, &mut |atp| shipped.push(std::mem::take(atp))));
        let lens: Vec<usize> = shipped.iter().map(Vec::len).collect();
        assert_eq!(lens, [LARGE_TICK], "one full container shipped during the walk");
        assert_eq!(batch.atp.len(), 5, "the rest waits for the activation's end");
        let all: Vec<Change<Key, Atp>> = shipped.into_iter().flatten().chain(batch.atp).collect();
        assert_eq!(all.len(), keys);
        assert!(all.windows(2).all(|w| w[0].key < w[1].key), "in key order");
        let row_of_its_loc =
            |c: &Change<Key, Atp>| c.value.as_ref().is_some_and(|a| c.key.second() == format!("L{:06}", a.on_hand - 1));
        assert!(all.iter().all(row_of_its_loc));
    }

    /// The setup tick stashes one base update per key in the row operator (and the ledger
    /// publishes one): the policy's two numbers take 8 bytes, not 12 padded to 16.
    #[test]
    fn a_stashed_base_update_fits_in_64_bytes() {
        assert_eq!(std::mem::size_of::<RowBase>(), 32);
        let update = std::mem::size_of::<((Key, RowBase), isize)>();
        assert!(update <= 64, "{update}");
    }

    /// Network ATP from per-worker deltas: rows appearing, changing and leaving, deltas of two
    /// workers for one sku in one tick, deltas that cancel, a row at atp 0, a saturated sum.
    #[test]
    fn network_atp_adds_up_the_workers_deltas_per_sku_and_tick() {
        let changes = timely::execute_directly(|worker| {
            let probe = ProbeHandle::new();
            let seen = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&seen);
            let mut input = worker.dataflow::<Millis, _, _>(|scope| {
                let (input, deltas) = scope.new_input::<Vec<(Name, Millis, SkuDelta)>>();
                network_atp(deltas)
                    .inspect(move |c: &Change<Name, i64>| sink.borrow_mut().push((c.time, c.key.to_string(), c.value)))
                    .probe_with(&probe);
                input
            });
            let max = i128::from(i64::MAX);
            let deltas: [(&str, Millis, SkuDelta); 10] = [
                // Two rows of A appear on two workers: 5 + 7.
                ("A", 10, (1, 5)),
                ("A", 10, (1, 7)),
                // One falls to 0; B gets a row at atp 0; C's changes cancel.
                ("A", 20, (0, -5)),
                ("B", 20, (1, 0)),
                ("C", 20, (1, 3)),
                ("C", 20, (-1, -3)),
                // Both rows of A leave.
                ("A", 30, (-1, 0)),
                ("A", 30, (-1, -7)),
                // Two rows at the largest atp: the sum is capped, and exact again when one leaves.
                ("D", 40, (2, 2 * max)),
                ("D", 50, (-1, -max)),
            ];
            for (sku, time, delta) in deltas {
                input.send((Name::from(sku), time, delta));
            }
            input.advance_to(60);
            drop(input);
            worker.step_while(|| !probe.done());
            let changes = seen.borrow().clone();
            changes
        });
        let mut changes = changes;
        changes.sort();
        let want = vec![
            (10, "A".to_string(), Some(12)),
            (20, "A".to_string(), Some(7)),
            (20, "B".to_string(), Some(0)),
            (30, "A".to_string(), None),
            (40, "D".to_string(), Some(i64::MAX)),
        ];
        assert_eq!(changes, want, "D's capped sum is unchanged at 50, so it yields no change there");
    }
}
