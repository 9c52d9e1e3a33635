//! What sessions send the router: [`RouterCommand`]s through a bounded
//! channel ([`RouterHandle`]), each SEND holding its share of
//! `router.max_queued_bytes` until the router has applied it.

use super::message::Publication;
use super::{AckMode, DurableSubscription, SessionId};
use crate::fanout::StartAt;
use crate::model::destination::SubscribeTarget;
use crate::model::message::{headers_size, Message};
use crate::outbound::OutboundSender;
use crate::queue::QueueArguments;
use std::sync::Arc;
use stomp_protocol::Version;
use tokio::sync::mpsc;

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
        /// Where an auto-ack topic subscription starts (`x-stream-offset`).
        start: StartAt,
        /// `x-max-rate`: at most so many MESSAGEs per second per destination
        /// (auto-ack topic subscriptions).
        max_rate: Option<u32>,
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
    /// A topic message from another broker (through the cluster engine)
    /// for these client-ack topic subscriptions: delivered to them only,
    /// never published again (direct subscribers had it from the engine's
    /// reader already).
    Remote {
        /// The topic's words.
        words: Vec<Box<str>>,
        /// The message, as the other broker published it.
        message: Message,
        /// The client-ack subscriptions (session, id) it is for.
        subscriptions: Vec<(SessionId, Arc<str>)>,
        /// Also for this broker's durable subscriptions matching it: a
        /// live-feed message from the engine's feed stream, which every
        /// node reads once (a plain topic message from another node is
        /// not: its publisher's node had it for its own durables).
        durables: bool,
    },
    /// The subscriber counts of other brokers changed (cluster engine):
    /// every watched `/meta/subscribers/` count is due.
    RemoteCounts,
    /// ACK or NACK.
    Settle {
        /// The session.
        session: SessionId,
        /// What to settle.
        settle: Settle,
        /// Receipt to send once settled.
        receipt: Option<String>,
    },
    /// Make the session's private reply queue, as a publication with
    /// `reply_queue` does, for a queue SEND the queue engine stores.
    ReplyQueue {
        /// The session.
        session: SessionId,
        /// The reply queue.
        reply_queue: super::message::ReplyQueue,
        /// Answered `Ok` once it exists, or with why it is refused (past
        /// the reply queue caps): the session writes that ERROR itself,
        /// after the RECEIPTs of its SENDs still being confirmed.
        made: tokio::sync::oneshot::Sender<Result<(), String>>,
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
    /// Answers `done` once every command the session sent before is
    /// applied: a session that sent the router a SUBSCRIBE, UNSUBSCRIBE or a
    /// whole topic publication waits for this before it next fans out
    /// itself, so that its own publications keep their order and see its
    /// own subscriptions as before.
    Applied {
        /// Answered when applied.
        done: tokio::sync::oneshot::Sender<()>,
    },
    /// What the admin listener reads or asks (`sample.rs`).
    Admin(super::sample::AdminCommand),
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
            RouterCommand::Remote { message, .. } => {
                message.body.len() + headers_size(&message.headers) + message.destination.len()
            }
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
pub(super) struct Queued {
    pub(super) command: RouterCommand,
    /// Released (dropped) by the router after `apply`.
    pub(super) bytes: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A session's way to the router, and the **queue boundary**: where queue
/// messages live and are dispatched from (queues, acks, durable
/// subscriptions, transactions' queue parts) is behind these commands. A
/// second engine for queues (JetStream) would sit behind this handle; the
/// topic boundary is `fanout::TopicExport`.
#[derive(Debug, Clone)]
pub struct RouterHandle {
    /// The router's input. Bounded: a session waits when the router is behind.
    pub(super) commands_tx: mpsc::Sender<Queued>,
    /// Bytes of SEND bodies and headers in commands not yet applied, one
    /// permit per byte (`router.max_queued_bytes`): `channel_capacity` commands
    /// of 1 MiB would be 4 GiB. Sessions acquire before sending, the router
    /// releases after applying; closed never.
    pub(super) queued_bytes: Arc<tokio::sync::Semaphore>,
    /// The semaphore's size: a command larger than all of it takes all of it.
    pub(super) max_queued_bytes: u32,
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
