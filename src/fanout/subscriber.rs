//! What a topic trie holds and pushes to for one topic subscription, and
//! pushing one topic message to many of them.

use super::encode::{FanOut, Stamp};
use super::rate_cap::{CappedSink, Offered, RateCap};
use crate::model::ack_mode::AckMode;
use crate::model::message::Message;
use crate::model::session_id::SessionId;
use crate::outbound::{OutFrame, OutboundSender, PushError};
use bytes::Bytes;
use std::sync::Arc;
use stomp_protocol::Version;

/// A **subscriber**: what a topic trie holds and pushes to for one topic
/// subscription (the connection's outbound queue and how to encode for it).
/// The subscription itself, with its unsettled deliveries, is the router's
/// `Subscription`.
#[derive(Debug)]
pub struct Subscriber {
    /// The connection that subscribed.
    pub session: SessionId,
    /// The client's subscription `id`, echoed in MESSAGE's `subscription`.
    pub id: Arc<str>,
    /// How deliveries are acknowledged.
    pub ack: AckMode,
    /// The connection's STOMP version, for header escaping.
    pub version: Version,
    /// The connection's outbound queue.
    pub outbound: OutboundSender,
    /// Slow-consumer policy `drop-oldest`: its topic messages may be dropped.
    pub drop_oldest: bool,
    /// Slow-consumer policy `conflate`: past its budget, a queued message of
    /// the same destination is replaced by the newest.
    pub conflate: bool,
    /// SUBSCRIBE `x-max-rate`: at most so many MESSAGEs per second per
    /// destination, the latest.
    pub max_rate: Option<RateCap>,
}

impl Subscriber {
    /// Pushes a topic MESSAGE for `destination` as this subscription's
    /// slow-consumer policy says.
    pub fn push(&self, destination: &str, frame: OutFrame) -> Result<(), PushError> {
        if self.conflate {
            let key = (self.id.clone(), destination.into());
            self.outbound.push_conflating(frame, key)
        } else if self.drop_oldest {
            self.outbound.push_droppable(frame)
        } else {
            self.outbound.push(frame)
        }
    }
}

impl CappedSink for Subscriber {
    fn rate_cap(&self) -> Option<&RateCap> {
        self.max_rate.as_ref()
    }

    fn push_held(&self, destination: &str, frame: OutFrame) {
        // A slow consumer's queue is marked overflowed by the push: its
        // connection closes itself.
        let _: Result<(), PushError> = self.push(destination, frame);
    }
}

/// Pushes `message` (of a live feed: placed at `stamp`) to each of
/// `direct`, encoding once per distinct frame; adds to `pushed` how many
/// pushes succeeded. Returns a frame it encoded, if any.
pub(super) fn push_to(
    direct: &[Arc<Subscriber>],
    message: &Message,
    stamp: Option<Stamp>,
    pushed: &mut u64,
) -> Option<Bytes> {
    let mut fan_out = FanOut::stamped(message, stamp);
    for subscriber in direct {
        let frame = fan_out.frame_for(subscriber.version, &subscriber.id, false);
        // A slow consumer's queue is marked overflowed by the push: its
        // connection closes itself, and its Detach removes its entries.
        let destination = message.destination.as_str();
        let result = match &subscriber.max_rate {
            Some(cap) => match cap.offer(subscriber, destination, frame) {
                Offered::Now(frame) => subscriber.push(destination, frame),
                // Held, and maybe replaced by a newer one: not counted as
                // delivered.
                Offered::Held => continue,
            },
            None => subscriber.push(destination, frame),
        };
        *pushed += u64::from(result.is_ok());
    }
    fan_out.first_frame().map(|frame| frame.bytes.clone())
}
