//! The command line: clap's definitions of every subcommand's flags, and the step that turns
//! them into validated configurations (low-level args -> high-level config).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};
use dataflows::clock::Ticks;

use crate::cmd::{explain, gen, produce};
use crate::config::file as config_file;
use crate::config::{self, Cluster, Output, ReplayConfig};
use crate::runtime::{checkpoint, metrics, stream};

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
    pub stream: stream::StreamArgs,
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
    pub stream: stream::StreamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

pub fn cluster(c: &ClusterArgs) -> Result<Cluster> {
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

