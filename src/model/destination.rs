//! Destination names: which kind of destination a string names, and its words.
//!
//! `/topic/<name>`: `<name>` is dot-separated words. In a subscription a word
//! may be `*` (exactly one word) or `#` (zero or more words), as in RabbitMQ's
//! topic exchange, so applications move over unchanged.

/// Bounds on destination names, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct DestinationLimits {
    /// Most words in a name.
    pub max_words: usize,
    /// Most `#` words in a subscription pattern.
    pub max_multi_word_wildcards: usize,
}

/// The prefix of topic destinations.
pub const TOPIC_PREFIX: &str = "/topic/";
/// The prefix of queue destinations.
pub const QUEUE_PREFIX: &str = "/queue/";
/// `reply-to` names of this form make a private reply queue (RabbitMQ's form).
pub const TEMP_QUEUE_PREFIX: &str = "/temp-queue/";
/// What a `/temp-queue/` `reply-to` is rewritten to; responders send here.
pub const REPLY_QUEUE_PREFIX: &str = "/reply-queue/";
/// `/meta/subscribers/topic/<name>`: the subscriber count of a topic.
pub const META_SUBSCRIBERS_PREFIX: &str = "/meta/subscribers/";

/// Where a SEND goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendTarget {
    /// A topic, by its words.
    Topic(Vec<Box<str>>),
    /// A queue, by its full destination name.
    Queue(String),
    /// A connection's private reply queue, by its full destination name.
    ReplyQueue(String),
}

/// What a SUBSCRIBE asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeTarget {
    /// A topic pattern.
    Topic(Vec<PatternWord>),
    /// A queue, by its full destination name.
    Queue(String),
    /// `/meta/subscribers/topic/<name>`: the subscriber count of a topic.
    Subscribers {
        /// The topic's destination, `/topic/<name>`.
        topic: String,
        /// Its words (no wildcards).
        words: Vec<Box<str>>,
    },
}

/// Parses a SEND destination.
pub fn send_target(
    destination: &str,
    limits: &DestinationLimits,
) -> Result<SendTarget, DestinationError> {
    if destination.starts_with(QUEUE_PREFIX) {
        queue_name(destination, limits)?;
        Ok(SendTarget::Queue(destination.to_owned()))
    } else if destination.starts_with(REPLY_QUEUE_PREFIX) {
        Ok(SendTarget::ReplyQueue(destination.to_owned()))
    } else {
        topic_words(destination, limits).map(SendTarget::Topic)
    }
}

/// Parses a SUBSCRIBE destination.
pub fn subscribe_target(
    destination: &str,
    limits: &DestinationLimits,
) -> Result<SubscribeTarget, DestinationError> {
    if destination.starts_with(QUEUE_PREFIX) {
        queue_name(destination, limits)?;
        Ok(SubscribeTarget::Queue(destination.to_owned()))
    } else if let Some(counted) = destination.strip_prefix(META_SUBSCRIBERS_PREFIX) {
        let topic = format!("/{counted}");
        match send_target(&topic, limits) {
            Ok(SendTarget::Topic(words)) if topic.starts_with(TOPIC_PREFIX) => {
                Ok(SubscribeTarget::Subscribers { topic, words })
            }
            _ => Err(DestinationError(format!(
                "'{destination}' is not {META_SUBSCRIBERS_PREFIX}topic/<name> (no wildcards)"
            ))),
        }
    } else if destination.starts_with(REPLY_QUEUE_PREFIX)
        || destination.starts_with(TEMP_QUEUE_PREFIX)
    {
        Err(DestinationError(format!(
            "cannot subscribe to '{destination}': replies to a {TEMP_QUEUE_PREFIX} reply-to arrive on the sending connection by themselves"
        )))
    } else {
        wildcards_are_whole_words(destination)?;
        topic_pattern(destination, limits).map(SubscribeTarget::Topic)
    }
}

/// Checks a queue name: `/queue/` and dot-separated words without wildcards.
pub fn queue_name(destination: &str, limits: &DestinationLimits) -> Result<(), DestinationError> {
    let name = destination
        .strip_prefix(QUEUE_PREFIX)
        .unwrap_or(destination);
    let words: Vec<&str> = name.split('.').collect();
    if name.is_empty() || words.iter().any(|w| w.is_empty() || *w == "*" || *w == "#") {
        return Err(DestinationError(format!(
            "'{destination}' is not a queue name: dot-separated non-empty words, no wildcards"
        )));
    }
    if words.len() > limits.max_words {
        return Err(DestinationError(format!(
            "'{destination}' has {} words; max_destination_words is {}",
            words.len(),
            limits.max_words
        )));
    }
    Ok(())
}

/// One word of a subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternWord {
    /// Matches exactly this word.
    Exact(Box<str>),
    /// `*`: matches any one word.
    One,
    /// `#`: matches zero or more words.
    Many,
}

/// Why a destination was refused; the text goes into the ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationError(pub String);

/// Splits a topic name for publishing: no wildcards allowed.
pub fn topic_words(
    destination: &str,
    limits: &DestinationLimits,
) -> Result<Vec<Box<str>>, DestinationError> {
    let words = split(destination, limits)?;
    if words.iter().any(|w| *w == "*" || *w == "#") {
        return Err(DestinationError(format!(
            "cannot send to '{destination}': wildcards '*' and '#' are for SUBSCRIBE only"
        )));
    }
    Ok(words.into_iter().map(Box::from).collect())
}

/// Splits a subscription pattern. Adjacent `#` words mean the same as one and
/// are folded, which also bounds the work of matching.
pub fn topic_pattern(
    destination: &str,
    limits: &DestinationLimits,
) -> Result<Vec<PatternWord>, DestinationError> {
    let mut pattern: Vec<PatternWord> = Vec::new();
    for word in split(destination, limits)? {
        let word = match word {
            "*" => PatternWord::One,
            "#" if pattern.last() == Some(&PatternWord::Many) => continue,
            "#" => PatternWord::Many,
            exact => PatternWord::Exact(exact.into()),
        };
        pattern.push(word);
    }
    let many = pattern.iter().filter(|w| **w == PatternWord::Many).count();
    if many > limits.max_multi_word_wildcards {
        return Err(DestinationError(format!(
            "'{destination}' has {many} '#' wildcards; max_multi_word_wildcards is {}",
            limits.max_multi_word_wildcards
        )));
    }
    Ok(pattern)
}

/// Whether `pattern` matches `words` (the trie's rules, for one pattern).
/// Linear in pattern × words: `reachable[j]` says whether the pattern's
/// words so far can match the first `j` names' words, so a `#` never tries
/// every split of the rest (which was exponential in the number of `#`s).
pub fn pattern_matches(pattern: &[PatternWord], words: &[&str]) -> bool {
    let mut reachable: Vec<bool> = std::iter::once(true)
        .chain(words.iter().map(|_| false))
        .collect();
    for word in pattern {
        reachable = match word {
            // `#` takes zero or more words: reachable from any earlier point.
            PatternWord::Many => reachable
                .iter()
                .scan(false, |any, &r| {
                    *any |= r;
                    Some(*any)
                })
                .collect(),
            // One word: reachable one word further, if that word fits.
            _ => std::iter::once(false)
                .chain(reachable.iter().zip(words).map(|(&r, name_word)| {
                    r && match word {
                        PatternWord::Exact(exact) => **exact == **name_word,
                        _ => true,
                    }
                }))
                .collect(),
        };
    }
    reachable.last().copied().unwrap_or(false)
}

/// Refuses `*` or `#` inside a word of a subscription pattern: wildcards
/// are whole dot-separated words. MQTT and Spring users write
/// `/topic/foo/#` or `/topic/a*`, which would otherwise be silently literal
/// and never match what they meant.
pub fn wildcards_are_whole_words(destination: &str) -> Result<(), DestinationError> {
    let name = destination
        .strip_prefix(TOPIC_PREFIX)
        .unwrap_or(destination);
    let inside = name
        .split('.')
        .find(|word| *word != "*" && *word != "#" && word.contains(['*', '#']));
    match inside {
        Some(word) => Err(DestinationError(format!(
            "'{destination}' has a wildcard inside the word '{word}': wildcards '*' and '#' are whole dot-separated words (as in /topic/foo.#)"
        ))),
        None => Ok(()),
    }
}

fn split<'a>(
    destination: &'a str,
    limits: &DestinationLimits,
) -> Result<Vec<&'a str>, DestinationError> {
    let Some(name) = destination
        .strip_prefix(TOPIC_PREFIX)
        .or_else(|| destination.strip_prefix(QUEUE_PREFIX))
    else {
        return Err(DestinationError(format!(
            "unknown destination '{destination}': destinations start with {TOPIC_PREFIX} or {QUEUE_PREFIX}"
        )));
    };
    let words: Vec<&str> = name.split('.').collect();
    if words.iter().any(|w| w.is_empty()) {
        return Err(DestinationError(format!(
            "'{destination}' has an empty word: names are dot-separated non-empty words"
        )));
    }
    if words.len() > limits.max_words {
        return Err(DestinationError(format!(
            "'{destination}' has {} words; max_destination_words is {}",
            words.len(),
            limits.max_words
        )));
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DestinationLimits = DestinationLimits {
        max_words: 4,
        max_multi_word_wildcards: 2,
    };

    #[test]
    fn publish_names_refuse_wildcards_and_bad_shapes() {
        assert_eq!(topic_words("/topic/a.b", &LIMITS).unwrap().len(), 2);
        assert!(topic_words("/topic/a.*", &LIMITS).is_err());
        assert!(topic_words("/topic/a..b", &LIMITS).is_err());
        assert!(topic_words("/topic/", &LIMITS).is_err());
        assert!(topic_words("/nowhere/a", &LIMITS).is_err());
        assert_eq!(
            send_target("/queue/a.b", &LIMITS),
            Ok(SendTarget::Queue("/queue/a.b".into()))
        );
        assert!(send_target("/queue/a.*", &LIMITS).is_err());
        assert!(subscribe_target("/temp-queue/x", &LIMITS).is_err());
        assert!(topic_words("/topic/a.b.c.d.e", &LIMITS).is_err());
    }

    #[test]
    fn patterns_fold_adjacent_hashes_and_bound_them() {
        let pattern = topic_pattern("/topic/a.#.#.*", &LIMITS).unwrap();
        assert_eq!(
            pattern,
            vec![
                PatternWord::Exact("a".into()),
                PatternWord::Many,
                PatternWord::One
            ]
        );
        assert!(topic_pattern(
            "/topic/#.a.#.b.#",
            &DestinationLimits {
                max_words: 9,
                ..LIMITS
            }
        )
        .is_err());
    }

    #[test]
    fn a_wildcard_inside_a_word_is_refused_at_subscribe() {
        for destination in ["/topic/foo/#", "/topic/a*", "/topic/a.b#", "/topic/#x.y"] {
            let error = subscribe_target(destination, &LIMITS).unwrap_err();
            assert!(
                error
                    .0
                    .contains("wildcards '*' and '#' are whole dot-separated words"),
                "{destination}: {}",
                error.0
            );
        }
        for destination in ["/topic/foo.#", "/topic/a.*", "/topic/foo/bar", "/topic/#"] {
            assert!(
                subscribe_target(destination, &LIMITS).is_ok(),
                "{destination}"
            );
        }
    }

    #[test]
    fn many_hashes_match_in_linear_time() {
        let limits = DestinationLimits {
            max_words: 64,
            max_multi_word_wildcards: 8,
        };
        let pattern = topic_pattern("/topic/#.x.#.x.#.x.#.x.#.x.#.x.#.y", &limits).unwrap();
        let words = vec!["x"; 64];
        // Exponential before: this took far longer than a test may.
        assert!(!pattern_matches(&pattern, &words));
        let mut with_y = words.clone();
        with_y.push("y");
        assert!(pattern_matches(&pattern, &with_y));
        assert!(pattern_matches(&[], &[]));
        assert!(!pattern_matches(&[], &["a"]));
        assert!(pattern_matches(&[PatternWord::Many], &[]));
    }
}
