//! librdkafka properties as a run configures them — `--brokers`, the lines of `--kafka-config
//! FILE`, each `-X key=value` — read and checked by librdkafka itself before any client exists.
//! An error names the property and where it was set (`-X`, `FILE:LINE`, a config file's line)
//! and, for a name librdkafka does not have, the closest one it has; it never repeats a value
//! whose key names a secret, nor a line that is not `key=value` (it may be one).

use std::path::Path;
use std::sync::OnceLock;

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaConfRes;
use rdkafka::ClientConfig;

use super::error::{ConfigError, Origin};
use super::secret;

/// Every property in the order they apply (later wins): bootstrap servers, `file`'s lines,
/// `flags` (`-X`), each checked by librdkafka.
pub fn properties(brokers: &str, file: Option<&Path>, flags: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    let mut properties = vec![("bootstrap.servers".to_string(), brokers.to_string())];
    check("bootstrap.servers", brokers, &Origin::Brokers)?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|cause| ConfigError::PropertiesUnreadable { path: path.to_path_buf(), cause })?;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            properties.push(checked(line, Origin::PropertiesFile(path.to_path_buf(), i + 1))?);
        }
    }
    for flag in flags {
        properties.push(checked(flag, Origin::Flag)?);
    }
    Ok(properties)
}

/// `key=value`, split and checked.
fn checked(text: &str, origin: Origin) -> Result<(String, String), ConfigError> {
    let Some((key, value)) = text.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
        return Err(ConfigError::PropertyNotKeyValue { origin });
    };
    let (key, value) = (key.trim(), value.trim());
    check(key, value, &origin)?;
    Ok((key.to_string(), value.to_string()))
}

/// Asks librdkafka whether it takes `key = value` (it checks names and values as they are set,
/// without connecting); its message has the value masked when the key names a secret.
pub fn check(key: &str, value: &str, origin: &Origin) -> Result<(), ConfigError> {
    let mut config = ClientConfig::new();
    config.set(key, value);
    match config.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(RDKafkaConfRes::RD_KAFKA_CONF_UNKNOWN, ..)) => Err(ConfigError::UnknownProperty {
            origin: origin.clone(),
            key: key.to_string(),
            suggestion: closest_property(key),
        }),
        Err(KafkaError::ClientConfig(_, detail, ..)) => Err(ConfigError::BadProperty {
            origin: origin.clone(),
            key: key.to_string(),
            detail: secret::masked(&detail, key, value),
        }),
        Err(other) => Err(ConfigError::BadProperty {
            origin: origin.clone(),
            key: key.to_string(),
            detail: secret::masked(&other.to_string(), key, value),
        }),
    }
}

/// The property librdkafka has that `key` is most likely a typo of.
fn closest_property(key: &str) -> Option<String> {
    let names: Vec<&str> = property_names().iter().map(String::as_str).collect();
    super::value::closest(key, &names).map(str::to_string)
}

/// Every property name librdkafka documents (global and topic), from its own table
/// (`rd_kafka_conf_properties_show`, the source of its CONFIGURATION.md).
fn property_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let table = properties_table();
        table
            .lines()
            .filter_map(|line| line.split_once(" | ").map(|(name, _)| name.trim()))
            .filter(|name| !name.is_empty() && *name != "Property" && !name.starts_with('-'))
            .map(str::to_string)
            .collect()
    })
}

/// librdkafka's property table as text: it only writes it to a `FILE *`, so into a memory stream.
fn properties_table() -> String {
    let mut buffer: *mut libc::c_char = std::ptr::null_mut();
    let mut size: libc::size_t = 0;
    // SAFETY: open_memstream gives a stream that writes into a buffer it allocates; after
    // fclose, `buffer` holds `size` bytes, which are copied and the buffer freed with free().
    unsafe {
        let stream = libc::open_memstream(&mut buffer, &mut size);
        if stream.is_null() {
            return String::new();
        }
        rdkafka::bindings::rd_kafka_conf_properties_show(stream);
        libc::fclose(stream);
        if buffer.is_null() {
            return String::new();
        }
        let bytes = std::slice::from_raw_parts(buffer.cast::<u8>(), size).to_vec();
        libc::free(buffer.cast());
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelled_properties_get_the_name_librdkafka_has_and_no_value() {
        assert!(property_names().iter().any(|n| n == "sasl.password"), "{:?}", &property_names()[..5]);
        let flags = vec!["client.id=x".to_string(), "sasl.passwort=HUNTER2-typo".to_string()];
        let err = properties("b:9092", None, &flags).unwrap_err().to_string();
        assert_eq!(err, "-X: librdkafka has no property `sasl.passwort` (did you mean `sasl.password`?)");
        let err = properties("b:9092", None, &["sasl.password HUNTER2".to_string()]).unwrap_err().to_string();
        assert_eq!(err, "-X: expected key=value (a librdkafka property) but found no `=`");
        let err = properties("b:9092", None, &["security.protocol=SASL_SSSL".to_string()]).unwrap_err().to_string();
        assert!(err.starts_with("-X: property `security.protocol`: ") && err.contains("SASL_SSSL"), "{err}");
    }

    #[test]
    fn a_properties_file_is_read_line_by_line_naming_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.properties");
        std::fs::write(&path, "# comment\n\nsecurity.protocol = SASL_SSL\nsasl.passwort=HUNTER2\n").unwrap();
        let err = properties("b:9092", Some(&path), &[]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("--kafka-config {}:4: ", path.display())), "{err}");
        assert!(!err.contains("HUNTER2"), "{err}");
        std::fs::write(&path, "security.protocol=SASL_SSL\n").unwrap();
        let got = properties("b:9092", Some(&path), &["client.id=c".to_string()]).unwrap();
        let expected = [("bootstrap.servers", "b:9092"), ("security.protocol", "SASL_SSL"), ("client.id", "c")];
        assert_eq!(got, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    }
}
