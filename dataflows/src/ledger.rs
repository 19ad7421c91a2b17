//! The ordered ledgers of SPEC §2: per key (on_hand with counts as barriers, holds with expiry,
//! the policy) and per purchase order, applying each tick's messages in the total order.
//!
//! Order inside a tick matters (a `count` before or after a `sale` at the same millisecond), so
//! these are timely operators that stash a tick's messages until the frontier has passed it and
//! then apply them sorted. Their output is a differential update stream of the key's *netted*
//! state per tick: a key touched by a thousand sales in one tick yields at most two updates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

use crate::clock::{Ticks, DEFAULT_HOLD_MS};
use crate::model::{Body, Event, Millis, Name, PoStatus, Policy};
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

/// Applies messages to one shard of ledger state, a tick at a time.
trait Book: 'static {
    /// Applies the messages of logical time `time` (sorted in SPEC order), plus whatever timers
    /// fall due at `time`, appending the resulting updates to `out`.
    fn close_tick(&mut self, time: Millis, events: Vec<Event>, out: &mut Vec<FactUpdate>);
    /// The earliest logical time at which the book needs to run without new messages.
    fn next_timer(&self) -> Option<Millis>;
}

/// Runs `book` as an operator: messages are exchanged by `route`, stashed per logical time and
/// applied once the input frontier has passed that time.
fn run_book<'s, B: Book>(
    events: Stream<'s, Event>,
    name: &str,
    route: fn(&Event) -> u64,
    ticks: Ticks,
    mut book: B,
) -> Stream<'s, FactUpdate> {
    events.unary_frontier(Exchange::new(move |e: &Event| route(e)), name, move |_, _| {
        let mut stash: BTreeMap<Millis, (Capability<Millis>, Vec<Event>)> = BTreeMap::new();
        let mut timer_cap: Option<Capability<Millis>> = None;
        let mut out = Vec::new();
        move |(input, frontier), output| {
            input.for_each(|cap, data| {
                for event in data.drain(..) {
                    // The sources never send messages beyond the window; anything else is a bug
                    // upstream, and dropping it here would hide it from the summary, so keep it.
                    let time = ticks.emission(event.order.effective).unwrap_or(event.order.effective);
                    stash.entry(time).or_insert_with(|| (cap.delayed(&time, 0), Vec::new())).1.push(event);
                }
            });
            loop {
                let next_events = stash.keys().next().copied();
                let time = match (next_events, book.next_timer()) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => break,
                };
                if frontier.less_equal(&time) {
                    break;
                }
                let (cap, mut events) = match stash.remove(&time) {
                    Some(entry) => entry,
                    None => {
                        let held = timer_cap.as_ref().expect("a pending timer holds a capability");
                        (held.delayed(&time), Vec::new())
                    }
                };
                events.sort_unstable_by(|a, b| a.order.cmp(&b.order));
                book.close_tick(time, events, &mut out);
                if !out.is_empty() {
                    output.session(&cap).give_iterator(out.drain(..));
                }
                timer_cap = book.next_timer().map(|next| cap.delayed(&next));
            }
        }
    })
}

/// A hold (reservation) on a key.
#[derive(Clone, Debug)]
struct Hold {
    res_id: Name,
    qty: i64,
    expires_at: Millis,
}

/// One key's ledger.
#[derive(Clone, Debug, Default)]
struct KeyBook {
    on_hand: i64,
    /// `ts` of the latest applied count: older movements are absorbed.
    barrier: Option<Millis>,
    holds: Vec<Hold>,
    policy: Option<Policy>,
    /// The stock last published, to publish only changes.
    published: Stock,
}

impl KeyBook {
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
    books: FastMap<Key, KeyBook>,
    /// Keys with a hold expiring at each logical time.
    expiries: BTreeMap<Millis, Vec<Key>>,
    counts: BTreeMap<Counter, isize>,
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
                    if let Some(due) = self.ticks.emission(expires_at).filter(|&due| due > time) {
                        self.expiries.entry(due).or_default().push(key.clone());
                    }
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
            out.push((Fact::Counter(counter), time, n));
        }
    }

    fn next_timer(&self) -> Option<Millis> {
        self.expiries.keys().next().copied()
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

/// Applies every message in SPEC order and publishes the netted ledger facts per tick.
///
/// `events` may arrive at any logical time at or before their own tick; each is held back
/// until its tick is complete.
pub fn ledger<'s>(events: Stream<'s, Event>, ticks: Ticks) -> Stream<'s, FactUpdate> {
    use timely::dataflow::operators::{Concat, OkErr};
    // Split without cloning: a filter per branch would copy every event for the first branch.
    let (orders, keyed) = events.ok_err::<Vec<Event>, _, Vec<Event>, _, _>(|e| {
        if matches!(e.message.body, Body::Po { .. }) {
            Ok(e)
        } else {
            Err(e)
        }
    });
    let keys = KeyLedger { ticks, books: FastMap::default(), expiries: BTreeMap::new(), counts: BTreeMap::new() };
    let key_facts = run_book(keyed, "KeyLedger", route_by_key, ticks, keys);
    let po_facts = run_book(orders, "PoLedger", route_by_po, ticks, PoLedger { open: FastMap::default() });
    key_facts.concat(po_facts)
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
        let ticks = Ticks { tick_ms: 1000, until: None };
        KeyLedger { ticks, books: FastMap::default(), expiries: BTreeMap::new(), counts: BTreeMap::new() }
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
