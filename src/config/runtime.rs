//! `[router]` (its command channel), `[shutdown]` and `[log]`: how the
//! broker process runs.

use super::values::duration;
use serde::Deserialize;
use std::time::Duration;

/// `[router]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time sessions get to close on shutdown.
    #[serde(deserialize_with = "duration")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace: Duration::from_secs(5),
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive; `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
        }
    }
}
