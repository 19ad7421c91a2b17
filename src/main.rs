//! The `stockflow` binary: parses the command line into a validated run configuration and
//! dispatches on the mode.

mod cmd;
mod config;
mod io;
mod runtime;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use dataflows::clock::Ticks;

use config::{Cluster, Output, ReplayConfig};
use cmd::{explain, gen, produce};
use config::file as config_file;
use io::sink::{self, dir::DirSink, report, stdout::StdoutSink, Sink};
use runtime::worker::{self, Progress};
use runtime::{checkpoint, metrics, progress, stream};

/// Exact, live replenishment signals: available-to-promise, low-stock triggers and the order
/// plan, maintained incrementally over inventory events.
#[derive(Parser, Debug)]
#[command(name = "stockflow", version, disable_help_flag = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print help (`-h` is timely's hostfile in every mode).
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Replays fixture files through the dataflow and writes the outputs (SPEC §4).
    Replay(ReplayArgs),
    /// Writes fixture files of a synthetic retail network (a workload for tests and benchmarks).
    Gen(gen::GenArgs),
    /// Streams Kafka topics through the dataflow forever (until SIGINT/SIGTERM), outputs to Kafka.
    Run(RunArgs),
    /// Reads Kafka topics up to their current end, writes the state at --until, commits, exits.
    Batch(BatchArgs),
    /// Produces a fixture directory to a topic, one file per partition.
    Produce(produce::ProduceArgs),
    /// Prints an output topic's latest value per key (sorted by key), or every record with --all.
    Consume(produce::ConsumeArgs),
    /// Replays the input and explains why one key (sku, loc) is where it is.
    Explain(explain::ExplainArgs),
    /// Checks a `--config` file and prints the configuration it resolves to, secrets masked.
    Config(config_file::ConfigArgs),
    /// Inspects checkpoints: `stockflow checkpoint show DIR`.
    #[command(subcommand)]
    Checkpoint(CheckpointAction),
}

#[derive(Subcommand, Debug)]
enum CheckpointAction {
    /// Prints a checkpoint's headers and entries as JSON lines (`--ledger-only` for comparing runs).
    Show(checkpoint::ShowArgs),
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct RunArgs {
    #[command(flatten)]
    stream: stream::StreamArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct BatchArgs {
    /// End of the window: milliseconds since the epoch or RFC 3339.
    #[arg(long, required = true)]
    until: String,
    #[command(flatten)]
    stream: stream::StreamArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn cluster(c: &ClusterArgs) -> Result<Cluster> {
    if c.workers == 0 || c.processes == 0 || c.process >= c.processes {
        bail!("need -w >= 1, -n >= 1 and 0 <= -p < -n (got -w {} -n {} -p {})", c.workers, c.processes, c.process);
    }
    Ok(Cluster { workers: c.workers, processes: c.processes, process: c.process, hostfile: c.hostfile.clone() })
}

/// Timely's cluster flags (`-h` is the hostfile, as in timely; help is `--help`).
#[derive(Args, Debug)]
struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    processes: usize,
    /// This process's index, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    process: usize,
    /// Hostfile: one host:port per line, one line per process (default localhost:2101+i).
    #[arg(short = 'h', long = "hostfile")]
    hostfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
struct ReplayArgs {
    /// Fixture directories (every *.jsonl inside, names sorted) or .jsonl files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory, or `-` to print the final snapshot on stdout.
    #[arg(long)]
    out: String,
    /// Print the final snapshot on stdout (in addition to --out DIR).
    #[arg(long)]
    print: bool,
    #[command(flatten)]
    window: config::WindowArgs,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Also write a self-contained HTML report (charts of the run) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(flatten)]
    metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

fn replay_config(args: ReplayArgs) -> Result<ReplayConfig> {
    let until = args.window.until()?;
    let c = &args.cluster;
    if c.workers == 0 || c.processes == 0 || c.process >= c.processes {
        bail!("need -w >= 1, -n >= 1 and 0 <= -p < -n (got -w {} -n {} -p {})", c.workers, c.processes, c.process);
    }
    let output = if args.out == "-" { Output::Stdout } else { Output::Dir(PathBuf::from(&args.out)) };
    Ok(ReplayConfig {
        inputs: config::resolve_inputs(&args.inputs)?,
        output,
        ticks: Ticks { tick_ms: args.window.tick_ms, until },
        lateness_ms: args.window.lateness_ms,
        quiet: args.quiet,
        print: args.print,
        cluster: Cluster {
            workers: c.workers,
            processes: c.processes,
            process: c.process,
            hostfile: c.hostfile.clone(),
        },
    })
}

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
fn metrics_server(
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

fn replay(config: ReplayConfig, report: Option<PathBuf>, metrics: &metrics::MetricsArgs) -> Result<()> {
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

/// `run` or `batch`, with a progress line on stderr unless `--quiet`.
fn streaming(config: stream::StreamConfig, metrics: &metrics::MetricsArgs) -> Result<()> {
    let mode = if config.batch { metrics::Mode::Batch } else { metrics::Mode::Run };
    let server = metrics_server(metrics, mode, config.ticks, config.args.lateness_ms, &config.cluster)?;
    let progress =
        Arc::new(Progress { metrics: server.as_ref().map(|s| Arc::clone(&s.metrics)), ..Progress::default() });
    let (label, until) =
        if config.batch { ("batch", progress::Until::End) } else { ("run", progress::Until::CaughtUp) };
    let reporter = (!config.args.quiet && config.cluster.process == 0)
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

fn main() -> Result<()> {
    match run_command() {
        // `stockflow consume … | head`: the reader has what it wanted; not an error.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => Ok(()),
        result => result,
    }
}

fn run_command() -> Result<()> {
    progress::init_logs();
    let command = config_file::with_config_flag(Cli::command());
    let argv = config_file::merged_args(std::env::args_os().collect(), command.clone())?;
    let matches = command.clone().get_matches_from(argv);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.format(&mut command.clone()).exit());
    match cli.command {
        Command::Replay(args) => {
            let (report, metrics) = (args.report.clone(), args.metrics.clone());
            replay(replay_config(args)?, report, &metrics)
        }
        Command::Explain(args) => explain::run(args),
        Command::Gen(args) => gen::run(args),
        Command::Run(args) => streaming(
            stream::StreamConfig {
                ticks: Ticks { tick_ms: args.stream.tick_ms, until: None },
                cluster: cluster(&args.cluster)?,
                args: args.stream,
                batch: false,
                restore: None,
            },
            &args.metrics,
        ),
        Command::Batch(args) => streaming(
            stream::StreamConfig {
                ticks: Ticks { tick_ms: args.stream.tick_ms, until: Some(stream::parse_until(&args.until)?) },
                cluster: cluster(&args.cluster)?,
                args: args.stream,
                batch: true,
                restore: None,
            },
            &args.metrics,
        ),
        Command::Produce(args) => produce::produce(args),
        Command::Consume(args) => produce::consume(args),
        Command::Config(args) => config_file::run(args, command),
        Command::Checkpoint(CheckpointAction::Show(args)) => checkpoint::show(&args),
    }
}

// glibc's malloc took a third of a profile of many small keys; mimalloc's thread-local size
// classes suit differential's batch churn better (replay of 400k events on 100k keys: 43 s -> 19 s).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
