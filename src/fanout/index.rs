//! The shared topic index: every topic subscription's pattern, read by
//! publishing sessions, written by the router alone.
//!
//! Lock order: the index's `RwLock` (read) is held while pushing into
//! outbound queues, whose own `Mutex` is taken inside each push; nothing
//! holding an outbound queue's lock ever takes the index. The router takes
//! the write lock for one insert or removal at a time; the only pushes it
//! makes under it are a new auto-ack subscription's live-feed snapshot
//! (`insert_with_snapshot`). A destination's feed shard
//! (`feeds.rs`) sits between: index → feed shard → outbound queue. None is
//! ever held across an `.await`.
//!
//! A bounded match cache ([`MatchCache`], `router.match_cache_entries`)
//! sits in front of the trie walk, valid while the index's generation is
//! unchanged; its shard locks are leaves taken under the read lock, one at
//! a time.

use super::export::{FeedAck, TopicExport};
use super::feeds::Feeds;
pub use super::index_key::IndexKey;
use super::match_cache::{Match, MatchCache};
use super::snapshot::Snapshot;
use super::start_at::StartAt;
use super::subscriber::{push_to, Subscriber};
use super::topic_trie::TopicTrie;
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// What a matching publication means for one entry.
#[derive(Debug)]
pub enum Interest {
    /// An auto-ack subscription: the publisher pushes to it directly.
    Direct(Arc<Subscriber>),
    /// A client-ack or durable subscription: the router delivers to it, so
    /// the publication must reach the router too.
    Router,
}

/// The outcome of [`TopicIndex::publish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Pushed to every direct subscriber (and exported). With
    /// `router_interest`, the router must deliver to its own subscriptions:
    /// send it the publication marked as delivered directly.
    Delivered {
        /// A client-ack or durable subscription matched too.
        router_interest: bool,
    },
    /// Nothing done: the router has interest and the caller asked to leave
    /// such publications whole to the router.
    Deferred,
    /// A live-feed message handed to the cluster engine's feed stream
    /// (`TopicExport::export_feed`) and nothing else: every node's
    /// subscribers, this one's included, get it when it comes back
    /// numbered. The router must not deliver it now.
    ToEngine,
}

/// Topic subscriptions by pattern, shared by every session.
#[derive(Debug)]
pub struct TopicIndex {
    /// Read by publishers while they push, written by the router only
    /// (through [`IndexWriter`]).
    trie: RwLock<TopicTrie<IndexKey, Interest>>,
    /// Bumped by every change to the trie, under its write lock: a cached
    /// match made at another generation is stale.
    generation: AtomicU64,
    /// Recent matches by topic words, read and filled by publishers under
    /// the read lock, emptied by the writer on removals.
    cache: MatchCache,
    /// Where topic messages go besides local subscribers.
    export: Box<dyn TopicExport>,
    /// Offsets, history and retained values of live-feed destinations:
    /// appended to by publishers under the read lock, read for snapshots by
    /// the writer under the write lock.
    pub(super) feeds: Feeds,
}

/// The one handle that may change the index: the router's.
#[derive(Debug)]
pub struct IndexWriter {
    index: Arc<TopicIndex>,
}

impl TopicIndex {
    /// An empty index with a match cache of about `cache_entries` entries
    /// (0: none) and live-feed state `feeds`, and its only writer.
    pub fn new(
        export: Box<dyn TopicExport>,
        cache_entries: usize,
        feeds: Feeds,
    ) -> (Arc<TopicIndex>, IndexWriter) {
        let index = Arc::new(TopicIndex {
            trie: RwLock::new(TopicTrie::default()),
            generation: AtomicU64::new(0),
            cache: MatchCache::new(cache_entries),
            export,
            feeds,
        });
        (index.clone(), IndexWriter { index })
    }

    /// Whether publications to topic `words` must go to the router whole
    /// (a persistent live feed: the router stores its changes).
    pub fn is_persistent_feed(&self, words: &[Box<str>]) -> bool {
        self.feeds.is_persistent(words)
    }

    /// The export seam (the cluster engine, or [`LocalOnly`](super::LocalOnly)):
    /// confirmations, other nodes' counts, interest held ahead of an entry.
    pub fn export(&self) -> &dyn TopicExport {
        &*self.export
    }

    /// Whether a `[[topics.rules]]` rule makes topic `words` a live feed.
    pub fn is_feed_by_rule(&self, words: &[Box<str>]) -> bool {
        self.feeds.policy_for(words).is_some()
    }

    /// Auto-ack subscriptions a publication to `words` reaches now.
    pub fn count_direct(&self, words: &[Box<str>]) -> usize {
        let trie = self.read();
        let mut matched: Vec<&Interest> = Vec::new();
        trie.matches(words, &mut matched);
        matched
            .iter()
            .filter(|i| matches!(i, Interest::Direct(_)))
            .count()
    }

    pub(super) fn read(&self) -> RwLockReadGuard<'_, TopicTrie<IndexKey, Interest>> {
        // A poisoned lock only means a panic elsewhere; the trie is intact
        // between operations.
        self.trie.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Fans `message`, published to topic `words`, out to every matching
    /// direct subscriber, encoding once per distinct frame, and exports it.
    /// With `defer_to_router`, does nothing when the router has interest
    /// (the caller sends the publication whole to the router, which calls
    /// this again without deferring). Holds the read lock while it pushes.
    ///
    /// A destination with feed state gets its offset here: `x-offset` and
    /// `x-epoch` go into the frames and are added to `message`'s headers (so
    /// the router's own deliveries carry them too), and the pushes happen
    /// under its feed's shard lock, in offset order.
    pub fn publish(
        &self,
        words: &[Box<str>],
        message: &mut Message,
        defer_to_router: bool,
    ) -> Published {
        // The router takes `message` on after the fan-out: with its feed
        // headers.
        self.publish_inner(words, message, defer_to_router, &mut 0, false, true)
            .0
    }

    /// [`publish`](Self::publish), adding to `pushed` the frames it pushed
    /// (for the delivered-messages metric); with `confirm`, a
    /// live-feed message handed to a cluster engine
    /// ([`Published::ToEngine`]) comes with the engine's confirmation, for
    /// the RECEIPT to wait for.
    pub fn publish_confirming(
        &self,
        words: &[Box<str>],
        message: &mut Message,
        defer_to_router: bool,
        pushed: &mut u64,
        confirm: bool,
    ) -> (Published, Option<FeedAck>) {
        self.publish_inner(words, message, defer_to_router, pushed, confirm, false)
    }

    /// [`publish_confirming`](Self::publish_confirming); a live-feed
    /// message gets its `x-offset` and `x-epoch` as headers (else only in
    /// its frames) when the router takes it on (`router_interest`) or
    /// `always_headers`.
    fn publish_inner(
        &self,
        words: &[Box<str>],
        message: &mut Message,
        defer_to_router: bool,
        pushed: &mut u64,
        confirm: bool,
        always_headers: bool,
    ) -> (Published, Option<FeedAck>) {
        let trie = self.read();
        // Only the writer changes it, and only under the write lock.
        let generation = self.generation.load(Ordering::Acquire);
        let found = match self.cache.get(words, generation) {
            Some(found) => found,
            None => {
                let found = walk(&trie, words, generation, &self.feeds);
                self.cache.insert(words, found.clone());
                found
            }
        };
        if self.feeds.engine.is_some() && self.feeds.is_feed(words, found.policy, message) {
            // The engine numbers and keeps it; it comes back to every node,
            // this one included, through `publish_from_engine`.
            drop(trie);
            if message.expired_now() {
                return (Published::ToEngine, None);
            }
            let ack = self.export.export_feed(words, message, confirm);
            return (Published::ToEngine, ack);
        }
        let router_interest = found.router_interest;
        if router_interest && defer_to_router {
            return (Published::Deferred, None);
        }
        if message.expired_now() {
            return (Published::Delivered { router_interest }, None);
        }
        let headers = router_interest || always_headers;
        self.feeds
            .publish(words, found.policy, message, headers, |message, stamp| {
                push_to(&found.direct, message, stamp, pushed)
            });
        drop(trie);
        self.export.export(words, message);
        (Published::Delivered { router_interest }, None)
    }

    /// Fans out `message`, which came from another broker through the
    /// export seam's engine, to the direct subscribers matching `words`
    /// whose entry `wanted` accepts (an engine that delivers one message
    /// several times, once per matching engine subscription, picks each
    /// entry's one copy this way). Never exported again. Returns the
    /// frames pushed and the wanted entries the router delivers to
    /// (client-ack subscriptions): the caller hands it those.
    pub fn publish_remote(
        &self,
        words: &[Box<str>],
        message: &mut Message,
        wanted: impl Fn(&IndexKey) -> bool,
    ) -> (u64, Vec<IndexKey>) {
        if message.expired_now() {
            return (0, Vec::new());
        }
        let trie = self.read();
        let mut matched: Vec<(&IndexKey, &Interest)> = Vec::new();
        trie.matches_keyed(words, &mut matched);
        let mut direct: Vec<Arc<Subscriber>> = Vec::new();
        let mut for_router = Vec::new();
        for (key, interest) in matched {
            if !wanted(key) {
                continue;
            }
            match interest {
                Interest::Direct(subscriber) => direct.push(subscriber.clone()),
                Interest::Router => for_router.push(key.clone()),
            }
        }
        if direct.is_empty() {
            return (0, for_router);
        }
        let mut pushed = 0;
        if self.feeds.engine.is_some() {
            // Feed messages come through `publish_from_engine`: this one
            // travelled outside the engine's feed stream, so has no offset.
            push_to(&direct, message, None, &mut pushed);
            return (pushed, for_router);
        }
        // A persistent feed's store changes belong to the router, which
        // alone publishes to it: a remote message to one is fanned out
        // plainly.
        let policy = self.feeds.policy_for(words).filter(|p| !p.persistent);
        // The router's subscribers take the message after the fan-out.
        let headers = !for_router.is_empty();
        self.feeds
            .publish(words, policy, message, headers, |message, stamp| {
                push_to(&direct, message, stamp, &mut pushed)
            });
        (pushed, for_router)
    }
}

/// Walks the trie for `words`: every direct subscriber once, and whether the
/// router has interest.
fn walk(
    trie: &TopicTrie<IndexKey, Interest>,
    words: &[Box<str>],
    generation: u64,
    feeds: &Feeds,
) -> Match {
    let mut matched: Vec<&Interest> = Vec::new();
    // Each entry once, even one whose pattern matches along several paths.
    trie.matches(words, &mut matched);
    let router_interest = matched.iter().any(|i| matches!(i, Interest::Router));
    let direct = matched
        .into_iter()
        .filter_map(|interest| match interest {
            Interest::Direct(subscriber) => Some(subscriber.clone()),
            Interest::Router => None,
        })
        .collect();
    Match {
        generation,
        direct,
        router_interest,
        policy: feeds.policy_for(words),
    }
}

impl IndexWriter {
    fn write(&self) -> RwLockWriteGuard<'_, TopicTrie<IndexKey, Interest>> {
        self.index.trie.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) an entry. Once this returns, every publication
    /// that starts sees it.
    pub fn insert(&mut self, pattern: &[PatternWord], key: IndexKey, interest: Interest) {
        let mut trie = self.write();
        // Durable subscriptions hear other nodes through the engine's
        // streams (a later stage), not through the seam.
        if !matches!(key, IndexKey::Durable(_)) {
            self.index.export.subscribed(pattern, &key);
        }
        trie.insert(pattern, key, interest);
        self.index.generation.fetch_add(1, Ordering::Release);
    }

    /// Adds a direct subscriber and, still under the write lock (no
    /// publisher appends or pushes meanwhile), pushes it the snapshot of
    /// every matching destination with feed state as `start` asks. Every
    /// later publication has a higher offset and comes after it in the
    /// subscriber's FIFO queue: no gap, no duplicate.
    pub fn insert_with_snapshot(
        &mut self,
        pattern: &[PatternWord],
        key: IndexKey,
        subscriber: Arc<Subscriber>,
        start: &StartAt,
    ) -> Snapshot {
        let mut trie = self.write();
        self.index.export.subscribed(pattern, &key);
        trie.insert(pattern, key, Interest::Direct(subscriber.clone()));
        self.index.generation.fetch_add(1, Ordering::Release);
        let snapshot = self.index.feeds.snapshot(pattern, start, &subscriber);
        drop(trie);
        snapshot
    }

    /// The live-feed state, for the router (persistent feeds' store changes).
    pub fn feeds(&self) -> &Feeds {
        &self.index.feeds
    }

    /// Removes an entry. Once this returns, no publisher is pushing to it.
    pub fn remove(&mut self, pattern: &[PatternWord], key: &IndexKey) {
        // Dropped outside the lock: a subscriber's last outbound sender
        // going away wakes its connection's writer.
        // So are cached matches: they may hold the removed subscriber.
        let (removed, cached) = {
            let mut trie = self.write();
            let removed = trie.remove(pattern, key);
            if removed.is_some() && !matches!(key, IndexKey::Durable(_)) {
                self.index.export.unsubscribed(key);
            }
            if let Some(Interest::Direct(subscriber)) = &removed {
                // Held MESSAGEs of an `x-max-rate` cap go with it.
                if let Some(cap) = &subscriber.max_rate {
                    cap.close();
                }
            }
            self.index.generation.fetch_add(1, Ordering::Release);
            (removed, self.index.cache.take_all())
        };
        drop(removed);
        drop(cached);
    }

    /// The index, for the router's own publishing of whole publications.
    pub fn index(&self) -> &TopicIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::{Feeds, LocalOnly};
    use crate::model::destination::{topic_pattern, DestinationLimits};
    use crate::model::session_id::SessionId;
    use crate::outbound::{outbound_channel, OutFrame, OutboundReceiver};
    use bytes::Bytes;
    use stomp_protocol::Version;

    fn pattern(text: &str) -> Vec<PatternWord> {
        let limits = DestinationLimits {
            max_words: 32,
            max_multi_word_wildcards: 4,
        };
        topic_pattern(text, &limits).expect("pattern")
    }

    fn words(text: &str) -> Vec<Box<str>> {
        text.split('.').map(Into::into).collect()
    }

    fn message() -> Message {
        Message {
            id: "m-1".into(),
            destination: "/topic/a.b".into(),
            headers: Vec::new(),
            body: Bytes::from_static(b"hello"),
            text: true,
            expires_at: None,
        }
    }

    fn subscriber(session: u64, id: &str) -> (Interest, OutboundReceiver) {
        let (outbound, receiver) = outbound_channel(16, 1 << 20);
        let subscriber = Subscriber {
            session: SessionId(session),
            id: id.into(),
            ack: crate::model::ack_mode::AckMode::Auto,
            version: Version::V1_2,
            outbound,
            drop_oldest: false,
            conflate: false,
            max_rate: None,
        };
        (Interest::Direct(Arc::new(subscriber)), receiver)
    }

    async fn received(receiver: &mut OutboundReceiver) -> usize {
        let mut batch: Vec<OutFrame> = Vec::new();
        let ready = tokio::time::timeout(
            std::time::Duration::from_millis(20),
            receiver.recv_many(&mut batch, 64),
        )
        .await;
        ready.unwrap_or(0)
    }

    #[tokio::test]
    async fn publishers_push_to_direct_subscribers_and_learn_of_router_interest() {
        let (index, mut writer) = TopicIndex::new(Box::new(LocalOnly), 64, Feeds::none());
        let (direct, mut receiver) = subscriber(1, "s");
        writer.insert(
            &pattern("/topic/a.*"),
            IndexKey::Subscription(SessionId(1), "s".into()),
            direct,
        );
        let published = index.publish(&words("a.b"), &mut message(), true);
        assert_eq!(
            published,
            Published::Delivered {
                router_interest: false
            }
        );
        assert_eq!(received(&mut receiver).await, 1);

        // A durable subscription on the same topic: the router must see it.
        writer.insert(
            &pattern("/topic/a.#"),
            IndexKey::Durable("/durable/c/n".into()),
            Interest::Router,
        );
        assert_eq!(
            index.publish(&words("a.b"), &mut message(), true),
            Published::Deferred
        );
        assert_eq!(received(&mut receiver).await, 0, "deferred: nothing pushed");
        assert_eq!(
            index.publish(&words("a.b"), &mut message(), false),
            Published::Delivered {
                router_interest: true
            }
        );
        assert_eq!(received(&mut receiver).await, 1);

        // Removed: no more pushes, and the subscriber's sender is gone.
        writer.remove(
            &pattern("/topic/a.*"),
            &IndexKey::Subscription(SessionId(1), "s".into()),
        );
        writer.remove(
            &pattern("/topic/a.#"),
            &IndexKey::Durable("/durable/c/n".into()),
        );
        assert_eq!(
            index.publish(&words("a.b"), &mut message(), true),
            Published::Delivered {
                router_interest: false
            }
        );
        assert_eq!(
            received(&mut receiver).await,
            0,
            "every sender gone, nothing queued"
        );
    }

    #[tokio::test]
    async fn a_cached_match_is_stale_after_a_subscribe_and_emptied_by_a_removal() {
        let (index, mut writer) = TopicIndex::new(Box::new(LocalOnly), 64, Feeds::none());
        let (first, mut first_rx) = subscriber(1, "s");
        writer.insert(
            &pattern("/topic/a.b"),
            IndexKey::Subscription(SessionId(1), "s".into()),
            first,
        );
        index.publish(&words("a.b"), &mut message(), true);
        assert_eq!(index.cache.len(), 1, "the match is cached");
        assert_eq!(received(&mut first_rx).await, 1);

        // A new subscription makes the cached match stale: it is reached.
        let (second, mut second_rx) = subscriber(2, "s");
        writer.insert(
            &pattern("/topic/a.*"),
            IndexKey::Subscription(SessionId(2), "s".into()),
            second,
        );
        index.publish(&words("a.b"), &mut message(), true);
        assert_eq!(received(&mut first_rx).await, 1);
        assert_eq!(received(&mut second_rx).await, 1);

        // A removal empties the cache: no entry keeps the removed
        // subscriber's sender, so its writer sees the end.
        writer.remove(
            &pattern("/topic/a.*"),
            &IndexKey::Subscription(SessionId(2), "s".into()),
        );
        assert_eq!(index.cache.len(), 0);
        let mut batch: Vec<OutFrame> = Vec::new();
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            second_rx.recv_many(&mut batch, 64),
        )
        .await;
        assert_eq!(end.ok(), Some(0), "the writer sees the end");
        index.publish(&words("a.b"), &mut message(), true);
        assert_eq!(received(&mut first_rx).await, 1);
    }

    #[tokio::test]
    async fn the_match_cache_stays_within_its_bound() {
        let (index, mut writer) = TopicIndex::new(Box::new(LocalOnly), 64, Feeds::none());
        let (all, mut receiver) = subscriber(1, "s");
        writer.insert(
            &pattern("/topic/#"),
            IndexKey::Subscription(SessionId(1), "s".into()),
            all,
        );
        for n in 0..10_000 {
            index.publish(&words(&format!("t.{n}")), &mut message(), true);
            assert!(index.cache.len() <= 64, "{} entries", index.cache.len());
            if n % 8 == 0 {
                received(&mut receiver).await;
            }
        }
    }

    /// Records what the index tells its export seam.
    #[derive(Debug, Default)]
    struct Recording {
        exported: std::sync::Mutex<Vec<String>>,
        interest: std::sync::Mutex<Vec<String>>,
    }

    impl TopicExport for Arc<Recording> {
        fn export(&self, words: &[Box<str>], _message: &Message) {
            self.exported.lock().expect("lock").push(words.join("."));
        }
        fn subscribed(&self, pattern: &[PatternWord], key: &IndexKey) {
            let text = format!("+{} {key:?}", pattern.len());
            self.interest.lock().expect("lock").push(text);
        }
        fn unsubscribed(&self, key: &IndexKey) {
            self.interest
                .lock()
                .expect("lock")
                .push(format!("-{key:?}"));
        }
    }

    #[tokio::test]
    async fn the_seam_hears_direct_entries_and_remote_messages_are_not_exported_again() {
        let recording = Arc::new(Recording::default());
        let (index, mut writer) = TopicIndex::new(Box::new(recording.clone()), 64, Feeds::none());
        let first_key = IndexKey::Subscription(SessionId(1), "s".into());
        let second_key = IndexKey::Subscription(SessionId(2), "s".into());
        let (first, mut first_rx) = subscriber(1, "s");
        let (second, mut second_rx) = subscriber(2, "s");
        writer.insert(&pattern("/topic/a.*"), first_key.clone(), first);
        writer.insert(&pattern("/topic/*.b"), second_key.clone(), second);
        // The router's own entries are not the seam's business.
        writer.insert(
            &pattern("/topic/a.#"),
            IndexKey::Durable("/durable/c/n".into()),
            Interest::Router,
        );
        assert_eq!(recording.interest.lock().expect("lock").len(), 2);

        // From elsewhere: only the entries the caller wants, no export.
        let (pushed, for_router) =
            index.publish_remote(&words("a.b"), &mut message(), |key| *key == first_key);
        assert_eq!(pushed, 1);
        assert!(for_router.is_empty(), "the durable is not wanted");
        assert_eq!(received(&mut first_rx).await, 1);
        assert_eq!(received(&mut second_rx).await, 0);
        assert!(recording.exported.lock().expect("lock").is_empty());

        // Published here: every entry, exported once.
        index.publish(&words("a.b"), &mut message(), false);
        assert_eq!(received(&mut first_rx).await, 1);
        assert_eq!(received(&mut second_rx).await, 1);
        assert_eq!(*recording.exported.lock().expect("lock"), vec!["a.b"]);

        writer.remove(&pattern("/topic/a.*"), &first_key);
        writer.remove(&pattern("/topic/a.*"), &first_key);
        let interest = recording.interest.lock().expect("lock").clone();
        assert_eq!(interest.len(), 3, "one removal heard: {interest:?}");
        assert!(interest[2].starts_with('-'));
    }
}
