//! Decoding of one raw input message into a [`Message`] or a [`Rejection`] (SPEC §1): a strict,
//! single-pass RFC 8259 parser, the per-type field checks in SPEC's order, and the time syntax
//! (`ts`, `expires_at`, `eta`, the CLI's `--until`).
//!
//! The parser builds no tree: it validates the whole text once, keeping only the token spans of
//! the top-level members it knows, and the field checks then read those spans in the order SPEC
//! prescribes. Most lines never reach it: the fast path (`fast`) scans the layout nearly every
//! producer writes — the type's own members in SPEC's table order, without escapes — into the
//! same slots, and hands everything else, every invalid line included, to the strict parser.
//! Apart from the owned strings of the returned [`Message`] (inline up to 24 bytes), a typical
//! line allocates nothing.

use crate::model::{Body, Message, Millis, Name, PoStatus, Policy, Rejection, MAX_QTY, MAX_TIME};
use std::borrow::Cow;

mod fast;

/// Decodes one message: `raw` is one line (or one Kafka value) without its line ending.
///
/// The text must be UTF-8 and one strict RFC 8259 JSON object (else [`Rejection::InvalidJson`]);
/// its fields are then checked in SPEC §1's order and the first failing one decides the reason.
/// Never panics, whatever the input.
pub fn decode(raw: &[u8]) -> Result<Message, Rejection> {
    let mut slots = [Val::Absent; SLOTS];
    if let Some(fast::Scanned { kind, ascii }) = fast::scan(raw, &mut slots) {
        if let Some(text) = utf8(raw, ascii) {
            return Fields { text, slots: &slots }.message_of(kind);
        }
    }
    decode_strict(raw)
}

/// `raw` as text when it is UTF-8. The fast path proves nearly every line ASCII as it reads
/// (`ascii`), but the text is validated all the same: skipping validation on that proof would
/// save ~70 instructions a line (of ~1,130) and rest memory safety on the scanner's
/// correctness for any input a producer sends. Debug builds check the proof.
#[inline(always)]
fn utf8(raw: &[u8], ascii: bool) -> Option<&str> {
    debug_assert!(!ascii || raw.is_ascii(), "the fast path missed a byte");
    std::str::from_utf8(raw).ok()
}

/// [`decode`] without the fast path: the strict parser, which decides every line the fast path
/// gives up on.
fn decode_strict(raw: &[u8]) -> Result<Message, Rejection> {
    let text = std::str::from_utf8(raw).map_err(|_| Rejection::InvalidJson)?;
    let mut parser = Parser { b: text.as_bytes(), i: 0, names: Vec::new(), arena: Vec::new() };
    let mut slots = [Val::Absent; SLOTS];
    parser.top(&mut slots).map_err(|Bad| Rejection::InvalidJson)?;
    Fields { text, slots: &slots }.message()
}

/// Parses a time as the CLI takes it (`--until`): a decimal count of milliseconds since the
/// epoch, or an RFC 3339 date-time like `ts`; either must lie in `0..=MAX_TIME`.
pub fn parse_time(text: &str) -> Option<Millis> {
    let b = text.as_bytes();
    if !b.is_empty() && b.iter().all(u8::is_ascii_digit) {
        let mut v: u64 = 0;
        for &d in b {
            v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        return (v <= MAX_TIME).then_some(v);
    }
    rfc3339(b)
}

/// SPEC §1: the top-level object is depth 1, and 128 nested containers in all are allowed.
const MAX_DEPTH: u32 = 128;

// Slots for the top-level member names that some message type reads.
const TYPE: usize = 0;
const TS: usize = 1;
const SKU: usize = 2;
const LOC: usize = 3;
const QTY: usize = 4;
const DELTA: usize = 5;
const REASON: usize = 6;
const PO_ID: usize = 7;
const RES_ID: usize = 8;
const EXPIRES_AT: usize = 9;
const STATUS: usize = 10;
const ETA: usize = 11;
const REORDER_POINT: usize = 12;
const ORDER_UP_TO: usize = 13;
const SAFETY_STOCK: usize = 14;
const PACK_SIZE: usize = 15;
const MOQ: usize = 16;
const SOURCE: usize = 17;
const DELETED: usize = 18;
const SLOTS: usize = 19;

/// The JSON name of each slot; rejection reasons carry these.
const NAMES: [&str; SLOTS] = [
    "type",
    "ts",
    "sku",
    "loc",
    "qty",
    "delta",
    "reason",
    "po_id",
    "res_id",
    "expires_at",
    "status",
    "eta",
    "reorder_point",
    "order_up_to",
    "safety_stock",
    "pack_size",
    "moq",
    "source",
    "deleted",
];

fn slot_of(name: &[u8]) -> Option<usize> {
    Some(match name {
        b"type" => TYPE,
        b"ts" => TS,
        b"sku" => SKU,
        b"loc" => LOC,
        b"qty" => QTY,
        b"delta" => DELTA,
        b"reason" => REASON,
        b"po_id" => PO_ID,
        b"res_id" => RES_ID,
        b"expires_at" => EXPIRES_AT,
        b"status" => STATUS,
        b"eta" => ETA,
        b"reorder_point" => REORDER_POINT,
        b"order_up_to" => ORDER_UP_TO,
        b"safety_stock" => SAFETY_STOCK,
        b"pack_size" => PACK_SIZE,
        b"moq" => MOQ,
        b"source" => SOURCE,
        b"deleted" => DELETED,
        _ => return None,
    })
}

/// A validated top-level member value, kept as a span of the input so that nothing is
/// converted before the field checks ask for it (and in their order).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    /// The member did not occur (never produced by the parser for a present member).
    Absent,
    Null,
    Bool(bool),
    /// An integer literal (no fraction, no exponent): its value, `None` when it does not fit an
    /// i64 (which every field's range check rejects).
    Int(Option<i64>),
    /// A number with a fraction or an exponent: never a valid quantity or time.
    Real,
    /// The bytes between the quotes; `escaped` when they contain a backslash escape.
    Str {
        start: usize,
        end: usize,
        escaped: bool,
    },
    /// An object or an array: valid JSON, but never a valid value for a known field.
    Container,
}

/// The input is not strict JSON; carries no detail because every such case is `invalid_json`.
struct Bad;
type Parse<T> = Result<T, Bad>;

/// A member name for duplicate detection: raw input bytes when it had no escapes, otherwise
/// its unescaped bytes in the arena, so that `"a"` and `"\u0061"` compare equal.
#[derive(Clone, Copy)]
struct NameRef {
    in_arena: bool,
    start: usize,
    end: usize,
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
    /// Names of the objects currently open, innermost last; each object truncates back on close.
    names: Vec<NameRef>,
    /// Unescaped names referenced by `names`.
    arena: Vec<u8>,
}

impl Parser<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Parse<()> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Bad)
        }
    }

    /// The top-level value: an object whose known members land in slots, then only whitespace.
    fn top(&mut self, slots: &mut [Val; SLOTS]) -> Parse<()> {
        self.ws();
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                let (start, end, escaped) = self.string()?;
                let slot = if escaped {
                    let at = self.arena.len();
                    unescape_into(self.b.get(start..end).ok_or(Bad)?, &mut self.arena)?;
                    let slot = slot_of(self.arena.get(at..).unwrap_or_default());
                    if slot.is_some() {
                        self.arena.truncate(at);
                    } else {
                        self.names.push(NameRef { in_arena: true, start: at, end: self.arena.len() });
                    }
                    slot
                } else {
                    let slot = slot_of(self.b.get(start..end).unwrap_or_default());
                    if slot.is_none() {
                        self.names.push(NameRef { in_arena: false, start, end });
                    }
                    slot
                };
                self.ws();
                self.expect(b':')?;
                self.ws();
                let value = self.value(1)?;
                if let Some(k) = slot {
                    // Known names never go into `names`: a repeat shows up as an occupied slot.
                    if !matches!(slots[k], Val::Absent) {
                        return Err(Bad);
                    }
                    slots[k] = value;
                }
                if self.after_member(b'}')? {
                    break;
                }
            }
            self.check_unique(0)?;
        }
        self.ws();
        if self.i != self.b.len() {
            return Err(Bad);
        }
        Ok(())
    }

    /// After a member or element: `,` (more follow) or the closing byte (returns true).
    #[inline]
    fn after_member(&mut self, close: u8) -> Parse<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                self.ws();
                Ok(false)
            }
            Some(c) if c == close => {
                self.i += 1;
                Ok(true)
            }
            _ => Err(Bad),
        }
    }

    /// A value inside a container of depth `depth`. Recursion is bounded by `MAX_DEPTH`, so a
    /// line of ten million `[` costs 128 stack frames at most.
    fn value(&mut self, depth: u32) -> Parse<Val> {
        match self.peek() {
            Some(b'"') => {
                let (start, end, escaped) = self.string()?;
                Ok(Val::Str { start, end, escaped })
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Val::Bool(true)),
            Some(b'f') => self.literal(b"false", Val::Bool(false)),
            Some(b'n') => self.literal(b"null", Val::Null),
            Some(open @ (b'{' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(Bad);
                }
                self.i += 1;
                if open == b'{' {
                    self.object(depth + 1)?;
                } else {
                    self.array(depth + 1)?;
                }
                Ok(Val::Container)
            }
            _ => Err(Bad),
        }
    }

    fn literal(&mut self, word: &[u8], val: Val) -> Parse<Val> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(val)
        } else {
            Err(Bad)
        }
    }

    /// A nested object, after its `{`.
    fn object(&mut self, depth: u32) -> Parse<()> {
        let base = self.names.len();
        let arena_base = self.arena.len();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            let (start, end, escaped) = self.string()?;
            let name = if escaped {
                let at = self.arena.len();
                unescape_into(self.b.get(start..end).ok_or(Bad)?, &mut self.arena)?;
                NameRef { in_arena: true, start: at, end: self.arena.len() }
            } else {
                NameRef { in_arena: false, start, end }
            };
            self.names.push(name);
            self.ws();
            self.expect(b':')?;
            self.ws();
            self.value(depth)?;
            if self.after_member(b'}')? {
                break;
            }
        }
        self.check_unique(base)?;
        self.names.truncate(base);
        self.arena.truncate(arena_base);
        Ok(())
    }

    /// A nested array, after its `[`.
    fn array(&mut self, depth: u32) -> Parse<()> {
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.value(depth)?;
            if self.after_member(b']')? {
                return Ok(());
            }
        }
    }

    /// Fails when two of the names from `base` on are equal. Objects are small in practice, so
    /// the quadratic scan wins; a huge object is sorted instead so a 10 MB line stays cheap.
    fn check_unique(&mut self, base: usize) -> Parse<()> {
        let Parser { b, names, arena, .. } = self;
        let (b, arena) = (*b, arena.as_slice());
        let list = names.get_mut(base..).unwrap_or_default();
        if list.len() <= 16 {
            for j in 1..list.len() {
                let name = name_bytes(b, arena, list[j]);
                if list[..j].iter().any(|&other| name_bytes(b, arena, other) == name) {
                    return Err(Bad);
                }
            }
        } else {
            list.sort_unstable_by(|x, y| name_bytes(b, arena, *x).cmp(name_bytes(b, arena, *y)));
            if list.windows(2).any(|w| name_bytes(b, arena, w[0]) == name_bytes(b, arena, w[1])) {
                return Err(Bad);
            }
        }
        Ok(())
    }

    /// A string starting at its opening quote; returns the span between the quotes and whether
    /// it holds escapes. Rejects raw control characters, bad escapes and lone surrogates.
    fn string(&mut self) -> Parse<(usize, usize, bool)> {
        self.expect(b'"')?;
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let mut escaped = false;
        loop {
            // Most bytes of a string need no attention; skip them without the full match.
            while let Some(&c) = b.get(i) {
                if !PLAIN[usize::from(c)] {
                    break;
                }
                i += 1;
            }
            let c = *b.get(i).ok_or(Bad)?;
            match c {
                b'"' => {
                    self.i = i + 1;
                    return Ok((start, i, escaped));
                }
                b'\\' => {
                    escaped = true;
                    match b.get(i + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            let unit = hex4(b, i + 2).ok_or(Bad)?;
                            i += 6;
                            if is_high_surrogate(unit) {
                                if b.get(i..i + 2) != Some(b"\\u") {
                                    return Err(Bad);
                                }
                                let low = hex4(b, i + 2).ok_or(Bad)?;
                                if !is_low_surrogate(low) {
                                    return Err(Bad);
                                }
                                i += 6;
                            } else if is_low_surrogate(unit) {
                                return Err(Bad);
                            }
                        }
                        _ => return Err(Bad),
                    }
                }
                0x00..=0x1f => return Err(Bad),
                _ => i += 1,
            }
        }
    }

    /// A number per RFC 8259's grammar (so no leading zeros, no `+`, no bare `.`); any magnitude.
    fn number(&mut self) -> Parse<Val> {
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let digits = |mut i: usize| {
            while let Some(b'0'..=b'9') = b.get(i) {
                i += 1;
            }
            i
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => i = digits(i + 1),
            _ => return Err(Bad),
        }
        let mut int = true;
        if b.get(i) == Some(&b'.') {
            let from = i + 1;
            i = digits(from);
            if i == from {
                return Err(Bad);
            }
            int = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            let from = i;
            i = digits(from);
            if i == from {
                return Err(Bad);
            }
            int = false;
        }
        self.i = i;
        Ok(if int { Val::Int(b.get(start..i).and_then(parse_int)) } else { Val::Real })
    }
}

/// Bytes that may stand unescaped inside a string and end nothing: all but `"`, `\` and controls.
static PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = false;
        c += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

fn name_bytes<'x>(b: &'x [u8], arena: &'x [u8], n: NameRef) -> &'x [u8] {
    let from = if n.in_arena { arena } else { b };
    from.get(n.start..n.end).unwrap_or_default()
}

fn is_high_surrogate(unit: u32) -> bool {
    (0xD800..0xDC00).contains(&unit)
}

fn is_low_surrogate(unit: u32) -> bool {
    (0xDC00..0xE000).contains(&unit)
}

fn hex4(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at.checked_add(4)?)?.iter().try_fold(0u32, |v, &c| Some(v * 16 + char::from(c).to_digit(16)?))
}

/// Appends the unescaped form of a string body the parser has already validated.
fn unescape_into(s: &[u8], out: &mut Vec<u8>) -> Parse<()> {
    let mut i = 0;
    while i < s.len() {
        let run_end = s[i..].iter().position(|&c| c == b'\\').map_or(s.len(), |p| i + p);
        out.extend_from_slice(&s[i..run_end]);
        i = run_end;
        if i >= s.len() {
            break;
        }
        let c = *s.get(i + 1).ok_or(Bad)?;
        i += 2;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = hex4(s, i).ok_or(Bad)?;
                i += 4;
                let code = if is_high_surrogate(unit) {
                    if s.get(i..i + 2) != Some(b"\\u") {
                        return Err(Bad);
                    }
                    let low = hex4(s, i + 2).ok_or(Bad)?;
                    if !is_low_surrogate(low) {
                        return Err(Bad);
                    }
                    i += 6;
                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    unit
                };
                char::from_u32(code).ok_or(Bad)?
            }
            _ => return Err(Bad),
        };
        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
    }
    Ok(())
}

/// Parses an integer literal the parser has validated (no fraction, no exponent); `None` when
/// it does not fit an i64, which every caller treats as out of range.
fn parse_int(b: &[u8]) -> Option<i64> {
    let (negative, digits) = match b.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, b),
    };
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -v } else { v })
}

/// `YYYY-MM-DDThh:mm:ss[.fraction](Z|±hh:mm)`, `T`/`Z` in either case, fraction truncated to
/// milliseconds; `None` unless it is a real calendar date-time whose instant is in `0..=MAX_TIME`.
fn rfc3339(s: &[u8]) -> Option<Millis> {
    fn d2(s: &[u8], at: usize) -> Option<i64> {
        match s.get(at..at + 2)? {
            &[a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some(i64::from(a - b'0') * 10 + i64::from(b - b'0')),
            _ => None,
        }
    }
    let sep = |at: usize, c: &[u8]| s.get(at).is_some_and(|x| c.contains(x));
    let year = d2(s, 0)? * 100 + d2(s, 2)?;
    let month = d2(s, 5)?;
    let day = d2(s, 8)?;
    let hour = d2(s, 11)?;
    let minute = d2(s, 14)?;
    let second = d2(s, 17)?;
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let from = i;
        while let Some(&d @ b'0'..=b'9') = s.get(i) {
            if i - from < 3 {
                millis = millis * 10 + i64::from(d - b'0');
            }
            i += 1;
        }
        let n = i - from;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            millis *= 10;
        }
    }
    let offset_minutes = match s.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let (oh, om) = (d2(s, i + 1)?, d2(s, i + 4)?);
            if !sep(i + 3, b":") || oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            if sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return None,
    };
    if i != s.len()
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let t =
        days_from_civil(year, month, day) * 86_400_000 + hour * 3_600_000 + minute * 60_000 + second * 1000 + millis
            - offset_minutes * 60_000;
    Millis::try_from(t).ok().filter(|&t| t <= MAX_TIME)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian (year, month, day) of a day count since 1970-01-01: the inverse of
/// `days_from_civil` (Howard Hinnant's `civil_from_days`), for printing times.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Sale,
    Return,
    Receipt,
    Adjust,
    Count,
    Reserve,
    Release,
    Fulfill,
    Po,
    Policy,
}

impl Kind {
    /// The kind a `type` value names. Matched byte by byte, which compiles to a few integer
    /// comparisons instead of calls to `memcmp`.
    fn of(name: &[u8]) -> Option<Kind> {
        Some(match *name {
            [b's', b'a', b'l', b'e'] => Kind::Sale,
            [b'r', b'e', b't', b'u', b'r', b'n'] => Kind::Return,
            [b'r', b'e', b'c', b'e', b'i', b'p', b't'] => Kind::Receipt,
            [b'a', b'd', b'j', b'u', b's', b't'] => Kind::Adjust,
            [b'c', b'o', b'u', b'n', b't'] => Kind::Count,
            [b'r', b'e', b's', b'e', b'r', b'v', b'e'] => Kind::Reserve,
            [b'r', b'e', b'l', b'e', b'a', b's', b'e'] => Kind::Release,
            [b'f', b'u', b'l', b'f', b'i', b'l', b'l'] => Kind::Fulfill,
            [b'p', b'o'] => Kind::Po,
            [b'p', b'o', b'l', b'i', b'c', b'y'] => Kind::Policy,
            _ => return None,
        })
    }

    /// The members of this kind in SPEC's table order (type and ts first): the order most
    /// producers write them in, which the fast path tries first.
    const fn members(self) -> &'static [usize] {
        match self {
            Kind::Sale | Kind::Return | Kind::Count => &[TYPE, TS, SKU, LOC, QTY],
            Kind::Receipt => &[TYPE, TS, SKU, LOC, QTY, PO_ID],
            Kind::Adjust => &[TYPE, TS, SKU, LOC, DELTA, REASON],
            Kind::Reserve => &[TYPE, TS, SKU, LOC, RES_ID, QTY, EXPIRES_AT],
            Kind::Release => &[TYPE, TS, SKU, LOC, RES_ID],
            Kind::Fulfill => &[TYPE, TS, SKU, LOC, RES_ID, QTY],
            Kind::Po => &[TYPE, TS, PO_ID, SKU, LOC, QTY, STATUS, ETA],
            Kind::Policy => {
                &[TYPE, TS, SKU, LOC, REORDER_POINT, ORDER_UP_TO, SAFETY_STOCK, PACK_SIZE, MOQ, SOURCE, DELETED]
            }
        }
    }
}

/// The known top-level members of a syntactically valid message, checked on demand.
struct Fields<'a> {
    text: &'a str,
    slots: &'a [Val; SLOTS],
}

impl<'a> Fields<'a> {
    fn message(&self) -> Result<Message, Rejection> {
        self.message_of(self.kind()?)
    }

    /// The message of kind `kind`, which the caller took from `type` (the first check).
    fn message_of(&self, kind: Kind) -> Result<Message, Rejection> {
        let ts = self.time(TS)?.ok_or(Rejection::MissingField("ts"))?;
        // `po` names its po_id before the key (SPEC's table row); all others start with the key.
        let po_id = match kind {
            Kind::Po => Some(self.req_str(PO_ID, 128)?),
            _ => None,
        };
        let sku = self.req_str(SKU, 64)?;
        let loc = self.req_str(LOC, 64)?;
        let body = match kind {
            Kind::Sale => Body::Sale { qty: self.req_int(QTY, 1, MAX_QTY)? },
            Kind::Return => Body::Return { qty: self.req_int(QTY, 1, MAX_QTY)? },
            Kind::Receipt => {
                let qty = self.req_int(QTY, 1, MAX_QTY)?;
                Body::Receipt { qty, po_id: self.string(PO_ID, 1, 128)? }
            }
            Kind::Adjust => {
                let delta = self.req_int(DELTA, -MAX_QTY, MAX_QTY)?;
                if delta == 0 {
                    return Err(Rejection::InvalidField("delta"));
                }
                Body::Adjust { delta, reason: self.string(REASON, 0, usize::MAX)?.map(Name::into_string) }
            }
            Kind::Count => Body::Count { qty: self.req_int(QTY, 0, MAX_QTY)? },
            Kind::Reserve => {
                let res_id = self.req_str(RES_ID, 128)?;
                let qty = self.req_int(QTY, 1, MAX_QTY)?;
                Body::Reserve { res_id, qty, expires_at: self.time(EXPIRES_AT)? }
            }
            Kind::Release => Body::Release { res_id: self.req_str(RES_ID, 128)? },
            Kind::Fulfill => {
                let res_id = self.req_str(RES_ID, 128)?;
                Body::Fulfill { res_id, qty: self.req_int(QTY, 1, MAX_QTY)? }
            }
            Kind::Po => {
                let qty = self.req_int(QTY, 0, MAX_QTY)?;
                let status = match self.string(STATUS, 0, usize::MAX)?.as_deref() {
                    None | Some("open") => PoStatus::Open,
                    Some("closed") => PoStatus::Closed,
                    Some("cancelled") => PoStatus::Cancelled,
                    Some(_) => return Err(Rejection::InvalidField("status")),
                };
                let eta = self.time(ETA)?;
                Body::Po { po_id: po_id.unwrap_or_default(), qty, status, eta }
            }
            Kind::Policy => self.policy()?,
        };
        Ok(Message { ts, sku, loc, body })
    }

    fn kind(&self) -> Result<Kind, Rejection> {
        let kind = match self.slots[TYPE] {
            Val::Str { start, end, escaped: false } => self.text.as_bytes().get(start..end).and_then(Kind::of),
            Val::Str { start, end, escaped: true } => Kind::of(self.str(start, end, true)?.as_bytes()),
            _ => None,
        };
        kind.ok_or(Rejection::UnknownType)
    }

    /// The body of a `policy`, whose `deleted` flag is checked before the numbers it waives.
    fn policy(&self) -> Result<Body, Rejection> {
        match self.slots[DELETED] {
            Val::Absent | Val::Null | Val::Bool(false) => {}
            Val::Bool(true) => return Ok(Body::Policy(None)),
            _ => return Err(Rejection::InvalidField("deleted")),
        }
        let reorder_point = self.req_int(REORDER_POINT, 0, MAX_QTY)?;
        let order_up_to = self.req_int(ORDER_UP_TO, 0, MAX_QTY)?;
        if order_up_to < reorder_point {
            return Err(Rejection::InvalidField("order_up_to"));
        }
        Ok(Body::Policy(Some(Policy {
            reorder_point,
            order_up_to,
            safety_stock: self.int(SAFETY_STOCK, 0, MAX_QTY)?.unwrap_or(0),
            pack_size: self.int(PACK_SIZE, 1, MAX_QTY)?.unwrap_or(1),
            moq: self.int(MOQ, 0, MAX_QTY)?.unwrap_or(0),
            source: self.string(SOURCE, 1, 64)?,
        })))
    }

    /// The content of a validated string span.
    fn str(&self, start: usize, end: usize, escaped: bool) -> Result<Cow<'a, str>, Rejection> {
        let text: &'a str = self.text;
        if !escaped {
            return text.get(start..end).map(Cow::Borrowed).ok_or(Rejection::InvalidJson);
        }
        let mut out = Vec::with_capacity(end.saturating_sub(start));
        unescape_into(text.as_bytes().get(start..end).unwrap_or_default(), &mut out)
            .map_err(|Bad| Rejection::InvalidJson)?;
        String::from_utf8(out).map(Cow::Owned).map_err(|_| Rejection::InvalidJson)
    }

    /// An optional string of `min..=max` bytes; `None` when absent or null.
    #[inline(always)]
    fn string(&self, k: usize, min: usize, max: usize) -> Result<Option<Name>, Rejection> {
        let s = match self.slots[k] {
            Val::Absent | Val::Null => return Ok(None),
            Val::Str { start, end, escaped: false } => {
                let s = self.text.get(start..end).ok_or(Rejection::InvalidJson)?;
                (min..=max).contains(&s.len()).then(|| Name::from(s))
            }
            Val::Str { start, end, escaped: true } => {
                let s = self.str(start, end, true)?;
                (min..=max).contains(&s.len()).then(|| Name::from(s.as_ref()))
            }
            _ => None,
        };
        s.map(Some).ok_or(Rejection::InvalidField(NAMES[k]))
    }

    /// A required string of 1..=`max` bytes.
    #[inline(always)]
    fn req_str(&self, k: usize, max: usize) -> Result<Name, Rejection> {
        self.string(k, 1, max)?.ok_or(Rejection::MissingField(NAMES[k]))
    }

    /// An optional integer in `min..=max`; `None` when absent or null.
    #[inline(always)]
    fn int(&self, k: usize, min: i64, max: i64) -> Result<Option<i64>, Rejection> {
        match self.slots[k] {
            Val::Absent | Val::Null => Ok(None),
            Val::Int(v) => v.filter(|v| (min..=max).contains(v)).map(Some).ok_or(Rejection::InvalidField(NAMES[k])),
            _ => Err(Rejection::InvalidField(NAMES[k])),
        }
    }

    #[inline(always)]
    fn req_int(&self, k: usize, min: i64, max: i64) -> Result<i64, Rejection> {
        self.int(k, min, max)?.ok_or(Rejection::MissingField(NAMES[k]))
    }

    /// An optional time: an integer in `0..=MAX_TIME` or an RFC 3339 string; `None` when absent or null.
    #[inline(always)]
    fn time(&self, k: usize) -> Result<Option<Millis>, Rejection> {
        let t = match self.slots[k] {
            Val::Absent | Val::Null => return Ok(None),
            Val::Int(_) | Val::Real => self.int(k, 0, MAX_TIME as i64)?.and_then(|t| Millis::try_from(t).ok()),
            Val::Str { start, end, escaped } => rfc3339(self.str(start, end, escaped)?.as_bytes()),
            _ => None,
        };
        t.map(Some).ok_or(Rejection::InvalidField(NAMES[k]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn reason(line: &str) -> String {
        match decode(line.as_bytes()) {
            Ok(m) => format!("accepted {m:?}"),
            Err(r) => r.to_string(),
        }
    }

    fn ok(line: &str) -> Message {
        decode(line.as_bytes()).unwrap_or_else(|r| panic!("{line}: rejected with {r}"))
    }

    fn key(body: Body) -> Message {
        Message { ts: 1000, sku: "S".into(), loc: "L".into(), body }
    }

    #[test]
    fn late_and_bad_lines_get_the_expected_reasons() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json at all", "invalid_json"),
            (br#"{"type":"sale","ts":6000,"sku":"C","loc":"L1","qty":0}"#, "invalid_field:qty"),
            (br#"{"type":"sale","ts":6000,"sku":"C","loc":"L1","qty":2.5}"#, "invalid_field:qty"),
            (br#"{"type":"teleport","ts":6000,"sku":"C","loc":"L1","qty":2}"#, "unknown_type"),
            (br#"{"type":"sale","sku":"C","loc":"L1","qty":2}"#, "missing_field:ts"),
            (br#"{"type":"sale","ts":-5,"sku":"C","loc":"L1","qty":2}"#, "invalid_field:ts"),
            (br#"{"type":"sale","ts":6000,"sku":"","loc":"L1","qty":2}"#, "invalid_field:sku"),
            (br#"{"type":"sale","ts":6000,"sku":"C","loc":"L1","qty":"2"}"#, "invalid_field:qty"),
            (br#"{"type":"adjust","ts":6000,"sku":"C","loc":"L1","delta":0}"#, "invalid_field:delta"),
            (
                br#"{"type":"policy","ts":6000,"sku":"C","loc":"L1","reorder_point":9,"order_up_to":3}"#,
                "invalid_field:order_up_to",
            ),
            (
                br#"{"type":"reserve","ts":6000,"sku":"C","loc":"L1","res_id":"X","qty":1,"expires_at":"yesterday"}"#,
                "invalid_field:expires_at",
            ),
            (b"[1,2,3]", "invalid_json"),
            (b"\xff\xfe bad utf8", "invalid_json"),
        ];
        for (line, want) in cases {
            assert_eq!(decode(line).map_err(|r| r.to_string()).err().as_deref(), Some(*want), "{line:?}");
        }
        let extra = ok(r#"{"type":"sale","ts":7300,"sku":"C","loc":"L1","qty":1,"note":"extra fields are ignored"}"#);
        assert_eq!(extra, Message { ts: 7300, sku: "C".into(), loc: "L1".into(), body: Body::Sale { qty: 1 } });
    }

    #[test]
    fn text_beyond_ascii_keeps_its_reasons() {
        // Invalid UTF-8 anywhere is still `invalid_json`, ahead of every field's own verdict,
        // and valid non-ASCII text decodes.
        let cases: &[(&[u8], &str)] = &[
            (b"{\"type\":\"sale\",\"ts\":\"yesterday\xff\",\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}", "invalid_json"),
            (b"{\"type\":\"sale\",\"ts\":1,\"sku\":\"\xc3\",\"loc\":\"S\",\"qty\":0}", "invalid_json"),
            (
                b"{\"type\":\"adjust\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"delta\":0,\"reason\":\"\xe2\x98\"}",
                "invalid_json",
            ),
            (b"{\"type\":\"s\xc3\xa4le\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}", "unknown_type"),
            (
                "{\"type\":\"sale\",\"ts\":\"2023-11-14T22:13:20Zé\",\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}".as_bytes(),
                "invalid_field:ts",
            ),
            (
                "{\"type\":\"adjust\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"delta\":0,\"reason\":\"☕\"}".as_bytes(),
                "invalid_field:delta",
            ),
        ];
        for (line, expected) in cases {
            let got = match decode(line) {
                Ok(m) => format!("accepted {m:?}"),
                Err(r) => r.to_string(),
            };
            assert_eq!(&got, expected, "{}", String::from_utf8_lossy(line));
        }
        let m = ok("{\"type\":\"sale\",\"ts\":1,\"sku\":\"Kö\",\"loc\":\"S😀\",\"qty\":2}");
        assert_eq!((m.sku.as_str(), m.loc.as_str()), ("Kö", "S😀"));
    }

    /// The dead-letter fields this test needs, read without a JSON library (the crate has none).
    fn dead_letter_fields(line: &str) -> (String, u64, String) {
        let after = |tag: &str| &line[line.find(tag).unwrap_or_else(|| panic!("{tag} in {line}")) + tag.len()..];
        let quoted = |tag: &str| after(tag).split('"').next().unwrap_or_default().to_string();
        let offset = after("\"offset\":").split(',').next().and_then(|s| s.trim().parse().ok());
        (quoted("\"source\":\""), offset.unwrap_or_else(|| panic!("offset in {line}")), quoted("\"reason\":\""))
    }

    #[test]
    fn fixtures_reject_exactly_their_dead_letters() {
        // The repository's copy of shared/fixtures (CI checks the two are identical).
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let mut cases: Vec<_> = std::fs::read_dir(&root)
            .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("input").is_dir())
            .collect();
        cases.sort();
        assert!(!cases.is_empty());
        let mut messages = 0;
        for case in cases {
            let expected: BTreeMap<(String, u64), String> =
                std::fs::read_to_string(case.join("expected/dead_letter.jsonl"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| {
                        let (source, offset, reason) = dead_letter_fields(l);
                        ((source, offset), reason)
                    })
                    .collect();
            let mut actual = BTreeMap::new();
            for file in std::fs::read_dir(case.join("input")).unwrap() {
                let file = file.unwrap().path();
                let name = file.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = std::fs::read(&file).unwrap();
                for (n, line) in bytes.split(|&c| c == b'\n').enumerate() {
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.iter().all(|c| matches!(c, b' ' | b'\t' | b'\r')) {
                        continue;
                    }
                    messages += 1;
                    if let Err(r) = decode(line) {
                        actual.insert((name.clone(), n as u64 + 1), r.to_string());
                    }
                }
            }
            assert_eq!(actual, expected, "{}", case.display());
        }
        assert!(messages > 5000);
    }

    #[test]
    fn decodes_every_type() {
        let cases: Vec<(&str, Message)> = vec![
            (r#"{"type":"sale","ts":1000,"sku":"S","loc":"L","qty":3}"#, key(Body::Sale { qty: 3 })),
            (r#"{"type":"return","ts":1000,"sku":"S","loc":"L","qty":1000000000}"#, key(Body::Return { qty: MAX_QTY })),
            (r#"{"type":"receipt","ts":1000,"sku":"S","loc":"L","qty":1}"#, key(Body::Receipt { qty: 1, po_id: None })),
            (
                r#"{"type":"receipt","ts":1000,"sku":"S","loc":"L","qty":1,"po_id":"P"}"#,
                key(Body::Receipt { qty: 1, po_id: Some("P".into()) }),
            ),
            (
                r#"{"type":"adjust","ts":1000,"sku":"S","loc":"L","delta":-7}"#,
                key(Body::Adjust { delta: -7, reason: None }),
            ),
            (
                r#"{"type":"adjust","ts":1000,"sku":"S","loc":"L","delta":7,"reason":""}"#,
                key(Body::Adjust { delta: 7, reason: Some(String::new()) }),
            ),
            (r#"{"type":"count","ts":1000,"sku":"S","loc":"L","qty":0}"#, key(Body::Count { qty: 0 })),
            (r#"{"type":"count","ts":1000,"sku":"S","loc":"L","qty":-0}"#, key(Body::Count { qty: 0 })),
            (
                r#"{"type":"reserve","ts":1000,"sku":"S","loc":"L","res_id":"R","qty":2,"expires_at":"1970-01-01T00:00:02Z"}"#,
                key(Body::Reserve { res_id: "R".into(), qty: 2, expires_at: Some(2000) }),
            ),
            (
                r#"{"type":"reserve","ts":1000,"sku":"S","loc":"L","res_id":"R","qty":2,"expires_at":null}"#,
                key(Body::Reserve { res_id: "R".into(), qty: 2, expires_at: None }),
            ),
            (
                r#"{"type":"release","ts":1000,"sku":"S","loc":"L","res_id":"R"}"#,
                key(Body::Release { res_id: "R".into() }),
            ),
            (
                r#"{"type":"fulfill","ts":1000,"sku":"S","loc":"L","res_id":"R","qty":4}"#,
                key(Body::Fulfill { res_id: "R".into(), qty: 4 }),
            ),
            (
                r#"{"type":"po","ts":1000,"po_id":"P","sku":"S","loc":"L","qty":0}"#,
                key(Body::Po { po_id: "P".into(), qty: 0, status: PoStatus::Open, eta: None }),
            ),
            (
                r#"{"type":"po","ts":1000,"po_id":"P","sku":"S","loc":"L","qty":5,"status":"cancelled","eta":5000}"#,
                key(Body::Po { po_id: "P".into(), qty: 5, status: PoStatus::Cancelled, eta: Some(5000) }),
            ),
            (
                r#"{"type":"po","ts":1000,"po_id":"P","sku":"S","loc":"L","qty":5,"status":"closed","eta":null}"#,
                key(Body::Po { po_id: "P".into(), qty: 5, status: PoStatus::Closed, eta: None }),
            ),
            (
                r#"{"type":"policy","ts":1000,"sku":"S","loc":"L","reorder_point":5,"order_up_to":5}"#,
                key(Body::Policy(Some(Policy {
                    safety_stock: 0,
                    reorder_point: 5,
                    order_up_to: 5,
                    pack_size: 1,
                    moq: 0,
                    source: None,
                }))),
            ),
            (
                r#"{"type":"policy","ts":1000,"sku":"S","loc":"L","reorder_point":5,"order_up_to":9,"safety_stock":2,"pack_size":6,"moq":12,"source":"vendor:V","deleted":false}"#,
                key(Body::Policy(Some(Policy {
                    safety_stock: 2,
                    reorder_point: 5,
                    order_up_to: 9,
                    pack_size: 6,
                    moq: 12,
                    source: Some("vendor:V".into()),
                }))),
            ),
            (r#"{"type":"policy","ts":1000,"sku":"S","loc":"L","deleted":true}"#, key(Body::Policy(None))),
            (
                " \t{ \"type\" : \"sale\" ,\r\n\"ts\":1000,\"sku\":\"\\u0053\",\"loc\":\"\\u004c\",\"qty\":3 } \r\n",
                key(Body::Sale { qty: 3 }),
            ),
        ];
        for (line, want) in cases {
            assert_eq!(ok(line), want, "{line}");
        }
    }

    #[derive(Clone, Copy)]
    enum Rule {
        Int(i64, i64),
        Time,
        Str(usize, usize),
        AnyStr,
        Status,
        Bool,
    }

    /// Valid messages of every type, as (name, raw JSON value) in table-row order, with the rule
    /// and requiredness of each field and the optional fields they leave out.
    /// (name, valid raw JSON value, rule, required)
    type Field = (&'static str, &'static str, Rule, bool);

    fn schemas() -> Vec<(&'static str, Vec<Field>)> {
        use Rule::*;
        let key = |mut rest: Vec<Field>| {
            let mut v = vec![
                ("ts", "1000", Time, true),
                ("sku", "\"S\"", Str(1, 64), true),
                ("loc", "\"L\"", Str(1, 64), true),
            ];
            v.append(&mut rest);
            v
        };
        let qty1 = ("qty", "1", Int(1, MAX_QTY), true);
        let res = ("res_id", "\"R\"", Str(1, 128), true);
        vec![
            ("sale", key(vec![qty1])),
            ("return", key(vec![qty1])),
            ("receipt", key(vec![qty1, ("po_id", "\"P\"", Str(1, 128), false)])),
            ("adjust", key(vec![("delta", "1", Int(-MAX_QTY, MAX_QTY), true), ("reason", "\"r\"", AnyStr, false)])),
            ("count", key(vec![("qty", "0", Int(0, MAX_QTY), true)])),
            ("reserve", key(vec![res, qty1, ("expires_at", "2000", Time, false)])),
            ("release", key(vec![res])),
            ("fulfill", key(vec![res, qty1])),
            (
                "po",
                vec![
                    ("ts", "1000", Time, true),
                    ("po_id", "\"P\"", Str(1, 128), true),
                    ("sku", "\"S\"", Str(1, 64), true),
                    ("loc", "\"L\"", Str(1, 64), true),
                    ("qty", "0", Int(0, MAX_QTY), true),
                    ("status", "\"open\"", Status, false),
                    ("eta", "2000", Time, false),
                ],
            ),
            (
                "policy",
                key(vec![
                    ("deleted", "false", Bool, false),
                    ("reorder_point", "0", Int(0, MAX_QTY), true),
                    ("order_up_to", "1000000000", Int(0, MAX_QTY), true),
                    ("safety_stock", "0", Int(0, MAX_QTY), false),
                    ("pack_size", "1", Int(1, MAX_QTY), false),
                    ("moq", "0", Int(0, MAX_QTY), false),
                    ("source", "\"vendor:V\"", Str(1, 64), false),
                ]),
            ),
        ]
    }

    fn render(ty: &str, fields: &[Field], name: &str, value: Option<&str>) -> String {
        let mut out = format!("{{\"type\":\"{ty}\"");
        for (n, v, _, _) in fields {
            let v = if *n == name { value } else { Some(*v) };
            if let Some(v) = v {
                out.push_str(&format!(",\"{n}\":{v}"));
            }
        }
        out.push('}');
        out
    }

    #[test]
    fn every_field_of_every_type_is_checked() {
        let quoted = |n: usize| format!("\"{}\"", "é".repeat(n / 2) + &"x".repeat(n % 2));
        for (ty, fields) in schemas() {
            assert!(decode(render(ty, &fields, "", None).as_bytes()).is_ok(), "{ty}");
            for &(name, _, rule, required) in &fields {
                let bad = format!("invalid_field:{name}");
                let mut cases: Vec<(String, String)> = vec![];
                let absent = if required { format!("missing_field:{name}") } else { "ok".into() };
                let mut push = |v: String, want: &str| cases.push((v, want.to_string()));
                push("null".into(), &absent);
                for v in ["[]", "{}", "[1]", "{\"a\":1}"] {
                    push(v.into(), &bad);
                }
                match rule {
                    Rule::Int(lo, hi) => {
                        for v in [lo, hi] {
                            push(v.to_string(), "ok");
                        }
                        for v in [lo - 1, hi + 1] {
                            let fine = name == "delta" && v != 0 && v.abs() <= MAX_QTY;
                            push(v.to_string(), if fine { "ok" } else { &bad });
                        }
                        let mid = if name == "delta" { 1 } else { lo.max(1) };
                        for v in [format!("{mid}.0"), format!("{mid}e0"), format!("{mid}E+0"), format!("\"{mid}\"")] {
                            push(v, &bad);
                        }
                        for v in ["true", "false", "0.5", "99999999999999999999999999", "-99999999999999999999", "1e3"]
                        {
                            push(v.into(), &bad);
                        }
                        if name == "delta" {
                            push("0".into(), &bad);
                            push("-0".into(), &bad);
                        }
                    }
                    Rule::Time => {
                        for v in [
                            "0",
                            "-0",
                            "253402300799999",
                            "\"1970-01-01T00:00:00Z\"",
                            "\"9999-12-31t23:59:59.999999z\"",
                        ] {
                            push(v.into(), "ok");
                        }
                        for v in [
                            "-1",
                            "253402300800000",
                            "1.0",
                            "1e3",
                            "\"1000\"",
                            "true",
                            "\"yesterday\"",
                            "\"1969-12-31T23:59:59.999Z\"",
                            "\"2024-02-30T00:00:00Z\"",
                            "99999999999999999999999",
                        ] {
                            push(v.into(), &bad);
                        }
                    }
                    Rule::Str(lo, hi) => {
                        push(quoted(lo), "ok");
                        push(quoted(hi), "ok");
                        push(quoted(hi + 1), &bad);
                        push("\"\"".into(), &bad);
                        for v in ["1", "true", "false"] {
                            push(v.into(), &bad);
                        }
                    }
                    Rule::AnyStr => {
                        for v in ["\"\"".to_string(), quoted(10_000)] {
                            push(v, "ok");
                        }
                        for v in ["1", "true"] {
                            push(v.into(), &bad);
                        }
                    }
                    Rule::Status => {
                        for v in ["\"open\"", "\"closed\"", "\"cancelled\"", "\"\\u006fpen\""] {
                            push(v.into(), "ok");
                        }
                        for v in ["\"OPEN\"", "\"canceled\"", "\"\"", "1", "true"] {
                            push(v.into(), &bad);
                        }
                    }
                    Rule::Bool => {
                        push("false".into(), "ok");
                        for v in ["0", "\"true\"", "\"false\"", "1"] {
                            push(v.into(), &bad);
                        }
                    }
                }
                let mut all = vec![(None, absent.clone())];
                all.extend(cases.iter().map(|(v, w)| (Some(v.as_str()), w.clone())));
                for (value, want) in all {
                    let line = render(ty, &fields, name, value);
                    let got = match decode(line.as_bytes()) {
                        Ok(_) => "ok".to_string(),
                        Err(r) => r.to_string(),
                    };
                    assert_eq!(got, want, "{line}");
                }
            }
        }
    }

    #[test]
    fn type_is_checked_first() {
        for ty in ["", "\"\"", "\"SALE\"", "\"sale \"", "1", "null", "true", "[\"sale\"]", "{\"sale\":1}"] {
            let line =
                if ty.is_empty() { "{\"ts\":\"x\"}".to_string() } else { format!("{{\"type\":{ty},\"ts\":\"x\"}}") };
            assert_eq!(reason(&line), "unknown_type", "{line}");
        }
        assert_eq!(reason(r#"{}"#), "unknown_type");
        assert_eq!(
            reason(r#"{"type":"s\u0061le","ts":1,"sku":"S","loc":"L","qty":1}"#),
            "accepted Message { ts: 1, sku: \"S\", loc: \"L\", body: Sale { qty: 1 } }"
        );
    }

    #[test]
    fn fields_are_checked_in_spec_order() {
        let cases = [
            (r#"{"type":"sale","ts":"x","qty":0}"#, "invalid_field:ts"),
            (r#"{"type":"sale","ts":1,"qty":0,"loc":""}"#, "missing_field:sku"),
            (r#"{"type":"sale","ts":1,"qty":0,"sku":"S","loc":""}"#, "invalid_field:loc"),
            (r#"{"qty":"a","loc":"L","sku":"S","ts":1,"type":"sale"}"#, "invalid_field:qty"),
            (r#"{"type":"po","ts":1,"qty":-1,"sku":""}"#, "missing_field:po_id"),
            (r#"{"type":"po","ts":1,"po_id":"P","sku":"","qty":-1}"#, "invalid_field:sku"),
            (
                r#"{"type":"po","ts":1,"po_id":"P","sku":"S","loc":"L","qty":1,"status":"x","eta":"x"}"#,
                "invalid_field:status",
            ),
            (r#"{"type":"po","ts":1,"po_id":"P","sku":"S","loc":"L","qty":1,"eta":"x"}"#, "invalid_field:eta"),
            (r#"{"type":"reserve","ts":1,"sku":"S","loc":"L","qty":0}"#, "missing_field:res_id"),
            (r#"{"type":"reserve","ts":1,"sku":"S","loc":"L","res_id":"R","expires_at":"x"}"#, "missing_field:qty"),
            (r#"{"type":"fulfill","ts":1,"sku":"S","loc":"L","res_id":"","qty":0}"#, "invalid_field:res_id"),
            (r#"{"type":"receipt","ts":1,"sku":"S","loc":"L","po_id":""}"#, "missing_field:qty"),
            (r#"{"type":"receipt","ts":1,"sku":"S","loc":"L","qty":1,"po_id":""}"#, "invalid_field:po_id"),
            (r#"{"type":"adjust","ts":1,"sku":"S","loc":"L","delta":1,"reason":1}"#, "invalid_field:reason"),
            (r#"{"type":"sale","ts":1,"sku":{"sku":"S"},"loc":"L","qty":1}"#, "invalid_field:sku"),
        ];
        for (line, want) in cases {
            assert_eq!(reason(line), want, "{line}");
        }
    }

    #[test]
    fn policy_checks_deleted_before_the_numbers() {
        let base = r#""type":"policy","ts":1,"sku":"S","loc":"L""#;
        let cases = [
            (r#""deleted":true,"reorder_point":"x","order_up_to":-5,"pack_size":0,"source":"","moq":1.5"#, "deleted"),
            (r#""deleted":"x","reorder_point":"x""#, "invalid_field:deleted"),
            (r#""deleted":1"#, "invalid_field:deleted"),
            (r#""deleted":false"#, "missing_field:reorder_point"),
            (r#""deleted":null,"reorder_point":1"#, "missing_field:order_up_to"),
            (r#""reorder_point":-1,"order_up_to":"x""#, "invalid_field:reorder_point"),
            (r#""reorder_point":1,"order_up_to":0"#, "invalid_field:order_up_to"),
            (r#""reorder_point":1,"order_up_to":1,"safety_stock":-1,"pack_size":0"#, "invalid_field:safety_stock"),
            (r#""reorder_point":1,"order_up_to":1,"pack_size":0,"moq":-1"#, "invalid_field:pack_size"),
            (r#""reorder_point":1,"order_up_to":1,"moq":-1,"source":"""#, "invalid_field:moq"),
            (r#""reorder_point":1,"order_up_to":1,"source":"""#, "invalid_field:source"),
            (r#""reorder_point":1,"order_up_to":1,"source":null,"pack_size":null"#, "ok"),
            (r#""sku":"S2","deleted":true"#, "invalid_json"),
        ];
        for (rest, want) in cases {
            let line = format!("{{{base},{rest}}}");
            let got = match decode(line.as_bytes()) {
                Ok(Message { body: Body::Policy(None), .. }) => "deleted".to_string(),
                Ok(_) => "ok".to_string(),
                Err(r) => r.to_string(),
            };
            assert_eq!(got, want, "{line}");
        }
        assert_eq!(reason(r#"{"type":"policy","ts":1,"sku":"","deleted":"x"}"#), "invalid_field:sku");
    }

    const SALE: &str = r#""type":"sale","ts":1,"sku":"S","loc":"L","qty":1"#;

    #[test]
    fn strict_json() {
        let accepted = [
            format!("{{{SALE}}}"),
            format!("{{{SALE},\"x\":{{\"a\":1,\"b\":{{\"a\":2}}}},\"y\":[{{\"a\":1}},{{\"a\":1}}]}}"),
            format!("{{{SALE},\"x\":[1e999999,-0.0e-0,123456789012345678901234567890,0,-0,1E+2,true,false,null,\"\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"]}}"),
            format!("{{{SALE},\"x\":\"\u{7f}é\u{1F600}\u{2028}\"}}"),
            format!("{{{SALE},\"\":1,\"a\":{{\"\":2}},\"\\u0000\":3}}"),
            format!("{{{SALE},\"x\":{{\"qty\":\"nested names are not top-level\",\"type\":1}}}}"),
            format!(" \t\r\n{{{SALE}}} \t\r\n"),
        ];
        for line in &accepted {
            assert!(decode(line.as_bytes()).is_ok(), "{line}");
        }
        let rejected = [
            String::new(),
            " ".into(),
            "{".into(),
            "}".into(),
            "null".into(),
            "[]".into(),
            "\"sale\"".into(),
            "1".into(),
            format!("\u{feff}{{{SALE}}}"),
            format!("{{{SALE}}}\u{feff}"),
            format!("{{{SALE}}}x"),
            format!("{{{SALE}}}{{}}"),
            format!("{{{SALE}}},"),
            format!("{{{SALE},}}"),
            format!("{{,{SALE}}}"),
            format!("{{{SALE},\"x\":[1,]}}"),
            format!("{{{SALE},\"x\":[,1]}}"),
            format!("{{{SALE},\"x\":[1 2]}}"),
            format!("{{{SALE},\"x\":{{\"a\" 1}}}}"),
            format!("{{{SALE},\"x\":{{\"a\":}}}}"),
            format!("{{{SALE},\"x\":{{a:1}}}}"),
            format!("{{{SALE},\"x\":'a'}}"),
            format!("{{{SALE},\"x\":NaN}}"),
            format!("{{{SALE},\"x\":-Infinity}}"),
            format!("{{{SALE},\"x\":Infinity}}"),
            format!("{{{SALE},\"x\":nul}}"),
            format!("{{{SALE},\"x\":True}}"),
            format!("{{{SALE},\"x\":truex}}"),
            format!("{{{SALE}}} // comment"),
            format!("{{{SALE},/* c */\"x\":1}}"),
            format!("{{{SALE},\"x\":01}}"),
            format!("{{{SALE},\"x\":-01}}"),
            format!("{{{SALE},\"x\":00}}"),
            format!("{{{SALE},\"x\":+1}}"),
            format!("{{{SALE},\"x\":.5}}"),
            format!("{{{SALE},\"x\":5.}}"),
            format!("{{{SALE},\"x\":1e}}"),
            format!("{{{SALE},\"x\":1e+}}"),
            format!("{{{SALE},\"x\":-}}"),
            format!("{{{SALE},\"x\":0x10}}"),
            r#"{"type":"sale","ts":1,"sku":"S","loc":"L","qty":01}"#.into(),
            format!("{{{SALE},\"x\":\"a\u{1}b\"}}"),
            format!("{{{SALE},\"x\":\"a\u{1f}b\"}}"),
            format!("{{{SALE},\"x\":\"a\tb\"}}"),
            format!("{{{SALE},\"x\":\"a\nb\"}}"),
            format!("{{{SALE},\"x\":\"a\u{0}b\"}}"),
            format!("{{{SALE},\"x\":\"\\a\"}}"),
            format!("{{{SALE},\"x\":\"\\x41\"}}"),
            format!("{{{SALE},\"x\":\"\\u12\"}}"),
            format!("{{{SALE},\"x\":\"\\u12G4\"}}"),
            format!("{{{SALE},\"x\":\"\\U0041\"}}"),
            format!("{{{SALE},\"x\":\"abc}}"),
            format!("{{{SALE},\"x\":\"\\"),
            format!("{{{SALE},\"x\":\"\\ud800\"}}"),
            format!("{{{SALE},\"x\":\"\\udbff\\u0041\"}}"),
            format!("{{{SALE},\"x\":\"\\ud800\\ud800\"}}"),
            format!("{{{SALE},\"x\":\"\\udc00\"}}"),
            format!("{{{SALE},\"x\":\"\\ude00\\ud83d\"}}"),
            format!("{{{SALE},\"x\":\"\\ud83dx\"}}"),
            format!("{{{SALE},\"\\ud800\":1}}"),
            format!("{{{SALE},\"sku\":\"S\"}}"),
            format!("{{{SALE},\"s\\u006bu\":\"S\"}}"),
            format!("{{{SALE},\"x\":1,\"x\":1}}"),
            format!("{{{SALE},\"x\":1,\"\\u0078\":1}}"),
            format!("{{{SALE},\"\\u00e9\":1,\"é\":1}}"),
            format!("{{{SALE},\"x\":{{\"a\":1,\"a\":2}}}}"),
            format!("{{{SALE},\"x\":{{\"a\":1,\"\\u0061\":2}}}}"),
            format!("{{{SALE},\"x\":[[{{\"b\":{{\"a\":1,\"a\":2}}}}]]}}"),
            format!("{{{SALE},\"x\":[{{\"a\":[],\"a\":{{}}}}]}}"),
            format!("{{\"type\":\"sale\",\"type\":\"sale\",{}}}", &SALE[14..]),
        ];
        for line in &rejected {
            assert_eq!(reason(line), "invalid_json", "{line:?}");
        }
        assert_eq!(decode(b"{\"type\":\"sale\",\"x\":\"\xc3\"}"), Err(Rejection::InvalidJson));
        assert_eq!(decode(b"{\"type\":\"sale\",\"x\":\"\xed\xa0\x80\"}"), Err(Rejection::InvalidJson));
    }

    #[test]
    fn duplicates_in_large_objects_are_found() {
        let mut members: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
        let line = |m: &[String]| format!("{{{SALE},\"x\":{{{}}}}}", m.join(","));
        assert!(decode(line(&members).as_bytes()).is_ok());
        members.push("\"k\\u0035\\u00350\":1".into()); // "k550", escaped
        assert_eq!(reason(&line(&members)), "invalid_json");
        let top: Vec<String> = (0..1000).map(|i| format!("\"k{i}\":{i}")).collect();
        let top_line = format!("{{{SALE},{}}}", top.join(","));
        assert!(decode(top_line.as_bytes()).is_ok());
        let top_dup = format!("{{{SALE},{},\"k999\":0}}", top.join(","));
        assert_eq!(reason(&top_dup), "invalid_json");
    }

    #[test]
    fn nesting_limit_is_128() {
        let nested = |containers: usize| {
            let inner = containers - 1; // the top-level object is the first
            let (open, close): (String, String) =
                (0..inner).map(|i| if i % 2 == 0 { ("[", "]") } else { ("{\"a\":", "}") }).unzip();
            let close: String = close.chars().rev().collect();
            format!("{{{SALE},\"x\":{open}{close}}}")
        };
        assert!(decode(nested(1).as_bytes()).is_err()); // "x": with nothing after is not JSON
        assert!(decode(nested(2).as_bytes()).is_ok());
        assert!(decode(nested(128).as_bytes()).is_ok());
        assert_eq!(reason(&nested(129)), "invalid_json");
        assert_eq!(reason(&nested(5000)), "invalid_json");
        let arrays = |n: usize| format!("{{{SALE},\"x\":{}{}}}", "[".repeat(n), "]".repeat(n));
        assert!(decode(arrays(127).as_bytes()).is_ok());
        assert_eq!(reason(&arrays(128)), "invalid_json");
    }

    #[test]
    fn huge_inputs_do_not_panic() {
        let ten_mb = 10 << 20;
        assert_eq!(decode("[".repeat(ten_mb).as_bytes()), Err(Rejection::InvalidJson));
        assert_eq!(decode(format!("{{\"x\":{}", "[".repeat(ten_mb)).as_bytes()), Err(Rejection::InvalidJson));
        assert_eq!(decode(format!("{{\"x\":{}", "{\"a\":".repeat(ten_mb / 5)).as_bytes()), Err(Rejection::InvalidJson));
        let big_string = format!("{{{SALE},\"x\":\"{}\"}}", "a".repeat(ten_mb));
        assert!(decode(big_string.as_bytes()).is_ok());
        let big_number = format!("{{{SALE},\"x\":{}}}", "9".repeat(ten_mb));
        assert!(decode(big_number.as_bytes()).is_ok());
        let big_qty =
            format!("{{\"type\":\"sale\",\"ts\":1,\"sku\":\"S\",\"loc\":\"L\",\"qty\":{}}}", "9".repeat(ten_mb));
        assert_eq!(reason(&big_qty), "invalid_field:qty");
        let big_fraction = format!(
            "{{\"type\":\"sale\",\"ts\":\"2024-01-01T00:00:00.{}Z\",\"sku\":\"S\",\"loc\":\"L\",\"qty\":1}}",
            "9".repeat(ten_mb)
        );
        assert_eq!(ok(&big_fraction).ts, 1_704_067_200_999);
        let members: Vec<String> = (0..ten_mb / 16).map(|i| format!("\"{i}\":0")).collect();
        let wide = format!("{{{SALE},\"x\":{{{}}}}}", members.join(","));
        assert!(decode(wide.as_bytes()).is_ok());
    }

    #[test]
    fn rfc3339_times() {
        let cases: &[(&str, Option<Millis>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01t00:00:00z", Some(0)),
            ("1970-01-01T00:00:00.001Z", Some(1)),
            ("1970-01-01T00:00:00.1Z", Some(100)),
            ("1970-01-01T00:00:00.12Z", Some(120)),
            ("1970-01-01T00:00:00.1239Z", Some(123)),
            ("1970-01-01T00:00:00.999999999Z", Some(999)),
            ("1970-01-01T00:00:06.123Z", Some(6123)),
            ("1970-01-01T01:00:00+01:00", Some(0)),
            ("1969-12-31T23:00:00-01:00", Some(0)),
            ("1969-12-31T23:59:59.999-00:01", Some(59_999)),
            ("1970-01-01T00:00:00-00:00", Some(0)),
            ("1970-01-01T00:00:00+00:00", Some(0)),
            ("2024-02-29T12:34:56Z", Some(1_709_210_096_000)),
            ("2000-02-29T00:00:00Z", Some(951_782_400_000)),
            ("2023-11-14T22:13:20Z", Some(1_700_000_000_000)),
            ("2023-11-14T23:43:20.5+01:30", Some(1_700_000_000_500)),
            ("2023-11-14T22:13:20-23:59", Some(1_700_000_000_000 + (23 * 60 + 59) * 60_000)),
            ("9999-12-31T23:59:59.999Z", Some(MAX_TIME)),
            ("9999-12-31T23:59:59.9999Z", Some(MAX_TIME)),
            ("9999-12-31T23:59:59+00:00", Some(MAX_TIME - 999)),
            ("0", Some(0)),
            ("253402300799999", Some(MAX_TIME)),
            ("0001700000000000", Some(1_700_000_000_000)),
            // Out of range, malformed or not a real date.
            ("253402300800000", None),
            ("99999999999999999999999", None),
            ("-1", None),
            ("+1", None),
            ("", None),
            ("1969-12-31T23:59:59.999Z", None),
            ("0000-01-01T00:00:00Z", None),
            ("9999-12-31T23:59:59.999-00:01", None),
            ("1970-01-01T00:30:00+01:00", None),
            ("2023-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2024-04-31T00:00:00Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-00-01T00:00:00Z", None),
            ("2024-01-00T00:00:00Z", None),
            ("2024-01-32T00:00:00Z", None),
            ("2024-01-01T24:00:00Z", None),
            ("2024-01-01T00:60:00Z", None),
            ("2024-01-01T00:00:60Z", None),
            ("2016-12-31T23:59:60Z", None),
            ("2024-01-01T00:00:00+24:00", None),
            ("2024-01-01T00:00:00+00:60", None),
            ("2024-01-01T00:00:00+0000", None),
            ("2024-01-01T00:00:00+00", None),
            ("2024-01-01T00:00:00", None),
            ("2024-01-01 00:00:00Z", None),
            ("2024-01-01T00:00Z", None),
            ("2024-01-01T00:00:00.Z", None),
            ("2024-01-01T00:00:00,5Z", None),
            ("2024-01-01T00:00:00ZZ", None),
            ("2024-01-01T00:00:00Z ", None),
            (" 2024-01-01T00:00:00Z", None),
            ("24-01-01T00:00:00Z", None),
            ("+2024-01-01T00:00:00Z", None),
            ("2024-1-01T00:00:00Z", None),
            ("2024-01-01T0:00:00Z", None),
            ("2024/01/01T00:00:00Z", None),
            ("2024-01-01T00:00:00UTC", None),
            ("２024-01-01T00:00:00Z", None),
        ];
        for &(text, want) in cases {
            assert_eq!(parse_time(text), want, "{text}");
            let in_json = decode(
                format!("{{\"type\":\"sale\",\"ts\":\"{text}\",\"sku\":\"S\",\"loc\":\"L\",\"qty\":1}}").as_bytes(),
            );
            // In JSON, a time is an RFC 3339 string or a number, never a digit string.
            let json_want = if text.bytes().all(|c| c.is_ascii_digit()) { None } else { want };
            assert_eq!(in_json.map(|m| m.ts).ok(), json_want, "{text} in JSON");
        }
        let escaped = r#"{"type":"sale","ts":"1970-01-01\u005400:00:01\u005a","sku":"S","loc":"L","qty":1}"#;
        assert_eq!(ok(escaped).ts, 1000);
    }

    #[test]
    fn unescaped_strings_are_stored() {
        let m =
            ok(r#"{"type":"reserve","ts":1,"sku":"a\"b\\c\/d\u00e9\ud83d\ude00","loc":"\n\t","res_id":"é","qty":1}"#);
        assert_eq!(m.sku, "a\"b\\c/dé😀");
        assert_eq!(m.loc, "\n\t");
        assert_eq!(m.body, Body::Reserve { res_id: "é".into(), qty: 1, expires_at: None });
        // Limits are in bytes of the unescaped text: 32 two-byte chars fit 64, 33 do not.
        let sku = |n: usize| {
            format!("{{\"type\":\"sale\",\"ts\":1,\"sku\":\"{}\",\"loc\":\"L\",\"qty\":1}}", "\\u00e9".repeat(n))
        };
        assert!(decode(sku(32).as_bytes()).is_ok());
        assert_eq!(reason(&sku(33)), "invalid_field:sku");
    }

    // ---- property tests ----

    /// A deterministic source of the serializer's choices, so proptest only has to vary a seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        fn one_in(&mut self, n: u64) -> bool {
            self.below(n) == 0
        }
    }

    fn ws(r: &mut Rng) -> &'static str {
        if r.one_in(3) {
            [" ", "\t", "\n", "\r", "  ", " \r\n\t"][r.below(6) as usize]
        } else {
            ""
        }
    }

    fn json_str(r: &mut Rng, s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' if r.one_in(2) => out.push_str("\\n"),
                '\t' if r.one_in(2) => out.push_str("\\t"),
                c if (c as u32) < 0x20 || r.one_in(8) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        out.push_str(&if r.one_in(2) { format!("\\u{u:04x}") } else { format!("\\u{u:04X}") });
                    }
                }
                '/' if r.one_in(2) => out.push_str("\\/"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn json_int(r: &mut Rng, v: i64) -> String {
        if v == 0 && r.one_in(2) {
            "-0".into()
        } else {
            v.to_string()
        }
    }

    fn json_time(r: &mut Rng, t: Millis) -> String {
        if r.one_in(2) {
            return json_int(r, t as i64);
        }
        let mut offset = if r.one_in(3) { 0 } else { r.below(2 * 1440 - 1) as i64 - 1439 };
        let mut local = t as i64 + offset * 60_000;
        if local < 0 || civil_from_days(local.div_euclid(86_400_000)).0 > 9999 {
            offset = 0;
            local = t as i64;
        }
        let (y, mo, d) = civil_from_days(local.div_euclid(86_400_000));
        let ms = local.rem_euclid(86_400_000);
        let mut s = format!(
            "{y:04}-{mo:02}-{d:02}{}{:02}:{:02}:{:02}",
            if r.one_in(2) { 'T' } else { 't' },
            ms / 3_600_000,
            ms / 60_000 % 60,
            ms / 1000 % 60
        );
        let frac = ms % 1000;
        if frac != 0 || r.one_in(2) {
            let mut digits = format!("{frac:03}");
            if r.one_in(2) {
                while digits.len() > 1 && digits.ends_with('0') {
                    digits.pop();
                }
            } else {
                for _ in 0..r.below(4) {
                    digits.push(char::from(b'0' + r.below(10) as u8));
                }
            }
            s.push('.');
            s.push_str(&digits);
        }
        if offset == 0 && !r.one_in(3) {
            s.push(if r.one_in(2) { 'Z' } else { 'z' });
        } else {
            let sign = if offset < 0 || (offset == 0 && r.one_in(2)) { '-' } else { '+' };
            s.push_str(&format!("{sign}{:02}:{:02}", offset.abs() / 60, offset.abs() % 60));
        }
        format!("\"{s}\"")
    }

    fn random_value(r: &mut Rng, depth: u32) -> String {
        match r.below(if depth > 3 { 6 } else { 8 }) {
            0 => "null".into(),
            1 => "true".into(),
            2 => "false".into(),
            3 => ["0", "-0", "1.5e-7", "-12E+3", "123456789012345678901234567890", "0.0"][r.below(6) as usize].into(),
            4 => {
                let s = ["", "x", "é😀", "\"\\/", "type"][r.below(5) as usize];
                json_str(r, s)
            }
            5 => format!("\"{}\"", r.next()),
            6 => {
                let items: Vec<String> = (0..r.below(4)).map(|_| random_value(r, depth + 1)).collect();
                format!("[{}{}]", items.join(&format!("{},{}", ws(r), ws(r))), ws(r))
            }
            _ => {
                let items: Vec<String> = (0..r.below(4))
                    .map(|i| format!("{}:{}", json_str(r, &format!("k{i}")), random_value(r, depth + 1)))
                    .collect();
                format!("{{{}}}", items.join(","))
            }
        }
    }

    /// The members of a valid message in SPEC's table order, values with random escapes and
    /// spellings, optional members sometimes explicit (default or null) or left out.
    fn members_of(m: &Message, r: &mut Rng) -> Vec<(&'static str, String)> {
        let mut fields: Vec<(&str, String)> = Vec::new();
        let ty = match &m.body {
            Body::Sale { .. } => "sale",
            Body::Return { .. } => "return",
            Body::Receipt { .. } => "receipt",
            Body::Adjust { .. } => "adjust",
            Body::Count { .. } => "count",
            Body::Reserve { .. } => "reserve",
            Body::Release { .. } => "release",
            Body::Fulfill { .. } => "fulfill",
            Body::Po { .. } => "po",
            Body::Policy(_) => "policy",
        };
        fields.push(("type", json_str(r, ty)));
        fields.push(("ts", json_time(r, m.ts)));
        fields.push(("sku", json_str(r, &m.sku)));
        fields.push(("loc", json_str(r, &m.loc)));
        let opt = |r: &mut Rng, fields: &mut Vec<(&str, String)>, name: &'static str, v: Option<String>| match v {
            Some(v) => fields.push((name, v)),
            None if r.one_in(2) => fields.push((name, "null".into())),
            None => {}
        };
        let dflt = |r: &mut Rng, fields: &mut Vec<(&str, String)>, name: &'static str, v: String, is_default: bool| {
            if !is_default || r.one_in(2) {
                fields.push((name, v));
            } else if r.one_in(2) {
                fields.push((name, "null".into()));
            }
        };
        match &m.body {
            Body::Sale { qty } | Body::Return { qty } | Body::Count { qty } => fields.push(("qty", json_int(r, *qty))),
            Body::Receipt { qty, po_id } => {
                fields.push(("qty", json_int(r, *qty)));
                let v = po_id.as_ref().map(|p| json_str(r, p));
                opt(r, &mut fields, "po_id", v);
            }
            Body::Adjust { delta, reason } => {
                fields.push(("delta", json_int(r, *delta)));
                let v = reason.as_ref().map(|p| json_str(r, p));
                opt(r, &mut fields, "reason", v);
            }
            Body::Reserve { res_id, qty, expires_at } => {
                fields.push(("res_id", json_str(r, res_id)));
                fields.push(("qty", json_int(r, *qty)));
                let v = expires_at.map(|t| json_time(r, t));
                opt(r, &mut fields, "expires_at", v);
            }
            Body::Release { res_id } => fields.push(("res_id", json_str(r, res_id))),
            Body::Fulfill { res_id, qty } => {
                fields.push(("res_id", json_str(r, res_id)));
                fields.push(("qty", json_int(r, *qty)));
            }
            Body::Po { po_id, qty, status, eta } => {
                fields.push(("po_id", json_str(r, po_id)));
                fields.push(("qty", json_int(r, *qty)));
                let s = match status {
                    PoStatus::Open => "open",
                    PoStatus::Closed => "closed",
                    PoStatus::Cancelled => "cancelled",
                };
                let s = json_str(r, s);
                dflt(r, &mut fields, "status", s, *status == PoStatus::Open);
                let v = eta.map(|t| json_time(r, t));
                opt(r, &mut fields, "eta", v);
            }
            Body::Policy(None) => fields.push(("deleted", "true".into())),
            Body::Policy(Some(p)) => {
                dflt(r, &mut fields, "deleted", "false".into(), true);
                fields.push(("reorder_point", json_int(r, p.reorder_point)));
                fields.push(("order_up_to", json_int(r, p.order_up_to)));
                let v = json_int(r, p.safety_stock);
                dflt(r, &mut fields, "safety_stock", v, p.safety_stock == 0);
                let v = json_int(r, p.pack_size);
                dflt(r, &mut fields, "pack_size", v, p.pack_size == 1);
                let v = json_int(r, p.moq);
                dflt(r, &mut fields, "moq", v, p.moq == 0);
                let v = p.source.as_ref().map(|s| json_str(r, s));
                opt(r, &mut fields, "source", v);
            }
        }
        fields
    }

    /// Serializes a valid message with random member order, whitespace, escapes, explicit
    /// defaults or nulls, and unknown members (including known names the type does not read).
    fn serialize(m: &Message, seed: u64) -> String {
        let r = &mut Rng(seed | 1);
        let fields = members_of(m, r);
        let mut members: Vec<(String, String)> = fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        let reads: &[&str] = match &m.body {
            Body::Sale { .. } | Body::Return { .. } | Body::Count { .. } => &["qty"],
            Body::Receipt { .. } => &["qty", "po_id"],
            Body::Adjust { .. } => &["delta", "reason"],
            Body::Reserve { .. } => &["res_id", "qty", "expires_at"],
            Body::Release { .. } => &["res_id"],
            Body::Fulfill { .. } => &["res_id", "qty"],
            Body::Po { .. } => &["po_id", "qty", "status", "eta"],
            Body::Policy(None) => &["deleted"],
            Body::Policy(Some(_)) => &NAMES[REORDER_POINT..],
        };
        for name in &NAMES[LOC + 1..] {
            if !reads.contains(name) && r.one_in(4) {
                let v = random_value(r, 1);
                members.push((name.to_string(), v));
            }
        }
        for i in 0..r.below(4) {
            let v = random_value(r, 1);
            members.push((format!("extra_{i}"), v));
        }
        for (n, _) in &mut members {
            *n = json_str(r, n);
        }
        for i in (1..members.len()).rev() {
            members.swap(i, r.below(i as u64 + 1) as usize);
        }
        let body: Vec<String> =
            members.into_iter().map(|(n, v)| format!("{}{n}{}:{}{v}{}", ws(r), ws(r), ws(r), ws(r))).collect();
        format!("{}{{{}}}{}", ws(r), body.join(","), ws(r))
    }

    /// Serializes a valid message as most producers do: the type's members in SPEC's table order
    /// (`Kind::members`), compact or with a space after each `,` and `:`; values as in `serialize`.
    fn canonical(m: &Message, seed: u64) -> String {
        let r = &mut Rng(seed | 1);
        let mut fields = members_of(m, r);
        let ty = match &m.body {
            Body::Sale { .. } => Kind::Sale,
            Body::Return { .. } => Kind::Return,
            Body::Receipt { .. } => Kind::Receipt,
            Body::Adjust { .. } => Kind::Adjust,
            Body::Count { .. } => Kind::Count,
            Body::Reserve { .. } => Kind::Reserve,
            Body::Release { .. } => Kind::Release,
            Body::Fulfill { .. } => Kind::Fulfill,
            Body::Po { .. } => Kind::Po,
            Body::Policy(_) => Kind::Policy,
        };
        let order = ty.members();
        fields.sort_by_key(|(name, _)| order.iter().position(|&k| NAMES[k] == *name));
        let (comma, colon) = if r.one_in(4) { (", ", ": ") } else { (",", ":") };
        let members: Vec<String> = fields.iter().map(|(n, v)| format!("\"{n}\"{colon}{v}")).collect();
        format!("{{{}}}", members.join(comma))
    }

    /// Checks the fast path against the strict parser on one line: where the fast path decides,
    /// the strict parser accepts the line too and fills the same slots, with the same type; and
    /// `decode` gives what the strict parser alone gives, whichever path decided. Returns
    /// whether the fast path decided.
    fn paths_agree(raw: &[u8]) -> bool {
        let shown = String::from_utf8_lossy(raw);
        let mut fast_slots = [Val::Absent; SLOTS];
        let fast = fast::scan(raw, &mut fast_slots).filter(|_| std::str::from_utf8(raw).is_ok());
        if let (Some(fast::Scanned { kind, ascii }), Ok(text)) = (&fast, std::str::from_utf8(raw)) {
            // The scan's ASCII proof must never be true wrongly.
            assert_eq!(*ascii, raw.is_ascii(), "{shown}");
            let kind = *kind;
            let mut slots = [Val::Absent; SLOTS];
            let mut parser = Parser { b: raw, i: 0, names: Vec::new(), arena: Vec::new() };
            assert!(parser.top(&mut slots).is_ok(), "fast path took a line the strict parser refuses: {shown}");
            assert_eq!(fast_slots, slots, "{shown}");
            assert_eq!(Fields { text, slots: &slots }.kind().ok(), Some(kind), "{shown}");
        }
        assert_eq!(decode(raw), decode_strict(raw), "{shown}");
        fast.is_some()
    }

    #[test]
    fn fast_path_and_strict_parser_agree_on_edge_cases() {
        let sale = |qty: &str| format!(r#"{{"type":"sale","ts":1700000000000,"sku":"K1","loc":"S1","qty":{qty}}}"#);
        let mut fast: Vec<String> = [
            "1",
            "0",
            "-0",
            "7",
            "1000000000",
            "1000000001",
            "-1000000000",
            "12345678",
            "123456789012345",
            "1234567890123456",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "99999999999999999999",
            "2.5",
            "1e3",
            "-1E+2",
            "0.0",
            "\"2\"",
            "true",
            "false",
            "null",
            "1 ",
            " 1",
        ]
        .iter()
        .map(|qty| sale(qty))
        .collect();
        fast.extend(
            [
                r#"{"type":"sale","ts":253402300799999,"sku":"K","loc":"S","qty":1}"#,
                r#"{"type":"sale","ts":253402300800000,"sku":"K","loc":"S","qty":1}"#,
                r#"{"type":"sale","ts":"2023-11-14T22:13:20.5+01:30","sku":"K","loc":"S","qty":1}"#,
                r#"{"type":"sale","ts":"yesterday","sku":"K","loc":"S","qty":1}"#,
                r#"{"type": "sale", "ts": 1, "sku": "K", "loc": "S", "qty": 1}"#,
                " {\"type\":\"sale\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}\t\r\n ",
                "{\"type\":\"sale\",\"ts\":1,\"sku\":\"é😀\u{7f}/\",\"loc\":\"S\",\"qty\":1}",
                r#"{"type":"sale","ts":1,"sku":"K","loc":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","qty":1}"#,
                r#"{"type":"sale","ts":1,"sku":"","loc":"S","qty":1}"#,
                r#"{"type":"sale","ts":1,"loc":"S","qty":1}"#,
                r#"{"type":"sale","ts":1,"sku":"K","loc":"S"}"#,
                r#"{"type":"sale"}"#,
                r#"{"type":"receipt","ts":1,"sku":"K","loc":"S","qty":1,"po_id":null}"#,
                r#"{"type":"adjust","ts":1,"sku":"K","loc":"S","delta":-7,"reason":"shrink"}"#,
                r#"{"type":"adjust","ts":1,"sku":"K","loc":"S","delta":0}"#,
                r#"{"type":"reserve","ts":1,"sku":"K","loc":"S","res_id":"R","qty":2,"expires_at":"1970-01-01T00:00:02Z"}"#,
                r#"{"type":"release","ts":1,"sku":"K","loc":"S","res_id":"R"}"#,
                r#"{"type":"fulfill","ts":1,"sku":"K","loc":"S","res_id":"R","qty":4}"#,
                r#"{"type":"po","ts":1,"po_id":"P","sku":"K","loc":"S","qty":5,"status":"cancelled","eta":5000}"#,
                r#"{"type":"po","ts":1,"po_id":"P","sku":"K","loc":"S","qty":5,"eta":5000}"#,
                r#"{"type":"po","ts":1,"po_id":"P","sku":"K","loc":"S","qty":5,"status":"OPEN"}"#,
                r#"{"type":"policy","ts":1,"sku":"K","loc":"S","reorder_point":5,"order_up_to":9,"safety_stock":2,"pack_size":6,"moq":12,"source":"vendor:V","deleted":false}"#,
                r#"{"type":"policy","ts":1,"sku":"K","loc":"S","deleted":true}"#,
                r#"{"type":"policy","ts":1,"sku":"K","loc":"S","deleted":"x"}"#,
                r#"{"type":"policy","ts":1,"sku":"K","loc":"S","reorder_point":9,"order_up_to":3}"#,
                r#"{"type":"count","ts":1,"sku":"K","loc":"S","qty":0}"#,
                // Non-ASCII text in strings, where the line's last word holds it or not.
                r#"{"type":"adjust","ts":1,"sku":"K","loc":"S","delta":-7,"reason":"café ☕"}"#,
                r#"{"type":"policy","ts":1,"sku":"K","loc":"S","reorder_point":5,"order_up_to":9,"source":"Zürich"}"#,
                r#"{"type":"sale","ts":"2023-11-14T22:13:20Zé","sku":"K","loc":"S","qty":1}"#,
                // Whitespace wherever JSON allows it, outside a name and its colon.
                r#"{"type":"sale" ,"ts":1,"sku":"K","loc":"S","qty":1}"#,
                "{\"type\":\"sale\",\n\t\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1 }",
                "{\r\n\"type\":\t\"count\" , \"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}",
                // Every kind's name at the length the two-word `type` read tells apart.
                r#"{"type":"po"}"#,
                r#"{"type":"receipt"}"#,
                r#"{"type":"fulfill","ts":1}"#,
            ]
            .map(String::from),
        );
        // Lines that break JSON, or whose layout the fast path does not read: members in another
        // order, unknown or repeated ones, escapes, nested values, whitespace before a colon,
        // invalid UTF-8 inside a string, an unknown type.
        let mut strict: Vec<Vec<u8>> = [
            r#"{"ts":1,"type":"sale","sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"loc":"S","sku":"K","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1,"note":"x"}"#,
            r#"{"type":"sale","ts":1,"sku":"K","sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1,"qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K\u0031","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K\"","loc":"S","qty":1}"#,
            r#"{"type":"s\u0061le","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"s\u006bu":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":["K"],"loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":{}}"#,
            r#"{"type" :"sale","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"transfer","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":1,"ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"ts":1}"#,
            r#"{}"#,
            r#"[]"#,
            r#"{"type":"sale","ts":01,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":00}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":-01}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":-}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1.}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1e}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":+1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1,}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1}x"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1}{}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":nul}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":truex}"#,
            "{\"type\":\"sale\",\"ts\":1,\"sku\":\"K\tK\",\"loc\":\"S\",\"qty\":1}",
            "\u{feff}{\"type\":\"sale\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}",
            r#"{"type":"sälé","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sal","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"salesale","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"Sale","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"p","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale,"ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale""ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"typé":"sale","ts":1,"sku":"K","loc":"S","qty":1}"#,
            r#"{"type":"sale","ts":1,"sku":"K","loc":"S","qty":1,"é":1}"#,
        ]
        .iter()
        .map(|l| l.as_bytes().to_vec())
        .collect();
        strict.extend([
            b"{\"type\":\"sale\",\"ts\":1,\"sku\":\"K\xc3\",\"loc\":\"S\",\"qty\":1}".to_vec(),
            b"{\"type\":\"sale\",\"ts\":1,\"sku\":\"\xed\xa0\x80\",\"loc\":\"S\",\"qty\":1}".to_vec(),
            b"{\"type\":\"sale\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}\xff".to_vec(),
            b"{\"type\":\"sale\",\"ts\":\"2023-11-14T22:13:20Z\xc3\",\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}".to_vec(),
            b"{\"type\":\"adjust\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"delta\":1,\"reason\":\"\x80\"}".to_vec(),
            b"{\"type\":\"sa\xffe\",\"ts\":1,\"sku\":\"K\",\"loc\":\"S\",\"qty\":1}".to_vec(),
        ]);
        for line in &fast {
            assert!(paths_agree(line.as_bytes()), "the fast path should decide {line}");
        }
        for line in &strict {
            assert!(!paths_agree(line), "the strict parser should decide {}", String::from_utf8_lossy(line));
        }
        // Every cut of a valid line (all invalid but the whole) is decided alike by both paths.
        for line in &fast {
            let line = line.as_bytes();
            for n in 0..line.len() {
                let whole = line[n..].iter().all(u8::is_ascii_whitespace);
                assert!(!paths_agree(&line[..n]) || whole, "{}", String::from_utf8_lossy(&line[..n]));
            }
        }
    }

    /// `line` with each edit (position, operation, byte) applied: a byte replaced, removed or
    /// inserted, or the line cut there.
    fn mutated(line: String, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut raw = line.into_bytes();
        for &(at, op, byte) in edits {
            let at = at % (raw.len() + 1);
            match op {
                0 if at < raw.len() => raw[at] = byte,
                1 if at < raw.len() => {
                    raw.remove(at);
                }
                2 => raw.insert(at, byte),
                _ => raw.truncate(at),
            }
        }
        raw
    }

    fn arb_string(max: usize) -> impl Strategy<Value = Name> {
        prop_oneof![
            "[A-Za-z0-9_:.-]{1,12}",
            proptest::collection::vec(any::<char>(), 1..16).prop_map(String::from_iter),
            Just("x".repeat(max)),
            Just("é".repeat(max / 2)),
        ]
        .prop_filter("byte length", move |s| !s.is_empty() && s.len() <= max)
        .prop_map(Name::from)
    }

    fn arb_time() -> impl Strategy<Value = Millis> {
        prop_oneof![0..=MAX_TIME, Just(0), Just(MAX_TIME), 1_600_000_000_000..1_800_000_000_000u64]
    }

    fn arb_qty(lo: i64) -> impl Strategy<Value = i64> {
        prop_oneof![lo..=MAX_QTY, Just(lo), Just(MAX_QTY), lo..100]
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            arb_qty(1).prop_map(|qty| Body::Sale { qty }),
            arb_qty(1).prop_map(|qty| Body::Return { qty }),
            (arb_qty(1), proptest::option::of(arb_string(128))).prop_map(|(qty, po_id)| Body::Receipt { qty, po_id }),
            (
                prop_oneof![-MAX_QTY..=MAX_QTY, Just(-MAX_QTY), Just(-1), Just(1)],
                proptest::option::of(prop_oneof![Just(String::new()), arb_string(200).prop_map(Name::into_string)])
            )
                .prop_filter("non-zero", |(d, _)| *d != 0)
                .prop_map(|(delta, reason)| Body::Adjust { delta, reason }),
            arb_qty(0).prop_map(|qty| Body::Count { qty }),
            (arb_string(128), arb_qty(1), proptest::option::of(arb_time()))
                .prop_map(|(res_id, qty, expires_at)| Body::Reserve { res_id, qty, expires_at }),
            arb_string(128).prop_map(|res_id| Body::Release { res_id }),
            (arb_string(128), arb_qty(1)).prop_map(|(res_id, qty)| Body::Fulfill { res_id, qty }),
            (
                arb_string(128),
                arb_qty(0),
                prop_oneof![Just(PoStatus::Open), Just(PoStatus::Closed), Just(PoStatus::Cancelled)],
                proptest::option::of(arb_time())
            )
                .prop_map(|(po_id, qty, status, eta)| Body::Po { po_id, qty, status, eta }),
            Just(Body::Policy(None)),
            (arb_qty(0), arb_qty(0), arb_qty(0), arb_qty(1), arb_qty(0), proptest::option::of(arb_string(64)))
                .prop_map(|(a, b, safety_stock, pack_size, moq, source)| Body::Policy(Some(Policy {
                    safety_stock,
                    reorder_point: a.min(b),
                    order_up_to: a.max(b),
                    pack_size,
                    moq,
                    source,
                }))),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (arb_time(), arb_string(64), arb_string(64), arb_body()).prop_map(|(ts, sku, loc, body)| Message {
            ts,
            sku,
            loc,
            body,
        })
    }

    /// What every accepted message must satisfy, whatever bytes it came from.
    fn check_invariants(m: &Message) {
        assert!(m.ts <= MAX_TIME);
        assert!((1..=64).contains(&m.sku.len()) && (1..=64).contains(&m.loc.len()));
        let q = |v: i64, lo: i64| assert!((lo..=MAX_QTY).contains(&v));
        let id = |s: &str| assert!((1..=128).contains(&s.len()));
        match &m.body {
            Body::Sale { qty } | Body::Return { qty } => q(*qty, 1),
            Body::Receipt { qty, po_id } => {
                q(*qty, 1);
                po_id.iter().for_each(|p| id(p));
            }
            Body::Adjust { delta, .. } => assert!(*delta != 0 && delta.abs() <= MAX_QTY),
            Body::Count { qty } => q(*qty, 0),
            Body::Reserve { res_id, qty, expires_at } => {
                id(res_id);
                q(*qty, 1);
                assert!(expires_at.is_none_or(|t| t <= MAX_TIME));
            }
            Body::Release { res_id } => id(res_id),
            Body::Fulfill { res_id, qty } => {
                id(res_id);
                q(*qty, 1);
            }
            Body::Po { po_id, qty, eta, .. } => {
                id(po_id);
                q(*qty, 0);
                assert!(eta.is_none_or(|t| t <= MAX_TIME));
            }
            Body::Policy(None) => {}
            Body::Policy(Some(p)) => {
                q(p.reorder_point, 0);
                q(p.order_up_to, p.reorder_point);
                q(p.safety_stock, 0);
                q(p.pack_size, 1);
                q(p.moq, 0);
                assert!(p.source.as_ref().is_none_or(|s| (1..=64).contains(&s.len())));
            }
        }
    }

    proptest! {
        // No regression files: failures print their seed, and the tree stays this module's own.
        #![proptest_config(ProptestConfig {
            cases: ProptestConfig::default().cases.max(512),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn round_trip(m in arb_message(), seed in any::<u64>()) {
            let line = serialize(&m, seed);
            prop_assert_eq!(decode(line.as_bytes()), Ok(m), "{}", line);
            paths_agree(line.as_bytes());
        }

        #[test]
        fn canonical_lines_take_the_fast_path(m in arb_message(), seed in any::<u64>()) {
            let line = canonical(&m, seed);
            prop_assert_eq!(decode(line.as_bytes()), Ok(m), "{}", line);
            let fast = paths_agree(line.as_bytes());
            // Escapes are the strict parser's; every other canonical line is the fast path's.
            prop_assert_eq!(fast, !line.contains('\\'), "{}", line);
        }

        #[test]
        fn fast_path_and_strict_parser_agree_on_mutated_lines(
            m in arb_message(),
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<usize>(), 0..4u8, any::<u8>()), 1..4),
        ) {
            // Bytes that lines are made of, so that many mutants stay close to valid.
            let alphabet = b"{}[]\":,0123456789-.eE tnulfasr\\\xc3\x80";
            let pick = |b: u8| alphabet[usize::from(b) % alphabet.len()];
            let edits: Vec<_> = edits.into_iter().map(|(at, op, b)| (at, op, pick(b))).collect();
            paths_agree(&mutated(canonical(&m, seed), &edits));
        }

        #[test]
        fn never_panics_on_arbitrary_bytes(raw in proptest::collection::vec(any::<u8>(), 0..400)) {
            paths_agree(&raw);
            if let Ok(m) = decode(&raw) {
                check_invariants(&m);
            }
        }

        #[test]
        fn never_panics_on_json_like_noise(
            raw in proptest::collection::vec(proptest::sample::select(b"{}[]\":,0123456789-+.eE \tnulltruefalse\\u/dD8cCaAtsx".to_vec()), 0..200)
        ) {
            paths_agree(&raw);
            if let Ok(m) = decode(&raw) {
                check_invariants(&m);
            }
        }

        #[test]
        fn never_panics_on_mutated_lines(
            m in arb_message(),
            seed in any::<u64>(),
            edits in proptest::collection::vec((any::<usize>(), 0..4u8, any::<u8>()), 1..6),
        ) {
            let raw = mutated(serialize(&m, seed), &edits);
            paths_agree(&raw);
            if let Ok(m) = decode(&raw) {
                check_invariants(&m);
            }
        }

        #[test]
        fn integer_times_and_parse_time_agree(t in arb_time(), seed in any::<u64>()) {
            let r = &mut Rng(seed | 1);
            let text = json_time(r, t);
            let text = text.trim_matches('"');
            // The CLI takes plain digits only, so the JSON spelling "-0" is not a time there.
            let want = if text.starts_with('-') { None } else { Some(t) };
            prop_assert_eq!(parse_time(text), want, "{}", text);
        }
    }
}
