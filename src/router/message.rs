//! Messages as the router holds them, and their encoding as MESSAGE frames.
//!
//! A topic message goes to many subscribers whose frames differ only by
//! version (escaping), `subscription` and `ack`. [`FanOut`] encodes once per
//! distinct combination and shares the bytes: stompjs numbers subscriptions
//! `sub-0, sub-1, ...` on every connection, so most subscribers of a topic
//! share one encoding.

use crate::model::destination::SendTarget;
use crate::model::message::{headers_size, Message};
use crate::outbound::OutFrame;
use crate::queue::QueueArguments;
use bytes::Bytes;
use std::sync::Arc;
use stomp_protocol::{Command, FrameEncoder, Version};

/// A SEND as the session hands it to the router, validated.
#[derive(Debug)]
pub struct Publication {
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
/// they concerned the SEND itself.
pub const NOT_PASSED_ON: [&str; 7] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "content-length",
    "receipt",
    "transaction",
];

impl Publication {
    /// What it weighs against byte bounds (transactions, the router's
    /// channel): body, headers and destination.
    pub fn size(&self) -> usize {
        self.body.len() + headers_size(&self.headers) + self.destination.len()
    }
}

/// What differs between deliveries of one message.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The subscription's id.
    pub subscription: &'a str,
    /// The `ack` header, when an ACK is expected.
    pub ack_id: Option<&'a str>,
    /// Deliveries before this one (0 for a first delivery).
    pub previous_deliveries: u32,
}

/// The `ack` header value of `message_id` delivered to `subscription`:
/// unique among a connection's unsettled deliveries, and equal for equal
/// subscription ids so that topic frames can still be shared.
pub fn ack_id(message_id: &str, subscription: &str) -> String {
    format!("{message_id}@{subscription}")
}

/// Encodes one MESSAGE frame.
pub fn encode(message: &Message, delivery: Delivery, version: Version) -> OutFrame {
    let headers_len: usize = message
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    let capacity = 128
        + message.destination.len()
        + 2 * delivery.subscription.len()
        + 3 * message.id.len()
        + headers_len
        + message.body.len();
    let mut frame = FrameEncoder::begin(Command::Message, version, capacity);
    frame.header("destination", &message.destination);
    frame.header("message-id", &message.id);
    frame.header("subscription", delivery.subscription);
    if let Some(ack_id) = delivery.ack_id {
        frame.header("ack", ack_id);
    }
    if delivery.previous_deliveries > 0 {
        frame.header("redelivered", "true");
        frame.header_number("x-delivery-count", u64::from(delivery.previous_deliveries));
    }
    for (name, value) in &message.headers {
        frame.header(name, value);
    }
    OutFrame {
        bytes: frame.finish(true, &message.body),
        text: message.text,
        close: None,
    }
}

/// Most distinct encodings kept while fanning out one message; past this,
/// frames are encoded without caching rather than searching a long list.
const MAX_CACHED_ENCODINGS: usize = 16;

/// Encodes one topic message for many subscribers, sharing equal frames.
pub struct FanOut<'a> {
    message: &'a Message,
    cache: Vec<(Version, &'a str, bool, OutFrame)>,
}

impl<'a> FanOut<'a> {
    /// Prepares to encode `message`.
    pub fn new(message: &'a Message) -> Self {
        FanOut {
            message,
            cache: Vec::new(),
        }
    }

    /// The frame for subscription `subscription` of a `version` session.
    pub fn frame_for(
        &mut self,
        version: Version,
        subscription: &'a str,
        with_ack: bool,
    ) -> OutFrame {
        let key = (version, subscription, with_ack);
        if let Some((_, _, _, frame)) = self.cache.iter().find(|(v, s, a, _)| (*v, *s, *a) == key) {
            return frame.clone();
        }
        let ack = with_ack.then(|| ack_id(&self.message.id, subscription));
        let frame = encode(
            self.message,
            Delivery {
                subscription,
                ack_id: ack.as_deref(),
                previous_deliveries: 0,
            },
            version,
        );
        if self.cache.len() < MAX_CACHED_ENCODINGS {
            self.cache
                .push((version, subscription, with_ack, frame.clone()));
        }
        frame
    }
}
