//! What the router keeps for one subscription: where its messages go and how
//! they are to be acknowledged.

use crate::model::session_id::SessionId;
use crate::outbound::OutboundSender;
use std::sync::Arc;
use stomp_protocol::Version;

/// SUBSCRIBE's `ack` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Acknowledged when handed to the connection's writer.
    Auto,
    /// Acknowledged by ACK, cumulatively.
    Client,
    /// Acknowledged by ACK, one message at a time.
    ClientIndividual,
}

impl AckMode {
    /// Parses the header value; `None` for anything undefined.
    pub fn from_header(value: Option<&str>) -> Option<AckMode> {
        match value {
            None | Some("auto") => Some(AckMode::Auto),
            Some("client") => Some(AckMode::Client),
            Some("client-individual") => Some(AckMode::ClientIndividual),
            Some(_) => None,
        }
    }

    /// Whether MESSAGE frames carry an `ack` header for the client to echo.
    pub fn expects_ack(self) -> bool {
        self != AckMode::Auto
    }
}

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
