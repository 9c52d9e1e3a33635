//! The router: the single owner of queues, unsettled deliveries, durable
//! and client-ack subscriptions, RECEIPTs that wait for the store, and every
//! change to the shared topic index; fed by one bounded channel.
//!
//! Sessions send [`RouterCommand`]s through a [`RouterHandle`]; the router
//! task applies them in order and pushes frames into outbound queues without
//! waiting on a connection. Auto-ack topic messages do not pass through here:
//! publishing sessions push them through `fanout::TopicIndex` (ordering:
//! `docs/architecture.md`).
//!
//! Errors only the router can see (an ACK of an unknown id, a SEND to a full
//! queue) are sent as a final ERROR frame that makes the connection close.
//!
//! The router knows STOMP frames, not WebSockets. Its work is split along
//! its seams: `command.rs` (what sessions send, the handle), this file (the
//! state, the run loop, applying commands), `sessions.rs` (per-session
//! tables), `receipts.rs` (RECEIPT order, router-detected ERRORs),
//! `recovery.rs`, `publish.rs`, `topics.rs` (topic delivery), `dispatch.rs`
//! (queue dispatch, dead letters), `durables.rs`, `reply_queues.rs`,
//! `acks.rs` (ACK, NACK, returning unacknowledged messages), `caps.rs`,
//! `meta.rs` (`/meta/subscribers/...` counts).

mod acks;
mod caps;
mod command;
mod dispatch;
mod durables;
pub mod message;
mod meta;
mod principal;
mod publish;
mod receipts;
mod recovery;
mod reply_queues;
pub mod sample;
mod sessions;
mod settings;
mod topics;

pub use crate::fanout::topic_trie;
pub use crate::fanout::Subscriber;
pub use crate::model::ack_mode::AckMode;

use crate::config::{LimitsConfig, SlowConsumerPolicy};
use crate::fanout::IndexWriter;
use crate::model::destination::{self, PatternWord};
pub use crate::model::session_id::SessionId;
use crate::queue::{Queue, QueueMemory, QueuePolicy};
use crate::store::writer::{StoreWriter, WriteBatch};
use crate::store::StoreOp;
use command::Queued;
pub use command::{AckKey, RouterCommand, RouterGone, RouterHandle, Settle, TxOperation};
pub use durables::{DurableSubscription, DURABLE_PREFIX};
pub use principal::Principal;
use sessions::{SessionEntry, SubscribeRequest, Subscription, Target, Unacked};
pub use settings::RouterSettings;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use topic_trie::TopicTrie;
use tracing::debug;

/// Most commands the router takes from its channel before it looks again;
/// draining in bulk keeps the per-command overhead low under load.
const BATCH: usize = 256;

/// How often queues waiting for consumer credit or NACK delays are revisited.
const TICK: Duration = Duration::from_millis(20);

/// How often a failing store is asked whether it works again.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Starts the router task.
pub fn spawn_router(
    settings: RouterSettings,
) -> Result<(RouterHandle, tokio::task::JoinHandle<()>), String> {
    let (commands_tx, commands_rx) = mpsc::channel(settings.channel_capacity);
    let max_queued_bytes = u32::try_from(settings.max_queued_bytes)
        .unwrap_or(u32::MAX)
        .max(1);
    let handle = RouterHandle {
        commands_tx,
        queued_bytes: Arc::new(tokio::sync::Semaphore::new(max_queued_bytes as usize)),
        max_queued_bytes,
    };
    let limits = settings.destination_limits;
    let slow_consumer_rules = settings
        .slow_consumers
        .rules
        .iter()
        .map(|rule| {
            destination::topic_pattern(&rule.pattern, &limits)
                .map(|pattern| (pattern, rule.policy))
                .map_err(|e| format!("slow_consumers.rules pattern: {}", e.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let persistent_patterns = settings
        .persistent_patterns
        .iter()
        .map(|pattern| {
            destination::topic_pattern(pattern, &limits)
                .map(|words| (pattern.starts_with(destination::QUEUE_PREFIX), words))
                .map_err(|e| format!("storage.persistent pattern: {}", e.0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut router = Router {
        metrics: settings.metrics,
        slow_consumer_rules,
        slow_consumer_default: settings.slow_consumers.policy,
        max_unacked_per_connection: settings.max_unacked_per_connection,
        queue_memory: settings.queue_memory,
        topics: TopicTrie::default(),
        sessions: HashMap::new(),
        queues: HashMap::new(),
        attention: HashSet::new(),
        policy: settings.queue_policy,
        topic_prefetch: settings.topic_prefetch,
        index: settings.index,
        store: settings.store,
        store_enabled: settings.store_enabled,
        batch: WriteBatch::default(),
        durable_ops: 0,
        batch_bytes: 0,
        persistent_patterns,
        max_disk_bytes: settings.max_disk_bytes,
        next_sequence: 0,
        next_queue_id: 1,
        durables: TopicTrie::default(),
        durable_bindings: HashMap::new(),
        durable_owners: HashMap::new(),
        destination_limits: limits,
        last_probe: Instant::now(),
        caps: settings.caps,
        subscription_count: 0,
        reply_queue_count: 0,
        watches: meta::Watches::default(),
        meta_messages: 0,
    };
    router.recover(settings.recovered)?;
    let task = tokio::spawn(router.run(commands_rx));
    Ok((handle, task))
}

struct Router {
    /// The router's counters (it alone writes them).
    metrics: Arc<crate::metrics::Metrics>,
    /// Slow-consumer rules: pattern → whether it means `drop-oldest`.
    slow_consumer_rules: Vec<(Vec<PatternWord>, SlowConsumerPolicy)>,
    slow_consumer_default: SlowConsumerPolicy,
    max_unacked_per_connection: usize,
    queue_memory: Arc<QueueMemory>,
    /// Client-ack topic subscriptions (the router tracks their unsettled
    /// deliveries), keyed by connection and subscription id. Auto-ack ones
    /// are only in the shared index.
    topics: TopicTrie<(SessionId, Arc<str>), Arc<Subscriber>>,
    sessions: HashMap<SessionId, SessionEntry>,
    queues: HashMap<String, Queue>,
    /// Queues to revisit on the next tick: messages waiting for consumer
    /// credit, or NACKed messages waiting out a delay.
    attention: HashSet<String>,
    policy: QueuePolicy,
    topic_prefetch: usize,
    /// The shared topic index, which only the router changes: auto-ack
    /// topic subscriptions, and markers for the client-ack and durable ones
    /// the router delivers to itself.
    index: IndexWriter,
    store: StoreWriter,
    store_enabled: bool,
    /// Store ops and held RECEIPTs of the commands applied since the last
    /// hand-over to the writer.
    batch: WriteBatch,
    /// Ops in `batch` that make RECEIPTs wait (all but delivery counts).
    durable_ops: usize,
    /// Body bytes put in `batch`, for the disk budget.
    batch_bytes: u64,
    /// `[storage] persistent`: (is a queue pattern, words).
    persistent_patterns: Vec<(bool, Vec<PatternWord>)>,
    max_disk_bytes: u64,
    /// The last store sequence number used.
    next_sequence: u64,
    next_queue_id: u64,
    /// Durable topic subscriptions: topic pattern → their queue's name.
    durables: TopicTrie<Arc<str>, Arc<str>>,
    /// Durable subscription queue → the topic destination it is bound to.
    durable_bindings: HashMap<String, String>,
    /// Durable subscription queue → the principal it belongs to. A queue
    /// stored by an older version has none until its first subscriber
    /// claims it.
    durable_owners: HashMap<String, Principal>,
    destination_limits: destination::DestinationLimits,
    /// When a failing store was last asked whether it works again.
    last_probe: Instant,
    /// `[limits]`: caps on state keyed by names clients choose (`caps.rs`).
    caps: LimitsConfig,
    /// Entries of every session's `subscriptions`, reply queues' included.
    subscription_count: usize,
    /// Reply queues of every session.
    reply_queue_count: usize,
    /// `/meta/subscribers/...` watchers by topic, and the count MESSAGEs sent.
    watches: meta::Watches,
    meta_messages: u64,
}

impl Router {
    pub(super) async fn run(mut self, mut commands_rx: mpsc::Receiver<Queued>) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let store_failing = self.store.state.failing().is_some();
            tokio::select! {
                received = commands_rx.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    for Queued { command, bytes } in batch.drain(..) {
                        self.apply(command);
                        // What it carried now sits in queues or outbound
                        // queues, which have bounds of their own.
                        drop(bytes);
                    }
                }
                _ = tick.tick(), if !self.attention.is_empty() || store_failing || self.counts_due() => {
                    self.revisit_queues();
                    self.send_due_counts();
                    if store_failing && self.last_probe.elapsed() >= PROBE_INTERVAL {
                        self.last_probe = Instant::now();
                        self.batch.probe = true;
                    }
                }
            }
            if !self.batch.is_empty() {
                let batch = std::mem::take(&mut self.batch);
                self.durable_ops = 0;
                self.batch_bytes = 0;
                // Group commit happens on the writer's side: many batches, one sync.
                self.store.submit(batch).await;
            }
        }
        debug!("router stopped: every session handle is gone");
    }

    /// Queues a store op (when anything is stored).
    pub(super) fn store_op(&mut self, op: StoreOp) {
        if !self.store_enabled {
            return;
        }
        if !matches!(op, StoreOp::Delivered { .. }) {
            self.durable_ops += 1;
        }
        self.batch.ops.push(op);
    }

    pub(super) fn apply(&mut self, command: RouterCommand) {
        // A command that changed the store gets its RECEIPT after the sync.
        let mark = self.durable_ops;
        match command {
            RouterCommand::Attach {
                session,
                outbound,
                version,
            } => {
                self.attach(session, outbound, version);
            }
            subscribe @ RouterCommand::Subscribe { .. } => self.apply_subscribe(subscribe, mark),
            RouterCommand::Unsubscribe {
                session,
                id,
                remove_durable,
                receipt,
            } => {
                let queue = self.unsubscribe(session, &id);
                if let Some(name) =
                    queue.filter(|name| remove_durable && name.starts_with(DURABLE_PREFIX))
                {
                    self.delete_durable(&name);
                }
                let durable = self.durable_ops != mark;
                self.receipt(session, receipt, durable);
            }
            RouterCommand::Publish {
                session,
                publication,
                receipt,
            } => {
                if self.publish(session, publication, receipt.as_deref()) {
                    let durable = self.durable_ops != mark;
                    self.receipt(session, receipt, durable);
                }
            }
            RouterCommand::Remote {
                words,
                message,
                subscriptions,
                durables,
            } => {
                let message = Arc::new(message);
                self.publish_topic_to(&words, message.clone(), Some(&subscriptions));
                if durables {
                    self.publish_durables(&words, message);
                }
            }
            RouterCommand::RemoteCounts => self.remote_counts_changed(),
            RouterCommand::Settle {
                session,
                settle,
                receipt,
            } => {
                if self.settle(session, &settle, receipt.as_deref()) {
                    let durable = self.durable_ops != mark;
                    self.receipt(session, receipt, durable);
                }
            }
            RouterCommand::ReplyQueue {
                session,
                reply_queue,
                made,
            } => {
                let refusal = self.reply_queue_refusal(session, &reply_queue);
                if refusal.is_none() {
                    self.ensure_reply_queue(session, &reply_queue);
                }
                let _ = made.send(refusal.map_or(Ok(()), Err));
            }
            RouterCommand::Commit {
                session,
                operations,
                receipt,
            } => {
                let mut ok = true;
                for operation in operations {
                    ok = match operation {
                        TxOperation::Publish(publication) => {
                            self.publish(session, publication, receipt.as_deref())
                        }
                        TxOperation::Settle(settle) => {
                            self.settle(session, &settle, receipt.as_deref())
                        }
                    };
                    if !ok {
                        break;
                    }
                }
                if ok {
                    let durable = self.durable_ops != mark;
                    self.receipt(session, receipt, durable);
                }
            }
            RouterCommand::Applied { done } => {
                // The session only waits; it may have gone meanwhile.
                let _ = done.send(());
            }
            RouterCommand::Admin(command) => self.admin(command),
            RouterCommand::Receipt { session, receipt } => {
                self.receipt(session, Some(receipt), false)
            }
            RouterCommand::Detach { session, receipt } => {
                self.receipt(session, receipt, false);
                self.remove_session(session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueArguments;
    use crate::router::message::Publication;
    use bytes::Bytes;

    fn publish(body_bytes: usize) -> RouterCommand {
        RouterCommand::Publish {
            session: SessionId(1),
            publication: Publication {
                id: "m-1".into(),
                delivered_direct: false,
                target: destination::SendTarget::Topic(vec!["t".into()]),
                destination: "/topic/t".into(),
                headers: Vec::new(),
                body: Bytes::from(vec![b'x'; body_bytes]),
                expires_at: None,
                queue_arguments: QueueArguments::default(),
                reply_queue: None,
                persistent: false,
            },
            receipt: None,
        }
    }

    #[tokio::test]
    async fn sends_wait_for_bytes_until_the_router_has_applied_them() {
        let (commands_tx, mut commands_rx) = mpsc::channel(16);
        let handle = RouterHandle {
            commands_tx,
            queued_bytes: Arc::new(tokio::sync::Semaphore::new(1000)),
            max_queued_bytes: 1000,
        };
        handle.send(publish(600)).await.map_err(|_| "gone").unwrap();
        // 600 + 600 bytes > 1000: the second waits, with room in the channel.
        let second = tokio::spawn({
            let handle = handle.clone();
            async move { handle.send(publish(600)).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!second.is_finished(), "a send past the byte bound waits");
        // Commands without a payload never wait for bytes.
        let receipt = RouterCommand::Receipt {
            session: SessionId(1),
            receipt: "r".into(),
        };
        tokio::time::timeout(Duration::from_secs(1), handle.send(receipt))
            .await
            .expect("a RECEIPT does not wait")
            .map_err(|_| "gone")
            .unwrap();
        // The router applies (drops) the first: the second goes.
        drop(commands_rx.recv().await);
        assert!(tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("released")
            .expect("task"));
        // A command larger than the whole bound takes all of it, not forever.
        drop(commands_rx.recv().await);
        drop(commands_rx.recv().await);
        tokio::time::timeout(Duration::from_secs(1), handle.send(publish(5000)))
            .await
            .expect("an oversized command is not stuck")
            .map_err(|_| "gone")
            .unwrap();
    }
}
