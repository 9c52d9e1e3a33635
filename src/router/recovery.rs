//! Rebuilding stored queues and durable subscriptions at start.

use super::{Principal, Router};
use crate::model::destination;
use crate::queue::{Queue, QueueArguments, QueuedMessage};
use crate::store::StoredQueue;
use std::sync::Arc;
use std::time::Duration;

impl Router {
    /// Rebuilds stored queues and durable subscriptions at start.
    pub(super) fn recover(&mut self, recovered: Vec<StoredQueue>) -> Result<(), String> {
        let (mut queues, mut messages) = (0, 0);
        for stored in recovered {
            let definition = stored.definition;
            let arguments = QueueArguments {
                message_ttl: definition.message_ttl_ms.map(Duration::from_millis),
                max_length: definition
                    .max_length
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                dead_letter: definition.dead_letter.clone(),
                ..QueueArguments::default()
            };
            let settings = self.policy.settings_for(&definition.name, &arguments);
            let mut queue =
                Queue::new(definition.name.clone(), settings, self.queue_memory.clone());
            queue.store_id = Some(stored.id);
            self.next_queue_id = self.next_queue_id.max(stored.id + 1);
            for message in stored.messages {
                self.next_sequence = self.next_sequence.max(message.sequence);
                messages += 1;
                queue.restore(QueuedMessage {
                    message: Arc::new(message.message),
                    deliveries: message.deliveries,
                    sequence: Some(message.sequence),
                });
            }
            if let Some(binding) = definition.binding {
                let pattern = destination::topic_pattern(&binding, &self.destination_limits)
                    .map_err(|e| {
                        format!("stored durable subscription {}: {}", definition.name, e.0)
                    })?;
                self.bind_durable(&pattern, &definition.name);
                self.durable_bindings
                    .insert(definition.name.clone(), binding);
                if let Some(owner) = &definition.owner {
                    let owner = Principal::from_record(owner).ok_or_else(|| {
                        format!(
                            "stored durable subscription {}: unknown owner '{owner}'",
                            definition.name
                        )
                    })?;
                    self.durable_owners.insert(definition.name.clone(), owner);
                }
            }
            self.queues.insert(definition.name, queue);
            queues += 1;
        }
        if queues > 0 {
            tracing::info!(queues, messages, "recovered from the store");
        }
        Ok(())
    }
}
