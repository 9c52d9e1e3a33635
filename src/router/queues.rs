//! Queue dispatch: round-robin among consumers with credit, creation by
//! first use, reply queues, dead letters, and the periodic revisit.

use super::destination::REPLY_QUEUE_PREFIX;
use super::message::{ack_id, encode, Delivery, Message, Publication, ReplyQueue};
use super::{epoch_ms, AckMode, Router, SessionId, SubscriptionEntry, Target, Unacked};
use crate::queue::{Consumer, Queue, QueueArguments, QueuedMessage};
use crate::session::CloseReason;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, warn};

impl Router {
    /// The queue `name`, created with `arguments` if it does not exist.
    fn queue_mut(&mut self, name: &str, arguments: &QueueArguments) -> &mut Queue {
        let policy = &self.policy;
        let memory = &self.queue_memory;
        self.queues.entry(name.to_owned()).or_insert_with(|| {
            let settings = policy.settings_for(name, arguments);
            debug!(queue = name, ?settings, "queue created");
            Queue::new(name.to_owned(), settings, memory.clone())
        })
    }

    /// Adds a queue consumer; false (after failing the session) if refused.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn subscribe_queue(
        &mut self,
        session: SessionId,
        id: Arc<str>,
        name: String,
        ack: AckMode,
        prefetch: Option<usize>,
        arguments: &QueueArguments,
        receipt: Option<&str>,
    ) -> bool {
        let queue = self.queue_mut(&name, arguments);
        let exclusive_taken = queue.settings.exclusive || arguments.exclusive;
        if exclusive_taken && !queue.consumers.is_empty() {
            let message = format!("queue '{name}' is exclusive: it already has a consumer");
            self.fail(session, message, receipt, CloseReason::PolicyViolation);
            return false;
        }
        if arguments.exclusive {
            queue.settings.exclusive = true;
        }
        let prefetch = prefetch.unwrap_or(queue.settings.prefetch);
        queue.consumers.push(Consumer {
            session,
            subscription: id.clone(),
        });
        if let Some(entry) = self.sessions.get_mut(&session) {
            entry.subscriptions.insert(
                id,
                SubscriptionEntry {
                    target: Target::Queue(name.clone()),
                    ack,
                    prefetch,
                    unacked: VecDeque::new(),
                },
            );
        }
        true
    }

    /// Removes a consumer; an `auto-delete` queue goes with its last one.
    pub(super) fn remove_consumer(&mut self, name: &str, session: SessionId, id: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        queue.remove_consumer(session, id);
        if queue.consumers.is_empty() {
            if queue.settings.exclusive {
                queue.settings.exclusive = false;
            }
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

    /// Routes a publication; false (after failing the session) if refused.
    pub(super) fn publish(
        &mut self,
        session: SessionId,
        publication: Publication,
        receipt: Option<&str>,
    ) -> bool {
        if let Some(reply_queue) = &publication.reply_queue {
            self.ensure_reply_queue(session, reply_queue);
        }
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
            super::destination::SendTarget::Topic(words) => {
                self.publish_topic(&words, Arc::new(message));
                true
            }
            super::destination::SendTarget::Queue(name) => {
                let queue = self.queue_mut(&name, &queue_arguments);
                if message.expires_at.is_none() {
                    message.expires_at = queue.settings.message_ttl.map(|ttl| {
                        epoch_ms()
                            .saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                    });
                }
                if let Err(full) = queue.enqueue(Arc::new(message)) {
                    self.fail(session, full.0, receipt, CloseReason::PolicyViolation);
                    return false;
                }
                self.dispatch(&name);
                true
            }
            super::destination::SendTarget::ReplyQueue(name) => {
                match self.queues.get_mut(&name) {
                    Some(queue) => {
                        if let Err(full) = queue.enqueue(Arc::new(message)) {
                            debug!(queue = %name, reason = %full.0, "reply dropped");
                        }
                        self.dispatch(&name);
                    }
                    None => debug!(queue = %name, "reply to a connection that is gone: dropped"),
                }
                true
            }
        }
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
        self.cut_off_slow(slow);
    }

    /// Puts a returned or NACKed message where it belongs: back in its queue
    /// (at once, or after `delay`), or in the dead-letter queue.
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
        let message = Message {
            id: original.id.clone(),
            destination: target.to_owned(),
            headers,
            body: original.body.clone(),
            text: original.text,
            expires_at: None,
        };
        let queue = self.queue_mut(target, &QueueArguments::default());
        match queue.enqueue(Arc::new(message)) {
            Ok(()) => debug!(from, to = target, id = %original.id, "dead-lettered"),
            Err(full) => {
                warn!(from, to = target, reason = %full.0, "dead-letter queue full: message dropped")
            }
        }
        self.dispatch(target);
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
