//! The shared topic index: every topic subscription's pattern, read by
//! publishing sessions, written by the router alone.
//!
//! Lock order: the index's `RwLock` (read) is held while pushing into
//! outbound queues, whose own `Mutex` is taken inside each push; nothing
//! holding an outbound queue's lock ever takes the index. The router takes
//! the write lock for one insert or removal at a time and pushes nothing
//! while it holds it. Neither is ever held across an `.await`.
//!
//! There is no match cache: a cache shared by all publishers needs a lock of
//! its own on every publish (a second point where publishers meet), and its
//! entries would hold subscribers' outbound senders past their removal. The
//! trie walk is cheap for the pattern sets measured (`stomphub-bench micro`);
//! a cache can go in front of `matches` if a benchmark shows it pays.

use super::encode::FanOut;
use super::export::TopicExport;
use super::subscriber::Subscriber;
use super::topic_trie::TopicTrie;
use crate::model::destination::PatternWord;
use crate::model::message::{epoch_ms, Message};
use crate::model::session_id::SessionId;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Names one entry of the index, unique under its pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IndexKey {
    /// A topic subscription: its session and subscription id.
    Subscription(SessionId, Arc<str>),
    /// A durable topic subscription: its queue's name.
    Durable(Arc<str>),
}

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
}

/// Topic subscriptions by pattern, shared by every session.
#[derive(Debug)]
pub struct TopicIndex {
    /// Read by publishers while they push, written by the router only
    /// (through [`IndexWriter`]).
    trie: RwLock<TopicTrie<IndexKey, Interest>>,
    /// Where topic messages go besides local subscribers.
    export: Box<dyn TopicExport>,
}

/// The one handle that may change the index: the router's.
#[derive(Debug)]
pub struct IndexWriter {
    index: Arc<TopicIndex>,
}

impl TopicIndex {
    /// An empty index, and its only writer.
    pub fn new(export: Box<dyn TopicExport>) -> (Arc<TopicIndex>, IndexWriter) {
        let index = Arc::new(TopicIndex {
            trie: RwLock::new(TopicTrie::default()),
            export,
        });
        (index.clone(), IndexWriter { index })
    }

    fn read(&self) -> RwLockReadGuard<'_, TopicTrie<IndexKey, Interest>> {
        // A poisoned lock only means a panic elsewhere; the trie is intact
        // between operations.
        self.trie.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Fans `message`, published to topic `words`, out to every matching
    /// direct subscriber, encoding once per distinct frame, and exports it.
    /// With `defer_to_router`, does nothing when the router has interest
    /// (the caller sends the publication whole to the router, which calls
    /// this again without deferring). Holds the read lock while it pushes.
    pub fn publish(
        &self,
        words: &[Box<str>],
        message: &Message,
        defer_to_router: bool,
    ) -> Published {
        self.publish_counting(words, message, defer_to_router, &mut 0)
    }

    /// [`publish`](Self::publish), adding to `pushed` the frames it pushed
    /// (for the delivered-messages metric).
    pub fn publish_counting(
        &self,
        words: &[Box<str>],
        message: &Message,
        defer_to_router: bool,
        pushed: &mut u64,
    ) -> Published {
        let trie = self.read();
        let mut matched: Vec<&Interest> = Vec::new();
        // Each entry once, even one whose pattern matches along several paths.
        trie.matches(words, &mut matched);
        let router_interest = matched.iter().any(|i| matches!(i, Interest::Router));
        if router_interest && defer_to_router {
            return Published::Deferred;
        }
        if message.expired(epoch_ms()) {
            return Published::Delivered { router_interest };
        }
        let mut fan_out = FanOut::new(message);
        for interest in matched {
            let Interest::Direct(subscriber) = interest else {
                continue;
            };
            let frame = fan_out.frame_for(subscriber.version, &subscriber.id, false);
            // A slow consumer's queue is marked overflowed by the push: its
            // connection closes itself, and its Detach removes its entries.
            let result = if subscriber.drop_oldest {
                subscriber.outbound.push_droppable(frame)
            } else {
                subscriber.outbound.push(frame)
            };
            *pushed += u64::from(result.is_ok());
        }
        drop(trie);
        self.export.export(words, message);
        Published::Delivered { router_interest }
    }
}

impl IndexWriter {
    fn write(&self) -> RwLockWriteGuard<'_, TopicTrie<IndexKey, Interest>> {
        self.index.trie.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) an entry. Once this returns, every publication
    /// that starts sees it.
    pub fn insert(&mut self, pattern: &[PatternWord], key: IndexKey, interest: Interest) {
        self.write().insert(pattern, key, interest);
    }

    /// Removes an entry. Once this returns, no publisher is pushing to it.
    pub fn remove(&mut self, pattern: &[PatternWord], key: &IndexKey) {
        // Dropped outside the lock: a subscriber's last outbound sender
        // going away wakes its connection's writer.
        let removed = self.write().remove(pattern, key);
        drop(removed);
    }

    /// The index, for the router's own publishing of whole publications.
    pub fn index(&self) -> &TopicIndex {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::LocalOnly;
    use crate::model::destination::{topic_pattern, DestinationLimits};
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
        let (index, mut writer) = TopicIndex::new(Box::new(LocalOnly));
        let (direct, mut receiver) = subscriber(1, "s");
        writer.insert(
            &pattern("/topic/a.*"),
            IndexKey::Subscription(SessionId(1), "s".into()),
            direct,
        );
        let published = index.publish(&words("a.b"), &message(), true);
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
            index.publish(&words("a.b"), &message(), true),
            Published::Deferred
        );
        assert_eq!(received(&mut receiver).await, 0, "deferred: nothing pushed");
        assert_eq!(
            index.publish(&words("a.b"), &message(), false),
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
            index.publish(&words("a.b"), &message(), true),
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
}
