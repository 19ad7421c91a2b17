//! The event model of SPEC §1–2: decoded messages, their positions and the total order they apply in.

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch; also the timely/differential time type of every dataflow.
pub type Millis = u64;

/// The largest valid time: the end of year 9999 (SPEC §1).
pub const MAX_TIME: Millis = 253_402_300_799_999;

/// Largest quantity or policy number a message may carry (SPEC §1: 1e9).
pub const MAX_QTY: i64 = 1_000_000_000;

/// An identifier (sku, loc, res_id, po_id, source): ids of up to 24 bytes are stored inline, so
/// cloning and comparing the keys that flow through every operator needs no allocation.
/// Ordering is bytewise, as SPEC §4 asks of keys.
pub type Name = compact_str::CompactString;

/// Index of an input source (a fixture file's base name or a Kafka topic).
///
/// Ids are handed out in bytewise order of the names, so comparing ids compares names,
/// which is what SPEC §2's order needs; the name table lives with the run's configuration.
pub type SourceId = u32;

/// Where a message came from: (source, partition, offset). For fixture files the
/// partition is 0 and the offset is the 1-based line number, blank lines included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// The source's id (ordered like its name).
    pub source: SourceId,
    /// The partition within the source.
    pub partition: u32,
    /// The offset (line number) within the partition.
    pub offset: u64,
}

/// The total order in which messages take effect: (effective time, source, partition, offset).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OrderKey {
    /// The message's effective time (its `ts`, or `max_prev - lateness` when late).
    pub effective: Millis,
    /// The message's position, breaking ties between equal effective times.
    pub position: Position,
}

/// Status of a purchase/transfer order (`po.status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PoStatus {
    /// Counts towards `on_order`.
    Open,
    /// Received in full or otherwise finished.
    Closed,
    /// Will not arrive.
    Cancelled,
}

/// A key's replenishment policy (the fields of a non-deleted `policy` message).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Policy {
    /// Stock held back from ATP.
    pub safety_stock: i64,
    /// Position at or below which the key is LOW and orders.
    pub reorder_point: i64,
    /// Position an order line tops the key up to.
    pub order_up_to: i64,
    /// Order lines are whole multiples of this (>= 1).
    pub pack_size: i64,
    /// Minimum order quantity.
    pub moq: i64,
    /// Where the key is replenished from: a location id or `vendor:...`; `None` orders nothing.
    pub source: Option<Name>,
}

/// What a message does, by `type` (SPEC §1's table).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Body {
    /// `sale`: on_hand -= qty.
    Sale {
        /// 1..=1e9
        qty: i64,
    },
    /// `return`: on_hand += qty.
    Return {
        /// 1..=1e9
        qty: i64,
    },
    /// `receipt`: on_hand += qty (the PO itself is updated by its own `po` message).
    Receipt {
        /// 1..=1e9
        qty: i64,
        /// The PO received against, informational.
        po_id: Option<Name>,
    },
    /// `adjust`: on_hand += delta.
    Adjust {
        /// Non-zero, |delta| <= 1e9.
        delta: i64,
        /// Free text, informational.
        reason: Option<String>,
    },
    /// `count`: on_hand := qty, and a barrier for older movements.
    Count {
        /// 0..=1e9
        qty: i64,
    },
    /// `reserve`: opens hold `res_id` of `qty` until `expires_at`.
    Reserve {
        /// 1..=128 bytes
        res_id: Name,
        /// 1..=1e9
        qty: i64,
        /// Absent: effective time + 15 minutes.
        expires_at: Option<Millis>,
    },
    /// `release`: ends the hold.
    Release {
        /// 1..=128 bytes
        res_id: Name,
    },
    /// `fulfill`: ends the hold and on_hand -= qty.
    Fulfill {
        /// 1..=128 bytes
        res_id: Name,
        /// 1..=1e9
        qty: i64,
    },
    /// `po`: upsert of purchase/transfer order `po_id`.
    Po {
        /// 1..=128 bytes
        po_id: Name,
        /// Open quantity, 0..=1e9.
        qty: i64,
        /// Defaults to open.
        status: PoStatus,
        /// Expected arrival, informational.
        eta: Option<Millis>,
    },
    /// `policy`: upsert (`Some`) or deletion (`None`) of the key's policy.
    Policy(Option<Policy>),
}

impl Body {
    /// SPEC §1's message type names, in the order of [`Body::type_index`].
    pub const TYPE_NAMES: [&'static str; 10] =
        ["sale", "return", "receipt", "adjust", "count", "reserve", "release", "fulfill", "po", "policy"];

    /// The message's type as an index into [`Body::TYPE_NAMES`] (for per-type counts).
    pub fn type_index(&self) -> usize {
        match self {
            Body::Sale { .. } => 0,
            Body::Return { .. } => 1,
            Body::Receipt { .. } => 2,
            Body::Adjust { .. } => 3,
            Body::Count { .. } => 4,
            Body::Reserve { .. } => 5,
            Body::Release { .. } => 6,
            Body::Fulfill { .. } => 7,
            Body::Po { .. } => 8,
            Body::Policy(_) => 9,
        }
    }
}

/// A valid message: the common fields and its body. `sku` and `loc` are 1..=64 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Event time as sent (before lateness is applied).
    pub ts: Millis,
    /// Stock keeping unit.
    pub sku: Name,
    /// Location id.
    pub loc: Name,
    /// What the message does.
    pub body: Body,
}

/// Why a message was rejected (SPEC §1 "Rejection"). Displays as the dead-letter `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// Not UTF-8, not strict JSON, or not a JSON object.
    #[error("invalid_json")]
    InvalidJson,
    /// `type` missing or not one of the known kinds.
    #[error("unknown_type")]
    UnknownType,
    /// A required field is absent or null.
    #[error("missing_field:{0}")]
    MissingField(&'static str),
    /// A field has the wrong JSON type or is out of range.
    #[error("invalid_field:{0}")]
    InvalidField(&'static str),
}

/// A decoded, valid message with its place in the total order, ready for the ledger.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Effective time and position.
    pub order: OrderKey,
    /// The message.
    pub message: Message,
}

/// A dead-letter record (SPEC §4): position, reason and the raw text, cut to 4096 characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Where the message was read.
    pub position: Position,
    /// Why it was rejected, as SPEC §1 spells it.
    pub reason: String,
    /// The raw text, invalid UTF-8 replaced by U+FFFD, cut to 4096 characters.
    pub payload: String,
}

/// The longest dead-letter payload, in characters.
pub const DEAD_LETTER_PAYLOAD_CHARS: usize = 4096;

impl DeadLetter {
    /// Builds a dead letter from the raw bytes of a message (line ending already removed).
    pub fn new(position: Position, reason: Rejection, raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let payload = match text.char_indices().nth(DEAD_LETTER_PAYLOAD_CHARS) {
            Some((cut, _)) => text[..cut].to_string(),
            None => text.into_owned(),
        };
        DeadLetter { position, reason: reason.to_string(), payload }
    }
}
