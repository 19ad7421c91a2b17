//! The validated run configurations every command starts from (replay, run/batch, explain):
//! inputs resolved to files with unique names, clocks, Kafka properties and timely's cluster
//! settings, each checked by one function that every command and `config check` share.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataflows::clock::Ticks;
use dataflows::model::Millis;
use dataflows::Key;

pub mod check;
pub mod error;
pub mod file;
pub mod kafka;
pub mod secret;
pub mod value;

pub use error::ConfigError;
pub use value::CheckpointEvery;

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
    /// File holding the secret every process of the cluster proves in its handshake.
    pub secret_file: Option<PathBuf>,
    /// The cluster's generation: processes of different generations refuse each other.
    pub generation: u64,
}

impl Cluster {
    /// Checks the cluster flags (`-w`, `-n`, `-p`, `--hostfile`, `--cluster-secret-file`,
    /// `--cluster-generation`): the one place every command and `config check` validate them.
    /// The hostfile and the secret file are read and checked here (`runtime::cluster::check`).
    pub fn new(
        workers: usize,
        processes: usize,
        process: usize,
        hostfile: Option<PathBuf>,
        secret_file: Option<PathBuf>,
        generation: u64,
    ) -> Result<Cluster, ConfigError> {
        if workers == 0 || processes == 0 || process >= processes {
            return Err(ConfigError::Cluster { workers, processes, process });
        }
        let cluster = Cluster { workers, processes, process, hostfile, secret_file, generation };
        crate::runtime::cluster::check(&cluster)?;
        Ok(cluster)
    }

    /// One process of `workers` threads.
    pub fn local(workers: usize) -> Result<Cluster, ConfigError> {
        Cluster::new(workers, 1, 0, None, None, 0)
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
pub fn resolve_inputs(inputs: &[PathBuf]) -> Result<Vec<InputFile>, ConfigError> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).map_err(|cause| ConfigError::InputUnreadable { path: input.clone(), cause })?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let unlisted = |cause| ConfigError::InputUnlisted { path: input.clone(), cause };
            let mut files = Vec::new();
            for entry in std::fs::read_dir(input).map_err(unlisted)? {
                let path = entry.map_err(unlisted)?.path();
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
            if let Some(first) = by_name.get(&name) {
                return Err(ConfigError::DuplicateBaseName { name, first: first.clone(), second: path });
            }
            by_name.insert(name, path);
        }
    }
    Ok(by_name.into_iter().map(|(name, path)| InputFile { name, path }).collect())
}

fn base_name(path: &Path) -> Result<String, ConfigError> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| ConfigError::NonUtf8Name(path.to_path_buf()))
}

/// Whether a Kafka run goes on forever or ends at its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamMode {
    /// `run`: continuous, until SIGINT/SIGTERM.
    Run,
    /// `batch`: reads up to the end offsets captured at start-up, writes the state at `--until`.
    Batch,
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

/// `--no-kafka-out` needs `--out`: the results must go somewhere.
pub fn check_output(kafka_out: bool, out: Option<&Path>) -> Result<(), ConfigError> {
    if !kafka_out && out.is_none() {
        return Err(ConfigError::NoOutput);
    }
    Ok(())
}

/// Where `explain` takes the key's state from.
#[derive(Clone, Debug)]
pub enum ExplainSource {
    /// A replay of inputs; its window ends at `--at` when given, else at `--until`.
    Replay(ReplayConfig),
    /// The newest complete checkpoint of a `--checkpoint-dir`.
    Checkpoint {
        /// The checkpoint directory.
        dir: PathBuf,
        /// Worker threads that restore it.
        cluster: Cluster,
    },
}

/// Everything `explain` needs, validated.
#[derive(Clone, Debug)]
pub struct ExplainConfig {
    /// The key (sku, loc) to explain.
    pub key: Key,
    /// A replay or a checkpoint.
    pub source: ExplainSource,
    /// One JSON object instead of text.
    pub json: bool,
}

/// The end of `explain`'s window: the state at `at` is that of a window ending at `at`, so `--at`
/// narrows `--until` (and may not pass it).
pub fn explain_window(at: Option<Millis>, until: Option<Millis>) -> Result<Option<Millis>, ConfigError> {
    match (at, until) {
        (Some(at), Some(until)) if at > until => Err(ConfigError::AtAfterUntil { at, until }),
        (Some(at), _) => Ok(Some(at)),
        (None, until) => Ok(until),
    }
}
