//! A queue's definition on the engine: the arguments (`x-message-ttl`,
//! `x-dead-letter-routing-key`, `x-max-length`) of the SUBSCRIBE or SEND
//! that created the queue, kept in the metadata of its shared JetStream
//! consumer, so that every node applies the same ones, as one node applies
//! those of the frame that created the queue; and where the queue lives:
//! the shared stream, or its own stream when its bounds are not the
//! defaults (`streams.rs`). The first creator wins: the consumer is created
//! with JetStream's strict create, and a node that loses the race reads the
//! winner's. Each node caches a definition once read (they do not change:
//! the consumer is updated with the same metadata).

use super::streams::{self, needs_own_stream, own_stream, own_stream_config};
use super::subject::{bounded_queue_subject, queue_consumer, queue_subject};
use crate::config::ClusterConfig;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::epoch_ms;
use crate::queue::{QueueArguments, QueuePolicy, QueueSettings, REFUSAL};
use async_nats::jetstream::{self, consumer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The metadata keys (RabbitMQ's argument names).
const MESSAGE_TTL: &str = "x-message-ttl";
const DEAD_LETTER: &str = "x-dead-letter-routing-key";
const MAX_LENGTH: &str = "x-max-length";
const AUTO_DELETE: &str = "auto-delete";
/// The pause between two tries while JetStream cannot answer.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// A queue as every node finds it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Definition {
    /// The arguments it was created with.
    pub(super) arguments: QueueArguments,
    /// The stream it lives in, and its subject there.
    pub(super) stream: String,
    pub(super) subject: String,
    /// Whether that is its own stream (its bounds are the stream's).
    pub(super) own: bool,
    /// Its consumer's creation time as JetStream states it (another for a
    /// queue deleted and made again under the same name); empty if not
    /// read.
    pub(super) created: String,
}

/// The queues' consumers: their settings, and the definitions read.
pub(super) struct Definitions {
    pub(super) jetstream: jetstream::Context,
    /// `[cluster]`: the prefix, `ack_wait`, replicas and bytes of streams.
    pub(super) config: ClusterConfig,
    /// The shared stream.
    pub(super) stream: String,
    /// `[queues]` and its rules: each queue's bounds and `max_deliveries`.
    pub(super) policy: QueuePolicy,
    /// Per queue name, its definition once read or made. A leaf lock, held
    /// for one lookup or insert.
    pub(super) known: Mutex<HashMap<String, Definition>>,
}

impl Definitions {
    /// The definitions of queues in the shared `stream` (and their own).
    pub(super) fn new(
        jetstream: jetstream::Context,
        config: &ClusterConfig,
        stream: String,
        policy: QueuePolicy,
    ) -> Arc<Definitions> {
        Arc::new(Definitions {
            jetstream,
            config: config.clone(),
            stream,
            policy,
            known: Mutex::new(HashMap::new()),
        })
    }

    /// When a message sent now to queue `name` without an expiry of its
    /// own expires: the queue's `message_ttl` (its `x-message-ttl` when it
    /// was created with one, else `[queues]` and its rules), as on one node.
    pub(super) fn expiry(&self, name: &str, definition: &Definition) -> Option<u64> {
        let ttl = self.settings(name, &definition.arguments).message_ttl?;
        Some(epoch_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
    }

    pub(super) fn known(&self) -> MutexGuard<'_, HashMap<String, Definition>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The settings of queue `name` created with `arguments`, as one node
    /// resolves them.
    pub(super) fn settings(&self, name: &str, arguments: &QueueArguments) -> QueueSettings {
        self.policy
            .settings_for(&format!("{QUEUE_PREFIX}{name}"), arguments)
    }

    /// The consumer of queue `name` with `definition` in its metadata.
    fn config(&self, name: &str, definition: &Definition) -> consumer::pull::Config {
        let arguments = &definition.arguments;
        let mut metadata = HashMap::new();
        if let Some(ttl) = arguments.message_ttl {
            metadata.insert(MESSAGE_TTL.to_owned(), ttl.as_millis().to_string());
        }
        if let Some(target) = &arguments.dead_letter {
            metadata.insert(DEAD_LETTER.to_owned(), target.clone());
        }
        if let Some(length) = arguments.max_length {
            metadata.insert(MAX_LENGTH.to_owned(), length.to_string());
        }
        if arguments.auto_delete {
            metadata.insert(AUTO_DELETE.to_owned(), "true".to_owned());
        }
        let max_deliveries = self.settings(name, arguments).max_deliveries;
        consumer::pull::Config {
            durable_name: Some(queue_consumer(name)),
            filter_subject: definition.subject.clone(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.config.ack_wait,
            // One delivery more than the queue's `max_deliveries`: that one
            // is not handed to a client but dead-lettered (`consumer.rs`),
            // so that a message NACKed or left unacknowledged
            // `max_deliveries` times ends in its dead-letter queue, as on
            // one node.
            max_deliver: i64::from(max_deliveries).saturating_add(1),
            metadata,
            ..Default::default()
        }
    }

    /// Where queue `name` lives: in the shared stream, or its own.
    fn placed(&self, name: &str, arguments: QueueArguments, own: bool) -> Definition {
        let prefix = &self.config.subject_prefix;
        if own {
            Definition {
                arguments,
                stream: own_stream(prefix, name),
                subject: bounded_queue_subject(prefix, name),
                own,
                created: String::new(),
            }
        } else {
            Definition {
                arguments,
                stream: self.stream.clone(),
                subject: queue_subject(prefix, name),
                own,
                created: String::new(),
            }
        }
    }

    /// The definition of queue `name`: the one it was created with, or,
    /// if it does not exist yet, `offered` (the arguments of the frame that
    /// creates it now, with its consumer, and its own stream if its bounds
    /// are not the defaults).
    pub(super) async fn definition(
        &self,
        name: &str,
        offered: &QueueArguments,
    ) -> Result<Definition, String> {
        let known = self.known().get(name).cloned();
        if let Some(known) = known {
            if !(known.own && known.arguments.auto_delete) || self.still_there(name, &known).await {
                return Ok(known);
            }
            // Deleted with its stream by the node whose subscriber was its
            // last (`delete`): made again below, as a SEND on one node
            // makes a deleted auto-delete queue again.
            self.forget(name);
        }
        let offered = QueueArguments {
            message_ttl: offered.message_ttl,
            dead_letter: offered.dead_letter.clone(),
            max_length: offered.max_length,
            auto_delete: offered.auto_delete,
            ..QueueArguments::default()
        };
        let settings = self.settings(name, &offered);
        let own = needs_own_stream(&settings, self.policy.defaults());
        let wanted = self.placed(name, offered.clone(), own);
        let cannot = |e: &dyn std::fmt::Display| {
            format!("queue engine: cannot read or create the queue '{name}': {e}")
        };
        // A node that loses the race to create reads the winner's; while
        // JetStream cannot answer (an election) both are tried again. An
        // existing queue stays where it is, whatever the rules say now.
        let deadline = tokio::time::Instant::now() + self.config.publish_timeout;
        loop {
            for own in [false, true] {
                let place = self.placed(name, QueueArguments::default(), own);
                if let Ok(existing) = self
                    .jetstream
                    .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                        queue_consumer(name),
                        &place.stream,
                    )
                    .await
                {
                    let definition = Definition {
                        arguments: read(&existing.cached_info().config.metadata),
                        created: existing.cached_info().created.to_string(),
                        ..place
                    };
                    self.known().insert(name.to_owned(), definition.clone());
                    return Ok(definition);
                }
            }
            if wanted.own {
                streams::room_for_own_stream(&self.jetstream, &self.config, name, deadline).await?;
            }
            let made = async {
                if wanted.own {
                    self.jetstream
                        .create_or_update_stream(own_stream_config(&self.config, name, &settings))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                self.jetstream
                    .create_consumer_strict_on_stream(self.config(name, &wanted), &wanted.stream)
                    .await
                    .map_err(|e| e.to_string())
            };
            let error = match made.await {
                // A node creating the queue in the shared stream at the
                // same moment wins: ours goes, and theirs is read above.
                Ok(_) if wanted.own && self.in_shared(name).await => {
                    let _ = self
                        .jetstream
                        .delete_consumer_from_stream(queue_consumer(name), &wanted.stream)
                        .await;
                    continue;
                }
                Ok(made) => {
                    let created = made.cached_info().created.to_string();
                    let wanted = Definition { created, ..wanted };
                    self.known().insert(name.to_owned(), wanted.clone());
                    return Ok(wanted);
                }
                Err(error) => error,
            };
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(cannot(&error));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Whether queue `name` has its consumer in the shared stream.
    async fn in_shared(&self, name: &str) -> bool {
        self.jetstream
            .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                queue_consumer(name),
                &self.stream,
            )
            .await
            .is_ok()
    }

    /// The consumer of queue `name` for a SUBSCRIBE: created, or updated
    /// (settings changed in the config) keeping its definition.
    pub(super) async fn consumer(
        &self,
        name: &str,
        offered: &QueueArguments,
    ) -> Result<(consumer::PullConsumer, Definition), String> {
        let definition = self.definition(name, offered).await?;
        let consumer = self
            .jetstream
            .create_consumer_on_stream(self.config(name, &definition), &definition.stream)
            .await
            .map_err(|e| format!("queue engine: cannot create the consumer of '{name}': {e}"))?;
        Ok((consumer, definition))
    }

    /// Forgets the definition of queue `name` read before (its consumer
    /// found gone); returns it.
    pub(super) fn forget(&self, name: &str) -> Option<Definition> {
        self.known().remove(name)
    }

    /// The ERROR text of a SEND to `name` that JetStream refused with
    /// `error`: the queue full (as on one node), or the engine's failure.
    pub(super) fn refusal(&self, name: &str, definition: &Definition, error: &str) -> String {
        if streams::is_queue_full(error, definition.own) {
            let settings = self.settings(name, &definition.arguments);
            return format!(
                "{REFUSAL}{QUEUE_PREFIX}{name}' is full (max_length {}, max_bytes {}; on the cluster \
                 unacknowledged deliveries count too)",
                settings.max_length, settings.max_bytes
            );
        }
        format!("queue engine unreachable or full: the message was not stored ({error})")
    }
}

/// A definition's arguments from a consumer's metadata; what it lacks is
/// `None`.
pub(super) fn read(metadata: &HashMap<String, String>) -> QueueArguments {
    QueueArguments {
        message_ttl: metadata
            .get(MESSAGE_TTL)
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis),
        dead_letter: metadata.get(DEAD_LETTER).cloned(),
        max_length: metadata.get(MAX_LENGTH).and_then(|n| n.parse().ok()),
        auto_delete: metadata.get(AUTO_DELETE).is_some_and(|v| v == "true"),
        ..QueueArguments::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_reads_back_from_metadata() {
        let mut metadata = HashMap::new();
        metadata.insert(MESSAGE_TTL.to_owned(), "1500".to_owned());
        metadata.insert(DEAD_LETTER.to_owned(), "/queue/failed".to_owned());
        metadata.insert(MAX_LENGTH.to_owned(), "7".to_owned());
        metadata.insert(AUTO_DELETE.to_owned(), "true".to_owned());
        let definition = read(&metadata);
        assert_eq!(definition.message_ttl, Some(Duration::from_millis(1500)));
        assert_eq!(definition.dead_letter.as_deref(), Some("/queue/failed"));
        assert_eq!(definition.max_length, Some(7));
        assert!(definition.auto_delete);
        assert_eq!(read(&HashMap::new()), QueueArguments::default());
    }
}
