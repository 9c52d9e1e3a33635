//! Queues on JetStream: the [`QueueEngine`] of `engine = "nats"`.
//!
//! Queues live in work-queue streams (`streams.rs`: a shared one, and one
//! per queue with bounds of its own); each has one subject and one shared
//! durable pull consumer (`definitions.rs`) on which every node's
//! subscribers compete, each pulling only what it has credit for
//! (`consumer.rs`). A message delivered the queue's `max_deliveries` times
//! goes to its dead-letter queue, as on one node. Exclusive and
//! auto-delete queues: `holders.rs`.
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

use super::consumer::PULL_WAIT;
use super::dead_letters::DeadLetters;
use super::definitions::Definitions;
use super::durables::Durables;
use super::holders::{holder_name, Holders};
use super::publish::{publish, Place};
use super::pull_queue::Queue;
use super::pulls::PullTasks;
use super::replies::Replies;
use super::subscription::{DurableBinding, Subscription};
use super::transactions::{check_atomic, publish_batch};
use crate::config::ClusterConfig;
use crate::model::ack_mode::AckMode;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::Message;
use crate::model::session_id::SessionId;
use crate::queue::{
    DeliveryKey, DurableRefusal, DurableSubscribe, EngineAck, EngineFuture, EngineQueue,
    QueueEngine, QueuePolicy, QueueSend, QueueSettings, QueueSubscribe,
};
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tracing::warn;

/// Queues on JetStream, shared by every session of the node.
pub struct NatsQueues {
    /// The JetStream API on the node's NATS connection.
    pub(super) jetstream: jetstream::Context,
    /// `[cluster] publish_timeout`: how long a confirmed SEND is published
    /// again through a leader election.
    publish_timeout: Duration,
    /// `[queues]` and its rules: where a queue's dead letters go.
    pub(super) policy: QueuePolicy,
    /// Per session: its subscriptions by id. A leaf lock, held for table
    /// changes only.
    sessions: Mutex<Sessions>,
    /// The queues' consumers and definitions (`definitions.rs`).
    definitions: Arc<Definitions>,
    /// The subscriptions' pull tasks, waited for at shutdown.
    pulls: PullTasks,
    /// Durable topic subscriptions' stream and consumers.
    pub(super) durables: Durables,
    /// `[limits] max_durable_subscriptions_per_connection`: durable
    /// subscriptions one connection holds at once.
    pub(super) durables_per_connection: usize,
    /// Replies to other nodes' reply queues (`replies.rs`).
    replies: Arc<Replies>,
    /// The last reading of the consumers, for the admin API (`stats.rs`).
    pub(super) stats: super::stats::QueueStats,
    /// Who holds exclusive queues; this node's subscriptions per queue.
    holders: Arc<Holders>,
}

/// Per session, its engine subscriptions by id.
type Sessions = HashMap<SessionId, HashMap<Arc<str>, Arc<Subscription>>>;

/// Creates (or updates) the queues' stream; returns the engine (counting in `metrics`).
pub async fn queues(
    client: async_nats::Client,
    config: &ClusterConfig,
    limits: &crate::config::LimitsConfig,
    policy: QueuePolicy,
    metrics: Arc<crate::metrics::Metrics>,
) -> Result<Arc<NatsQueues>, String> {
    let replies = Replies::new(client.clone(), &config.subject_prefix)?;
    let jetstream = jetstream::new(client);
    let (stream, atomic) =
        super::streams::queue_stream(&jetstream, config, policy.defaults()).await?;
    // A server before atomic batches drops the setting it does not know
    // and would store a COMMIT's SENDs one by one, not all or none.
    check_atomic(atomic, &jetstream.client().server_info().version)?;
    let durables =
        Durables::open(jetstream.clone(), config, limits.max_durable_subscriptions).await?;
    let holders = Holders::open(&jetstream, config).await?;
    let stats = super::stats::QueueStats::new(&jetstream, &stream, &durables, config);
    Ok(Arc::new(NatsQueues {
        durables,
        durables_per_connection: limits.max_durable_subscriptions_per_connection,
        replies,
        holders,
        jetstream: jetstream.clone(),
        publish_timeout: config.publish_timeout,
        policy: policy.clone(),
        sessions: Mutex::new(HashMap::new()),
        definitions: Definitions::new(jetstream.clone(), config, stream, policy),
        pulls: PullTasks::new(metrics),
        stats,
    }))
}

impl NatsQueues {
    pub(super) fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
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

    /// The node's replies, for the broker to [`serve`](Replies::serve)
    /// once its router runs.
    pub fn replies(&self) -> Arc<Replies> {
        self.replies.clone()
    }

    /// What a SEND's preparation needs (`publish.rs`).
    pub(super) fn place(&self) -> Place<'_> {
        Place {
            definitions: &self.definitions,
        }
    }

    async fn subscribe_inner(&self, request: QueueSubscribe) -> Result<(), String> {
        let name = request
            .destination
            .strip_prefix(QUEUE_PREFIX)
            .unwrap_or(&request.destination)
            .to_owned();
        // The queue's definition wins over this SUBSCRIBE's arguments
        // unless this SUBSCRIBE creates the queue, as on one node.
        let (consumer, definition) = self.definitions.consumer(&name, &request.arguments).await?;
        let settings = self
            .policy
            .settings_for(&request.destination, &definition.arguments);
        let dead_letter = settings.dead_letter.clone();
        // Exclusive over all nodes, with the ERROR one node gives.
        let waiting = consumer.cached_info().num_waiting;
        let taken = self.holders.admit(&name, &request, waiting).await?;
        if let Err(error) = self
            .holders
            .enter(&name, definition.arguments.auto_delete)
            .await
        {
            // Not served: the exclusive hold just taken goes too.
            if let Some((holder, revision)) = &taken {
                self.holders.give_up(&name, holder, *revision).await;
            }
            return Err(error);
        }
        let queue = Queue {
            definitions: Some(self.definitions.clone()),
            name: name.clone(),
            consumer,
            holders: Some(self.holders.clone()),
        };
        let version = request.version;
        let subscription = self.serve(request, queue, &settings, dead_letter, None);
        if let Some((holder, revision)) = taken {
            self.holders
                .clone()
                .hold(name, holder, revision, subscription, version);
        }
        Ok(())
    }

    /// Registers `request` and starts its pull task on `queue`.
    pub(super) fn serve(
        &self,
        request: QueueSubscribe,
        queue: Queue,
        settings: &QueueSettings,
        dead_letter: Option<String>,
        durable: Option<DurableBinding>,
    ) -> Arc<Subscription> {
        let dead_letters = DeadLetters {
            jetstream: self.jetstream.clone(),
            definitions: self.definitions.clone(),
            max_deliver: settings.max_deliveries,
            target: dead_letter,
        };
        let (session, id) = (request.session, request.id.clone());
        let (subscription, served) = Subscription::new(request, settings, durable);
        self.sessions()
            .entry(session)
            .or_default()
            .insert(id, subscription.clone());
        tokio::spawn(super::consumer::pull_loop(
            queue,
            subscription.clone(),
            served,
            dead_letters,
            self.pulls.enter(),
        ));
        subscription
    }

    /// Takes subscription `id` of `session` out of the table.
    pub(super) fn remove(&self, session: SessionId, id: &str) -> Option<Arc<Subscription>> {
        let mut sessions = self.sessions();
        let removed = sessions.get_mut(&session).and_then(|s| s.remove(id));
        if sessions.get(&session).is_some_and(HashMap::is_empty) {
            sessions.remove(&session);
        }
        removed
    }
}

impl QueueEngine for NatsQueues {
    fn queues(&self) -> EngineFuture<'_, Vec<EngineQueue>> {
        Box::pin(self.stats.sample(&self.sessions))
    }

    fn publish(&self, send: QueueSend) -> EngineFuture<'_, Result<EngineAck, String>> {
        Box::pin(publish(
            self.place(),
            &self.jetstream,
            self.publish_timeout,
            send,
        ))
    }

    fn publish_batch(&self, sends: Vec<QueueSend>) -> EngineFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let client = self.jetstream.client();
            publish_batch(self.place(), &client, self.publish_timeout, sends).await
        })
    }

    fn reply_node(&self) -> Option<&str> {
        Some(self.replies.node())
    }

    fn reply_elsewhere(&self, destination: &str) -> bool {
        self.replies.elsewhere(destination).is_some()
    }

    fn send_reply(&self, message: Message) -> EngineFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self.replies.elsewhere(&message.destination) {
                Some(node) => self.replies.send(node, &message).await,
                None => Ok(()),
            }
        })
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
            subscription.settle(pending, nack).await;
            Some(Ok(()))
        })
    }

    fn unsubscribe<'a>(&'a self, session: SessionId, id: &'a str) -> EngineFuture<'a, bool> {
        Box::pin(async move {
            match self.remove(session, id) {
                Some(subscription) => {
                    subscription.stop();
                    // The RECEIPT goes out with the queue free for another
                    // exclusive or plain SUBSCRIBE.
                    self.holders.released(&holder_name(session, id)).await;
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
        Box::pin(self.serve_durable(subscribe))
    }

    fn remove_durable<'a>(
        &'a self,
        session: SessionId,
        id: &'a str,
    ) -> EngineFuture<'a, Result<bool, String>> {
        Box::pin(self.end_durable(session, id))
    }

    fn quiesce(&self) {
        // Before the sessions hear of the shutdown: no MESSAGE goes out
        // from now on, and what the subscriptions hand back is parked until
        // `flush`, when no pull of this node is out any more.
        self.pulls.close();
        for sessions in self.sessions().values() {
            for subscription in sessions.values() {
                subscription.stop();
            }
        }
    }

    fn flush(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            // Sessions still open after the grace: theirs end now.
            let left: Vec<Arc<Subscription>> = self
                .sessions()
                .drain()
                .flat_map(|(_, subscriptions)| subscriptions.into_values())
                .collect();
            for subscription in left {
                subscription.stop();
            }
            // The stopped tasks read their last pulls to the end (at most
            // PULL_WAIT); then everything they hold goes back at once.
            if !self.pulls.finish(PULL_WAIT + Duration::from_secs(1)).await {
                warn!("queue engine: pulls still out at shutdown; what they take comes back after ack_wait");
            }
            if let Err(error) = self.jetstream.client().flush().await {
                warn!(%error, "queue engine: hand-backs not flushed at shutdown; they come back after ack_wait");
            }
        })
    }

    fn sent(&self) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            if let Err(error) = self.jetstream.client().flush().await {
                warn!(%error, "queue engine: acknowledgements not flushed; they may come late");
            }
        })
    }

    fn detach(&self, session: SessionId) -> EngineFuture<'_, ()> {
        Box::pin(async move {
            let removed = self.sessions().remove(&session);
            removed.into_iter().flatten().for_each(|(_, s)| s.stop());
        })
    }
}
