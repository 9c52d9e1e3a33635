//! `[listener]` (what holds for all listeners together) and `[[listeners]]`
//! (one entry per address: its kind, WebSocket or plain TCP; path and Origin
//! rules for WebSocket; TLS for both).

use super::values::{duration, duration_text};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// `[listener]`: what holds for all listeners together. Where and how each
/// one accepts is in `[[listeners]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerConfig {
    /// Connections served at once, over all listeners.
    pub max_connections: usize,
    /// Connections from one client IP address, over all listeners.
    pub max_connections_per_ip: usize,
    /// Limit on the TLS handshake and WebSocket upgrade together.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub handshake_timeout: Duration,
    /// Limit from the upgrade to CONNECT.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
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

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// STOMP over WebSocket (`ws://`, `wss://` with TLS).
    #[default]
    Ws,
    /// STOMP over plain TCP, the frames straight on the stream (TLS optional).
    /// The conventional port is 61613.
    Tcp,
}

/// One `[[listeners]]` entry: an address that accepts STOMP connections,
/// over WebSocket (the default) or plain TCP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawEndpoint", into = "RawEndpoint")]
pub struct EndpointConfig {
    /// What the listener speaks: `ws` (default) or `tcp`.
    pub kind: ListenerKind,
    /// Socket address to bind (required).
    pub address: SocketAddr,
    /// HTTP path that upgrades to WebSocket (`ws` only).
    pub path: String,
    /// Origins allowed to upgrade (`*` in a port or as the whole entry is a
    /// wildcard; `null` is a sandboxed frame or a page opened from a file,
    /// which any web page can create, so it is not in the default). `ws` only.
    pub allowed_origins: Vec<String>,
    /// Whether requests without `Origin` (non-browser clients) may upgrade
    /// (`ws` only).
    pub allow_missing_origin: bool,
    /// TLS with this certificate and key (`wss://`, or STOMP over TLS).
    pub tls: Option<TlsConfig>,
    /// Every connection starts with a PROXY protocol header (v1 or v2) from
    /// a load balancer, whose client address then counts as the peer's;
    /// a connection without a valid one is refused. Off by default.
    pub proxy_protocol: bool,
}

/// A `[[listeners]]` entry as written: the WebSocket-only keys stay unset
/// when absent, so that a `tcp` entry that sets one is refused by name.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    #[serde(default)]
    kind: ListenerKind,
    address: SocketAddr,
    path: Option<String>,
    allowed_origins: Option<Vec<String>>,
    allow_missing_origin: Option<bool>,
    #[serde(default)]
    tls: Option<TlsConfig>,
    #[serde(default)]
    proxy_protocol: bool,
}

impl From<EndpointConfig> for RawEndpoint {
    /// As printed by `--print-config`: a `tcp` entry without the WebSocket keys.
    fn from(endpoint: EndpointConfig) -> RawEndpoint {
        let websocket = endpoint.kind == ListenerKind::Ws;
        RawEndpoint {
            kind: endpoint.kind,
            address: endpoint.address,
            path: websocket.then_some(endpoint.path),
            allowed_origins: websocket.then_some(endpoint.allowed_origins),
            allow_missing_origin: websocket.then_some(endpoint.allow_missing_origin),
            tls: endpoint.tls,
            proxy_protocol: endpoint.proxy_protocol,
        }
    }
}

impl TryFrom<RawEndpoint> for EndpointConfig {
    type Error = String;

    fn try_from(raw: RawEndpoint) -> Result<Self, String> {
        if raw.kind == ListenerKind::Tcp {
            let websocket_only = [
                ("path", raw.path.is_some()),
                ("allowed_origins", raw.allowed_origins.is_some()),
                ("allow_missing_origin", raw.allow_missing_origin.is_some()),
            ];
            if let Some((key, _)) = websocket_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "listeners.{key} is a WebSocket setting; a kind = \"tcp\" listener ({}) \
                     has no HTTP path or Origin: remove it",
                    raw.address
                ));
            }
        }
        Ok(EndpointConfig {
            kind: raw.kind,
            address: raw.address,
            path: raw.path.unwrap_or_else(default_path),
            allowed_origins: raw.allowed_origins.unwrap_or_else(default_allowed_origins),
            allow_missing_origin: raw
                .allow_missing_origin
                .unwrap_or_else(default_allow_missing_origin),
            tls: raw.tls,
            proxy_protocol: raw.proxy_protocol,
        })
    }
}

impl EndpointConfig {
    /// The URL clients use for this listener bound at `bound`:
    /// `ws://`/`wss://` with the path, or `tcp://`/`ssl://` for STOMP over
    /// TCP (the schemes stomp clients such as stomp.js and ActiveMQ's use).
    pub fn url(&self, bound: SocketAddr) -> String {
        match (self.kind, self.tls.is_some()) {
            (ListenerKind::Ws, false) => format!("ws://{bound}{}", self.path),
            (ListenerKind::Ws, true) => format!("wss://{bound}{}", self.path),
            (ListenerKind::Tcp, false) => format!("tcp://{bound}"),
            (ListenerKind::Tcp, true) => format!("ssl://{bound}"),
        }
    }
}

/// `[listeners.tls]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
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
            kind: ListenerKind::Ws,
            address: SocketAddr::from(([127, 0, 0, 1], 61614)),
            path: default_path(),
            allowed_origins: default_allowed_origins(),
            allow_missing_origin: default_allow_missing_origin(),
            tls: None,
            proxy_protocol: false,
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
    use super::ListenerKind;
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

    #[test]
    fn tcp_listeners_take_tls_and_refuse_websocket_keys_by_name() {
        let config = Config::from_toml(
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:61613\"\n[listeners.tls]\ncert_file = \"c\"\nkey_file = \"k\"\n",
            "t",
        )
        .expect("parses");
        assert_eq!(config.listeners[0].kind, ListenerKind::Ws);
        assert_eq!(config.listeners[1].kind, ListenerKind::Tcp);
        assert!(config.listeners[1].tls.is_some());
        let bound = "127.0.0.1:61613".parse().expect("address");
        assert_eq!(config.listeners[1].url(bound), "ssl://127.0.0.1:61613");
        for (key, value) in [
            ("path", "\"/ws\""),
            ("allowed_origins", "[\"*\"]"),
            ("allow_missing_origin", "true"),
        ] {
            let text = format!(
                "[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\n{key} = {value}\n"
            );
            let error = Config::from_toml(&text, "t").unwrap_err().to_string();
            assert!(
                error.contains(&format!("listeners.{key} is a WebSocket setting")),
                "{error}"
            );
        }
        let error = Config::from_toml(
            "[[listeners]]\nkind = \"udp\"\naddress = \"127.0.0.1:1\"\n",
            "t",
        )
        .unwrap_err();
        assert!(error.to_string().contains("udp"), "{error}");
    }
}
