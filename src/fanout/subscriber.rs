//! What a topic trie holds and pushes to for one topic subscription.

use super::rate_cap::{CappedSink, RateCap};
use crate::model::ack_mode::AckMode;
use crate::model::session_id::SessionId;
use crate::outbound::{OutFrame, OutboundSender, PushError};
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
