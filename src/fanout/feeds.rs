//! Live-feed state per topic destination: its offsets and epoch, a bounded
//! history of recent messages and its retained last value, kept for
//! destinations a `[[topics.rules]]` rule names or a SEND with
//! `x-retain:true` retains.
//!
//! Locking: one `Mutex` per shard of destinations (16), taken by publishers
//! under the topic index's read lock, one shard at a time. A publisher
//! assigns the offset, keeps the message and pushes it to the subscribers in
//! one critical section of its destination's shard, so two publishers of one
//! destination serialise there and every subscriber sees that destination's
//! offsets in increasing order. The router reads the state for a new
//! subscription's snapshot under the index's *write* lock, which no
//! publisher holds then (`snapshot.rs`): the snapshot and the live stream
//! meet with no gap and no duplicate. Order: index → shard → outbound
//! queue; `pending` (persistent feeds' store changes) is a leaf under a
//! shard.

use super::encode::Stamp;
use super::engine_progress::EngineFeeds;
use super::feed::{Feed, Kept, Policy};
use crate::config::{Retain, TopicsConfig};
use crate::model::compact::push_base62;
use crate::model::destination::{pattern_matches, topic_pattern, DestinationLimits, PatternWord};
use crate::model::message::{epoch_ms, Message};
use crate::store::{StoreOp, StoredFeed};
use bytes::Bytes;
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::warn;

/// Shards of destinations: publishers of different destinations rarely meet.
const SHARDS: usize = 16;

/// A destination's topic words (`/topic/a.b` → `["a", "b"]`).
pub(super) type Words = Box<[Box<str>]>;
/// One shard: destination → its feed.
type Shard = HashMap<Words, Feed>;

/// Destinations' feed state, shared by publishers and the router.
#[derive(Debug)]
pub struct Feeds {
    /// `[[topics.rules]]`: pattern → policy; the first match wins.
    pub(super) rules: Vec<(Vec<PatternWord>, Policy)>,
    /// Destination words → feed, by hash of the words. Leaf locks.
    pub(super) shards: Box<[Mutex<Shard>]>,
    /// Bytes kept over all feeds (`max_history_bytes`).
    pub(super) kept_bytes: AtomicUsize,
    /// Feeds over all shards (`max_retained_destinations`).
    destinations: AtomicUsize,
    /// A feed exists: a new subscription may have a snapshot.
    pub(super) active: AtomicBool,
    /// A feed made by `x-retain` without a rule exists: publications to
    /// destinations without a rule must look theirs up. Until then the
    /// plain fan-out path costs a header scan and this load.
    pub(super) unruled: AtomicBool,
    /// Random per process start; with `created`, makes each feed's epoch.
    epoch_base: u64,
    pub(super) created: AtomicU64,
    /// A rule is persistent.
    pub(super) any_persistent: bool,
    /// Store changes of persistent feeds, for the router to take (a leaf
    /// lock, taken under a shard's).
    pending: Mutex<Vec<StoreOp>>,
    /// Logged once: the destination cap was reached.
    warned_full: AtomicBool,
    pub(super) max_history_bytes: usize,
    max_destinations: usize,
    pub(super) max_snapshot_destinations: usize,
    /// The cluster engine keeps the feeds (`engine_feeds.rs`): offsets are
    /// its stream sequences, nothing is stored here.
    pub(super) engine: Option<EngineFeeds>,
}

impl Feeds {
    /// Feed state under `config`'s rules and bounds.
    pub fn new(config: &TopicsConfig, limits: &DestinationLimits) -> Result<Feeds, String> {
        let rules = config
            .rules
            .iter()
            .map(|rule| {
                let pattern = topic_pattern(&rule.pattern, limits)
                    .map_err(|e| format!("topics.rules pattern '{}': {}", rule.pattern, e.0))?;
                Ok((
                    pattern,
                    Policy {
                        history: rule.history,
                        history_age: rule.history_age,
                        retain_last: rule.retain == Retain::Last,
                        persistent: rule.persistent,
                    },
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Feeds {
            any_persistent: rules.iter().any(|(_, policy)| policy.persistent),
            pending: Mutex::default(),
            rules,
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            kept_bytes: AtomicUsize::new(0),
            destinations: AtomicUsize::new(0),
            active: AtomicBool::new(false),
            unruled: AtomicBool::new(false),
            epoch_base: random_u64(),
            created: AtomicU64::new(0),
            warned_full: AtomicBool::new(false),
            max_history_bytes: config.max_history_bytes,
            max_destinations: config.max_retained_destinations,
            max_snapshot_destinations: config.max_snapshot_destinations,
            engine: None,
        })
    }

    /// No rules, no bounds worth naming: for tests of plain fan-out.
    pub fn none() -> Feeds {
        let limits = DestinationLimits {
            max_words: 32,
            max_multi_word_wildcards: 4,
        };
        // An empty rule list always builds.
        Feeds::new(&TopicsConfig::default(), &limits).unwrap_or_else(|_| unreachable!())
    }

    /// Bytes kept now over all destinations.
    pub fn kept_bytes(&self) -> usize {
        self.kept_bytes.load(Ordering::Relaxed)
    }

    /// The policy of the first rule matching topic `words`, if any.
    pub(super) fn policy_for(&self, words: &[Box<str>]) -> Option<Policy> {
        if self.rules.is_empty() {
            return None;
        }
        let words: Vec<&str> = words.iter().map(|w| &**w).collect();
        self.rules
            .iter()
            .find(|(pattern, _)| pattern_matches(pattern, &words))
            .map(|(_, policy)| *policy)
    }

    pub(super) fn shard(&self, words: &[Box<str>]) -> MutexGuard<'_, Shard> {
        let mut hasher = DefaultHasher::new();
        words.hash(&mut hasher);
        let shard = (hasher.finish() as usize) % self.shards.len();
        // Poisoned only by a panic elsewhere; each feed is whole between operations.
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `message` to topic `words` through its feed, if it has one:
    /// assigns the next offset, calls `push` with it (the frames' `x-offset`
    /// and `x-epoch`; `push` returns a frame it encoded, if any), and keeps
    /// the message, in one critical section. Without a feed, just calls
    /// `push`. With `headers`, `message` gets the two as headers too, for
    /// whoever takes it after the fan-out (the router's subscribers); else
    /// none are made. Called under the index's read lock.
    /// `policy` is [`Feeds::policy_for`] of `words` (the match cache keeps it).
    pub(super) fn publish(
        &self,
        words: &[Box<str>],
        policy: Option<Policy>,
        message: &mut Message,
        headers: bool,
        push: impl FnOnce(&Message, Option<Stamp>) -> Option<Bytes>,
    ) {
        let retain = message
            .headers
            .iter()
            .find(|(name, _)| name == "x-retain")
            .is_some_and(|(_, value)| value == "true");
        if policy.is_none() && !retain && !self.unruled.load(Ordering::Acquire) {
            push(message, None);
            return;
        }
        let mut shard = self.shard(words);
        let feed = match shard.get_mut(words) {
            Some(feed) => feed,
            None => {
                if (policy.is_none() && !retain) || !self.admit(policy.is_none()) {
                    drop(shard);
                    push(message, None);
                    return;
                }
                let created = self.created.fetch_add(1, Ordering::Relaxed);
                shard.entry(words.into()).or_insert(Feed {
                    epoch: feed_epoch(self.epoch_base, created).into(),
                    next_offset: 1,
                    policy: policy.unwrap_or_default(),
                    history: VecDeque::new(),
                    retained: None,
                    floor: 0,
                    gapped: false,
                })
            }
        };
        let now = epoch_ms();
        self.expire(words, feed, now);
        let before = feed.persistent_view();
        let offset = feed.next_offset;
        feed.next_offset += 1;
        let frame = push(message, Some(feed.stamp_of(offset)));
        self.keep(feed, message, frame.as_ref(), offset, now, retain);
        if feed.policy.persistent {
            let ops = feed.store_ops(words, before, offset, now);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(ops);
        }
        if headers {
            feed.stamp(message, offset);
        }
        drop(shard);
    }

    /// Counts a new feed in, unless `max_retained_destinations` is reached
    /// (then the destination is fanned out plainly; a warning once).
    /// `unruled`: made by `x-retain` without a rule.
    pub(super) fn admit(&self, unruled: bool) -> bool {
        if self.destinations.load(Ordering::Relaxed) >= self.max_destinations {
            if !self.warned_full.swap(true, Ordering::Relaxed) {
                warn!(
                    max_retained_destinations = self.max_destinations,
                    "topics: feed destinations full; new destinations are fanned out without offsets"
                );
            }
            return false;
        }
        self.destinations.fetch_add(1, Ordering::Relaxed);
        self.active.store(true, Ordering::Release);
        if unruled {
            self.unruled.store(true, Ordering::Release);
        }
        true
    }

    /// Whether publications to `words` must go through the router, which
    /// stores their feed's changes.
    pub fn is_persistent(&self, words: &[Box<str>]) -> bool {
        self.any_persistent && self.policy_for(words).is_some_and(|p| p.persistent)
    }

    /// The store changes of persistent feeds since the last call, in order.
    /// Only the router publishes to persistent feeds, and takes them right
    /// after.
    pub fn take_store_ops(&self) -> Vec<StoreOp> {
        if !self.any_persistent {
            return Vec::new();
        }
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Rebuilds persistent feeds recovered from the store, before any
    /// session starts: epochs and offsets go on where they were.
    pub fn restore(&self, stored: Vec<StoredFeed>) {
        if self.engine.is_some() {
            // The engine's stream holds them; a node's store does not.
            return;
        }
        for feed in stored {
            let words: Words = feed.destination.split('.').map(Into::into).collect();
            let policy = self.policy_for(&words).unwrap_or_default();
            let restored = Feed::restore(feed, policy);
            let size: usize = restored.history.iter().map(|k| k.size).sum::<usize>()
                + restored.retained.as_ref().map_or(0, |k| k.size);
            self.kept_bytes.fetch_add(size, Ordering::Relaxed);
            self.destinations.fetch_add(1, Ordering::Relaxed);
            self.active.store(true, Ordering::Release);
            self.shard(&words).insert(words, restored);
        }
    }

    pub(super) fn forget(&self, kept: Option<Kept>) {
        if let Some(kept) = kept {
            self.kept_bytes.fetch_sub(kept.size, Ordering::Relaxed);
        }
    }

    /// Drops kept messages older than the feed's `history_age` (the
    /// retained value stays).
    /// A persistent feed's expired messages are forgotten by the store too
    /// (unless still its retained value); the router takes those changes.
    pub(super) fn expire(&self, words: &[Box<str>], feed: &mut Feed, now: u64) {
        let Some(age) = feed.policy.history_age else {
            return;
        };
        let age = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let mut forgotten = Vec::new();
        while feed
            .history
            .front()
            .is_some_and(|kept| kept.at_ms.saturating_add(age) <= now)
        {
            let oldest = feed.history.pop_front();
            forgotten.extend(oldest.as_ref().map(|k| k.offset));
            self.forget_oldest(feed, oldest);
        }
        let retained = feed.retained.as_ref().map(|k| k.offset);
        if feed.policy.persistent && !forgotten.is_empty() {
            let destination: Arc<str> = words.join(".").into();
            let ops = forgotten
                .into_iter()
                .filter(|offset| Some(*offset) != retained)
                .map(|offset| StoreOp::FeedForget {
                    destination: destination.clone(),
                    offset,
                });
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(ops);
        }
    }
}

/// The epoch of the `created`-th feed of a process whose random number is
/// `base`. It goes out in every MESSAGE of the feed, so it is short: 35 bits
/// of a mix of the two, at most 6 base-62 characters. An epoch only has to
/// differ from the one a resuming client holds for the same destination: the
/// chance that two lives of a destination draw the same one is 2^-35.
fn feed_epoch(base: u64, created: u64) -> String {
    // splitmix64's finalizer: every bit of both inputs moves the low 35.
    let mut z = base ^ created.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let mut epoch = String::with_capacity(6);
    push_base62(&mut epoch, z & ((1 << 35) - 1));
    epoch
}

/// 64 random bits for epochs; the start time if the system has no
/// randomness to give (epochs must only differ between process starts).
fn random_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => epoch_ms() ^ u64::from(std::process::id()).rotate_left(32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicRule;
    use bytes::Bytes;

    #[test]
    fn feed_epochs_are_short_and_differ_between_lives_and_processes() {
        let mut seen = std::collections::HashSet::new();
        for base in [0, 1, u64::MAX, 0x1234_5678_9ABC_DEF0] {
            for created in 0..5_000 {
                let epoch = feed_epoch(base, created);
                assert!(!epoch.is_empty() && epoch.len() <= 6, "{epoch}");
                assert!(epoch.bytes().all(|b| b.is_ascii_alphanumeric()));
                assert!(seen.insert(epoch), "an epoch repeated");
            }
        }
    }

    fn message(n: u64) -> Message {
        Message {
            id: format!("m{n}").into(),
            destination: "/topic/p.a".into(),
            headers: Vec::new(),
            body: Bytes::from(format!("{n}")),
            text: true,
            expires_at: None,
        }
    }

    /// The store changes name exactly what is kept: every put, and a forget
    /// for each message that left both history and retained value.
    #[test]
    fn a_persistent_feed_forgets_in_the_store_what_it_no_longer_keeps() {
        let limits = DestinationLimits {
            max_words: 32,
            max_multi_word_wildcards: 4,
        };
        let config = TopicsConfig {
            rules: vec![TopicRule {
                pattern: "/topic/p.*".into(),
                history: 2,
                history_age: None,
                retain: Retain::Last,
                persistent: true,
            }],
            ..TopicsConfig::default()
        };
        let feeds = Feeds::new(&config, &limits).expect("feeds");
        let words: Vec<Box<str>> = vec!["p".into(), "a".into()];
        assert!(feeds.is_persistent(&words));
        let policy = feeds.policy_for(&words);
        for n in 1..=4 {
            feeds.publish(&words, policy, &mut message(n), false, |_, _| None);
        }
        let shape: Vec<String> = feeds
            .take_store_ops()
            .iter()
            .map(|op| match op {
                StoreOp::FeedPut {
                    offset, in_history, ..
                } => format!("put {offset} {in_history}"),
                StoreOp::FeedForget { offset, .. } => format!("forget {offset}"),
                StoreOp::FeedState {
                    next_offset,
                    retained,
                    ..
                } => format!("state {next_offset} {retained:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            shape,
            [
                "put 1 true",
                "state 2 Some(1)",
                "put 2 true",
                "state 3 Some(2)",
                "forget 1",
                "put 3 true",
                "state 4 Some(3)",
                "forget 2",
                "put 4 true",
                "state 5 Some(4)",
            ]
        );
        assert!(feeds.take_store_ops().is_empty(), "taken once");
    }
}
