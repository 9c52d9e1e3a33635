//! Durable topic subscriptions as the queue engine serves them: attached
//! through `durables.rs`, then served like a queue subscription on their
//! own consumer (`consumer.rs`), and ended or deleted by an UNSUBSCRIBE.

use super::pull_queue::Queue;
use super::queues::NatsQueues;
use crate::model::session_id::SessionId;
use crate::queue::{DurableRefusal, DurableSubscribe, QueueArguments};

impl NatsQueues {
    /// Attaches a durable SUBSCRIBE (within
    /// `max_durable_subscriptions_per_connection`) and serves it.
    pub(super) async fn serve_durable(
        &self,
        subscribe: DurableSubscribe,
    ) -> Result<(), DurableRefusal> {
        let held = self
            .sessions()
            .get(&subscribe.subscribe.session)
            .map_or(0, |s| s.values().filter(|s| s.durable.is_some()).count());
        if held >= self.durables_per_connection {
            return Err(DurableRefusal::Policy(format!(
                "too many durable subscriptions on this connection: max_durable_subscriptions_per_connection is {}",
                self.durables_per_connection
            )));
        }
        let (request, consumer, binding) = self.durables.prepare(subscribe).await?;
        let settings = self
            .policy
            .settings_for(&request.destination, &QueueArguments::default());
        let queue = Queue {
            definitions: None,
            name: binding.consumer.clone(),
            consumer,
            holders: None,
        };
        // No dead letters: delivered until acknowledged.
        let _ = self.serve(request, queue, &settings, None, Some(binding));
        Ok(())
    }

    /// An UNSUBSCRIBE that deletes durable subscription `id` of `session`:
    /// false if it is not one of this node's.
    pub(super) async fn end_durable(&self, session: SessionId, id: &str) -> Result<bool, String> {
        let is_durable = self
            .sessions()
            .get(&session)
            .and_then(|s| s.get(id))
            .is_some_and(|s| s.durable.is_some());
        if !is_durable {
            return Ok(false);
        }
        let Some(subscription) = self.remove(session, id) else {
            return Ok(false);
        };
        // What it held goes with its consumer (its task's hand-back,
        // after its last pull, finds the consumer gone).
        subscription.stop();
        if let Some(durable) = &subscription.durable {
            self.durables.delete(&durable.consumer).await.map_err(|e| {
                format!("durable subscription not deleted: the engine is unreachable ({e})")
            })?;
        }
        Ok(true)
    }
}
