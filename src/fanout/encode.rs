//! MESSAGE frames: one encoding per delivery for queues, and [`FanOut`] for
//! topic messages.
//!
//! A topic message goes to many subscribers whose frames differ only by
//! version (escaping), `subscription` and `ack`. [`FanOut`] encodes once per
//! distinct combination and shares the bytes: stompjs numbers subscriptions
//! `sub-0, sub-1, ...` on every connection, so most subscribers of a topic
//! share one encoding.

use crate::model::message::Message;
use crate::outbound::OutFrame;
use stomp_protocol::{Command, FrameEncoder, Version};

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

/// A live-feed message's place in its feed: the `x-offset` and `x-epoch`
/// headers of its MESSAGE frames, written into the frame from these (no
/// header strings made on the publishing path).
#[derive(Debug, Clone, Copy)]
pub struct Stamp<'a> {
    /// `x-offset`.
    pub offset: u64,
    /// `x-epoch`.
    pub epoch: &'a str,
}

/// Encodes one MESSAGE frame.
pub fn encode(message: &Message, delivery: Delivery, version: Version) -> OutFrame {
    encode_feed(message, delivery, version, None, &[])
}

/// Encodes one MESSAGE frame of a live feed: `message`'s headers, then
/// `stamp`'s (as if they were the last of them), then `extra` (a snapshot's
/// `x-retained`, `x-recovered`).
pub fn encode_feed(
    message: &Message,
    delivery: Delivery,
    version: Version,
    stamp: Option<Stamp>,
    extra: &[(&str, &str)],
) -> OutFrame {
    let headers_len: usize = message
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .chain(extra.iter().map(|(n, v)| n.len() + v.len() + 2))
        .sum::<usize>()
        + stamp.map_or(0, |s| 40 + s.epoch.len());
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
    if let Some(stamp) = stamp {
        frame.header_number("x-offset", stamp.offset);
        frame.header("x-epoch", stamp.epoch);
    }
    for (name, value) in extra {
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
    stamp: Option<Stamp<'a>>,
    cache: Vec<(Version, &'a str, bool, OutFrame)>,
}

impl<'a> FanOut<'a> {
    /// Prepares to encode `message`.
    pub fn new(message: &'a Message) -> Self {
        Self::stamped(message, None)
    }

    /// Prepares to encode `message` of a live feed, placed at `stamp`.
    pub fn stamped(message: &'a Message, stamp: Option<Stamp<'a>>) -> Self {
        FanOut {
            message,
            stamp,
            cache: Vec::new(),
        }
    }

    /// The first frame it encoded, if any: a live feed keeps the message's
    /// body as a slice of it rather than a copy.
    pub fn first_frame(&self) -> Option<&OutFrame> {
        self.cache.first().map(|(_, _, _, frame)| frame)
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
        let frame = encode_feed(
            self.message,
            Delivery {
                subscription,
                ack_id: ack.as_deref(),
                previous_deliveries: 0,
            },
            version,
            self.stamp,
            &[],
        );
        if self.cache.len() < MAX_CACHED_ENCODINGS {
            self.cache
                .push((version, subscription, with_ack, frame.clone()));
        }
        frame
    }
}
