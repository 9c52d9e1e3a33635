//! Whether a durable topic subscription's consumer is still the one it
//! attached to, and what its pull task does when it is not.
//!
//! Why: a pull names a consumer, not one incarnation of it. A durable
//! consumer deleted (UNSUBSCRIBE with removal on another connection, an
//! operator) or re-bound to another topic by another node and made again
//! under the same name would take the old subscription's next pulls, and
//! that subscription would deliver (and auto-ack) or drop (pattern
//! mismatch, acked) messages that belong to the new holder. So the pull
//! task checks, by the consumer's creation time, before the first delivery
//! of every pull and after a failed one; an incarnation that is not its own
//! ends it: what it took is handed back (to the new holder), and its client
//! gets an ERROR (the connection closes: STOMP has no per-subscription
//! error, and a subscription that silently stops receiving is worse).

use crate::model::close::CloseReason;
use crate::model::frames;
use crate::outbound::{CloseAfter, OutFrame};
use async_nats::jetstream::consumer::{Info, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use stomp_protocol::Version;
use tracing::debug;

/// One incarnation of a consumer: its creation time as JetStream states it
/// (nanoseconds; a consumer made again under the same name has another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Incarnation(String);

impl Incarnation {
    /// The incarnation `info` describes.
    pub(super) fn of(info: &Info) -> Incarnation {
        Incarnation(info.created.to_string())
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binding {
    /// The consumer is the one attached to.
    Held,
    /// Deleted, or made again (another holder's now).
    Lost,
    /// The engine did not answer.
    Unknown,
}

/// Asks JetStream whether `consumer` is still incarnation `attached`.
pub(super) async fn check(consumer: &mut PullConsumer, attached: &Incarnation) -> Binding {
    match consumer.info().await {
        Ok(info) if Incarnation::of(info) == *attached => Binding::Held,
        Ok(_) => Binding::Lost,
        Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => Binding::Lost,
        Err(error) => {
            debug!(%error, "queue engine: durable consumer not checked");
            Binding::Unknown
        }
    }
}

/// The final ERROR for the client of a durable subscription on
/// `destination` whose consumer is lost (the connection closes after it).
pub(super) fn lost_frame(destination: &str, version: Version) -> OutFrame {
    let message = format!(
        "durable subscription on '{destination}' was deleted or re-bound by another connection"
    );
    let bytes = frames::error(
        version,
        &frames::ErrorFrame {
            message: &message,
            ..frames::ErrorFrame::default()
        },
    );
    OutFrame {
        bytes,
        text: true,
        close: Some(Box::new(CloseAfter {
            reason: CloseReason::PolicyViolation,
            message,
        })),
    }
}
