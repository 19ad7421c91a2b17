//! The key type: a pair of names, (sku, loc) or (dest, sku), in 24 bytes instead of the 48 of
//! two `CompactString`s.
//!
//! A key sits in every table entry, every base the ledger emits and every change the row
//! operator makes, and its comparisons are a large part of a tick's work (the ledger's and the
//! row operator's sorts by key). Both names are kept in one buffer: inline when together they
//! take at most [`INLINE`] bytes (`K000123` + `S0042` take 12), else in one exact-size heap
//! string. SPEC §1 bounds a name to 64 bytes, so the first name's length fits a byte.
//!
//! Everything a user or another process can see treats a key as the pair it stands for: it
//! orders part by part, bytewise (SPEC §4), hashes as a tuple of two strings (so
//! [`crate::shard`] sends it to the same worker as before), and serializes as a tuple of two
//! strings (so checkpoints and the exchange's bytes are unchanged).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::Name;

/// The most bytes two names take inline.
pub const INLINE: usize = 21;

/// A pair of names; see the module's documentation.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Repr);

/// A key's storage. It is canonical (inline exactly when the names fit, unused bytes zero), so
/// equal representations are equal pairs.
#[derive(Clone, PartialEq, Eq)]
enum Repr {
    /// `bytes[..first]` is the first name, `bytes[first..len]` the second.
    Inline { first: u8, len: u8, bytes: [u8; INLINE] },
    /// `joined[..first]` is the first name, the rest the second.
    Heap { first: u8, joined: Box<str> },
}

impl Key {
    /// The pair (`first`, `second`). Names longer than SPEC's 64 bytes are the decoder's to
    /// refuse; a first name of 256 bytes or more would not fit the length byte.
    pub fn new(first: &str, second: &str) -> Key {
        let first_len = u8::try_from(first.len()).expect("a name is at most 64 bytes (SPEC §1)");
        let len = first.len() + second.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..first.len()].copy_from_slice(first.as_bytes());
            bytes[first.len()..len].copy_from_slice(second.as_bytes());
            Key(Repr::Inline { first: first_len, len: len as u8, bytes })
        } else {
            let mut joined = String::with_capacity(len);
            joined.push_str(first);
            joined.push_str(second);
            Key(Repr::Heap { first: first_len, joined: joined.into_boxed_str() })
        }
    }

    /// Both names: (sku, loc) for a stock key.
    #[inline]
    pub fn parts(&self) -> (&str, &str) {
        let (split, joined) = self.joined_bytes();
        let joined = std::str::from_utf8(joined).expect("built from two strings");
        // Both halves are whole strings: `new` joined them at this byte.
        (&joined[..split], &joined[split..])
    }

    /// Both names as bytes, without the UTF-8 check [`Key::parts`] makes: for comparing and
    /// copying names.
    #[inline]
    pub fn parts_bytes(&self) -> (&[u8], &[u8]) {
        let (split, joined) = self.joined_bytes();
        joined.split_at(split)
    }

    /// Whether this is the key (`first`, `second`), without building it.
    #[inline]
    pub fn is(&self, first: &str, second: &str) -> bool {
        self.parts_bytes() == (first.as_bytes(), second.as_bytes())
    }

    /// The first name (a stock key's sku).
    pub fn first(&self) -> &str {
        self.parts().0
    }

    /// The second name (a stock key's loc).
    pub fn second(&self) -> &str {
        self.parts().1
    }

    /// The split point and the two names' bytes joined.
    #[inline]
    fn joined_bytes(&self) -> (usize, &[u8]) {
        match &self.0 {
            Repr::Inline { first, len, bytes } => (usize::from(*first), &bytes[..usize::from(*len)]),
            Repr::Heap { first, joined } => (usize::from(*first), joined.as_bytes()),
        }
    }
}

impl Default for Key {
    fn default() -> Self {
        Key(Repr::Inline { first: 0, len: 0, bytes: [0; INLINE] })
    }
}

impl Ord for Key {
    /// Part by part, bytewise: the order of the pair of strings.
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts_bytes().cmp(&other.parts_bytes())
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for Key {
    /// As the tuple of two strings, so that sharding and hash tables see the pair (written out
    /// by [`KeyRef`]'s hash).
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        KeyRef::from(self).hash(state);
    }
}

/// A key's two names borrowed, for looking a key up without building it (in a packed message
/// the names are bytes of its record). A [`Key`] hashes as its `KeyRef`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeyRef<'a>(pub &'a [u8], pub &'a [u8]);

impl Hash for KeyRef<'_> {
    /// As the tuple of two strings: a `str` hashes as its bytes and then 0xff (a byte no UTF-8
    /// string holds), written out here so that a lookup does not check the names' UTF-8 again.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0);
        state.write_u8(0xff);
        state.write(self.1);
        state.write_u8(0xff);
    }
}

impl indexmap::Equivalent<Key> for KeyRef<'_> {
    #[inline]
    fn equivalent(&self, key: &Key) -> bool {
        key.parts_bytes() == (self.0, self.1)
    }
}

impl<'a> From<(&'a [u8], &'a [u8])> for KeyRef<'a> {
    #[inline]
    fn from((first, second): (&'a [u8], &'a [u8])) -> Self {
        KeyRef(first, second)
    }
}

impl<'a> From<&'a Key> for KeyRef<'a> {
    #[inline]
    fn from(key: &'a Key) -> Self {
        key.parts_bytes().into()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.parts(), f)
    }
}

impl<A: AsRef<str>, B: AsRef<str>> From<(A, B)> for Key {
    fn from((first, second): (A, B)) -> Self {
        Key::new(first.as_ref(), second.as_ref())
    }
}

impl Serialize for Key {
    /// As the tuple of two strings, as `(Name, Name)` serialized before.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.parts().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Through `Name`s, which hold names of up to 24 bytes without an allocation.
        let (first, second) = <(Name, Name)>::deserialize(deserializer)?;
        if first.len() > usize::from(u8::MAX) {
            return Err(serde::de::Error::custom(format!(
                "a key's first name is {} bytes, more than 255",
                first.len()
            )));
        }
        Ok(Key::new(&first, &second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Pair = (Name, Name);

    fn pair(first: &str, second: &str) -> Pair {
        (first.into(), second.into())
    }

    fn hash_of<T: Hash>(value: &T) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut hasher);
        hasher.finish()
    }

    /// Names up to SPEC's 64 bytes, of any chars, so that both representations and
    /// multi-byte UTF-8 are met.
    fn arb_name() -> impl Strategy<Value = String> {
        prop_oneof!["[A-C]{0,12}", "[a\u{0}\u{e9}\u{1F600}]{0,4}", "[A-Z0-9]{20,64}",]
    }

    #[test]
    fn a_key_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<Key>(), 24);
        assert_eq!(std::mem::size_of::<Option<Key>>(), 24);
    }

    #[test]
    fn names_at_the_inline_bound_and_past_it_read_back() {
        for (first, second) in
            [("", ""), ("K000123", "S0042"), ("ABCDEFGHIJ", "KLMNOPQRSTU"), ("ABCDEFGHIJ", "KLMNOPQRSTUV")]
        {
            let key = Key::new(first, second);
            assert_eq!(key.parts(), (first, second));
            assert_eq!(matches!(key.0, Repr::Inline { .. }), first.len() + second.len() <= INLINE);
        }
        let long = "x".repeat(64);
        assert_eq!(Key::new(&long, &long).parts(), (long.as_str(), long.as_str()));
    }

    /// What made the names' split matter: ("ab", "c") and ("a", "bc") join to the same bytes.
    #[test]
    fn the_split_is_part_of_the_key() {
        let (a, b) = (Key::new("ab", "c"), Key::new("a", "bc"));
        assert_ne!(a, b);
        assert!(b < a, "\"a\" < \"ab\"");
        assert_ne!(hash_of(&a), hash_of(&b));
    }

    proptest! {
        /// A key orders, compares, hashes, shards and serializes as the pair of names it holds.
        #[test]
        fn a_key_behaves_as_its_pair(a in (arb_name(), arb_name()), b in (arb_name(), arb_name())) {
            let (pa, pb) = (pair(&a.0, &a.1), pair(&b.0, &b.1));
            let (ka, kb) = (Key::new(&a.0, &a.1), Key::new(&b.0, &b.1));
            prop_assert_eq!(ka.cmp(&kb), pa.cmp(&pb));
            prop_assert_eq!(ka == kb, pa == pb);
            prop_assert_eq!(ka.is(&b.0, &b.1), pa == pb);
            prop_assert_eq!(hash_of(&ka), hash_of(&pa));
            prop_assert_eq!(crate::shard(&ka), crate::shard(&pa));
            let json = serde_json::to_string(&ka).expect("a key serializes");
            prop_assert_eq!(&json, &serde_json::to_string(&pa).expect("a pair serializes"));
            prop_assert_eq!(serde_json::from_str::<Key>(&json).expect("a key reads back"), ka.clone());
            prop_assert_eq!(format!("{ka:?}"), format!("{:?}", (a.0.as_str(), a.1.as_str())));
        }

        /// A borrowed key hashes as the key and is equivalent to it alone, so a table finds a
        /// key by its names' bytes.
        #[test]
        fn a_borrowed_key_finds_its_key(a in (arb_name(), arb_name()), b in (arb_name(), arb_name())) {
            use indexmap::Equivalent;
            let (ka, kb) = (Key::new(&a.0, &a.1), Key::new(&b.0, &b.1));
            let borrowed = KeyRef(a.0.as_bytes(), a.1.as_bytes());
            prop_assert_eq!(hash_of(&borrowed), hash_of(&ka));
            prop_assert_eq!(KeyRef::from(&ka), borrowed);
            prop_assert!(borrowed.equivalent(&ka));
            prop_assert_eq!(borrowed.equivalent(&kb), ka == kb);
        }
    }
}
