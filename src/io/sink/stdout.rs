//! The stdout sink: a quick look at the final snapshot and summary, no files written.

use std::io::Write;

use dataflows::model::{DeadLetter, Millis};

use super::lines::{LineSink, Lines, TABLES};
use super::{SinkError, Summary};

/// Prints the final snapshot, one section per output, then the summary.
pub struct StdoutSink;

impl LineSink for StdoutSink {
    fn tick(&mut self, _time: Millis, _lines: &Lines) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, _dead_letters: &[DeadLetter], snapshot: &Lines, summary: &Summary) -> Result<(), SinkError> {
        let mut out = Vec::new();
        for (table, lines) in TABLES.iter().zip(&snapshot.tables) {
            out.extend_from_slice(format!("# {table}\n").as_bytes());
            out.extend_from_slice(lines);
        }
        out.extend_from_slice(b"# summary\n");
        out.extend_from_slice(summary.to_json().as_bytes());
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out).and_then(|()| stdout.flush()).map_err(SinkError::Stdout)
    }
}
