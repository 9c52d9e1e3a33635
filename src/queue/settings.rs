//! A queue's settings: the `[queues]` defaults, overridden by the first
//! matching `[[queues.rules]]`, overridden by RabbitMQ-style arguments on the
//! SUBSCRIBE or SEND that created the queue, except for the dead-letter
//! target, where a rule's `dead_letter` wins over `x-dead-letter-routing-key`.

use crate::config::{Overflow, QueueRule, QueuesConfig};
use crate::model::destination::{
    pattern_matches, topic_pattern, DestinationLimits, PatternWord, QUEUE_PREFIX,
};
use std::time::Duration;
use stomp_protocol::Headers;
use tracing::debug;

/// The settings in force for one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// Default prefetch of its subscriptions.
    pub prefetch: usize,
    /// Most messages held.
    pub max_length: usize,
    /// Most bytes held (bodies and headers).
    pub max_bytes: usize,
    /// What a SEND to a full queue does.
    pub overflow: Overflow,
    /// Default time-to-live.
    pub message_ttl: Option<Duration>,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// First NACK redelivery delay.
    pub redelivery_delay: Duration,
    /// Cap of the redelivery delay.
    pub redelivery_delay_max: Duration,
    /// Where dead letters go; `None` for a dead-letter queue itself.
    pub dead_letter: Option<String>,
    /// One consumer at a time.
    pub exclusive: bool,
    /// Deleted, with its messages, when its last consumer leaves.
    pub auto_delete: bool,
}

/// Queue arguments a client may pass on SUBSCRIBE or SEND (RabbitMQ's names).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueArguments {
    /// `x-message-ttl` (ms).
    pub message_ttl: Option<Duration>,
    /// `x-max-length`.
    pub max_length: Option<usize>,
    /// `x-dead-letter-routing-key`: dead letters go to `/queue/<key>`.
    pub dead_letter: Option<String>,
    /// `exclusive:true`.
    pub exclusive: bool,
    /// `auto-delete:true`.
    pub auto_delete: bool,
}

impl QueueArguments {
    /// Reads the arguments from a frame's headers; a malformed number is an error.
    pub fn from_headers(headers: &Headers) -> Result<QueueArguments, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            headers
                .get(name)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("{name} '{v}' is not a non-negative integer"))
                })
                .transpose()
        };
        let flag = |name: &str| headers.get(name) == Some("true");
        if headers.get("durable").is_some() {
            debug!("'durable' header accepted; queues are in memory in this release");
        }
        Ok(QueueArguments {
            message_ttl: number("x-message-ttl")?.map(Duration::from_millis),
            max_length: number("x-max-length")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            dead_letter: headers
                .get("x-dead-letter-routing-key")
                .map(|key| format!("{QUEUE_PREFIX}{}", key.trim_start_matches(QUEUE_PREFIX))),
            exclusive: flag("exclusive"),
            auto_delete: flag("auto-delete"),
        })
    }
}

/// Resolves settings for queue names.
#[derive(Debug, Clone)]
pub struct QueuePolicy {
    defaults: QueuesConfig,
    rules: Vec<(Vec<PatternWord>, QueueRule)>,
}

impl QueuePolicy {
    /// Builds the policy; rule patterns were validated with the config.
    pub fn new(config: &QueuesConfig, limits: &DestinationLimits) -> Result<QueuePolicy, String> {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                topic_pattern(&rule.pattern, limits)
                    .map(|pattern| (pattern, rule.clone()))
                    .map_err(|e| format!("queues.rules pattern: {}", e.0))
            })
            .collect::<Result<_, _>>()?;
        Ok(QueuePolicy {
            defaults: config.clone(),
            rules,
        })
    }

    /// The `[queues]` defaults (what applies where no rule or argument does).
    pub fn defaults(&self) -> &QueuesConfig {
        &self.defaults
    }

    /// The settings for a new queue `name` created with `arguments`.
    pub fn settings_for(&self, name: &str, arguments: &QueueArguments) -> QueueSettings {
        let d = &self.defaults;
        let words: Vec<&str> = name.trim_start_matches(QUEUE_PREFIX).split('.').collect();
        let rule = self
            .rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, &words))
            .map(|(_, rule)| rule);
        let is_dead_letter_queue = name.ends_with(&d.dead_letter_suffix);
        // The operator's rule wins over the client's argument: a client
        // must not move dead letters out of where the operator collects them.
        let dead_letter = rule
            .and_then(|r| r.dead_letter.clone())
            .or_else(|| arguments.dead_letter.clone())
            .or_else(|| (!is_dead_letter_queue).then(|| format!("{name}{}", d.dead_letter_suffix)))
            .filter(|target| target != name);
        QueueSettings {
            prefetch: rule.and_then(|r| r.prefetch).unwrap_or(d.prefetch),
            max_length: arguments
                .max_length
                .or_else(|| rule.and_then(|r| r.max_length))
                .unwrap_or(d.max_length),
            max_bytes: rule.and_then(|r| r.max_bytes).unwrap_or(d.max_bytes),
            overflow: rule.and_then(|r| r.overflow).unwrap_or(d.overflow),
            message_ttl: arguments
                .message_ttl
                .or_else(|| rule.and_then(|r| r.message_ttl))
                .or(Some(d.message_ttl))
                .filter(|ttl| !ttl.is_zero()),
            max_deliveries: rule
                .and_then(|r| r.max_deliveries)
                .unwrap_or(d.max_deliveries),
            redelivery_delay: rule
                .and_then(|r| r.redelivery_delay)
                .unwrap_or(d.redelivery_delay),
            redelivery_delay_max: d.redelivery_delay_max,
            dead_letter,
            exclusive: arguments.exclusive,
            auto_delete: arguments.auto_delete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const LIMITS: DestinationLimits = DestinationLimits {
        max_words: 32,
        max_multi_word_wildcards: 4,
    };

    #[test]
    fn defaults_then_rule_then_arguments() {
        let config = Config::from_toml(
            "[[queues.rules]]\npattern = \"/queue/orders.#\"\nmax_length = 10\noverflow = \"drop-oldest\"\n",
            "t",
        )
        .expect("config");
        let policy = QueuePolicy::new(&config.queues, &LIMITS).expect("policy");
        let plain = policy.settings_for("/queue/jobs", &QueueArguments::default());
        assert_eq!(plain.max_length, 100_000);
        assert_eq!(plain.overflow, Overflow::Reject);
        assert_eq!(plain.message_ttl, None);
        assert_eq!(plain.dead_letter.as_deref(), Some("/queue/jobs.dlq"));
        let ruled = policy.settings_for("/queue/orders.eu", &QueueArguments::default());
        assert_eq!(
            (ruled.max_length, ruled.overflow),
            (10, Overflow::DropOldest)
        );
        let argued = policy.settings_for(
            "/queue/orders.eu",
            &QueueArguments {
                max_length: Some(3),
                message_ttl: Some(Duration::from_millis(50)),
                ..QueueArguments::default()
            },
        );
        assert_eq!(argued.max_length, 3);
        assert_eq!(argued.message_ttl, Some(Duration::from_millis(50)));
        assert_eq!(
            policy
                .settings_for("/queue/jobs.dlq", &QueueArguments::default())
                .dead_letter,
            None
        );
    }

    #[test]
    fn a_rules_dead_letter_wins_over_the_clients() {
        let config = Config::from_toml(
            "[[queues.rules]]\npattern = \"/queue/orders.#\"\ndead_letter = \"/queue/ops.dead\"\n",
            "t",
        )
        .expect("config");
        let policy = QueuePolicy::new(&config.queues, &LIMITS).expect("policy");
        let client = QueueArguments {
            dead_letter: Some("/queue/mine".into()),
            ..QueueArguments::default()
        };
        let ruled = policy.settings_for("/queue/orders.eu", &client);
        assert_eq!(ruled.dead_letter.as_deref(), Some("/queue/ops.dead"));
        let unruled = policy.settings_for("/queue/jobs", &client);
        assert_eq!(unruled.dead_letter.as_deref(), Some("/queue/mine"));
    }

    #[test]
    fn arguments_from_headers() {
        let headers: Headers = [
            ("x-message-ttl", "500"),
            ("x-dead-letter-routing-key", "failed"),
            ("exclusive", "true"),
        ]
        .into_iter()
        .collect();
        let arguments = QueueArguments::from_headers(&headers).expect("parses");
        assert_eq!(arguments.message_ttl, Some(Duration::from_millis(500)));
        assert_eq!(arguments.dead_letter.as_deref(), Some("/queue/failed"));
        assert!(arguments.exclusive && !arguments.auto_delete);
        let bad: Headers = [("x-max-length", "-1")].into_iter().collect();
        assert!(QueueArguments::from_headers(&bad).is_err());
    }
}
