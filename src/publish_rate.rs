//! Publish rate limits (`[[rate_limits.publish]]`): which rule a SEND falls
//! under, and each connection's token buckets for the rules that apply to it.
//!
//! A connection over its rate either pauses (the connection stops reading
//! until the debt is paid: back-pressure through TCP, nothing is lost) or is
//! ended with an ERROR naming the limit, as its rule says.

use crate::config::{PublishRateRule, RateLimitAction};
use crate::model::destination::{
    topic_pattern, DestinationLimits, PatternWord, QUEUE_PREFIX, TOPIC_PREFIX,
};
use crate::token_bucket::TokenBucket;
use std::sync::Arc;
use tokio::time::Instant;

/// A rate and its burst.
#[derive(Debug, Clone, Copy)]
struct Rate {
    per_second: f64,
    burst: f64,
}

/// One compiled `[[rate_limits.publish]]` rule.
#[derive(Debug)]
struct Rule {
    /// Queue or topic, and the pattern's words; none: every destination.
    pattern: Option<(bool, Vec<PatternWord>)>,
    /// The login it applies to; none: every connection.
    user: Option<String>,
    messages: Option<Rate>,
    bytes: Option<Rate>,
    action: RateLimitAction,
    /// How the ERROR names this rule.
    name: String,
}

/// All publish rules, compiled once at start and shared by the sessions.
#[derive(Debug, Default)]
pub struct PublishRules {
    rules: Vec<Rule>,
}

impl PublishRules {
    /// Compiles the configured rules; an invalid pattern names its rule.
    pub fn new(
        config: &[PublishRateRule],
        limits: &DestinationLimits,
    ) -> Result<PublishRules, String> {
        let rate = |per_second: Option<f64>, burst: Option<f64>| {
            per_second.map(|per_second| Rate {
                per_second,
                burst: burst.unwrap_or(per_second).max(1.0),
            })
        };
        let rules = config
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let pattern = rule
                    .pattern
                    .as_deref()
                    .map(|pattern| {
                        topic_pattern(pattern, limits)
                            .map(|words| (pattern.starts_with(QUEUE_PREFIX), words))
                            .map_err(|e| format!("rate_limits.publish[{index}].pattern: {}", e.0))
                    })
                    .transpose()?;
                let mut name = format!("rate_limits.publish[{index}]");
                let scope: Vec<String> = [
                    rule.pattern.as_ref().map(|p| format!("pattern {p}")),
                    rule.user.as_ref().map(|u| format!("user {u}")),
                ]
                .into_iter()
                .flatten()
                .collect();
                if !scope.is_empty() {
                    name = format!("{name} ({})", scope.join(", "));
                }
                Ok(Rule {
                    pattern,
                    user: rule.user.clone(),
                    messages: rate(rule.messages_per_second, rule.burst_messages),
                    bytes: rate(rule.bytes_per_second, rule.burst_bytes),
                    action: rule.action,
                    name,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(PublishRules { rules })
    }

    /// The limiter of a connection logged in as `user` (none: anonymous):
    /// buckets for the rules that can apply to it, full.
    pub fn limiter(self: &Arc<Self>, user: Option<&str>, now: Instant) -> PublishLimiter {
        let bucket =
            |rate: Option<Rate>| rate.map(|r| TokenBucket::new(r.per_second, r.burst, now));
        let applicable = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, rule)| rule.user.is_none() || rule.user.as_deref() == user)
            .map(|(rule, limits)| RuleBuckets {
                rule,
                messages: bucket(limits.messages),
                bytes: bucket(limits.bytes),
            })
            .collect();
        PublishLimiter {
            rules: self.clone(),
            applicable,
        }
    }
}

/// One rule's buckets on one connection.
#[derive(Debug)]
struct RuleBuckets {
    /// Index into [`PublishRules::rules`].
    rule: usize,
    messages: Option<TokenBucket>,
    bytes: Option<TokenBucket>,
}

/// What to do with a SEND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishVerdict {
    /// Within the rate.
    Go,
    /// Pass it on, then read nothing more from the connection until then.
    PauseUntil(Instant),
    /// Over the rate of an `action = "error"` rule: the ERROR's message.
    Refuse(String),
}

/// One connection's publish rate state: at most one pair of buckets per
/// configured rule (none at all when no rule is configured).
#[derive(Debug, Default)]
pub struct PublishLimiter {
    rules: Arc<PublishRules>,
    applicable: Vec<RuleBuckets>,
}

impl PublishLimiter {
    /// Counts a SEND of `bytes` to `destination` against the first rule
    /// that matches it.
    pub fn check(&mut self, destination: &str, bytes: usize, now: Instant) -> PublishVerdict {
        if self.applicable.is_empty() {
            return PublishVerdict::Go;
        }
        let name = words(destination);
        let rules = &self.rules.rules;
        let Some((buckets, rule)) = self.applicable.iter_mut().find_map(|buckets| {
            let rule = rules.get(buckets.rule)?;
            let matches = match (&rule.pattern, &name) {
                (None, _) => true,
                (Some((queue, pattern)), Some((is_queue, words))) => {
                    queue == is_queue && crate::model::destination::pattern_matches(pattern, words)
                }
                (Some(_), None) => false,
            };
            matches.then_some((buckets, rule))
        }) else {
            return PublishVerdict::Go;
        };
        let bytes = bytes as f64;
        match rule.action {
            RateLimitAction::Slow => {
                let waits = [
                    buckets.messages.as_mut().map(|b| b.take(1.0, now)),
                    buckets.bytes.as_mut().map(|b| b.take(bytes, now)),
                ];
                match waits.into_iter().flatten().max() {
                    Some(wait) if !wait.is_zero() => PublishVerdict::PauseUntil(now + wait),
                    _ => PublishVerdict::Go,
                }
            }
            RateLimitAction::Error => {
                if let (Some(bucket), Some(rate)) = (&mut buckets.messages, rule.messages) {
                    if !bucket.try_take(1.0, now) {
                        return PublishVerdict::Refuse(format!(
                            "publish rate limit exceeded: {} allows {} messages per second (burst {})",
                            rule.name, rate.per_second, rate.burst
                        ));
                    }
                }
                if let (Some(bucket), Some(rate)) = (&mut buckets.bytes, rule.bytes) {
                    if !bucket.try_take(bytes, now) {
                        return PublishVerdict::Refuse(format!(
                            "publish rate limit exceeded: {} allows {} bytes per second (burst {})",
                            rule.name, rate.per_second, rate.burst
                        ));
                    }
                }
                PublishVerdict::Go
            }
        }
    }
}

/// A destination's kind (queue or not) and words; none for names no pattern
/// can match (reply queues).
fn words(destination: &str) -> Option<(bool, Vec<&str>)> {
    if let Some(name) = destination.strip_prefix(QUEUE_PREFIX) {
        return Some((true, name.split('.').collect()));
    }
    destination
        .strip_prefix(TOPIC_PREFIX)
        .map(|name| (false, name.split('.').collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LIMITS: DestinationLimits = DestinationLimits {
        max_words: 32,
        max_multi_word_wildcards: 4,
    };

    fn rule(pattern: Option<&str>, user: Option<&str>, messages: Option<f64>) -> PublishRateRule {
        PublishRateRule {
            pattern: pattern.map(str::to_owned),
            user: user.map(str::to_owned),
            messages_per_second: messages,
            bytes_per_second: None,
            burst_messages: Some(1.0),
            burst_bytes: None,
            action: RateLimitAction::Error,
        }
    }

    fn rules(config: &[PublishRateRule]) -> Arc<PublishRules> {
        Arc::new(PublishRules::new(config, &LIMITS).expect("rules compile"))
    }

    #[test]
    fn the_first_matching_rule_applies_and_a_rule_without_rates_exempts() {
        let rules = rules(&[
            rule(Some("/topic/free.#"), None, None),
            rule(Some("/topic/#"), None, Some(1.0)),
        ]);
        let now = Instant::now();
        let mut limiter = rules.limiter(None, now);
        for _ in 0..10 {
            assert_eq!(limiter.check("/topic/free.a", 10, now), PublishVerdict::Go);
        }
        assert_eq!(limiter.check("/topic/paid", 10, now), PublishVerdict::Go);
        let PublishVerdict::Refuse(message) = limiter.check("/topic/paid", 10, now) else {
            panic!("second SEND within the second is refused");
        };
        assert!(
            message.contains("rate_limits.publish[1] (pattern /topic/#)"),
            "{message}"
        );
        assert!(message.contains("1 messages per second"), "{message}");
        // Queues do not match a topic pattern.
        assert_eq!(limiter.check("/queue/paid", 10, now), PublishVerdict::Go);
        assert_eq!(
            limiter.check("/reply-queue/s1.x", 10, now),
            PublishVerdict::Go
        );
    }

    #[test]
    fn user_rules_apply_to_that_login_only() {
        let rules = rules(&[rule(None, Some("bob"), Some(1.0))]);
        let now = Instant::now();
        let mut alice = rules.limiter(Some("alice"), now);
        let mut anonymous = rules.limiter(None, now);
        let mut bob = rules.limiter(Some("bob"), now);
        for _ in 0..5 {
            assert_eq!(alice.check("/topic/a", 1, now), PublishVerdict::Go);
            assert_eq!(anonymous.check("/topic/a", 1, now), PublishVerdict::Go);
        }
        assert_eq!(bob.check("/topic/a", 1, now), PublishVerdict::Go);
        assert!(matches!(
            bob.check("/queue/b", 1, now),
            PublishVerdict::Refuse(_)
        ));
    }

    #[test]
    fn slow_pauses_for_the_larger_of_the_two_debts() {
        let config = PublishRateRule {
            pattern: None,
            user: None,
            messages_per_second: Some(10.0),
            bytes_per_second: Some(1000.0),
            burst_messages: Some(10.0),
            burst_bytes: Some(1000.0),
            action: RateLimitAction::Slow,
        };
        let rules = rules(&[config]);
        let now = Instant::now();
        let mut limiter = rules.limiter(None, now);
        assert_eq!(limiter.check("/topic/a", 500, now), PublishVerdict::Go);
        // 1500 bytes of 1000: a byte debt of 1000 is one second, more than
        // the message debt (none).
        assert_eq!(
            limiter.check("/topic/a", 1500, now),
            PublishVerdict::PauseUntil(now + Duration::from_secs(1))
        );
    }

    #[test]
    fn a_bad_pattern_names_its_rule() {
        let error =
            PublishRules::new(&[rule(Some("/topic/a..b"), None, Some(1.0))], &LIMITS).unwrap_err();
        assert!(error.contains("rate_limits.publish[0].pattern"), "{error}");
    }
}
