//! Queues on JetStream: the [`QueueEngine`] of `engine = "nats"`.
//!
//! One stream holds every queue (`<prefix>.queue.>`, work-queue retention:
//! a message is gone once acknowledged; `replicas`, `max_bytes` and a
//! duplicate window from `[cluster]`), created or updated at start. Each
//! queue has a subject (`subject::queue_subject`, the name as one token)
//! and one shared durable pull consumer with that exact filter, explicit
//! acks, `ack_wait` and `max_deliver`: every node's subscribers of the
//! queue compete on it. Each subscription pulls only what it has credit
//! for (`consumer.rs`). A message delivered `max_deliver` times (NACKed
//! or left unacknowledged) goes to its dead-letter queue, as on one node.
//!
//! A SEND is published with `Nats-Msg-Id` (JetStream drops a second
//! message with the same id within the duplicate window); when the client
//! wants to know (a RECEIPT, `persistent:true`) the session is given the
//! PubAck's future, which resolves once the stream's replicas have the
//! message; the session reads on meanwhile (pipelined confirmations).
//!
//! This module keeps, per session, its subscriptions and their unsettled
//! deliveries (a leaf lock, never held across `.await`): ACK and NACK find
//! them there; UNSUBSCRIBE and the session's end hand them back at once
//! (a nak without delay) rather than after `ack_wait`.

use super::dead_letters::DeadLetters;
use super::durables::Durables;
use super::subject::{queue_consumer, queue_subject, queues_pattern};
use super::subscription::{hand_back, DurableBinding, Pending, Subscription};
use super::wire;
use crate::config::ClusterConfig;
use crate::model::ack_mode::AckMode;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::{epoch_ms, Message};
use crate::model::session_id::SessionId;
use crate::queue::{
    DeliveryKey, DurableRefusal, DurableSubscribe, EngineAck, EngineFuture, QueueArguments,
    QueueEngine, QueuePolicy, QueueSend, QueueSubscribe,
};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Queues on JetStream, shared by every session of the node.
pub struct NatsQueues {
    /// The JetStream API on the node's NATS connection.
    pub(super) jetstream: jetstream::Context,
    /// The queues' stream.
    stream: String,
    /// `[cluster] subject_prefix`.
    prefix: String,
    /// `[cluster] ack_wait` and `max_deliver`, for every queue's consumer.
    ack_wait: Duration,
    max_deliver: u32,
    /// `[queues]` and its rules: where a queue's dead letters go.
    policy: QueuePolicy,
    /// Per session: its subscriptions by id. A leaf lock, held for table
    /// changes only.
    sessions: Mutex<Sessions>,
    /// Durable topic subscriptions' stream and consumers.
    durables: Durables,
}

/// Per session, its engine subscriptions by id.
type Sessions = HashMap<SessionId, HashMap<Arc<str>, Arc<Subscription>>>;

/// Creates (or updates) the queues' stream and returns the engine.
pub async fn queues(
    client: async_nats::Client,
    config: &ClusterConfig,
    policy: QueuePolicy,
) -> Result<Arc<NatsQueues>, String> {
    let jetstream = jetstream::new(client);
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
        ..Default::default()
    };
    // A JetStream cluster that has just started may not have elected its
    // meta leader yet: try again until `connect_timeout` is over.
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    loop {
        match jetstream
            .create_or_update_stream(stream_config.clone())
            .await
        {
            Ok(_) => break,
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
    }
    info!(%stream, replicas = config.replicas, "cluster queues on JetStream");
    let durables = Durables::open(jetstream.clone(), config).await?;
    Ok(Arc::new(NatsQueues {
        durables,
        jetstream,
        stream,
        prefix: config.subject_prefix.clone(),
        ack_wait: config.ack_wait,
        max_deliver: config.max_deliver,
        policy,
        sessions: Mutex::new(HashMap::new()),
    }))
}

impl NatsQueues {
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared durable consumer of queue `name`, created or updated.
    async fn consumer(&self, name: &str) -> Result<consumer::PullConsumer, String> {
        let durable = queue_consumer(name);
        let config = consumer::pull::Config {
            durable_name: Some(durable.clone()),
            filter_subject: queue_subject(&self.prefix, name),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            // One delivery more than `max_deliver`: that one is not handed
            // to a client but dead-lettered (`consumer.rs`), so that a
            // message NACKed or left unacknowledged `max_deliver` times
            // ends in its dead-letter queue, as on one node.
            max_deliver: i64::from(self.max_deliver) + 1,
            ..Default::default()
        };
        self.jetstream
            .create_consumer_on_stream(config, &self.stream)
            .await
            .map_err(|e| format!("queue engine: cannot create the consumer of '{name}': {e}"))
    }

    /// The subscription holding delivery `key` of `session`, and the index of
    /// that delivery among its unsettled ones.
    fn find(&self, session: SessionId, key: DeliveryKey<'_>) -> Option<(Arc<Subscription>, usize)> {
        let sessions = self.sessions();
        sessions.get(&session)?.values().find_map(|subscription| {
            subscription
                .position(key)
                .map(|index| (subscription.clone(), index))
        })
    }

    async fn publish_inner(&self, send: QueueSend) -> Result<EngineAck, String> {
        let name = send
            .destination
            .strip_prefix(QUEUE_PREFIX)
            .unwrap_or(&send.destination);
        let subject = queue_subject(&self.prefix, name);
        // As on one node: a message without its own expiry gets the
        // queue's `message_ttl` (`[queues]` and its rules).
        let ttl = self
            .policy
            .settings_for(&send.destination, &QueueArguments::default())
            .message_ttl;
        let expires_at = send.expires_at.or_else(|| {
            ttl.map(|ttl| {
                epoch_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
            })
        });
        let message = Message {
            expires_at,
            id: send.id,
            text: std::str::from_utf8(&send.body).is_ok(),
            destination: send.destination,
            headers: send.headers,
            body: send.body,
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, send.dedup_id.as_str());
        let unreachable = |e: &dyn std::fmt::Display| {
            format!("queue engine unreachable or full: the message was not stored ({e})")
        };
        let acked = self
            .jetstream
            .publish_with_headers(subject, headers, wire::encode(&message))
            .await
            .map_err(|e| unreachable(&e))?;
        if send.confirm {
            return Ok(Box::pin(async move {
                acked.await.map(|_| ()).map_err(|e| unreachable(&e))
            }));
        }
        // Not waited for: a failure can only be logged.
        tokio::spawn(async move {
            if let Err(error) = acked.await {
                warn!(%error, "queue engine: an unconfirmed queue SEND was not stored");
            }
        });
        Ok(Box::pin(std::future::ready(Ok(()))))
    }

    /// Registers `request` and starts its pull task on `consumer`.
    fn serve(
        &self,
        request: QueueSubscribe,
        consumer: consumer::PullConsumer,
        dead_letter: Option<String>,
        durable: Option<DurableBinding>,
    ) {
        let settings = self
            .policy
            .settings_for(&request.destination, &QueueArguments::default());
        let dead_letters = DeadLetters {
            jetstream: self.jetstream.clone(),
            prefix: self.prefix.clone(),
            max_deliver: self.max_deliver,
            target: dead_letter,
        };
        let (session, id) = (request.session, request.id.clone());
        let (subscription, served) = Subscription::new(request, &settings, durable);
        self.sessions()
            .entry(session)
            .or_default()
            .insert(id, subscription.clone());
        tokio::spawn(super::consumer::pull_loop(
            consumer,
            subscription,
            served,
            dead_letters,
        ));
    }

    /// Takes subscription `id` of `session` out of the table.
    fn remove(&self, session: SessionId, id: &str) -> Option<Arc<Subscription>> {
        let mut sessions = self.sessions();
        let removed = sessions.get_mut(&session).and_then(|s| s.remove(id));
        if sessions.get(&session).is_some_and(HashMap::is_empty) {
            sessions.remove(&session);
        }
        removed
    }

    async fn subscribe_inner(&self, request: QueueSubscribe) -> Result<(), String> {
        let name = request
            .destination
            .strip_prefix(QUEUE_PREFIX)
            .unwrap_or(&request.destination)
            .to_owned();
        let consumer = self.consumer(&name).await?;
        let dead_letter = self
            .policy
            .settings_for(&request.destination, &QueueArguments::default())
            .dead_letter;
        self.serve(request, consumer, dead_letter, None);
        Ok(())
    }

    /// Settles `pending` (ACK, or NACK with the configured delay).
    async fn settle_all(&self, subscription: &Subscription, pending: Vec<Pending>, nack: bool) {
        for delivery in pending {
            let kind = if nack {
                let delay = subscription.nack_delay(delivery.delivered);
                AckKind::Nak(Some(delay).filter(|d| !d.is_zero()))
            } else {
                AckKind::Ack
            };
            if let Err(error) = delivery.acker.ack_with(kind).await {
                warn!(%error, "queue engine: an acknowledgement did not go out; the message comes back after ack_wait");
            }
        }
    }

    /// Ends `subscription`, handing its unsettled deliveries back now.
    async fn end(&self, subscription: Arc<Subscription>) {
        let pending = subscription.stop();
        hand_back(pending).await;
    }
}

impl QueueEngine for NatsQueues {
    fn publish(&self, send: QueueSend) -> EngineFuture<'_, Result<EngineAck, String>> {
        Box::pin(self.publish_inner(send))
    }

    fn subscribe(&self, subscribe: QueueSubscribe) -> EngineFuture<'_, Result<(), String>> {
        Box::pin(self.subscribe_inner(subscribe))
    }

    fn holds(&self, session: SessionId, key: DeliveryKey<'_>) -> bool {
        self.find(session, key).is_some()
    }

    fn settle<'a>(
        &'a self,
        session: SessionId,
        key: DeliveryKey<'a>,
        nack: bool,
    ) -> EngineFuture<'a, Option<Result<(), String>>> {
        Box::pin(async move {
            let (subscription, index) = self.find(session, key)?;
            // `client` settles cumulatively: this delivery and every earlier
            // one of the subscription; `client-individual` only this one.
            let cumulative = subscription.ack == AckMode::Client;
            let pending = subscription.take(index, cumulative);
            self.settle_all(&subscription, pending, nack).await;
            Some(Ok(()))
        })
    }

    fn unsubscribe<'a>(&'a self, session: SessionId, id: &'a str) -> EngineFuture<'a, bool> {
        Box::pin(async move {
            match self.remove(session, id) {
                Some(subscription) => {
                    self.end(subscription).await;
                    true
                }
                None => false,
            }
        })
    }

    fn subscribe_durable(
        &self,
        subscribe: DurableSubscribe,
    ) -> EngineFuture<'_, Result<(), DurableRefusal>> {
        Box::pin(async move {
            let (request, consumer, binding) = self.durables.prepare(subscribe).await?;
            // No dead letters: delivered until acknowledged.
            self.serve(request, consumer, None, Some(binding));
            Ok(())
        })
    }

    fn remove_durable<'a>(
        &'a self,
        session: SessionId,
        id: &'a str,
    ) -> EngineFuture<'a, Result<bool, String>> {
        Box::pin(async move {
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
            // Nothing handed back: what it held goes with it.
            let _ = subscription.stop();
            if let Some(durable) = &subscription.durable {
                self.durables.delete(&durable.consumer).await.map_err(|e| {
                    format!("durable subscription not deleted: the engine is unreachable ({e})")
                })?;
            }
            Ok(true)
        })
    }

    fn flush(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.jetstream.client().flush().await {
                warn!(%error, "queue engine: hand-backs not flushed at shutdown; they come back after ack_wait");
            }
        })
    }

    fn detach(&self, session: SessionId) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            let removed = self.sessions().remove(&session);
            for subscription in removed.into_iter().flat_map(HashMap::into_values) {
                self.end(subscription).await;
            }
        })
    }
}
