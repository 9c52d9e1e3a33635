//! A queue's definition on the engine: the arguments (`x-message-ttl`,
//! `x-dead-letter-routing-key`) of the SUBSCRIBE or SEND that created the
//! queue, kept in the metadata of its shared JetStream consumer, so that
//! every node applies the same ones, as one node applies those of the
//! frame that created the queue. The first creator wins: the consumer is
//! created with JetStream's strict create, and a node that loses the race
//! reads the winner's. Each node caches a definition once read (they do
//! not change: the consumer is updated with the same metadata).

use super::subject::{queue_consumer, queue_subject, queues_pattern};
use crate::config::ClusterConfig;
use crate::queue::QueueArguments;
use async_nats::jetstream::{self, consumer, stream};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, info};

/// The metadata keys (RabbitMQ's argument names).
const MESSAGE_TTL: &str = "x-message-ttl";
const DEAD_LETTER: &str = "x-dead-letter-routing-key";
/// The pause between two tries while JetStream cannot answer.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The queues' consumers: their settings, and the definitions read.
pub(super) struct Definitions {
    pub(super) jetstream: jetstream::Context,
    pub(super) stream: String,
    /// `[cluster] subject_prefix`, `ack_wait`, `max_deliver`.
    pub(super) prefix: String,
    pub(super) ack_wait: Duration,
    pub(super) max_deliver: u32,
    /// `[cluster] publish_timeout`: how long reading or creating a
    /// definition is tried (the stream may be electing a leader).
    pub(super) patience: Duration,
    /// Per queue name, its definition once read or made. A leaf lock, held
    /// for one lookup or insert.
    pub(super) known: Mutex<HashMap<String, QueueArguments>>,
}

impl Definitions {
    fn known(&self) -> MutexGuard<'_, HashMap<String, QueueArguments>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The consumer of queue `name` with `definition` in its metadata.
    fn config(&self, name: &str, definition: &QueueArguments) -> consumer::pull::Config {
        let mut metadata = HashMap::new();
        if let Some(ttl) = definition.message_ttl {
            metadata.insert(MESSAGE_TTL.to_owned(), ttl.as_millis().to_string());
        }
        if let Some(target) = &definition.dead_letter {
            metadata.insert(DEAD_LETTER.to_owned(), target.clone());
        }
        consumer::pull::Config {
            durable_name: Some(queue_consumer(name)),
            filter_subject: queue_subject(&self.prefix, name),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // One delivery more than `max_deliver`: that one is not handed
            // to a client but dead-lettered (`consumer.rs`), so that a
            // message NACKed or left unacknowledged `max_deliver` times
            // ends in its dead-letter queue, as on one node.
            max_deliver: i64::from(self.max_deliver) + 1,
            metadata,
            ..Default::default()
        }
    }

    /// The definition of queue `name`: the one it was created with, or,
    /// if it does not exist yet, `offered` (the arguments of the frame that
    /// creates it now, with its consumer).
    pub(super) async fn definition(
        &self,
        name: &str,
        offered: &QueueArguments,
    ) -> Result<QueueArguments, String> {
        if let Some(known) = self.known().get(name) {
            return Ok(known.clone());
        }
        let offered = QueueArguments {
            message_ttl: offered.message_ttl,
            dead_letter: offered.dead_letter.clone(),
            ..QueueArguments::default()
        };
        let cannot = |e: &dyn std::fmt::Display| {
            format!("queue engine: cannot read or create the queue '{name}': {e}")
        };
        // A node that loses the race to create reads the winner's; while
        // JetStream cannot answer (an election) both are tried again.
        let deadline = tokio::time::Instant::now() + self.patience;
        loop {
            if let Ok(existing) = self
                .jetstream
                .get_consumer_from_stream::<consumer::pull::Config, _, _>(
                    queue_consumer(name),
                    &self.stream,
                )
                .await
            {
                let definition = read(&existing.cached_info().config.metadata);
                self.known().insert(name.to_owned(), definition.clone());
                return Ok(definition);
            }
            let error = match self
                .jetstream
                .create_consumer_strict_on_stream(self.config(name, &offered), &self.stream)
                .await
            {
                Ok(_) => {
                    self.known().insert(name.to_owned(), offered.clone());
                    return Ok(offered);
                }
                Err(error) => error,
            };
            if tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
                return Err(cannot(&error));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// The consumer of queue `name` for a SUBSCRIBE: created, or updated
    /// (settings changed in the config) keeping its definition.
    pub(super) async fn consumer(
        &self,
        name: &str,
        offered: &QueueArguments,
    ) -> Result<(consumer::PullConsumer, QueueArguments), String> {
        let definition = self.definition(name, offered).await?;
        let consumer = self
            .jetstream
            .create_consumer_on_stream(self.config(name, &definition), &self.stream)
            .await
            .map_err(|e| format!("queue engine: cannot create the consumer of '{name}': {e}"))?;
        Ok((consumer, definition))
    }
}

/// A definition from a consumer's metadata; what it lacks is `None`.
fn read(metadata: &HashMap<String, String>) -> QueueArguments {
    QueueArguments {
        message_ttl: metadata
            .get(MESSAGE_TTL)
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis),
        dead_letter: metadata.get(DEAD_LETTER).cloned(),
        ..QueueArguments::default()
    }
}

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Creates (or updates) the stream holding every queue; returns its name
/// and whether the server kept `allow_atomic` in its config.
pub(super) async fn queue_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(String, bool), String> {
    let stream = format!("{}_queues", config.subject_prefix.replace('.', "_"));
    let stream_config = stream::Config {
        name: stream.clone(),
        subjects: vec![queues_pattern(&config.subject_prefix)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        duplicate_window: DUPLICATE_WINDOW,
        // Full: refuse new messages. Dropping old ones (the default) would
        // lose messages whose SENDs were receipted.
        discard: stream::DiscardPolicy::New,
        // A COMMIT's queue SENDs are one atomic batch (`transactions.rs`).
        allow_atomic_publish: true,
        ..Default::default()
    };
    // A JetStream cluster that has just started may not have elected its
    // meta leader yet: try again until `connect_timeout` is over.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let info = loop {
        match jetstream
            .create_or_update_stream(stream_config.clone())
            .await
        {
            Ok(info) => break info,
            Err(error) if tokio::time::Instant::now() < deadline => {
                debug!(%error, %stream, "cluster: queue stream not created yet; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(format!(
                "cluster: cannot create the queue stream '{stream}' (cluster.replicas {}): {error}",
                config.replicas
            ))
            }
        }
    };
    info!(%stream, replicas = config.replicas, "cluster queues on JetStream");
    Ok((stream, info.config.allow_atomic_publish))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_definition_reads_back_from_metadata() {
        let mut metadata = HashMap::new();
        metadata.insert(MESSAGE_TTL.to_owned(), "1500".to_owned());
        metadata.insert(DEAD_LETTER.to_owned(), "/queue/failed".to_owned());
        let definition = read(&metadata);
        assert_eq!(definition.message_ttl, Some(Duration::from_millis(1500)));
        assert_eq!(definition.dead_letter.as_deref(), Some("/queue/failed"));
        assert_eq!(read(&HashMap::new()), QueueArguments::default());
    }
}
