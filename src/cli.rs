//! The command line: clap's definitions of the subcommands' flags, and the step that turns them
//! into validated configurations (low-level args -> high-level config). Each kind of value is
//! parsed by one function of `config::value` and each cross-flag rule checked by one function of
//! `config`, so every command (and `config check`) says the same thing about the same mistake.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use dataflows::clock::Ticks;
use dataflows::model::Millis;
use dataflows::Key;

use crate::cmd::{gen, produce};
use crate::config::value::{self, CheckpointEvery};
use crate::config::{self, Cluster, ConfigError, ExplainConfig, ExplainSource, Output, ReplayConfig};
use crate::runtime::{checkpoint, metrics};

/// Exact, live replenishment signals: available-to-promise, low-stock triggers and the order
/// plan, maintained incrementally over inventory events.
#[derive(Parser, Debug)]
#[command(
    name = "stockflow",
    version,
    after_help = "Flags, config files and the input and output formats: docs/cli.md and docs/format.md."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replays fixture files through the dataflow and writes the outputs (see docs/format.md).
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
    Explain(ExplainArgs),
    /// Checks a `--config` file and prints the configuration it resolves to, secrets masked.
    Config(ConfigArgs),
    /// Inspects checkpoints: `stockflow checkpoint show DIR`.
    #[command(subcommand)]
    Checkpoint(CheckpointAction),
}

#[derive(Subcommand, Debug)]
pub enum CheckpointAction {
    /// Prints a checkpoint's headers and entries as JSON lines (`--ledger-only` for comparing runs).
    Show(checkpoint::ShowArgs),
}

/// Timely's cluster flags.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1, value_parser = value::positive, allow_negative_numbers = true)]
    pub workers: usize,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes", default_value_t = 1, value_parser = value::positive, allow_negative_numbers = true)]
    pub processes: usize,
    /// This process's index, 0-based.
    #[arg(short = 'p', long = "process", default_value_t = 0, value_parser = value::index, allow_negative_numbers = true)]
    pub process: usize,
    /// Hostfile: one host:port per line, one line per process (default localhost:2101+i).
    #[arg(long = "hostfile", value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// File holding the cluster's shared secret (the same on every process, at least 16 bytes;
    /// never sent): each connection proves it. Required when the hostfile names a non-loopback
    /// address.
    #[arg(long = "cluster-secret-file", value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The cluster's generation: the same on every process of one start, raised on each restart
    /// of the cluster, so that a process left from an earlier start is refused.
    #[arg(long = "cluster-generation", value_name = "N", default_value_t = 0)]
    pub cluster_generation: u64,
}

impl ClusterArgs {
    /// The validated cluster settings.
    pub fn config(&self) -> Result<Cluster, ConfigError> {
        Cluster::new(
            self.workers,
            self.processes,
            self.process,
            self.hostfile.clone(),
            self.cluster_secret_file.clone(),
            self.cluster_generation,
        )
    }
}

/// The window flags of a replay, shared by `replay` and `explain`.
#[derive(Args, Debug, Clone)]
pub struct WindowArgs {
    /// Tick length (a bare number is milliseconds; or 500ms, 1s, 5m): outputs are emitted at its multiples.
    #[arg(long, value_name = "DURATION", default_value_t = 1000, value_parser = value::tick, allow_negative_numbers = true)]
    pub tick_ms: u64,
    /// Allowed lateness per (source, partition) (a bare number is milliseconds; or 500ms, 1s, 5m).
    #[arg(long, value_name = "DURATION", default_value_t = 0, value_parser = value::millis, allow_negative_numbers = true)]
    pub lateness_ms: u64,
    /// End of the window: milliseconds since the epoch or RFC 3339 with a zone (2023-11-14T22:13:50Z).
    #[arg(long, value_name = "TIME", value_parser = value::time, allow_negative_numbers = true)]
    pub until: Option<Millis>,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Fixture directories (every *.jsonl inside, names sorted) or .jsonl files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Output directory, put in place (replacing an earlier output) once the run is complete;
    /// or `-` to print the final snapshot, dead letters and summary on stdout as JSON lines.
    #[arg(long)]
    pub out: String,
    /// Also print the final snapshot, dead letters and summary on stdout as JSON lines.
    #[arg(long)]
    pub print: bool,
    /// Replay an input without messages (empty files, a directory without *.jsonl files)
    /// instead of refusing it.
    #[arg(long)]
    pub allow_empty: bool,
    #[command(flatten)]
    pub window: WindowArgs,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Also write a self-contained HTML report (charts of the run) to this file (put in place
    /// with --out once the run is complete).
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
}

impl ReplayArgs {
    /// The validated replay configuration.
    pub fn config(&self) -> Result<ReplayConfig, ConfigError> {
        let cluster = self.cluster.config()?;
        let output = if self.out == "-" { Output::Stdout } else { Output::Dir(PathBuf::from(&self.out)) };
        Ok(ReplayConfig {
            inputs: config::resolve_inputs(&self.inputs, self.allow_empty)?,
            output,
            ticks: Ticks { tick_ms: self.window.tick_ms, until: self.window.until },
            lateness_ms: self.window.lateness_ms,
            quiet: self.quiet,
            print: self.print,
            cluster,
        })
    }
}

/// `run`: the Kafka job's flags, its cluster and its metrics endpoint.
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub stream: StreamArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub metrics: metrics::MetricsArgs,
}

/// `batch`: `run`'s flags and the window's end.
#[derive(Args, Debug)]
pub struct BatchArgs {
    /// End of the window: milliseconds since the epoch or RFC 3339 with a zone (2023-11-14T22:13:50Z).
    #[arg(long, value_name = "TIME", required = true, value_parser = value::time, allow_negative_numbers = true)]
    pub until: Millis,
    #[command(flatten)]
    pub job: RunArgs,
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
    /// Also write the output files (docs/format.md) into this directory: batch puts it in place
    /// once its window is complete; run writes it in place, marked in stockflow-run.json.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Partitions of the output topics stockflow creates (existing topics are used as they are).
    #[arg(long, default_value_t = 1, value_parser = value::partitions, allow_negative_numbers = true)]
    pub output_partitions: i32,
    /// Do not produce to Kafka output topics (use with --out).
    #[arg(long)]
    pub no_kafka_out: bool,
    /// Tick length (a bare number is milliseconds; or 500ms, 1s, 5m).
    #[arg(long, value_name = "DURATION", default_value_t = 1000, value_parser = value::tick, allow_negative_numbers = true)]
    pub tick_ms: u64,
    /// Allowed lateness per (topic, partition) (a bare number is milliseconds; or 500ms, 1s, 5m).
    #[arg(long, value_name = "DURATION", default_value_t = 5000, value_parser = value::millis, allow_negative_numbers = true)]
    pub lateness_ms: u64,
    /// `run` only: a partition with nothing new for this long advances with the wall clock.
    #[arg(long, value_name = "DURATION", default_value_t = 10000, value_parser = value::millis, allow_negative_numbers = true)]
    pub idle_ms: u64,
    /// `run` only: how often to look for new partitions and for input topics that did not exist.
    #[arg(long, value_name = "DURATION", default_value_t = 10000, value_parser = value::millis, allow_negative_numbers = true)]
    pub metadata_refresh_ms: u64,
    /// Start position without committed offsets: earliest, latest, or a time (ms since the
    /// epoch or RFC 3339 with a zone).
    #[arg(long, value_name = "POSITION", default_value = "earliest", value_parser = value::start, allow_negative_numbers = true)]
    pub start: crate::io::source::kafka::Start,
    /// No progress line on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Write checkpoints here, and start from the newest complete one found here.
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// How often to checkpoint: a duration of wall-clock time (30s, 5m), or a bare number of
    /// ticks of event time. Decided by worker 0; every worker writes its share at the same
    /// logical time.
    #[arg(long, value_name = "TICKS|DURATION", default_value = "60s", value_parser = value::checkpoint_every, allow_negative_numbers = true)]
    pub checkpoint_every: CheckpointEvery,
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

impl StreamArgs {
    /// The validated `run`/`batch` configuration (`until`: batch's window end).
    pub fn config(self, until: Option<Millis>, cluster: &ClusterArgs) -> Result<config::StreamConfig, ConfigError> {
        config::check_output(!self.no_kafka_out, self.out.as_deref())?;
        let mut topics = self.topics;
        topics.sort();
        topics.dedup();
        Ok(config::StreamConfig {
            mode: if until.is_some() { config::StreamMode::Batch } else { config::StreamMode::Run },
            kafka: self.kafka.client()?,
            topics,
            group: self.group,
            prefix: self.prefix,
            out: self.out,
            kafka_out: !self.no_kafka_out,
            output_partitions: self.output_partitions,
            ticks: Ticks { tick_ms: self.tick_ms, until },
            lateness_ms: self.lateness_ms,
            idle: std::time::Duration::from_millis(self.idle_ms),
            metadata_refresh: std::time::Duration::from_millis(self.metadata_refresh_ms),
            start: self.start,
            quiet: self.quiet,
            checkpoints: self.checkpoint_dir.map(|dir| config::Checkpointing { dir, every: self.checkpoint_every }),
            exactly_once: self.exactly_once && !self.at_least_once,
            cluster: cluster.config()?,
        })
    }
}

/// `stockflow explain`: the replay flags, the key, and the time to explain.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Fixture directories (every *.jsonl inside, names sorted) or .jsonl files, as in replay.
    pub inputs: Vec<PathBuf>,
    /// Explain the state saved in the newest complete checkpoint of this directory (see
    /// `--checkpoint-dir` of run and batch) instead of replaying inputs.
    #[arg(long, conflicts_with_all = ["inputs", "at"])]
    pub checkpoint: Option<PathBuf>,
    /// The key's sku.
    #[arg(long)]
    pub sku: String,
    /// The key's location.
    #[arg(long)]
    pub loc: String,
    /// Explain the state at this time instead of the end of the window (milliseconds since the
    /// epoch or RFC 3339 with a zone).
    #[arg(long, value_name = "TIME", value_parser = value::time, allow_negative_numbers = true)]
    pub at: Option<Millis>,
    #[command(flatten)]
    pub window: WindowArgs,
    /// Print the explanation as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Timely worker threads (the numbers do not depend on it).
    #[arg(short = 'w', long = "workers", default_value_t = 1, value_parser = value::positive, allow_negative_numbers = true)]
    pub workers: usize,
}

impl ExplainArgs {
    /// The validated explain configuration: a replay whose window ends at `--at` (else
    /// `--until`), or a checkpoint.
    pub fn config(&self) -> Result<ExplainConfig, ConfigError> {
        let cluster = Cluster::local(self.workers)?;
        let source = match &self.checkpoint {
            Some(dir) => ExplainSource::Checkpoint { dir: dir.clone(), cluster },
            None if self.inputs.is_empty() => return Err(ConfigError::ExplainWithoutInput),
            None => ExplainSource::Replay(ReplayConfig {
                inputs: config::resolve_inputs(&self.inputs, false)?,
                output: Output::Stdout,
                ticks: Ticks {
                    tick_ms: self.window.tick_ms,
                    until: config::explain_window(self.at, self.window.until)?,
                },
                lateness_ms: self.window.lateness_ms,
                quiet: true,
                print: false,
                cluster,
            }),
        };
        Ok(ExplainConfig {
            key: Key::new(&self.sku, &self.loc),
            source,
            json: self.json,
        })
    }
}

/// `stockflow config ...`.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Subcommand, Debug)]
pub enum ConfigAction {
    /// Validates a config file and prints the configuration it resolves to (the file's values,
    /// then the defaults), secrets masked.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// The TOML file.
    pub file: PathBuf,
    /// The command the file is for (default: the first of replay, run, batch, explain that has
    /// every key of the file).
    #[arg(long, value_parser = config::file::MODES)]
    pub mode: Option<String>,
}

/// The commands with timely's cluster flags, where `-h FILE` used to be the hostfile.
const CLUSTER_COMMANDS: [&str; 3] = ["replay", "run", "batch"];

/// Refuses `-h FILE`, the hostfile flag before `-h` meant help: a script written for it would
/// otherwise print help and exit 0 instead of starting its cluster. It is the old form when the
/// command line has other cluster flags (`-n`, `-p`) or the value is a file of `host:port` lines.
pub fn reject_old_hostfile_flag(argv: &[OsString]) -> Result<(), ConfigError> {
    let args: Vec<&str> = argv.iter().skip(1).map(|a| a.to_str().unwrap_or_default()).collect();
    let args = &args[..args.iter().position(|a| *a == "--").unwrap_or(args.len())];
    if !args.first().is_some_and(|mode| CLUSTER_COMMANDS.contains(mode)) {
        return Ok(());
    }
    let cluster_flags = args
        .iter()
        .any(|a| ["-n", "-p", "--processes", "--process"].iter().any(|f| a == f || a.starts_with(&format!("{f}="))));
    for (i, arg) in args.iter().enumerate() {
        let value = match *arg {
            "-h" => args.get(i + 1).copied(),
            attached if attached.starts_with("-h") && !attached.starts_with("--") => Some(&attached[2..]),
            _ => None,
        };
        if let Some(value) = value.filter(|v| !v.is_empty() && !v.starts_with('-')) {
            if cluster_flags || is_hostfile(Path::new(value)) {
                return Err(ConfigError::OldHostfileFlag(value.to_string()));
            }
        }
    }
    Ok(())
}

/// Whether `path` is a small file of `host:port` lines.
fn is_hostfile(path: &Path) -> bool {
    let small_file = std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() < 1 << 20);
    let Some(text) = small_file.then(|| std::fs::read_to_string(path).ok()).flatten() else { return false };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty()).peekable();
    lines.peek().is_some()
        && lines.all(|l| l.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("stockflow").chain(args.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn the_old_hostfile_flag_is_told_apart_from_help() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1:2101\n127.0.0.1:2102\n").unwrap();
        let hosts = hosts.to_str().unwrap();
        for old in [
            vec!["replay", "in", "--out", "o", "-n", "2", "-p", "0", "-h", "hosts"],
            vec!["run", "--topics", "t", "-h", hosts],
            vec!["batch", &format!("-h{hosts}")],
        ] {
            let err = reject_old_hostfile_flag(&argv(&old)).unwrap_err().to_string();
            assert!(err.contains("write --hostfile"), "{old:?}: {err}");
        }
        for help in [
            vec!["replay", "-h"],
            vec!["replay", "in", "-h"],
            vec!["replay", "fixtures", "-h", "--out", "o"],
            vec!["gen", "-h", hosts],
            vec!["replay", "--", "-h", hosts],
            vec!["run", "-h", "topics"],
        ] {
            assert!(reject_old_hostfile_flag(&argv(&help)).is_ok(), "{help:?}");
        }
    }
}
