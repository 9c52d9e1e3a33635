//! The queue engine seam: where a session's queue operations go when
//! queues do not live in this process's router.
//!
//! With `[cluster] engine = "local"` there is no [`QueueEngine`] and every
//! queue operation goes to the router as it always has. With `"nats"` the
//! cluster module supplies one (queues on JetStream) and the session hands
//! it SENDs to `/queue/...`, queue SUBSCRIBEs, the ACKs and NACKs of its
//! deliveries, UNSUBSCRIBEs of its subscriptions and the session's end.
//! The trait is defined here, below the session and the cluster, so that
//! neither the session nor the router knows NATS exists.

use super::settings::QueueArguments;
use crate::model::ack_mode::AckMode;
use crate::model::close::CloseReason;
use crate::model::destination::PatternWord;
use crate::model::message::Message;
use crate::model::session_id::SessionId;
use crate::outbound::OutboundSender;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use stomp_protocol::Version;

/// What an engine operation returns: a boxed future (the trait is used as
/// a trait object).
pub type EngineFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The second stage of [`QueueEngine::publish`]: the message is on its way
/// to the engine; this resolves once the engine has stored it (`Err` is
/// the ERROR message for the client). It borrows nothing, so a session can
/// keep it while it reads on (pipelined confirmations).
pub type EngineAck = EngineFuture<'static, Result<(), String>>;

/// The start of an engine ERROR that is the queue's own refusal (full,
/// exclusive), worded as on one node: `queue '/queue/<name>' is ...`.
pub const REFUSAL: &str = "queue '";

/// How the connection ends after the engine's ERROR `message`: a refusal
/// by the queue's own settings ([`REFUSAL`]: full, exclusive) is the
/// client's doing, a policy violation as on one node; anything else is the
/// engine's failure.
pub fn close_reason(message: &str) -> CloseReason {
    if message.starts_with(REFUSAL) {
        CloseReason::PolicyViolation
    } else {
        CloseReason::InternalError
    }
}

/// A SEND to a queue, as the engine stores it.
#[derive(Debug)]
pub struct QueueSend {
    /// Our `message-id`.
    pub id: Arc<str>,
    /// The queue's destination (`/queue/<name>`).
    pub destination: String,
    /// Headers passed on, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Expiry, in ms since the Unix epoch.
    pub expires_at: Option<u64>,
    /// The engine's duplicate-detection id: a retried SEND with the same
    /// id is stored once.
    pub dedup_id: String,
    /// Wait for the engine to have stored it (a RECEIPT or a persistent
    /// SEND); otherwise the SEND is handed over and not waited for.
    pub confirm: bool,
    /// Its queue arguments: the queue's if this SEND creates it.
    pub arguments: QueueArguments,
}

/// A queue SUBSCRIBE, as the engine serves it.
#[derive(Debug)]
pub struct QueueSubscribe {
    /// The session.
    pub session: SessionId,
    /// The client's subscription id.
    pub id: Arc<str>,
    /// The queue's destination (`/queue/<name>`).
    pub destination: String,
    /// How deliveries are settled.
    pub ack: AckMode,
    /// Unsettled deliveries at most (client and client-individual), and
    /// messages fetched at a time.
    pub prefetch: usize,
    /// Where the MESSAGE frames go.
    pub outbound: OutboundSender,
    /// The session's STOMP version (frame escaping).
    pub version: Version,
    /// Its queue arguments: the queue's if this SUBSCRIBE creates it.
    pub arguments: QueueArguments,
    /// Fired (or dropped) by the session once the SUBSCRIBE's RECEIPT is
    /// out: no MESSAGE may overtake it.
    pub start: tokio::sync::oneshot::Receiver<()>,
}

/// A durable topic SUBSCRIBE, as the engine serves it: a queue-like
/// subscription on the topic's destination, kept under `key`.
#[derive(Debug)]
pub struct DurableSubscribe {
    /// The subscription as for a queue (its destination is the topic's).
    pub subscribe: QueueSubscribe,
    /// `<client-id>/<name>`: what names it across connections and nodes.
    pub key: String,
    /// Its owner (`Principal::to_record`): anyone else gets ERROR.
    pub owner: String,
    /// The topic pattern it collects.
    pub pattern: Vec<PatternWord>,
    /// Its pattern names one destination a `[[topics.rules]]` rule makes a
    /// live feed: served from the engine's feed stream, with each
    /// message's `x-offset` and `x-epoch`.
    pub feed: bool,
}

/// Why the engine refused a durable SUBSCRIBE.
#[derive(Debug)]
pub enum DurableRefusal {
    /// Not the client's to use (another principal's): close 1008.
    Policy(String),
    /// The engine failed (unreachable, full).
    Engine(String),
}

/// How an ACK or NACK names a delivery.
#[derive(Debug, Clone, Copy)]
pub enum DeliveryKey<'a> {
    /// STOMP 1.2: the MESSAGE's `ack` header.
    AckId(&'a str),
    /// STOMP 1.0/1.1: the MESSAGE's `message-id`.
    MessageId(&'a str),
}

/// One of the engine's queues (or durable topic subscriptions) as the
/// admin API and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineQueue {
    /// `/queue/<name>`, or `/durable/<client-id>/<name>`.
    pub name: String,
    /// A durable topic subscription: the topic (pattern) it is bound to.
    pub durable_topic: Option<String>,
    /// Messages not yet delivered (JetStream's `num_pending`).
    pub pending: u64,
    /// Delivered and not acknowledged, on every node (`num_ack_pending`;
    /// hand-backs waiting to be delivered again included).
    pub ack_pending: u64,
    /// Messages delivered more than once and not yet acknowledged
    /// (`num_redelivered`).
    pub redelivered: u64,
    /// Pulls waiting, from every node's subscribers (`num_waiting`).
    pub waiting_pulls: u64,
    /// This node's subscribers of it.
    pub local_consumers: usize,
}

/// Queues kept outside this process (JetStream, with `engine = "nats"`).
pub trait QueueEngine: Send + Sync {
    /// Its queues as last read from the engine (read at most every few
    /// seconds, whoever asks), with this node's subscribers counted now.
    fn queues(&self) -> EngineFuture<'_, Vec<EngineQueue>> {
        Box::pin(async { Vec::new() })
    }

    /// Hands a queue SEND to the engine, in the order of the calls; returns
    /// once it is sent, with the future of its confirmation (already
    /// resolved when `confirm` is false: a failure then can only be
    /// logged). `Err` is the ERROR message for the client.
    fn publish(&self, send: QueueSend) -> EngineFuture<'_, Result<EngineAck, String>>;

    /// Stores a COMMIT's queue SENDs, in order, all or none; returns once
    /// stored (`Err` is the ERROR message: then none is).
    fn publish_batch(&self, sends: Vec<QueueSend>) -> EngineFuture<'_, Result<(), String>>;

    /// This node's mark in the names of its reply queues
    /// (`reply-to:/temp-queue/`), so that a reply SENT on any node finds
    /// its way here; `None`: replies stay on the node they are sent on.
    fn reply_node(&self) -> Option<&str>;

    /// Whether `destination` (a `/reply-queue/` name) is another node's
    /// reply queue: then a SEND to it goes to [`send_reply`](Self::send_reply).
    fn reply_elsewhere(&self, destination: &str) -> bool;

    /// Passes a SEND to another node's reply queue on to that node (at
    /// most once); `Err` is the ERROR message.
    fn send_reply(&self, message: Message) -> EngineFuture<'_, Result<(), String>>;

    /// Starts serving a queue subscription; `Err` is the ERROR message.
    fn subscribe(&self, subscribe: QueueSubscribe) -> EngineFuture<'_, Result<(), String>>;

    /// Starts serving a durable topic subscription, creating (or re-binding)
    /// it first.
    fn subscribe_durable(
        &self,
        subscribe: DurableSubscribe,
    ) -> EngineFuture<'_, Result<(), DurableRefusal>>;

    /// Ends one of its durable subscriptions as `unsubscribe` does, and
    /// deletes it with what it collected; false if it is not the engine's
    /// durable subscription (`Err` is the ERROR message).
    fn remove_durable<'a>(
        &'a self,
        session: SessionId,
        id: &'a str,
    ) -> EngineFuture<'a, Result<bool, String>>;

    /// Whether `key` names one of the session's unsettled deliveries of
    /// this engine.
    fn holds(&self, session: SessionId, key: DeliveryKey<'_>) -> bool;

    /// ACK (or NACK) of one of its deliveries; `None` if the engine does
    /// not know the delivery (the router may).
    fn settle<'a>(
        &'a self,
        session: SessionId,
        key: DeliveryKey<'a>,
        nack: bool,
    ) -> EngineFuture<'a, Option<Result<(), String>>>;

    /// Ends one of its subscriptions, handing its unsettled deliveries back
    /// at once; false if the subscription is not the engine's.
    fn unsubscribe<'a>(&'a self, session: SessionId, id: &'a str) -> EngineFuture<'a, bool>;

    /// The session is over: every subscription ends as by `unsubscribe`.
    fn detach(&self, session: SessionId) -> EngineFuture<'_, ()>;

    /// At the start of a shutdown, before the sessions are told: no MESSAGE
    /// goes out any more, and hand-backs wait for [`flush`](Self::flush).
    fn quiesce(&self);

    /// At shutdown, after the sessions' ends: ends what subscriptions are
    /// left, waits until the engine hands this process nothing more (what
    /// still arrives is handed back), and sends what is still buffered, so
    /// that every hand-back reaches it before the process exits.
    fn flush(&self) -> EngineFuture<'_, ()>;

    /// Sends what is buffered for the engine and waits until it is on the
    /// way to the server: before the RECEIPT of an ACK or NACK of the
    /// engine's deliveries (or of a reply to another node), so that it
    /// precedes what the client does after it. Not the shutdown step
    /// ([`flush`](Self::flush)).
    fn sent(&self) -> EngineFuture<'_, ()>;
}
