//! The validated run configuration: inputs resolved to files with unique names, clocks, and
//! timely's cluster settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dataflows::clock::Ticks;
use dataflows::model::Millis;

pub mod file;

/// The window flags of a replay, shared by `replay` and `explain`.
#[derive(clap::Args, Debug, Clone)]
pub struct WindowArgs {
    /// Tick length in milliseconds: outputs are emitted at its multiples.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// Allowed lateness per (source, partition), in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub lateness_ms: u64,
    /// End of the window: milliseconds since the epoch or RFC 3339.
    #[arg(long)]
    pub until: Option<String>,
}

impl WindowArgs {
    /// `--until`, parsed; fails on a zero `--tick-ms` too, so callers check both at once.
    pub fn until(&self) -> Result<Option<Millis>> {
        if self.tick_ms == 0 {
            bail!("--tick-ms must be at least 1");
        }
        self.until.as_deref().map(|t| time_arg("--until", t)).transpose()
    }
}

/// Parses the time given to `flag`, naming both in the error.
pub fn time_arg(flag: &str, text: &str) -> Result<Millis> {
    dataflows::decode::parse_time(text).with_context(|| {
        format!("{flag} {text:?} is neither milliseconds since the epoch nor an RFC 3339 time within year 1970..9999")
    })
}

/// One input file: a partition-0 source named by its base name.
#[derive(Clone, Debug)]
pub struct InputFile {
    /// The base name, which is the source's name in positions and dead letters.
    pub name: String,
    /// Where to read it.
    pub path: PathBuf,
}

/// Where a replay's results go.
#[derive(Clone, Debug)]
pub enum Output {
    /// A directory receiving SPEC §4's files.
    Dir(PathBuf),
    /// The final snapshot on stdout.
    Stdout,
}

/// Timely's worker and cluster settings.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index.
    pub process: usize,
    /// File with one `host:port` per process (default: localhost:2101 + index).
    pub hostfile: Option<PathBuf>,
}

impl Cluster {
    /// The timely configuration these settings describe.
    pub fn timely_config(&self) -> Result<timely::Config> {
        let mut args = vec!["stockflow".to_string(), "-w".into(), self.workers.to_string()];
        if self.processes > 1 {
            args.extend(["-n".into(), self.processes.to_string(), "-p".into(), self.process.to_string()]);
            if let Some(hostfile) = &self.hostfile {
                args.extend(["-h".into(), hostfile.display().to_string()]);
            }
        }
        timely::Config::from_args(args.into_iter()).map_err(|e| anyhow::anyhow!("invalid cluster settings: {e}"))
    }
}

/// Everything a replay needs, validated.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// Input files, sorted by name; a file's index is its source id.
    pub inputs: Vec<InputFile>,
    /// Where results go.
    pub output: Output,
    /// Tick and window.
    pub ticks: Ticks,
    /// Allowed lateness per partition.
    pub lateness_ms: Millis,
    /// Silences the progress line.
    pub quiet: bool,
    /// Also prints the final snapshot on stdout.
    pub print: bool,
    /// Workers and processes.
    pub cluster: Cluster,
}

/// Resolves INPUT arguments (directories mean every `*.jsonl` inside) into files sorted by
/// base name, refusing two inputs with the same base name.
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<InputFile>> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for input in inputs {
        let meta = std::fs::metadata(input).with_context(|| {
            format!("input {} cannot be read; pass a fixture directory or .jsonl files", input.display())
        })?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(input).with_context(|| format!("cannot list {}", input.display()))? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "jsonl") && path.is_file() {
                    files.push(path);
                }
            }
            files
        } else {
            vec![input.clone()]
        };
        for path in files {
            let name = base_name(&path)?;
            if let Some(other) = by_name.get(&name) {
                bail!(
                    "two inputs have the base name {name}: {} and {}; positions name a file by its base name, so rename one",
                    other.display(),
                    path.display()
                );
            }
            by_name.insert(name, path);
        }
    }
    Ok(by_name.into_iter().map(|(name, path)| InputFile { name, path }).collect())
}

fn base_name(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .with_context(|| format!("input {} has no UTF-8 file name", path.display()))
}

/// Whether a Kafka run goes on forever or ends at its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// `run`: continuous, until SIGINT/SIGTERM.
    Run,
    /// `batch`: reads up to the end offsets captured at start-up, writes the state at `--until`.
    Batch,
}

/// `--checkpoint-every`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointEvery {
    /// Wall-clock interval.
    Wall(Duration),
    /// Event-time interval in ticks.
    Ticks(u64),
}

impl std::str::FromStr for CheckpointEvery {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let number = |digits: &str| digits.parse::<u64>().ok().filter(|&n| n > 0);
        let parsed = if let Some(m) = text.strip_suffix('m') {
            number(m).map(|n| CheckpointEvery::Wall(Duration::from_secs(n * 60)))
        } else if let Some(sec) = text.strip_suffix('s') {
            number(sec).map(|n| CheckpointEvery::Wall(Duration::from_secs(n)))
        } else {
            number(text).map(CheckpointEvery::Ticks)
        };
        parsed.ok_or_else(|| format!("{text:?}: expected a number of ticks (600), seconds (30s) or minutes (5m), above 0"))
    }
}

/// Where and how often a Kafka run checkpoints.
#[derive(Clone, Debug)]
pub struct Checkpointing {
    /// Checkpoints are written here, and the newest complete one is the start.
    pub dir: PathBuf,
    /// How often worker 0 asks for one.
    pub every: CheckpointEvery,
}

/// Everything `run` and `batch` need, validated.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// Continuous or up to a window's end.
    pub mode: StreamMode,
    /// Every librdkafka property of the clients.
    pub kafka: crate::io::kafka::KafkaClient,
    /// Input topics, sorted and without repeats: a topic's index is its source id.
    pub topics: Vec<String>,
    /// The consumer group.
    pub group: String,
    /// Output topics are `<prefix>.<stream>`.
    pub prefix: String,
    /// Also write the output files into this directory.
    pub out: Option<PathBuf>,
    /// Produce the outputs to Kafka (off with `--no-kafka-out`).
    pub kafka_out: bool,
    /// Partitions of the output topics stockflow creates.
    pub output_partitions: i32,
    /// Tick and window.
    pub ticks: Ticks,
    /// Allowed lateness per (topic, partition).
    pub lateness_ms: Millis,
    /// `run`: a partition with nothing new for this long follows the wall clock.
    pub idle: Duration,
    /// `run`: how often to look for new partitions and topics.
    pub metadata_refresh: Duration,
    /// Start position without committed offsets or a checkpoint.
    pub start: crate::io::source::kafka::Start,
    /// Silences the progress line.
    pub quiet: bool,
    /// Checkpoints, with `--checkpoint-dir`.
    pub checkpoints: Option<Checkpointing>,
    /// Transactions where the broker has them.
    pub exactly_once: bool,
    /// Workers and processes.
    pub cluster: Cluster,
}

impl StreamConfig {
    /// Whether this is a `batch` run.
    pub fn batch(&self) -> bool {
        self.mode == StreamMode::Batch
    }
}
