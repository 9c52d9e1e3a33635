//! `[queues]`: defaults for every queue, and `[[queues.rules]]` per name
//! pattern.

use super::values::{duration, duration_text, optional_duration, optional_duration_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a SEND to a full queue does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// ERROR to the sender; nothing is queued.
    Reject,
    /// The oldest messages are dropped to make room.
    DropOldest,
}

/// `[queues]`: defaults for every queue, and rules per name pattern.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// Unacknowledged deliveries in flight per subscription.
    pub prefetch: usize,
    /// Messages a queue holds.
    pub max_length: usize,
    /// Bytes (bodies and headers) a queue holds.
    pub max_bytes: usize,
    /// What a SEND to a full queue does.
    pub overflow: Overflow,
    /// Default time-to-live (zero: none).
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub message_ttl: Duration,
    /// Deliveries before a NACKed or returned message is dead-lettered.
    pub max_deliveries: u32,
    /// First NACK redelivery delay; doubles per delivery.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub redelivery_delay: Duration,
    /// Cap of the redelivery delay.
    #[serde(deserialize_with = "duration", serialize_with = "duration_text")]
    pub redelivery_delay_max: Duration,
    /// `/queue/NAME` dead-letters to `/queue/NAME<suffix>`.
    pub dead_letter_suffix: String,
    /// Overrides per queue-name pattern; the first match wins.
    pub rules: Vec<QueueRule>,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig {
            prefetch: 100,
            max_length: 100_000,
            max_bytes: 100 * 1024 * 1024,
            overflow: Overflow::Reject,
            message_ttl: Duration::ZERO,
            max_deliveries: 5,
            redelivery_delay: Duration::from_secs(1),
            redelivery_delay_max: Duration::from_secs(30),
            dead_letter_suffix: ".dlq".into(),
            rules: Vec::new(),
        }
    }
}

/// `[[queues.rules]]`: settings for queues whose name matches `pattern`
/// (`*` one word, `#` any words, as in topic subscriptions).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRule {
    /// A `/queue/...` pattern.
    pub pattern: String,
    /// Overrides `prefetch`.
    pub prefetch: Option<usize>,
    /// Overrides `max_length`.
    pub max_length: Option<usize>,
    /// Overrides `max_bytes`.
    pub max_bytes: Option<usize>,
    /// Overrides `overflow`.
    pub overflow: Option<Overflow>,
    /// Overrides `message_ttl`.
    #[serde(
        default,
        deserialize_with = "optional_duration",
        serialize_with = "optional_duration_text"
    )]
    pub message_ttl: Option<Duration>,
    /// Overrides `max_deliveries`.
    pub max_deliveries: Option<u32>,
    /// Overrides `redelivery_delay`.
    #[serde(
        default,
        deserialize_with = "optional_duration",
        serialize_with = "optional_duration_text"
    )]
    pub redelivery_delay: Option<Duration>,
    /// The dead-letter queue for these queues (a `/queue/...` name).
    pub dead_letter: Option<String>,
}

impl QueuesConfig {
    /// Positive bounds; rules name queues, and dead letters go to queues.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.prefetch == 0 || self.max_length == 0 || self.max_deliveries == 0 {
            return Err("queues.prefetch, queues.max_length and queues.max_deliveries must be greater than 0".into());
        }
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| !r.pattern.starts_with("/queue/"))
        {
            return Err(format!(
                "queues.rules pattern '{}' must start with /queue/",
                rule.pattern
            ));
        }
        if let Some(rule) = self.rules.iter().find(|r| {
            r.dead_letter
                .as_deref()
                .is_some_and(|d| !d.starts_with("/queue/"))
        }) {
            return Err(format!(
                "queues.rules dead_letter of '{}' must be a /queue/ destination",
                rule.pattern
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn queue_rules_parse() {
        let config = Config::from_toml(
            "[[queues.rules]]\npattern = \"/queue/a.#\"\noverflow = \"drop-oldest\"\nmessage_ttl = \"2s\"\n",
            "t",
        )
        .expect("parses");
        let rule = &config.queues.rules[0];
        assert_eq!(rule.overflow, Some(Overflow::DropOldest));
        assert_eq!(rule.message_ttl, Some(Duration::from_secs(2)));
        assert!(Config::from_toml("[[queues.rules]]\npattern = \"/topic/x\"\n", "t").is_err());
    }
}
