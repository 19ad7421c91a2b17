//! The stdout sink (`--out -`, `--print`): the end of the run as JSON lines a tool reads, one
//! record per line with a leading `"stream"` field naming what it is: the final snapshot's
//! records (`atp`, `low_stock`, `order_plan`, `network_atp`, fields as in `snapshot/`), the dead
//! letters (`dead_letter`), then one `summary` line. A reader that closes the pipe early
//! (`| head`) has what it wanted: the rest is dropped and the run ends as usual.

use std::io::Write;

use dataflows::model::{DeadLetter, Millis};

use super::lines::{LineSink, Lines, TABLES};
use super::{SinkError, Summary};
use crate::io::format;

/// Prints the final snapshot, the dead letters and the summary as JSON lines.
pub struct StdoutSink {
    /// Source ids to names, for dead letters.
    sources: Vec<String>,
}

impl StdoutSink {
    /// A sink whose dead letters name their sources by `sources`.
    pub fn new(sources: Vec<String>) -> Self {
        StdoutSink { sources }
    }
}

impl LineSink for StdoutSink {
    fn tick(&mut self, _time: Millis, _lines: &Lines<'_>) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, dead_letters: &[DeadLetter], snapshot: &Lines<'_>, summary: &Summary) -> Result<(), SinkError> {
        let mut out = Vec::new();
        for (name, table) in TABLES.iter().zip(&snapshot.tables) {
            tagged(&mut out, name, &table.to_vec());
        }
        let mut line = Vec::new();
        for d in dead_letters {
            line.clear();
            format::dead_letter(&mut line, &self.sources[d.position.source as usize], d);
            tagged(&mut out, "dead_letter", &line);
        }
        tagged(&mut out, "summary", summary_line(summary).as_bytes());
        let mut stdout = std::io::stdout().lock();
        match stdout.write_all(&out).and_then(|()| stdout.flush()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(SinkError::Stdout(e)),
            _ => Ok(()),
        }
    }
}

/// Copies JSON-object `lines` to `out`, each with `"stream":"NAME"` as its first field.
fn tagged(out: &mut Vec<u8>, stream: &str, lines: &[u8]) {
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let Some(fields) = line.strip_prefix(b"{") else { continue };
        out.extend_from_slice(format!("{{\"stream\":\"{stream}\",").as_bytes());
        out.extend_from_slice(fields);
    }
}

/// The summary as one JSON line.
fn summary_line(summary: &Summary) -> String {
    let fields: Vec<String> = summary.fields().iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    format!("{{{}}}\n", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_a_json_object_naming_its_stream() {
        let mut out = Vec::new();
        tagged(&mut out, "atp", b"{\"sku\":\"A\",\"loc\":\"S1\",\"atp\":3}\n{\"sku\":\"B\",\"loc\":\"S1\",\"atp\":0}\n");
        tagged(&mut out, "summary", summary_line(&Summary::default()).as_bytes());
        let lines: Vec<serde_json::Value> =
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], serde_json::json!({"stream": "atp", "sku": "A", "loc": "S1", "atp": 3}));
        assert_eq!(lines[2]["stream"], "summary");
        assert_eq!(lines[2]["as_of"], serde_json::Value::Null);
        assert_eq!(lines[2]["read"], 0);
    }
}
