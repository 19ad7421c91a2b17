//! `stockflow replay`: fixture files through the dataflow into a directory, stdout or a report.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use dataflows::clock::Ticks;

use crate::config::{Cluster, Output, ReplayConfig};
use crate::io::sink::dir::DirSink;
use crate::io::sink::report::ReportSink;
use crate::io::sink::stdout::StdoutSink;
use crate::io::sink::SinkError;
use crate::io::source::file::FileSource;
use crate::runtime::dataflow::Routing;
use crate::runtime::harness::{self, Plan, Sinks, WindowEnd};
use crate::runtime::{cluster, metrics};
use crate::runtime::progress::{self, Progress};

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
        ticks,
        lateness_ms,
        workers: cluster.workers,
        process: cluster.process,
    };
    Ok(metrics::Server::start(args, settings)?)
}

/// `stockflow replay`: the outputs go to `--out` (a directory or stdout), `--print` and
/// `--report`.
pub fn run(config: ReplayConfig, report: Option<PathBuf>, metrics: &metrics::MetricsArgs) -> Result<()> {
    let server = metrics_server(metrics, metrics::Mode::Replay, config.ticks, config.lateness_ms, &config.cluster)?;
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let reporter = (!config.quiet && config.cluster.process == 0).then(|| {
        let size = progress::Size::Bytes(input_bytes(&config));
        progress::Reporter::spawn(Arc::clone(&progress), "replay", size, progress::Until::End)
    });
    let sink_config = config.clone();
    let typed = report.is_some();
    let make_sinks = move |worker: usize| -> Result<Sinks, SinkError> {
        let mut sinks = Sinks::default();
        if worker != 0 {
            return Ok(sinks);
        }
        let names: Vec<String> = sink_config.inputs.iter().map(|i| i.name.clone()).collect();
        if let Output::Dir(dir) = &sink_config.output {
            sinks.lines.push(Box::new(DirSink::create(dir, names.clone())?));
        }
        if sink_config.print || matches!(sink_config.output, Output::Stdout) {
            sinks.lines.push(Box::new(StdoutSink::new(names)));
        }
        if let Some(path) = &report {
            sinks.typed.push(Box::new(ReportSink::create(path, &sink_config)?));
        }
        Ok(sinks)
    };
    let routing = Routing { local: true, typed_on_zero: typed, typed_snapshot: typed };
    replay_into(&config, routing, make_sinks, progress)?;
    if let Some(reporter) = reporter {
        reporter.finish(&config.output.dead_letters());
    }
    if let Some(server) = server {
        server.linger();
    }
    Ok(())
}

/// Replays `config`'s input files through the harness into the sinks `make_sinks` creates
/// (a worker's, given its index).
pub fn replay_into(
    config: &ReplayConfig,
    routing: Routing,
    make_sinks: impl Fn(usize) -> Result<Sinks, SinkError> + Send + Sync + 'static,
    progress: Arc<Progress>,
) -> Result<()> {
    let plan = Plan {
        ticks: config.ticks,
        lateness_ms: config.lateness_ms,
        idle: None,
        sources: config.inputs.iter().map(|i| i.name.clone()).collect(),
        routing,
        formats: routing.local,
        end: WindowEnd::Closed,
        checkpoints: None,
        restore: None,
    };
    let inputs = config.inputs.clone();
    // A replay stops only by being killed: nothing sets this.
    static NEVER: AtomicBool = AtomicBool::new(false);
    let guards = cluster::execute(&config.cluster, move |worker| {
        let source = FileSource::open(&inputs, worker.index(), worker.peers())?;
        harness::run_worker(worker, &plan, source, &make_sinks, &progress, &NEVER)
    })?;
    harness::join_workers(guards)
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

