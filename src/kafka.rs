//! The one place rdkafka client configurations are built: bootstrap servers, then the
//! `--kafka-config FILE` lines, then every `-X key=value`, so SASL/SSL and any other librdkafka
//! property reach consumers, producers and admin clients alike.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::ClientConfig;

/// Kafka connection flags shared by `run`, `batch`, `produce` and `consume`.
#[derive(Args, Debug, Clone, Default)]
pub struct KafkaArgs {
    /// Bootstrap servers, `host:port[,host:port...]`.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// A librdkafka property, `key=value` (repeatable; wins over --kafka-config).
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// A file of librdkafka properties, one `key=value` per line (`#` comments, blank lines ok).
    #[arg(long, value_name = "FILE")]
    pub kafka_config: Option<PathBuf>,
}

/// Splits `key=value`, naming `origin` in the error.
fn split(line: &str, origin: &str) -> Result<(String, String)> {
    match line.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => bail!("{origin}: expected key=value (a librdkafka property), got {line:?}"),
    }
}

impl KafkaArgs {
    /// Every property in the order they apply (later wins): bootstrap servers, file, `-X`.
    pub fn properties(&self) -> Result<Vec<(String, String)>> {
        let mut props = vec![("bootstrap.servers".to_string(), self.brokers.clone())];
        if let Some(path) = &self.kafka_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --kafka-config {}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                props.push(split(line, &format!("{}:{}", path.display(), i + 1))?);
            }
        }
        for x in &self.properties {
            props.push(split(x, "-X")?);
        }
        Ok(props)
    }

    /// A client configuration with every property applied, plus `extra` defaults that the
    /// user's own properties override.
    pub fn client_config(&self, extra: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        for (k, v) in extra {
            config.set(*k, *v);
        }
        for (k, v) in self.properties()? {
            config.set(k, v);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_sources_win_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.properties");
        std::fs::write(&file, "# sasl\nsecurity.protocol=SASL_SSL\n\nsasl.mechanism = PLAIN\n").unwrap();
        let args = KafkaArgs {
            brokers: "b:1".into(),
            properties: vec!["sasl.mechanism=SCRAM-SHA-512".into()],
            kafka_config: Some(file.clone()),
        };
        let config = args.client_config(&[("security.protocol", "PLAINTEXT")]).unwrap();
        assert_eq!(config.get("bootstrap.servers"), Some("b:1"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        std::fs::write(&file, "oops\n").unwrap();
        let err = args.properties().unwrap_err().to_string();
        assert!(err.contains("k.properties:1"), "{err}");
    }
}
