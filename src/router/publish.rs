//! Routing one publication: to a topic (live subscribers and durable
//! subscriptions) or a queue, refused when the store is full or failing.

use super::message::Publication;
use super::{Router, SessionId};
use crate::fanout::Published;
use crate::model::close::CloseReason;
use crate::model::message::{epoch_ms, Message};
use std::sync::Arc;
use tracing::{debug, warn};

impl Router {
    /// Routes a publication; false (after failing the session) if refused.
    pub(super) fn publish(
        &mut self,
        session: SessionId,
        publication: Publication,
        receipt: Option<&str>,
    ) -> bool {
        if let Some(reply_queue) = &publication.reply_queue {
            if !self.reply_queue_room(session, reply_queue, receipt) {
                return false;
            }
            self.ensure_reply_queue(session, reply_queue);
        }
        let persistent = self.store_enabled
            && (publication.persistent || self.persistent_by_rule(&publication.destination));
        let Publication {
            id,
            delivered_direct,
            target,
            destination,
            headers,
            body,
            expires_at,
            queue_arguments,
            ..
        } = publication;
        let text = std::str::from_utf8(&body).is_ok();
        let mut message = Message {
            id,
            destination,
            headers,
            body,
            text,
            expires_at,
        };
        match target {
            crate::model::destination::SendTarget::Topic(words) => {
                let durable_queues = self.durable_queues_for(&words);
                let stored = (persistent && !durable_queues.is_empty())
                    || self.index.feeds().is_persistent(&words);
                if stored && !self.store_has_room(session, message.body.len(), receipt) {
                    return false;
                }
                if !delivered_direct {
                    // Sent whole (a reply queue first, or a persistent
                    // message the store may refuse): the direct subscribers
                    // get it from here, before the router's own (with its
                    // offset, if its destination has a feed).
                    let published = self.index.index().publish(&words, &mut message, false);
                    if published == Published::ToEngine {
                        // A live-feed message on a cluster: the engine's
                        // feed stream brings it back to every node, this
                        // one's client-ack and durable subscriptions too.
                        return true;
                    }
                    // A persistent live feed's changes: the RECEIPT waits
                    // for their sync.
                    for op in self.index.feeds().take_store_ops() {
                        self.store_op(op);
                    }
                }
                let message = Arc::new(message);
                self.publish_topic(&words, message.clone());
                for name in durable_queues {
                    if let Err(reason) = self.enqueue(&name, message.clone(), persistent) {
                        warn!(subscription = %name, %reason, "durable subscription full: message dropped for it");
                    }
                }
                true
            }
            crate::model::destination::SendTarget::Queue(name) => {
                if persistent && !self.store_has_room(session, message.body.len(), receipt) {
                    return false;
                }
                if !self.queue_room(session, &name, receipt) {
                    return false;
                }
                self.ensure_queue(&name, &queue_arguments, None);
                let ttl = self.queues.get(&name).and_then(|q| q.settings.message_ttl);
                if message.expires_at.is_none() {
                    message.expires_at = ttl.map(|ttl| {
                        epoch_ms()
                            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    });
                }
                if let Err(full) = self.enqueue(&name, Arc::new(message), persistent) {
                    self.fail(session, full, receipt, CloseReason::PolicyViolation);
                    return false;
                }
                true
            }
            crate::model::destination::SendTarget::ReplyQueue(name) => {
                if self.queues.contains_key(&name) {
                    if let Err(reason) = self.enqueue(&name, Arc::new(message), false) {
                        debug!(queue = %name, %reason, "reply dropped");
                    }
                } else {
                    debug!(queue = %name, "reply to a connection that is gone: dropped");
                }
                true
            }
        }
    }

    /// Whether the store can take `bytes` more; fails the session if not.
    pub(super) fn store_has_room(
        &mut self,
        session: SessionId,
        bytes: usize,
        receipt: Option<&str>,
    ) -> bool {
        if let Some(failure) = self.store.state.failing() {
            let message = format!("storage unavailable, persistent message refused: {failure}");
            self.fail(session, message, receipt, CloseReason::InternalError);
            return false;
        }
        let stored = self.store.state.stored_bytes() + self.batch_bytes;
        if stored.saturating_add(bytes as u64) > self.max_disk_bytes {
            let message = format!(
                "storage full, persistent message refused: max_disk_bytes is {}",
                self.max_disk_bytes
            );
            self.fail(session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        true
    }

    /// Whether `[storage] persistent` makes messages to `destination` persistent.
    pub(super) fn persistent_by_rule(&self, destination: &str) -> bool {
        // On every publish: nothing to split when there are no rules (the default).
        if self.persistent_patterns.is_empty() {
            return false;
        }
        let (is_queue, name) =
            match destination.strip_prefix(crate::model::destination::QUEUE_PREFIX) {
                Some(name) => (true, name),
                None => (
                    false,
                    destination
                        .strip_prefix(crate::model::destination::TOPIC_PREFIX)
                        .unwrap_or(destination),
                ),
            };
        let words: Vec<&str> = name.split('.').collect();
        self.persistent_patterns.iter().any(|(queue, pattern)| {
            *queue == is_queue && crate::model::destination::pattern_matches(pattern, &words)
        })
    }

    /// Enqueues `message` (from the engine's feed stream) for this broker's
    /// durable subscriptions matching `words`, stored when a `[storage]
    /// persistent` pattern names its destination.
    pub(super) fn publish_durables(&mut self, words: &[Box<str>], message: Arc<Message>) {
        let persistent = self.store_enabled && self.persistent_by_rule(&message.destination);
        for name in self.durable_queues_for(words) {
            if let Err(reason) = self.enqueue(&name, message.clone(), persistent) {
                warn!(subscription = %name, %reason, "durable subscription full: message dropped for it");
            }
        }
    }

    /// The durable subscriptions whose topic pattern matches `words`.
    pub(super) fn durable_queues_for(&self, words: &[Box<str>]) -> Vec<String> {
        let mut matched: Vec<&Arc<str>> = Vec::new();
        self.durables.matches(words, &mut matched);
        let mut names: Vec<String> = matched.into_iter().map(|n| n.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}
