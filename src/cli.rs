//! The command line: clap's definitions of every subcommand's flags, and the step that turns
//! them into validated configurations (low-level args -> high-level config).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use dataflows::clock::Ticks;

use crate::cmd::{explain, gen, produce};
use crate::config::file as config_file;
use crate::config::{self, Cluster, Output, ReplayConfig};
use crate::runtime::{checkpoint, metrics};

/// Exact, live replenishment signals: available-to-promise, low-stock triggers and the order
/// plan, maintained incrementally over inventory events.
#[derive(Parser, Debug)]
#[command(name = "stockflow", version, disable_help_flag = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Print help (`-h` is timely's hostfile in every mode).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
pub enum CheckpointAction {
    /// Prints a checkpoint's headers and entries as JSON lines (`--ledger-only` for comparing runs).
    Show(checkpoint::ShowArgs),
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct BatchArgs {
    /// End of the window: milliseconds since the epoch or RFC 3339.
    #[arg(long, required = true)]
    pub until: String,
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

pub fn cluster_of(c: &ClusterArgs) -> Result<Cluster> {
    if c.workers == 0 || c.processes == 0 || c.process >= c.processes {
        bail!("need -w >= 1, -n >= 1 and 0 <= -p < -n (got -w {} -n {} -p {})", c.workers, c.processes, c.process);
    }
    Ok(Cluster { workers: c.workers, processes: c.processes, process: c.process, hostfile: c.hostfile.clone() })
}

/// Timely's cluster flags (`-h` is the hostfile, as in timely; help is `--help`).
#[derive(Args, Debug)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// This process's index, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// Hostfile: one host:port per line, one line per process (default localhost:2101+i).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ReplayArgs {
    /// Fixture directories (every *.jsonl inside, names sorted) or .jsonl files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output directory, or `-` to print the final snapshot on stdout.
    #[arg(long)]
    pub out: String,
    /// Print the final snapshot on stdout (in addition to --out DIR).
    #[arg(long)]
    pub print: bool,
    #[command(flatten)]
    pub window: config::WindowArgs,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write a self-contained HTML report (charts of the run) to this file.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

pub fn replay_config(args: ReplayArgs) -> Result<ReplayConfig> {
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


/// Flags shared by `run` and `batch`.
#[derive(Args, Debug, Clone)]
pub struct StreamArgs {
    #[command(flatten)]
    pub kafka: crate::io::kafka::KafkaArgs,
    /// Input topics, comma-separated (any message type on any topic).
    #[arg(long, value_delimiter = ',', required = true)]
    pub topics: Vec<String>,
    /// Consumer group whose committed offsets are the start position.
    #[arg(long, default_value = "stockflow")]
    pub group: String,
    /// Output topics are `<prefix>.atp`, `.low_stock`, `.order_plan`, `.network_atp`, `.dead_letter`.
    #[arg(long, default_value = "stockflow")]
    pub prefix: String,
    /// Also write SPEC §4's files into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Partitions of the output topics stockflow creates (existing topics are used as they are).
    #[arg(long, default_value_t = 1)]
    pub output_partitions: i32,
    /// Do not produce to Kafka output topics (use with --out).
    #[arg(long)]
    pub no_kafka_out: bool,
    /// Tick length in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// Allowed lateness per (topic, partition), in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub lateness_ms: u64,
    /// `run` only: a partition with nothing new for this long advances with the wall clock.
    #[arg(long, default_value_t = 10000)]
    pub idle_ms: u64,
    /// `run` only: how often to look for new partitions and for input topics that did not exist.
    #[arg(long, default_value_t = 10000)]
    pub metadata_refresh_ms: u64,
    /// Start position without committed offsets: earliest, latest, or ms since the epoch.
    #[arg(long, default_value = "earliest")]
    pub start: crate::io::source::kafka::Start,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Write checkpoints here, and start from the newest complete one found here.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// How often to checkpoint: `30s` / `5m` of wall-clock time, or a number of ticks of event
    /// time. Decided by worker 0; every worker writes its share at the same logical time.
    #[arg(long, default_value = "60s")]
    pub checkpoint_every: config::CheckpointEvery,
    /// Exactly-once Kafka output: each drained batch of ticks is one transaction with a
    /// progress record (`<prefix>.progress`) and the offsets; a broker without transactions
    /// falls back to at-least-once, saying so. `--exactly-once=false` turns it off.
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub exactly_once: bool,
    /// Same as `--exactly-once=false`: an idempotent producer, no transactions.
    #[arg(long, conflicts_with = "exactly_once")]
    pub at_least_once: bool,
}


/// Turns `run`/`batch` flags into a validated configuration (`until`: batch's window end).
pub fn stream_config(args: StreamArgs, until: Option<&str>, cluster: &ClusterArgs) -> Result<config::StreamConfig> {
    if args.tick_ms == 0 {
        bail!("--tick-ms must be at least 1");
    }
    if args.no_kafka_out && args.out.is_none() {
        bail!("--no-kafka-out needs --out DIR, else the results go nowhere");
    }
    let until = until.map(|t| config::time_arg("--until", t)).transpose()?;
    let mut topics = args.topics.clone();
    topics.sort();
    topics.dedup();
    Ok(config::StreamConfig {
        mode: if until.is_some() { config::StreamMode::Batch } else { config::StreamMode::Run },
        kafka: args.kafka.client()?,
        topics,
        group: args.group,
        prefix: args.prefix,
        out: args.out,
        kafka_out: !args.no_kafka_out,
        output_partitions: args.output_partitions,
        ticks: Ticks { tick_ms: args.tick_ms, until },
        lateness_ms: args.lateness_ms,
        idle: std::time::Duration::from_millis(args.idle_ms),
        metadata_refresh: std::time::Duration::from_millis(args.metadata_refresh_ms),
        start: args.start,
        quiet: args.quiet,
        checkpoints: args.checkpoint_dir.map(|dir| config::Checkpointing { dir, every: args.checkpoint_every }),
        exactly_once: args.exactly_once && !args.at_least_once,
        cluster: cluster_of(cluster)?,
    })
}
