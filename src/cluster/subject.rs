//! Topic names and patterns as NATS subjects, both ways.
//!
//! A topic's words become subject tokens under `<prefix>.topic`, followed
//! by an end token: `/topic/prices.eur` is `stomphub.topic.prices.eur.__`.
//! The end token lets every subscription pattern be ONE subject, so that
//! each local subscription hears each message exactly once, in the order
//! its publisher sent it (NATS keeps order per subscription, not across
//! two): `prices.#` is `stomphub.topic.prices.>`, which holds `prices`
//! itself (`prices.__`, the zero-word case NATS's `prices.>` alone would
//! miss) and everything below it.
//!
//! A word becomes a token as is when it holds only ASCII letters, digits and
//! `-`; every other byte (a `.`-free STOMP word may hold spaces, `*`, `>`,
//! `_`, non-ASCII, ...) is written `_XX` (two upper-case hex digits). The
//! empty word is `_` and the end token `__`: neither can come out of a
//! non-empty word, whose `_` is always followed by two hex digits.
//!
//! Patterns NATS cannot say exactly (a `#` before the last word) subscribe
//! the widest subject that holds every match: the words before the first
//! `#`, then `>`; the local topic index then matches precisely.

use crate::model::destination::PatternWord;

/// The token after a topic's last word.
const END: &str = "__";
/// The token of an empty word.
const EMPTY: &str = "_";
/// Between the prefix and the words.
const TOPICS: &str = "topic";

/// Between the prefix and a queue's name.
const QUEUES: &str = "queue";

/// The subject of queue `name` (without `/queue/`): the whole name is ONE
/// token (its dots encoded), so that no queue's subject can match another's
/// and each queue's consumer filter is exact (work-queue streams need
/// filters that do not overlap).
pub fn queue_subject(prefix: &str, name: &str) -> String {
    let mut subject = format!("{prefix}.{QUEUES}.");
    push_word(&mut subject, name);
    subject.push('.');
    subject.push_str(END);
    subject
}

/// The queue name (without `/queue/`) of a queue subject under `prefix`
/// (in the shared stream or a stream of its own).
pub fn queue_name(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let token = rest
        .strip_prefix(QUEUES)
        .or_else(|| rest.strip_prefix(BOUNDED_QUEUES))?
        .strip_prefix('.')?;
    let token = token.strip_suffix(END)?.strip_suffix('.')?;
    decode_token(token).map(String::from)
}

/// Between the prefix and the name of a queue with its own stream (its
/// own bounds): apart from `queue`, whose subjects the shared stream holds.
const BOUNDED_QUEUES: &str = "bqueue";

/// The subject of queue `name` when it has its own stream
/// (`definitions.rs`): as [`queue_subject`], under `bqueue`.
pub fn bounded_queue_subject(prefix: &str, name: &str) -> String {
    let mut subject = format!("{prefix}.{BOUNDED_QUEUES}.");
    push_word(&mut subject, name);
    subject.push('.');
    subject.push_str(END);
    subject
}

/// The subject pattern of every queue under `prefix`.
pub fn queues_pattern(prefix: &str) -> String {
    format!("{prefix}.{QUEUES}.>")
}

/// The durable consumer name of queue `name`: its encoded token (letters,
/// digits, `-` and `_` only, as consumer names must be).
pub fn queue_consumer(name: &str) -> String {
    let mut consumer = String::from("q-");
    push_word(&mut consumer, name);
    consumer
}

/// The durable consumer name of durable topic subscription `key`
/// (`<client-id>/<name>`), encoded as a queue's is.
pub fn durable_consumer(key: &str) -> String {
    let mut consumer = String::from("d-");
    push_word(&mut consumer, key);
    consumer
}

/// Between the prefix and a live-feed destination's words: the subjects
/// of the engine's feed stream, apart from the plain topics' ones so that
/// a feed message is never also heard as a core topic message.
const FEEDS: &str = "feed";

/// Between the prefix and a live-feed destination's words, on the copy of
/// each feed message the durable subscriptions' stream may capture
/// (`durables.rs`): no node listens on it for live delivery.
const DURABLE_FEEDS: &str = "dfeed";

/// The subject a message to topic `words` is published on.
pub fn topic_subject(prefix: &str, words: &[Box<str>]) -> String {
    words_subject(prefix, TOPICS, words)
}

/// The subject a message to the live-feed destination `words` is published
/// on (captured by the feed stream).
pub fn feed_subject(prefix: &str, words: &[Box<str>]) -> String {
    words_subject(prefix, FEEDS, words)
}

/// The subject of the copy of a feed message to `words` for durable
/// subscriptions.
pub fn durable_feed_subject(prefix: &str, words: &[Box<str>]) -> String {
    words_subject(prefix, DURABLE_FEEDS, words)
}

/// Every feed subject under `prefix`: the feed stream's subjects.
pub fn feeds_pattern(prefix: &str) -> String {
    format!("{prefix}.{FEEDS}.>")
}

/// The topic words of a subject made by [`feed_subject`]; `None` for
/// anything else.
pub fn feed_words(prefix: &str, subject: &str) -> Option<Vec<Box<str>>> {
    subject_words(prefix, FEEDS, subject)
}

fn words_subject(prefix: &str, kind: &str, words: &[Box<str>]) -> String {
    let mut subject = format!("{prefix}.{kind}");
    for word in words {
        subject.push('.');
        push_word(&mut subject, word);
    }
    subject.push('.');
    subject.push_str(END);
    subject
}

/// The one subject a subscription with `pattern` listens on: it matches
/// every topic subject the pattern matches (and, with a `#` before the
/// end, maybe more, which the local index filters out).
pub fn pattern_subject(prefix: &str, pattern: &[PatternWord]) -> String {
    pattern_subject_under(prefix, TOPICS, pattern)
}

/// [`pattern_subject`] for the copies of feed messages
/// ([`durable_feed_subject`]).
pub fn durable_feed_pattern(prefix: &str, pattern: &[PatternWord]) -> String {
    pattern_subject_under(prefix, DURABLE_FEEDS, pattern)
}

fn pattern_subject_under(prefix: &str, kind: &str, pattern: &[PatternWord]) -> String {
    let mut subject = format!("{prefix}.{kind}");
    for word in pattern {
        subject.push('.');
        match word {
            PatternWord::Exact(word) => push_word(&mut subject, word),
            PatternWord::One => subject.push('*'),
            // Zero or more words, then the end token: one or more tokens.
            PatternWord::Many => {
                subject.push('>');
                return subject;
            }
        }
    }
    subject.push('.');
    subject.push_str(END);
    subject
}

/// The topic words of a subject made by [`topic_subject`] with `prefix`;
/// `None` for anything else.
pub fn topic_words(prefix: &str, subject: &str) -> Option<Vec<Box<str>>> {
    subject_words(prefix, TOPICS, subject)
}

fn subject_words(prefix: &str, kind: &str, subject: &str) -> Option<Vec<Box<str>>> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let rest = rest.strip_prefix(kind)?.strip_prefix('.')?;
    let tokens = rest.strip_suffix(END)?;
    // At least one word before the end token.
    let tokens = tokens.strip_suffix('.')?;
    tokens.split('.').map(decode_token).collect()
}

fn push_word(subject: &mut String, word: &str) {
    if word.is_empty() {
        subject.push_str(EMPTY);
        return;
    }
    for byte in word.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'-' {
            subject.push(char::from(byte));
        } else {
            subject.push_str(&format!("_{byte:02X}"));
        }
    }
}

fn decode_token(token: &str) -> Option<Box<str>> {
    if token == EMPTY {
        return Some("".into());
    }
    let mut bytes = Vec::with_capacity(token.len());
    let mut rest = token.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'_' {
            let hex = tail.get(..2)?;
            let hex = std::str::from_utf8(hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else if first.is_ascii_alphanumeric() || first == b'-' {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    if bytes.is_empty() {
        return None;
    }
    String::from_utf8(bytes).ok().map(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_name_reads_back_from_its_subject() {
        for name in ["orders", "a.b/c d", ""] {
            let subject = queue_subject("p.x", name);
            assert_eq!(queue_name("p.x", &subject).as_deref(), Some(name));
        }
        assert_eq!(queue_name("p.x", "p.x.topic.a.__"), None);
    }
    use crate::model::destination::pattern_matches;
    use proptest::prelude::*;

    /// NATS's own matching of a subscription subject against a subject.
    fn nats_matches(filter: &str, subject: &str) -> bool {
        let filter: Vec<&str> = filter.split('.').collect();
        let subject: Vec<&str> = subject.split('.').collect();
        for (at, token) in filter.iter().enumerate() {
            match *token {
                ">" => return subject.len() > at,
                "*" if at < subject.len() => {}
                exact if subject.get(at) == Some(&exact) => {}
                _ => return false,
            }
        }
        filter.len() == subject.len()
    }

    fn words(text: &[&str]) -> Vec<Box<str>> {
        text.iter().map(|w| Box::from(*w)).collect()
    }

    #[test]
    fn words_nats_cannot_hold_are_encoded_and_read_back() {
        let topic = words(&["a b", "*", ">", "x_y", "", "é", "ok-1"]);
        let subject = topic_subject("p", &topic);
        assert_eq!(subject, "p.topic.a_20b._2A._3E.x_5Fy._._C3_A9.ok-1.__");
        assert!(!subject
            .split('.')
            .any(|t| t.is_empty() || t == "*" || t == ">" || t.contains(' ')));
        assert_eq!(topic_words("p", &subject), Some(topic.clone()));
        assert_eq!(topic_words("p", "p.topic.__"), None, "no words");
        assert_eq!(topic_words("p", "q.topic.a.__"), None, "other prefix");
        assert_eq!(topic_words("p", "p.topic.a_2"), None);
        assert_eq!(topic_words("p", "p.topic.a_ZZ.__"), None);
        let feed = feed_subject("p", &topic);
        assert!(feed.starts_with("p.feed.a_20b."));
        assert_eq!(feed_words("p", &feed), Some(topic));
        assert_eq!(
            topic_words("p", &feed),
            None,
            "a feed is not a topic subject"
        );
    }

    #[test]
    fn each_pattern_is_one_subject_and_hash_takes_zero_words() {
        use PatternWord::*;
        let exact = |w: &str| Exact(w.into());
        let a_hash = pattern_subject("p", &[exact("a"), Many]);
        assert_eq!(a_hash, "p.topic.a.>");
        assert!(nats_matches(&a_hash, &topic_subject("p", &words(&["a"]))));
        assert!(nats_matches(
            &a_hash,
            &topic_subject("p", &words(&["a", "b"]))
        ));
        assert!(!nats_matches(&a_hash, &topic_subject("p", &words(&["b"]))));
        assert_eq!(pattern_subject("p", &[exact("a"), One]), "p.topic.a.*.__");
        assert_eq!(pattern_subject("p", &[Many, exact("b")]), "p.topic.>");
        assert_eq!(
            pattern_subject("p", &[exact("a"), Many, exact("b")]),
            "p.topic.a.>"
        );
    }

    fn pattern_word() -> impl Strategy<Value = PatternWord> {
        prop_oneof![
            "[ab_ *]{0,2}".prop_map(|w| PatternWord::Exact(w.into())),
            Just(PatternWord::One),
            Just(PatternWord::Many),
        ]
    }

    proptest! {
        /// Whatever our pattern matches, its NATS subject hears; and every
        /// subject reads back as the words it was made of.
        #[test]
        fn the_subject_of_a_pattern_never_misses_a_match(
            pattern in proptest::collection::vec(pattern_word(), 1..5),
            topic in proptest::collection::vec("[ab_ *]{0,2}", 1..5),
        ) {
            let topic: Vec<Box<str>> = topic.iter().map(|w| Box::from(w.as_str())).collect();
            let subject = topic_subject("x.y", &topic);
            prop_assert_eq!(topic_words("x.y", &subject), Some(topic.clone()));
            let plain: Vec<&str> = topic.iter().map(|w| &**w).collect();
            if pattern_matches(&pattern, &plain) {
                prop_assert!(nats_matches(&pattern_subject("x.y", &pattern), &subject));
            }
        }
    }
}
