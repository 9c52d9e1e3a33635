//! A SEND as the session hands it on: [`Publication`], validated, with the
//! headers a MESSAGE does not copy. MESSAGE encoding is `fanout::encode`.

use crate::model::destination::SendTarget;
use crate::model::message::headers_size;
use crate::queue::QueueArguments;
use bytes::Bytes;
use std::sync::Arc;

/// A SEND as the session hands it to the router, validated.
#[derive(Debug)]
pub struct Publication {
    /// Its `message-id`, given by the session (`model::message::MessageIds`).
    pub id: Arc<str>,
    /// A topic publication the session has already pushed to the shared
    /// index's direct subscribers: the router delivers only to its own
    /// (client-ack and durable subscriptions).
    pub delivered_direct: bool,
    /// Where it goes.
    pub target: SendTarget,
    /// The SEND's `destination`, as sent (echoed on MESSAGE).
    pub destination: String,
    /// Headers passed on to MESSAGE, in order (not the server-owned ones).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// When the message expires, in ms since the Unix epoch.
    pub expires_at: Option<u64>,
    /// RabbitMQ-style queue arguments (apply when the SEND creates the queue).
    pub queue_arguments: QueueArguments,
    /// `reply-to:/temp-queue/...`: the private reply queue to create first.
    pub reply_queue: Option<ReplyQueue>,
    /// `persistent:true`: stored in queues and durable subscriptions.
    pub persistent: bool,
}

/// A connection's private reply queue, made by `reply-to:/temp-queue/NAME`.
#[derive(Debug, Clone)]
pub struct ReplyQueue {
    /// `/temp-queue/NAME`: the `subscription` of the replies.
    pub subscription: Arc<str>,
    /// `/reply-queue/...`: what responders send to.
    pub queue: String,
}

/// Headers of SEND that a MESSAGE must not copy: the server owns them, or
/// they concerned the SEND itself. The live-feed headers are the broker's
/// too: a publisher must not forge a destination's offsets (the first
/// repeated header wins, so a forged one would hide the broker's).
pub const NOT_PASSED_ON: [&str; 11] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "content-length",
    "receipt",
    "transaction",
    "x-offset",
    "x-epoch",
    "x-retained",
    "x-recovered",
];

impl Publication {
    /// What it weighs against byte bounds (transactions, the router's
    /// channel): body, headers and destination.
    pub fn size(&self) -> usize {
        self.body.len() + headers_size(&self.headers) + self.destination.len()
    }
}
