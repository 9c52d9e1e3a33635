//! `[topics]`: live-feed state per topic destination (offsets, history, the
//! retained last value) and its bounds, with `[[topics.rules]]` per pattern.

use super::values::{optional_duration, optional_duration_text};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[topics]`: bounds on feed state, and rules per destination pattern.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Bytes (bodies, headers, destinations) of kept history and retained
    /// values over all destinations; past it a destination's oldest kept
    /// messages go first.
    pub max_history_bytes: usize,
    /// Destinations with feed state (offsets, history or a retained value);
    /// past it, new destinations are fanned out plainly (no offsets).
    pub max_retained_destinations: usize,
    /// Destinations whose snapshot one wildcard SUBSCRIBE gets.
    pub max_snapshot_destinations: usize,
    /// Feed policies per `/topic/...` pattern; the first match wins.
    pub rules: Vec<TopicRule>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            max_history_bytes: 64 * 1024 * 1024,
            max_retained_destinations: 100_000,
            max_snapshot_destinations: 1000,
            rules: Vec::new(),
        }
    }
}

/// What `retain` keeps of each destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Retain {
    /// Nothing beyond `history` (a SEND with `x-retain:true` still retains).
    #[default]
    None,
    /// The last message, even past `history_age`.
    Last,
}

/// `[[topics.rules]]`: feed state for topic destinations matching `pattern`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicRule {
    /// A `/topic/...` pattern (`*` one word, `#` any words).
    pub pattern: String,
    /// Messages kept per destination (0: none).
    #[serde(default)]
    pub history: usize,
    /// Kept messages older than this are dropped (unset: no age limit).
    #[serde(
        default,
        deserialize_with = "optional_duration",
        serialize_with = "optional_duration_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub history_age: Option<Duration>,
    /// `"last"`: keep each destination's last message as its retained value.
    #[serde(default)]
    pub retain: Retain,
    /// History, retained values and epochs survive restarts (through the
    /// store; a SEND's RECEIPT then waits for the sync).
    #[serde(default)]
    pub persistent: bool,
}

impl TopicsConfig {
    /// Rules name topics; bounds are positive.
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.max_retained_destinations == 0 || self.max_snapshot_destinations == 0 {
            return Err(
                "topics.max_retained_destinations and topics.max_snapshot_destinations must be greater than 0"
                    .into(),
            );
        }
        if let Some(rule) = self
            .rules
            .iter()
            .find(|r| !r.pattern.starts_with("/topic/"))
        {
            return Err(format!(
                "topics.rules pattern '{}' must start with /topic/",
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
    fn topic_rules_parse() {
        let config = Config::from_toml(
            "[[topics.rules]]\npattern = \"/topic/prices.*\"\nhistory = 10\nhistory_age = \"5m\"\nretain = \"last\"\n",
            "t",
        )
        .expect("parses");
        let rule = &config.topics.rules[0];
        assert_eq!(rule.history, 10);
        assert_eq!(rule.history_age, Some(Duration::from_secs(300)));
        assert_eq!(rule.retain, Retain::Last);
        assert!(Config::from_toml("[[topics.rules]]\npattern = \"/queue/x\"\n", "t").is_err());
        let error = Config::from_toml(
            "[storage]\nenabled = false\n[[topics.rules]]\npattern = \"/topic/x\"\npersistent = true\n",
            "t",
        )
        .unwrap_err();
        assert!(error.to_string().contains("storage.enabled"), "{error}");
        assert!(Config::from_toml(
            "[[topics.rules]]\npattern = \"/topic/x\"\nretain = \"all\"\n",
            "t"
        )
        .is_err());
    }
}
