//! Destination classes: the label metrics carry instead of a destination
//! name. A class is a pattern the operator configured (`[[queues.rules]]`,
//! `[storage] persistent`, `[[slow_consumers.rules]]`,
//! `[[rate_limits.publish]]`), first match wins, or `other`; so the number
//! of series is bounded by the configuration, never by what clients name.

use crate::config::Config;
use crate::model::destination::{pattern_matches, topic_pattern, DestinationLimits, PatternWord};

/// The label of destinations no configured pattern matches.
pub const OTHER: &str = "other";

/// The configured patterns, in the order they are tried, then `other`.
#[derive(Debug, Clone, Default)]
pub struct DestinationClasses {
    /// (the pattern as written, its `/topic/` or `/queue/` prefix, its words).
    patterns: Vec<(String, &'static str, Vec<PatternWord>)>,
}

impl DestinationClasses {
    /// The classes of `config`; patterns that do not parse (the sections
    /// that own them refuse them at start) are left out.
    pub fn new(config: &Config, limits: &DestinationLimits) -> DestinationClasses {
        let written = config
            .queues
            .rules
            .iter()
            .map(|rule| rule.pattern.as_str())
            .chain(config.storage.persistent.iter().map(String::as_str))
            .chain(
                config
                    .slow_consumers
                    .rules
                    .iter()
                    .map(|r| r.pattern.as_str()),
            )
            .chain(
                config
                    .rate_limits
                    .publish
                    .iter()
                    .filter_map(|r| r.pattern.as_deref()),
            );
        let mut patterns: Vec<(String, &'static str, Vec<PatternWord>)> = Vec::new();
        for text in written {
            if patterns.iter().any(|(known, _, _)| known == text) {
                continue;
            }
            let Some(prefix) = ["/topic/", "/queue/"]
                .into_iter()
                .find(|prefix| text.starts_with(prefix))
            else {
                continue;
            };
            if let Ok(words) = topic_pattern(text, limits) {
                patterns.push((text.to_owned(), prefix, words));
            }
        }
        DestinationClasses { patterns }
    }

    /// How many classes there are, `other` included (the last index).
    pub fn len(&self) -> usize {
        self.patterns.len() + 1
    }

    /// Never empty: `other` is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The class index of `destination`: the first configured pattern that
    /// matches it, else `other` (`len() - 1`). Free when none is configured.
    pub fn of(&self, destination: &str) -> usize {
        if self.patterns.is_empty() {
            return 0;
        }
        let found = self.patterns.iter().position(|(_, prefix, pattern)| {
            destination.strip_prefix(prefix).is_some_and(|name| {
                let words: Vec<&str> = name.split('.').collect();
                pattern_matches(pattern, &words)
            })
        });
        found.unwrap_or(self.patterns.len())
    }

    /// The label of class `index`.
    pub fn label(&self, index: usize) -> &str {
        self.patterns
            .get(index)
            .map_or(OTHER, |(text, _, _)| text.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_patterns_are_classes_and_the_rest_is_other() {
        let config = Config::from_toml(
            "[storage]\npersistent = [\"/queue/orders.#\"]\n[[queues.rules]]\npattern = \"/queue/jobs.*\"\n",
            "t",
        )
        .expect("parses");
        let limits = DestinationLimits {
            max_words: 32,
            max_multi_word_wildcards: 4,
        };
        let classes = DestinationClasses::new(&config, &limits);
        assert_eq!(classes.len(), 3);
        assert_eq!(classes.label(classes.of("/queue/jobs.a")), "/queue/jobs.*");
        assert_eq!(
            classes.label(classes.of("/queue/orders.eu.1")),
            "/queue/orders.#"
        );
        assert_eq!(classes.label(classes.of("/topic/orders.eu")), OTHER);
        assert_eq!(classes.label(classes.of("/queue/jobs.a.b")), OTHER);
        assert_eq!(DestinationClasses::default().of("/topic/x"), 0);
    }
}
