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
    /// The final snapshot, the dead letters and the summary on stdout, as JSON lines.
    Stdout,
}

impl Output {
    /// Where the dead letters go, for the totals line.
    pub fn dead_letters(&self) -> String {
        match self {
            Output::Dir(dir) => dir.join("dead_letter.jsonl").display().to_string(),
            Output::Stdout => "the dead_letter lines on stdout".to_string(),
        }
    }
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

/// What a directory held besides its `*.jsonl` files, for the warning or the refusal.
#[derive(Default)]
struct Skipped {
    /// Files named like JSON lines under another extension (`*.JSONL`, `*.ndjson`, `*.json`).
    look_alike: Vec<String>,
    /// Subdirectories, with the number of `*.jsonl` files each holds.
    dirs: Vec<(String, usize)>,
    /// `*.jsonl` entries that are no regular file (a fifo, a device, a dangling symlink).
    irregular: Vec<String>,
    /// Anything else.
    other: Vec<String>,
}

/// Extensions of files that hold JSON lines under another name (compared case-insensitively).
const LOOK_ALIKE: [&str; 5] = ["jsonl", "ndjson", "json", "ldjson", "jsonlines"];

/// At most five names, then how many more.
fn some_names(names: &[String]) -> String {
    let mut text = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        text.push_str(&format!(" and {} more", names.len() - 5));
    }
    text
}

impl Skipped {
    fn is_empty(&self) -> bool {
        self.look_alike.is_empty() && self.dirs.is_empty() && self.irregular.is_empty() && self.other.is_empty()
    }

    /// The skipped entries, grouped, each group with why it was skipped.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.look_alike.is_empty() {
            let names = some_names(&self.look_alike);
            parts.push(format!("{names} (JSON lines under another name? a directory reads only *.jsonl: rename, or pass the file itself)"));
        }
        if !self.dirs.is_empty() {
            let names: Vec<String> = self.dirs.iter().map(|(d, _)| format!("{d}/")).collect();
            parts.push(format!("{} (subdirectories are not read)", some_names(&names)));
        }
        if !self.irregular.is_empty() {
            parts.push(format!("{} (not regular files)", some_names(&self.irregular)));
        }
        if !self.other.is_empty() {
            parts.push(some_names(&self.other));
        }
        parts.join("; ")
    }

    /// Why a directory with no `*.jsonl` file has none, and the likely fix: a subdirectory
    /// that has them (`input/` of a fixture case first), else `--allow-empty`.
    fn hint(&self, dir: &Path) -> String {
        let holding: Vec<&(String, usize)> = self.dirs.iter().filter(|(_, n)| *n > 0).collect();
        let best = holding.iter().find(|(d, _)| d == "input").or(holding.first());
        if let Some((sub, _)) = best {
            let listed: Vec<String> = holding.iter().map(|(d, n)| format!("{d}/ ({n})")).collect();
            return format!(
                ", but its subdirectories hold some: {}; did you mean {}?",
                some_names(&listed),
                dir.join(sub).display()
            );
        }
        let held = if self.is_empty() { "the directory is empty".to_string() } else { format!("it holds {}", self.describe()) };
        format!(" ({held}); pass --allow-empty to replay it anyway (outputs without data)")
    }
}

/// The `*.jsonl` files of `dir` (regular files, or symlinks to them) and what was skipped.
/// Hidden entries (`.name`) other than `*.jsonl` files are passed over silently, as `ls` does:
/// editors and version control keep theirs there.
fn list_dir(dir: &Path) -> Result<(Vec<PathBuf>, Skipped), ConfigError> {
    let unlisted = |cause| ConfigError::InputUnlisted { path: dir.to_path_buf(), cause };
    let mut files = Vec::new();
    let mut skipped = Skipped::default();
    for entry in std::fs::read_dir(dir).map_err(unlisted)? {
        let path = entry.map_err(unlisted)?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        let jsonl = path.extension().is_some_and(|e| e == "jsonl");
        let meta = std::fs::metadata(&path);
        match (jsonl, meta.as_ref().map(|m| m.file_type())) {
            (true, Ok(t)) if t.is_file() => files.push(path),
            (true, _) => skipped.irregular.push(name),
            _ if name.starts_with('.') => {}
            (false, Ok(t)) if t.is_dir() => {
                let inner = std::fs::read_dir(&path).map_or(0, |entries| {
                    entries.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "jsonl")).count()
                });
                skipped.dirs.push((name, inner));
            }
            _ if extension.is_some_and(|e| LOOK_ALIKE.contains(&e.as_str())) => skipped.look_alike.push(name),
            _ => skipped.other.push(name),
        }
    }
    for names in [&mut skipped.look_alike, &mut skipped.irregular, &mut skipped.other] {
        names.sort();
    }
    skipped.dirs.sort();
    Ok((files, skipped))
}

/// Whether a regular file holds at least one message (a non-blank line); reads up to the
/// first one. `None` for what cannot be looked into without consuming it (a pipe).
fn holds_message(path: &Path) -> Result<Option<bool>, ConfigError> {
    let unreadable = |cause| ConfigError::InputUnreadable { path: path.to_path_buf(), cause };
    if !std::fs::metadata(path).map_err(unreadable)?.is_file() {
        return Ok(None);
    }
    let mut lines = crate::io::source::file::LineReader::open(path)?;
    Ok(Some(lines.next_message()?.is_some()))
}

/// Resolves INPUT arguments (directories mean every `*.jsonl` inside) into files sorted by
/// base name, refusing two inputs with the same base name. Wrong input is loud: a directory
/// without `*.jsonl` files, or an input without a single message, is refused unless
/// `allow_empty` (then a warning says so); entries a directory skips are named in a warning.
pub fn resolve_inputs(inputs: &[PathBuf], allow_empty: bool) -> Result<Vec<InputFile>, ConfigError> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for input in inputs {
        let meta =
            std::fs::metadata(input).map_err(|cause| ConfigError::InputUnreadable { path: input.clone(), cause })?;
        let files = if meta.is_dir() {
            let (files, skipped) = list_dir(input)?;
            if files.is_empty() {
                let hint = skipped.hint(input);
                if !allow_empty {
                    return Err(ConfigError::NoJsonlFiles { dir: input.clone(), hint });
                }
                tracing::warn!("{} holds no *.jsonl file{hint} (--allow-empty)", input.display());
            } else if !skipped.is_empty() {
                tracing::warn!("{}: read {} *.jsonl files; skipped {}", input.display(), files.len(), skipped.describe());
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
    let files: Vec<InputFile> = by_name.into_iter().map(|(name, path)| InputFile { name, path }).collect();
    check_messages(&files, allow_empty)?;
    Ok(files)
}

/// Refuses input files none of which holds a message (unless `allow_empty`), and names the
/// empty ones among others.
fn check_messages(files: &[InputFile], allow_empty: bool) -> Result<(), ConfigError> {
    let mut empty = Vec::new();
    // Whether a file holds a message, or may (a pipe cannot be looked into).
    let mut some = false;
    for file in files {
        match holds_message(&file.path)? {
            Some(false) => empty.push(file.path.display().to_string()),
            Some(true) | None => some = true,
        }
    }
    if some {
        if !empty.is_empty() {
            tracing::warn!("{} holds no messages (empty, or blank lines only)", some_names(&empty));
        }
        return Ok(());
    }
    if allow_empty {
        tracing::warn!("the input holds no messages (--allow-empty): the outputs will be empty");
        return Ok(());
    }
    Err(ConfigError::NoMessages { files: format!("{}: empty, or blank lines only", some_names(&empty)) })
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
    /// Where the dead letters go, for the totals line.
    pub fn dead_letters(&self) -> String {
        let topic = self.kafka_out.then(|| format!("topic {}.dead_letter", self.prefix));
        let file = self.out.as_ref().map(|dir| dir.join("dead_letter.jsonl").display().to_string());
        [topic, file].into_iter().flatten().collect::<Vec<_>>().join(" and ")
    }

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
