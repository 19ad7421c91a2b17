//! The ordered ledgers of SPEC §2: per key (on_hand with counts as barriers, holds with expiry,
//! the policy) and per purchase order, applying each tick's messages in the total order, and
//! what the key ledger derives from a key's state: its base (stock, open orders, policy), its
//! standalone order line and, at a source location, its planner.
//!
//! Order inside a tick matters (a `count` before or after a `sale` at the same millisecond), so
//! these are timely operators that stash a tick's messages until the frontier has passed it and
//! then apply them sorted: the key ledger by (key, SPEC order), since a key's messages never
//! affect another key, so that it visits each touched key once. Their output is a differential
//! update stream of the key's *netted* state per tick: a key touched by a thousand sales in one
//! tick yields at most two updates.
//!
//! The key ledger computes the base itself, from the purchase-order ledger's open quantities
//! (its side input): a separate operator over the ledger's stock and policy facts cost an
//! exchange, a stash, a consolidation and a second hash map of every key (~25% of a replay's
//! operator time; docs/benchmarks.md).
//!
//! They also own the input side of a checkpoint: asked at a logical time `R`, each emits its
//! state as of "every tick before `R` applied, nothing at or after it" ([`Saved`]), and a
//! ledger given saved entries re-creates that state and publishes its facts again.
//!
//! SPEC §2's rules for one key, the step that applies one message to a key's state and says
//! what it did, live in [`key`] (shared with `stockflow explain`); a key's holds in [`holds`].

use std::collections::{BTreeMap, HashSet};
use std::iter::Peekable;

use differential_dataflow::AsCollection;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::channels::pushers::Output;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::MutableAntichain;

use crate::atp::{Base, RowBase};
use crate::clock::Ticks;
use crate::keys::{warm, KeyTable};
use crate::model::{Body, Event, Millis, Name, PoStatus, Policy};
use crate::order_plan::{is_external, line_for, Line, Planner};
use crate::packed::{Packed, PackedEvents, SortedEvents};
use crate::stash::{give_all, Chunks, TickItems, TickStash};
use crate::wire::WireEvent;
use crate::{shard, Collection, FastMap, FxHasher, Key, Stream};

pub mod holds;
pub mod key;

pub use holds::{Hold, Holds};
pub use key::{Counter, HoldOutcome, KeyState, MaybeMillis, Outcome, PolicyOutOfRange, SourceNames, StockOutcome};

/// The ledger's netted stock of a key at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stock {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of the active holds.
    pub reserved: i64,
}

/// What the key ledger publishes, as differential updates; each kind on its own output port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum KeyOut {
    /// What the key's ATP row takes from its base, while it has stock, open orders or a policy.
    Base(Key, RowBase),
    /// The key's standalone order line (at its own position, before outbound demand).
    Line(Key, Line),
    /// The planner of a key at a source location. Boxed: only keys at a source have one, and
    /// inline its 96 bytes (with the key; a base takes 64) set the size of every record, which
    /// the setup tick's bases, one per key, paid in the ledger's output and on their way to the
    /// rows.
    Planner(Key, Box<Planner>),
    /// One counted ledger outcome.
    Counter(Counter),
}

/// What other operators tell the key ledger, applied with a tick's messages.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum KeySide {
    /// One open purchase order's quantity towards the key's `on_order` (from the PO ledger).
    OnOrder(Key, i64),
    /// A policy names `loc` as its internal source; sent to every worker.
    Source {
        /// The worker this copy is for.
        worker: u64,
        /// The location.
        loc: Name,
    },
}

/// One entry of a ledger's state as saved in a checkpoint (and given back on restore).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Saved {
    /// One key's ledger.
    Key(Key, KeyState),
    /// One open purchase order: its id, key and quantity.
    Po(Name, Key, i64),
    /// A message read before the checkpoint whose tick lies at or after it: not applied yet.
    Pending(Event),
    /// How often a ledger outcome has been counted since the first run (summed over shares).
    Count(Counter, i64),
    /// Ends one ledger's entries for the checkpoint at this logical time, saying how many it
    /// sent: containers of one time may arrive in any order (timely's `ok_err` sorts them with
    /// an unstable sort), so the end marker can overtake the entries it ends.
    End(Millis, u64),
}

/// What the ledgers take besides messages: saved entries to restore, and checkpoint requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A saved entry to re-create, sent at the restored checkpoint's time minus one.
    Restore(Saved),
    /// Save the state as of this record's logical time; routed to worker `worker`, so one
    /// request reaches each worker's ledgers.
    Checkpoint {
        /// The worker whose ledgers this request is for.
        worker: u64,
    },
}

/// A differential update a book emits.
type Update<R> = (R, Millis, isize);

/// Applies messages to one shard of ledger state, a tick at a time.
trait Book: 'static {
    /// Updates from other operators, applied with the messages of their tick.
    type Side: timely::ExchangeData + Ord;
    /// What the book publishes.
    type Record: timely::ExchangeData + Clone;
    /// Output ports for records ([`Book::port`] picks one); the saved entries take the next.
    const PORTS: usize;
    /// The output port of a record.
    fn port(record: &Self::Record) -> usize;
    /// The worker that owns a side update.
    fn side_route(side: &Self::Side) -> u64;
    /// The order in which a tick's messages reach [`Book::close_tick`]: SPEC's total order, or
    /// any order that keeps it among the messages of each entry of a book whose entries are
    /// independent of each other.
    fn apply_order(a: &Packed<'_>, b: &Packed<'_>) -> std::cmp::Ordering {
        a.cmp_order(b)
    }
    /// A prefix of [`Book::apply_order`]: where two messages' prefixes differ, they are in
    /// that order.
    fn apply_prefix(packed: &Packed<'_>) -> [u64; 2] {
        packed.order_prefix()
    }
    /// Makes ready for a tick's messages (sorted by [`Book::apply_order`]) before they are
    /// applied: room for their keys, their keys' state in cache.
    fn prepare_tick(&mut self, _events: &SortedEvents) {}
    /// Applies the messages of logical time `time` (sorted by [`Book::apply_order`]) and the
    /// side updates of `time` (consolidated), plus whatever timers fall due at `time`,
    /// appending the resulting updates to `out`.
    fn close_tick(
        &mut self,
        time: Millis,
        events: impl IntoIterator<Item = Event>,
        side: Vec<(Self::Side, isize)>,
        out: &mut impl Emit<Self::Record>,
    );
    /// The earliest logical time at which the book needs to run without new messages.
    fn next_timer(&self) -> Option<Millis>;
    /// Re-creates one saved entry (never `Pending`/`End`) as of `time`, publishing its facts.
    fn restore(&mut self, time: Millis, saved: Saved, out: &mut impl Emit<Self::Record>);
    /// Appends the book's state (without pending messages) to `out`.
    fn save(&self, out: &mut Vec<Saved>);
}

/// Where a book's records go as it emits them: a vector (in tests), or the operator's
/// vectors by output port ([`Ported`]).
pub(crate) trait Emit<R> {
    /// Emits one record.
    fn emit(&mut self, record: Update<R>);
    /// Emits each of `records`.
    fn emit_all(&mut self, records: impl IntoIterator<Item = Update<R>>) {
        records.into_iter().for_each(|record| self.emit(record));
    }
}

#[cfg(test)]
impl<R> Emit<R> for Vec<Update<R>> {
    fn emit(&mut self, record: Update<R>) {
        self.push(record);
    }
}

/// A book's records, sorted into their output ports as they are emitted. Gathered in one
/// vector and then moved into the ports, the setup tick's records (one base per key) were
/// held twice, the first vector with up to twice its records' room (heaptrack at 1M keys:
/// 117 + 228 MB of the heap's peak). Each port's records fill [`Chunks`] of 65,536: one
/// growing vector per port still had up to twice its records' room, and held the old and the
/// new buffer while it grew (heaptrack at 10M keys: 1.74 GB for ~1 GB of records, at the
/// heap's peak).
struct Ported<R> {
    ports: Vec<Chunks<Update<R>>>,
    port: fn(&R) -> usize,
}

impl<R> Ported<R> {
    /// Empty containers for `ports` output ports; `port` says which port a record goes to.
    fn new(ports: usize, port: fn(&R) -> usize) -> Self {
        Ported { ports: (0..ports).map(|_| Chunks::default()).collect(), port }
    }
}

impl<R> Emit<R> for Ported<R> {
    fn emit(&mut self, record: Update<R>) {
        let port = (self.port)(&record.0);
        self.ports[port].push(record);
    }
}

/// Sends the records of each port of `by_port` on it, at that port's capability in `caps`, a
/// container at a time; leaves `by_port` empty.
fn give_by_port<R: timely::ExchangeData + Clone>(
    outputs: &mut [Output<Millis, Vec<Update<R>>>],
    caps: &[Capability<Millis>],
    by_port: &mut Ported<R>,
) {
    for ((output, cap), records) in outputs.iter_mut().zip(caps).zip(by_port.ports.iter_mut()) {
        std::mem::take(records).into_chunks().for_each(|mut chunk| give_all(output, cap, &mut chunk));
    }
}

/// The streams a [`run_book`] operator publishes: one per record port, and the saved entries.
struct BookStreams<'s, R> {
    ports: Vec<Stream<'s, Update<R>>>,
    saved: Stream<'s, Saved>,
}

/// Runs `book` as an operator: messages are exchanged by `route`, stashed per logical time and
/// applied once every input's frontier has passed that time, with the side updates of that
/// time. `control` brings saved entries to restore (applied before anything at their time)
/// and checkpoint requests (answered once every record sent before the request's time has
/// arrived, before any tick at or after it).
fn run_book<'s, B: Book>(
    events: Stream<'s, WireEvent>,
    control: Stream<'s, Control>,
    side: Stream<'s, Update<B::Side>>,
    name: &str,
    route: fn(&Event) -> u64,
    ticks: Ticks,
    book: B,
) -> BookStreams<'s, B::Record> {
    let control_route = move |c: &Control| match c {
        Control::Checkpoint { worker } => *worker,
        Control::Restore(Saved::Pending(event)) => route(event),
        Control::Restore(Saved::Key(key, _)) => shard(key),
        Control::Restore(Saved::Po(po_id, _, _)) => shard(po_id),
        Control::Restore(Saved::Count(..) | Saved::End(..)) => 0,
    };
    let mut builder = OperatorBuilder::new(name.to_owned(), events.scope());
    // Messages cross to their owner in the compact wire layout (crate::wire), not bincode's.
    let mut input = builder.new_input(events, Exchange::new(move |e: &WireEvent| route(&e.0)));
    let mut control = builder.new_input(control, Exchange::new(control_route));
    let mut side = builder.new_input(side, Exchange::new(|(s, _, _): &Update<B::Side>| B::side_route(s)));
    let (mut outputs, ports): (Vec<_>, Vec<_>) = (0..B::PORTS).map(|_| builder.new_output()).unzip();
    let (mut saved_output, saved_stream) = builder.new_output::<Vec<Saved>>();
    builder.build(move |_initial| {
        let mut run = BookRun::new(book, ticks);
        move |frontiers| {
            input.for_each(|cap, data| data.drain(..).for_each(|WireEvent(event)| run.stash_event(&cap, event)));
            control.for_each(|cap, data| data.drain(..).for_each(|c| run.take_control(&cap, c)));
            side.for_each(|cap, data| {
                for (update, time, diff) in data.drain(..) {
                    run.side_stash.push(&cap, time, (update, diff));
                }
            });
            while let Some((time, due)) = run.next_due() {
                // A checkpoint at R needs everything sent before R; a restore or a tick at T
                // everything sent at T too.
                if !all_passed(frontiers, time, due != Due::Checkpoint) {
                    break;
                }
                match due {
                    Due::Restore => run.restore(time, &mut outputs),
                    Due::Checkpoint => run.answer_request(time, &mut saved_output),
                    Due::Tick => run.close_tick(time),
                }
            }
            run.end_activation(&mut outputs);
        }
    });
    BookStreams { ports, saved: saved_stream }
}

/// Whether every record sent before `time` (or, `inclusive`, at it) has arrived on every input.
fn all_passed(frontiers: &[MutableAntichain<Millis>], time: Millis, inclusive: bool) -> bool {
    if inclusive {
        frontiers.iter().all(|f| !f.less_equal(&time))
    } else {
        frontiers.iter().all(|f| !f.less_than(&time))
    }
}

/// What a [`run_book`] operator does next at a logical time; at equal times, in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// Re-create saved entries.
    Restore,
    /// Answer a checkpoint request.
    Checkpoint,
    /// Apply a tick's messages, side updates and timers.
    Tick,
}

/// The state of a [`run_book`] operator between activations: the book, what waits for its
/// time, and buffers reused from tick to tick.
struct BookRun<B: Book> {
    book: B,
    ticks: Ticks,
    /// Each message keeps the logical time it was sent at: a checkpoint at R saves, as
    /// pending, exactly the messages sent before R whose tick is at or after R.
    stash: TickStash<(Millis, Event), PackedEvents>,
    side_stash: TickStash<(B::Side, isize)>,
    /// Saved entries to re-create, with the capabilities (one per port) to publish them at.
    restores: BTreeMap<Millis, (Vec<Capability<Millis>>, Vec<Saved>)>,
    /// Checkpoint requests, with a capability on the saved entries' port.
    requests: BTreeMap<Millis, Capability<Millis>>,
    /// Capabilities (one per port) at the book's next timer, while it has one.
    timer_caps: Vec<Capability<Millis>>,
    /// Every tick one activation closes goes out at the earliest one's capabilities (see
    /// `stash`); `None` until the activation closes one.
    batch_caps: Option<Vec<Capability<Millis>>>,
    /// What the activation's ticks emitted, by output port.
    by_port: Ported<B::Record>,
    saved: Vec<Saved>,
}

impl<B: Book> BookRun<B> {
    fn new(book: B, ticks: Ticks) -> Self {
        BookRun {
            book,
            ticks,
            stash: TickStash::with_ports(B::PORTS),
            side_stash: TickStash::with_ports(B::PORTS),
            restores: BTreeMap::new(),
            requests: BTreeMap::new(),
            timer_caps: Vec::new(),
            batch_caps: None,
            by_port: Ported::new(B::PORTS, B::port),
            saved: Vec::new(),
        }
    }

    /// Stashes a message at its tick, remembering when it was sent.
    fn stash_event(&mut self, cap: &InputCapability<Millis>, event: Event) {
        // The sources never send messages beyond the window; anything else is a bug upstream,
        // and dropping it here would hide it from the summary, so keep it.
        let time = self.ticks.emission(event.order.effective).unwrap_or(event.order.effective);
        let sent = cap.least().copied().unwrap_or_default();
        self.stash.push(cap, time, (sent, event));
    }

    /// Files a checkpoint request or a saved entry to restore (a pending message is stashed
    /// like any other).
    fn take_control(&mut self, cap: &InputCapability<Millis>, control: Control) {
        match control {
            Control::Checkpoint { .. } => {
                if let Some(held) = cap.retain_least(B::PORTS) {
                    self.requests.entry(*held.time()).or_insert(held);
                }
            }
            Control::Restore(Saved::Pending(event)) => self.stash_event(cap, event),
            Control::Restore(entry) => {
                let caps: Option<Vec<_>> = (0..B::PORTS).map(|port| cap.retain_least(port)).collect();
                if let Some(caps) = caps {
                    let time = *caps[0].time();
                    self.restores.entry(time).or_insert_with(|| (caps, Vec::new())).1.push(entry);
                }
            }
        }
    }

    /// The earliest restore, request or tick (messages, side updates or a timer).
    fn next_due(&self) -> Option<(Millis, Due)> {
        let tick = [self.stash.first_time(), self.side_stash.first_time(), self.book.next_timer()];
        let candidates = [
            self.restores.keys().next().map(|&t| (t, Due::Restore)),
            self.requests.keys().next().map(|&t| (t, Due::Checkpoint)),
            tick.into_iter().flatten().min().map(|t| (t, Due::Tick)),
        ];
        candidates.into_iter().flatten().min()
    }

    /// Re-creates the saved entries of `time` and publishes their facts at their own
    /// capabilities.
    fn restore(&mut self, time: Millis, outputs: &mut [Output<Millis, Vec<Update<B::Record>>>]) {
        let (caps, entries) = self.restores.remove(&time).expect("a restore is due");
        // Not into `by_port`: what it holds goes out at earlier capabilities.
        let mut restored = Ported::new(B::PORTS, B::port);
        entries.into_iter().for_each(|entry| self.book.restore(time, entry, &mut restored));
        give_by_port(outputs, &caps, &mut restored);
        self.timer_caps = self.caps_at_next_timer(&caps);
    }

    /// Sends the book's state and the messages pending at `time` as the checkpoint at `time`.
    fn answer_request(&mut self, time: Millis, saved_output: &mut Output<Millis, Vec<Saved>>) {
        let cap = self.requests.remove(&time).expect("a request is due");
        self.book.save(&mut self.saved);
        for events in self.stash.from(time) {
            let pending = events.iter().filter(|packed| packed.sent() < time);
            self.saved.extend(pending.map(|packed| Saved::Pending(packed.event())));
        }
        self.saved.push(Saved::End(time, self.saved.len() as u64));
        give_all(saved_output, &cap, &mut self.saved);
    }

    /// Applies the messages and side updates of `time` and the timers due then, sorting the
    /// records into `by_port`.
    fn close_tick(&mut self, time: Millis) {
        let events = self.stash.take(time);
        let side_updates = self.side_stash.take(time);
        if self.batch_caps.is_none() {
            self.batch_caps = Some(if events.is_some() {
                self.stash.caps(time)
            } else if side_updates.is_some() {
                self.side_stash.caps(time)
            } else {
                // A timer set by an earlier activation (or a restore).
                assert!(!self.timer_caps.is_empty(), "a pending timer holds capabilities");
                self.timer_caps.iter().map(|cap| cap.delayed(&time)).collect()
            });
        }
        // Sorted by their packed index and unpacked one at a time as the book reaches them:
        // a tick's messages never all exist as events at once (crate::packed).
        let events = events.unwrap_or_default().into_sorted(B::apply_prefix, B::apply_order);
        self.book.prepare_tick(&events);
        let mut side_updates = side_updates.unwrap_or_default();
        differential_dataflow::consolidation::consolidate(&mut side_updates);
        self.book.close_tick(time, events.into_events(), side_updates, &mut self.by_port);
    }

    /// Sends what the activation's ticks produced and moves the held capabilities on.
    fn end_activation(&mut self, outputs: &mut [Output<Millis, Vec<Update<B::Record>>>]) {
        self.stash.settle();
        self.side_stash.settle();
        if let Some(caps) = self.batch_caps.take() {
            // Every tick closed here lies before the next timer.
            self.timer_caps = self.caps_at_next_timer(&caps);
            give_by_port(outputs, &caps, &mut self.by_port);
        }
    }

    /// Capabilities at the book's next timer (none without one), from `caps` before it.
    fn caps_at_next_timer(&self, caps: &[Capability<Millis>]) -> Vec<Capability<Millis>> {
        match self.book.next_timer() {
            Some(next) => caps.iter().map(|cap| cap.delayed(&next)).collect(),
            None => Vec::new(),
        }
    }
}

/// A key's ledger and the open-order quantity the PO ledger reports for it.
#[derive(Default)]
pub(crate) struct KeyBook {
    state: KeyState,
    /// Sum of the key's open purchase orders (not saved: the PO ledger restores it).
    on_order: i64,
    /// The earliest tick at which the key is scheduled in [`Effects::expiries`] (not saved: a
    /// restore schedules it again).
    next_visit: MaybeMillis,
}

impl KeyBook {
    /// The key's base: its stock, orders and policy. Between visits (its tick settled) that is
    /// the base it published last.
    fn base(&self) -> Base {
        let stock = self.state.stock();
        Base { on_hand: stock.on_hand, reserved: stock.reserved, on_order: self.on_order, policy: self.state.policy() }
    }
}

/// The planner of a key with `base`: its sourced policy and position before outbound demand.
fn planner_of(base: &Base) -> Option<Planner> {
    let policy = base.policy.as_ref().filter(|p| p.source.is_some())?;
    Some(Planner { own_position: base.own_position(), policy: policy.clone() })
}

/// Appends what a key's base change from `old` to `new` at `time` changes: its base, its
/// standalone line and, while its location is a source (`was_source` before, `is_source`
/// after), its planner.
fn base_change(
    key: &Key,
    old: &Base,
    new: &Base,
    (was_source, is_source): (bool, bool),
    time: Millis,
    out: &mut impl Emit<KeyOut>,
) {
    let old_planner = planner_of(old);
    let new_planner = planner_of(new);
    let old_line = old_planner.as_ref().and_then(|p| line_for(&p.policy, p.own_position));
    let new_line = new_planner.as_ref().and_then(|p| line_for(&p.policy, p.own_position));
    if old_line != new_line {
        out.emit_all(old_line.map(|line| (KeyOut::Line(key.clone(), line), time, -1)));
        out.emit_all(new_line.map(|line| (KeyOut::Line(key.clone(), line), time, 1)));
    }
    let old_planner = old_planner.filter(|_| was_source);
    let new_planner = new_planner.filter(|_| is_source);
    if old_planner != new_planner {
        out.emit_all(old_planner.map(|p| (KeyOut::Planner(key.clone(), Box::new(p)), time, -1)));
        out.emit_all(new_planner.map(|p| (KeyOut::Planner(key.clone(), Box::new(p)), time, 1)));
    }
    let (old_row, new_row) = (RowBase::from(old), RowBase::from(new));
    // An empty base is the default row base: no record.
    if old_row != new_row {
        if !old.is_empty() {
            out.emit((KeyOut::Base(key.clone(), old_row), time, -1));
        }
        if !new.is_empty() {
            out.emit((KeyOut::Base(key.clone(), new_row), time, 1));
        }
    }
}

/// The per-key ledger: stock, holds, counts and policies, and the bases derived from them.
struct KeyLedger {
    /// The books, in the worker's key table beside the keys' row inputs.
    keys: KeyTable,
    effects: Effects,
    /// Every count published so far, for checkpoints.
    totals: BTreeMap<Counter, i64>,
    /// The locations some policy has named as its internal source. Only keys there can have
    /// outbound demand, so only they publish planners (the order-plan fixpoint arranges the
    /// planners of distribution centers, not of every store whose position moves with each
    /// sale). The set never shrinks: a location no longer named keeps publishing planners,
    /// which costs a little and changes no output (a planner without outbound demand joins
    /// nothing).
    sources: HashSet<Name, std::hash::BuildHasherDefault<FxHasher>>,
}

/// What applying a key's messages does besides changing its state: hold expiries to come back
/// to, and outcome counts. Apart from the books, so that a book can be applied to in place.
struct Effects {
    ticks: Ticks,
    /// The keys to visit at each logical time because a hold of theirs expires then. A key is
    /// listed at the tick of its earliest expiry only, and again after each visit, so a key
    /// with a million holds is not listed a million times; an entry whose hold was ended
    /// earlier costs a visit that changes nothing.
    expiries: BTreeMap<Millis, Vec<Key>>,
    counts: BTreeMap<Counter, isize>,
    /// The source names of every book's policy, each held once.
    source_names: SourceNames,
}

/// A tick's side updates, split: open-order changes by key (in key order) and the locations
/// named as an internal source for the first time.
struct SideChanges {
    on_order: Vec<(Key, i64)>,
    flipped: Vec<Name>,
}

impl KeyLedger {
    fn new(ticks: Ticks, keys: KeyTable) -> Self {
        KeyLedger {
            keys,
            effects: Effects {
                ticks,
                expiries: BTreeMap::new(),
                counts: BTreeMap::new(),
                source_names: SourceNames::default(),
            },
            totals: BTreeMap::new(),
            sources: HashSet::default(),
        }
    }

    /// Splits the consolidated side updates of a tick, adding the new sources to `sources`.
    fn take_side(&mut self, side: Vec<(KeySide, isize)>) -> SideChanges {
        // Consolidated side updates come sorted: the open orders by key, then the sources.
        let mut changes = SideChanges { on_order: Vec::new(), flipped: Vec::new() };
        for (update, diff) in side {
            match update {
                KeySide::OnOrder(key, qty) => changes.on_order.push((key, qty.saturating_mul(diff as i64))),
                KeySide::Source { loc, .. } => {
                    if diff > 0 && !self.sources.contains(&loc) {
                        self.sources.insert(loc.clone());
                        changes.flipped.push(loc);
                    }
                }
            }
        }
        changes
    }

    /// Visits `key` at the tick `time`: applies its messages (the head of `events`), its
    /// open-order change `delta` and the expiry of its holds, and appends what that changes of
    /// its base. Returns whether the base changed.
    fn visit(
        &mut self,
        key: &Key,
        delta: i64,
        events: &mut Peekable<impl Iterator<Item = Event>>,
        time: Millis,
        flipped: &[Name],
        out: &mut impl Emit<KeyOut>,
    ) -> bool {
        let has_messages = events.peek().is_some_and(|e| key.is(&e.message.sku, &e.message.loc));
        let mut table = self.keys.borrow_mut();
        let entry = if has_messages || delta != 0 {
            table.keys.entry(key.clone()).or_default()
        } else {
            match table.keys.get_mut(key) {
                Some(entry) if entry.book.is_some() => entry,
                _ => return false,
            }
        };
        let book = entry.book.get_or_insert_with(KeyBook::default);
        // The base as published: stock and orders change only below, the policy with the
        // messages.
        let old = book.base();
        while let Some(event) = events.next_if(|e| key.is(&e.message.sku, &e.message.loc)) {
            self.effects.apply(&mut book.state, event);
        }
        book.state.settle(time);
        self.effects.schedule_next_expiry(key, book, time);
        book.on_order = book.on_order.saturating_add(delta);
        let new = book.base();
        let forget = book.on_order == 0 && book.state.is_forgettable();
        let changed = old != new;
        if changed {
            let is_source = self.sources.contains(key.second());
            let was_source = is_source && !is_at(flipped, key);
            base_change(key, &old, &new, (was_source, is_source), time, out);
        }
        if forget {
            entry.book = None;
            if entry.is_empty() {
                table.keys.swap_remove(key);
            }
        }
        changed
    }

    /// Rare (a location's first sourcing policy): the keys at the `flipped` locations whose
    /// base did not change this tick (`changed`, in key order, did) gain their planner.
    fn gain_planners(&self, flipped: &[Name], changed: &[Key], time: Millis, out: &mut impl Emit<KeyOut>) {
        let table = self.keys.borrow_mut();
        let mut gained: Vec<(&Key, Planner)> = table
            .keys
            .iter()
            .filter(|(key, _)| is_at(flipped, key) && changed.binary_search(key).is_err())
            .filter_map(|(key, entry)| planner_of(&entry.book.as_ref()?.base()).map(|p| (key, p)))
            .collect();
        gained.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out.emit_all(gained.into_iter().map(|(key, planner)| (KeyOut::Planner(key.clone(), Box::new(planner)), time, 1)));
    }

    /// Publishes the tick's outcome counts and adds them to the totals.
    fn publish_counts(&mut self, time: Millis, out: &mut impl Emit<KeyOut>) {
        for (counter, n) in std::mem::take(&mut self.effects.counts) {
            *self.totals.entry(counter).or_default() += n as i64;
            out.emit((KeyOut::Counter(counter), time, n));
        }
    }
}

impl Effects {
    /// Applies one message of a key to its `state` (SPEC §2, [`KeyState::apply`]) and counts
    /// what it counts.
    fn apply(&mut self, state: &mut KeyState, event: Event) {
        for counter in state.apply(event, &mut self.source_names).counters() {
            *self.counts.entry(counter).or_default() += 1;
        }
    }

    /// After a visit to `key` at `now` (or its restore), makes sure a visit is scheduled at the
    /// tick where its earliest remaining hold expires.
    fn schedule_next_expiry(&mut self, key: &Key, book: &mut KeyBook, now: Millis) {
        book.next_visit = MaybeMillis::new(book.next_visit.get().filter(|&visit| visit > now));
        let expiry = book.state.holds.next_expiry();
        // A hold expiring beyond the window never ends within it.
        let Some(due) = expiry.and_then(|at| self.ticks.emission(at)).filter(|&due| due > now) else { return };
        if book.next_visit.get().is_none_or(|visit| due < visit) {
            self.expiries.entry(due).or_default().push(key.clone());
            book.next_visit = MaybeMillis::new(Some(due));
        }
    }

    /// The keys to visit at `time` for their holds' expiries, in key order.
    fn take_due(&mut self, time: Millis) -> Vec<Key> {
        let mut due = self.expiries.remove(&time).unwrap_or_default();
        due.sort_unstable();
        due.dedup();
        due
    }
}

/// Whether `key`'s location is one of `locs` (the locations that became sources this tick).
fn is_at(locs: &[Name], key: &Key) -> bool {
    let loc = key.second();
    locs.iter().any(|l| l == loc)
}

/// The key a message is about, borrowed.
fn key_of(event: &Event) -> (&str, &str) {
    (&event.message.sku, &event.message.loc)
}

impl Book for KeyLedger {
    type Side = KeySide;
    type Record = KeyOut;
    const PORTS: usize = 4;

    fn port(record: &KeyOut) -> usize {
        match record {
            KeyOut::Base(..) => 0,
            KeyOut::Line(..) => 1,
            KeyOut::Planner(..) => 2,
            KeyOut::Counter(_) => 3,
        }
    }

    fn side_route(side: &KeySide) -> u64 {
        match side {
            KeySide::OnOrder(key, _) => shard(key),
            KeySide::Source { worker, .. } => *worker,
        }
    }

    /// A key's messages are independent of other keys': each key's come together, in SPEC
    /// order, so that the tick visits every touched key once, in key order.
    fn apply_order(a: &Packed<'_>, b: &Packed<'_>) -> std::cmp::Ordering {
        a.key().cmp(&b.key()).then_with(|| a.cmp_order(b))
    }

    fn apply_prefix(packed: &Packed<'_>) -> [u64; 2] {
        packed.key_prefix()
    }

    /// A tick that brings many new keys (the setup's: every key at once) grew the table a
    /// doubling at a time, and the last doubling held the old table beside the new one: at
    /// 1M keys 531 of the peak's 1010 MB of heap were the table (heaptrack). Room for the
    /// tick's keys is made at once instead. The table may then double one tick earlier than it
    /// would have, when most of a large tick's keys are already in it. The one pass over the
    /// tick's keys that counts them also looks the first ones up ahead of the walk ([`warm`]):
    /// a tick whose room moves the table loses that warming, one tick in a doubling.
    fn prepare_tick(&mut self, events: &SortedEvents) {
        let mut table = self.keys.borrow_mut();
        // Sorted by key, so a key's messages are adjacent.
        let keys = warm(&table.keys, events.iter().map(|packed| packed.key().into()));
        table.keys.reserve(keys);
    }

    /// Visits, in key order, every key with messages, an open-order change or a hold expiring
    /// at `time`.
    fn close_tick(
        &mut self,
        time: Millis,
        events: impl IntoIterator<Item = Event>,
        side: Vec<(KeySide, isize)>,
        out: &mut impl Emit<KeyOut>,
    ) {
        let mut events = events.into_iter().peekable();
        let mut due = self.effects.take_due(time).into_iter().peekable();
        let SideChanges { on_order, flipped } = self.take_side(side);
        let mut on_order = on_order.into_iter().peekable();
        // The keys at a flipped location whose base changed (in key order): an unchanged key
        // there gains its planner in `gain_planners`, with the untouched ones.
        let mut changed: Vec<Key> = Vec::new();
        loop {
            // The least key among the messages, the expiries and the open-order changes.
            let heads = [
                events.peek().map(key_of),
                due.peek().map(Key::parts),
                on_order.peek().map(|(k, _)| k.parts()),
            ];
            let Some((sku, loc)) = heads.into_iter().flatten().min() else { break };
            let key = Key::new(sku, loc);
            let mut delta = 0i64;
            while let Some((_, qty)) = on_order.next_if(|(k, _)| *k == key) {
                delta = delta.saturating_add(qty);
            }
            due.next_if(|k| *k == key);
            let changed_base = self.visit(&key, delta, &mut events, time, &flipped, out);
            if changed_base && is_at(&flipped, &key) {
                changed.push(key);
            }
        }
        if !flipped.is_empty() {
            self.gain_planners(&flipped, &changed, time, out);
        }
        self.publish_counts(time, out);
    }

    fn next_timer(&self) -> Option<Millis> {
        self.effects.expiries.keys().next().copied()
    }

    fn restore(&mut self, time: Millis, saved: Saved, out: &mut impl Emit<KeyOut>) {
        match saved {
            Saved::Key(key, mut state) => {
                state.share_source(&mut self.effects.source_names);
                // Its open orders (and the sources) come as side updates at this time, applied
                // after the restores.
                let mut book = KeyBook { state, on_order: 0, next_visit: MaybeMillis::default() };
                self.effects.schedule_next_expiry(&key, &mut book, time);
                let base = book.base();
                let source = self.sources.contains(key.second());
                base_change(&key, &Base::default(), &base, (source, source), time, out);
                self.keys.borrow_mut().keys.entry(key).or_default().book = Some(book);
            }
            Saved::Count(counter, n) => {
                *self.totals.entry(counter).or_default() += n;
                out.emit((KeyOut::Counter(counter), time, n as isize));
            }
            Saved::Po(..) | Saved::Pending(_) | Saved::End(..) => {}
        }
    }

    fn save(&self, out: &mut Vec<Saved>) {
        let table = self.keys.borrow_mut();
        let books = table.keys.iter().filter_map(|(key, entry)| Some((key, entry.book.as_ref()?)));
        out.extend(books.map(|(key, book)| Saved::Key(key.clone(), book.state.clone())));
        out.extend(self.totals.iter().map(|(&counter, &n)| Saved::Count(counter, n)));
    }
}
/// The purchase-order ledger: the latest message per `po_id` is the order's state.
struct PoLedger {
    /// Open orders only: a closed or cancelled order contributes nothing and is forgotten
    /// (a later `open` message simply starts it again).
    open: FastMap<Name, (Key, i64)>,
}

impl Book for PoLedger {
    /// Nothing: purchase orders depend on their messages only.
    type Side = ();
    type Record = KeySide;
    const PORTS: usize = 1;

    fn port(_: &KeySide) -> usize {
        0
    }

    fn side_route(_: &()) -> u64 {
        0
    }

    fn close_tick(
        &mut self,
        time: Millis,
        events: impl IntoIterator<Item = Event>,
        _: Vec<((), isize)>,
        out: &mut impl Emit<KeySide>,
    ) {
        // Publishing per message is fine: consolidation nets repeated updates of a tick.
        for event in events {
            let message = event.message;
            let Body::Po { po_id, qty, status, .. } = message.body else {
                unreachable!("only purchase orders are routed to the PO ledger")
            };
            if let Some((key, old)) = self.open.remove(&po_id) {
                out.emit((KeySide::OnOrder(key, old), time, -1));
            }
            if status == PoStatus::Open && qty != 0 {
                let key = Key::new(&message.sku, &message.loc);
                out.emit((KeySide::OnOrder(key.clone(), qty), time, 1));
                self.open.insert(po_id, (key, qty));
            }
        }
    }

    fn next_timer(&self) -> Option<Millis> {
        None
    }

    fn restore(&mut self, time: Millis, saved: Saved, out: &mut impl Emit<KeySide>) {
        if let Saved::Po(po_id, key, qty) = saved {
            out.emit((KeySide::OnOrder(key.clone(), qty), time, 1));
            self.open.insert(po_id, (key, qty));
        }
    }

    fn save(&self, out: &mut Vec<Saved>) {
        out.extend(self.open.iter().map(|(po_id, (key, qty))| Saved::Po(po_id.clone(), key.clone(), *qty)));
    }
}

fn route_by_key(event: &Event) -> u64 {
    shard(&(&event.message.sku, &event.message.loc))
}

fn route_by_po(event: &Event) -> u64 {
    match &event.message.body {
        Body::Po { po_id, .. } => shard(po_id),
        _ => 0,
    }
}

/// The internal source a policy names, if any.
fn internal_source(body: &Body) -> Option<&Name> {
    match body {
        Body::Policy(policy) => policy_source(policy.as_ref()),
        _ => None,
    }
}

/// The internal source a policy names, if any.
fn policy_source(policy: Option<&Policy>) -> Option<&Name> {
    policy.and_then(|p| p.source.as_ref()).filter(|source| !is_external(source))
}

/// One copy of a source location for each of `peers` workers, at `time`.
fn source_copies(loc: &Name, time: Millis, peers: u64) -> impl Iterator<Item = Update<KeySide>> + '_ {
    (0..peers).map(move |worker| (KeySide::Source { worker, loc: loc.clone() }, time, 1))
}

/// Splits the messages into purchase orders and key messages, without copying either (each
/// wrapped for its exchange to the ledger that owns it), and sends every worker the source
/// locations the policies name, at the policy's tick. A
/// location goes out again only at an earlier tick than before, so a network's setup (every
/// store's policy naming one of a few distribution centers) sends each center once.
fn split_events<'s>(
    events: Stream<'s, Event>,
    ticks: Ticks,
) -> (Stream<'s, WireEvent>, Stream<'s, WireEvent>, Stream<'s, Update<KeySide>>) {
    let peers = events.scope().peers() as u64;
    let mut builder = OperatorBuilder::new("SplitEvents".to_owned(), events.scope());
    let mut input = builder.new_input(events, Pipeline);
    let (mut orders_output, orders) = builder.new_output::<Vec<WireEvent>>();
    let (mut keyed_output, keyed) = builder.new_output::<Vec<WireEvent>>();
    let (mut sources_output, sources) = builder.new_output::<Vec<Update<KeySide>>>();
    builder.build(move |_initial| {
        let mut sent: FastMap<Name, Millis> = FastMap::default();
        let (mut orders, mut keyed, mut new_sources) = (Vec::new(), Vec::new(), Vec::new());
        move |_frontiers| {
            input.for_each(|cap, data| {
                // Most messages are keyed: one allocation instead of a vector grown by doubling.
                keyed.reserve(data.len());
                for event in data.drain(..) {
                    if let Some(loc) = internal_source(&event.message.body) {
                        let time = ticks.emission(event.order.effective).unwrap_or(event.order.effective);
                        if sent.get(loc).is_none_or(|&earlier| time < earlier) {
                            sent.insert(loc.clone(), time);
                            new_sources.extend(source_copies(loc, time, peers));
                        }
                    }
                    if matches!(event.message.body, Body::Po { .. }) {
                        orders.push(WireEvent(event));
                    } else {
                        keyed.push(WireEvent(event));
                    }
                }
                let Some(sent) = cap.least().copied() else { return };
                let caps = [0, 1, 2].map(|port| cap.delayed(&sent, port));
                give_all(&mut orders_output, &caps[0], &mut orders);
                give_all(&mut keyed_output, &caps[1], &mut keyed);
                give_all(&mut sources_output, &caps[2], &mut new_sources);
            });
        }
    });
    (orders, keyed, sources)
}

/// What the ledgers publish.
pub struct Ledgers<'s> {
    /// What each key's ATP row takes from its base, for every key that has stock, open orders
    /// or a policy; on the worker that owns the key by [`shard`].
    pub base: Collection<'s, (Key, RowBase)>,
    /// Each key's order line at its own position, before outbound demand (SPEC §3's line
    /// of a key nobody orders from).
    pub standalone: Collection<'s, (Key, Line)>,
    /// The planners (sourced policy and own position) of the keys at locations that some
    /// policy names as its internal source: the only keys that can have outbound demand.
    pub source_planners: Collection<'s, (Key, Planner)>,
    /// The counted ledger outcomes, as a collection whose multiplicities are the counts.
    pub counters: Collection<'s, Counter>,
    /// The ledgers' state at each checkpoint requested through `control`, each ledger's
    /// ending with [`Saved::End`].
    pub saved: Stream<'s, Saved>,
}

/// Applies every message in SPEC order and publishes, per tick, each key's netted base, its
/// standalone order line and (at source locations) its planner; also answers the checkpoint
/// requests in `control` with each ledger's [`Saved`] entries and re-creates the entries
/// `control` restores.
///
/// `events` may arrive at any logical time at or before their own tick; each is held back
/// until its tick is complete.
///
/// The key ledger keeps its books in `keys`, the worker's key table, which the row operator
/// ([`crate::atp::row_outputs`]) shares.
pub(crate) fn ledger<'s>(
    events: Stream<'s, Event>,
    control: Stream<'s, Control>,
    ticks: Ticks,
    keys: KeyTable,
) -> Ledgers<'s> {
    use timely::dataflow::operators::Concat;
    let peers = events.scope().peers() as u64;
    let is_order = |e: &Event| matches!(e.message.body, Body::Po { .. });
    let (orders, keyed, sources) = split_events(events, ticks);
    let for_orders = move |c: &Control| match c {
        Control::Checkpoint { .. } => true,
        Control::Restore(Saved::Po(..)) => true,
        Control::Restore(Saved::Pending(e)) => is_order(e),
        Control::Restore(_) => false,
    };
    // The sources named by restored state: restored policies, and policies pending in it.
    let restored_sources = control.clone().unary::<CapacityContainerBuilder<Vec<Update<KeySide>>>, _, _, _>(
        Pipeline,
        "RestoredSources",
        move |_, _| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let Some(sent) = cap.least().copied() else { return };
                    let mut session = output.session(&cap);
                    for c in data.drain(..) {
                        let (loc, time) = match &c {
                            Control::Restore(Saved::Key(_, state)) => {
                                (policy_source(state.policy().as_ref()).cloned(), sent)
                            }
                            Control::Restore(Saved::Pending(event)) => {
                                let time = ticks.emission(event.order.effective).unwrap_or(event.order.effective);
                                (internal_source(&event.message.body).cloned(), time)
                            }
                            _ => (None, sent),
                        };
                        if let Some(loc) = loc {
                            session.give_iterator(source_copies(&loc, time, peers));
                        }
                    }
                });
            }
        },
    );
    let order_control = control.clone().flat_map(move |c| for_orders(&c).then_some(c));
    let key_control =
        control.flat_map(move |c| (matches!(c, Control::Checkpoint { .. }) || !for_orders(&c)).then_some(c));
    let no_side = order_control.clone().flat_map(|_| None::<Update<()>>);
    let po =
        run_book(orders, order_control, no_side, "PoLedger", route_by_po, ticks, PoLedger { open: FastMap::default() });
    let on_order = po.ports.into_iter().next().expect("the PO ledger has one port");
    let side = on_order.concat(sources).concat(restored_sources);
    let key = run_book(keyed, key_control, side, "KeyLedger", route_by_key, ticks, KeyLedger::new(ticks, keys));
    let mut ports = key.ports.into_iter();
    let mut port = || ports.next().expect("the key ledger has four ports");
    let (base, standalone, planners, counters) = (port(), port(), port(), port());
    Ledgers {
        base: select(base, "Bases", |o| if let KeyOut::Base(k, b) = o { Some((k, b)) } else { None }),
        standalone: select(standalone, "Lines", |o| if let KeyOut::Line(k, l) = o { Some((k, l)) } else { None }),
        source_planners: select(
            planners,
            "Planners",
            |o| if let KeyOut::Planner(k, p) = o { Some((k, *p)) } else { None },
        ),
        counters: select(counters, "Counters", |o| if let KeyOut::Counter(c) = o { Some(c) } else { None }),
        saved: key.saved.concat(po.saved),
    }
}

/// The records of one port of the key ledger as `select` turns them, each container into one
/// of its size. Through a `flat_map` the setup tick's bases (one a key, in containers of
/// 65,536) went into containers of ~100, and the large ones it freed, which the allocator keeps
/// for its purge delay and cannot reuse for the small ones, were alive beside them: ~40 B a key
/// at the peak at 10M keys (docs/benchmarks.md).
fn select<'s, T: timely::ExchangeData>(
    port: Stream<'s, Update<KeyOut>>,
    name: &str,
    select: impl Fn(KeyOut) -> Option<T> + 'static,
) -> Collection<'s, T> {
    port.unary::<CapacityContainerBuilder<Vec<Update<T>>>, _, _, _>(Pipeline, name, move |_, _| {
        move |input, output| {
            input.for_each(|cap, records| {
                let mut selected: Vec<Update<T>> =
                    records.drain(..).filter_map(|(o, t, d)| Some((select(o)?, t, d))).collect();
                if !selected.is_empty() {
                    output.session(&cap).give_container(&mut selected);
                }
            });
        }
    })
    .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, OrderKey, Position};

    #[test]
    fn records_fill_containers_of_a_bounded_size_per_port_in_order() {
        let mut ported: Ported<u64> = Ported::new(2, |r| (*r % 2) as usize);
        const PORT_CHUNK: usize = 1 << 16;
        let records = 4 * PORT_CHUNK as u64 + 6;
        (0..records).for_each(|r| ported.emit((r, 1, 1)));
        for (port, emitted) in ported.ports.iter_mut().enumerate() {
            let chunks: Vec<_> = std::mem::take(emitted).into_chunks().collect();
            let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
            assert_eq!(sizes, [PORT_CHUNK, PORT_CHUNK, 3], "port {port}");
            let emitted: Vec<u64> = chunks.iter().flatten().map(|(r, _, _)| *r).collect();
            assert!(emitted.iter().copied().eq((port as u64..records).step_by(2)), "port {port} in order");
        }
    }

    #[test]
    fn a_record_is_as_small_as_a_base() {
        // Bases are nearly all of the ledger's records; a planner is boxed.
        assert!(std::mem::size_of::<KeyOut>() <= 64, "{}", std::mem::size_of::<KeyOut>());
    }

    fn event(effective: Millis, offset: u64, loc: &str, body: Body) -> Event {
        Event {
            order: OrderKey { effective, position: Position { source: 0, partition: 0, offset } },
            message: Message { ts: effective, sku: "S".into(), loc: loc.into(), body },
        }
    }

    /// The keys with a book, each with whether its holds are empty.
    fn books(ledger: &KeyLedger) -> Vec<(Key, bool)> {
        let table = ledger.keys.borrow_mut();
        table.keys.iter().filter_map(|(key, e)| Some((key.clone(), e.book.as_ref()?.state.holds.is_empty()))).collect()
    }

    fn key_ledger() -> KeyLedger {
        KeyLedger::new(Ticks { tick_ms: 1000, until: None }, KeyTable::default())
    }

    /// The stock part of the bases published in `out`.
    fn stock_of(out: &[Update<KeyOut>]) -> Vec<(Stock, isize)> {
        out.iter()
            .filter_map(|(f, _, d)| match f {
                KeyOut::Base(_, b) => Some((Stock { on_hand: b.on_hand, reserved: b.reserved }, *d)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn books_stay_packed() {
        // Every key has a book: its size is most of the ledger's bytes per key.
        assert_eq!(std::mem::size_of::<KeyState>(), 56);
        assert_eq!(std::mem::size_of::<KeyBook>(), 72);
    }

    #[test]
    fn a_tick_of_many_movements_publishes_one_netted_change() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let events: Vec<Event> = (0..1000).map(|i| event(500, i, "L", Body::Return { qty: 1 })).collect();
        ledger.close_tick(1000, events, Vec::new(), &mut out);
        assert_eq!(stock_of(&out), vec![(Stock { on_hand: 1000, reserved: 0 }, 1)]);
    }

    #[test]
    fn ended_holds_and_empty_keys_are_forgotten() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        for round in 0..100u64 {
            let t = round * 1000 + 1;
            let res_id = Name::from(format!("R{round}"));
            let events = vec![
                event(t, 1, "L", Body::Reserve { res_id: res_id.clone(), qty: 2, expires_at: Some(t + 5000) }),
                event(t, 2, "L", Body::Release { res_id }),
            ];
            ledger.close_tick(round * 1000 + 1000, events, Vec::new(), &mut out);
        }
        // Every hold ended and nothing is left on the key: no book, though expiries stay scheduled.
        assert!(books(&ledger).is_empty(), "{} books left", books(&ledger).len());
        // A key with stock keeps one book whose size does not depend on how many holds it saw.
        let events = vec![event(200_001, 1, "L", Body::Count { qty: 5 })];
        ledger.close_tick(201_000, events, Vec::new(), &mut out);
        assert_eq!(books(&ledger).len(), 1);
        assert!(books(&ledger).iter().all(|(_, holds_empty)| *holds_empty));
    }

    #[test]
    fn holds_expire_at_their_tick_without_a_later_message() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let reserve = Body::Reserve { res_id: "R".into(), qty: 3, expires_at: Some(4500) };
        ledger.close_tick(1000, vec![event(800, 1, "L", reserve)], Vec::new(), &mut out);
        assert_eq!(ledger.next_timer(), Some(5000));
        out.clear();
        ledger.close_tick(5000, Vec::new(), Vec::new(), &mut out);
        assert_eq!(stock_of(&out), vec![(Stock { on_hand: 0, reserved: 3 }, -1)]);
        assert_eq!(ledger.next_timer(), None);
        assert!(books(&ledger).is_empty());
    }

    #[test]
    fn a_location_named_as_source_gives_its_keys_planners_whether_or_not_their_base_changes() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let policy = |source: &str| {
            Body::Policy(Some(Policy {
                safety_stock: 0,
                reorder_point: 5,
                order_up_to: 20,
                pack_size: 1,
                moq: 0,
                source: Some(source.into()),
            }))
        };
        let mut setup = vec![event(500, 1, "DC", policy("vendor:V")), event(500, 2, "DC", Body::Count { qty: 3 })];
        setup[1].message.sku = "T".into();
        ledger.close_tick(1000, setup, Vec::new(), &mut out);
        assert!(out.iter().all(|(o, _, _)| !matches!(o, KeyOut::Planner(..))), "not a source yet: {out:?}");
        out.clear();
        // (S, DC) is touched without a change of base (an orphan release); (T, DC) is not touched.
        let orphan = event(1500, 3, "DC", Body::Release { res_id: "none".into() });
        let source = (KeySide::Source { worker: 0, loc: "DC".into() }, 1);
        ledger.close_tick(2000, vec![orphan], vec![source], &mut out);
        let planners: Vec<(Key, isize)> = out
            .iter()
            .filter_map(|(o, _, d)| match o {
                KeyOut::Planner(key, _) => Some((key.clone(), *d)),
                _ => None,
            })
            .collect();
        // (T, DC) has no policy, hence no planner; (S, DC) has one now.
        assert_eq!(planners, vec![(Key::new("S", "DC"), 1)]);
    }

    #[test]
    fn open_orders_from_the_po_ledger_join_the_base_at_their_tick() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let key = Key::new("S", "L");
        ledger.close_tick(1000, vec![event(500, 1, "L", Body::Count { qty: 4 })], Vec::new(), &mut out);
        out.clear();
        ledger.close_tick(2000, Vec::new(), vec![(KeySide::OnOrder(key.clone(), 10), 1)], &mut out);
        let bases: Vec<(i64, i64, isize)> = out
            .iter()
            .filter_map(|(o, _, d)| match o {
                KeyOut::Base(_, b) => Some((b.on_hand, b.on_order, *d)),
                _ => None,
            })
            .collect();
        assert_eq!(bases, vec![(4, 0, -1), (4, 10, 1)]);
        // A key with only open orders keeps its book until they close.
        out.clear();
        let other = Key::new("S", "M");
        ledger.close_tick(3000, Vec::new(), vec![(KeySide::OnOrder(other.clone(), 2), 1)], &mut out);
        ledger.close_tick(4000, Vec::new(), vec![(KeySide::OnOrder(other.clone(), 2), -1)], &mut out);
        assert!(!books(&ledger).iter().any(|(key, _)| *key == other));
        assert_eq!(stock_of(&out), vec![(Stock::default(), 1), (Stock::default(), -1)]);
    }

    #[test]
    fn the_barrier_survives_a_key_at_zero() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        ledger.close_tick(1000, vec![event(1000, 1, "L", Body::Count { qty: 0 })], Vec::new(), &mut out);
        let mut late_sale = event(2000, 2, "L", Body::Sale { qty: 4 });
        late_sale.message.ts = 900;
        ledger.close_tick(2000, vec![late_sale], Vec::new(), &mut out);
        assert!(stock_of(&out).is_empty());
        assert_eq!(out.last(), Some(&(KeyOut::Counter(Counter::Absorbed), 2000, 1)));
    }

    #[test]
    fn closed_purchase_orders_are_dropped() {
        let mut ledger = PoLedger { open: FastMap::default() };
        let mut out = Vec::new();
        let po = |qty, status| Body::Po { po_id: "P".into(), qty, status, eta: None };
        ledger.close_tick(1000, vec![event(1, 1, "L", po(10, PoStatus::Open))], Vec::new(), &mut out);
        ledger.close_tick(2000, vec![event(1001, 2, "M", po(4, PoStatus::Open))], Vec::new(), &mut out);
        ledger.close_tick(3000, vec![event(2001, 3, "M", po(4, PoStatus::Closed))], Vec::new(), &mut out);
        assert!(ledger.open.is_empty());
        let on_order: Vec<_> = out.iter().map(|(f, t, d)| (f.clone(), *t, *d)).collect();
        let key = |loc: &str| Key::new("S", loc);
        assert_eq!(
            on_order,
            vec![
                (KeySide::OnOrder(key("L"), 10), 1000, 1),
                (KeySide::OnOrder(key("L"), 10), 2000, -1),
                (KeySide::OnOrder(key("M"), 4), 2000, 1),
                (KeySide::OnOrder(key("M"), 4), 3000, -1),
            ]
        );
    }
}
