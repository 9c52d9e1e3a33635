//! `[stomp]`: versions offered and heart-beat pacing.

use super::values::{duration, duration_text, versions, versions_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use stomp_protocol::Version;

/// `[stomp]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StompConfig {
    /// Name in CONNECTED's `server` header.
    pub server_name: String,
    /// Versions we negotiate.
    #[serde(deserialize_with = "versions", serialize_with = "versions_text")]
    pub versions: Vec<Version>,
    /// The shortest interval we send heart-beats at (a floor on the
    /// client's `cy`; 0: we never send any).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub heartbeat_send: Duration,
    /// The shortest interval we expect clients to send at (a floor on the
    /// client's `cx`; 0: we never check).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub heartbeat_receive: Duration,
    /// Silence beyond interval × grace closes a connection.
    pub heartbeat_grace: f64,
    /// The longest heart-beat interval in either direction; larger client
    /// values are clamped to it.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub heartbeat_max: Duration,
    /// A client late by one interval gets a WebSocket ping, and WebSocket
    /// pings and pongs count as data (lenient to throttled background tabs);
    /// off, only STOMP bytes count.
    pub heartbeat_ping: bool,
}

impl Default for StompConfig {
    fn default() -> Self {
        StompConfig {
            server_name: "stomphub".into(),
            versions: Version::ALL.to_vec(),
            heartbeat_send: Duration::from_secs(1),
            heartbeat_receive: Duration::from_secs(1),
            heartbeat_grace: 2.0,
            heartbeat_max: Duration::from_secs(3600),
            heartbeat_ping: true,
        }
    }
}

/// The largest `stomp.heartbeat_max` (a day): with the grace, timers stay
/// far inside `Instant`'s range.
const MAX_HEARTBEAT_SECS: u64 = 24 * 3600;

impl StompConfig {
    /// Versions offered, the grace factor and the heart-beat ceiling.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.versions.is_empty() {
            return Err("stomp.versions must name at least one version".into());
        }
        if !(self.heartbeat_grace >= 1.0 && self.heartbeat_grace <= 100.0) {
            return Err("stomp.heartbeat_grace must be a number from 1.0 to 100.0".into());
        }
        if self.heartbeat_max.is_zero()
            || self.heartbeat_max > Duration::from_secs(MAX_HEARTBEAT_SECS)
            || self.heartbeat_max < self.heartbeat_send
            || self.heartbeat_max < self.heartbeat_receive
        {
            return Err(format!(
                "stomp.heartbeat_max must be at least heartbeat_send and heartbeat_receive, \
                 and at most {MAX_HEARTBEAT_SECS} s"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn heart_beat_bounds_are_validated() {
        let error = Config::from_toml("[stomp]\nheartbeat_max = \"500ms\"\n", "t").unwrap_err();
        assert!(error.to_string().contains("stomp.heartbeat_max"), "{error}");
        let error = Config::from_toml("[stomp]\nheartbeat_max = \"1441m\"\n", "t").unwrap_err();
        assert!(error.to_string().contains("stomp.heartbeat_max"), "{error}");
        let error = Config::from_toml("[stomp]\nheartbeat_grace = 1e300\n", "t").unwrap_err();
        assert!(
            error.to_string().contains("stomp.heartbeat_grace"),
            "{error}"
        );
        let strict = Config::from_toml("[stomp]\nheartbeat_ping = false\n", "t").expect("parses");
        assert!(!strict.stomp.heartbeat_ping);
    }
}
