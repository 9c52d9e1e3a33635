//! Turning one published message into MESSAGE frames for its subscribers.
//!
//! The frame differs between subscribers only by version (escaping),
//! `subscription` and whether an `ack` header is present. Frames are encoded
//! once per distinct combination and shared: stompjs numbers subscriptions
//! `sub-0, sub-1, ...` on every connection, so most subscribers of a topic
//! share one encoding, and the body is never copied per subscriber.

use super::subscription::Subscriber;
use crate::outbound::OutFrame;
use bytes::Bytes;
use stomp_protocol::{Command, FrameEncoder, Version};

/// A SEND as the router receives it, already validated by the session.
#[derive(Debug)]
pub struct Publication {
    /// The SEND's `destination`, as sent.
    pub destination: String,
    /// The destination's words, for matching.
    pub words: Vec<Box<str>>,
    /// The SEND's headers that are passed on, in order (user headers,
    /// `content-type`; not the server-owned ones).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
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

/// Most distinct encodings kept while fanning out one message; past this,
/// frames are encoded without caching rather than searching a long list.
const MAX_CACHED_ENCODINGS: usize = 16;

/// Encodes one publication for many subscribers, sharing equal frames.
pub struct FanOut<'a> {
    publication: &'a Publication,
    message_id: &'a str,
    text: bool,
    cache: Vec<(Version, &'a str, bool, Bytes)>,
}

impl<'a> FanOut<'a> {
    /// Prepares to encode `publication` under `message_id`.
    pub fn new(publication: &'a Publication, message_id: &'a str) -> Self {
        FanOut {
            publication,
            message_id,
            // Headers are always UTF-8; the body decides text or binary.
            text: std::str::from_utf8(&publication.body).is_ok(),
            cache: Vec::new(),
        }
    }

    /// The frame for `subscriber`.
    pub fn frame_for(&mut self, subscriber: &'a Subscriber) -> OutFrame {
        let ack = subscriber.ack.expects_ack();
        let key = (subscriber.version, &*subscriber.id, ack);
        let cached = self
            .cache
            .iter()
            .find(|(v, id, a, _)| (*v, *id, *a) == key)
            .map(|(_, _, _, bytes)| bytes.clone());
        let bytes = match cached {
            Some(bytes) => bytes,
            None => {
                let bytes = self.encode(subscriber.version, &subscriber.id, ack);
                if self.cache.len() < MAX_CACHED_ENCODINGS {
                    self.cache.push((key.0, key.1, key.2, bytes.clone()));
                }
                bytes
            }
        };
        OutFrame {
            bytes,
            text: self.text,
        }
    }

    fn encode(&self, version: Version, subscription: &str, ack: bool) -> Bytes {
        let p = self.publication;
        let headers_len: usize = p.headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        let capacity = 96
            + p.destination.len()
            + subscription.len()
            + 2 * self.message_id.len()
            + headers_len
            + p.body.len();
        let mut frame = FrameEncoder::begin(Command::Message, version, capacity);
        frame.header("destination", &p.destination);
        frame.header("message-id", self.message_id);
        frame.header("subscription", subscription);
        if ack {
            frame.header("ack", self.message_id);
        }
        for (name, value) in &p.headers {
            frame.header(name, value);
        }
        frame.finish(true, &p.body)
    }
}
