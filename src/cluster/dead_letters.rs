//! Dead letters on JetStream: where a queue message goes once it has been
//! delivered `max_deliver` times (NACKed, or left unacknowledged), as on
//! one node: the queue's dead-letter queue, with the reason, the original
//! destination and the number of deliveries.

use super::definitions::Definitions;
use super::wire;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::Message;
use crate::queue::QueueArguments;
use std::sync::Arc;

/// Where a subscription's messages go after `max_deliver` deliveries.
pub struct DeadLetters {
    /// The JetStream API (to publish the dead letter).
    pub(super) jetstream: async_nats::jetstream::Context,
    /// Where the dead-letter queue lives (its subject).
    pub(super) definitions: Arc<Definitions>,
    /// The queue's `max_deliveries`.
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
        // Made with the default arguments if it does not exist yet, as a
        // SEND to it would.
        let subject = self
            .definitions
            .definition(name, &QueueArguments::default())
            .await?
            .subject;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("dl/{sequence}").as_str(),
        );
        let acked = self
            .jetstream
            .publish_with_headers(subject, headers, wire::encode(&message))
            .await
            .map_err(|e| e.to_string())?;
        acked.await.map(|_| ()).map_err(|e| e.to_string())
    }
}
