//! Permissions: allow-lists of destination patterns for `read` (SUBSCRIBE)
//! and `write` (SEND). A subscription pattern is allowed only if *every*
//! destination it can match is allowed, so `/topic/#` is refused to someone
//! allowed `/topic/public.#` only.

use crate::model::destination::{
    topic_pattern, DestinationLimits, PatternWord, QUEUE_PREFIX, TOPIC_PREFIX,
};

/// One allowed pattern: a topic or a queue pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Allowed {
    queue: bool,
    words: Vec<PatternWord>,
}

/// What one connection may do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    read: Vec<Allowed>,
    write: Vec<Allowed>,
}

fn parse(patterns: &[String], limits: &DestinationLimits) -> Result<Vec<Allowed>, String> {
    patterns
        .iter()
        .map(|pattern| {
            let queue = pattern.starts_with(QUEUE_PREFIX);
            if !queue && !pattern.starts_with(TOPIC_PREFIX) {
                return Err(format!(
                    "permission pattern '{pattern}' must start with /topic/ or /queue/"
                ));
            }
            topic_pattern(pattern, limits)
                .map(|words| Allowed { queue, words })
                .map_err(|e| format!("permission pattern: {}", e.0))
        })
        .collect()
}

/// Whether every word sequence `inner` matches is matched by `outer`.
fn contained(inner: &[PatternWord], outer: &[PatternWord]) -> bool {
    match (inner.split_first(), outer.split_first()) {
        (_, Some((PatternWord::Many, rest))) => {
            (0..=inner.len()).any(|skip| contained(&inner[skip..], rest))
        }
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
        (Some((PatternWord::Many, _)), Some(_)) => false,
        (Some((PatternWord::One, inner_rest)), Some((PatternWord::One, outer_rest))) => {
            contained(inner_rest, outer_rest)
        }
        (Some((PatternWord::One, _)), Some(_)) => false,
        (Some((PatternWord::Exact(word), inner_rest)), Some((outer_word, outer_rest))) => {
            let matches = match outer_word {
                PatternWord::Exact(allowed) => allowed == word,
                _ => true,
            };
            matches && contained(inner_rest, outer_rest)
        }
    }
}

impl Permissions {
    /// Parses read and write pattern lists.
    pub fn new(
        read: &[String],
        write: &[String],
        limits: &DestinationLimits,
    ) -> Result<Permissions, String> {
        Ok(Permissions {
            read: parse(read, limits)?,
            write: parse(write, limits)?,
        })
    }

    fn allows(list: &[Allowed], queue: bool, words: &[PatternWord]) -> bool {
        list.iter()
            .any(|allowed| allowed.queue == queue && contained(words, &allowed.words))
    }

    /// May SUBSCRIBE to `destination` (a topic pattern or a queue name).
    pub fn can_read(&self, destination: &str, limits: &DestinationLimits) -> bool {
        let queue = destination.starts_with(QUEUE_PREFIX);
        topic_pattern(destination, limits)
            .is_ok_and(|words| Permissions::allows(&self.read, queue, &words))
    }

    /// May SEND to `destination`. Replies to a `reply-to` are always allowed.
    pub fn can_write(&self, destination: &str, limits: &DestinationLimits) -> bool {
        if destination.starts_with(crate::model::destination::REPLY_QUEUE_PREFIX) {
            return true;
        }
        let queue = destination.starts_with(QUEUE_PREFIX);
        topic_pattern(destination, limits)
            .is_ok_and(|words| Permissions::allows(&self.write, queue, &words))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DestinationLimits = DestinationLimits {
        max_words: 32,
        max_multi_word_wildcards: 4,
    };

    fn read(allowed: &[&str]) -> Permissions {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        Permissions::new(&allowed, &[], &LIMITS).expect("valid")
    }

    #[test]
    fn wildcards_must_stay_inside_what_is_allowed() {
        let p = read(&["/topic/public.#", "/topic/scores.*.live", "/queue/jobs"]);
        assert!(p.can_read("/topic/public", &LIMITS));
        assert!(p.can_read("/topic/public.a.b", &LIMITS));
        assert!(p.can_read("/topic/public.*", &LIMITS));
        assert!(p.can_read("/topic/public.#", &LIMITS));
        assert!(!p.can_read("/topic/#", &LIMITS), "spans forbidden topics");
        assert!(!p.can_read("/topic/*.a", &LIMITS), "could be private.a");
        assert!(p.can_read("/topic/scores.football.live", &LIMITS));
        assert!(p.can_read("/topic/scores.*.live", &LIMITS));
        assert!(!p.can_read("/topic/scores.#", &LIMITS));
        assert!(!p.can_read("/topic/scores.*.#", &LIMITS));
        assert!(p.can_read("/queue/jobs", &LIMITS));
        assert!(!p.can_read("/queue/other", &LIMITS));
        assert!(
            !p.can_read("/queue/public.a", &LIMITS),
            "topic and queue patterns do not mix"
        );
    }

    #[test]
    fn writes_and_replies() {
        let p = Permissions::new(&[], &["/queue/orders".to_owned()], &LIMITS).expect("valid");
        assert!(p.can_write("/queue/orders", &LIMITS));
        assert!(!p.can_write("/queue/payments", &LIMITS));
        assert!(!p.can_write("/topic/orders", &LIMITS));
        assert!(p.can_write("/reply-queue/s1.x", &LIMITS));
        assert!(Permissions::new(&["/elsewhere".to_owned()], &[], &LIMITS).is_err());
    }
}
