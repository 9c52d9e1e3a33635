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
    /// Worker threads of the runtime; 0: chosen from the CPUs the process
    /// may use (see [`RuntimeConfig::threads`]).
    pub worker_threads: usize,
}

/// CPUs up to which `worker_threads = 0` means one thread: measured on two
/// cores, one thread delivers 1.06–1.37× as much per CPU-second in every
/// fan-out case (the other core does the kernel's network work and the
/// clients'), for up to 13 % less peak throughput (docs/performance.md).
pub const ONE_THREAD_UP_TO_CPUS: usize = 2;

impl RuntimeConfig {
    /// The worker threads to run: the setting when not 0, else
    /// `TOKIO_WORKER_THREADS` (`from_env`) when set, else one on a machine
    /// of at most [`ONE_THREAD_UP_TO_CPUS`] CPUs and one per CPU above.
    /// One thread runs tokio's single-threaded scheduler.
    pub fn threads(&self, cpus: usize, from_env: Option<usize>) -> usize {
        if self.worker_threads > 0 {
            return self.worker_threads;
        }
        match from_env {
            Some(threads) if threads > 0 => threads,
            _ if cpus <= ONE_THREAD_UP_TO_CPUS => 1,
            _ => cpus,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_come_from_the_setting_then_the_environment_then_the_cpus() {
        let auto = RuntimeConfig::default();
        assert_eq!(auto.threads(1, None), 1);
        assert_eq!(auto.threads(2, None), 1);
        assert_eq!(auto.threads(3, None), 3);
        assert_eq!(auto.threads(16, None), 16);
        assert_eq!(auto.threads(2, Some(4)), 4);
        assert_eq!(auto.threads(8, Some(0)), 8);
        let set = RuntimeConfig { worker_threads: 3 };
        assert_eq!(set.threads(2, Some(4)), 3);
    }
}
