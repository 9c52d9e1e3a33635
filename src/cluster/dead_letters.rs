//! Dead letters on JetStream: where a queue message goes once it has been
//! delivered `max_deliver` times (NACKed, or left unacknowledged), as on
//! one node: the queue's dead-letter queue, with the reason, the original
//! destination and the number of deliveries.

use super::subject::queue_subject;
use super::wire;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::Message;

/// Where a subscription's messages go after `max_deliver` deliveries.
pub struct DeadLetters {
    /// The JetStream API (to publish the dead letter).
    pub(super) jetstream: async_nats::jetstream::Context,
    /// `[cluster] subject_prefix`.
    pub(super) prefix: String,
    /// `[cluster] max_deliver`.
    pub(super) max_deliver: u32,
    /// The dead-letter queue (`/queue/...`); `None` for a dead-letter queue
    /// itself, whose messages stay (JetStream stops delivering them).
    pub(super) target: Option<String>,
}

impl DeadLetters {
    /// Stores `message` (from `from`, delivered `deliveries` times) in the
    /// dead-letter queue; the same stream sequence is stored once however
    /// often this is tried.
    pub(super) async fn store(
        &self,
        target: &str,
        mut message: Message,
        deliveries: i64,
        sequence: u64,
    ) -> Result<(), String> {
        let from = std::mem::replace(&mut message.destination, target.to_owned());
        message
            .headers
            .push(("x-dead-letter-reason".into(), "max-deliveries".into()));
        message
            .headers
            .push(("x-original-destination".into(), from));
        message
            .headers
            .push(("x-deliveries".into(), deliveries.to_string()));
        message.expires_at = None;
        let name = target.strip_prefix(QUEUE_PREFIX).unwrap_or(target);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dl/{sequence}").as_str(),
        );
        let acked = self
            .jetstream
            .publish_with_headers(
                queue_subject(&self.prefix, name),
                headers,
                wire::encode(&message),
            )
            .await
            .map_err(|e| e.to_string())?;
        acked.await.map(|_| ()).map_err(|e| e.to_string())
    }
}
