//! `stockflow run` and `stockflow batch`: Kafka topics through the dataflow, continuously or
//! up to a window's end.

use std::sync::Arc;

use anyhow::Result;

use crate::runtime::worker::Progress;
use crate::runtime::{metrics, progress, stream};

/// `run` or `batch`, with a progress line on stderr unless `--quiet`.
pub fn run(config: crate::config::StreamConfig, metrics: &metrics::MetricsArgs) -> Result<()> {
    let mode = if config.batch() { metrics::Mode::Batch } else { metrics::Mode::Run };
    let server = super::replay::metrics_server(metrics, mode, config.ticks, config.lateness_ms, &config.cluster)?;
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let (label, until) =
        if config.batch() { ("batch", progress::Until::End) } else { ("run", progress::Until::CaughtUp) };
    let reporter = (!config.quiet && config.cluster.process == 0)
        .then(|| progress::Reporter::spawn(Arc::clone(&progress), label, progress::Size::Lag, until));
    let result = stream::run(config, Arc::clone(&progress));
    if let (Ok(()), Some(reporter)) = (&result, reporter) {
        reporter.finish();
    }
    if let (Ok(()), Some(server)) = (&result, server) {
        server.linger();
    }
    result
}

