//! `[outbound]` (each connection's outbound budget) and `[slow_consumers]`
//! (what happens to a subscriber past it).

use serde::{Deserialize, Serialize};

/// `[outbound]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboundConfig {
    /// Bytes queued for one client before it counts as a slow consumer.
    pub max_queued_bytes: usize,
    /// Frames queued for one client before it counts as a slow consumer.
    pub max_queued_frames: usize,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            // Measured: healthy readers on a loaded 2-core machine needed up
            // to 2.4 MB (docs/operations.md#slow-consumers); 8 MiB leaves room.
            max_queued_bytes: 8 * 1024 * 1024,
            max_queued_frames: 4096,
        }
    }
}

/// What happens to a subscriber whose outbound budget is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// ERROR "slow consumer", close 1008.
    Disconnect,
    /// Drop its oldest queued topic messages (auto-ack topic subscriptions).
    DropOldest,
    /// Past the budget, replace a queued message of the same destination by
    /// the newest (`x-conflated:<count>`); never cut off for topic traffic.
    Conflate,
}

/// `[slow_consumers]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlowConsumersConfig {
    /// The policy where no rule matches.
    pub policy: SlowConsumerPolicy,
    /// Policies per subscription destination pattern; the first match wins.
    pub rules: Vec<SlowConsumerRule>,
}

impl Default for SlowConsumersConfig {
    fn default() -> Self {
        SlowConsumersConfig {
            policy: SlowConsumerPolicy::Disconnect,
            rules: Vec::new(),
        }
    }
}

/// `[[slow_consumers.rules]]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowConsumerRule {
    /// A `/topic/...` pattern matched against subscription destinations.
    pub pattern: String,
    /// The policy for matching subscriptions.
    pub policy: SlowConsumerPolicy,
}

impl SlowConsumersConfig {
    /// Rules are for topics.
    pub(super) fn validate(&self) -> Result<(), String> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| !r.pattern.starts_with("/topic/"))
        {
            return Err(format!(
                "slow_consumers.rules pattern '{}' must start with /topic/",
                rule.pattern
            ));
        }
        Ok(())
    }
}
