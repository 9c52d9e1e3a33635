//! Typed configuration: `broker.toml` parsed with serde, validated, defaults
//! equal to the committed `broker.toml` (embedded in the binary).
//!
//! This file holds the whole [`Config`], loading and the checks that span
//! sections; each family of sections has its own file with its types, its
//! defaults and its own checks. Every type is re-exported here, so
//! `crate::config::X` names it wherever it lives.

mod admin;
mod auth;
mod cluster;
mod http;
mod limits;
mod listeners;
mod outbound;
mod queues;
mod rate_limits;
mod runtime;
mod stomp;
mod storage;
mod topics;
mod values;

pub use admin::{AdminAnonymous, AdminConfig};
pub use auth::{Anonymous, AuthConfig, JwtConfig, JwtKeyConfig, UserConfig};
pub use cluster::{ClusterConfig, ClusterTls, Engine};
pub use http::HttpConfig;
pub use limits::LimitsConfig;
pub use listeners::{EndpointConfig, ListenerConfig, ListenerKind, TlsConfig};
pub use outbound::{OutboundConfig, SlowConsumerPolicy, SlowConsumerRule, SlowConsumersConfig};
pub use queues::{Overflow, QueueRule, QueuesConfig};
pub use rate_limits::{PublishRateRule, RateLimitAction, RateLimitsConfig};
pub use runtime::{LogConfig, LogFormat, RouterConfig, RuntimeConfig, ShutdownConfig};
pub use stomp::StompConfig;
pub use storage::StorageConfig;
pub use topics::{Retain, TopicRule, TopicsConfig};

use listeners::default_listeners;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default configuration file, as committed.
pub const DEFAULT_CONFIG: &str = include_str!("../../broker.toml");

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limits over all listeners.
    pub listener: ListenerConfig,
    /// Where and how connections are accepted: one entry per address.
    #[serde(default = "default_listeners")]
    pub listeners: Vec<EndpointConfig>,
    /// STOMP session behaviour.
    pub stomp: StompConfig,
    /// Size limits on what clients send.
    pub limits: LimitsConfig,
    /// Per-connection outbound budget.
    pub outbound: OutboundConfig,
    /// The async runtime's worker threads.
    pub runtime: RuntimeConfig,
    /// The router's input queue.
    pub router: RouterConfig,
    /// Queue defaults and per-pattern rules.
    pub queues: QueuesConfig,
    /// What happens to subscribers that fall behind.
    pub slow_consumers: SlowConsumersConfig,
    /// Durable storage.
    pub storage: StorageConfig,
    /// Authentication and authorization.
    pub auth: AuthConfig,
    /// Shutdown behaviour.
    pub shutdown: ShutdownConfig,
    /// Logging.
    pub log: LogConfig,
    /// Publish rates and new connections per address.
    pub rate_limits: RateLimitsConfig,
    /// Live-feed state of topics: offsets, history, retained values.
    pub topics: TopicsConfig,
    /// The operators' HTTP listener.
    pub admin: AdminConfig,
    /// HTTP beside WebSocket: SSE feeds.
    pub http: HttpConfig,
    /// One broker, or one node of several on a NATS engine.
    pub cluster: ClusterConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listener: ListenerConfig::default(),
            listeners: default_listeners(),
            stomp: StompConfig::default(),
            limits: LimitsConfig::default(),
            outbound: OutboundConfig::default(),
            runtime: RuntimeConfig::default(),
            router: RouterConfig::default(),
            queues: QueuesConfig::default(),
            slow_consumers: SlowConsumersConfig::default(),
            storage: StorageConfig::default(),
            auth: AuthConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            rate_limits: RateLimitsConfig::default(),
            topics: TopicsConfig::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            cluster: ClusterConfig::default(),
        }
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub struct ConfigError(String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error with this text (it names the file and the key).
    pub fn new(text: String) -> ConfigError {
        ConfigError(text)
    }
}

impl Config {
    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // One line (toml's own text draws the line with a caret below).
            let place = e.span().map_or_else(String::new, |span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            ConfigError(format!("{origin}: {place}{}", e.message().trim_end()))
        })?;
        config
            .validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: {e}", path.display())))?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// The configuration as TOML, every key written out (what
    /// `--print-config` shows: the file's values, defaults for the rest,
    /// and the command-line overrides).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string(self)
            .map_err(|e| ConfigError(format!("cannot print the configuration: {e}")))
    }

    /// Checks the rules serde cannot express.
    fn validate(&self) -> Result<(), String> {
        let positive = [
            ("listener.max_connections", self.listener.max_connections),
            (
                "listener.max_connections_per_ip",
                self.listener.max_connections_per_ip,
            ),
            (
                "limits.max_unacked_per_connection",
                self.limits.max_unacked_per_connection,
            ),
            (
                "limits.max_queued_message_bytes",
                self.limits.max_queued_message_bytes,
            ),
            ("limits.max_command_bytes", self.limits.max_command_bytes),
            ("limits.max_headers", self.limits.max_headers),
            (
                "limits.max_header_line_bytes",
                self.limits.max_header_line_bytes,
            ),
            ("limits.max_header_bytes", self.limits.max_header_bytes),
            (
                "limits.max_destination_words",
                self.limits.max_destination_words,
            ),
            ("outbound.max_queued_bytes", self.outbound.max_queued_bytes),
            (
                "outbound.max_queued_frames",
                self.outbound.max_queued_frames,
            ),
            ("router.channel_capacity", self.router.channel_capacity),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be greater than 0"));
        }
        let state_bounds = [
            (
                "limits.max_transaction_bytes",
                self.limits.max_transaction_bytes,
            ),
            ("limits.max_subscriptions", self.limits.max_subscriptions),
            ("limits.max_queues", self.limits.max_queues),
            ("router.max_queued_bytes", self.router.max_queued_bytes),
        ];
        if let Some((key, _)) = state_bounds.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{key} must be greater than 0"));
        }
        self.storage.validate()?;
        self.slow_consumers.validate()?;
        self.queues.validate()?;
        self.rate_limits.validate()?;
        self.topics.validate()?;
        self.http.validate()?;
        self.cluster.validate()?;
        if !self.storage.enabled {
            if let Some(rule) = self.topics.rules.iter().find(|r| r.persistent) {
                return Err(format!(
                    "topics.rules '{}' is persistent but storage.enabled is false",
                    rule.pattern
                ));
            }
        }
        listeners::validate(&self.listener, &self.listeners)?;
        self.stomp.validate()?;
        if self.outbound.max_queued_bytes < self.limits.max_body_bytes {
            return Err(
                "outbound.max_queued_bytes must be at least limits.max_body_bytes, \
                 or no subscriber could receive the largest message"
                    .into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_equals_code_defaults() {
        let parsed = Config::from_toml(DEFAULT_CONFIG, "broker.toml").expect("default parses");
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn printed_config_reads_back_equal() {
        let mut config = Config::default();
        config.queues.rules = Config::from_toml(
            "[[queues.rules]]\npattern = \"/queue/a.#\"\nmessage_ttl = \"1500ms\"\n",
            "t",
        )
        .expect("parses")
        .queues
        .rules;
        config.listeners.push(
            Config::from_toml(
                "[[listeners]]\nkind = \"tcp\"\naddress = \"127.0.0.1:61613\"\n",
                "t",
            )
            .expect("parses")
            .listeners
            .remove(0),
        );
        config.stomp.heartbeat_max = std::time::Duration::from_secs(120);
        let text = config.to_toml().expect("prints");
        let back = Config::from_toml(&text, "printed").expect("reads back");
        assert_eq!(back, config, "{text}");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let error = Config::from_toml("[listener]\nadress = \"x\"\n", "test.toml").unwrap_err();
        assert!(error.to_string().contains("adress"), "{error}");
        assert!(error.to_string().starts_with("test.toml"), "{error}");
    }

    #[test]
    fn syntax_errors_are_one_line_with_the_place() {
        let error = Config::from_toml("[auth]\nanonymos = \"x\"\n", "t.toml").unwrap_err();
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.starts_with("t.toml: line 2, column 1: "), "{text}");
        assert!(text.contains("anonymos"), "{text}");
    }

    #[test]
    fn invalid_values_are_named() {
        let error = Config::from_toml("[router]\nchannel_capacity = 0\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("router.channel_capacity"),
            "{error}"
        );
    }

    #[test]
    fn the_old_name_of_router_channel_capacity_is_still_read() {
        let config = Config::from_toml("[router]\nqueue_depth = 123\n", "t").expect("parses");
        assert_eq!(config.router.channel_capacity, 123);
        let error = Config::from_toml("[router]\nqueue_depth = 0\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("router.channel_capacity"),
            "{error}"
        );
    }
}
