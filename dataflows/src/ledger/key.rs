//! One key's ledger (SPEC §2): on_hand with counts as barriers, the holds, the policy, and the
//! step that applies one message to them and says what it did. The key ledger operator and
//! `stockflow explain` both take this step, so SPEC §2's per-key rules live here once.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;
use std::num::NonZeroU32;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::holds::{Hold, Holds};
use super::Stock;
use crate::clock::DEFAULT_HOLD_MS;
use crate::model::{Body, Event, Millis, Name, Policy};
use crate::FxHasher;

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

/// One key's ledger. Its fields are packed (a million keys keep a million of these); in
/// checkpoints it keeps the layout it had before ([`SavedKeyState`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyState {
    /// Physical stock.
    pub on_hand: i64,
    /// `ts` of the latest applied count: older movements are absorbed.
    barrier: MaybeMillis,
    /// Holds not yet ended (each ends at its expiry at the latest).
    pub holds: Holds,
    /// The key's policy.
    policy: Option<KeyPolicy>,
}

/// A time or none, in 8 bytes where `Option<Millis>` takes 16: times end at
/// [`crate::model::MAX_TIME`], far below `u64::MAX`. It holds the time plus one, with
/// `u64::MAX` for none, so that zero is left as a niche: an `Option` of a struct holding one
/// (a key table's optional book) costs no tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaybeMillis(std::num::NonZeroU64);

impl Default for MaybeMillis {
    fn default() -> Self {
        MaybeMillis(std::num::NonZeroU64::MAX)
    }
}

impl MaybeMillis {
    /// `time`, packed (`u64::MAX - 1` and `u64::MAX`, never times, count as none).
    pub fn new(time: Option<Millis>) -> Self {
        match time {
            Some(t) if t < u64::MAX - 1 => MaybeMillis(std::num::NonZeroU64::MIN.saturating_add(t)),
            _ => MaybeMillis::default(),
        }
    }

    /// The time, if any.
    pub fn get(self) -> Option<Millis> {
        (self.0 != std::num::NonZeroU64::MAX).then(|| self.0.get() - 1)
    }
}

/// A key's policy as its ledger keeps it, in 32 bytes with its `Option` where [`Policy`]
/// takes 64: SPEC §1 bounds every policy number to 0..=1e9 and `pack_size` to >= 1, so each
/// fits a `u32`, and the source's name is shared ([`SourceNames`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeyPolicy {
    safety_stock: u32,
    reorder_point: u32,
    order_up_to: u32,
    pack_size: NonZeroU32,
    moq: u32,
    source: Option<Arc<Name>>,
}

/// The sources policies name, each name held once: a network's keys name a few distribution
/// centers and vendors, so a key's policy points to its source's name (8 bytes) instead of
/// holding a copy (24). A ledger keeps one for all its keys; names stay while the ledger
/// lives (a network has few).
#[derive(Debug, Default)]
pub struct SourceNames(HashSet<Arc<Name>, BuildHasherDefault<FxHasher>>);

impl SourceNames {
    /// The shared copy of `name`.
    fn share(&mut self, name: &Name) -> Arc<Name> {
        if let Some(shared) = self.0.get(name) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(name.clone());
        self.0.insert(Arc::clone(&shared));
        shared
    }
}

/// A policy number outside SPEC §1's bounds (the decoder rejects such messages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a policy number is outside SPEC's 0..=1e9 (or a pack_size of 0)")]
pub struct PolicyOutOfRange;

impl KeyPolicy {
    fn new(policy: &Policy, sources: &mut SourceNames) -> Result<Self, PolicyOutOfRange> {
        let number = |n: i64| u32::try_from(n).ok().filter(|&n| i64::from(n) <= crate::model::MAX_QTY);
        let numbers = [policy.safety_stock, policy.reorder_point, policy.order_up_to, policy.pack_size, policy.moq];
        let [safety_stock, reorder_point, order_up_to, pack_size, moq] = numbers.map(number);
        Ok(KeyPolicy {
            safety_stock: safety_stock.ok_or(PolicyOutOfRange)?,
            reorder_point: reorder_point.ok_or(PolicyOutOfRange)?,
            order_up_to: order_up_to.ok_or(PolicyOutOfRange)?,
            pack_size: pack_size.and_then(NonZeroU32::new).ok_or(PolicyOutOfRange)?,
            moq: moq.ok_or(PolicyOutOfRange)?,
            source: policy.source.as_ref().map(|name| sources.share(name)),
        })
    }

    fn policy(&self) -> Policy {
        Policy {
            safety_stock: self.safety_stock.into(),
            reorder_point: self.reorder_point.into(),
            order_up_to: self.order_up_to.into(),
            pack_size: self.pack_size.get().into(),
            moq: self.moq.into(),
            source: self.source.as_deref().cloned(),
        }
    }
}

/// [`KeyState`] as checkpoints hold it (docs/checkpoints.md): the layout from before its
/// fields were packed, with the stock it published (its on_hand and the sum of its holds).
#[derive(Serialize, Deserialize)]
#[serde(rename = "KeyState")]
struct SavedKeyState<H> {
    on_hand: i64,
    barrier: Option<Millis>,
    holds: H,
    policy: Option<Policy>,
    published: Stock,
}

impl Serialize for KeyState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SavedKeyState {
            on_hand: self.on_hand,
            barrier: self.barrier(),
            holds: &self.holds,
            policy: self.policy(),
            published: self.stock(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for KeyState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let saved = SavedKeyState::<Holds>::deserialize(deserializer)?;
        // Shared again when a ledger takes the state ([`KeyState::share_source`]).
        let policy = saved.policy.as_ref().map(|p| KeyPolicy::new(p, &mut SourceNames::default()));
        let policy = policy.transpose().map_err(serde::de::Error::custom)?;
        // `published` is left out: the key was saved with its tick settled, when the stock it
        // published is its stock ([`KeyState::stock`]).
        Ok(KeyState { on_hand: saved.on_hand, barrier: MaybeMillis::new(saved.barrier), holds: saved.holds, policy })
    }
}

/// What a message did to the key's on_hand, when it has an on_hand part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StockOutcome {
    /// A sale, return, receipt, adjust or fulfill moved on_hand.
    Moved,
    /// A count set on_hand and is the key's barrier from now on.
    Counted,
    /// The on_hand part is older than the latest count, whose `ts` is `barrier`: not applied,
    /// and counted ([`Counter::Absorbed`]).
    Absorbed {
        /// The `ts` of the count that absorbed it.
        barrier: Millis,
    },
}

/// What a message did to the hold it names (reserve, release, fulfill).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldOutcome {
    /// A reserve opened the hold, until `expires_at` (given or defaulted) unless it is ended
    /// first; its expiry is a time the ledger must come back to.
    Opened {
        /// When the hold ends by itself.
        expires_at: Millis,
    },
    /// A release or fulfill ended the active hold, which held `qty`.
    Ended {
        /// What the hold held.
        qty: i64,
    },
    /// A reserve of a hold that is active: ignored, counted.
    Duplicate,
    /// A reserve whose `expires_at` is not after its effective time: ignored, counted.
    ExpiredOnArrival,
    /// A release or fulfill of an unknown or inactive hold: counted (a fulfill still moves
    /// on_hand).
    Orphan,
}

/// What one message did to its key's ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Its effect on on_hand (`None`: the message has no on_hand part).
    pub stock: Option<StockOutcome>,
    /// Its effect on the hold it names (`None`: it names none).
    pub hold: Option<HoldOutcome>,
}

impl Outcome {
    /// The summary's counts this message adds: none, one, or for a fulfill both
    /// [`Counter::Orphan`] and [`Counter::Absorbed`].
    pub fn counters(&self) -> impl Iterator<Item = Counter> {
        let hold = match self.hold {
            Some(HoldOutcome::Duplicate) => Some(Counter::Duplicate),
            Some(HoldOutcome::ExpiredOnArrival) => Some(Counter::ExpiredOnArrival),
            Some(HoldOutcome::Orphan) => Some(Counter::Orphan),
            _ => None,
        };
        let stock = matches!(self.stock, Some(StockOutcome::Absorbed { .. })).then_some(Counter::Absorbed);
        hold.into_iter().chain(stock)
    }
}

impl KeyState {
    /// Applies one message of this key at its effective time (SPEC §2: counts are barriers,
    /// holds are active for [effective time, expires_at)) and says what it did. A policy's
    /// source name is shared through `sources`.
    ///
    /// Holds that expired before the message need not have been taken out
    /// ([`Holds::pop_expired`]): an expired hold is inactive here either way. Purchase orders
    /// belong to their own ledger and leave a key's unchanged.
    pub fn apply(&mut self, event: Event, sources: &mut SourceNames) -> Outcome {
        let at = event.order.effective;
        let ts = event.message.ts;
        let mut outcome = Outcome::default();
        match event.message.body {
            Body::Sale { qty } => outcome.stock = Some(self.move_stock(ts, qty.saturating_neg())),
            Body::Return { qty } | Body::Receipt { qty, .. } => outcome.stock = Some(self.move_stock(ts, qty)),
            Body::Adjust { delta, .. } => outcome.stock = Some(self.move_stock(ts, delta)),
            Body::Count { qty } => outcome.stock = Some(self.count(ts, qty)),
            Body::Reserve { res_id, qty, expires_at } => {
                let expires_at = expires_at.unwrap_or(at.saturating_add(DEFAULT_HOLD_MS));
                outcome.hold = Some(self.reserve(Hold { res_id, qty, expires_at }, at));
            }
            Body::Release { res_id } => outcome.hold = Some(self.end_hold(&res_id, at)),
            Body::Fulfill { res_id, qty } => {
                outcome.hold = Some(self.end_hold(&res_id, at));
                outcome.stock = Some(self.move_stock(ts, qty.saturating_neg()));
            }
            Body::Policy(policy) => {
                let policy = policy.as_ref().map(|p| KeyPolicy::new(p, sources)).transpose();
                self.policy = policy.expect("the decoder keeps policy numbers within SPEC's bounds");
            }
            Body::Po { .. } => {}
        }
        outcome
    }

    /// Adds `delta` to on_hand, unless a count with a later `ts` absorbs it.
    fn move_stock(&mut self, ts: Millis, delta: i64) -> StockOutcome {
        if let Some(barrier) = self.barrier().filter(|&b| ts < b) {
            return StockOutcome::Absorbed { barrier };
        }
        self.on_hand = self.on_hand.saturating_add(delta);
        StockOutcome::Moved
    }

    /// Sets on_hand to `qty` and the barrier to `ts`, unless a later count absorbs it.
    fn count(&mut self, ts: Millis, qty: i64) -> StockOutcome {
        if let Some(barrier) = self.barrier().filter(|&b| ts < b) {
            return StockOutcome::Absorbed { barrier };
        }
        self.on_hand = qty;
        self.barrier = MaybeMillis::new(Some(ts));
        StockOutcome::Counted
    }

    fn reserve(&mut self, hold: Hold, at: Millis) -> HoldOutcome {
        if self.holds.is_active(&hold.res_id, at) {
            HoldOutcome::Duplicate
        } else if hold.expires_at <= at {
            HoldOutcome::ExpiredOnArrival
        } else {
            let expires_at = hold.expires_at;
            self.holds.open(hold);
            HoldOutcome::Opened { expires_at }
        }
    }

    fn end_hold(&mut self, res_id: &str, at: Millis) -> HoldOutcome {
        if !self.holds.is_active(res_id, at) {
            return HoldOutcome::Orphan;
        }
        let hold = self.holds.end(res_id).expect("an active hold exists");
        HoldOutcome::Ended { qty: hold.qty }
    }

    /// Points the policy's source to the copy in `sources` (a restored state holds its own).
    pub fn share_source(&mut self, sources: &mut SourceNames) {
        if let Some(source) = self.policy.as_mut().and_then(|p| p.source.as_mut()) {
            *source = sources.share(source);
        }
    }

    /// `ts` of the latest applied count: older movements are absorbed.
    pub fn barrier(&self) -> Option<Millis> {
        self.barrier.get()
    }

    /// The key's policy.
    pub fn policy(&self) -> Option<Policy> {
        self.policy.as_ref().map(KeyPolicy::policy)
    }

    /// The key's (safety_stock, reorder_point), what its ATP row takes of its policy.
    pub fn row_policy(&self) -> Option<(u32, u32)> {
        self.policy.as_ref().map(|p| (p.safety_stock, p.reorder_point))
    }

    /// Its on_hand and the sum of its holds: once the key's tick is settled, the stock it
    /// publishes.
    pub fn stock(&self) -> Stock {
        Stock { on_hand: self.on_hand, reserved: self.holds.reserved() }
    }

    /// Takes out every hold that has expired at `time`.
    pub(super) fn settle(&mut self, time: Millis) {
        while self.holds.pop_expired(time).is_some() {}
    }

    /// Whether nothing about the key needs remembering.
    pub(super) fn is_forgettable(&self) -> bool {
        // The barrier must survive even at zero stock: a late sale behind it must stay absorbed.
        self.on_hand == 0 && self.barrier().is_none() && self.holds.is_empty() && self.policy.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Message, Name, OrderKey, Position};

    fn event(effective: Millis, ts: Millis, body: Body) -> Event {
        let order = OrderKey { effective, position: Position { source: 0, partition: 0, offset: 1 } };
        Event { order, message: Message { ts, sku: "S".into(), loc: "L".into(), body } }
    }

    #[test]
    fn a_packed_time_round_trips_and_leaves_a_niche() {
        for t in [0, 1, 1_700_000_000_000, crate::model::MAX_TIME, u64::MAX - 2] {
            assert_eq!(MaybeMillis::new(Some(t)).get(), Some(t));
        }
        assert_eq!(MaybeMillis::new(None).get(), None);
        assert_eq!(MaybeMillis::default().get(), None);
        assert_eq!(std::mem::size_of::<Option<MaybeMillis>>(), 8);
    }

    fn reserve(res_id: &str, qty: i64, expires_at: Option<Millis>) -> Body {
        Body::Reserve { res_id: Name::from(res_id), qty, expires_at }
    }

    #[test]
    fn each_rule_says_what_it_did() {
        let mut key = KeyState::default();
        let sources = &mut SourceNames::default();
        let opened = key.apply(event(1000, 1000, reserve("R", 3, None)), sources);
        assert_eq!(opened.hold, Some(HoldOutcome::Opened { expires_at: 1000 + DEFAULT_HOLD_MS }));
        assert_eq!(key.apply(event(1001, 1001, reserve("R", 3, None)), sources).hold, Some(HoldOutcome::Duplicate));
        let expired = key.apply(event(1002, 1002, reserve("Q", 1, Some(1002))), sources);
        assert_eq!(expired.counters().collect::<Vec<_>>(), vec![Counter::ExpiredOnArrival]);
        assert_eq!(key.apply(event(1003, 1003, Body::Count { qty: 10 }), sources).stock, Some(StockOutcome::Counted));
        // A fulfill of an unknown hold, older than the count: both counted, on_hand unchanged.
        let fulfill = key.apply(event(1004, 900, Body::Fulfill { res_id: "Z".into(), qty: 2 }), sources);
        assert_eq!(fulfill.stock, Some(StockOutcome::Absorbed { barrier: 1003 }));
        assert_eq!(fulfill.counters().collect::<Vec<_>>(), vec![Counter::Orphan, Counter::Absorbed]);
        assert_eq!(key.on_hand, 10);
        let ended = key.apply(event(1005, 1005, Body::Fulfill { res_id: "R".into(), qty: 3 }), sources);
        assert_eq!((ended.hold, ended.stock), (Some(HoldOutcome::Ended { qty: 3 }), Some(StockOutcome::Moved)));
        assert_eq!((key.on_hand, key.holds.reserved()), (7, 0));
        // An expired hold that was not taken out yet is inactive all the same.
        key.apply(event(2000, 2000, reserve("E", 5, Some(2500))), sources);
        assert_eq!(
            key.apply(event(2500, 2500, Body::Release { res_id: "E".into() }), sources).hold,
            Some(HoldOutcome::Orphan)
        );
        assert_eq!(
            key.apply(event(2600, 2600, reserve("E", 1, Some(3000))), sources).hold,
            Some(HoldOutcome::Opened { expires_at: 3000 })
        );
        key.settle(3000);
        assert_eq!(key.stock(), Stock { on_hand: 7, reserved: 0 });
    }

    #[test]
    fn saves_the_layout_it_had_before_it_was_packed_and_shares_sources() {
        let sources = &mut SourceNames::default();
        let policy = Policy {
            safety_stock: 3,
            reorder_point: 1_000_000_000,
            order_up_to: 1_000_000_000,
            pack_size: 6,
            moq: 0,
            source: Some("a-distribution-center-past-24-bytes".into()),
        };
        let (mut key, mut other) = (KeyState::default(), KeyState::default());
        key.apply(event(1000, 1000, Body::Count { qty: 10 }), sources);
        key.apply(event(1001, 1001, reserve("R", 3, Some(9000))), sources);
        key.apply(event(1002, 1002, Body::Policy(Some(policy.clone()))), sources);
        other.apply(event(1003, 1003, Body::Policy(Some(policy.clone()))), sources);
        let source = |state: &KeyState| state.policy.as_ref().and_then(|p| p.source.clone()).unwrap();
        assert!(Arc::ptr_eq(&source(&key), &source(&other)));
        // The fields of the unpacked KeyState, in order: on_hand, barrier, holds, policy, published.
        let holds = vec![Hold { res_id: "R".into(), qty: 3, expires_at: 9000 }];
        let before = (10i64, Some(1000u64), holds, Some(policy.clone()), Stock { on_hand: 10, reserved: 3 });
        let bytes = bincode::serialize(&key).unwrap();
        assert_eq!(bytes, bincode::serialize(&before).unwrap());
        let mut loaded: KeyState = bincode::deserialize(&bytes).unwrap();
        assert_eq!(loaded, key);
        assert!(!Arc::ptr_eq(&source(&loaded), &source(&key)));
        loaded.share_source(sources);
        assert!(Arc::ptr_eq(&source(&loaded), &source(&key)));
        assert_eq!(loaded.policy(), Some(policy.clone()));
        // Numbers past SPEC's bounds are refused, not truncated.
        let wide = Policy { order_up_to: i64::from(u32::MAX) + 1, ..policy };
        let mut bytes = bincode::serialize(&(0i64, None::<u64>, Vec::<Hold>::new(), Some(wide))).unwrap();
        bytes.extend(bincode::serialize(&Stock::default()).unwrap());
        assert!(bincode::deserialize::<KeyState>(&bytes).is_err());
    }
}
