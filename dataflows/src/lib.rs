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
pub mod ledger;
pub mod low_stock;
pub mod model;
pub mod order_plan;
pub mod pipeline;

/// A timely scope over event time in milliseconds.
pub type Scope<'s> = timely::dataflow::Scope<'s, model::Millis>;
/// A differential collection over [`Scope`].
pub type Collection<'s, D, R = isize> = differential_dataflow::VecCollection<'s, model::Millis, D, R>;
/// A timely stream of `D` records over [`Scope`].
pub type Stream<'s, D> = timely::dataflow::Stream<'s, model::Millis, Vec<D>>;

/// A stock key: (sku, loc). Tuples of `String` order part by part, bytewise, as SPEC §4 asks.
pub type Key = (model::Name, model::Name);

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
