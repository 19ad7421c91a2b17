//! A tick's stashed messages, packed into bytes until the tick is applied.
//!
//! The ledgers hold every message of a tick until the frontier has passed it, and the setup
//! tick (a policy and a count for every key) holds them all at once. As `(sent, Event)` a
//! message took 152 bytes in a vector that grew by doubling; at the setup tick's heap peak the
//! stash was the largest part after the key table (docs/benchmarks.md). Packed, a sale takes 43
//! bytes (a policy a few more) plus an 8-byte index entry, in chunks that never move what they
//! hold, and a message becomes an [`Event`] again only when its book reaches it. A large
//! tick is sorted in slices that are freed as the book passes them
//! ([`PackedEvents::into_sorted`]).
//!
//! A record is `varint(len) ++ text(sku) ++ text(loc) ++ order ++ signed(effective - sent) ++
//! signed(effective - ts) ++ body`: a text is `varint(len) ++ bytes`, the order is the
//! effective time, source, partition and offset as big-endian integers (so two records'
//! orders compare as bytes the way their [`OrderKey`]s do), and the body is the wire layout's
//! (crate::wire). Names compare as bytes, as [`Name`]s do, so a tick is sorted without
//! decoding a message.

use std::cell::RefCell;
use std::cmp::Ordering;

use crate::model::{Event, Message, Millis, Name, OrderKey, Position};
use crate::stash::TickItems;
use crate::wire::{self, Reader};

/// The bytes of one chunk: large enough that its allocation is rare, small enough that the
/// last, partly filled one of a tick costs little.
const CHUNK: usize = 1 << 20;

/// Messages in a slice of a large tick ([`PackedEvents::into_sorted`]): ~50 MB of sales with
/// their index entries.
const SLICE: usize = 1 << 20;

/// The longest varint: a record's length prefix takes at most this.
const MAX_PREFIX: usize = 10;

thread_local! {
    /// A record being packed: written once here, then copied behind its length.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The bytes of a tick's first chunk.
const FIRST_CHUNK: usize = 256;

/// The bytes of an order: effective time (8), source (4), partition (4), offset (8).
const ORDER_BYTES: usize = 24;

/// A tick's messages with the logical time each was sent at, packed.
#[derive(Default)]
pub struct PackedEvents {
    /// Records, none straddling two chunks; a record longer than [`CHUNK`] has its own.
    chunks: Vec<Vec<u8>>,
    /// Where each record starts: chunk index in the high 32 bits, offset in the low.
    index: Vec<u64>,
}

impl PackedEvents {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Packs `event`, sent at `sent`.
    pub fn push_event(&mut self, sent: Millis, event: &Event) {
        SCRATCH.with(|scratch| self.push_encoded(&mut scratch.borrow_mut(), sent, event));
    }

    fn push_encoded(&mut self, scratch: &mut Vec<u8>, sent: Millis, event: &Event) {
        // The record is written once into the scratch, its length put before it, and copied
        // into the chunk with room for both.
        scratch.clear();
        scratch.extend_from_slice(&[0; MAX_PREFIX]);
        encode(sent, event, scratch);
        let len = scratch.len() - MAX_PREFIX;
        let mut prefix = [0u8; MAX_PREFIX];
        let prefix = wire::varint_into(&mut prefix, len as u64);
        let start = MAX_PREFIX - prefix.len();
        scratch[start..MAX_PREFIX].copy_from_slice(prefix);
        self.push_record(&scratch[start..]);
    }

    /// Appends `record`, a packed message with its length before it.
    fn push_record(&mut self, record: &[u8]) {
        let needed = record.len();
        let chunk = match self.chunks.last() {
            Some(last) if last.capacity() - last.len() >= needed => self.chunks.len() - 1,
            last => {
                // Most ticks hold a few messages, and many ticks wait at once: chunks start
                // small and double up to CHUNK.
                let size = last.map_or(FIRST_CHUNK, |last| (2 * last.capacity()).min(CHUNK));
                self.chunks.push(Vec::with_capacity(needed.max(size)));
                self.chunks.len() - 1
            }
        };
        let bytes = &mut self.chunks[chunk];
        self.index.push(((chunk as u64) << 32) | bytes.len() as u64);
        bytes.extend_from_slice(record);
    }

    fn at(&self, entry: u64) -> Packed<'_> {
        Packed::parse(self.tail(entry))
    }

    /// The bytes of the chunk from the record at `entry` (chunk index in the high 32 bits,
    /// offset in the low) to the chunk's end.
    fn tail(&self, entry: u64) -> &[u8] {
        &self.chunks[(entry >> 32) as usize][(entry & u64::from(u32::MAX)) as usize..]
    }

    /// Sorts the messages by `order` (the records stay where they are; the index moves).
    /// `prefix` must agree with `order` where it differs: a message with a smaller prefix
    /// is the smaller one. Most comparisons then end at the prefixes, sorted beside the index:
    /// comparing the records themselves cost a cache miss per comparison, the sort more than
    /// the stash saved (perf at 1M keys).
    pub fn sort_by(
        &mut self,
        prefix: impl Fn(&Packed<'_>) -> [u64; 2],
        order: impl Fn(&Packed<'_>, &Packed<'_>) -> Ordering,
    ) {
        // Built here, not kept: the sort runs before the tick is applied, so this vector is
        // gone before the tick's records and new keys take their room.
        let mut keyed: Vec<([u64; 2], u64)> =
            self.index.iter().map(|&entry| (prefix(&self.at(entry)), entry)).collect();
        keyed.sort_unstable_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| order(&self.at(*a), &self.at(*b))));
        self.index.clear();
        self.index.extend(keyed.into_iter().map(|(_, entry)| entry));
    }

    /// Sorts the messages as [`PackedEvents::sort_by`] does, into [`SortedEvents`]. A tick of
    /// more than two slices' messages (the setup's: every key at once) is first split into
    /// slices of consecutive messages, so that the book's walk frees each slice once it has
    /// passed it: the walk fills the key table and emits the tick's records, and with the
    /// messages held whole to its end all three were alive at once, the setup tick's peak
    /// (docs/benchmarks.md).
    pub fn into_sorted(
        self,
        prefix: impl Fn(&Packed<'_>) -> [u64; 2],
        order: impl Fn(&Packed<'_>, &Packed<'_>) -> Ordering,
    ) -> SortedEvents {
        self.into_sorted_in(SLICE, prefix, order)
    }

    fn into_sorted_in(
        self,
        slice: usize,
        prefix: impl Fn(&Packed<'_>) -> [u64; 2],
        order: impl Fn(&Packed<'_>, &Packed<'_>) -> Ordering,
    ) -> SortedEvents {
        let len = self.index.len();
        let mut slices = if len > 2 * slice { self.split(len.div_ceil(slice), &prefix, &order) } else { vec![self] };
        slices.iter_mut().for_each(|slice| slice.sort_by(&prefix, &order));
        SortedEvents { slices }
    }

    /// Splits the messages into `count` slices, each of messages that order after every
    /// message of the slices before it, cut at the quantiles of a sample. The records are
    /// copied a chunk at a time and each chunk is freed once copied, so the split holds
    /// little more than the messages.
    fn split(
        self,
        count: usize,
        prefix: &impl Fn(&Packed<'_>) -> [u64; 2],
        order: &impl Fn(&Packed<'_>, &Packed<'_>) -> Ordering,
    ) -> Vec<PackedEvents> {
        let (bound_records, bounds) = self.bounds(count, prefix, order);
        // A quarter to spare before an index doubles: the sample's quantiles are not exact.
        let room = self.index.len() / count + self.index.len() / count / 4;
        let mut slices: Vec<PackedEvents> =
            (0..count).map(|_| PackedEvents { chunks: Vec::new(), index: Vec::with_capacity(room) }).collect();
        let PackedEvents { chunks, index } = self;
        drop(index);
        for chunk in chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (record, after) = rest.split_at(record_len(rest));
                let packed = Packed::parse(record);
                let p = prefix(&packed);
                // The message goes to the slice after the bounds that order before it.
                let slice = bounds.partition_point(|&(bound_prefix, entry)| {
                    bound_prefix.cmp(&p).then_with(|| order(&bound_records.at(entry), &packed)).is_lt()
                });
                slices[slice].push_record(record);
                rest = after;
            }
        }
        slices
    }

    /// `count - 1` messages that cut the messages into `count` slices of about the same size,
    /// in order: the quantiles of a sample of 32 a slice, copied (the records and, for each,
    /// its prefix and index entry).
    #[allow(clippy::type_complexity)]
    fn bounds(
        &self,
        count: usize,
        prefix: &impl Fn(&Packed<'_>) -> [u64; 2],
        order: &impl Fn(&Packed<'_>, &Packed<'_>) -> Ordering,
    ) -> (PackedEvents, Vec<([u64; 2], u64)>) {
        let samples = (32 * count).min(self.index.len());
        let stride = self.index.len() / samples;
        let mut sample: Vec<([u64; 2], u64)> =
            self.index.iter().step_by(stride).map(|&entry| (prefix(&self.at(entry)), entry)).collect();
        sample.sort_unstable_by(|(pa, a), (pb, b)| pa.cmp(pb).then_with(|| order(&self.at(*a), &self.at(*b))));
        let mut records = PackedEvents::default();
        let mut bounds = Vec::with_capacity(count - 1);
        for cut in 1..count {
            let (bound_prefix, entry) = sample[cut * sample.len() / count];
            let record = self.record(entry);
            let at = records.index.len();
            records.push_record(record);
            bounds.push((bound_prefix, records.index[at]));
        }
        (records, bounds)
    }

    /// The bytes of the record at `entry`, its length included.
    fn record(&self, entry: u64) -> &[u8] {
        let from = self.tail(entry);
        &from[..record_len(from)]
    }

    /// The messages in index order.
    pub fn iter(&self) -> impl Iterator<Item = Packed<'_>> {
        self.index.iter().map(|&entry| self.at(entry))
    }
}

impl TickItems<(Millis, Event)> for PackedEvents {
    fn push(&mut self, (sent, event): (Millis, Event)) {
        self.push_event(sent, &event);
    }

    fn append(&mut self, other: Self) {
        let base = self.chunks.len() as u64;
        self.index.extend(other.index.iter().map(|entry| entry + (base << 32)));
        self.chunks.extend(other.chunks);
    }
}

/// A tick's messages sorted, in slices read one after the other ([`PackedEvents::into_sorted`]).
#[derive(Default)]
pub struct SortedEvents {
    slices: Vec<PackedEvents>,
}

impl SortedEvents {
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slices.iter().all(PackedEvents::is_empty)
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = Packed<'_>> {
        self.slices.iter().flat_map(PackedEvents::iter)
    }

    /// The messages in order, as events; each slice is freed once read.
    pub fn into_events(self) -> SliceEvents {
        SliceEvents { slices: self.slices.into_iter(), reading: None }
    }
}

/// The events of [`SortedEvents`], read a slice at a time.
pub struct SliceEvents {
    slices: std::vec::IntoIter<PackedEvents>,
    /// The slice being read and the position of its next message in its index.
    reading: Option<(PackedEvents, usize)>,
}

#[cfg(test)]
impl SliceEvents {
    /// How many slices are still held, the one being read included.
    fn slices_held(&self) -> usize {
        self.slices.len() + usize::from(self.reading.is_some())
    }
}

impl Iterator for SliceEvents {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some((slice, next)) = &mut self.reading {
                if let Some(&entry) = slice.index.get(*next) {
                    *next += 1;
                    return Some(slice.at(entry).event());
                }
            }
            // The slice read (if any) is dropped here.
            self.reading = self.slices.next().map(|slice| (slice, 0));
            self.reading.as_ref()?;
        }
    }
}

/// One packed message, its fixed parts split out.
#[derive(Clone, Copy)]
pub struct Packed<'a> {
    sku: &'a [u8],
    loc: &'a [u8],
    order: &'a [u8],
    /// `signed(effective - sent) ++ signed(effective - ts) ++ body`.
    rest: &'a [u8],
}

/// Records are written by [`PackedEvents::push_event`] alone: one that does not read back is
/// a bug of this module, never bad input (input is checked before it is stashed).
const WRITTEN_HERE: &str = "a packed message reads back as it was written";

impl<'a> Packed<'a> {
    fn parse(from: &'a [u8]) -> Self {
        let mut r = Reader(from);
        let len = r.varint().expect(WRITTEN_HERE) as usize;
        let record = &r.0[..len];
        let (sku, record) = text(record);
        let (loc, record) = text(record);
        let (order, rest) = record.split_at(ORDER_BYTES);
        Packed { sku, loc, order, rest }
    }

    /// The (sku, loc) key's names, as bytes.
    pub fn key(&self) -> (&'a [u8], &'a [u8]) {
        (self.sku, self.loc)
    }

    /// SPEC's order of messages (effective time, source, partition, offset).
    pub fn cmp_order(&self, other: &Packed<'_>) -> Ordering {
        self.order.cmp(other.order)
    }

    /// A prefix of [`Packed::cmp_order`]: the effective time, source and partition.
    pub fn order_prefix(&self) -> [u64; 2] {
        let word = |at: usize| u64::from_be_bytes(self.order[at..at + 8].try_into().expect("8 bytes"));
        [word(0), word(8)]
    }

    /// A prefix of the order by [`Packed::key`]: the sku's first 8 bytes, then its length (9
    /// for any longer) and, where the sku fits in 8 bytes, the loc's first 7. Shorter names
    /// are padded with zeros, which order a name before any it is a prefix of, as bytes do.
    pub fn key_prefix(&self) -> [u64; 2] {
        let padded = |bytes: &[u8], width: usize| {
            let mut word = [0u8; 8];
            let len = bytes.len().min(width);
            word[8 - width..8 - width + len].copy_from_slice(&bytes[..len]);
            word
        };
        let sku = u64::from_be_bytes(padded(self.sku, 8));
        let mut second = if self.sku.len() <= 8 { padded(self.loc, 7) } else { [0; 8] };
        second[0] = self.sku.len().min(9) as u8;
        [sku, u64::from_be_bytes(second)]
    }

    /// The logical time the message was sent at.
    pub fn sent(&self) -> Millis {
        let mut r = Reader(self.rest);
        self.effective().wrapping_sub(r.signed().expect(WRITTEN_HERE) as u64)
    }

    fn effective(&self) -> Millis {
        u64::from_be_bytes(self.order[..8].try_into().expect("8 bytes"))
    }

    /// The message as an [`Event`].
    pub fn event(&self) -> Event {
        let be32 = |at: usize| u32::from_be_bytes(self.order[at..at + 4].try_into().expect("4 bytes"));
        let position = Position {
            source: be32(8),
            partition: be32(12),
            offset: u64::from_be_bytes(self.order[16..24].try_into().expect("8 bytes")),
        };
        let effective = self.effective();
        let mut r = Reader(self.rest);
        r.signed().expect(WRITTEN_HERE);
        let ts = effective.wrapping_sub(r.signed().expect(WRITTEN_HERE) as u64);
        let body = wire::decode_body(&mut r).expect(WRITTEN_HERE);
        let name = |bytes: &[u8]| Name::from(std::str::from_utf8(bytes).expect(WRITTEN_HERE));
        let message = Message { ts, sku: name(self.sku), loc: name(self.loc), body };
        Event { order: OrderKey { effective, position }, message }
    }
}

/// The length of the record `from` starts with, its length prefix included.
fn record_len(from: &[u8]) -> usize {
    let mut r = Reader(from);
    let len = r.varint().expect(WRITTEN_HERE) as usize;
    from.len() - r.0.len() + len
}

/// Splits a `varint(len) ++ bytes` text off the front of `record`.
fn text(record: &[u8]) -> (&[u8], &[u8]) {
    let mut r = Reader(record);
    let len = r.varint().expect(WRITTEN_HERE) as usize;
    r.0.split_at(len)
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    wire::put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn encode(sent: Millis, event: &Event, out: &mut Vec<u8>) {
    let Event { order, message } = event;
    put_text(out, &message.sku);
    put_text(out, &message.loc);
    out.extend_from_slice(&order.effective.to_be_bytes());
    out.extend_from_slice(&order.position.source.to_be_bytes());
    out.extend_from_slice(&order.position.partition.to_be_bytes());
    out.extend_from_slice(&order.position.offset.to_be_bytes());
    wire::put_signed(out, order.effective.wrapping_sub(sent) as i64);
    wire::put_signed(out, order.effective.wrapping_sub(message.ts) as i64);
    wire::encode_body(&message.body, out);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::tests::arb_event;

    proptest! {
        #[test]
        fn every_message_reads_back_as_it_was_packed(
            messages in proptest::collection::vec((any::<u64>(), arb_event()), 0..40)
        ) {
            let mut packed = PackedEvents::default();
            for (sent, event) in &messages {
                packed.push_event(*sent, event);
            }
            let back: Vec<(Millis, Event)> = packed.iter().map(|p| (p.sent(), p.event())).collect();
            prop_assert_eq!(back, messages);
        }

        #[test]
        fn packed_order_sorts_as_events_do(
            messages in proptest::collection::vec(arb_event(), 0..40)
        ) {
            let mut packed = PackedEvents::default();
            messages.iter().for_each(|event| packed.push_event(0, event));
            packed.sort_by(|p| p.key_prefix(), |a, b| a.key().cmp(&b.key()).then_with(|| a.cmp_order(b)));
            let mut expected = messages.clone();
            expected.sort_by(|a, b| {
                (&a.message.sku, &a.message.loc).cmp(&(&b.message.sku, &b.message.loc)).then(a.order.cmp(&b.order))
            });
            let sorted: Vec<Event> = packed.iter().map(|p| p.event()).collect();
            prop_assert_eq!(sorted, expected);
        }
    }

    fn key_then_spec_order(a: &Packed<'_>, b: &Packed<'_>) -> Ordering {
        a.key().cmp(&b.key()).then_with(|| a.cmp_order(b))
    }

    proptest! {
        #[test]
        fn a_tick_sorted_in_slices_reads_as_one_sorted_whole(
            messages in proptest::collection::vec(
                (0..4u8, arb_event()).prop_map(|(key, mut event)| {
                    // Few keys, so that a key's messages straddle the slices' bounds.
                    (event.message.sku, event.message.loc) = (Name::from(format!("K{key}")), Name::from("S"));
                    event
                }),
                0..60,
            ),
            slice in 1..6usize,
        ) {
            let mut packed = PackedEvents::default();
            messages.iter().for_each(|event| packed.push_event(0, event));
            let sorted = packed.into_sorted_in(slice, |p| p.key_prefix(), key_then_spec_order);
            let expected_slices = if messages.len() > 2 * slice { messages.len().div_ceil(slice) } else { 1 };
            prop_assert_eq!(sorted.slices.len(), expected_slices);
            let mut expected = messages.clone();
            expected.sort_by(|a, b| {
                (&a.message.sku, &a.message.loc).cmp(&(&b.message.sku, &b.message.loc)).then(a.order.cmp(&b.order))
            });
            let in_order: Vec<Event> = sorted.iter().map(|p| p.event()).collect();
            prop_assert_eq!(&in_order, &expected);
            prop_assert_eq!(sorted.into_events().collect::<Vec<_>>(), expected);
        }
    }

    #[test]
    fn each_slice_is_freed_once_read() {
        let mut packed = PackedEvents::default();
        for i in 0..100 {
            let key = (i * 37) % 100;
            packed.push_event(0, &crate::wire::tests::sale(&format!("K{key:03}"), "S1", 1));
        }
        let mut events = packed.into_sorted_in(10, |p| p.key_prefix(), key_then_spec_order).into_events();
        assert_eq!(events.slices_held(), 10);
        let first_half: Vec<Event> = events.by_ref().take(50).collect();
        assert!(events.slices_held() <= 6, "{} slices held after half the messages", events.slices_held());
        assert_eq!(first_half.last().map(|e| e.message.sku.to_string()), Some("K049".to_string()));
        assert_eq!(events.count(), 50);
    }

    /// Names that share prefixes, differ in length around the prefix's 8 and 7 bytes, and
    /// hold zero bytes: where a prefix could disagree with the order of the names.
    fn arb_close_name() -> impl Strategy<Value = Name> {
        proptest::collection::vec(prop_oneof![Just('\0'), Just('A'), Just('B')], 0..11).prop_map(|c| Name::from_iter(c))
    }

    proptest! {
        #[test]
        fn key_prefixes_agree_with_the_order_of_the_names(
            keys in proptest::collection::vec((arb_close_name(), arb_close_name()), 2..30)
        ) {
            let mut packed = PackedEvents::default();
            for (sku, loc) in &keys {
                let mut event = crate::wire::tests::sale("", "", 1);
                (event.message.sku, event.message.loc) = (sku.clone(), loc.clone());
                packed.push_event(0, &event);
            }
            for a in packed.iter() {
                for b in packed.iter() {
                    if a.key_prefix() < b.key_prefix() {
                        prop_assert!(a.key() < b.key(), "{:?} before {:?}", a.key(), b.key());
                    }
                }
            }
        }

        #[test]
        fn order_prefixes_agree_with_spec_order(messages in proptest::collection::vec(arb_event(), 2..30)) {
            let mut packed = PackedEvents::default();
            messages.iter().for_each(|event| packed.push_event(0, event));
            for a in packed.iter() {
                for b in packed.iter() {
                    if a.order_prefix() < b.order_prefix() {
                        prop_assert!(a.event().order < b.event().order);
                    }
                }
            }
        }
    }

    #[test]
    fn appended_ticks_keep_every_message_and_long_ones_get_a_chunk_of_their_own() {
        let mut long = crate::wire::tests::sale("K1", "S1", 5);
        long.message.sku = Name::from("k".repeat(CHUNK + 10));
        let short = crate::wire::tests::sale("K2", "S2", 7);
        let mut first = PackedEvents::default();
        first.push_event(1, &short);
        first.push_event(2, &long);
        let mut second = PackedEvents::default();
        second.push_event(3, &short);
        first.append(second);
        assert_eq!(first.chunks.len(), 3, "the long record has a chunk of its own");
        assert!(first.chunks[0].capacity() < 1024, "a tick of few messages takes a small chunk");
        let back: Vec<(Millis, Event)> = first.iter().map(|p| (p.sent(), p.event())).collect();
        assert_eq!(back, vec![(1, short.clone()), (2, long), (3, short)]);
    }

    #[test]
    fn a_sale_packs_into_two_fifths_of_its_stashed_size() {
        let sale = crate::wire::tests::sale("K000086", "S0066", 3);
        let mut packed = PackedEvents::default();
        packed.push_event(sale.order.effective, &sale);
        let bytes = packed.chunks[0].len() + std::mem::size_of::<u64>();
        let stashed = std::mem::size_of::<(Millis, Event)>();
        assert!(bytes * 5 <= stashed * 2, "{bytes} bytes packed, {stashed} stashed");
    }
}
