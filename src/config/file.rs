//! `--config FILE.toml` for `replay`, `run`, `batch` and `explain`: a file of a command's flags.
//!
//! A key is its flag's long name in snake_case (`tick_ms` is `--tick-ms`), a positional argument
//! goes by its name (`inputs`), and the `[kafka]` table holds librdkafka properties (each one a
//! `-X key=value`). Keys are looked up in the clap command itself, so every flag a command has is
//! a key of its file, with the flag's own value parser, and a flag added later needs nothing here.
//! The file's values are turned into flags placed before the command line's: a flag given on
//! the command line replaces the file's value (and a file value its flags conflict with), except
//! `-X`, whose properties are merged with `[kafka]` property by property (the command line's win).
//! Errors name the file, the line and the key, never a secret's value nor a line's text.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::error::{At, ConfigError, Origin};
use super::secret;

/// The argument id of `--config` in every command that takes it.
const CONFIG_ID: &str = "config";
/// The table of librdkafka properties.
pub(super) const KAFKA_TABLE: &str = "kafka";
/// The argument id of `-X key=value` (`crate::io::kafka::KafkaArgs::properties`).
pub(super) const PROPERTIES_ID: &str = "properties";
/// The commands a config file can be for, in the order `config check` tries them.
pub const MODES: [&str; 4] = ["replay", "run", "batch", "explain"];

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

/// A parsed config file.
pub(super) struct ConfigFile {
    pub(super) path: PathBuf,
    pub(super) table: toml::Table,
    /// The line of each top-level key, for messages.
    lines: BTreeMap<String, usize>,
    /// The line of each `[kafka]` property (dotted name), for messages.
    kafka_lines: BTreeMap<String, usize>,
}

impl ConfigFile {
    pub(super) fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ConfigError::FileUnreadable { path: path.to_path_buf(), cause })?;
        let table = text.parse::<toml::Table>().map_err(|e| syntax_error(path, &text, &e))?;
        // The table above drops where keys were; the parser's own document keeps their spans.
        let (lines, kafka_lines) = match toml::de::DeTable::parse(&text) {
            Ok(document) => key_lines(&text, document.get_ref()),
            Err(_) => Default::default(),
        };
        Ok(ConfigFile { path: path.to_path_buf(), table, lines, kafka_lines })
    }

    /// Where `key` is.
    pub(super) fn at(&self, key: &str) -> At {
        At { path: self.path.clone(), line: self.lines.get(key).copied() }
    }

    /// Where the `[kafka]` property `name` is (the table's line when the property's is unknown).
    fn kafka_at(&self, name: &str) -> At {
        let line = self.kafka_lines.get(name).or_else(|| self.lines.get(KAFKA_TABLE)).copied();
        At { path: self.path.clone(), line }
    }
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The lines of the top-level keys and of the `[kafka]` properties (nested keys joined by dots).
fn key_lines(text: &str, document: &toml::de::DeTable<'_>) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    fn nested(text: &str, prefix: &str, table: &toml::de::DeTable<'_>, out: &mut BTreeMap<String, usize>) {
        for (key, value) in table {
            let name =
                if prefix.is_empty() { key.get_ref().to_string() } else { format!("{prefix}.{}", key.get_ref()) };
            match value.get_ref() {
                toml::de::DeValue::Table(inner) => nested(text, &name, inner, out),
                _ => {
                    out.insert(name, line_of(text, key.span().start));
                }
            }
        }
    }
    let mut top = BTreeMap::new();
    let mut kafka = BTreeMap::new();
    for (key, value) in document {
        top.insert(key.get_ref().to_string(), line_of(text, key.span().start));
        if let (KAFKA_TABLE, toml::de::DeValue::Table(inner)) = (key.get_ref().as_ref(), value.get_ref()) {
            nested(text, "", inner, &mut kafka);
        }
    }
    (top, kafka)
}

/// A TOML syntax error as its line, the key on that line and the parser's reason: the parser's
/// own rendering quotes the line, and the line may hold a password.
fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e.span().map(|span| line_of(text, span.start));
    let key = line.and_then(|n| text.lines().nth(n - 1)).and_then(|l| {
        let (key, _) = l.split_once('=')?;
        let key = key.trim().trim_start_matches('[').trim();
        let plain = key.chars().all(|c| c.is_ascii_alphanumeric() || "_-.\"' ".contains(c));
        (plain && !key.is_empty()).then(|| key.to_string())
    });
    let message = e.message().lines().next().unwrap_or_default().trim_end().to_string();
    ConfigError::Toml { at: At { path: path.to_path_buf(), line }, key, message }
}

/// One key of a config file as the command-line tokens of its flag.
pub(super) struct Setting {
    /// The clap argument id.
    pub(super) id: String,
    /// `--long=value` tokens (or bare values for a positional argument).
    pub(super) tokens: Vec<OsString>,
    pub(super) positional: bool,
}

/// The config key of `arg`, if it has one.
pub(super) fn key_of(arg: &Arg) -> Option<String> {
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
pub(super) fn keys(command: &Command) -> Vec<String> {
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
pub(super) fn kafka_properties(file: &ConfigFile, table: &toml::Table) -> Result<Vec<(String, String)>, ConfigError> {
    fn walk(
        file: &ConfigFile,
        prefix: &str,
        table: &toml::Table,
        out: &mut Vec<(String, String)>,
    ) -> Result<(), ConfigError> {
        for (key, value) in table {
            let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(inner) => walk(file, &name, inner, out)?,
                other => match scalar(other) {
                    Some(text) => out.push((name, text)),
                    None => return Err(ConfigError::KafkaValue { at: file.kafka_at(&name), key: name }),
                },
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(file, "", table, &mut out)?;
    Ok(out)
}

/// Clears every `required` so that a partial set of flags parses (the file alone, or the
/// command line alone).
fn relaxed(command: Command) -> Command {
    command.mut_args(|a| a.required(false)).mut_subcommands(relaxed)
}

/// The first line of a clap error, without its `error: ` prefix.
pub(super) fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Parses `tokens` as the flags of `command` with nothing required.
pub(super) fn parse_relaxed(command: &Command, mode: &str, tokens: &[OsString]) -> Result<ArgMatches, clap::Error> {
    let argv = std::iter::once(OsString::from(mode)).chain(tokens.iter().cloned());
    relaxed(command.clone()).try_get_matches_from(argv)
}

/// Turns each key of `file` into the flags of `command` (the `mode` subcommand), checking every
/// value with its flag's own parser and every `[kafka]` property with librdkafka. Unknown keys
/// and bad values are errors naming the key, the file and the line.
pub(super) fn settings(file: &ConfigFile, command: &Command, mode: &str) -> Result<Vec<Setting>, ConfigError> {
    let mut settings = Vec::new();
    for (key, value) in &file.table {
        let setting = if key == KAFKA_TABLE && command.get_arguments().any(|a| a.get_id() == PROPERTIES_ID) {
            kafka_setting(file, command, value)?
        } else {
            let Some(arg) = command.get_arguments().find(|a| key_of(a).as_deref() == Some(key.as_str())) else {
                return Err(unknown_key(file, command, mode, key));
            };
            flag_setting(file, arg, key, value)?
        };
        // Each key's flags parsed alone, so the error names the key.
        let mut alone = setting.tokens.clone();
        if setting.positional {
            alone.insert(0, "--".into());
        }
        parse_relaxed(command, mode, &alone).map_err(|e| {
            let raw = scalar(value).unwrap_or_default();
            ConfigError::BadValue {
                at: file.at(key),
                key: key.clone(),
                message: secret::masked(&clap_message(&e), key, &raw),
            }
        })?;
        settings.push(setting);
    }
    Ok(settings)
}

/// An unknown key, with the closest key the command has.
fn unknown_key(file: &ConfigFile, command: &Command, mode: &str, key: &str) -> ConfigError {
    let keys = keys(command);
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    let suggestion = super::value::closest(key, &names).map(str::to_string);
    ConfigError::UnknownKey { at: file.at(key), key: key.to_string(), mode: mode.to_string(), suggestion, keys }
}

/// `[kafka]` as `-X key=value` tokens, each property checked by librdkafka.
fn kafka_setting(file: &ConfigFile, command: &Command, value: &toml::Value) -> Result<Setting, ConfigError> {
    let toml::Value::Table(table) = value else {
        return Err(ConfigError::KafkaNotTable(file.at(KAFKA_TABLE)));
    };
    let properties = kafka_properties(file, table)?;
    // TOML puts every key after `[kafka]` into that table, so a stockflow key written below it
    // lands here; librdkafka's own property names have no underscores.
    let own = keys(command);
    if let Some((name, _)) = properties.iter().find(|(name, _)| own.contains(name)) {
        return Err(ConfigError::KeyInKafkaTable { at: file.kafka_at(name), key: name.clone() });
    }
    for (name, value) in &properties {
        super::kafka::check(name, value, &Origin::ConfigFile(file.kafka_at(name)))?;
    }
    let tokens = properties.into_iter().flat_map(|(k, v)| [OsString::from("-X"), format!("{k}={v}").into()]);
    Ok(Setting { id: PROPERTIES_ID.to_string(), tokens: tokens.collect(), positional: false })
}

/// A stockflow key as the tokens of its flag.
fn flag_setting(file: &ConfigFile, arg: &Arg, key: &str, value: &toml::Value) -> Result<Setting, ConfigError> {
    let values = arg_values(arg, value).map_err(|message| ConfigError::BadValue {
        at: file.at(key),
        key: key.to_string(),
        message: message.to_string(),
    })?;
    let positional = arg.is_positional();
    let tokens = match arg.get_long() {
        _ if positional => values.into_iter().map(OsString::from).collect(),
        Some(long) if matches!(arg.get_action(), ArgAction::SetTrue) => {
            values.into_iter().map(|_| OsString::from(format!("--{long}"))).collect()
        }
        Some(long) => values.into_iter().map(|v| OsString::from(format!("--{long}={v}"))).collect(),
        None => unreachable!("key_of gives keys only to long flags and positionals"),
    };
    Ok(Setting { id: arg.get_id().to_string(), tokens, positional })
}

/// The values a TOML value gives `arg`: one per occurrence of the flag.
fn arg_values(arg: &Arg, value: &toml::Value) -> Result<Vec<String>, &'static str> {
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![String::new()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false"),
        };
    }
    let many = matches!(arg.get_action(), ArgAction::Append) || arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    match value {
        toml::Value::Array(items) if many => {
            items.iter().map(|item| scalar(item).ok_or("expected an array of strings or numbers")).collect()
        }
        toml::Value::Array(_) => Err("expected one value, not an array"),
        other => scalar(other).map(|s| vec![s]).ok_or("expected a string or a number"),
    }
}

/// The command line with the flags of `--config FILE` (when given) put before the command
/// line's own, leaving out those the command line gives (`-X` excepted: see the module doc).
/// Any other command line is returned as it is, to be parsed (and its errors told) by clap.
pub fn merged_args(argv: Vec<OsString>, cli: Command) -> Result<Vec<OsString>, ConfigError> {
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
        let path = write(dir.path(), "topics = \"a\"\ntick_m = 5\n");
        let argv = args(&["stockflow", "run", "--config", path.to_str().unwrap()]);
        let err = merged_args(argv.clone(), cli()).unwrap_err().to_string();
        assert!(
            err.contains("c.toml, line 2: unknown key `tick_m`") && err.contains("did you mean `tick_ms`?"),
            "{err}"
        );
        write(dir.path(), "tick_ms = \"soon\"\n");
        let err = merged_args(argv.clone(), cli()).unwrap_err().to_string();
        assert!(err.contains("key `tick_ms`") && err.contains("soon"), "{err}");
        write(dir.path(), "quiet = \"yes\"\n");
        let err = merged_args(argv.clone(), cli()).unwrap_err().to_string();
        assert!(err.contains("key `quiet`: expected true or false"), "{err}");
        write(dir.path(), "topics = [\"a\"]\n\n[kafka]\nclient.id = \"x\"\nsasl.passwort = \"HUNTER2\"\n");
        let err = merged_args(argv, cli()).unwrap_err().to_string();
        assert!(err.contains("c.toml, line 5: [kafka]: librdkafka has no property `sasl.passwort`"), "{err}");
        assert!(!err.contains("HUNTER2"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_name_line_and_key_but_not_the_line() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line) in [
            ("[kafka]\nsasl.password = \"HUNTER2\n", 2),
            ("[kafka]\nsasl.password = \"HUN\\qTER2\"\n", 2),
            ("[kafka]\nsasl.password = \"HUNTER2\"\nsasl.password = \"HUNTER2\"\n", 3),
            ("[kafka]\nsasl.password = HUNTER2\n", 2),
        ] {
            let path = write(dir.path(), text);
            let err = ConfigFile::load(&path).err().expect(text).to_string();
            assert!(err.contains(&format!("c.toml, line {line} is not valid TOML (key `sasl.password`): ")), "{err}");
            assert!(!err.contains("HUNTER2") && !err.contains("HUN"), "{err}");
        }
    }
}
