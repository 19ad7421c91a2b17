//! Which values are secrets, and masking them: `config check` prints them as `****`, and an
//! error about a secret key names the key without its value.

/// The mask shown in place of a secret.
pub const MASK: &str = "****";

/// Whether the value of `key` is a secret: any key naming a password, a secret, a key or a token
/// (`ssl.key.pem`, `ssl.key.password`, `ssl.keystore.location`: a location is masked too, as
/// erring that way costs nothing), and the properties that hold credentials inline (`jaas`).
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "key", "token", "jaas", "credential"].iter().any(|word| key.contains(word))
        || key == "sasl.oauthbearer.config"
}

/// `message` with every occurrence of `value` masked when `key` is a secret.
pub fn masked(message: &str, key: &str, value: &str) -> String {
    if is_secret(key) && !value.is_empty() {
        message.replace(value, MASK)
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            "sasl.oauthbearer.config",
            "sasl.oauthbearer.token.endpoint.url",
            "cluster_secret_file",
        ] {
            assert!(is_secret(key), "{key}");
        }
        assert!(!is_secret("sasl.username") && !is_secret("security.protocol") && !is_secret("tick_ms"));
        assert_eq!(masked("bad value hunter2", "sasl.password", "hunter2"), "bad value ****");
        assert_eq!(masked("bad value PLAIN", "sasl.mechanism", "PLAIN"), "bad value PLAIN");
    }
}
