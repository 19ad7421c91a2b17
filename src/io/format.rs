//! JSON encoding of the output records (SPEC §4): one object per line, fields in a fixed
//! order, so that equal outputs are equal bytes.

use dataflows::allocation::PlanLine;
use dataflows::low_stock::{LowView, Transition};
use dataflows::model::{DeadLetter, Millis};
use dataflows::pipeline::Atp;
use dataflows::Key;

/// Builds one JSON object line.
pub struct Line<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Line<'a> {
    /// Starts an object, optionally with the record's `ts`.
    pub fn start(out: &'a mut Vec<u8>, ts: Option<Millis>) -> Self {
        out.push(b'{');
        let mut line = Line { out, first: true };
        if let Some(ts) = ts {
            line.int("ts", ts as i64);
        }
        line
    }

    fn name(&mut self, name: &str) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string field.
    pub fn str(mut self, name: &str, value: &str) -> Self {
        self.name(name);
        // Ids rarely need escaping; serde_json's escaper cost more than the copy.
        if value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.out.push(b'"');
            self.out.extend_from_slice(value.as_bytes());
            self.out.push(b'"');
        } else {
            serde_json::to_writer(&mut *self.out, value).expect("writing to a Vec cannot fail");
        }
        self
    }

    /// An integer field.
    pub fn int(&mut self, name: &str, value: i64) -> &mut Self {
        self.name(name);
        push_int(self.out, value);
        self
    }

    /// An integer field that may be null.
    pub fn opt_int(mut self, name: &str, value: Option<i64>) -> Self {
        self.name(name);
        match value {
            Some(v) => push_int(self.out, v),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    /// `"deleted":true`.
    pub fn deleted(mut self) -> Self {
        self.name("deleted");
        self.out.extend_from_slice(b"true");
        self
    }

    /// Closes the object and the line.
    pub fn end(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Appends `value` in decimal. `to_string` allocated a String per field (7% of a replay's
/// instructions, callgrind, 100k events); a digit per division cost 4%.
fn push_int(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// An `atp` record (`ts` is `None` in snapshots).
pub fn atp(out: &mut Vec<u8>, ts: Option<Millis>, key: &Key, value: Option<&Atp>) {
    let (sku, loc) = key.parts();
    let line = Line::start(out, ts).str("sku", sku).str("loc", loc);
    match value {
        None => line.deleted().end(),
        Some(a) => {
            let mut line = line;
            line.int("on_hand", a.on_hand)
                .int("reserved", a.reserved)
                .int("on_order", a.on_order)
                .int("available", a.available)
                .int("atp", a.atp)
                .int("position", a.position);
            line.end()
        }
    }
}

/// A `low_stock` record: a transition (with `ts` and `previous`) or a snapshot row.
pub fn low_stock(out: &mut Vec<u8>, ts: Option<Millis>, key: &Key, view: &LowView, previous: Option<&str>) {
    let (sku, loc) = key.parts();
    let mut line = Line::start(out, ts).str("sku", sku).str("loc", loc).str("state", view.state.as_str());
    line.int("position", view.position);
    let mut line = line.opt_int("reorder_point", view.reorder_point);
    line.int("available", view.available);
    match previous {
        Some(previous) => line.str("previous", previous).end(),
        None => line.end(),
    }
}

/// A `low_stock` transition record.
pub fn transition(out: &mut Vec<u8>, t: &Transition) {
    low_stock(out, Some(t.time), &t.key, &t.view, Some(t.previous.as_str()));
}

/// An `order_plan` record, keyed by (dest, sku).
pub fn order_plan(out: &mut Vec<u8>, ts: Option<Millis>, key: &Key, value: Option<&PlanLine>) {
    let (dest, sku) = key.parts();
    match value {
        None => Line::start(out, ts).str("dest", dest).str("sku", sku).deleted().end(),
        Some(p) => {
            let mut line = Line::start(out, ts).str("source", &p.source).str("dest", dest).str("sku", sku);
            line.int("requested", p.requested).int("qty", p.qty);
            line.end()
        }
    }
}

/// A `network_atp` record.
pub fn network_atp(out: &mut Vec<u8>, ts: Option<Millis>, sku: &str, value: Option<i64>) {
    let line = Line::start(out, ts).str("sku", sku);
    match value {
        None => line.deleted().end(),
        Some(atp) => {
            let mut line = line;
            line.int("atp", atp);
            line.end()
        }
    }
}

/// A `dead_letter` record; `source` is the source's name.
pub fn dead_letter(out: &mut Vec<u8>, source: &str, d: &DeadLetter) {
    let mut line = Line::start(out, None).str("source", source);
    line.int("partition", i64::from(d.position.partition)).int("offset", d.position.offset as i64);
    line.str("reason", &d.reason).str("payload", &d.payload).end();
}

/// Formats milliseconds since the epoch as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = dataflows::decode::civil_from_days(days);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atp_record_matches_the_spec_layout() {
        let mut out = Vec::new();
        let key = Key::new("A", "ST1");
        let a = Atp { on_hand: 12, reserved: 0, on_order: 0, available: 12, atp: 10, position: 12 };
        atp(&mut out, Some(2000), &key, Some(&a));
        atp(&mut out, Some(3000), &key, None);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"ts\":2000,\"sku\":\"A\",\"loc\":\"ST1\",\"on_hand\":12,\"reserved\":0,\"on_order\":0,\"available\":12,\"atp\":10,\"position\":12}\n\
             {\"ts\":3000,\"sku\":\"A\",\"loc\":\"ST1\",\"deleted\":true}\n"
        );
    }

    #[test]
    fn integers_are_written_as_std_writes_them() {
        for value in [0, 7, -7, 10, -10, 1_234_567_890, i64::MAX, i64::MIN, i64::MIN + 1] {
            let mut out = Vec::new();
            push_int(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for value in ["ST1", "", "a\"b", "back\\slash", "tab\there", "\u{1}", "caf\u{e9}", "\u{7f}"] {
            let mut out = Vec::new();
            Line::start(&mut out, None).str("s", value).end();
            let expected = format!("{{\"s\":{}}}\n", serde_json::to_string(value).unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{value:?}");
        }
    }
}
