//! The queue a subscription's pull task pulls from (`consumer.rs`): its
//! JetStream consumer, made again after it is lost, and what the task's
//! end does to it (this node's count of its subscriptions; an auto-delete
//! queue without subscribers removed).

use super::definitions::Definitions;
use super::holders::Holders;
use crate::queue::QueueArguments;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use std::sync::Arc;
use tracing::debug;

/// The queue a subscription pulls from.
pub(super) struct Queue {
    /// Where a lost queue consumer is made again; `None` for a durable
    /// topic subscription, whose consumer is gone only if deleted on
    /// purpose (UNSUBSCRIBE, a re-bind on another node).
    pub(super) definitions: Option<Arc<Definitions>>,
    /// The queue's name (without `/queue/`).
    pub(super) name: String,
    /// Its shared JetStream consumer.
    pub(super) consumer: PullConsumer,
    /// Who holds queues (`None` for a durable topic subscription).
    pub(super) holders: Option<Arc<Holders>>,
}

impl Queue {
    /// After the subscription's end (its last pull over, its deliveries
    /// handed back): this node's count of the queue's subscriptions goes
    /// down, and an auto-delete queue without subscribers goes.
    pub(super) async fn ended(&self) {
        let (Some(definitions), Some(holders)) = (&self.definitions, &self.holders) else {
            return;
        };
        if holders.leave(&self.name).await {
            definitions.delete(&self.name).await;
        }
    }

    /// After a failed pull: the consumer made again, with the queue's
    /// definition, if it is gone (deleted by an operator, a store lost);
    /// an update that changes nothing if it is there. Failing (the engine
    /// unreachable), the next pull tries again.
    pub(super) async fn remake(&mut self) {
        let Some(definitions) = &self.definitions else {
            return;
        };
        // Gone: the definition read before may be stale (another node may
        // make the queue again otherwise); it is read again, or the queue
        // made again with the same arguments.
        let mut offered = QueueArguments::default();
        if let Err(error) = self.consumer.info().await {
            if error.kind() == ConsumerInfoErrorKind::NotFound {
                if let Some(stale) = definitions.forget(&self.name) {
                    offered = stale.arguments;
                }
            }
        }
        match definitions.consumer(&self.name, &offered).await {
            Ok((consumer, _)) => self.consumer = consumer,
            Err(error) => debug!(%error, "queue engine: consumer not made again yet"),
        }
    }
}
