//! Queue dispatch: creation by first use, consumers, round-robin among
//! consumers with credit, persistence of what must survive, returned and
//! dead-lettered messages, and the periodic revisit.

use super::{Router, SessionId, SubscribeRequest, Subscription, Target, Unacked};
use crate::fanout::encode::{ack_id, encode, Delivery};
use crate::model::close::CloseReason;
use crate::model::message::{epoch_ms, Message};
use crate::queue::{Consumer, Queue, QueueArguments, QueuedMessage};
use crate::store::{QueueDefinition, StoreOp};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::time::Instant;
use tracing::{debug, warn};

impl Router {
    /// Creates queue `name` with `arguments` (and stores its definition,
    /// unless it is transient) if it does not exist.
    pub(super) fn ensure_queue(
        &mut self,
        name: &str,
        arguments: &QueueArguments,
        binding: Option<&str>,
    ) {
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
        who: SubscribeRequest,
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

    pub(super) fn add_consumer(&mut self, who: SubscribeRequest, name: String) {
        let SubscribeRequest {
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
                Subscription {
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

    /// Appends to queue `name` (stored if `persistent` and the queue is),
    /// then dispatches.
    pub(super) fn enqueue(
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
        if let Err(full) = queue.enqueue(message.clone(), sequence) {
            // A refusal is counted too.
            self.forget_discarded(name);
            return Err(full.0);
        }
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

    /// Counts what a queue dropped in the metrics and removes from the
    /// store the stored messages it dropped.
    pub(super) fn forget_discarded(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let drops = queue.take_drop_counts();
        if drops != crate::queue::DropCounts::default() {
            self.metrics.router_add(|r| &r.expired, name, drops.expired);
            self.metrics
                .router_add(|r| &r.overflow, name, drops.overflow);
            self.metrics
                .router_add(|r| &r.rejected, name, drops.rejected);
        }
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

    /// Delivers ready messages of `name` to consumers with credit, round-robin.
    pub(super) fn dispatch(&mut self, name: &str) {
        let Some(queue) = self.queues.get_mut(name) else {
            return;
        };
        let now_ms = epoch_ms();
        let mut slow = Vec::new();
        let mut delivered_stored = Vec::new();
        let mut starved = false;
        // Counted here, added to the metrics once per dispatch.
        let (mut sent, mut resent) = (0u64, 0u64);
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
                sent += 1;
                resent += u64::from(queued.deliveries > 1);
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
        if sent > 0 {
            self.metrics.router_add(|r| &r.delivered, name, sent);
            self.metrics.router_add(|r| &r.redelivered, name, resent);
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

    pub(super) fn dead_letter(&mut self, from: &str, target: &str, queued: QueuedMessage) {
        self.metrics.router_add(|r| &r.dead_lettered, from, 1);
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
