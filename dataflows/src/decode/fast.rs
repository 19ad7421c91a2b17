//! The decoder's fast path: a scanner for the layout nearly every producer writes — one object
//! whose members are the message type's own, in SPEC's table order, without escapes — that fills
//! the same member slots as the strict parser.
//!
//! It walks the type's member list ([`Kind::members`]) once: at each step the next name either is
//! that member's, compared as two masked words, or the member is absent and the next one is tried.
//! Anything else — another order, an unknown or repeated member, an escape, a nested value, a
//! syntax error, an unknown type — makes it give up (`None`) and the strict parser decides. So
//! every `invalid_json` and `unknown_type` comes from the strict parser, every field's verdict
//! from the same field checks on the same slots (`decode`'s tests compare both paths on every
//! generated line). Strings are read eight bytes at a time, integers eight digits at a time. It
//! does not validate UTF-8 (`decode` does, for every line); it reports whether the line is all
//! ASCII ([`Scanned::ascii`]), which debug builds and the tests check against `is_ascii`.

use super::{Kind, Val, NAMES, SLOTS, TYPE};

/// What [`scan`] found in a line it read to the end.
pub(super) struct Scanned {
    /// The kind its `type` names.
    pub kind: Kind,
    /// Whether the line is all ASCII: every byte outside the strings was matched against one of
    /// JSON's ASCII tokens, and no word the string scan read had a byte of 0x80 or above.
    pub ascii: bool,
}

/// Scans `b` into `slots` (all [`Val::Absent`] on entry); `None` when the strict parser must
/// decide.
pub(super) fn scan(b: &[u8], slots: &mut [Val; SLOTS]) -> Option<Scanned> {
    // The high bits of every word a string was read from.
    let mut high = 0;
    let high = &mut high;
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    let (kind, after) = match compact_type(b, i) {
        Some((kind, span, after)) => {
            slots[TYPE] = span;
            (kind, after)
        }
        None => {
            let after = member(b, i, TYPE, slots, high)?;
            let Val::Str { start, end, .. } = slots[TYPE] else {
                return None;
            };
            (Kind::of(b.get(start..end)?)?, after)
        }
    };
    // The common kinds' walks are unrolled, so that each member's token is a constant.
    i = match kind {
        Kind::Sale | Kind::Return | Kind::Count => unrolled!(b, after, slots, high, SALE_MEMBERS, [1, 2, 3, 4]),
        Kind::Policy => unrolled!(b, after, slots, high, POLICY_MEMBERS, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]),
        _ => walk(b, after, kind.members(), slots, high),
    };
    match b.get(i) {
        Some(b'}') => (ws(b, i + 1) == b.len()).then_some(Scanned { kind, ascii: *high & HIGH == 0 }),
        _ => None,
    }
}

/// The members after `type` in `members`' order from `i` (the index after `type`'s value): the
/// index of the first byte none of them took, normally the closing `}`.
fn walk(b: &[u8], mut i: usize, members: &'static [usize], slots: &mut [Val; SLOTS], high: &mut u64) -> usize {
    for &k in members.get(1..).unwrap_or_default() {
        i = next_member(b, i, k, slots, high);
    }
    i
}

/// [`walk`] with the loop written out, for a kind whose member list is a constant.
macro_rules! unrolled {
    ($b:expr, $i:expr, $slots:expr, $high:expr, $members:expr, [$($at:literal),+]) => {{
        const _: () = assert!($members.len() == [$($at),+].len() + 1, "not every member is walked");
        let i = $i;
        $(let i = next_member($b, i, $members[$at], $slots, $high);)+
        i
    }};
}
use unrolled;

const SALE_MEMBERS: &[usize] = Kind::Sale.members();
const POLICY_MEMBERS: &[usize] = Kind::Policy.members();

/// Member `k` after the comma at `i`: the index after its value, or `i` when the next member is
/// not `k` (an absent member leaves `i` at the comma for the next one to try).
#[inline(always)]
fn next_member(b: &[u8], i: usize, k: usize, slots: &mut [Val; SLOTS], high: &mut u64) -> usize {
    if b.get(i) == Some(&b',') {
        if let Some(after) = member(b, i + 1, k, slots, high) {
            return after;
        }
    }
    i
}

/// `"type":"KIND"` written without whitespace at `i`, the common case, read as two words: the
/// kind, the value's span and the index after the value.
#[inline(always)]
fn compact_type(b: &[u8], i: usize) -> Option<(Kind, Val, usize)> {
    // `"type":"` is eight bytes, and every kind's name is shorter than eight.
    if word(b, i) != u64::from_le_bytes(*b"\"type\":\"") {
        return None;
    }
    let name = word(b, i + 8);
    let len = first(stops(name));
    if len == 8 || (name >> (8 * len)) as u8 != b'"' {
        return None;
    }
    // Names hold no zero byte, so the masked word alone tells them apart.
    let kind = match name & !(u64::MAX << (8 * len)) {
        SALE => Kind::Sale,
        RETURN => Kind::Return,
        RECEIPT => Kind::Receipt,
        ADJUST => Kind::Adjust,
        COUNT => Kind::Count,
        RESERVE => Kind::Reserve,
        RELEASE => Kind::Release,
        FULFILL => Kind::Fulfill,
        PO => Kind::Po,
        POLICY => Kind::Policy,
        _ => return None,
    };
    let span = Val::Str { start: i + 8, end: i + 8 + len, escaped: false };
    Some((kind, span, ws(b, i + 9 + len)))
}

/// A kind's name as a little-endian word, zeros above it.
const fn name_word(name: &[u8]) -> u64 {
    let mut w = 0;
    let mut at = 0;
    while at < name.len() {
        w |= (name[at] as u64) << (8 * at);
        at += 1;
    }
    w
}

const SALE: u64 = name_word(b"sale");
const RETURN: u64 = name_word(b"return");
const RECEIPT: u64 = name_word(b"receipt");
const ADJUST: u64 = name_word(b"adjust");
const COUNT: u64 = name_word(b"count");
const RESERVE: u64 = name_word(b"reserve");
const RELEASE: u64 = name_word(b"release");
const FULFILL: u64 = name_word(b"fulfill");
const PO: u64 = name_word(b"po");
const POLICY: u64 = name_word(b"policy");

/// The member at `i` when it is `k`'s: its value goes to slot `k`, and the result is the index
/// after the value and the whitespace that follows; `None` unless the name is `k`'s and the value
/// is a scalar the fast path reads.
#[inline(always)]
fn member(b: &[u8], i: usize, k: usize, slots: &mut [Val; SLOTS], high: &mut u64) -> Option<usize> {
    let token = TOKENS.get(k)?;
    let mut i = i;
    if !token.is_at(b, i) {
        // Whitespace before a name is rare: looked for only when the name is not found.
        let after = ws(b, i);
        if after == i || !token.is_at(b, after) {
            return None;
        }
        i = after;
    }
    let (value, after) = value(b, i + token.len, high)?;
    *slots.get_mut(k)? = value;
    Some(ws(b, after))
}

/// A slot's name as it stands before its value, `"name":`, as two little-endian words with the
/// masks of the bytes it covers (a known name has at most 13 bytes, so 16 with the rest).
#[derive(Clone, Copy)]
struct Token {
    words: [u64; 2],
    masks: [u64; 2],
    len: usize,
}

impl Token {
    #[inline(always)]
    fn is_at(&self, b: &[u8], i: usize) -> bool {
        let same = |half: usize| (word(b, i + 8 * half) ^ self.words[half]) & self.masks[half] == 0;
        same(0) && (self.len <= 8 || same(1))
    }
}

const TOKENS: [Token; SLOTS] = {
    let mut tokens = [Token { words: [0; 2], masks: [0; 2], len: 0 }; SLOTS];
    let mut k = 0;
    while k < SLOTS {
        let name = NAMES[k].as_bytes();
        let len = name.len() + 3;
        assert!(len <= 16, "a slot's name is longer than 13 bytes");
        let mut at = 0;
        while at < len {
            let byte = match at {
                0 => b'"',
                _ if at == len - 2 => b'"',
                _ if at == len - 1 => b':',
                _ => name[at - 1],
            };
            tokens[k].words[at / 8] |= (byte as u64) << (8 * (at % 8));
            tokens[k].masks[at / 8] |= 0xff << (8 * (at % 8));
            at += 1;
        }
        tokens[k].len = len;
        k += 1;
    }
    tokens
};

/// The value at `i` and the index after it; `None` for objects, arrays, strings with escapes
/// and anything that is not JSON.
#[inline(always)]
fn value(b: &[u8], i: usize, high: &mut u64) -> Option<(Val, usize)> {
    match *b.get(i)? {
        b'"' => {
            let end = string(b, i + 1, high)?;
            Some((Val::Str { start: i + 1, end, escaped: false }, end + 1))
        }
        b'-' | b'0'..=b'9' => number(b, i),
        b't' => literal(b, i, b"true", Val::Bool(true)),
        b'f' => literal(b, i, b"false", Val::Bool(false)),
        b'n' => literal(b, i, b"null", Val::Null),
        b' ' | b'\t' | b'\n' | b'\r' => spaced_value(b, i, high),
        _ => None,
    }
}

/// A value after whitespace (`"name": value`, as Python's `json.dumps` writes it).
#[inline(never)]
fn spaced_value(b: &[u8], i: usize, high: &mut u64) -> Option<(Val, usize)> {
    // `ws_run` stops at a byte that is not whitespace, so this never comes back here.
    value(b, ws_run(b, i), high)
}

fn literal(b: &[u8], i: usize, word: &[u8], val: Val) -> Option<(Val, usize)> {
    let end = i + word.len();
    (b.get(i..end)? == word).then_some((val, end))
}

/// The index of the closing quote of a string whose text starts at `start`, if that text holds
/// no escape and no control character; every word read is or-ed into `high`.
#[inline(always)]
fn string(b: &[u8], start: usize, high: &mut u64) -> Option<usize> {
    let mut i = start;
    loop {
        // Past the end the word is zeros, which stop the scan as control characters do.
        let w = word(b, i);
        *high |= w;
        let stop = stops(w);
        if stop != 0 {
            i += first(stop);
            return (*b.get(i)? == b'"').then_some(i);
        }
        i += 8;
    }
}

/// A number at `i` per RFC 8259's grammar, and the index after it; an integer's value is
/// computed from the words its digits are found in.
#[inline(always)]
fn number(b: &[u8], i: usize) -> Option<(Val, usize)> {
    let negative = b.get(i) == Some(&b'-');
    let first_digit = i + usize::from(negative);
    // Most numbers are integers of up to fifteen digits: the first two words from the first
    // digit hold them and the byte after them.
    let (high, low) = (word(b, first_digit), word(b, first_digit + 8));
    let (n_high, n_low) = (first(non_digits(high)), first(non_digits(low)));
    let (n, magnitude, after) = match (n_high, n_low) {
        // No digit, or sixteen and more: the general loop below.
        (0, _) | (8, 8) => (0, 0, 0),
        (8, 0) => (8, eight_digits(high), low),
        (8, n) => (8 + n, eight_digits(high) * POWERS_OF_TEN[n] + eight_digits(aligned(low, n)), low >> (8 * n)),
        (n, _) => (n, eight_digits(aligned(high, n)), high >> (8 * n)),
    };
    if n > 0 && (n == 1 || high as u8 != b'0') && after as u8 != b'.' && after as u8 | 0x20 != b'e' {
        let value = magnitude as i64;
        return Some((Val::Int(Some(if negative { -value } else { value })), first_digit + n));
    }
    let (magnitude, mut end) = digits(b, first_digit);
    let count = end - first_digit;
    // No digit, or a leading zero followed by more digits: not JSON.
    if count == 0 || (count > 1 && b.get(first_digit) == Some(&b'0')) {
        return None;
    }
    let mut int = true;
    if b.get(end) == Some(&b'.') {
        end = more_digits(b, end + 1)?;
        int = false;
    }
    if let Some(b'e' | b'E') = b.get(end) {
        end += 1;
        if let Some(b'+' | b'-') = b.get(end) {
            end += 1;
        }
        end = more_digits(b, end)?;
        int = false;
    }
    if !int {
        return Some((Val::Real, end));
    }
    // Nineteen digits never wrap a u64; twenty or more (no leading zeros) exceed an i64.
    let value = if count <= 19 { i64::try_from(magnitude).ok() } else { None };
    Some((Val::Int(value.map(|v| if negative { -v } else { v })), end))
}

/// The run of digits at `i`: its value (exact up to 19 digits, wrapped beyond) and its end.
#[inline(always)]
fn digits(b: &[u8], mut i: usize) -> (u64, usize) {
    let mut value: u64 = 0;
    loop {
        let w = word(b, i);
        let n = first(non_digits(w));
        if n == 8 {
            value = value.wrapping_mul(100_000_000).wrapping_add(eight_digits(w));
            i += 8;
            continue;
        }
        if n > 0 {
            value = value.wrapping_mul(POWERS_OF_TEN[n]).wrapping_add(eight_digits(aligned(w, n)));
        }
        return (value, i + n);
    }
}

/// The first `n` bytes of `w` (digits, `0 < n < 8`) moved to its top, '0's below them: eight
/// digits of the same value.
#[inline(always)]
fn aligned(w: u64, n: usize) -> u64 {
    (w << (64 - 8 * n)) | (ONES * u64::from(b'0')) >> (8 * n)
}

/// The end of a run of at least one digit starting at `i`.
fn more_digits(b: &[u8], i: usize) -> Option<usize> {
    let end = digits(b, i).1;
    (end > i).then_some(end)
}

const POWERS_OF_TEN: [u64; 8] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The index of the first byte from `i` on that is not JSON whitespace.
#[inline(always)]
fn ws(b: &[u8], i: usize) -> usize {
    // Compact lines have none: one comparison decides.
    match b.get(i) {
        Some(&c) if c <= b' ' => ws_run(b, i),
        _ => i,
    }
}

#[inline(never)]
fn ws_run(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The little-endian word of the 8 bytes at `at`; bytes past the end of `b` read as zero.
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    if let Some(eight) = b.get(at..at.wrapping_add(8)) {
        return u64::from_le_bytes(eight.try_into().unwrap_or_default());
    }
    let len = b.len();
    match b.get(len.wrapping_sub(8)..) {
        // The line's last eight bytes, shifted so that byte `at` comes first.
        Some(last) if at < len => u64::from_le_bytes(last.try_into().unwrap_or_default()) >> (8 * (at + 8 - len)),
        _ => b.get(at..).unwrap_or_default().iter().rev().fold(0, |w, &c| w << 8 | u64::from(c)),
    }
}

/// The high bit of every byte of `w` that ends a plain run of string bytes — `"`, `\` or a
/// control character — and possibly of bytes after the first such byte, never before it: the
/// lowest set bit is exact (the usual zero-byte test, whose borrows only run upwards).
#[inline(always)]
fn stops(w: u64) -> u64 {
    let below = |x: u64, n: u64| x.wrapping_sub(ONES * n) & !x;
    (below(w ^ (ONES * u64::from(b'"')), 1) | below(w ^ (ONES * u64::from(b'\\')), 1) | below(w, 0x20)) & HIGH
}

/// The high bit of every byte of `w` that is not an ASCII digit, the lowest exact as above.
#[inline(always)]
fn non_digits(w: u64) -> u64 {
    let below = w.wrapping_sub(ONES * u64::from(b'0')) & !w;
    let above = w.wrapping_add(ONES * (0x7f - u64::from(b'9')));
    (below | above | w) & HIGH
}

/// The index of the byte whose bit [`stops`] or [`non_digits`] set first; 8 when none is set.
#[inline(always)]
fn first(mask: u64) -> usize {
    (mask.trailing_zeros() / 8) as usize
}

/// The value of eight ASCII digits read as a little-endian word (first digit lowest): three
/// multiplications instead of eight steps.
#[inline(always)]
fn eight_digits(w: u64) -> u64 {
    let digits = w.wrapping_sub(ONES * u64::from(b'0'));
    let pairs = (digits.wrapping_mul(10).wrapping_add(digits >> 8)) & 0x00ff_00ff_00ff_00ff;
    let quads = (pairs.wrapping_mul(100).wrapping_add(pairs >> 16)) & 0x0000_ffff_0000_ffff;
    (quads.wrapping_mul(10_000).wrapping_add(quads >> 32)) & 0xffff_ffff
}

#[cfg(test)]
mod tests {
    use super::*;

    fn le(s: &[u8; 8]) -> u64 {
        u64::from_le_bytes(*s)
    }

    #[test]
    fn word_tricks_find_the_first_byte_of_their_class() {
        let cases: [(fn(u64) -> u64, &[u8], &[u8; 8]); 2] =
            [(stops, b"\"\\\0\x01\x1f\n", b"ab~\x7f\xc3\xa9 x"), (non_digits, b"/:\0 a\x80\xff.", b"01234567")];
        for (mask, specials, plain) in cases {
            assert_eq!(mask(le(plain)), 0);
            for at in 0..8 {
                for &special in specials {
                    // Plain bytes before `at`; after it, any bytes (which may be flagged too).
                    let mut w = *plain;
                    w[at] = special;
                    for later in at + 1..8 {
                        w[later] = [b'"', 0, b'5', 0xff, b'\\', b'/'][later % 6];
                    }
                    assert_eq!(first(mask(le(&w))), at, "{w:?}");
                }
            }
        }
        for byte in 0..=255u8 {
            let mut w = *b"12345678";
            w[3] = byte;
            assert_eq!(first(non_digits(le(&w))) == 3, !byte.is_ascii_digit(), "{byte}");
            assert_eq!(first(stops(le(&[byte; 8]))) == 0, byte == b'"' || byte == b'\\' || byte < 0x20, "{byte}");
        }
    }

    #[test]
    fn digits_are_read_a_word_at_a_time() {
        assert_eq!(eight_digits(le(b"12345678")), 12_345_678);
        assert_eq!(eight_digits(le(b"00000000")), 0);
        assert_eq!(eight_digits(le(b"99999999")), 99_999_999);
        for text in ["0", "7", "42", "1700000000000", "253402300799999", "9223372036854775807", "12345678", "123456789"]
        {
            for tail in ["", ",", "}", "e5", " "] {
                let line = format!("{text}{tail}");
                assert_eq!(digits(line.as_bytes(), 0), (text.parse().unwrap(), text.len()), "{line}");
            }
        }
        assert_eq!(digits(b"x1", 0), (0, 0));
        assert_eq!(digits(b"", 0), (0, 0));
    }

    #[test]
    fn tokens_are_the_names_with_quotes_and_colon() {
        for (k, name) in NAMES.iter().enumerate() {
            let text = format!("\"{name}\":");
            let mut padded = [0u8; 16];
            padded[..text.len()].copy_from_slice(text.as_bytes());
            let t = TOKENS[k];
            assert_eq!(t.len, text.len());
            for half in 0..2 {
                let w = u64::from_le_bytes(padded[8 * half..8 * half + 8].try_into().unwrap());
                assert_eq!(w & t.masks[half], t.words[half], "{name}");
            }
        }
    }
}
