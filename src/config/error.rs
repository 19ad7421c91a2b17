//! Why a configuration was refused: the flags, a `--config` file, the inputs or the Kafka
//! properties. Every message names where (flag, `file, line N`, path) and what to do, and quotes
//! keys, never the value of a secret.

use std::fmt;
use std::path::PathBuf;

use dataflows::model::Millis;

/// Where a key of a config file is: `PATH, line N`, or the path alone when the line is unknown.
#[derive(Debug, Clone)]
pub struct At {
    /// The config file.
    pub path: PathBuf,
    /// The key's line, 1-based.
    pub line: Option<usize>,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}, line {line}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// Where a librdkafka property was set.
#[derive(Debug, Clone)]
pub enum Origin {
    /// `--brokers`.
    Brokers,
    /// A `-X key=value`.
    Flag,
    /// A line of `--kafka-config FILE`.
    PropertiesFile(PathBuf, usize),
    /// The `[kafka]` table of a config file.
    ConfigFile(At),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Brokers => write!(f, "--brokers"),
            Origin::Flag => write!(f, "-X"),
            Origin::PropertiesFile(path, line) => write!(f, "--kafka-config {}:{line}", path.display()),
            Origin::ConfigFile(at) => write!(f, "config file {at}: [kafka]"),
        }
    }
}

/// `" (did you mean `X`?)"`, or nothing.
pub(crate) fn suggest(suggestion: &Option<String>) -> String {
    suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default()
}

fn cluster_message(workers: usize, processes: usize, process: usize) -> String {
    if workers == 0 || processes == 0 {
        format!("-w {workers} -n {processes}: a cluster has at least 1 process of at least 1 worker")
    } else {
        format!("-p {process} is not a process of -n {processes}: processes are numbered 0 to {}", processes - 1)
    }
}

/// A configuration that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `-p` outside `0..-n`, or no workers or processes.
    #[error("{}", cluster_message(*.workers, *.processes, *.process))]
    Cluster {
        /// `-w`.
        workers: usize,
        /// `-n`.
        processes: usize,
        /// `-p`.
        process: usize,
    },
    /// The hostfile or the secret file is unusable, or a cluster beyond loopback has no secret.
    #[error(transparent)]
    ClusterFiles(#[from] crate::runtime::cluster::ClusterError),
    /// The old `-h FILE` form of the hostfile flag.
    #[error("-h prints help; the hostfile flag is --hostfile: write --hostfile {0}")]
    OldHostfileFlag(String),
    /// `--no-kafka-out` without `--out`.
    #[error("--no-kafka-out needs --out DIR, else the results go nowhere")]
    NoOutput,
    /// `explain --at` after `--until`.
    #[error("--at {at} lies after --until {until}; the state after the window's end is not computed")]
    AtAfterUntil {
        /// `--at`.
        at: Millis,
        /// `--until`.
        until: Millis,
    },
    /// `explain` with neither inputs nor a checkpoint.
    #[error(
        "explain needs INPUT... (fixture directories or .jsonl files, `inputs` in a config file) or --checkpoint DIR"
    )]
    ExplainWithoutInput,
    /// An input that cannot be read.
    #[error("input {} cannot be read ({cause}); pass a fixture directory or .jsonl files", .path.display())]
    InputUnreadable {
        /// The input.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// An input directory that cannot be listed.
    #[error("cannot list {}: {cause}", .path.display())]
    InputUnlisted {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Two inputs with one base name.
    #[error("two inputs have the base name {name}: {} and {}; positions name a file by its base name, so rename one", .first.display(), .second.display())]
    DuplicateBaseName {
        /// The base name.
        name: String,
        /// The first input with it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// An input whose name is not UTF-8.
    #[error("input {} has no UTF-8 file name", .0.display())]
    NonUtf8Name(PathBuf),
    /// A directory without a `*.jsonl` file (`hint`: what it holds, and the likely fix).
    #[error("{} holds no *.jsonl file{hint}", .dir.display())]
    NoJsonlFiles {
        /// The directory.
        dir: PathBuf,
        /// What it holds instead, and the likely fix.
        hint: String,
    },
    /// Every input file empty or blank: the replay would compute nothing.
    #[error("the input holds no messages ({files}); pass --allow-empty (allow_empty = true in a --config file) to replay it anyway")]
    NoMessages {
        /// The files and what they hold.
        files: String,
    },
    /// An input file that cannot be opened or read on (the error names it).
    #[error(transparent)]
    InputFile(#[from] crate::io::source::SourceError),
    /// `--kafka-config FILE` cannot be read.
    #[error("cannot read --kafka-config {}: {cause}", .path.display())]
    PropertiesUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// A librdkafka property that is not `key=value`; the text is not shown (it may hold a secret).
    #[error("{origin}: expected key=value (a librdkafka property) but found no `=`")]
    PropertyNotKeyValue {
        /// Where.
        origin: Origin,
    },
    /// A property librdkafka does not have.
    #[error("{origin}: librdkafka has no property `{key}`{}", suggest(.suggestion))]
    UnknownProperty {
        /// Where.
        origin: Origin,
        /// The name given.
        key: String,
        /// The closest property librdkafka has.
        suggestion: Option<String>,
    },
    /// A property whose value librdkafka refuses; `detail` is librdkafka's reason, with the
    /// value masked when the key names a secret.
    #[error("{origin}: property `{key}`: {detail}")]
    BadProperty {
        /// Where.
        origin: Origin,
        /// The property.
        key: String,
        /// librdkafka's reason.
        detail: String,
    },
    /// A config file that cannot be read.
    #[error("cannot read the config file {}: {cause}", .path.display())]
    FileUnreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// Not TOML: the parser's reason and where, without the line's text (it may hold a secret).
    #[error("config file {at} is not valid TOML{}: {message}", .key.as_ref().map(|k| format!(" (key `{k}`)")).unwrap_or_default())]
    Toml {
        /// Where.
        at: At,
        /// The key on that line, when there is one.
        key: Option<String>,
        /// The TOML parser's reason.
        message: String,
    },
    /// A key the command does not have.
    #[error("config file {at}: unknown key `{key}` for `stockflow {mode}`{}; its keys are {}", suggest(.suggestion), .keys.join(", "))]
    UnknownKey {
        /// Where.
        at: At,
        /// The key.
        key: String,
        /// The command.
        mode: String,
        /// The closest key the command has.
        suggestion: Option<String>,
        /// Every key the command has.
        keys: Vec<String>,
    },
    /// A value its flag refuses (clap's message, the value masked when the key names a secret).
    #[error("config file {at}: key `{key}`: {message}")]
    BadValue {
        /// Where.
        at: At,
        /// The key.
        key: String,
        /// Why.
        message: String,
    },
    /// `kafka = ...` that is not a table.
    #[error("config file {0}: `kafka` must be a table of librdkafka properties ([kafka])")]
    KafkaNotTable(At),
    /// A stockflow key written below `[kafka]`.
    #[error("config file {at}: `{key}` is in [kafka] but is a stockflow key; move it above the [kafka] line (TOML puts the keys after a table's header into that table)")]
    KeyInKafkaTable {
        /// Where.
        at: At,
        /// The key.
        key: String,
    },
    /// A `[kafka]` value that is an array or a table.
    #[error("config file {at}: [kafka] {key}: expected a string, number or boolean")]
    KafkaValue {
        /// Where.
        at: At,
        /// The property.
        key: String,
    },
    /// Keys of a file that clap refuses together (two that conflict).
    #[error("config file {}: {message}", .path.display())]
    Rejected {
        /// The file.
        path: PathBuf,
        /// clap's reason.
        message: String,
    },
    /// A whole file refused by the command's own checks (`config check`).
    #[error("config file {}: {error}", .path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// Why.
        error: Box<ConfigError>,
    },
}
