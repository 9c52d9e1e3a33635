//! `[listener]` (what holds for all listeners together) and `[[listeners]]`
//! (one entry per address: path, Origin rules, TLS).

use super::values::duration;
use serde::Deserialize;
use std::net::SocketAddr;
use std::time::Duration;

/// `[listener]`: what holds for all listeners together. Where and how each
/// one accepts is in `[[listeners]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Connections served at once, over all listeners.
    pub max_connections: usize,
    /// Connections from one client IP address, over all listeners.
    pub max_connections_per_ip: usize,
    /// Limit on the TLS handshake and WebSocket upgrade together.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// Limit from the upgrade to CONNECT.
    #[serde(deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// Moved to `[[listeners]]`: read only to name it in the error.
    address: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    path: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    allowed_origins: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    allow_missing_origin: Option<toml::Value>,
    /// Moved to `[[listeners]]`.
    tls: Option<toml::Value>,
}

/// One `[[listeners]]` entry: an address that accepts WebSocket connections.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Socket address to bind (required).
    pub address: SocketAddr,
    /// HTTP path that upgrades to WebSocket.
    #[serde(default = "default_path")]
    pub path: String,
    /// Origins allowed to upgrade (`*` in a port or as the whole entry is a
    /// wildcard; `null` is a sandboxed frame or a page opened from a file,
    /// which any web page can create, so it is not in the default).
    #[serde(default = "default_allowed_origins")]
    pub allowed_origins: Vec<String>,
    /// Whether requests without `Origin` (non-browser clients) may upgrade.
    #[serde(default = "default_allow_missing_origin")]
    pub allow_missing_origin: bool,
    /// `wss://`: serve TLS with this certificate and key.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[listeners.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: std::path::PathBuf,
}

fn default_path() -> String {
    "/ws".into()
}

fn default_allowed_origins() -> Vec<String> {
    [
        "http://localhost:*",
        "http://127.0.0.1:*",
        "https://localhost:*",
        "https://127.0.0.1:*",
    ]
    .map(String::from)
    .to_vec()
}

fn default_allow_missing_origin() -> bool {
    true
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 61614)),
            path: default_path(),
            allowed_origins: default_allowed_origins(),
            allow_missing_origin: default_allow_missing_origin(),
            tls: None,
        }
    }
}

pub(super) fn default_listeners() -> Vec<EndpointConfig> {
    vec![EndpointConfig::default()]
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            max_connections: 20_000,
            max_connections_per_ip: 1000,
            handshake_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            address: None,
            path: None,
            allowed_origins: None,
            allow_missing_origin: None,
            tls: None,
        }
    }
}

impl ListenerConfig {
    /// The first per-listener key left in `[listener]`, if any.
    fn moved_key(&self) -> Option<&'static str> {
        [
            ("address", self.address.is_some()),
            ("path", self.path.is_some()),
            ("allowed_origins", self.allowed_origins.is_some()),
            ("allow_missing_origin", self.allow_missing_origin.is_some()),
            ("tls", self.tls.is_some()),
        ]
        .into_iter()
        .find_map(|(key, set)| set.then_some(key))
    }
}

/// Checks `[listener]` and `[[listeners]]` together: per-listener keys left
/// in `[listener]` say where they went.
pub(super) fn validate(
    listener: &ListenerConfig,
    listeners: &[EndpointConfig],
) -> Result<(), String> {
    if let Some(key) = listener.moved_key() {
        return Err(format!(
            "listener.{key} has moved: write it in a [[listeners]] table \
             (one per address: address, path, allowed_origins, \
             allow_missing_origin, [listeners.tls]); [listener] keeps \
             max_connections, max_connections_per_ip, handshake_timeout, \
             connect_timeout. See docs/configuration.md"
        ));
    }
    if listeners.is_empty() {
        return Err("listeners: at least one [[listeners]] is needed".into());
    }
    if let Some(index) = listeners.iter().position(|l| !l.path.starts_with('/')) {
        return Err(format!("listeners[{index}].path must start with '/'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn listeners_are_a_list_and_old_listener_keys_say_where_they_went() {
        let config = Config::from_toml(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:2\"\npath = \"/stomp\"\n[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
            "t",
        )
        .expect("parses");
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].path, "/ws");
        assert!(config.listeners[0].tls.is_none() && config.listeners[1].tls.is_some());
        let error = Config::from_toml("[listener]\naddress = \"0.0.0.0:1\"\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("listener.address has moved"),
            "{error}"
        );
        let error = Config::from_toml("[listener.tls]\ncert_file = \"c\"\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("listener.tls has moved"),
            "{error}"
        );
        assert!(
            Config::from_toml("[[listeners]]\npath = \"/ws\"\n", "t").is_err(),
            "address required"
        );
        assert!(Config::from_toml("listeners = []\n", "t").is_err());
    }
}
