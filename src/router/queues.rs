//! Queue dispatch: round-robin among consumers with credit, creation by
//! first use, durable topic subscriptions, reply queues, dead letters,
//! persistence of what must survive, and the periodic revisit.

use super::message::{ack_id, encode, Delivery, Publication, ReplyQueue};
use super::{AckMode, Router, SessionId, Subscribing, SubscriptionEntry, Target, Unacked};
use crate::model::close::CloseReason;
use crate::model::destination::{PatternWord, REPLY_QUEUE_PREFIX};
use crate::model::message::epoch_ms;
use crate::model::message::Message;
use crate::queue::{Consumer, Queue, QueueArguments, QueuedMessage};
use crate::store::{QueueDefinition, StoreOp};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, warn};

/// Durable topic subscriptions are queues named `/durable/<client-id>/<name>`.
pub const DURABLE_PREFIX: &str = "/durable/";

/// A durable topic subscription asked for by SUBSCRIBE.
#[derive(Debug, Clone)]
pub struct DurableSubscription {
    /// `<client-id>/<name>`: never the subscription id alone.
    pub key: String,
    /// The topic destination (pattern) it collects.
    pub destination: String,
    /// Who asks: the principal it belongs to, or must belong to.
    pub owner: super::Principal,
}

impl Router {
    /// Creates queue `name` with `arguments` (and stores its definition,
    /// unless it is transient) if it does not exist.
    fn ensure_queue(&mut self, name: &str, arguments: &QueueArguments, binding: Option<&str>) {
        if !self.queues.contains_key(name) {
            let settings = self.policy.settings_for(name, arguments);
            debug!(queue = name, ?settings, "queue created");
            let mut queue = Queue::new(name.to_owned(), settings, self.queue_memory.clone());
            if self.store_enabled && !arguments.auto_delete {
                let id = self.next_queue_id;
                self.next_queue_id += 1;
                queue.store_id = Some(id);
                self.store_op(StoreOp::DefineQueue {
                    id,
                    definition: QueueDefinition {
                        name: name.to_owned(),
                        message_ttl_ms: arguments
                            .message_ttl
                            .map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)),
                        max_length: arguments.max_length.map(|n| n as u64),
                        dead_letter: arguments.dead_letter.clone(),
                        binding: binding.map(str::to_owned),
                        owner: None,
                    },
                });
            }
            self.queues.insert(name.to_owned(), queue);
        }
    }

    /// Adds a queue consumer; false (after failing the session) if refused.
    pub(super) fn subscribe_queue(
        &mut self,
        who: Subscribing,
        name: String,
        arguments: &QueueArguments,
        receipt: Option<&str>,
    ) -> bool {
        if !self.queue_room(who.session, &name, receipt) {
            return false;
        }
        self.ensure_queue(&name, arguments, None);
        let Some(queue) = self.queues.get_mut(&name) else {
            return false;
        };
        let exclusive_taken = queue.settings.exclusive || arguments.exclusive;
        if exclusive_taken && !queue.consumers.is_empty() {
            let message = format!("queue '{name}' is exclusive: it already has a consumer");
            self.fail(who.session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        if arguments.exclusive {
            queue.settings.exclusive = true;
        }
        self.add_consumer(who, name);
        true
    }

    /// Attaches a consumer to a durable topic subscription, creating (or
    /// re-binding) it first. It belongs to the principal that created it:
    /// anyone else using the same client id and name gets ERROR. Re-binding
    /// to another topic discards the old topic's backlog (JMS semantics);
    /// read permission on the new topic was checked by the session.
    pub(super) fn subscribe_durable(
        &mut self,
        who: Subscribing,
        durable: &DurableSubscription,
        pattern: Vec<PatternWord>,
        receipt: Option<&str>,
    ) -> bool {
        let name = format!("{DURABLE_PREFIX}{}", durable.key);
        if self
            .durable_owners
            .get(&name)
            .is_some_and(|owner| *owner != durable.owner)
        {
            // Not saying whose: that would tell a stranger who uses it.
            let message = format!(
                "durable subscription '{}' belongs to another principal",
                durable.key
            );
            self.fail(who.session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        let in_use = self
            .queues
            .get(&name)
            .is_some_and(|q| !q.consumers.is_empty());
        if in_use {
            let message = format!(
                "durable subscription '{}' is already active on another connection",
                durable.key
            );
            self.fail(who.session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        let existing = self.durable_bindings.get(&name).cloned();
        if existing.is_none() && !self.durable_room(who.session, receipt) {
            return false;
        }
        let owned = self.durable_owners.contains_key(&name);
        match existing {
            Some(bound) if bound == durable.destination => {
                if !owned {
                    // Stored by an older version without an owner: the
                    // first principal to attach claims it.
                    self.define_durable(&name, durable);
                }
            }
            rebound => {
                if rebound.is_some() {
                    // The same name for another topic: what it collected
                    // belongs to the old topic and goes with it.
                    self.delete_durable(&name);
                }
                self.ensure_queue(
                    &name,
                    &QueueArguments::default(),
                    Some(&durable.destination),
                );
                self.define_durable(&name, durable);
                let bound: Arc<str> = name.clone().into();
                self.durables.insert(&pattern, bound.clone(), bound);
                self.durable_bindings
                    .insert(name.clone(), durable.destination.clone());
            }
        }
        self.durable_owners
            .insert(name.clone(), durable.owner.clone());
        self.add_consumer(who, name);
        true
    }

    /// Stores a durable subscription's definition with its binding and owner.
    fn define_durable(&mut self, name: &str, durable: &DurableSubscription) {
        if let Some(id) = self.queues.get(name).and_then(|q| q.store_id) {
            self.store_op(StoreOp::DefineQueue {
                id,
                definition: QueueDefinition {
                    name: name.to_owned(),
                    binding: Some(durable.destination.clone()),
                    owner: Some(durable.owner.to_record()),
                    ..QueueDefinition::default()
                },
            });
        }
    }

    fn unbind_durable(&mut self, name: &str, destination: &str) {
        if let Ok(pattern) =
            crate::model::destination::topic_pattern(destination, &self.destination_limits)
        {
            self.durables.remove(&pattern, &Arc::<str>::from(name));
        }
        self.durable_bindings.remove(name);
    }

    /// Deletes a durable topic subscription and what it collected.
    pub(super) fn delete_durable(&mut self, name: &str) {
        if let Some(destination) = self.durable_bindings.get(name).cloned() {
            self.unbind_durable(name, &destination);
        }
        self.durable_owners.remove(name);
        if let Some(queue) = self.queues.remove(name) {
            self.attention.remove(name);
            if let Some(id) = queue.store_id {
                self.store_op(StoreOp::DeleteQueue { id });
            }
        }
    }

    fn add_consumer(&mut self, who: Subscribing, name: String) {
        let Subscribing {
            session,
            id,
            ack,
            prefetch,
        } = who;
        let Some(queue) = self.queues.get_mut(&name) else {
            return;
        };
        let prefetch = prefetch.unwrap_or(queue.settings.prefetch);
        queue.consumers.push(Consumer {
            session,
            subscription: id.clone(),
        });
        if let Some(entry) = self.sessions.get_mut(&session) {
            self.subscription_count += 1;
            entry.subscriptions.insert(
                id,
                SubscriptionEntry {
                    target: Target::Queue(name),
                    ack,
                    prefetch,
                    unacked: VecDeque::new(),
                },
            );
        }
    }

    /// Removes a consumer; an `auto-delete` queue goes with its last one.
    pub(super) fn remove_consumer(&mut self, name: &str, session: SessionId, id: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        queue.remove_consumer(session, id);
        if queue.consumers.is_empty() {
            queue.settings.exclusive = false;
            if queue.settings.auto_delete {
                debug!(
                    queue = name,
                    dropped = queue.len(),
                    "auto-delete queue removed"
                );
                self.queues.remove(name);
                self.attention.remove(name);
            }
        }
    }

    /// Whether the store can take `bytes` more; fails the session if not.
    fn store_has_room(&mut self, session: SessionId, bytes: usize, receipt: Option<&str>) -> bool {
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
        let id = self.next_message_id();
        let Publication {
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
                if persistent
                    && !durable_queues.is_empty()
                    && !self.store_has_room(session, message.body.len(), receipt)
                {
                    return false;
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

    /// Appends to queue `name` (stored if `persistent` and the queue is),
    /// then dispatches.
    fn enqueue(
        &mut self,
        name: &str,
        message: Arc<Message>,
        persistent: bool,
    ) -> Result<(), String> {
        let Some(queue) = self.queues.get_mut(name) else {
            return Err(format!("queue '{name}' does not exist"));
        };
        let stored = queue.store_id.filter(|_| persistent);
        let sequence = stored.map(|_| {
            self.next_sequence += 1;
            self.next_sequence
        });
        queue
            .enqueue(message.clone(), sequence)
            .map_err(|full| full.0)?;
        if let (Some(queue_id), Some(sequence)) = (stored, sequence) {
            self.batch_bytes += message.body.len() as u64;
            self.store_op(StoreOp::Put {
                queue: queue_id,
                sequence,
                message,
            });
        }
        self.forget_discarded(name);
        self.dispatch(name);
        Ok(())
    }

    /// Removes from the store the stored messages a queue dropped.
    fn forget_discarded(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let Some(queue_id) = queue.store_id else {
            return;
        };
        for dropped in queue.take_discarded() {
            if let Some(sequence) = dropped.sequence {
                self.store_op(StoreOp::Remove {
                    queue: queue_id,
                    sequence,
                });
            }
        }
    }

    /// Whether `[storage] persistent` makes messages to `destination` persistent.
    fn persistent_by_rule(&self, destination: &str) -> bool {
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

    /// The durable subscriptions whose topic pattern matches `words`.
    fn durable_queues_for(&self, words: &[Box<str>]) -> Vec<String> {
        let mut matched: Vec<&Arc<str>> = Vec::new();
        self.durables.matches(words, &mut matched);
        let mut names: Vec<String> = matched.into_iter().map(|n| n.to_string()).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Creates the session's private reply queue, consumed by the session itself.
    fn ensure_reply_queue(&mut self, session: SessionId, reply_queue: &ReplyQueue) {
        if self.queues.contains_key(&reply_queue.queue)
            || !reply_queue.queue.starts_with(REPLY_QUEUE_PREFIX)
        {
            return;
        }
        let Some(entry) = self.sessions.get_mut(&session) else {
            return;
        };
        entry.reply_queues.push(reply_queue.queue.clone());
        self.reply_queue_count += 1;
        self.subscription_count += 1;
        entry.subscriptions.insert(
            reply_queue.subscription.clone(),
            SubscriptionEntry {
                target: Target::Queue(reply_queue.queue.clone()),
                ack: AckMode::Auto,
                prefetch: 1,
                unacked: VecDeque::new(),
            },
        );
        let arguments = QueueArguments {
            exclusive: true,
            ..QueueArguments::default()
        };
        let mut settings = self.policy.settings_for(&reply_queue.queue, &arguments);
        settings.dead_letter = None;
        let mut queue = Queue::new(
            reply_queue.queue.clone(),
            settings,
            self.queue_memory.clone(),
        );
        queue.consumers.push(Consumer {
            session,
            subscription: reply_queue.subscription.clone(),
        });
        self.queues.insert(reply_queue.queue.clone(), queue);
    }

    /// Delivers ready messages of `name` to consumers with credit, round-robin.
    pub(super) fn dispatch(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let now_ms = epoch_ms();
        let mut slow = Vec::new();
        let mut delivered_stored = Vec::new();
        let mut starved = false;
        while queue.ready_len() > 0 && !queue.consumers.is_empty() {
            let count = queue.consumers.len();
            let mut delivered = false;
            for step in 0..count {
                let index = (queue.next_consumer + step) % count;
                let consumer = queue.consumers[index].clone();
                let Some(entry) = self.sessions.get_mut(&consumer.session) else {
                    continue;
                };
                let Some(subscription) = entry.subscriptions.get_mut(&consumer.subscription) else {
                    continue;
                };
                let with_ack = subscription.ack.expects_ack();
                // Credit: client modes by unsettled count; auto mode by room in
                // the connection's outbound queue, so that queue messages wait
                // in the queue rather than overflow a slow connection.
                let has_credit = if with_ack {
                    subscription.unacked.len() < subscription.prefetch
                        && entry.ack_index.len() < self.max_unacked_per_connection
                } else {
                    entry.outbound.has_room()
                };
                if !has_credit {
                    continue;
                }
                let Some(mut queued) = queue.pop_ready(now_ms) else {
                    break;
                };
                queued.deliveries += 1;
                let ack = with_ack.then(|| ack_id(&queued.message.id, &consumer.subscription));
                let frame = encode(
                    &queued.message,
                    Delivery {
                        subscription: &consumer.subscription,
                        ack_id: ack.as_deref(),
                        previous_deliveries: queued.deliveries - 1,
                    },
                    entry.version,
                );
                if entry.outbound.push(frame).is_err() {
                    queued.deliveries -= 1;
                    queue.return_to_front(std::iter::once(queued));
                    slow.push(consumer.session);
                    continue;
                }
                if let Some(sequence) = queued.sequence {
                    delivered_stored.push((sequence, queued.deliveries, with_ack));
                }
                if let Some(ack_id) = ack {
                    entry
                        .ack_index
                        .insert(ack_id.clone(), consumer.subscription.clone());
                    subscription.unacked.push_back(Unacked {
                        ack_id,
                        message: queued,
                        queue: Some(name.to_owned()),
                    });
                }
                queue.next_consumer = (index + 1) % count;
                delivered = true;
                break;
            }
            if !delivered {
                starved = !slow.is_empty() || queue.ready_len() > 0;
                break;
            }
        }
        if starved || queue.next_due().is_some() {
            self.attention.insert(name.to_owned());
        }
        if let Some(queue_id) = queue.store_id {
            for (sequence, deliveries, with_ack) in delivered_stored {
                // An auto-ack delivery is settled as it is handed over.
                let op = if with_ack {
                    StoreOp::Delivered {
                        queue: queue_id,
                        sequence,
                        deliveries,
                    }
                } else {
                    StoreOp::Remove {
                        queue: queue_id,
                        sequence,
                    }
                };
                self.store_op(op);
            }
        }
        self.forget_discarded(name);
        self.cut_off_slow(slow);
    }

    /// Removes settled stored messages from the store.
    pub(super) fn forget_settled(&mut self, name: &str, sequence: Option<u64>) {
        let stored = self.queues.get(name).and_then(|q| q.store_id);
        if let (Some(queue), Some(sequence)) = (stored, sequence) {
            self.store_op(StoreOp::Remove { queue, sequence });
        }
    }

    /// Puts a returned or NACKed message where it belongs: back in its queue
    /// (at once, or after a delay), or in the dead-letter queue.
    pub(super) fn requeue(&mut self, name: &str, returned: Vec<QueuedMessage>, nacked: bool) {
        let Some(queue) = self.queues.get_mut(name) else {
            debug!(
                queue = name,
                count = returned.len(),
                "queue gone: returned messages dropped"
            );
            return;
        };
        let mut back = Vec::new();
        let mut dead = Vec::new();
        for message in returned {
            match queue.dead_letter_for(&message) {
                Some(target) => dead.push((target.to_owned(), message)),
                None if nacked => {
                    let due = Instant::now() + queue.redelivery_delay(message.deliveries);
                    queue.delay(message, due);
                }
                None => back.push(message),
            }
        }
        queue.return_to_front(back.into_iter());
        if queue.next_due().is_some() {
            self.attention.insert(name.to_owned());
        }
        for (target, message) in dead {
            self.dead_letter(name, &target, message);
        }
        self.dispatch(name);
    }

    fn dead_letter(&mut self, from: &str, target: &str, queued: QueuedMessage) {
        let original = &queued.message;
        let mut headers = original.headers.clone();
        headers.push(("x-dead-letter-reason".into(), "max-deliveries".into()));
        headers.push(("x-original-destination".into(), from.to_owned()));
        headers.push(("x-deliveries".into(), queued.deliveries.to_string()));
        let message = Arc::new(Message {
            id: original.id.clone(),
            destination: target.to_owned(),
            headers,
            body: original.body.clone(),
            text: original.text,
            expires_at: None,
        });
        // Stored messages stay stored: removed here, put there.
        self.forget_settled(from, queued.sequence);
        self.ensure_queue(target, &QueueArguments::default(), None);
        match self.enqueue(target, message, queued.sequence.is_some()) {
            Ok(()) => debug!(from, to = target, id = %original.id, "dead-lettered"),
            Err(reason) => {
                warn!(from, to = target, %reason, "dead-letter queue full: message dropped")
            }
        }
    }

    /// Revisits queues waiting for credit or for NACK delays.
    pub(super) fn revisit_queues(&mut self) {
        let now = Instant::now();
        let names: Vec<String> = self.attention.drain().collect();
        for name in names {
            if let Some(queue) = self.queues.get_mut(&name) {
                queue.promote_due(now);
                self.dispatch(&name);
            }
        }
    }
}
