//! The stdout sink: a quick look at the final snapshot and summary, no files written.

use std::io::Write;

use dataflows::model::{DeadLetter, Millis};

use super::{Sink, SinkError, Snapshot, Summary, TickBatch};
use crate::io::format;

/// Prints the final snapshot, one section per output, then the summary.
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn tick(&mut self, _time: Millis, _batch: &TickBatch) -> Result<(), SinkError> {
        Ok(())
    }

    fn finish(&mut self, _dead_letters: &[DeadLetter], snapshot: &Snapshot, summary: &Summary) -> Result<(), SinkError> {
        let mut out = Vec::new();
        out.extend_from_slice(b"# atp\n");
        for (key, value) in &snapshot.atp {
            format::atp(&mut out, None, key, Some(value));
        }
        out.extend_from_slice(b"# low_stock\n");
        for (key, view) in &snapshot.low_stock {
            format::low_stock(&mut out, None, key, view, None);
        }
        out.extend_from_slice(b"# order_plan\n");
        for (key, line) in &snapshot.order_plan {
            format::order_plan(&mut out, None, key, Some(line));
        }
        out.extend_from_slice(b"# network_atp\n");
        for (sku, atp) in &snapshot.network_atp {
            format::network_atp(&mut out, None, sku, Some(*atp));
        }
        out.extend_from_slice(b"# summary\n");
        out.extend_from_slice(summary.to_json().as_bytes());
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(&out).and_then(|()| stdout.flush()).map_err(SinkError::Stdout)
    }
}
