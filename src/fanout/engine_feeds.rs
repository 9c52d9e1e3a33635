//! Live feeds whose state the cluster engine keeps (`engine = "nats"`):
//! every node holds a mirror of the engine's feed stream, applied in the
//! stream's order by one reader (`cluster/feeds.rs`), and fans out from it.
//!
//! A publisher on any node does not number or keep a feed message itself:
//! the index hands it to the engine ([`Feeds::is_feed`]), and it comes back
//! to every node, the publisher's included, with the stream sequence as
//! its offset ([`Feeds::publish_at`]). So every node gives the same
//! offsets, epoch, history and retained values, and a new subscription's
//! snapshot is still taken under the index's write lock from the same
//! state the live stream is applied to: no gap, no duplicate.

use super::encode::Stamp;
use super::engine_progress::EngineFeeds;
use super::feed::{Feed, Policy};
use super::feeds::Feeds;
use super::index::{IndexKey, Interest, TopicIndex};
use super::subscriber::{push_to, Subscriber};
use crate::model::message::{epoch_ms, Message};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

impl Feeds {
    /// Hands live-feed state to the cluster engine: offsets become the
    /// engine's stream sequences and nothing is stored in this node's store
    /// (the stream is the storage; `persistent` chooses its storage kind).
    pub fn owned_by_engine(mut self) -> Feeds {
        for (_, policy) in &mut self.rules {
            policy.persistent = false;
        }
        self.any_persistent = false;
        self.engine = Some(EngineFeeds::default());
        self
    }

    /// Whether a publication to `words` belongs to a feed: a rule names it,
    /// it carries `x-retain:true`, or an earlier `x-retain` made a feed of
    /// its destination.
    pub(super) fn is_feed(
        &self,
        words: &[Box<str>],
        policy: Option<Policy>,
        message: &Message,
    ) -> bool {
        policy.is_some()
            || retains(message)
            || (self.unruled.load(Ordering::Acquire) && self.shard(words).contains_key(words))
    }

    /// Applies one message of the engine's feed stream, numbered `offset`
    /// (its stream sequence) in `epoch`, published at `at_ms`: calls `push`
    /// with its `x-offset` and `x-epoch` and keeps it as the policy asks,
    /// inside the same critical section (as [`Feeds::publish`] does; with
    /// `headers`, `message` gets the two as headers too). A message already
    /// applied (an offset not above the feed's last) is not pushed again.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_at(
        &self,
        words: &[Box<str>],
        policy: Option<Policy>,
        message: &mut Message,
        offset: u64,
        epoch: &Arc<str>,
        at_ms: u64,
        headers: bool,
        push: impl FnOnce(&Message, Option<Stamp>) -> Option<Bytes>,
    ) {
        let retain = retains(message);
        let mut shard = self.shard(words);
        let feed = match shard.get_mut(words) {
            Some(feed) => feed,
            None => {
                if (policy.is_none() && !retain) || !self.admit(policy.is_none()) {
                    drop(shard);
                    push(message, None);
                    return;
                }
                shard.entry(words.into()).or_insert(Feed {
                    epoch: epoch.clone(),
                    next_offset: offset,
                    policy: policy.unwrap_or_default(),
                    history: VecDeque::new(),
                    retained: None,
                    // What came before this node saw the destination is
                    // unknown: a resume from before it is not whole.
                    floor: offset.saturating_sub(1),
                    gapped: true,
                })
            }
        };
        if feed.epoch != *epoch {
            // The stream was made anew: what this node kept is another
            // epoch's.
            feed.epoch = epoch.clone();
            for kept in std::mem::take(&mut feed.history) {
                self.forget(Some(kept));
            }
            self.forget(feed.retained.take());
            feed.next_offset = offset;
            feed.floor = offset.saturating_sub(1);
        }
        if offset < feed.next_offset {
            return;
        }
        if self.hole_end() >= feed.next_offset {
            // Messages this node never read lie between this destination's
            // previous one and this one: some may have been its own, so a
            // resume from before them is not whole.
            feed.floor = feed.floor.max(self.hole_end());
        }
        self.expire(words, feed, epoch_ms());
        feed.next_offset = offset + 1;
        let frame = push(message, Some(feed.stamp_of(offset)));
        self.keep(feed, message, frame.as_ref(), offset, at_ms, retain);
        if headers {
            feed.stamp(message, offset);
        }
        drop(shard);
    }

    /// Notes, before applying `sequence`, the stream sequences skipped
    /// since the last one applied.
    pub(super) fn note_skipped(&self, sequence: u64) {
        if let Some(engine) = &self.engine {
            if sequence > engine.applied.load(Ordering::Acquire) + 1 {
                engine.hole_end.fetch_max(sequence - 1, Ordering::AcqRel);
            }
        }
    }

    fn hole_end(&self) -> u64 {
        self.engine
            .as_ref()
            .map_or(0, |engine| engine.hole_end.load(Ordering::Acquire))
    }

    /// The engine's stream was made anew: its sequences start again.
    pub(super) fn restart_applied(&self) {
        if let Some(engine) = &self.engine {
            engine.applied.store(0, Ordering::Release);
            engine.hole_end.store(0, Ordering::Release);
        }
    }

    /// Records that the engine's stream is applied up to `sequence`.
    pub(super) fn set_applied(&self, sequence: u64) {
        if let Some(engine) = &self.engine {
            engine.applied.fetch_max(sequence, Ordering::AcqRel);
            engine.applied_changed.notify_waiters();
        }
    }

    /// Waits (at most `within`) until the engine's stream is applied up to
    /// `sequence`; true at once without an engine. False if it was not.
    pub(super) async fn wait_applied(&self, sequence: u64, within: Duration) -> bool {
        let Some(engine) = &self.engine else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            // Made before the check: a wake between the two is not lost.
            let changed = engine.applied_changed.notified();
            if engine.applied.load(Ordering::Acquire) >= sequence {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return engine.applied.load(Ordering::Acquire) >= sequence;
            }
        }
    }
}

impl TopicIndex {
    /// Applies `message`, read from the engine's feed stream at `offset`
    /// (its stream sequence) in `epoch`, to the feed of `words` and fans it
    /// out to every matching direct subscriber (the engine delivers each
    /// message once to a node). Returns the frames pushed and the entries
    /// the router delivers to (client-ack and durable subscriptions).
    pub fn publish_from_engine(
        &self,
        words: &[Box<str>],
        message: &mut Message,
        offset: u64,
        epoch: &Arc<str>,
        at_ms: u64,
    ) -> (u64, Vec<IndexKey>) {
        let mut pushed = 0;
        let mut for_router = Vec::new();
        self.feeds.note_skipped(offset);
        if !message.expired(epoch_ms()) {
            let trie = self.read();
            let mut matched: Vec<(&IndexKey, &Interest)> = Vec::new();
            trie.matches_keyed(words, &mut matched);
            let mut direct: Vec<Arc<Subscriber>> = Vec::new();
            for (key, interest) in matched {
                match interest {
                    Interest::Direct(subscriber) => direct.push(subscriber.clone()),
                    Interest::Router => for_router.push(key.clone()),
                }
            }
            let policy = self.feeds.policy_for(words);
            // The router's subscribers take the message after the fan-out.
            let headers = !for_router.is_empty();
            self.feeds.publish_at(
                words,
                policy,
                message,
                offset,
                epoch,
                at_ms,
                headers,
                |message, stamp| push_to(&direct, message, stamp, &mut pushed),
            );
        }
        self.feeds.set_applied(offset);
        (pushed, for_router)
    }

    /// The engine's feed stream was made anew (a new epoch): its sequences
    /// start again from 1.
    pub fn feeds_restarted(&self) {
        self.feeds.restart_applied();
    }

    /// Records that the engine's feed stream is applied up to `sequence`
    /// (a message there that was not a feed message).
    pub fn feeds_applied(&self, sequence: u64) {
        self.feeds.note_skipped(sequence);
        self.feeds.set_applied(sequence);
    }

    /// Waits (at most `within`) until this node has applied the engine's
    /// feed stream up to `sequence`, so that a resume from an offset seen
    /// on another node is answered from state that holds it. True at once
    /// without an engine.
    pub async fn wait_feeds_applied(&self, sequence: u64, within: std::time::Duration) -> bool {
        self.feeds.wait_applied(sequence, within).await
    }
}

/// A SEND's `x-retain:true`.
fn retains(message: &Message) -> bool {
    message
        .headers
        .iter()
        .find(|(name, _)| name == "x-retain")
        .is_some_and(|(_, value)| value == "true")
}
