//! `[runtime]` (worker threads), `[router]` (its command channel),
//! `[shutdown]` and `[log]`: how the broker process runs.

use super::values::{duration, duration_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[runtime]`: the async runtime every connection, the router and the
/// store writer run on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker threads of the runtime; 0: one per CPU the process may use
    /// (`TOKIO_WORKER_THREADS` in the environment, when set, wins over 0).
    pub worker_threads: usize,
}

/// `[router]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Capacity of the router's command channel, in commands. Written
    /// `queue_depth` before; that name is still read.
    #[serde(alias = "queue_depth")]
    pub channel_capacity: usize,
    /// Bytes of SEND bodies and headers in commands waiting for the router.
    pub max_queued_bytes: usize,
    /// Topic matches kept by the topic index's match cache (0: no cache).
    pub match_cache_entries: usize,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            channel_capacity: 4096,
            max_queued_bytes: 64 * 1024 * 1024,
            match_cache_entries: 4096,
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time sessions get to close on shutdown.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(5),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// One human-readable line per event (colours only on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}
