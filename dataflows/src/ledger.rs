//! The ordered ledgers of SPEC §2: per key (on_hand with counts as barriers, holds with expiry,
//! the policy) and per purchase order, applying each tick's messages in the total order.
//!
//! Order inside a tick matters (a `count` before or after a `sale` at the same millisecond), so
//! these are timely operators that stash a tick's messages until the frontier has passed it and
//! then apply them sorted. Their output is a differential update stream of the key's *netted*
//! state per tick: a key touched by a thousand sales in one tick yields at most two updates.
//!
//! They also own the input side of a checkpoint: asked at a logical time `R`, each emits its
//! state as of "every tick before `R` applied, nothing at or after it" ([`Saved`]), and a
//! ledger given saved entries re-creates that state and publishes its facts again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};

use crate::clock::{Ticks, DEFAULT_HOLD_MS};
use crate::model::{Body, Event, Millis, Name, PoStatus, Policy};
use crate::stash::TickStash;
use crate::{shard, FastMap, Key, Stream};

/// The ledger's netted stock of a key at a tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stock {
    /// Physical stock.
    pub on_hand: i64,
    /// Sum of the active holds.
    pub reserved: i64,
}

impl Stock {
    fn is_zero(&self) -> bool {
        self.on_hand == 0 && self.reserved == 0
    }
}

/// Ledger outcomes that are counted in the run summary, not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Counter {
    /// `release`/`fulfill` of an unknown or inactive hold.
    Orphan,
    /// `reserve` of a hold that is active.
    Duplicate,
    /// `reserve` whose `expires_at` is not after its effective time.
    ExpiredOnArrival,
    /// A movement, count or fulfill's on_hand part older than the key's latest count.
    Absorbed,
}

/// One kind of fact the ledgers publish, as a differential update.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    /// The key's stock (present only when non-zero).
    Stock(Key, Stock),
    /// The key's policy.
    Policy(Key, Policy),
    /// One open purchase order's quantity towards the key's `on_order`.
    OnOrder(Key, i64),
    /// One counted ledger outcome.
    Counter(Counter),
}

/// A differential update of a [`Fact`].
pub type FactUpdate = (Fact, Millis, isize);

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

/// What a ledger operator emits: facts for the dataflow, or saved entries for a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Out {
    Fact(FactUpdate),
    Saved(Saved),
}

/// Applies messages to one shard of ledger state, a tick at a time.
trait Book: 'static {
    /// Applies the messages of logical time `time` (sorted in SPEC order), plus whatever timers
    /// fall due at `time`, appending the resulting updates to `out`.
    fn close_tick(&mut self, time: Millis, events: Vec<Event>, out: &mut Vec<FactUpdate>);
    /// The earliest logical time at which the book needs to run without new messages.
    fn next_timer(&self) -> Option<Millis>;
    /// Re-creates one saved entry (never `Pending`/`End`) as of `time`, publishing its facts.
    fn restore(&mut self, time: Millis, saved: Saved, out: &mut Vec<FactUpdate>);
    /// Appends the book's state (without pending messages) to `out`.
    fn save(&self, out: &mut Vec<Saved>);
}

/// Runs `book` as an operator: messages are exchanged by `route`, stashed per logical time and
/// applied once the input frontier has passed that time. `control` brings saved entries to
/// restore (applied before anything at their time) and checkpoint requests (answered once every
/// record sent before the request's time has arrived, before any tick at or after it).
fn run_book<'s, B: Book>(
    events: Stream<'s, Event>,
    control: Stream<'s, Control>,
    name: &str,
    route: fn(&Event) -> u64,
    ticks: Ticks,
    mut book: B,
) -> Stream<'s, Out> {
    let control_route = move |c: &Control| match c {
        Control::Checkpoint { worker } => *worker,
        Control::Restore(Saved::Pending(event)) => route(event),
        Control::Restore(Saved::Key(key, _)) => shard(&(&key.0, &key.1)),
        Control::Restore(Saved::Po(po_id, _, _)) => shard(po_id),
        Control::Restore(Saved::Count(..) | Saved::End(..)) => 0,
    };
    let pacts = (Exchange::new(move |e: &Event| route(e)), Exchange::new(control_route));
    events.binary_frontier(control, pacts.0, pacts.1, name, move |_, _| {
        // Each message keeps the logical time it was sent at: a checkpoint at R saves, as
        // pending, exactly the messages sent before R whose tick is at or after R.
        let mut stash: TickStash<(Millis, Event)> = TickStash::default();
        let mut restores: BTreeMap<Millis, (Capability<Millis>, Vec<Saved>)> = BTreeMap::new();
        let mut requests: BTreeMap<Millis, Capability<Millis>> = BTreeMap::new();
        let mut timer_cap: Option<Capability<Millis>> = None;
        let mut out = Vec::new();
        let mut saved = Vec::new();
        move |(input, frontier), (control, control_frontier), output| {
            // Every tick this activation closes goes out at the earliest one's capability
            // (see `stash`).
            let mut batch_cap: Option<Capability<Millis>> = None;
            let mut batch: Vec<Out> = Vec::new();
            let mut stash_event = |cap: &InputCapability<Millis>, event: Event| {
                // The sources never send messages beyond the window; anything else is a bug
                // upstream, and dropping it here would hide it from the summary, so keep it.
                let time = ticks.emission(event.order.effective).unwrap_or(event.order.effective);
                let sent = cap.least().copied().unwrap_or_default();
                stash.push(cap, time, (sent, event));
            };
            input.for_each(|cap, data| data.drain(..).for_each(|event| stash_event(&cap, event)));
            control.for_each(|cap, data| {
                for c in data.drain(..) {
                    match c {
                        Control::Checkpoint { .. } => {
                            if let Some(held) = cap.retain_least(0) {
                                requests.entry(*held.time()).or_insert(held);
                            }
                        }
                        Control::Restore(Saved::Pending(event)) => stash_event(&cap, event),
                        Control::Restore(entry) => {
                            if let Some(held) = cap.retain_least(0) {
                                restores.entry(*held.time()).or_insert_with(|| (held, Vec::new())).1.push(entry);
                            }
                        }
                    }
                }
            });
            // Whether every record sent before `time` (or, `inclusive`, at it) has arrived.
            let passed = |time: &Millis, inclusive: bool| {
                if inclusive {
                    !frontier.less_equal(time) && !control_frontier.less_equal(time)
                } else {
                    !frontier.less_than(time) && !control_frontier.less_than(time)
                }
            };
            loop {
                // At equal times: restore, then checkpoint, then the tick.
                let candidates = [
                    restores.keys().next().map(|&t| (t, 0)),
                    requests.keys().next().map(|&t| (t, 1)),
                    stash.first_time().into_iter().chain(book.next_timer()).min().map(|t| (t, 2)),
                ];
                let Some((time, kind)) = candidates.into_iter().flatten().min() else { break };
                if !passed(&time, kind != 1) {
                    break;
                }
                match kind {
                    0 => {
                        let (cap, entries) = restores.remove(&time).expect("a restore is due");
                        entries.into_iter().for_each(|entry| book.restore(time, entry, &mut out));
                        output.session(&cap).give_iterator(out.drain(..).map(Out::Fact));
                        timer_cap = book.next_timer().map(|next| cap.delayed(&next));
                    }
                    1 => {
                        let cap = requests.remove(&time).expect("a request is due");
                        book.save(&mut saved);
                        for events in stash.from(time) {
                            let pending = events.iter().filter(|(sent, _)| *sent < time);
                            saved.extend(pending.map(|(_, event)| Saved::Pending(event.clone())));
                        }
                        saved.push(Saved::End(time, saved.len() as u64));
                        output.session(&cap).give_iterator(saved.drain(..).map(Out::Saved));
                    }
                    _ => {
                        let (cap, events) = match stash.take(time) {
                            Some(entry) => entry,
                            None => {
                                let held = timer_cap.as_ref().expect("a pending timer holds a capability");
                                (held.delayed(&time), Vec::new())
                            }
                        };
                        let mut events: Vec<Event> = events.into_iter().map(|(_, event)| event).collect();
                        events.sort_unstable_by(|a, b| a.order.cmp(&b.order));
                        book.close_tick(time, events, &mut out);
                        if !out.is_empty() {
                            batch_cap.get_or_insert_with(|| cap.clone());
                            batch.extend(out.drain(..).map(Out::Fact));
                        }
                        timer_cap = book.next_timer().map(|next| cap.delayed(&next));
                    }
                }
            }
            if let Some(cap) = batch_cap.filter(|_| !batch.is_empty()) {
                output.session(&cap).give_container(&mut batch);
            }
            // A tick that touched every key (a full load of policies) grows the buffers to the
            // size of the state; do not keep that much for the ticks of a few keys that follow.
            if out.capacity() > 1 << 16 {
                out = Vec::new();
            }
        }
    })
}

/// A hold (reservation) on a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The reservation's id.
    pub res_id: Name,
    /// Units held.
    pub qty: i64,
    /// When the hold ends unless released or fulfilled first.
    pub expires_at: Millis,
}

/// One key's ledger (saved as is in checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Physical stock.
    pub on_hand: i64,
    /// `ts` of the latest applied count: older movements are absorbed.
    pub barrier: Option<Millis>,
    /// Holds not yet ended (each ends at its expiry at the latest).
    pub holds: Vec<Hold>,
    /// The key's policy.
    pub policy: Option<Policy>,
    /// The stock last published, to publish only changes.
    pub published: Stock,
}

impl KeyState {
    fn active_hold(&self, res_id: &str, at: Millis) -> Option<usize> {
        self.holds.iter().position(|h| h.res_id == res_id && h.expires_at > at)
    }

    /// Whether a movement with this `ts` is older than the latest count.
    fn behind_barrier(&self, ts: Millis) -> bool {
        self.barrier.is_some_and(|b| ts < b)
    }

    fn is_forgettable(&self) -> bool {
        // The barrier must survive even at zero stock: a late sale behind it must stay absorbed.
        self.on_hand == 0
            && self.barrier.is_none()
            && self.holds.is_empty()
            && self.policy.is_none()
            && self.published.is_zero()
    }
}

/// The per-key ledger: stock, holds, counts and policies.
struct KeyLedger {
    ticks: Ticks,
    books: FastMap<Key, KeyState>,
    /// Keys with a hold expiring at each logical time.
    expiries: BTreeMap<Millis, Vec<Key>>,
    counts: BTreeMap<Counter, isize>,
    /// Every count published so far, for checkpoints.
    totals: BTreeMap<Counter, i64>,
}

impl KeyLedger {
    fn new(ticks: Ticks) -> Self {
        KeyLedger {
            ticks,
            books: FastMap::default(),
            expiries: BTreeMap::new(),
            counts: BTreeMap::new(),
            totals: BTreeMap::new(),
        }
    }

    /// Schedules the touch of `key` at the tick where a hold expiring at `expires_at` ends.
    fn schedule_expiry(&mut self, key: &Key, expires_at: Millis, now: Millis) {
        if let Some(due) = self.ticks.emission(expires_at).filter(|&due| due > now) {
            self.expiries.entry(due).or_default().push(key.clone());
        }
    }
}

impl KeyLedger {
    fn apply(&mut self, event: Event, touched: &mut Vec<Key>, out: &mut Vec<FactUpdate>, time: Millis) {
        let at = event.order.effective;
        let message = event.message;
        let key = (message.sku, message.loc);
        let book = self.books.entry(key.clone()).or_default();
        let ts = message.ts;
        let mut count = |c: Counter| *self.counts.entry(c).or_default() += 1;
        match message.body {
            Body::Sale { .. }
            | Body::Return { .. }
            | Body::Receipt { .. }
            | Body::Adjust { .. }
            | Body::Count { .. }
                if book.behind_barrier(ts) =>
            {
                count(Counter::Absorbed)
            }
            Body::Sale { qty } => book.on_hand = book.on_hand.saturating_sub(qty),
            Body::Return { qty } | Body::Receipt { qty, .. } => book.on_hand = book.on_hand.saturating_add(qty),
            Body::Adjust { delta, .. } => book.on_hand = book.on_hand.saturating_add(delta),
            Body::Count { qty } => {
                book.on_hand = qty;
                book.barrier = Some(ts);
            }
            Body::Reserve { res_id, qty, expires_at } => {
                let expires_at = expires_at.unwrap_or(at.saturating_add(DEFAULT_HOLD_MS));
                if book.active_hold(&res_id, at).is_some() {
                    count(Counter::Duplicate);
                } else if expires_at <= at {
                    count(Counter::ExpiredOnArrival);
                } else {
                    book.holds.retain(|h| h.res_id != res_id);
                    book.holds.push(Hold { res_id, qty, expires_at });
                    self.schedule_expiry(&key, expires_at, time);
                }
            }
            Body::Release { res_id } => match book.active_hold(&res_id, at) {
                Some(i) => {
                    book.holds.swap_remove(i);
                }
                None => count(Counter::Orphan),
            },
            Body::Fulfill { res_id, qty } => {
                match book.active_hold(&res_id, at) {
                    Some(i) => {
                        book.holds.swap_remove(i);
                    }
                    None => count(Counter::Orphan),
                }
                if book.behind_barrier(ts) {
                    count(Counter::Absorbed);
                } else {
                    book.on_hand = book.on_hand.saturating_sub(qty);
                }
            }
            Body::Policy(policy) => {
                if book.policy != policy {
                    if let Some(old) = book.policy.take() {
                        out.push((Fact::Policy(key.clone(), old), time, -1));
                    }
                    if let Some(new) = policy.clone() {
                        out.push((Fact::Policy(key.clone(), new), time, 1));
                    }
                    book.policy = policy;
                }
            }
            Body::Po { .. } => unreachable!("purchase orders are routed to the PO ledger"),
        }
        touched.push(key);
    }
}

impl Book for KeyLedger {
    fn close_tick(&mut self, time: Millis, events: Vec<Event>, out: &mut Vec<FactUpdate>) {
        let mut touched = Vec::with_capacity(events.len());
        for event in events {
            self.apply(event, &mut touched, out, time);
        }
        if let Some(due) = self.expiries.remove(&time) {
            touched.extend(due);
        }
        touched.sort_unstable();
        touched.dedup();
        for key in touched {
            let Some(book) = self.books.get_mut(&key) else { continue };
            book.holds.retain(|h| h.expires_at > time);
            let reserved = book.holds.iter().fold(0i64, |sum, h| sum.saturating_add(h.qty));
            let now = Stock { on_hand: book.on_hand, reserved };
            if now != book.published {
                if !book.published.is_zero() {
                    out.push((Fact::Stock(key.clone(), book.published), time, -1));
                }
                if !now.is_zero() {
                    out.push((Fact::Stock(key.clone(), now), time, 1));
                }
                book.published = now;
            }
            if book.is_forgettable() {
                self.books.remove(&key);
            }
        }
        for (counter, n) in std::mem::take(&mut self.counts) {
            *self.totals.entry(counter).or_default() += n as i64;
            out.push((Fact::Counter(counter), time, n));
        }
    }

    fn next_timer(&self) -> Option<Millis> {
        self.expiries.keys().next().copied()
    }

    fn restore(&mut self, time: Millis, saved: Saved, out: &mut Vec<FactUpdate>) {
        match saved {
            Saved::Key(key, book) => {
                for hold in &book.holds {
                    self.schedule_expiry(&key, hold.expires_at, time);
                }
                if !book.published.is_zero() {
                    out.push((Fact::Stock(key.clone(), book.published), time, 1));
                }
                if let Some(policy) = &book.policy {
                    out.push((Fact::Policy(key.clone(), policy.clone()), time, 1));
                }
                self.books.insert(key, book);
            }
            Saved::Count(counter, n) => {
                *self.totals.entry(counter).or_default() += n;
                out.push((Fact::Counter(counter), time, n as isize));
            }
            Saved::Po(..) | Saved::Pending(_) | Saved::End(..) => {}
        }
    }

    fn save(&self, out: &mut Vec<Saved>) {
        out.extend(self.books.iter().map(|(key, book)| Saved::Key(key.clone(), book.clone())));
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
    fn close_tick(&mut self, time: Millis, events: Vec<Event>, out: &mut Vec<FactUpdate>) {
        // Publishing per message is fine: consolidation nets repeated updates of a tick.
        for event in events {
            let message = event.message;
            let Body::Po { po_id, qty, status, .. } = message.body else {
                unreachable!("only purchase orders are routed to the PO ledger")
            };
            if let Some((key, old)) = self.open.remove(&po_id) {
                out.push((Fact::OnOrder(key, old), time, -1));
            }
            if status == PoStatus::Open && qty != 0 {
                let key = (message.sku, message.loc);
                out.push((Fact::OnOrder(key.clone(), qty), time, 1));
                self.open.insert(po_id, (key, qty));
            }
        }
    }

    fn next_timer(&self) -> Option<Millis> {
        None
    }

    fn restore(&mut self, time: Millis, saved: Saved, out: &mut Vec<FactUpdate>) {
        if let Saved::Po(po_id, key, qty) = saved {
            out.push((Fact::OnOrder(key.clone(), qty), time, 1));
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

/// Applies every message in SPEC order and publishes the netted ledger facts per tick; also
/// answers the checkpoint requests in `control` with each ledger's [`Saved`] entries (each
/// ledger's ending with [`Saved::End`]) and re-creates the entries `control` restores.
///
/// `events` may arrive at any logical time at or before their own tick; each is held back
/// until its tick is complete.
pub fn ledger<'s>(
    events: Stream<'s, Event>,
    control: Stream<'s, Control>,
    ticks: Ticks,
) -> (Stream<'s, FactUpdate>, Stream<'s, Saved>) {
    use timely::dataflow::operators::{Concat, OkErr};
    let is_order = |e: &Event| matches!(e.message.body, Body::Po { .. });
    // Split without cloning: a filter per branch would copy every event for the first branch.
    let (orders, keyed) = events.ok_err::<Vec<Event>, _, Vec<Event>, _, _>(move |e| if is_order(&e) { Ok(e) } else { Err(e) });
    let for_orders = move |c: &Control| match c {
        Control::Checkpoint { .. } => true,
        Control::Restore(Saved::Po(..)) => true,
        Control::Restore(Saved::Pending(e)) => is_order(e),
        Control::Restore(_) => false,
    };
    let order_control = control.clone().flat_map(move |c| for_orders(&c).then_some(c));
    let key_control =
        control.flat_map(move |c| (matches!(c, Control::Checkpoint { .. }) || !for_orders(&c)).then_some(c));
    let key_out = run_book(keyed, key_control, "KeyLedger", route_by_key, ticks, KeyLedger::new(ticks));
    let po_out = run_book(orders, order_control, "PoLedger", route_by_po, ticks, PoLedger { open: FastMap::default() });
    key_out.concat(po_out).ok_err::<Vec<FactUpdate>, _, Vec<Saved>, _, _>(|out| match out {
        Out::Fact(fact) => Ok(fact),
        Out::Saved(saved) => Err(saved),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, OrderKey, Position};

    fn event(effective: Millis, offset: u64, loc: &str, body: Body) -> Event {
        Event {
            order: OrderKey { effective, position: Position { source: 0, partition: 0, offset } },
            message: Message { ts: effective, sku: "S".into(), loc: loc.into(), body },
        }
    }

    fn key_ledger() -> KeyLedger {
        KeyLedger::new(Ticks { tick_ms: 1000, until: None })
    }

    fn stock_of(out: &[FactUpdate]) -> Vec<(Stock, isize)> {
        out.iter()
            .filter_map(|(f, _, d)| match f {
                Fact::Stock(_, s) => Some((*s, *d)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_tick_of_many_movements_publishes_one_netted_change() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let events: Vec<Event> = (0..1000).map(|i| event(500, i, "L", Body::Return { qty: 1 })).collect();
        ledger.close_tick(1000, events, &mut out);
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
            ledger.close_tick(round * 1000 + 1000, events, &mut out);
        }
        // Every hold ended and nothing is left on the key: no book, though expiries stay scheduled.
        assert!(ledger.books.is_empty(), "books: {:?}", ledger.books);
        // A key with stock keeps one book whose size does not depend on how many holds it saw.
        let events = vec![event(200_001, 1, "L", Body::Count { qty: 5 })];
        ledger.close_tick(201_000, events, &mut out);
        assert_eq!(ledger.books.len(), 1);
        assert!(ledger.books.values().all(|b| b.holds.is_empty()));
    }

    #[test]
    fn holds_expire_at_their_tick_without_a_later_message() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        let reserve = Body::Reserve { res_id: "R".into(), qty: 3, expires_at: Some(4500) };
        ledger.close_tick(1000, vec![event(800, 1, "L", reserve)], &mut out);
        assert_eq!(ledger.next_timer(), Some(5000));
        out.clear();
        ledger.close_tick(5000, Vec::new(), &mut out);
        assert_eq!(stock_of(&out), vec![(Stock { on_hand: 0, reserved: 3 }, -1)]);
        assert_eq!(ledger.next_timer(), None);
        assert!(ledger.books.is_empty());
    }

    #[test]
    fn the_barrier_survives_a_key_at_zero() {
        let mut ledger = key_ledger();
        let mut out = Vec::new();
        ledger.close_tick(1000, vec![event(1000, 1, "L", Body::Count { qty: 0 })], &mut out);
        let mut late_sale = event(2000, 2, "L", Body::Sale { qty: 4 });
        late_sale.message.ts = 900;
        ledger.close_tick(2000, vec![late_sale], &mut out);
        assert!(stock_of(&out).is_empty());
        assert_eq!(out.last(), Some(&(Fact::Counter(Counter::Absorbed), 2000, 1)));
    }

    #[test]
    fn closed_purchase_orders_are_dropped() {
        let mut ledger = PoLedger { open: FastMap::default() };
        let mut out = Vec::new();
        let po = |qty, status| Body::Po { po_id: "P".into(), qty, status, eta: None };
        ledger.close_tick(1000, vec![event(1, 1, "L", po(10, PoStatus::Open))], &mut out);
        ledger.close_tick(2000, vec![event(1001, 2, "M", po(4, PoStatus::Open))], &mut out);
        ledger.close_tick(3000, vec![event(2001, 3, "M", po(4, PoStatus::Closed))], &mut out);
        assert!(ledger.open.is_empty());
        let on_order: Vec<_> = out.iter().map(|(f, t, d)| (f.clone(), *t, *d)).collect();
        let key = |loc: &str| (Name::from("S"), Name::from(loc));
        assert_eq!(
            on_order,
            vec![
                (Fact::OnOrder(key("L"), 10), 1000, 1),
                (Fact::OnOrder(key("L"), 10), 2000, -1),
                (Fact::OnOrder(key("M"), 4), 2000, 1),
                (Fact::OnOrder(key("M"), 4), 3000, -1),
            ]
        );
    }
}
