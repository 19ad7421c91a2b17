//! `stockflow run` and `stockflow batch`: Kafka topics through the dataflow, continuously
//! (until SIGINT/SIGTERM) or up to a window's end, into Kafka topics and/or a directory.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use rdkafka::ClientConfig;

use crate::config::StreamConfig;
use crate::io::sink::dir::DirSink;
use crate::io::sink::kafka::{Delivery, KafkaSink};
use crate::io::sink::staging::{self, DirMode, Outputs};
use crate::io::sink::SinkError;
use crate::io::source::kafka::KafkaSource;
use crate::runtime::checkpoint::{self, Chosen};
use crate::runtime::dataflow::Routing;
use crate::runtime::harness::{self, Plan, Sinks, WindowEnd};
use crate::runtime::progress::{self, Progress};
use crate::runtime::signals::{self, OnSignal};
use crate::runtime::{cluster, metrics};

/// `run` or `batch`, with a progress line on stderr unless `--quiet`.
pub fn run(config: StreamConfig, metrics: &metrics::MetricsArgs) -> Result<()> {
    let label = if config.batch() { "batch" } else { "run" };
    let note = match (&config.out, config.batch()) {
        (Some(out), true) => format!("; {} keeps its previous complete result: only a whole window replaces it", out.display()),
        _ => String::new(),
    };
    signals::install(label, OnSignal::Finish { note })?;
    let mode = if config.batch() { metrics::Mode::Batch } else { metrics::Mode::Run };
    let server = super::replay::metrics_server(metrics, mode, config.ticks, config.lateness_ms, &config.cluster)?;
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let until = if config.batch() { progress::Until::End } else { progress::Until::CaughtUp };
    let reporter = (!config.quiet && config.cluster.process == 0)
        .then(|| progress::Reporter::spawn(Arc::clone(&progress), label, progress::Size::Lag, until));
    let dead_letters = config.dead_letters();
    let result = stream(config, Arc::clone(&progress));
    if let (Ok(()), Some(reporter)) = (&result, reporter) {
        reporter.finish(&dead_letters);
    }
    if let (Ok(()), Some(server)) = (&result, server) {
        server.linger();
    }
    result
}

/// Runs the workers to completion, then puts `--out` in place (`batch`) or marks it complete
/// (`run`). A `batch` stopped by a signal leaves the previous `--out` and exits with 128 + the
/// signal's number: its window is not complete.
fn stream(config: StreamConfig, progress: Arc<Progress>) -> Result<()> {
    config.kafka.check_reachable()?;
    let restore = match &config.checkpoints {
        Some(checkpoints) => restore_point(&config, &checkpoints.dir)?,
        None => None,
    };
    let outputs = begin_outputs(&config)?;
    let batch = config.batch();
    let result = execute(config, restore, outputs.dir().map(PathBuf::from), progress);
    match (result, signals::received()) {
        (Err(e), _) => Err(super::replay::with_notes(e, outputs.abandon())),
        (Ok(()), Some(signal)) if batch => {
            drop(outputs);
            std::process::exit(128 + signal)
        }
        (Ok(()), _) => Ok(outputs.publish()?),
    }
}

/// Locks and prepares `--out` on process 0 (the one writing it).
fn begin_outputs(config: &StreamConfig) -> Result<Outputs> {
    let (mode, dir_mode) = if config.batch() { ("batch", DirMode::Replace) } else { ("run", DirMode::InPlace) };
    if let (Some(out), Some(checkpoints), true) = (&config.out, &config.checkpoints, config.batch()) {
        if staging::lies_inside(&checkpoints.dir, out) {
            bail!(
                "--checkpoint-dir {} lies inside --out {}, which batch replaces whole once its window is complete; put the checkpoints beside it",
                checkpoints.dir.display(),
                out.display()
            );
        }
    }
    let dir = config.out.as_deref().filter(|_| config.cluster.process == 0).map(|out| (out, dir_mode));
    Ok(Outputs::begin(staging::Plan { mode, dir, report: None })?)
}

/// Runs the workers; worker 0 writes the directory sink into `out_dir`.
fn execute(config: StreamConfig, restore: Option<Chosen>, out_dir: Option<PathBuf>, progress: Arc<Progress>) -> Result<()> {
    let plan = Plan {
        ticks: config.ticks,
        lateness_ms: config.lateness_ms,
        idle: (!config.batch()).then_some(config.idle),
        sources: config.topics.clone(),
        // Every worker produces the records of the keys it owns.
        routing: Routing { local: true, typed_on_zero: false, typed_snapshot: false },
        // Only process 0 knows whether it writes `--out`; the others format for it whenever
        // there are several processes, since every process must agree.
        formats: config.out.is_some() || config.cluster.processes > 1,
        end: if config.batch() { WindowEnd::Closed } else { WindowEnd::Open },
        checkpoints: config.checkpoints.clone(),
        restore,
    };
    let consumer = consumer_config(&config);
    let settings = config.cluster.clone();
    let guards = cluster::execute(&settings, move |worker| {
        signals::workers_started();
        let (index, peers) = (worker.index(), worker.peers());
        let restored = plan.restore.as_ref().map(harness::restored_positions).unwrap_or_default();
        // With checkpoints, positions come from the checkpoint (or --start without one), never
        // from the group's commits, which would skip what an empty state never saw.
        let use_committed = config.checkpoints.is_none();
        let result = KafkaSource::new(&config, &consumer, (index, peers), restored, use_committed)
            .map_err(harness::HarnessError::from)
            .and_then(|source| {
                let make_sinks = |worker| sinks(&config, &consumer, out_dir.as_deref(), (worker, peers));
                harness::run_worker(worker, &plan, source, &make_sinks, &progress, &signals::STOP)
            });
        if let Err(e) = result {
            // Timely workers share fate: the others would wait forever for this one's progress.
            // Nothing is committed for ticks not yet acknowledged, so exiting loses nothing.
            tracing::error!("{e}");
            tracing::error!("stopping; offsets are committed only through acknowledged ticks, so a restart resumes from there");
            for note in staging::abandon_all() {
                tracing::error!("{note}");
            }
            std::process::exit(1);
        }
        Ok(())
    })?;
    harness::join_workers(guards)
}

/// The consumer settings every worker reads its partitions with.
fn consumer_config(config: &StreamConfig) -> ClientConfig {
    config.kafka.client_config(&[
        ("group.id", config.group.as_str()),
        ("enable.auto.commit", "false"),
        ("enable.auto.offset.store", "false"),
        ("auto.offset.reset", "earliest"),
        // Fetches of up to 1 MB or 20 ms, whichever comes first: with librdkafka's defaults
        // (1 byte, 500 ms) tansu answered with a few records per fetch, and a 200k msg/s load
        // was read at ~80k/s while every process idled; with these it is read at the offered
        // rate (docs/benchmarks.md, streaming latency). 20 ms is a fifth of a 100 ms tick.
        ("fetch.min.bytes", "1048576"),
        ("fetch.wait.max.ms", "20"),
    ])
}

/// A worker's outputs: its producer of the Kafka topics (unless `--no-kafka-out`), and on
/// worker 0 the `--out` directory, written into `out_dir`.
fn sinks(
    config: &StreamConfig,
    consumer: &ClientConfig,
    out_dir: Option<&std::path::Path>,
    (worker, workers): (usize, usize),
) -> Result<Sinks, SinkError> {
    let mut sinks = Sinks::default();
    if config.kafka_out {
        // Deliveries never time out: while the broker is away the tick waits (and says so).
        let producer =
            config.kafka.client_config(&[("linger.ms", "5"), ("message.timeout.ms", "0"), ("enable.idempotence", "true")]);
        let delivery = if config.exactly_once {
            Delivery::ExactlyOnce { group: config.group.clone(), consumer: consumer.clone() }
        } else {
            Delivery::AtLeastOnce
        };
        let topics = config.topics.clone();
        let sink = KafkaSink::new(&producer, &config.prefix, config.output_partitions, topics, delivery, (worker, workers))?;
        sinks.own.push(Box::new(sink.stop_on(&signals::STOP).with_live_dead_letters(!config.batch())));
    }
    if let (Some(shown), Some(dir)) = (config.out.as_ref().filter(|_| worker == 0), out_dir) {
        sinks.lines.push(Box::new(DirSink::create(dir, shown, config.topics.clone())?));
    }
    Ok(sinks)
}

/// The newest usable checkpoint in `dir`, checked against this run's settings.
fn restore_point(config: &StreamConfig, dir: &std::path::Path) -> Result<Option<Chosen>> {
    let Some(chosen) = checkpoint::choose(dir)? else { return Ok(None) };
    check_compatible(&chosen, config, dir)?;
    if config.cluster.process == 0 {
        let workers = chosen.headers.first().map_or(0, |h| h.workers);
        tracing::info!(
            "starting from the checkpoint at {} ({} shares written by {workers} workers, {} keys) in {}",
            chosen.at,
            chosen.shares.len(),
            chosen.headers.iter().map(|h| h.keys).sum::<u64>(),
            dir.display()
        );
    }
    Ok(Some(chosen))
}

/// Refuses a checkpoint computed with settings that would change what its state means.
fn check_compatible(chosen: &Chosen, config: &StreamConfig, dir: &std::path::Path) -> Result<()> {
    let Some(h) = chosen.headers.first() else { return Ok(()) };
    let dir = dir.display();
    if h.topics != config.topics {
        bail!(
            "the checkpoint in {dir} was written for topics {:?}, this run reads {:?}; use the same --topics or another --checkpoint-dir",
            h.topics,
            config.topics
        );
    }
    if h.tick_ms != config.ticks.tick_ms || h.lateness_ms != config.lateness_ms {
        bail!(
            "the checkpoint in {dir} was written with --tick-ms {} --lateness-ms {}; this run has {} and {}: use the same values or another --checkpoint-dir",
            h.tick_ms,
            h.lateness_ms,
            config.ticks.tick_ms,
            config.lateness_ms
        );
    }
    if let Some(until) = config.ticks.until.filter(|&u| u < chosen.at) {
        bail!("--until {until} lies before the checkpoint in {dir} (every tick before {} is already applied)", chosen.at);
    }
    Ok(())
}
