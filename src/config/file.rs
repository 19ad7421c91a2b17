//! `--config FILE.toml` for `replay`, `run`, `batch` and `explain`, and `stockflow config check`.
//!
//! A key is its flag's long name in snake_case (`tick_ms` is `--tick-ms`), a positional argument
//! goes by its name (`inputs`), and the `[kafka]` table holds librdkafka properties (each one a
//! `-X key=value`). Keys are looked up in the clap command itself, so every flag a command has is
//! a key of its file, with clap's own value checks, and a flag added later needs nothing here.
//! The file's values are turned into flags placed before the command line's: a flag given on
//! the command line replaces the file's value (and a file value its flags conflict with), except
//! `-X`, whose properties are merged with `[kafka]` property by property (the command line's win).

use std::any::TypeId;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

/// The argument id of `--config` in every command that takes it.
const CONFIG_ID: &str = "config";
/// The table of librdkafka properties.
const KAFKA_TABLE: &str = "kafka";
/// The argument id of `-X key=value` (`crate::io::kafka::KafkaArgs::properties`).
const PROPERTIES_ID: &str = "properties";
/// The commands a config file can be for, in the order `config check` tries them.
const MODES: [&str; 4] = ["replay", "run", "batch", "explain"];

/// `--config FILE`, added to each command by [`with_config_flag`]: it is read before the command
/// line is parsed, so no field holds it.
fn config_arg() -> Arg {
    Arg::new(CONFIG_ID)
        .long("config")
        .value_name("FILE")
        .value_parser(clap::value_parser!(PathBuf))
        .help("A TOML file of these flags (key = flag in snake_case, [kafka] = -X); flags given here win")
}

/// `cli` with `--config FILE` on each command that takes a config file.
pub fn with_config_flag(mut cli: Command) -> Command {
    for mode in MODES {
        cli = cli.mut_subcommand(mode, |c| c.arg(config_arg()));
    }
    cli
}

/// `stockflow config ...`.
#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

#[derive(clap::Subcommand, Debug)]
enum ConfigAction {
    /// Validates a config file and prints the configuration it resolves to (the file's values,
    /// then the defaults), secrets masked.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
struct CheckArgs {
    /// The TOML file.
    file: PathBuf,
    /// The command the file is for (default: the first of replay, run, batch, explain that has
    /// every key of the file).
    #[arg(long, value_parser = MODES)]
    mode: Option<String>,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
}

/// A parsed config file.
struct ConfigFile {
    path: PathBuf,
    table: toml::Table,
    /// The line of each top-level key, for messages.
    lines: std::collections::BTreeMap<String, usize>,
}

impl ConfigFile {
    fn load(path: &Path) -> Result<ConfigFile> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read the config file {}", path.display()))?;
        let table = text.parse::<toml::Table>().map_err(|e| {
            anyhow::anyhow!("config file {} is not valid TOML: {}", path.display(), e.to_string().trim_end())
        })?;
        // The table above drops where keys were; the parser's own document keeps their spans.
        let lines = match toml::de::DeTable::parse(&text) {
            Ok(document) => document
                .get_ref()
                .iter()
                .map(|(key, _)| (key.get_ref().to_string(), text[..key.span().start].matches('\n').count() + 1))
                .collect(),
            Err(_) => Default::default(),
        };
        Ok(ConfigFile { path: path.to_path_buf(), table, lines })
    }

    /// `PATH, line N` of `key` (just the path when the line is unknown).
    fn at(&self, key: &str) -> String {
        match self.lines.get(key) {
            Some(line) => format!("{}, line {line}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

/// One key of a config file as the command-line tokens of its flag.
struct Setting {
    /// The clap argument id.
    id: String,
    /// `--long=value` tokens (or bare values for a positional argument).
    tokens: Vec<OsString>,
    positional: bool,
}

/// The config key of `arg`, if it has one.
fn key_of(arg: &Arg) -> Option<String> {
    let id = arg.get_id().as_str();
    if matches!(id, "help" | "version" | CONFIG_ID | PROPERTIES_ID) {
        return None;
    }
    match arg.get_long() {
        Some(long) => Some(long.replace('-', "_")),
        None if arg.is_positional() => Some(id.to_string()),
        None => None,
    }
}

/// Every key `command` accepts, in the order of its flags.
fn keys(command: &Command) -> Vec<String> {
    let mut keys: Vec<String> = command.get_arguments().filter_map(key_of).collect();
    if command.get_arguments().any(|a| a.get_id() == PROPERTIES_ID) {
        keys.push(format!("[{KAFKA_TABLE}]"));
    }
    keys
}

/// A scalar TOML value as the text of a flag's value.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// The `[kafka]` table as `(property, value)` pairs. TOML reads `sasl.mechanism = "PLAIN"` as
/// nested tables, so nested keys are joined with dots again: the dotted and the quoted
/// spelling of a property mean the same.
fn kafka_properties(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) -> Result<(), String> {
    for (key, value) in table {
        let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        match value {
            toml::Value::Table(inner) => kafka_properties(&name, inner, out)?,
            other => match scalar(other) {
                Some(text) => out.push((name, text)),
                None => return Err(format!("[{KAFKA_TABLE}] {name}: expected a string, number or boolean")),
            },
        }
    }
    Ok(())
}

/// Clears every `required` so that a partial set of flags parses (the file alone, or the
/// command line alone).
fn relaxed(command: Command) -> Command {
    command.mut_args(|a| a.required(false)).mut_subcommands(relaxed)
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Parses `tokens` as the flags of `command` with nothing required.
fn parse_relaxed(command: &Command, mode: &str, tokens: &[OsString]) -> Result<ArgMatches, clap::Error> {
    let argv = std::iter::once(OsString::from(mode)).chain(tokens.iter().cloned());
    relaxed(command.clone()).try_get_matches_from(argv)
}

/// Turns each key of `file` into the flags of `command` (the `mode` subcommand), checking every
/// value with clap's own parser. Unknown keys and bad values are errors naming the key and file.
fn settings(file: &ConfigFile, command: &Command, mode: &str) -> Result<Vec<Setting>> {
    let unknown = |key: &str| {
        anyhow::anyhow!(
            "config file {}: unknown key `{key}` for `stockflow {mode}`; its keys are {}",
            file.at(key),
            keys(command).join(", ")
        )
    };
    let mut settings = Vec::new();
    for (key, value) in &file.table {
        let path = file.at(key);
        let setting = if key == KAFKA_TABLE {
            if !command.get_arguments().any(|a| a.get_id() == PROPERTIES_ID) {
                return Err(unknown(key));
            }
            let toml::Value::Table(table) = value else {
                bail!("config file {path}: `{KAFKA_TABLE}` must be a table of librdkafka properties ([{KAFKA_TABLE}])");
            };
            let mut properties = Vec::new();
            kafka_properties("", table, &mut properties).map_err(|e| anyhow::anyhow!("config file {path}: {e}"))?;
            // TOML puts every key after `[kafka]` into that table, so a stockflow key written
            // below it lands here; librdkafka's own property names have no underscores.
            let own = keys(command);
            if let Some((name, _)) = properties.iter().find(|(name, _)| own.contains(name)) {
                bail!(
                    "config file {path}: `{name}` is in [{KAFKA_TABLE}] but is a stockflow key; move it above the [{KAFKA_TABLE}] line (TOML puts the keys after a table's header into that table)"
                );
            }
            let tokens = properties.into_iter().flat_map(|(k, v)| [OsString::from("-X"), format!("{k}={v}").into()]);
            Setting { id: PROPERTIES_ID.to_string(), tokens: tokens.collect(), positional: false }
        } else {
            let Some(arg) = command.get_arguments().find(|a| key_of(a).as_deref() == Some(key.as_str())) else {
                return Err(unknown(key));
            };
            let values = arg_values(arg, value).map_err(|e| anyhow::anyhow!("config file {path}: key `{key}`: {e}"))?;
            let positional = arg.is_positional();
            let tokens = match (positional, arg.get_long()) {
                (true, _) => values.into_iter().map(OsString::from).collect(),
                (false, Some(long)) => values
                    .into_iter()
                    .map(|v| {
                        if matches!(arg.get_action(), ArgAction::SetTrue) {
                            format!("--{long}")
                        } else {
                            format!("--{long}={v}")
                        }
                    })
                    .map(OsString::from)
                    .collect(),
                (false, None) => unreachable!("key_of gives keys only to long flags and positionals"),
            };
            Setting { id: arg.get_id().to_string(), tokens, positional }
        };
        // clap checks the values (numbers, choices, times that parse) one key at a time, so
        // the error names the key.
        let mut alone = setting.tokens.clone();
        if setting.positional {
            alone.insert(0, "--".into());
        }
        parse_relaxed(command, mode, &alone)
            .map_err(|e| anyhow::anyhow!("config file {path}: key `{key}`: {}", clap_message(&e)))?;
        settings.push(setting);
    }
    Ok(settings)
}

/// The values a TOML value gives `arg`: one per occurrence of the flag.
fn arg_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, String> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![String::new()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".to_string()),
        };
    }
    let many = matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    match value {
        toml::Value::Array(items) if many => items
            .iter()
            .map(|item| scalar(item).ok_or_else(|| "expected an array of strings or numbers".to_string()))
            .collect(),
        toml::Value::Array(_) => Err("expected one value, not an array".to_string()),
        other => scalar(other).map(|s| vec![s]).ok_or_else(|| "expected a string or a number".to_string()),
    }
}

/// The command line with the flags of `--config FILE` (when given) put before the command
/// line's own, leaving out those the command line gives (`-X` excepted: see the module doc).
/// Any other command line is returned as it is, to be parsed (and its errors told) by clap.
pub fn merged_args(argv: Vec<OsString>, cli: Command) -> Result<Vec<OsString>> {
    let Ok(matches) = relaxed(cli.clone()).try_get_matches_from(argv.clone()) else {
        return Ok(argv);
    };
    let Some((mode, given)) = matches.subcommand() else {
        return Ok(argv);
    };
    let Ok(Some(path)) = given.try_get_one::<PathBuf>(CONFIG_ID) else {
        return Ok(argv);
    };
    let command = cli.find_subcommand(mode).expect("clap matched this subcommand");
    let file = ConfigFile::load(path)?;
    let settings = settings(&file, command, mode)?;

    let at = argv.iter().skip(1).position(|a| a == mode).map_or(argv.len(), |i| i + 2);
    let (head, tail) = argv.split_at(at);
    let mut merged = head.to_vec();
    let mut positionals = Vec::new();
    let mut built = command.clone();
    built.build();
    let on_command_line = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    for setting in settings {
        if (on_command_line(&setting.id) && setting.id != PROPERTIES_ID) || overruled(&built, &setting.id, given) {
            continue;
        }
        if setting.positional {
            positionals.extend(setting.tokens);
        } else {
            merged.extend(setting.tokens);
        }
    }
    merged.extend_from_slice(tail);
    if !positionals.is_empty() {
        // After `--`, so that a value starting with '-' is not read as a flag.
        if !tail.iter().any(|a| a == "--") {
            merged.push("--".into());
        }
        merged.extend(positionals);
    }
    Ok(merged)
}

/// Whether a flag on the command line conflicts with `id` (`--at-least-once` given, the file
/// saying `exactly_once = true`): the command line wins there too, so the file's value goes.
fn overruled(command: &Command, id: &str, given: &ArgMatches) -> bool {
    let Some(arg) = command.get_arguments().find(|a| a.get_id() == id) else { return false };
    let conflicts_with_arg = command.get_arg_conflicts_with(arg);
    command
        .get_arguments()
        .filter(|other| given.value_source(other.get_id().as_str()) == Some(ValueSource::CommandLine))
        .any(|other| {
            conflicts_with_arg.iter().any(|c| c.get_id() == other.get_id())
                || command.get_arg_conflicts_with(other).iter().any(|c| c.get_id() == id)
        })
}

/// `stockflow config check`: validates the file for a command and prints what it resolves to.
pub fn run(args: ConfigArgs, cli: Command) -> Result<()> {
    let ConfigAction::Check(check) = args.action;
    let file = ConfigFile::load(&check.file)?;
    let mode = match check.mode {
        Some(mode) => mode,
        None => infer_mode(&file, &cli),
    };
    let command = cli.find_subcommand(&mode).expect("MODES are subcommands");
    let settings = settings(&file, command, &mode)?;
    let mut tokens = Vec::new();
    let mut positionals = Vec::new();
    for setting in settings {
        if setting.positional {
            positionals.extend(setting.tokens);
        } else {
            tokens.extend(setting.tokens);
        }
    }
    if !positionals.is_empty() {
        tokens.push("--".into());
        tokens.extend(positionals);
    }
    let matches = parse_relaxed(command, &mode, &tokens)
        .map_err(|e| anyhow::anyhow!("config file {}: {}", check.file.display(), clap_message(&e)))?;
    validate(&matches).map_err(|e| anyhow::anyhow!("config file {}: {e}", check.file.display()))?;
    print!("{}", resolved(&file, command, &mode, &matches));
    Ok(())
}

/// The first command that knows every key of `file`; else the one knowing the most (whose
/// error then names an unknown key).
fn infer_mode(file: &ConfigFile, cli: &Command) -> String {
    let unknown = |mode: &str| {
        let keys = keys(cli.find_subcommand(mode).expect("MODES are subcommands"));
        file.table
            .keys()
            .filter(|k| {
                let key = if *k == KAFKA_TABLE { format!("[{KAFKA_TABLE}]") } else { k.to_string() };
                !keys.contains(&key)
            })
            .count()
    };
    MODES.iter().min_by_key(|mode| unknown(mode)).expect("MODES is not empty").to_string()
}

/// The checks the commands make before they start, on whatever the file sets: times parse,
/// the tick is positive, the cluster is consistent, inputs exist, Kafka properties are
/// `key=value` and their file reads.
fn validate(matches: &ArgMatches) -> Result<()> {
    fn get<T: Clone + Send + Sync + 'static>(m: &ArgMatches, id: &str) -> Option<T> {
        m.try_get_one::<T>(id).ok().flatten().cloned()
    }
    if get::<u64>(matches, "tick_ms") == Some(0) {
        bail!("tick_ms must be at least 1");
    }
    for key in ["until", "at"] {
        if let Some(text) = get::<String>(matches, key) {
            crate::config::time_arg(key, &text)?;
        }
    }
    let (workers, processes, process) = (
        get::<usize>(matches, "workers").unwrap_or(1),
        get::<usize>(matches, "processes").unwrap_or(1),
        get::<usize>(matches, "process").unwrap_or(0),
    );
    if workers == 0 || processes == 0 || process >= processes {
        bail!("need workers >= 1, processes >= 1 and 0 <= process < processes (got {workers}, {processes}, {process})");
    }
    if let Ok(Some(inputs)) = matches.try_get_many::<PathBuf>("inputs") {
        crate::config::resolve_inputs(&inputs.cloned().collect::<Vec<_>>())?;
    }
    if let Some(brokers) = get::<String>(matches, "brokers") {
        let properties = matches
            .try_get_many::<String>(PROPERTIES_ID)
            .ok()
            .flatten()
            .map(|p| p.cloned().collect())
            .unwrap_or_default();
        let kafka = crate::io::kafka::KafkaArgs { brokers, properties, kafka_config: get(matches, "kafka_config") };
        // librdkafka checks each property's name and value as it is set, without connecting.
        // Its message repeats the value, so a refused secret is masked there too.
        if let Err(e) = kafka.client_config(&[])?.create_native_config() {
            let mut message = e.to_string();
            for (key, value) in kafka.properties()? {
                if is_secret(&key) && !value.is_empty() {
                    message = message.replace(&value, "****");
                }
            }
            bail!("a Kafka property ([{KAFKA_TABLE}] or kafka_config) is wrong: {message}");
        }
    }
    if matches.try_get_one::<bool>("no_kafka_out").ok().flatten() == Some(&true)
        && get::<PathBuf>(matches, "out").is_none()
    {
        bail!("no_kafka_out needs out (a directory), else the results go nowhere");
    }
    Ok(())
}

/// Whether a value is a secret, shown as `****`: any key naming a password, a secret or a key
/// (`ssl.key.pem`, `ssl.key.password`, `ssl.keystore.location`: a location is masked too, as
/// erring that way costs nothing), and the properties that hold credentials inline.
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key"].iter().any(|word| key.contains(word))
        || matches!(key.as_str(), "sasl.jaas.config" | "sasl.oauthbearer.config")
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// The resolved configuration as TOML: every key of the command, from the file or its default
/// (marked), unset ones as comments, then `[kafka]`; secrets masked.
fn resolved(file: &ConfigFile, command: &Command, mode: &str, matches: &ArgMatches) -> String {
    // Values TOML writes bare (numbers, booleans such as `exactly_once`); the rest are strings.
    let bare =
        [TypeId::of::<u64>(), TypeId::of::<usize>(), TypeId::of::<i64>(), TypeId::of::<i32>(), TypeId::of::<bool>()];
    let mut out = format!(
        "# stockflow {mode}: {} resolved (its values, then the defaults, marked); flags on the command line override these\n",
        file.path.display()
    );
    for arg in command.get_arguments() {
        let Some(key) = key_of(arg) else { continue };
        let source = matches.value_source(arg.get_id().as_str());
        let note = if source == Some(ValueSource::DefaultValue) { "  # default" } else { "" };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            let _ = writeln!(out, "{key} = {}{note}", matches.get_flag(arg.get_id().as_str()));
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(arg.get_id().as_str())
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if values.is_empty() {
            let required = if arg.is_required_set() { " (required: set it here or on the command line)" } else { "" };
            let _ = writeln!(out, "# {key}: not set{required}");
            continue;
        }
        let is_bare = bare.iter().any(|t| arg.get_value_parser().type_id() == *t);
        let literal = |v: &String| {
            if is_secret(&key) {
                quoted("****")
            } else if is_bare {
                v.clone()
            } else {
                quoted(v)
            }
        };
        let many = matches!(arg.get_action(), ArgAction::Append);
        let value = if many {
            format!("[{}]", values.iter().map(literal).collect::<Vec<_>>().join(", "))
        } else {
            literal(&values[0])
        };
        let _ = writeln!(out, "{key} = {value}{note}");
    }
    if let Some(toml::Value::Table(table)) = file.table.get(KAFKA_TABLE) {
        let mut properties = Vec::new();
        // Checked by `settings` already.
        let _ = kafka_properties("", table, &mut properties);
        properties.sort();
        let _ = writeln!(out, "\n[{KAFKA_TABLE}]");
        for (key, value) in properties {
            let value = if is_secret(&key) { "****" } else { value.as_str() };
            let _ = writeln!(out, "{} = {}", quoted(&key), quoted(value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("stockflow").subcommand(
            Command::new("run")
                .arg(config_arg())
                .arg(Arg::new("topics").long("topics").action(ArgAction::Append).value_delimiter(',').required(true))
                .arg(Arg::new("tick_ms").long("tick-ms").value_parser(clap::value_parser!(u64)).default_value("1000"))
                .arg(Arg::new("quiet").long("quiet").action(ArgAction::SetTrue))
                .arg(Arg::new(PROPERTIES_ID).short('X').action(ArgAction::Append)),
        )
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_command_line_wins_and_kafka_properties_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "topics = [\"a\", \"b\"]\ntick_ms = 500\nquiet = true\n[kafka]\nsasl.mechanism = \"PLAIN\"\n\"client.id\" = \"x\"\n",
        );
        let p = path.to_str().unwrap();
        let merged =
            merged_args(args(&["stockflow", "run", "--config", p, "--tick-ms", "7", "-X", "a=b"]), cli()).unwrap();
        let matches = cli().try_get_matches_from(merged).unwrap();
        let run = matches.subcommand_matches("run").unwrap();
        assert_eq!(run.get_one::<u64>("tick_ms"), Some(&7));
        assert!(run.get_flag("quiet"));
        let topics: Vec<&String> = run.get_many("topics").unwrap().collect();
        assert_eq!(topics, ["a", "b"]);
        let props: Vec<&String> = run.get_many(PROPERTIES_ID).unwrap().collect();
        assert_eq!(props, ["client.id=x", "sasl.mechanism=PLAIN", "a=b"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "topics = \"a\"\ntick = 5\n");
        let argv = args(&["stockflow", "run", "--config", path.to_str().unwrap()]);
        let err = merged_args(argv.clone(), cli()).unwrap_err().to_string();
        assert!(err.contains("unknown key `tick`") && err.contains("c.toml") && err.contains("tick_ms"), "{err}");
        write(dir.path(), "tick_ms = \"soon\"\n");
        let err = merged_args(argv.clone(), cli()).unwrap_err().to_string();
        assert!(err.contains("key `tick_ms`") && err.contains("soon"), "{err}");
        write(dir.path(), "quiet = \"yes\"\n");
        let err = merged_args(argv, cli()).unwrap_err().to_string();
        assert!(err.contains("key `quiet`: expected true or false"), "{err}");
    }

    #[test]
    fn secrets_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
            "SSL.Key.Location",
            "sasl.jaas.config",
        ] {
            assert!(is_secret(key), "{key}");
        }
        assert!(!is_secret("sasl.username") && !is_secret("security.protocol"));
    }
}
