//! The router: the single owner of all subscriptions, fed by one bounded channel.
//!
//! Sessions send [`RouterCommand`]s through a [`RouterHandle`]; the router task
//! applies them in order and pushes encoded frames into connections' outbound
//! queues without ever waiting on a connection. Because every command of a
//! session passes through this one channel in order, a RECEIPT that the router
//! emits follows everything the session sent before it, and each subscriber
//! sees each publisher's messages in publishing order.
//!
//! The router knows STOMP frames, not WebSockets.

pub mod destination;
pub mod fanout;
pub mod subscription;
pub mod topic_trie;

use crate::outbound::{OutFrame, OutboundQueue, PushError};
use destination::PatternWord;
use fanout::{FanOut, Publication};
use std::collections::HashMap;
use std::sync::Arc;
use stomp_protocol::{Command, FrameEncoder, Version};
pub use subscription::{AckMode, SessionId, Subscriber};
use tokio::sync::mpsc;
use topic_trie::TopicTrie;
use tracing::{debug, warn};

/// Most commands the router takes from its channel before it looks again;
/// draining in bulk keeps the per-command overhead low under load.
const BATCH: usize = 256;

/// What a session asks of the router. `receipt` is answered with a RECEIPT
/// once the command has taken effect.
#[derive(Debug)]
pub enum RouterCommand {
    /// A session has connected.
    Attach {
        /// The session.
        session: SessionId,
        /// Where its frames go.
        outbound: OutboundQueue,
        /// Its negotiated version.
        version: Version,
    },
    /// Add a subscription.
    Subscribe {
        /// The session.
        session: SessionId,
        /// The client's subscription id.
        id: Arc<str>,
        /// The parsed pattern.
        pattern: Vec<PatternWord>,
        /// Ack mode.
        ack: AckMode,
        /// Receipt to send once active.
        receipt: Option<String>,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// The session.
        session: SessionId,
        /// The client's subscription id.
        id: Arc<str>,
        /// Receipt to send once removed.
        receipt: Option<String>,
    },
    /// Deliver a message to every matching subscription.
    Publish {
        /// The publishing session.
        session: SessionId,
        /// The message.
        publication: Publication,
        /// Receipt to send once routed.
        receipt: Option<String>,
    },
    /// Only a RECEIPT, after everything the session sent before.
    Receipt {
        /// The session.
        session: SessionId,
        /// The receipt id.
        receipt: String,
    },
    /// The session is over: drop its subscriptions and its outbound queue
    /// (after the receipt, if any), which lets the connection finish writing.
    Detach {
        /// The session.
        session: SessionId,
        /// DISCONNECT's receipt.
        receipt: Option<String>,
    },
}

/// A session's way to the router.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    /// The router's input. Bounded: a session waits when the router is behind.
    commands_tx: mpsc::Sender<RouterCommand>,
}

/// The router has stopped (only during shutdown).
#[derive(Debug, Clone, Copy)]
pub struct RouterGone;

impl RouterHandle {
    /// Sends a command, waiting while the router's queue is full.
    pub async fn send(&self, command: RouterCommand) -> Result<(), RouterGone> {
        self.commands_tx.send(command).await.map_err(|_| RouterGone)
    }

    /// Sends a command without waiting; used when a session ends inside a
    /// drop path. Returns whether it was queued.
    pub fn try_send(&self, command: RouterCommand) -> bool {
        self.commands_tx.try_send(command).is_ok()
    }
}

/// Settings the router needs.
#[derive(Debug, Clone)]
pub struct RouterSettings {
    /// Capacity of the command channel.
    pub queue_depth: usize,
}

/// Starts the router task.
pub fn spawn_router(settings: RouterSettings) -> (RouterHandle, tokio::task::JoinHandle<()>) {
    let (commands_tx, commands_rx) = mpsc::channel(settings.queue_depth);
    let router = Router {
        topics: TopicTrie::default(),
        sessions: HashMap::new(),
        message_prefix: message_id_prefix(),
        next_message: 0,
    };
    let task = tokio::spawn(router.run(commands_rx));
    (RouterHandle { commands_tx }, task)
}

/// A prefix that keeps message ids unique across restarts: the start time.
fn message_id_prefix() -> String {
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{started:x}-")
}

/// What the router keeps per connected session.
struct SessionEntry {
    outbound: OutboundQueue,
    version: Version,
    /// The session's subscriptions by client id, with their patterns (for removal).
    subscriptions: HashMap<Arc<str>, (Vec<PatternWord>, Arc<Subscriber>)>,
}

struct Router {
    topics: TopicTrie<Arc<Subscriber>>,
    sessions: HashMap<SessionId, SessionEntry>,
    message_prefix: String,
    next_message: u64,
}

impl Router {
    async fn run(mut self, mut commands_rx: mpsc::Receiver<RouterCommand>) {
        let mut batch = Vec::with_capacity(BATCH);
        while commands_rx.recv_many(&mut batch, BATCH).await > 0 {
            for command in batch.drain(..) {
                self.apply(command);
            }
        }
        debug!("router stopped: every session handle is gone");
    }

    fn apply(&mut self, command: RouterCommand) {
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
                    },
                );
            }
            RouterCommand::Subscribe {
                session,
                id,
                pattern,
                ack,
                receipt,
            } => {
                if let Some(entry) = self.sessions.get_mut(&session) {
                    let subscriber = Arc::new(Subscriber {
                        session,
                        id: id.clone(),
                        ack,
                        version: entry.version,
                        outbound: entry.outbound.clone(),
                    });
                    self.topics.insert(&pattern, subscriber.clone());
                    entry.subscriptions.insert(id, (pattern, subscriber));
                }
                self.receipt(session, receipt);
            }
            RouterCommand::Unsubscribe {
                session,
                id,
                receipt,
            } => {
                if let Some(entry) = self.sessions.get_mut(&session) {
                    if let Some((pattern, subscriber)) = entry.subscriptions.remove(&id) {
                        self.topics
                            .remove(&pattern, |s| Arc::ptr_eq(s, &subscriber));
                    }
                }
                self.receipt(session, receipt);
            }
            RouterCommand::Publish {
                session,
                publication,
                receipt,
            } => {
                self.publish(&publication);
                self.receipt(session, receipt);
            }
            RouterCommand::Receipt { session, receipt } => self.receipt(session, Some(receipt)),
            RouterCommand::Detach { session, receipt } => {
                self.receipt(session, receipt);
                self.remove_session(session);
            }
        }
    }

    fn publish(&mut self, publication: &Publication) {
        self.next_message += 1;
        let message_id = format!("{}{}", self.message_prefix, self.next_message);
        let mut matched: Vec<&Arc<Subscriber>> = Vec::new();
        self.topics.matches(&publication.words, &mut matched);
        if matched.len() > 1 {
            // A pattern can match along several paths; deliver once per subscription.
            matched.sort_unstable_by_key(|s| Arc::as_ptr(s));
            matched.dedup_by(|a, b| Arc::ptr_eq(a, b));
        }
        let mut fan_out = FanOut::new(publication, &message_id);
        let mut slow = Vec::new();
        for subscriber in matched {
            let frame = fan_out.frame_for(subscriber);
            if subscriber.outbound.push(frame) == Err(PushError::SlowConsumer) {
                slow.push(subscriber.session);
            }
        }
        for session in slow {
            if self.sessions.contains_key(&session) {
                warn!(session = %session, "slow consumer: outbound budget exceeded, disconnecting");
                self.remove_session(session);
            }
        }
    }

    /// Sends RECEIPT `receipt` to `session`, if both exist.
    fn receipt(&mut self, session: SessionId, receipt: Option<String>) {
        let Some(receipt) = receipt else { return };
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        let mut frame = FrameEncoder::begin(Command::Receipt, entry.version, 32 + receipt.len());
        frame.header("receipt-id", &receipt);
        let frame = OutFrame {
            bytes: frame.finish(false, b""),
            text: true,
        };
        if entry.outbound.push(frame) == Err(PushError::SlowConsumer) {
            self.remove_session(session);
        }
    }

    fn remove_session(&mut self, session: SessionId) {
        if let Some(entry) = self.sessions.remove(&session) {
            for (pattern, subscriber) in entry.subscriptions.into_values() {
                self.topics
                    .remove(&pattern, |s| Arc::ptr_eq(s, &subscriber));
            }
        }
    }
}
