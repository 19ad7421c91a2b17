//! The compact layout events cross between processes in (the ledgers' exchanges), and its
//! total decoder.
//!
//! Timely serializes an exchanged `Vec<T>` with bincode 1, whose fixed-width layout spends ~72
//! bytes on a typical [`Event`]: 8-byte integers, 8-byte name lengths, a 4-byte enum tag.
//! [`WireEvent`] wraps an event only on the exchange and writes it as varint (LEB128)
//! integers, varint name lengths and a one-byte body tag (~36 bytes). Checkpoints keep
//! serializing [`Event`] itself with bincode, so their format (docs/checkpoints.md) is
//! untouched. The layout is private to one build: every process of a cluster runs the same
//! binary (docs/operations.md).
//!
//! A record is `varint(length) ++ body`, handed to serde as a tuple of `u8`s: bincode writes
//! tuples without a length of their own, so the record costs no more than its bytes, where
//! `serialize_bytes` would add an 8-byte length to every event. [`decode`] reads a body from
//! a byte slice and refuses anything malformed (truncated, overlong varints, out-of-range
//! numbers, unknown tags, invalid UTF-8, trailing bytes) with a [`WireError`], never a panic.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::model::{Body, Event, Message, Name, OrderKey, PoStatus, Policy, Position};

/// The layout's number, which the cluster handshake compares: processes with different
/// layouts cannot read each other's records. Any change of the layout changes it, or of
/// another record's between processes (2: the output runs cross LZ4-compressed, the binary's
/// `io::sink::lines::wire`).
pub const LAYOUT: u32 = 2;

/// An [`Event`] on its way to another worker, serialized in the compact wire layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireEvent(pub Event);

/// Why bytes from a peer are not an event in the wire layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes end inside a record.
    #[error("wire record truncated")]
    Truncated,
    /// A varint runs past 64 bits.
    #[error("wire varint overflows 64 bits")]
    VarintOverflow,
    /// A number does not fit its field (named).
    #[error("wire field {0} out of range")]
    OutOfRange(&'static str),
    /// An unknown body tag, option flag or order status.
    #[error("wire tag {0} unknown")]
    UnknownTag(u8),
    /// A name or text is not UTF-8.
    #[error("wire text is not UTF-8")]
    NotUtf8,
    /// Bytes left over after a complete record.
    #[error("{0} bytes after a complete wire record")]
    Trailing(usize),
}

/// Body tags; `Policy(None)` and `Policy(Some(_))` have one each.
mod tag {
    pub const SALE: u8 = 0;
    pub const RETURN: u8 = 1;
    pub const RECEIPT: u8 = 2;
    pub const ADJUST: u8 = 3;
    pub const COUNT: u8 = 4;
    pub const RESERVE: u8 = 5;
    pub const RELEASE: u8 = 6;
    pub const FULFILL: u8 = 7;
    pub const PO: u8 = 8;
    pub const POLICY_DELETED: u8 = 9;
    pub const POLICY: u8 = 10;
}

/// Appends the wire body of `event` (without its length prefix) to `out`.
pub fn encode(event: &Event, out: &mut Vec<u8>) {
    let Event { order, message } = event;
    put_varint(out, order.effective);
    // `ts` equals the effective time unless the message was late: the difference is tiny.
    put_signed(out, order.effective.wrapping_sub(message.ts) as i64);
    put_varint(out, u64::from(order.position.source));
    put_varint(out, u64::from(order.position.partition));
    put_varint(out, order.position.offset);
    put_text(out, &message.sku);
    put_text(out, &message.loc);
    encode_body(&message.body, out);
}

pub(crate) fn encode_body(body: &Body, out: &mut Vec<u8>) {
    match body {
        Body::Sale { qty } => tagged(out, tag::SALE, |out| put_signed(out, *qty)),
        Body::Return { qty } => tagged(out, tag::RETURN, |out| put_signed(out, *qty)),
        Body::Receipt { qty, po_id } => tagged(out, tag::RECEIPT, |out| {
            put_signed(out, *qty);
            put_option(out, po_id.as_deref(), put_text);
        }),
        Body::Adjust { delta, reason } => tagged(out, tag::ADJUST, |out| {
            put_signed(out, *delta);
            put_option(out, reason.as_deref(), put_text);
        }),
        Body::Count { qty } => tagged(out, tag::COUNT, |out| put_signed(out, *qty)),
        Body::Reserve { res_id, qty, expires_at } => tagged(out, tag::RESERVE, |out| {
            put_text(out, res_id);
            put_signed(out, *qty);
            put_option(out, *expires_at, put_varint);
        }),
        Body::Release { res_id } => tagged(out, tag::RELEASE, |out| put_text(out, res_id)),
        Body::Fulfill { res_id, qty } => tagged(out, tag::FULFILL, |out| {
            put_text(out, res_id);
            put_signed(out, *qty);
        }),
        Body::Po { po_id, qty, status, eta } => tagged(out, tag::PO, |out| {
            put_text(out, po_id);
            put_signed(out, *qty);
            out.push(*status as u8);
            put_option(out, *eta, put_varint);
        }),
        Body::Policy(None) => out.push(tag::POLICY_DELETED),
        Body::Policy(Some(p)) => tagged(out, tag::POLICY, |out| {
            for n in [p.safety_stock, p.reorder_point, p.order_up_to, p.pack_size, p.moq] {
                put_signed(out, n);
            }
            put_option(out, p.source.as_deref(), put_text);
        }),
    }
}

fn tagged(out: &mut Vec<u8>, tag: u8, fields: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    fields(out);
}

/// Reads a varint from the bytes `next` yields; `error` turns a malformed one into `E`.
fn read_varint<E>(mut next: impl FnMut() -> Result<u8, E>, error: impl Fn(WireError) -> E) -> Result<u64, E> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = next()?;
        let bits = u64::from(byte & 0x7f);
        if shift == 63 && bits > 1 {
            return Err(error(WireError::VarintOverflow));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(error(WireError::VarintOverflow))
}

/// Appends `value` as a varint (LEB128: 7 bits a byte, least significant first).
pub fn put_varint(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(varint_into(&mut [0; 10], value));
}

/// Reads a varint from the front of `bytes` and moves past it.
pub fn take_varint(bytes: &mut &[u8]) -> Result<u64, WireError> {
    let mut reader = Reader(bytes);
    let value = reader.varint()?;
    *bytes = reader.0;
    Ok(value)
}

/// Writes `value` as a varint into `buf`, returning the bytes written.
pub(crate) fn varint_into(buf: &mut [u8; 10], mut value: u64) -> &[u8] {
    let mut len = 0;
    while value >= 0x80 {
        buf[len] = value as u8 | 0x80;
        value >>= 7;
        len += 1;
    }
    buf[len] = value as u8;
    &buf[..=len]
}

/// Zigzag: small magnitudes of either sign take few bytes.
pub(crate) fn put_signed(out: &mut Vec<u8>, value: i64) {
    put_varint(out, ((value << 1) ^ (value >> 63)) as u64);
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_varint(out, text.len() as u64);
    out.extend_from_slice(text.as_bytes());
}

fn put_option<T>(out: &mut Vec<u8>, value: Option<T>, put: fn(&mut Vec<u8>, T)) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            put(out, value);
        }
    }
}

/// Decodes one wire body (as [`encode`] writes it), refusing trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<Event, WireError> {
    let mut r = Reader(bytes);
    let effective = r.varint()?;
    let ts = effective.wrapping_sub(r.signed()? as u64);
    let source = r.u32("source")?;
    let partition = r.u32("partition")?;
    let offset = r.varint()?;
    let sku = r.name()?;
    let loc = r.name()?;
    let body = decode_body(&mut r)?;
    if !r.0.is_empty() {
        return Err(WireError::Trailing(r.0.len()));
    }
    let order = OrderKey { effective, position: Position { source, partition, offset } };
    Ok(Event { order, message: Message { ts, sku, loc, body } })
}

pub(crate) fn decode_body(r: &mut Reader<'_>) -> Result<Body, WireError> {
    Ok(match r.byte()? {
        tag::SALE => Body::Sale { qty: r.signed()? },
        tag::RETURN => Body::Return { qty: r.signed()? },
        tag::RECEIPT => Body::Receipt { qty: r.signed()?, po_id: r.option(Reader::name)? },
        tag::ADJUST => Body::Adjust { delta: r.signed()?, reason: r.option(|r| Ok(r.text()?.to_owned()))? },
        tag::COUNT => Body::Count { qty: r.signed()? },
        tag::RESERVE => Body::Reserve { res_id: r.name()?, qty: r.signed()?, expires_at: r.option(Reader::varint)? },
        tag::RELEASE => Body::Release { res_id: r.name()? },
        tag::FULFILL => Body::Fulfill { res_id: r.name()?, qty: r.signed()? },
        tag::PO => Body::Po { po_id: r.name()?, qty: r.signed()?, status: r.status()?, eta: r.option(Reader::varint)? },
        tag::POLICY_DELETED => Body::Policy(None),
        tag::POLICY => Body::Policy(Some(Policy {
            safety_stock: r.signed()?,
            reorder_point: r.signed()?,
            order_up_to: r.signed()?,
            pack_size: r.signed()?,
            moq: r.signed()?,
            source: r.option(Reader::name)?,
        })),
        other => return Err(WireError::UnknownTag(other)),
    })
}

/// The unread rest of a wire body.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn byte(&mut self) -> Result<u8, WireError> {
        let (&first, rest) = self.0.split_first().ok_or(WireError::Truncated)?;
        self.0 = rest;
        Ok(first)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, WireError> {
        read_varint(|| self.byte(), |error| error)
    }

    pub(crate) fn signed(&mut self) -> Result<i64, WireError> {
        let zigzag = self.varint()?;
        Ok((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        u32::try_from(self.varint()?).map_err(|_| WireError::OutOfRange(field))
    }

    fn text(&mut self) -> Result<&'a str, WireError> {
        let len = usize::try_from(self.varint()?).map_err(|_| WireError::Truncated)?;
        if len > self.0.len() {
            return Err(WireError::Truncated);
        }
        let (text, rest) = self.0.split_at(len);
        self.0 = rest;
        std::str::from_utf8(text).map_err(|_| WireError::NotUtf8)
    }

    fn name(&mut self) -> Result<Name, WireError> {
        self.text().map(Name::from)
    }

    fn status(&mut self) -> Result<PoStatus, WireError> {
        match self.byte()? {
            0 => Ok(PoStatus::Open),
            1 => Ok(PoStatus::Closed),
            2 => Ok(PoStatus::Cancelled),
            other => Err(WireError::UnknownTag(other)),
        }
    }

    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Result<T, WireError>) -> Result<Option<T>, WireError> {
        match self.byte()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            other => Err(WireError::UnknownTag(other)),
        }
    }
}

thread_local! {
    /// The record being serialized: bincode serializes every exchanged batch twice (once to
    /// size it, once to write it), so the buffer is reused rather than allocated per event.
    static ENCODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A record's bytes beyond which the decoder stops reserving ahead (a peer's length prefix
/// is not trusted with an allocation; longer records grow as their bytes arrive).
const RESERVE_LIMIT: usize = 4096;

impl Serialize for WireEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        ENCODED.with(|cell| {
            let mut record = cell.borrow_mut();
            record.clear();
            encode(&self.0, &mut record);
            let mut prefix = [0u8; 10];
            let prefix = varint_into(&mut prefix, record.len() as u64);
            let mut tuple = serializer.serialize_tuple(prefix.len() + record.len())?;
            for byte in prefix.iter().chain(record.iter()) {
                tuple.serialize_element(byte)?;
            }
            tuple.end()
        })
    }
}

impl<'de> Deserialize<'de> for WireEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The record's length is only known once its prefix is read; bincode's tuples carry no
        // length, and the visitor stops at the record's end.
        deserializer.deserialize_tuple(usize::MAX, RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = WireEvent;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event in stockflow's wire layout")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireEvent, A::Error> {
        let mut next = || seq.next_element::<u8>()?.ok_or_else(|| de::Error::custom(WireError::Truncated));
        let len = read_varint(&mut next, de::Error::custom)?;
        let len = usize::try_from(len).map_err(|_| de::Error::custom(WireError::Truncated))?;
        ENCODED.with(|cell| {
            let mut record = cell.borrow_mut();
            record.clear();
            record.reserve(len.min(RESERVE_LIMIT));
            for _ in 0..len {
                record.push(next()?);
            }
            decode(&record).map(WireEvent).map_err(de::Error::custom)
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sale(sku: &str, loc: &str, qty: i64) -> Event {
        Event {
            order: OrderKey {
                effective: 1_767_225_600_000,
                position: Position { source: 0, partition: 3, offset: 1_234_567 },
            },
            message: Message { ts: 1_767_225_600_000, sku: sku.into(), loc: loc.into(), body: Body::Sale { qty } },
        }
    }

    fn encoded(event: &Event) -> Vec<u8> {
        let mut out = Vec::new();
        encode(event, &mut out);
        out
    }

    /// Any string, including ones longer than a one-byte length (up to ~1 KB) and multi-byte
    /// characters (`a_name_of_70_kb_decodes_to_itself` covers three-byte lengths).
    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,8}", proptest::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter)]
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        arb_text().prop_map(Name::from)
    }

    fn arb_policy() -> impl Strategy<Value = Option<Policy>> {
        proptest::option::of((any::<[i64; 5]>(), proptest::option::of(arb_name())).prop_map(|(n, source)| Policy {
            safety_stock: n[0],
            reorder_point: n[1],
            order_up_to: n[2],
            pack_size: n[3],
            moq: n[4],
            source,
        }))
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let status = prop_oneof![Just(PoStatus::Open), Just(PoStatus::Closed), Just(PoStatus::Cancelled)];
        prop_oneof![
            any::<i64>().prop_map(|qty| Body::Sale { qty }),
            any::<i64>().prop_map(|qty| Body::Return { qty }),
            (any::<i64>(), proptest::option::of(arb_name())).prop_map(|(qty, po_id)| Body::Receipt { qty, po_id }),
            (any::<i64>(), proptest::option::of(arb_text())).prop_map(|(delta, reason)| Body::Adjust { delta, reason }),
            any::<i64>().prop_map(|qty| Body::Count { qty }),
            (arb_name(), any::<i64>(), any::<Option<u64>>()).prop_map(|(res_id, qty, expires_at)| Body::Reserve {
                res_id,
                qty,
                expires_at
            }),
            arb_name().prop_map(|res_id| Body::Release { res_id }),
            (arb_name(), any::<i64>()).prop_map(|(res_id, qty)| Body::Fulfill { res_id, qty }),
            (arb_name(), any::<i64>(), status, any::<Option<u64>>()).prop_map(|(po_id, qty, status, eta)| Body::Po {
                po_id,
                qty,
                status,
                eta
            }),
            arb_policy().prop_map(Body::Policy),
        ]
    }

    /// Integers at and around the edges of their types, or anywhere.
    fn arb_u64() -> impl Strategy<Value = u64> {
        prop_oneof![Just(0), Just(u64::MAX), Just(1 << 63), Just(127), Just(128), any::<u64>()]
    }

    pub(crate) fn arb_event() -> impl Strategy<Value = Event> {
        let position = (any::<u32>(), any::<u32>(), arb_u64()).prop_map(|(source, partition, offset)| Position {
            source,
            partition,
            offset,
        });
        (arb_u64(), position, arb_u64(), arb_name(), arb_name(), arb_body()).prop_map(
            |(effective, position, ts, sku, loc, body)| Event {
                order: OrderKey { effective, position },
                message: Message { ts, sku, loc, body },
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn any_event_decodes_to_itself(event in arb_event()) {
            prop_assert_eq!(decode(&encoded(&event)), Ok(event));
        }

        /// What timely does to an exchanged batch: bincode 1 of a `Vec`.
        #[test]
        fn batches_cross_bincode_unchanged(events in proptest::collection::vec(arb_event(), 0..6)) {
            let wire: Vec<WireEvent> = events.iter().cloned().map(WireEvent).collect();
            let bytes = bincode::serialize(&wire).unwrap();
            prop_assert_eq!(bincode::serialized_size(&wire).unwrap(), bytes.len() as u64);
            let back: Vec<WireEvent> = bincode::deserialize(&bytes).unwrap();
            prop_assert_eq!(back, wire);
        }

        #[test]
        fn every_truncated_record_is_refused(event in arb_event()) {
            let bytes = encoded(&event);
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode(&bytes[..cut]), Err(WireError::Truncated), "cut at {}", cut);
            }
        }

        #[test]
        fn every_truncated_batch_is_refused(events in proptest::collection::vec(arb_event(), 1..4)) {
            let wire: Vec<WireEvent> = events.into_iter().map(WireEvent).collect();
            let bytes = bincode::serialize(&wire).unwrap();
            for cut in 0..bytes.len() {
                prop_assert!(bincode::deserialize::<Vec<WireEvent>>(&bytes[..cut]).is_err(), "cut at {}", cut);
            }
        }

        /// Bytes from a peer are never trusted: anything is an event or an error.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(event) = decode(&bytes) {
                prop_assert_eq!(decode(&encoded(&event)), Ok(event));
            }
            let _ = bincode::deserialize::<Vec<WireEvent>>(&bytes);
        }
    }

    #[test]
    fn a_name_of_70_kb_decodes_to_itself() {
        let mut event = sale(&"é".repeat(35_000), "LOC", 1);
        event.message.body = Body::Adjust { delta: i64::MIN, reason: Some("x".repeat(70_000)) };
        let bytes = encoded(&event);
        assert_eq!(decode(&bytes), Ok(event.clone()));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(WireError::Truncated));
        let wire = vec![WireEvent(event)];
        assert_eq!(bincode::deserialize::<Vec<WireEvent>>(&bincode::serialize(&wire).unwrap()).unwrap(), wire);
    }

    #[test]
    fn a_typical_sale_takes_half_of_bincodes_bytes() {
        let event = sale("SKU-0001234", "LOC-0042", 3);
        let fixed = bincode::serialized_size(&event).unwrap();
        let compact = bincode::serialized_size(&WireEvent(event.clone())).unwrap();
        // 6 effective + 1 ts + 1 source + 1 partition + 3 offset + 12 sku + 9 loc + 1 tag + 1 qty,
        // and the 1-byte record length.
        assert_eq!((fixed, compact), (79, 36));
        assert_eq!(encoded(&event).len(), 35);
    }

    #[test]
    fn malformed_fields_are_named_errors() {
        let event = sale("s", "l", 1);
        let good = encoded(&event);
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(WireError::Trailing(1)));
        // The body tag is the second-to-last byte of a sale with a 1-byte quantity.
        let mut tag = good.clone();
        let at = tag.len() - 2;
        tag[at] = 11;
        assert_eq!(decode(&tag), Err(WireError::UnknownTag(11)));
        let overlong = [0xffu8; 11];
        assert_eq!(decode(&overlong), Err(WireError::VarintOverflow));
        // Ten bytes whose last carries more than bit 63.
        let mut too_big = [0xffu8; 10];
        too_big[9] = 0x02;
        assert_eq!(decode(&too_big), Err(WireError::VarintOverflow));
        // effective 0, ts delta 0, source 2^32.
        let mut source = vec![0, 0];
        put_varint(&mut source, 1 << 32);
        assert_eq!(decode(&source), Err(WireError::OutOfRange("source")));
        // A one-byte sku that is not UTF-8.
        let not_utf8 = [0, 0, 0, 0, 0, 1, 0xff];
        assert_eq!(decode(&not_utf8), Err(WireError::NotUtf8));
    }

    #[test]
    fn a_huge_length_prefix_is_refused_without_allocating_it() {
        // A batch of one record whose length prefix claims 2^62 bytes, then three bytes.
        let mut bytes = 1u64.to_le_bytes().to_vec();
        put_varint(&mut bytes, 1 << 62);
        bytes.extend_from_slice(&[1, 2, 3]);
        let error = bincode::deserialize::<Vec<WireEvent>>(&bytes).unwrap_err();
        assert!(error.to_string().contains("truncated") || error.to_string().contains("io error"), "{error}");
    }

    #[test]
    fn checkpoints_keep_bincodes_layout_of_events() {
        // The wire layout is only the exchange's: an event itself still serializes as before.
        let event = sale("SKU-0001234", "LOC-0042", 3);
        let bytes = bincode::serialize(&event).unwrap();
        assert_eq!(&bytes[..8], &1_767_225_600_000u64.to_le_bytes());
        assert_eq!(bincode::deserialize::<Event>(&bytes).unwrap(), event);
    }
}
