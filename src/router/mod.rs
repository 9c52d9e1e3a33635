//! The router: the single owner of subscriptions, queues and unsettled
//! deliveries, fed by one bounded channel.
//!
//! Sessions send [`RouterCommand`]s through a [`RouterHandle`]; the router task
//! applies them in order and pushes encoded frames into connections' outbound
//! queues without ever waiting on a connection. Because every command of a
//! session passes through this one channel in order, a RECEIPT that the router
//! emits follows everything the session sent before it, and each subscriber
//! sees each publisher's messages in publishing order.
//!
//! Errors only the router can see (an ACK of an unknown id, a SEND to a full
//! queue) are sent as a final ERROR frame that makes the connection close.
//!
//! The router knows STOMP frames, not WebSockets. Its work is split by topic:
//! `topics.rs` (fan-out), `queues.rs` (dispatch, dead letters), `acks.rs`
//! (ACK, NACK, returning unacknowledged messages).

mod acks;
mod caps;
pub mod message;
mod principal;
mod queues;
pub mod subscription;
pub mod topic_trie;
mod topics;

use crate::config::{SlowConsumerPolicy, SlowConsumersConfig};
use crate::model::close::CloseReason;
use crate::model::destination::{self, PatternWord, SubscribeTarget};
use crate::model::frames;
use crate::model::message::epoch_ms;
pub use crate::model::session_id::SessionId;
use crate::outbound::{CloseAfter, OutFrame, OutboundSender, PushError};
use crate::queue::{Queue, QueueArguments, QueueMemory, QueuePolicy, QueuedMessage};
use crate::store::writer::{PendingReceipt, StoreWriter, WriteBatch};
use crate::store::{StoreOp, StoredQueue};
pub use caps::StateCaps;
use message::Publication;
pub use principal::Principal;
pub use queues::{DurableSubscription, DURABLE_PREFIX};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::Version;
pub use subscription::{AckMode, Subscriber};
use tokio::sync::mpsc;
use tokio::time::Instant;
use topic_trie::TopicTrie;
use tracing::{debug, warn};

/// Most commands the router takes from its channel before it looks again;
/// draining in bulk keeps the per-command overhead low under load.
const BATCH: usize = 256;

/// How often queues waiting for consumer credit or NACK delays are revisited.
const TICK: Duration = Duration::from_millis(20);

/// How often a failing store is asked whether it works again.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// ACK or NACK, and which delivery it names.
#[derive(Debug, Clone)]
pub struct Settle {
    /// NACK rather than ACK.
    pub nack: bool,
    /// The delivery.
    pub key: AckKey,
}

/// How ACK/NACK name a delivery.
#[derive(Debug, Clone)]
pub enum AckKey {
    /// STOMP 1.2: the MESSAGE's `ack` header, sent back as `id`.
    Id(String),
    /// STOMP 1.0/1.1: `message-id`, with `subscription` in 1.1.
    MessageId {
        /// The MESSAGE's `message-id`.
        message_id: String,
        /// The subscription, when given.
        subscription: Option<String>,
    },
}

/// One operation of a committed transaction.
#[derive(Debug)]
pub enum TxOperation {
    /// A SEND.
    Publish(Publication),
    /// An ACK or NACK.
    Settle(Settle),
}

/// What a session asks of the router. `receipt` is answered with a RECEIPT
/// once the command has taken effect.
#[derive(Debug)]
pub enum RouterCommand {
    /// A session has connected.
    Attach {
        /// The session.
        session: SessionId,
        /// Where its frames go.
        outbound: OutboundSender,
        /// Its negotiated version.
        version: Version,
    },
    /// Add a subscription.
    Subscribe {
        /// The session.
        session: SessionId,
        /// The client's subscription id.
        id: Arc<str>,
        /// The parsed destination.
        target: SubscribeTarget,
        /// Ack mode.
        ack: AckMode,
        /// `prefetch-count`, if given.
        prefetch: Option<usize>,
        /// Queue arguments (when the subscription creates a queue).
        arguments: QueueArguments,
        /// A durable topic subscription, by any of the three dialects.
        durable: Option<DurableSubscription>,
        /// Receipt to send once active.
        receipt: Option<String>,
    },
    /// Remove a subscription; its unacknowledged queue messages go back.
    Unsubscribe {
        /// The session.
        session: SessionId,
        /// The client's subscription id.
        id: Arc<str>,
        /// Also delete the durable subscription behind it.
        remove_durable: bool,
        /// Receipt to send once removed.
        receipt: Option<String>,
    },
    /// Route a message.
    Publish {
        /// The publishing session.
        session: SessionId,
        /// The message.
        publication: Publication,
        /// Receipt to send once routed.
        receipt: Option<String>,
    },
    /// ACK or NACK.
    Settle {
        /// The session.
        session: SessionId,
        /// What to settle.
        settle: Settle,
        /// Receipt to send once settled.
        receipt: Option<String>,
    },
    /// A transaction's operations, applied together.
    Commit {
        /// The session.
        session: SessionId,
        /// SENDs, ACKs and NACKs in order.
        operations: Vec<TxOperation>,
        /// COMMIT's receipt.
        receipt: Option<String>,
    },
    /// Only a RECEIPT, after everything the session sent before.
    Receipt {
        /// The session.
        session: SessionId,
        /// The receipt id.
        receipt: String,
    },
    /// The session is over: drop its subscriptions, return its unacknowledged
    /// messages, and drop its outbound queue (after the receipt, if any),
    /// which lets the connection finish writing.
    Detach {
        /// The session.
        session: SessionId,
        /// DISCONNECT's receipt.
        receipt: Option<String>,
    },
}

impl RouterCommand {
    /// Bytes of SEND bodies and headers the command carries (0 for the rest).
    pub fn payload_bytes(&self) -> usize {
        match self {
            RouterCommand::Publish { publication, .. } => publication.size(),
            RouterCommand::Commit { operations, .. } => operations
                .iter()
                .map(|operation| match operation {
                    TxOperation::Publish(publication) => publication.size(),
                    TxOperation::Settle(_) => 0,
                })
                .sum(),
            _ => 0,
        }
    }
}

/// A command on its way to the router, holding its share of
/// `router.max_queued_bytes` until the router has applied it.
#[derive(Debug)]
struct Queued {
    command: RouterCommand,
    /// Released (dropped) by the router after `apply`.
    bytes: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A session's way to the router.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    /// The router's input. Bounded: a session waits when the router is behind.
    commands_tx: mpsc::Sender<Queued>,
    /// Bytes of SEND bodies and headers in commands not yet applied, one
    /// permit per byte (`router.max_queued_bytes`): `queue_depth` commands
    /// of 1 MiB would be 4 GiB. Sessions acquire before sending, the router
    /// releases after applying; closed never.
    queued_bytes: Arc<tokio::sync::Semaphore>,
    /// The semaphore's size: a command larger than all of it takes all of it.
    max_queued_bytes: u32,
}

/// The router has stopped (only during shutdown).
#[derive(Debug, Clone, Copy)]
pub struct RouterGone;

impl RouterHandle {
    /// Sends a command, waiting while the router's queue is full in
    /// commands or in bytes.
    pub async fn send(&self, command: RouterCommand) -> Result<(), RouterGone> {
        let payload = command.payload_bytes();
        let bytes = if payload == 0 {
            None
        } else {
            let permits = u32::try_from(payload)
                .unwrap_or(u32::MAX)
                .min(self.max_queued_bytes);
            let permit = self
                .queued_bytes
                .clone()
                .acquire_many_owned(permits)
                .await
                .map_err(|_| RouterGone)?;
            Some(permit)
        };
        self.commands_tx
            .send(Queued { command, bytes })
            .await
            .map_err(|_| RouterGone)
    }
}

/// Settings the router needs.
#[derive(Debug)]
pub struct RouterSettings {
    /// Capacity of the command channel.
    pub queue_depth: usize,
    /// `router.max_queued_bytes`: SEND bytes in the command channel.
    pub max_queued_bytes: usize,
    /// Caps on state keyed by names clients choose.
    pub caps: StateCaps,
    /// Queue settings by name.
    pub queue_policy: QueuePolicy,
    /// Default prefetch of client-ack topic subscriptions.
    pub topic_prefetch: usize,
    /// Unsettled deliveries per connection.
    pub max_unacked_per_connection: usize,
    /// Memory of all queues, shared with sessions for back-pressure.
    pub queue_memory: Arc<QueueMemory>,
    /// Slow-consumer policies.
    pub slow_consumers: SlowConsumersConfig,
    /// Limits for parsing the policies' patterns.
    pub destination_limits: destination::DestinationLimits,
    /// The store's writer.
    pub store: StoreWriter,
    /// Whether anything is stored at all.
    pub store_enabled: bool,
    /// What the store held at start.
    pub recovered: Vec<StoredQueue>,
    /// `[storage] persistent`: destination patterns persistent by default.
    pub persistent_patterns: Vec<String>,
    /// `[storage] max_disk_bytes`.
    pub max_disk_bytes: u64,
}

/// Starts the router task.
pub fn spawn_router(
    settings: RouterSettings,
) -> Result<(RouterHandle, tokio::task::JoinHandle<()>), String> {
    let (commands_tx, commands_rx) = mpsc::channel(settings.queue_depth);
    let max_queued_bytes = u32::try_from(settings.max_queued_bytes)
        .unwrap_or(u32::MAX)
        .max(1);
    let handle = RouterHandle {
        commands_tx,
        queued_bytes: Arc::new(tokio::sync::Semaphore::new(max_queued_bytes as usize)),
        max_queued_bytes,
    };
    let limits = settings.destination_limits;
    let drop_oldest_rules = settings
        .slow_consumers
        .rules
        .iter()
        .map(|rule| {
            destination::topic_pattern(&rule.pattern, &limits)
                .map(|pattern| (pattern, rule.policy == SlowConsumerPolicy::DropOldest))
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
        drop_oldest_rules,
        drop_oldest_default: settings.slow_consumers.policy == SlowConsumerPolicy::DropOldest,
        max_unacked_per_connection: settings.max_unacked_per_connection,
        queue_memory: settings.queue_memory,
        topics: TopicTrie::default(),
        sessions: HashMap::new(),
        queues: HashMap::new(),
        attention: HashSet::new(),
        policy: settings.queue_policy,
        topic_prefetch: settings.topic_prefetch,
        message_prefix: message_id_prefix(),
        next_message: 0,
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
    };
    router.recover(settings.recovered)?;
    let task = tokio::spawn(router.run(commands_rx));
    Ok((handle, task))
}

/// A prefix that keeps message ids unique across restarts: the start time.
fn message_id_prefix() -> String {
    format!("{:x}-", epoch_ms())
}

/// Who subscribes, and how its deliveries are acknowledged.
#[derive(Debug, Clone)]
struct Subscribing {
    session: SessionId,
    id: Arc<str>,
    ack: AckMode,
    /// `prefetch-count`, if given.
    prefetch: Option<usize>,
}

/// What the router keeps per connected session.
struct SessionEntry {
    outbound: OutboundSender,
    version: Version,
    subscriptions: HashMap<Arc<str>, SubscriptionEntry>,
    /// Unsettled deliveries' ack ids → their subscription.
    ack_index: HashMap<String, Arc<str>>,
    /// Reply queues this session made with `reply-to:/temp-queue/...`.
    reply_queues: Vec<String>,
    /// Durable subscriptions this session created (`StateCaps`).
    durables_created: usize,
    /// RECEIPTs of this session waiting for the store; while any wait, later
    /// ones wait too, so that RECEIPTs keep their order.
    held_receipts: Arc<AtomicUsize>,
}

/// One subscription's routing target and its unsettled deliveries.
struct SubscriptionEntry {
    target: Target,
    ack: AckMode,
    /// Most unsettled deliveries (client ack modes).
    prefetch: usize,
    /// Unsettled deliveries in delivery order (client ack modes only).
    unacked: VecDeque<Unacked>,
}

enum Target {
    Topic {
        pattern: Vec<PatternWord>,
        subscriber: Arc<Subscriber>,
    },
    Queue(String),
}

/// A delivery awaiting ACK or NACK.
struct Unacked {
    ack_id: String,
    message: QueuedMessage,
    /// The queue it came from; `None` for topic deliveries (nothing to return).
    queue: Option<String>,
}

struct Router {
    /// Slow-consumer rules: pattern → whether it means `drop-oldest`.
    drop_oldest_rules: Vec<(Vec<PatternWord>, bool)>,
    drop_oldest_default: bool,
    max_unacked_per_connection: usize,
    queue_memory: Arc<QueueMemory>,
    /// Keyed by connection and subscription id.
    topics: TopicTrie<(SessionId, Arc<str>), Arc<Subscriber>>,
    sessions: HashMap<SessionId, SessionEntry>,
    queues: HashMap<String, Queue>,
    /// Queues to revisit on the next tick: messages waiting for consumer
    /// credit, or NACKed messages waiting out a delay.
    attention: HashSet<String>,
    policy: QueuePolicy,
    topic_prefetch: usize,
    message_prefix: String,
    next_message: u64,
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
    /// Caps on state keyed by names clients choose (`caps.rs`).
    caps: StateCaps,
    /// Entries of every session's `subscriptions`, reply queues' included.
    subscription_count: usize,
    /// Reply queues of every session.
    reply_queue_count: usize,
}

impl Router {
    async fn run(mut self, mut commands_rx: mpsc::Receiver<Queued>) {
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
                _ = tick.tick(), if !self.attention.is_empty() || store_failing => {
                    self.revisit_queues();
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

    /// Rebuilds stored queues and durable subscriptions at start.
    fn recover(&mut self, recovered: Vec<StoredQueue>) -> Result<(), String> {
        let (mut queues, mut messages) = (0, 0);
        for stored in recovered {
            let definition = stored.definition;
            let arguments = QueueArguments {
                message_ttl: definition.message_ttl_ms.map(Duration::from_millis),
                max_length: definition
                    .max_length
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                dead_letter: definition.dead_letter.clone(),
                ..QueueArguments::default()
            };
            let settings = self.policy.settings_for(&definition.name, &arguments);
            let mut queue =
                Queue::new(definition.name.clone(), settings, self.queue_memory.clone());
            queue.store_id = Some(stored.id);
            self.next_queue_id = self.next_queue_id.max(stored.id + 1);
            for message in stored.messages {
                self.next_sequence = self.next_sequence.max(message.sequence);
                messages += 1;
                queue.restore(QueuedMessage {
                    message: Arc::new(message.message),
                    deliveries: message.deliveries,
                    sequence: Some(message.sequence),
                });
            }
            if let Some(binding) = definition.binding {
                let pattern = destination::topic_pattern(&binding, &self.destination_limits)
                    .map_err(|e| {
                        format!("stored durable subscription {}: {}", definition.name, e.0)
                    })?;
                let bound: Arc<str> = definition.name.clone().into();
                self.durables.insert(&pattern, bound.clone(), bound);
                self.durable_bindings
                    .insert(definition.name.clone(), binding);
                if let Some(owner) = &definition.owner {
                    let owner = Principal::from_record(owner).ok_or_else(|| {
                        format!(
                            "stored durable subscription {}: unknown owner '{owner}'",
                            definition.name
                        )
                    })?;
                    self.durable_owners.insert(definition.name.clone(), owner);
                }
            }
            self.queues.insert(definition.name, queue);
            queues += 1;
        }
        if queues > 0 {
            tracing::info!(queues, messages, "recovered from the store");
        }
        Ok(())
    }

    /// Queues a store op (when anything is stored).
    fn store_op(&mut self, op: StoreOp) {
        if !self.store_enabled {
            return;
        }
        if !matches!(op, StoreOp::Delivered { .. }) {
            self.durable_ops += 1;
        }
        self.batch.ops.push(op);
    }

    fn apply(&mut self, command: RouterCommand) {
        // A command that changed the store gets its RECEIPT after the sync.
        let mark = self.durable_ops;
        match command {
            RouterCommand::Attach {
                session,
                outbound,
                version,
            } => {
                self.sessions.insert(
                    session,
                    SessionEntry {
                        outbound,
                        version,
                        subscriptions: HashMap::new(),
                        ack_index: HashMap::new(),
                        reply_queues: Vec::new(),
                        durables_created: 0,
                        held_receipts: Arc::new(AtomicUsize::new(0)),
                    },
                );
            }
            RouterCommand::Subscribe {
                session,
                id,
                target,
                ack,
                prefetch,
                arguments,
                durable,
                receipt,
            } => {
                if !self.admit_subscription(session, &id, receipt.as_deref()) {
                    return;
                }
                let queue = match (&target, &durable) {
                    (_, Some(durable)) => Some(format!("{DURABLE_PREFIX}{}", durable.key)),
                    (SubscribeTarget::Queue(name), None) => Some(name.clone()),
                    (SubscribeTarget::Topic(_), None) => None,
                };
                let who = Subscribing {
                    session,
                    id,
                    ack,
                    prefetch,
                };
                let subscribed = match (target, durable) {
                    (SubscribeTarget::Topic(pattern), Some(durable)) => {
                        self.subscribe_durable(who, &durable, pattern, receipt.as_deref())
                    }
                    (target, _) => self.subscribe(who, target, &arguments, receipt.as_deref()),
                };
                if subscribed {
                    let durable = self.durable_ops != mark;
                    self.receipt(session, receipt, durable);
                    // The RECEIPT says "active"; a backlog follows it.
                    if let Some(name) = queue {
                        self.dispatch(&name);
                    }
                }
            }
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
            RouterCommand::Receipt { session, receipt } => {
                self.receipt(session, Some(receipt), false)
            }
            RouterCommand::Detach { session, receipt } => {
                self.receipt(session, receipt, false);
                self.remove_session(session);
            }
        }
    }

    /// Adds a subscription; false (after failing the session) if refused.
    fn subscribe(
        &mut self,
        who: Subscribing,
        target: SubscribeTarget,
        arguments: &QueueArguments,
        receipt: Option<&str>,
    ) -> bool {
        let Subscribing {
            session,
            id,
            ack,
            prefetch,
        } = who.clone();
        let drop_oldest = match &target {
            SubscribeTarget::Topic(pattern) => self.drops_oldest(pattern),
            SubscribeTarget::Queue(_) => false,
        };
        let Some(entry) = self.sessions.get_mut(&session) else {
            return false;
        };
        match target {
            SubscribeTarget::Topic(pattern) => {
                let subscriber = Arc::new(Subscriber {
                    session,
                    id: id.clone(),
                    ack,
                    version: entry.version,
                    outbound: entry.outbound.clone(),
                    drop_oldest,
                });
                self.topics.insert(
                    &pattern,
                    (subscriber.session, subscriber.id.clone()),
                    subscriber.clone(),
                );
                self.subscription_count += 1;
                entry.subscriptions.insert(
                    id,
                    SubscriptionEntry {
                        target: Target::Topic {
                            pattern,
                            subscriber,
                        },
                        ack,
                        prefetch: prefetch.unwrap_or(self.topic_prefetch),
                        unacked: VecDeque::new(),
                    },
                );
                true
            }
            SubscribeTarget::Queue(name) => self.subscribe_queue(who, name, arguments, receipt),
        }
    }

    /// Ends a subscription; returns the queue it consumed from, if any.
    fn unsubscribe(&mut self, session: SessionId, id: &str) -> Option<String> {
        let removed = self
            .sessions
            .get_mut(&session)
            .and_then(|entry| entry.subscriptions.remove(id))?;
        self.subscription_count = self.subscription_count.saturating_sub(1);
        let queue = match &removed.target {
            Target::Queue(name) => Some(name.clone()),
            Target::Topic { .. } => None,
        };
        self.end_subscription(session, id, removed);
        queue
    }

    /// Unhooks a removed subscription and returns its unsettled messages.
    fn end_subscription(&mut self, session: SessionId, id: &str, subscription: SubscriptionEntry) {
        if let Some(entry) = self.sessions.get_mut(&session) {
            for unacked in &subscription.unacked {
                entry.ack_index.remove(&unacked.ack_id);
            }
        }
        match &subscription.target {
            Target::Topic {
                pattern,
                subscriber,
            } => {
                self.topics
                    .remove(pattern, &(subscriber.session, subscriber.id.clone()));
            }
            Target::Queue(name) => self.remove_consumer(name, session, id),
        }
        self.return_unacked(subscription.unacked);
    }

    /// Sends RECEIPT `receipt` to `session`, if both exist: at once, or
    /// after the store's next sync when `durable` or when earlier RECEIPTs
    /// of the session are still waiting for one.
    fn receipt(&mut self, session: SessionId, receipt: Option<String>, durable: bool) {
        let Some(receipt) = receipt else { return };
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if durable || entry.held_receipts.load(Ordering::Acquire) > 0 {
            entry.held_receipts.fetch_add(1, Ordering::AcqRel);
            self.batch.receipts.push(PendingReceipt {
                outbound: entry.outbound.clone(),
                receipt,
                version: entry.version,
                durable,
                held: entry.held_receipts.clone(),
            });
            return;
        }
        let frame = OutFrame::new(frames::receipt(entry.version, &receipt), true);
        if entry.outbound.push(frame) == Err(PushError::SlowConsumer) {
            self.remove_session(session);
        }
    }

    /// Ends `session` with an ERROR that only the router could detect.
    fn fail(
        &mut self,
        session: SessionId,
        message: String,
        receipt: Option<&str>,
        reason: CloseReason,
    ) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        debug!(session = %session, %message, "failing session");
        let bytes = frames::error(
            entry.version,
            &frames::ErrorFrame {
                message: &message,
                receipt_id: receipt,
                ..frames::ErrorFrame::default()
            },
        );
        // Ignoring a full queue: the connection is closing either way.
        let _ = entry.outbound.push(OutFrame {
            bytes,
            text: true,
            close: Some(Box::new(CloseAfter { reason, message })),
        });
        self.remove_session(session);
    }

    fn remove_session(&mut self, session: SessionId) {
        let Some(mut entry) = self.sessions.remove(&session) else {
            return;
        };
        let reply_queues = std::mem::take(&mut entry.reply_queues);
        self.subscription_count = self
            .subscription_count
            .saturating_sub(entry.subscriptions.len());
        self.reply_queue_count = self.reply_queue_count.saturating_sub(reply_queues.len());
        for (id, subscription) in entry.subscriptions.drain() {
            self.end_subscription(session, &id, subscription);
        }
        for name in reply_queues {
            self.queues.remove(&name);
            self.attention.remove(&name);
        }
    }

    /// The slow-consumer policy of a topic subscription: the first rule whose
    /// pattern matches the subscription's destination (its wildcards read as
    /// plain words), else the default.
    fn drops_oldest(&self, pattern: &[PatternWord]) -> bool {
        let words: Vec<&str> = pattern
            .iter()
            .map(|word| match word {
                PatternWord::Exact(word) => &**word,
                PatternWord::One => "*",
                PatternWord::Many => "#",
            })
            .collect();
        self.drop_oldest_rules
            .iter()
            .find(|(rule, _)| destination::pattern_matches(rule, &words))
            .map_or(self.drop_oldest_default, |(_, drop_oldest)| *drop_oldest)
    }

    /// The next message id.
    fn next_message_id(&mut self) -> Arc<str> {
        self.next_message += 1;
        format!("{}{}", self.message_prefix, self.next_message).into()
    }

    /// Logs once per slow session and removes it.
    fn cut_off_slow(&mut self, slow: Vec<SessionId>) {
        for session in slow {
            if self.sessions.contains_key(&session) {
                warn!(session = %session, "slow consumer: outbound budget exceeded, disconnecting");
                self.remove_session(session);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::QueueArguments;
    use bytes::Bytes;

    fn publish(body_bytes: usize) -> RouterCommand {
        RouterCommand::Publish {
            session: SessionId(1),
            publication: Publication {
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
