//! A key's holds (SPEC §2 "Holds"): a few in a short vector, more indexed by res_id and by
//! expiry with their sum kept as they open and end, so that every operation costs O(log n) in
//! the key's holds and a hot key with a million open holds costs per message what a quiet one
//! does (docs/benchmarks.md, "Hot keys"), while a key with one hold costs ~80 bytes.
//!
//! In checkpoints (and `checkpoint show`) the holds are the sequence of [`Hold`]s a `Vec<Hold>`
//! encodes to, ordered by res_id: the layout of the earlier `Vec`, so shares written before
//! still load (docs/checkpoints.md). The `Vec`'s own order (the order holds were opened and
//! ended in) reached no output and is not kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Millis, Name};

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

/// The holds of one key that have not been ended yet, at most one per res_id. A hold stays
/// here past its expiry until [`Holds::pop_expired`] takes it out (the key ledger does at its
/// expiry's tick), so [`Holds::is_active`] asks about a time.
///
/// Empty, it is one null pointer: most keys never hold anything. A few holds are a short
/// vector (one hold costs ~80 bytes, where the two indexes' first nodes cost ~900); past
/// [`FEW`] they move to the indexes, where every operation costs O(log n).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holds(Option<Box<Repr>>);

/// Up to this many holds live in a vector searched by res_id; more go to an [`Index`].
const FEW: usize = 8;

/// The holds of a key that has some.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Repr {
    /// At most [`FEW`] holds, sorted by res_id.
    Few(Vec<Hold>),
    /// Holds indexed by res_id and by expiry (a hot key's).
    Many(Box<Index>),
}

/// The holds of a key that has many.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Index {
    by_id: BTreeMap<Name, Held>,
    /// (expires_at, res_id) of every hold in `by_id`.
    by_expiry: BTreeSet<(Millis, Name)>,
    /// The sum of the holds' qty, wide enough never to overflow, so that it is kept by adding
    /// and subtracting rather than summed again.
    total: i128,
}

/// A hold without its id (the key of [`Index::by_id`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    qty: i64,
    expires_at: Millis,
}

impl Holds {
    /// Whether the key has no hold.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// How many holds the key has.
    pub fn len(&self) -> usize {
        match self.0.as_deref() {
            None => 0,
            Some(Repr::Few(few)) => few.len(),
            Some(Repr::Many(index)) => index.by_id.len(),
        }
    }

    /// Whether hold `res_id` exists and is active at `at` (SPEC §2: for [effective time,
    /// expires_at)).
    pub fn is_active(&self, res_id: &str, at: Millis) -> bool {
        let expires_at = match self.0.as_deref() {
            None => None,
            Some(Repr::Few(few)) => find(few, res_id).ok().map(|i| few[i].expires_at),
            Some(Repr::Many(index)) => index.by_id.get(res_id).map(|held| held.expires_at),
        };
        expires_at.is_some_and(|expires_at| expires_at > at)
    }

    /// Adds `hold`, replacing a hold of the same res_id (one that has ended by expiry).
    pub fn open(&mut self, hold: Hold) {
        let repr = self.0.get_or_insert_with(|| Box::new(Repr::Few(Vec::with_capacity(1))));
        match &mut **repr {
            Repr::Few(few) => match find(few, &hold.res_id) {
                Ok(i) => few[i] = hold,
                Err(i) if few.len() < FEW => few.insert(i, hold),
                Err(_) => {
                    let mut index = Index::default();
                    std::mem::take(few).into_iter().chain([hold]).for_each(|h| index.open(h));
                    **repr = Repr::Many(Box::new(index));
                }
            },
            Repr::Many(index) => index.open(hold),
        }
    }

    /// Removes hold `res_id` and returns it, if the key has it.
    pub fn end(&mut self, res_id: &str) -> Option<Hold> {
        let hold = match &mut **self.0.as_mut()? {
            Repr::Few(few) => few.remove(find(few, res_id).ok()?),
            Repr::Many(index) => index.end(res_id)?,
        };
        if self.len() == 0 {
            self.0 = None;
        }
        Some(hold)
    }

    /// Removes and returns the hold that expires first, by (expires_at, res_id), if it expires
    /// at or before `through`.
    pub fn pop_expired(&mut self, through: Millis) -> Option<Hold> {
        let res_id = match self.0.as_deref()? {
            Repr::Few(few) => few.iter().map(|h| (h.expires_at, &h.res_id)).min().filter(|(e, _)| *e <= through)?.1,
            Repr::Many(index) => &index.by_expiry.first().filter(|(e, _)| *e <= through)?.1,
        }
        .clone();
        self.end(&res_id)
    }

    /// The earliest expiry among the holds.
    pub fn next_expiry(&self) -> Option<Millis> {
        match self.0.as_deref()? {
            Repr::Few(few) => few.iter().map(|h| h.expires_at).min(),
            Repr::Many(index) => index.by_expiry.first().map(|(expires_at, _)| *expires_at),
        }
    }

    /// SPEC §3's `reserved` over these holds: the sum of their qty (saturated at `i64::MAX`, as
    /// a sum of positive quantities added with saturation would be).
    pub fn reserved(&self) -> i64 {
        let total = match self.0.as_deref() {
            None => 0,
            Some(Repr::Few(few)) => few.iter().map(|h| i128::from(h.qty)).sum(),
            Some(Repr::Many(index)) => index.total,
        };
        i64::try_from(total).unwrap_or(i64::MAX)
    }

    /// The holds, by res_id.
    pub fn iter(&self) -> impl Iterator<Item = Hold> + '_ {
        let (few, many) = match self.0.as_deref() {
            None => (None, None),
            Some(Repr::Few(few)) => (Some(few.iter().cloned()), None),
            Some(Repr::Many(index)) => (None, Some(index.by_id.iter())),
        };
        let many = many.into_iter().flatten().map(|(res_id, held)| Hold {
            res_id: res_id.clone(),
            qty: held.qty,
            expires_at: held.expires_at,
        });
        few.into_iter().flatten().chain(many)
    }
}

/// Where hold `res_id` is (or would go) in holds sorted by res_id.
fn find(few: &[Hold], res_id: &str) -> Result<usize, usize> {
    few.binary_search_by(|h| h.res_id.as_str().cmp(res_id))
}

impl Index {
    /// Adds `hold`, replacing a hold of the same res_id.
    fn open(&mut self, hold: Hold) {
        let held = Held { qty: hold.qty, expires_at: hold.expires_at };
        if let Some(old) = self.by_id.insert(hold.res_id.clone(), held) {
            self.unlist(&hold.res_id, old);
        }
        self.by_expiry.insert((hold.expires_at, hold.res_id));
        self.total += i128::from(held.qty);
    }

    /// Removes hold `res_id` and returns it, if there is one.
    fn end(&mut self, res_id: &str) -> Option<Hold> {
        let (res_id, held) = self.by_id.remove_entry(res_id)?;
        self.unlist(&res_id, held);
        Some(Hold { res_id, qty: held.qty, expires_at: held.expires_at })
    }

    /// Takes a hold removed from `by_id` out of the expiry index and the total.
    fn unlist(&mut self, res_id: &Name, held: Held) {
        // Borrowing (Millis, &str) from (Millis, Name) is not possible: the key is rebuilt.
        self.by_expiry.remove(&(held.expires_at, res_id.clone()));
        self.total -= i128::from(held.qty);
    }
}

impl FromIterator<Hold> for Holds {
    fn from_iter<I: IntoIterator<Item = Hold>>(holds: I) -> Self {
        let mut out = Holds::default();
        holds.into_iter().for_each(|hold| out.open(hold));
        out
    }
}

impl Serialize for Holds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        // bincode needs the length up front.
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for hold in self.iter() {
            seq.serialize_element(&hold)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Holds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<Hold>::deserialize(deserializer)?;
        let count = list.len();
        let holds: Holds = list.into_iter().collect();
        if holds.len() != count {
            // The ledger never keeps two holds of one res_id.
            return Err(serde::de::Error::custom("two saved holds share a res_id"));
        }
        Ok(holds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hold(res_id: &str, qty: i64, expires_at: Millis) -> Hold {
        Hold { res_id: res_id.into(), qty, expires_at }
    }

    /// The structure the holds used to live in: a vector searched linearly, as obviously right
    /// as it is slow.
    #[derive(Default)]
    struct Naive(Vec<Hold>);

    impl Naive {
        fn is_active(&self, res_id: &str, at: Millis) -> bool {
            self.0.iter().any(|h| h.res_id == res_id && h.expires_at > at)
        }
        fn open(&mut self, hold: Hold) {
            self.0.retain(|h| h.res_id != hold.res_id);
            self.0.push(hold);
        }
        fn end(&mut self, res_id: &str) -> Option<Hold> {
            let i = self.0.iter().position(|h| h.res_id == res_id)?;
            Some(self.0.swap_remove(i))
        }
        fn pop_expired(&mut self, through: Millis) -> Option<Hold> {
            let first = self.0.iter().filter(|h| h.expires_at <= through).min_by(|a, b| {
                (a.expires_at, &a.res_id).cmp(&(b.expires_at, &b.res_id))
            })?;
            let res_id = first.res_id.clone();
            self.end(&res_id)
        }
        fn reserved(&self) -> i64 {
            self.0.iter().fold(0i64, |sum, h| sum.saturating_add(h.qty))
        }
        fn sorted(&self) -> Vec<Hold> {
            let mut all = self.0.clone();
            all.sort_by(|a, b| a.res_id.cmp(&b.res_id));
            all
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Open(u8, i64, Millis),
        End(u8),
        Expire(Millis),
        Ask(u8, Millis),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few ids and times, so that ids repeat and expiries tie.
        prop_oneof![
            (0u8..12, 1i64..=1_000_000_000, 0u64..40).prop_map(|(id, qty, at)| Op::Open(id, qty, at)),
            (0u8..12).prop_map(Op::End),
            (0u64..40).prop_map(Op::Expire),
            (0u8..12, 0u64..40).prop_map(|(id, at)| Op::Ask(id, at)),
        ]
    }

    proptest! {
        #[test]
        fn behave_like_a_vector_searched_linearly(ops in proptest::collection::vec(op(), 0..200)) {
            let (mut holds, mut naive) = (Holds::default(), Naive::default());
            for op in ops {
                match op {
                    Op::Open(id, qty, at) => {
                        let h = hold(&format!("r{id}"), qty, at);
                        holds.open(h.clone());
                        naive.open(h);
                    }
                    Op::End(id) => prop_assert_eq!(holds.end(&format!("r{id}")), naive.end(&format!("r{id}"))),
                    Op::Expire(at) => loop {
                        let (got, want) = (holds.pop_expired(at), naive.pop_expired(at));
                        prop_assert_eq!(&got, &want);
                        if got.is_none() {
                            break;
                        }
                    },
                    Op::Ask(id, at) => {
                        prop_assert_eq!(holds.is_active(&format!("r{id}"), at), naive.is_active(&format!("r{id}"), at))
                    }
                }
                prop_assert_eq!(holds.reserved(), naive.reserved());
                prop_assert_eq!(holds.len(), naive.0.len());
                prop_assert_eq!(holds.is_empty(), naive.0.is_empty());
                prop_assert_eq!(holds.iter().collect::<Vec<_>>(), naive.sorted());
                prop_assert_eq!(holds.next_expiry(), naive.0.iter().map(|h| h.expires_at).min());
            }
        }
    }

    #[test]
    fn encode_as_the_vector_did_and_read_any_order_it_left() {
        // The vector's order followed pushes and swap_removes; any order must load.
        let old = vec![hold("b", 2, 10), hold("a-long-reservation-id-past-24-bytes", 1, 30), hold("c", 4, 20)];
        let bytes = bincode::serialize(&old).unwrap();
        let holds: Holds = bincode::deserialize(&bytes).unwrap();
        assert_eq!(holds.reserved(), 7);
        let mut sorted = old.clone();
        sorted.sort_by(|a, b| a.res_id.cmp(&b.res_id));
        assert_eq!(bincode::serialize(&holds).unwrap(), bincode::serialize(&sorted).unwrap());
        assert_eq!(bincode::deserialize::<Vec<Hold>>(&bincode::serialize(&holds).unwrap()).unwrap(), sorted);
        assert_eq!(serde_json::to_string(&holds).unwrap(), serde_json::to_string(&sorted).unwrap());
        let twice = bincode::serialize(&vec![hold("a", 1, 5), hold("a", 2, 6)]).unwrap();
        assert!(bincode::deserialize::<Holds>(&twice).is_err());
    }

    #[test]
    fn the_sum_saturates_as_the_saturating_fold_did() {
        let holds: Holds = (0..10).map(|i| hold(&format!("r{i}"), i64::MAX / 4, 5)).collect();
        assert_eq!(holds.reserved(), i64::MAX);
    }
}
