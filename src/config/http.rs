//! `[http]`: plain HTTP beside WebSocket on the listeners' ports (Server-Sent
//! Events feeds).

use super::values::{duration, duration_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[http]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// How often an idle SSE feed gets a comment line, so that proxies do
    /// not close it.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub sse_heartbeat: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            sse_heartbeat: Duration::from_secs(15),
        }
    }
}

impl HttpConfig {
    /// A heart-beat interval must be positive (a zero interval would spin).
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.sse_heartbeat.is_zero() {
            return Err("http.sse_heartbeat must be greater than 0".into());
        }
        Ok(())
    }
}
