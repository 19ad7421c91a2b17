//! `stockflow replay`: fixture files through the dataflow into a directory, stdout or a report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use dataflows::clock::Ticks;

use crate::config::{Cluster, Output, ReplayConfig};
use crate::io::sink::dir::DirSink;
use crate::io::sink::report::ReportSink;
use crate::io::sink::stdout::StdoutSink;
use crate::io::sink::staging::{self, DirMode, Outputs};
use crate::io::sink::SinkError;
use crate::io::source::file::FileSource;
use crate::runtime::dataflow::Routing;
use crate::runtime::harness::{self, Plan, Sinks, WindowEnd};
use crate::runtime::signals::{self, OnSignal};
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
/// `--report`. The directory and the report appear only once complete (a signal or a failure
/// leaves the previous ones).
pub fn run(config: ReplayConfig, report: Option<PathBuf>, metrics: &metrics::MetricsArgs) -> Result<()> {
    signals::install("replay", OnSignal::Abort)?;
    let outputs = begin_outputs(&config, report.as_deref())?;
    let server = metrics_server(metrics, metrics::Mode::Replay, config.ticks, config.lateness_ms, &config.cluster)?;
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let reporter = (!config.quiet && config.cluster.process == 0).then(|| {
        let size = progress::Size::Bytes(input_bytes(&config));
        progress::Reporter::spawn(Arc::clone(&progress), "replay", size, progress::Until::End)
    });
    let sink_config = config.clone();
    let typed = report.is_some();
    let (dir, report_file) = (outputs.dir().map(PathBuf::from), outputs.report().map(PathBuf::from));
    let make_sinks = move |worker: usize| -> Result<Sinks, SinkError> {
        let mut sinks = Sinks::default();
        if worker != 0 {
            return Ok(sinks);
        }
        let names: Vec<String> = sink_config.inputs.iter().map(|i| i.name.clone()).collect();
        if let (Output::Dir(shown), Some(dir)) = (&sink_config.output, &dir) {
            sinks.lines.push(Box::new(DirSink::create(dir, shown, names.clone())?));
        }
        if sink_config.print || matches!(sink_config.output, Output::Stdout) {
            sinks.lines.push(Box::new(StdoutSink::new(names)));
        }
        if let (Some(shown), Some(write)) = (&report, &report_file) {
            sinks.typed.push(Box::new(ReportSink::create(write, shown, &sink_config)?));
        }
        Ok(sinks)
    };
    let routing = Routing { local: true, typed_on_zero: typed, typed_snapshot: typed };
    match replay_into(&config, routing, make_sinks, progress) {
        Ok(()) => outputs.publish()?,
        Err(e) => return Err(with_notes(e, outputs.abandon())),
    }
    if let Some(reporter) = reporter {
        reporter.finish(&config.output.dead_letters());
    }
    if let Some(server) = server {
        server.linger();
    }
    Ok(())
}

/// `error`, followed by what each abandoned output holds now (`out keeps its previous complete
/// result`).
pub fn with_notes(error: anyhow::Error, notes: Vec<String>) -> anyhow::Error {
    if notes.is_empty() {
        return error;
    }
    anyhow::anyhow!("{error:#}; {}", notes.join("; "))
}

/// Locks and prepares `--out DIR` and `--report` (process 0 writes them), before anything is
/// read: a directory another run writes, or a report that cannot be written, is refused first.
fn begin_outputs(config: &ReplayConfig, report: Option<&Path>) -> Result<Outputs, SinkError> {
    let writes = config.cluster.process == 0;
    let dir = match &config.output {
        Output::Dir(dir) if writes => Some((dir.as_path(), DirMode::Replace)),
        _ => None,
    };
    Outputs::begin(staging::Plan { mode: "replay", dir, report: report.filter(|_| writes) })
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

