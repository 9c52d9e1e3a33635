//! What a topic trie holds and pushes to for one topic subscription.

use crate::model::ack_mode::AckMode;
use crate::model::session_id::SessionId;
use crate::outbound::OutboundSender;
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
}
