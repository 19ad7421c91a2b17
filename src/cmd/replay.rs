//! `stockflow replay`: fixture files through the dataflow into a directory, stdout or a report.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use dataflows::clock::Ticks;

use crate::config::{Cluster, Output, ReplayConfig};
use crate::io::sink::{self, dir::DirSink, report, stdout::StdoutSink, Sink};
use crate::runtime::worker::{self, Progress};
use crate::runtime::{metrics, progress};

/// Both sinks at once, for `--out DIR --print`.
struct Tee(Vec<Box<dyn Sink>>);

impl Sink for Tee {
    fn tick(&mut self, time: u64, batch: &sink::TickBatch) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.tick(time, batch))
    }
    fn finish(
        &mut self,
        dead: &[dataflows::model::DeadLetter],
        snapshot: &sink::Snapshot,
        summary: &sink::Summary,
    ) -> std::io::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.finish(dead, snapshot, summary))
    }
}

/// Starts the metrics endpoint when `--metrics-addr` asks for it.
pub fn metrics_server(
    args: &metrics::MetricsArgs,
    mode: metrics::Mode,
    ticks: Ticks,
    lateness_ms: u64,
    cluster: &Cluster,
) -> Result<Option<metrics::Server>> {
    let settings = metrics::Settings {
        mode,
        tick_ms: ticks.tick_ms,
        lateness_ms,
        workers: cluster.workers,
        process: cluster.process,
    };
    metrics::Server::start(args, settings)
}

pub fn run(config: ReplayConfig, report: Option<PathBuf>, metrics: &metrics::MetricsArgs) -> Result<()> {
    let server = metrics_server(metrics, metrics::Mode::Replay, config.ticks, config.lateness_ms, &config.cluster)?;
    let config = Arc::new(config);
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let reporter = (!config.quiet && config.cluster.process == 0).then(|| {
        let size = progress::Size::Bytes(input_bytes(&config));
        progress::Reporter::spawn(Arc::clone(&progress), "replay", size, progress::Until::End)
    });
    let timely_config = config.cluster.timely_config()?;
    let worker_config = Arc::clone(&config);
    let worker_progress = Arc::clone(&progress);
    let guards = timely::execute(timely_config, move |worker| {
        let config = &worker_config;
        let make_sink = || -> std::io::Result<Box<dyn Sink>> {
            let names: Vec<String> = config.inputs.iter().map(|i| i.name.clone()).collect();
            let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
            match &config.output {
                Output::Dir(dir) => sinks.push(Box::new(DirSink::create(dir, names)?)),
                Output::Stdout => sinks.push(Box::new(StdoutSink)),
            }
            if config.print && matches!(config.output, Output::Dir(_)) {
                sinks.push(Box::new(StdoutSink));
            }
            if let Some(path) = &report {
                sinks.push(Box::new(report::ReportSink::create(path, config)?));
            }
            Ok(Box::new(Tee(sinks)))
        };
        worker::replay_worker(worker, config, &worker_progress, &make_sink)
    })
    .map_err(|e| anyhow::anyhow!("cannot start timely workers: {e}"))?;
    worker::join_workers(guards)?;
    if let Some(reporter) = reporter {
        reporter.finish();
    }
    if let Some(server) = server {
        server.linger();
    }
    Ok(())
}

/// The bytes of the input files this process reads (worker i of all reads files i, i + peers,
/// ...; process p hosts workers p * w ..), for the progress line's share and ETA.
fn input_bytes(config: &ReplayConfig) -> u64 {
    let c = &config.cluster;
    let peers = c.workers * c.processes;
    config
        .inputs
        .iter()
        .enumerate()
        .filter(|(source, _)| source % peers / c.workers == c.process)
        .filter_map(|(_, input)| std::fs::metadata(&input.path).ok())
        .map(|m| m.len())
        .sum()
}

