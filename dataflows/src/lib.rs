//! stockflow's pure dataflow logic: the event model, decoding, the ordered ledger and the
//! derived views of SPEC.md (ATP, low stock, order plan, allocation) as differential dataflows.
//!
//! Every dataflow here is a plain function from collections to collections over one concrete
//! time, [`model::Millis`]. Nothing in this crate touches files, sockets or clocks.
#![deny(missing_docs)]

pub mod allocation;
pub mod atp;
pub mod changes;
pub mod clock;
pub mod decode;
pub mod key;
pub mod keys;
pub mod ledger;
pub mod low_stock;
pub mod model;
pub mod order_plan;
pub mod packed;
pub mod pipeline;
pub mod stash;
pub mod wire;

/// A timely scope over event time in milliseconds.
pub type Scope<'s> = timely::dataflow::Scope<'s, model::Millis>;
/// A differential collection over [`Scope`].
pub type Collection<'s, D, R = isize> = differential_dataflow::VecCollection<'s, model::Millis, D, R>;
/// A timely stream of `D` records over [`Scope`].
pub type Stream<'s, D> = timely::dataflow::Stream<'s, model::Millis, Vec<D>>;

/// A stock key (sku, loc), or a plan line's (dest, sku): a pair of names that orders part by
/// part, bytewise, as SPEC §4 asks.
pub use key::Key;

/// A hash map for the operators' in-memory state. Its hasher is FxHash's multiply-rotate:
/// keys are short names, where std's SipHash costs more than the lookup around it, and these
/// maps never reach the user (their iteration order is never output unsorted).
pub type FastMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<FxHasher>>;

/// FxHash (as in rustc): fast and deterministic; not resistant to crafted collisions.
#[derive(Clone, Copy, Default)]
pub struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            self.add(u64::from_le_bytes(chunk.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hashes a value the way the dataflows shard it, so every stage agrees on a key's worker.
pub fn shard<T: std::hash::Hash>(value: &T) -> u64 {
    use std::hash::Hasher;
    // FNV-1a: stable across processes and builds (std's SipHash keys are not part of any contract).
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            // Mix the high bits down: timely picks the worker from the low bits.
            let x = self.0;
            (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (x >> 32)
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    value.hash(&mut h);
    h.finish()
}
