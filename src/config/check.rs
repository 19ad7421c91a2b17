//! `stockflow config check`: a config file validated for a command — by the same value parsers
//! and the same cross-flag checks the command itself runs — and the configuration it resolves
//! to, as TOML with secrets masked.

use std::any::TypeId;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};

use super::error::ConfigError;
use super::file::{
    clap_message, kafka_properties, key_of, keys, parse_relaxed, settings, ConfigFile, KAFKA_TABLE, MODES,
    PROPERTIES_ID,
};
use super::secret::{is_secret, MASK};

/// Validates `path` for `mode` (default: the first command that has all its keys) and returns
/// the configuration it resolves to.
pub fn check(path: &Path, mode: Option<&str>, cli: &Command) -> Result<String, ConfigError> {
    let file = ConfigFile::load(path)?;
    let mode = mode.map_or_else(|| infer_mode(&file, cli), str::to_string);
    let command = cli.find_subcommand(&mode).expect("MODES are subcommands");
    let mut tokens = Vec::new();
    let mut positionals = Vec::new();
    for setting in settings(&file, command, &mode)? {
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
    let in_file = |error| ConfigError::InFile { path: path.to_path_buf(), error: Box::new(error) };
    let matches = parse_relaxed(command, &mode, &tokens)
        .map_err(|e| ConfigError::Rejected { path: path.to_path_buf(), message: clap_message(&e) })?;
    validate(&matches).map_err(in_file)?;
    Ok(resolved(&file, command, &mode, &matches))
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

fn get<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Option<T> {
    matches.try_get_one::<T>(id).ok().flatten().cloned()
}

/// The cross-flag checks the commands make before they start, on whatever the file sets (each
/// value was parsed by its flag's parser already): the cluster is consistent, inputs exist, the
/// Kafka properties file reads and librdkafka takes every property, `--no-kafka-out` has
/// `--out`, `--at` is not after `--until`.
fn validate(matches: &ArgMatches) -> Result<(), ConfigError> {
    if let Some(workers) = get::<usize>(matches, "workers") {
        let processes = get::<usize>(matches, "processes").unwrap_or(1);
        let process = get::<usize>(matches, "process").unwrap_or(0);
        super::Cluster::new(
            workers,
            processes,
            process,
            get::<PathBuf>(matches, "hostfile"),
            get::<PathBuf>(matches, "cluster_secret_file"),
            get::<u64>(matches, "cluster_generation").unwrap_or(0),
        )?;
    }
    if let Ok(Some(inputs)) = matches.try_get_many::<PathBuf>("inputs") {
        let allow_empty = get::<bool>(matches, "allow_empty").unwrap_or(false);
        super::resolve_inputs(&inputs.cloned().collect::<Vec<_>>(), allow_empty)?;
    }
    if let Some(brokers) = get::<String>(matches, "brokers") {
        let flags: Vec<String> = matches
            .try_get_many::<String>(PROPERTIES_ID)
            .ok()
            .flatten()
            .map(|p| p.cloned().collect())
            .unwrap_or_default();
        super::kafka::properties(&brokers, get::<PathBuf>(matches, "kafka_config").as_deref(), &flags)?;
    }
    if let Some(no_kafka_out) = get::<bool>(matches, "no_kafka_out") {
        super::check_output(!no_kafka_out, get::<PathBuf>(matches, "out").as_deref())?;
    }
    super::explain_window(get::<u64>(matches, "at"), get::<u64>(matches, "until"))?;
    Ok(())
}

/// A TOML string literal.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// How a value as typed is written in TOML: numbers and booleans bare when their flag takes a
/// number or a boolean and the text is one (`tick_ms = 1000`), anything else quoted
/// (`tick_ms = "1s"`); secrets masked.
fn literal(key: &str, numeric: bool, text: &str) -> String {
    let is_number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if is_secret(key) {
        quoted(MASK)
    } else if numeric && (is_number || text == "true" || text == "false") {
        text.to_string()
    } else {
        quoted(text)
    }
}

/// The resolved configuration as TOML: every key of the command, from the file or its default
/// (marked), unset ones as comments, then `[kafka]`; secrets masked.
fn resolved(file: &ConfigFile, command: &Command, mode: &str, matches: &ArgMatches) -> String {
    let numeric =
        [TypeId::of::<u64>(), TypeId::of::<usize>(), TypeId::of::<i64>(), TypeId::of::<i32>(), TypeId::of::<bool>()];
    let mut out = format!(
        "# stockflow {mode}: {} resolved (its values, then the defaults, marked); flags on the command line override these\n",
        file.path.display()
    );
    for arg in command.get_arguments() {
        let Some(key) = key_of(arg) else { continue };
        let id = arg.get_id().as_str();
        let note = if matches.value_source(id) == Some(ValueSource::DefaultValue) { "  # default" } else { "" };
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            let _ = writeln!(out, "{key} = {}{note}", matches.get_flag(id));
            continue;
        }
        let values: Vec<String> =
            matches.get_raw(id).map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect()).unwrap_or_default();
        if values.is_empty() {
            let required = if arg.is_required_set() { " (required: set it here or on the command line)" } else { "" };
            let _ = writeln!(out, "# {key}: not set{required}");
            continue;
        }
        let is_numeric = numeric.iter().any(|t| arg.get_value_parser().type_id() == *t);
        let value = if matches!(arg.get_action(), ArgAction::Append) {
            let items: Vec<String> = values.iter().map(|v| literal(&key, is_numeric, v)).collect();
            format!("[{}]", items.join(", "))
        } else {
            literal(&key, is_numeric, &values[0])
        };
        let _ = writeln!(out, "{key} = {value}{note}");
    }
    if let Some(toml::Value::Table(table)) = file.table.get(KAFKA_TABLE) {
        // Checked by `settings` already.
        let mut properties = kafka_properties(file, table).unwrap_or_default();
        properties.sort();
        let _ = writeln!(out, "\n[{KAFKA_TABLE}]");
        for (key, value) in properties {
            let _ = writeln!(out, "{} = {}", quoted(&key), literal(&key, false, &value));
        }
    }
    out
}
