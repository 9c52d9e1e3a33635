//! `[rate_limits]`: new connections per second per client address, and
//! `[[rate_limits.publish]]` rules on what each connection publishes.

use serde::{Deserialize, Serialize};

/// `[rate_limits]`: token buckets on new connections per client address and,
/// by `[[rate_limits.publish]]` rules, on what each connection publishes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitsConfig {
    /// New WebSocket connections per second from one client address
    /// (0: no limit).
    pub connections_per_second_per_ip: f64,
    /// New connections one address may open at once before the rate applies.
    pub connection_burst_per_ip: f64,
    /// Publish limits; the first rule that matches a SEND applies, a SEND no
    /// rule matches is not limited.
    pub publish: Vec<PublishRateRule>,
}

impl Default for RateLimitsConfig {
    fn default() -> Self {
        RateLimitsConfig {
            connections_per_second_per_ip: 100.0,
            connection_burst_per_ip: 1000.0,
            publish: Vec::new(),
        }
    }
}

/// What a connection over its publish rate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RateLimitAction {
    /// The broker stops reading the connection until it is within its rate
    /// again (back-pressure: nothing is lost).
    #[default]
    Slow,
    /// ERROR naming the limit, close 1008.
    Error,
}

/// `[[rate_limits.publish]]`: a publish rate for SENDs to destinations
/// matching `pattern` from connections logged in as `user` (either may be
/// left out: then it matches every destination, or every connection).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRateRule {
    /// A `/topic/...` or `/queue/...` pattern (`*` one word, `#` any words).
    pub pattern: Option<String>,
    /// CONNECT's `login` (or the token's subject).
    pub user: Option<String>,
    /// SEND frames per second (none: not limited by count).
    pub messages_per_second: Option<f64>,
    /// Frame bytes (headers and body) per second (none: not limited by size).
    pub bytes_per_second: Option<f64>,
    /// SENDs at once before the rate applies (default: one second's worth).
    pub burst_messages: Option<f64>,
    /// Bytes at once before the rate applies (default: one second's worth).
    pub burst_bytes: Option<f64>,
    /// Slow the connection down (the default) or end it with ERROR.
    #[serde(default)]
    pub action: RateLimitAction,
}

impl RateLimitsConfig {
    /// Rates must be positive numbers and bursts at least one (a pattern's
    /// syntax is checked when the broker compiles the rules).
    pub(super) fn validate(&self) -> Result<(), String> {
        let limits = self;
        let rate = limits.connections_per_second_per_ip;
        if !(rate >= 0.0 && rate.is_finite()) {
            return Err("rate_limits.connections_per_second_per_ip must be 0 (no limit) or a positive number".into());
        }
        if rate > 0.0
            && !(limits.connection_burst_per_ip >= 1.0
                && limits.connection_burst_per_ip.is_finite())
        {
            return Err("rate_limits.connection_burst_per_ip must be at least 1".into());
        }
        for (index, rule) in limits.publish.iter().enumerate() {
            let key = |name: &str| format!("rate_limits.publish[{index}].{name}");
            for (name, value) in [
                ("messages_per_second", rule.messages_per_second),
                ("bytes_per_second", rule.bytes_per_second),
            ] {
                if value.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
                    return Err(format!("{} must be a positive number", key(name)));
                }
            }
            for (name, value) in [
                ("burst_messages", rule.burst_messages),
                ("burst_bytes", rule.burst_bytes),
            ] {
                if value.is_some_and(|v| !(v >= 1.0 && v.is_finite())) {
                    return Err(format!("{} must be at least 1", key(name)));
                }
            }
            if let Some(pattern) = rule.pattern.as_deref() {
                if !pattern.starts_with("/topic/") && !pattern.starts_with("/queue/") {
                    return Err(format!(
                        "{} '{pattern}' must start with /topic/ or /queue/",
                        key("pattern")
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn publish_rate_rules_parse_and_bad_rates_are_named() {
        let config = Config::from_toml(
            "[[rate_limits.publish]]\npattern = \"/topic/feed.#\"\nmessages_per_second = 100\naction = \"error\"\n\n[[rate_limits.publish]]\nuser = \"bob\"\nbytes_per_second = 0.5\n",
            "t",
        )
        .expect("parses");
        let rules = &config.rate_limits.publish;
        assert_eq!(rules[0].messages_per_second, Some(100.0));
        assert_eq!(rules[0].action, RateLimitAction::Error);
        assert_eq!(rules[1].action, RateLimitAction::Slow);
        let error = Config::from_toml("[[rate_limits.publish]]\nmessages_per_second = 0\n", "t")
            .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("rate_limits.publish[0].messages_per_second"),
            "{error}"
        );
        let error = Config::from_toml("[rate_limits]\nconnections_per_second_per_ip = -1\n", "t")
            .unwrap_err();
        assert!(
            error.to_string().contains("connections_per_second_per_ip"),
            "{error}"
        );
    }
}
