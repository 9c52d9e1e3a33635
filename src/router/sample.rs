//! What the admin listener reads from the router and asks of it: a
//! snapshot of every queue (depth, unacked, consumers) and of the
//! subscription tables, taken by the router task between two commands,
//! bounded by the caps on queues and subscriptions (`[limits]`), never by
//! a client; and an operator's purge or deletion of a queue.

use super::sessions::Target;
use super::Router;
use crate::store::StoreOp;
use std::collections::HashMap;
use tokio::sync::oneshot;

/// One queue as sampled.
#[derive(Debug, Clone)]
pub struct QueueSample {
    /// Its destination (`/queue/...`, or a reply queue's name).
    pub name: String,
    /// Messages held (ready and delayed).
    pub depth: usize,
    /// Deliveries awaiting ACK or NACK.
    pub unacked: usize,
    /// Consumers subscribed.
    pub consumers: usize,
    /// Messages dropped by `drop-oldest` or expiry since it was created.
    pub dropped: u64,
    /// A durable topic subscription's queue: the topic pattern it is bound to.
    pub durable_topic: Option<String>,
    /// One of the cluster engine's queues: its counts as the engine states
    /// them (`depth`, `unacked` and `consumers` are taken from them).
    pub engine: Option<crate::queue::EngineQueue>,
}

impl QueueSample {
    /// One of the cluster engine's queues: `depth` its undelivered
    /// messages, `unacked` its deliveries not acknowledged on any node,
    /// `consumers` this node's subscribers (as on one node).
    pub fn from_engine(queue: crate::queue::EngineQueue) -> QueueSample {
        QueueSample {
            name: queue.name.clone(),
            depth: usize::try_from(queue.pending).unwrap_or(usize::MAX),
            unacked: usize::try_from(queue.ack_pending).unwrap_or(usize::MAX),
            consumers: queue.local_consumers,
            dropped: 0,
            durable_topic: queue.durable_topic.clone(),
            engine: Some(queue),
        }
    }
}

/// The router's state as the admin listener shows it.
#[derive(Debug, Clone, Default)]
pub struct RouterSample {
    /// Every queue, by name.
    pub queues: Vec<QueueSample>,
    /// Subscriptions of all sessions (reply queues' included).
    pub subscriptions: usize,
    /// Subscriptions by session id.
    pub subscriptions_by_session: HashMap<u64, usize>,
}

/// What the admin listener asks of the router.
#[derive(Debug)]
pub enum AdminCommand {
    /// A snapshot of queues and subscriptions.
    Sample {
        /// Answered with the snapshot.
        reply: oneshot::Sender<RouterSample>,
    },
    /// An operator purges or deletes a queue.
    QueueAction {
        /// The queue's name.
        name: String,
        /// What to do.
        action: QueueAction,
        /// Answered with the messages removed, or why not.
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

/// What an operator does to a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueAction {
    /// Drop every held message (unacked deliveries stay with their consumers).
    Purge,
    /// Remove the queue and its messages; refused while it has consumers.
    Delete,
    /// Move a dead-letter queue's held messages back to the queue each
    /// left (its `x-original-destination`); messages without one stay.
    MoveBack,
}

impl Router {
    /// Applies an admin command (the sample, a queue action).
    pub(super) fn admin(&mut self, command: AdminCommand) {
        // The asker may have given up waiting: nothing to do then.
        match command {
            AdminCommand::Sample { reply } => {
                let _ = reply.send(self.sample());
            }
            AdminCommand::QueueAction {
                name,
                action,
                reply,
            } => {
                let _ = reply.send(self.queue_action(&name, action));
            }
        }
    }

    /// Purges or deletes queue `name`; `Ok` with the messages removed.
    pub(super) fn queue_action(
        &mut self,
        name: &str,
        action: QueueAction,
    ) -> Result<usize, String> {
        let Some(queue) = self.queues.get_mut(name) else {
            return Err(format!("no queue '{name}'"));
        };
        match action {
            QueueAction::Purge => {
                let store_id = queue.store_id;
                let purged = queue.purge();
                let count = purged.len();
                if let Some(queue) = store_id {
                    for sequence in purged.into_iter().filter_map(|m| m.sequence) {
                        self.store_op(StoreOp::Remove { queue, sequence });
                    }
                }
                Ok(count)
            }
            QueueAction::Delete => {
                if !queue.consumers.is_empty() {
                    return Err(format!(
                        "queue '{name}' has {} consumers; close them or purge instead",
                        queue.consumers.len()
                    ));
                }
                let count = queue.len();
                if self.durable_bindings.contains_key(name) {
                    self.delete_durable(name);
                } else if let Some(queue) = self.queues.remove(name) {
                    self.attention.remove(name);
                    if let Some(id) = queue.store_id {
                        self.store_op(StoreOp::DeleteQueue { id });
                    }
                }
                Ok(count)
            }
            QueueAction::MoveBack => Ok(self.move_back(name)),
        }
    }

    /// Moves dead-letter queue `name`'s held messages back to their
    /// original queues, without the dead-letter headers; the count moved.
    fn move_back(&mut self, name: &str) -> usize {
        let Some(queue) = self.queues.get_mut(name) else {
            return 0;
        };
        let held = queue.purge();
        let mut moved = 0;
        for queued in held {
            let original = queued
                .message
                .headers
                .iter()
                .find(|(key, _)| key == "x-original-destination")
                .map(|(_, value)| value.clone())
                .filter(|target| target != name && target.starts_with("/queue/"));
            let Some(target) = original else {
                if let Some(queue) = self.queues.get_mut(name) {
                    queue.restore(queued);
                }
                continue;
            };
            let message = &queued.message;
            let headers = message
                .headers
                .iter()
                .filter(|(key, _)| {
                    !matches!(
                        key.as_str(),
                        "x-dead-letter-reason" | "x-original-destination" | "x-deliveries"
                    )
                })
                .cloned()
                .collect();
            let back = std::sync::Arc::new(crate::model::message::Message {
                id: message.id.clone(),
                destination: target.clone(),
                headers,
                body: message.body.clone(),
                text: message.text,
                expires_at: message.expires_at,
            });
            // Stored messages stay stored: removed here, put there.
            self.forget_settled(name, queued.sequence);
            self.ensure_queue(&target, &crate::queue::QueueArguments::default(), None);
            match self.enqueue(&target, back, queued.sequence.is_some()) {
                Ok(()) => moved += 1,
                Err(reason) => {
                    tracing::warn!(from = name, to = %target, %reason, "move back: message dropped")
                }
            }
        }
        if let Some(queue) = self.queues.get(name) {
            if queue.ready_len() > 0 {
                self.dispatch(name);
            }
        }
        moved
    }

    /// Takes the snapshot (router task).
    pub(super) fn sample(&self) -> RouterSample {
        let mut unacked: HashMap<&str, usize> = HashMap::new();
        let mut subscriptions_by_session = HashMap::with_capacity(self.sessions.len());
        for (id, session) in &self.sessions {
            subscriptions_by_session.insert(id.0, session.subscriptions.len());
            for subscription in session.subscriptions.values() {
                if let Target::Queue(name) = &subscription.target {
                    *unacked.entry(name.as_str()).or_default() += subscription.unacked.len();
                }
            }
        }
        let mut queues: Vec<QueueSample> = self
            .queues
            .values()
            .map(|queue| QueueSample {
                name: queue.name.clone(),
                depth: queue.len(),
                unacked: unacked.get(queue.name.as_str()).copied().unwrap_or(0),
                consumers: queue.consumers.len(),
                dropped: queue.dropped,
                durable_topic: self.durable_bindings.get(&queue.name).cloned(),
                engine: None,
            })
            .collect();
        queues.sort_by(|a, b| a.name.cmp(&b.name));
        RouterSample {
            queues,
            subscriptions: self.subscription_count,
            subscriptions_by_session,
        }
    }
}
