//! The engine's queues as the admin API, the dashboard and the metrics
//! show them (`QueueEngine::queues`): per queue (and per durable topic
//! subscription) its JetStream consumer's counts, read from the engine,
//! plus this node's subscribers of it, counted at each call.
//!
//! Why a cache: every scrape of every node would otherwise be one JetStream
//! API request per queue. The consumers of the shared queue stream, of the
//! durable subscriptions' stream and of each queue's own stream (a queue
//! with bounds of its own) are listed (one paged request per stream, every
//! consumer's info in it) at most once per
//! [`FRESH_FOR`], by one caller at a time; the others use that reading. A
//! failed reading keeps the previous one (the engine unreachable: the
//! counts are as last known).

use super::durables::{Durables, DESTINATION, KEY};
use super::streams::is_own_stream;
use super::subject::queue_name;
use super::subscription::Subscription;
use crate::config::ClusterConfig;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::session_id::SessionId;
use crate::queue::EngineQueue;
use crate::router::DURABLE_PREFIX;
use async_nats::jetstream::consumer::Info;
use futures_util::TryStreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// The engine's table of this node's subscriptions (`queues.rs`).
type Sessions = HashMap<SessionId, HashMap<Arc<str>, Arc<Subscription>>>;

/// How long a reading of the engine's consumers is used.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(3);

/// The last reading of the engine's consumers, and where to read them.
pub(super) struct QueueStats {
    jetstream: async_nats::jetstream::Context,
    /// The queue stream's, the durable subscriptions' stream's and the
    /// feed stream's names (the last two hold durable subscriptions).
    streams: [String; 3],
    /// `[cluster] subject_prefix`.
    prefix: String,
    /// When it was read, and the queues (local subscribers left at 0). A
    /// leaf lock, held to copy or replace the reading.
    last: Mutex<Option<(Instant, Arc<Vec<Keyed>>)>>,
    /// One reading at a time: callers meanwhile wait for it, then use it.
    reading: tokio::sync::Mutex<()>,
}

/// A queue as read, with the key its local subscribers are counted under.
struct Keyed {
    /// `/queue/<name>` for a queue, the consumer's name for a durable one.
    key: String,
    queue: EngineQueue,
}

impl QueueStats {
    /// Reads the consumers of `queue_stream` and of `durables`' stream.
    pub(super) fn new(
        jetstream: &async_nats::jetstream::Context,
        queue_stream: &str,
        durables: &Durables,
        config: &ClusterConfig,
    ) -> QueueStats {
        QueueStats {
            jetstream: jetstream.clone(),
            streams: [
                queue_stream.to_owned(),
                durables.stream().to_owned(),
                durables.feed_stream().to_owned(),
            ],
            prefix: config.subject_prefix.clone(),
            last: Mutex::new(None),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    fn last(&self) -> Option<(Instant, Arc<Vec<Keyed>>)> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl QueueStats {
    /// The engine's queues, with this node's subscribers (in `sessions`,
    /// the engine's table) counted.
    pub(super) async fn sample(&self, sessions: &Mutex<Sessions>) -> Vec<EngineQueue> {
        let read = {
            let _one = self.reading.lock().await;
            match self.last() {
                Some((at, read)) if at.elapsed() < FRESH_FOR => read,
                previous => match self.read_engine().await {
                    Ok(read) => {
                        let read = Arc::new(read);
                        *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some((Instant::now(), read.clone()));
                        read
                    }
                    Err(error) => {
                        debug!(%error, "queue engine: consumers not read; the last reading is shown");
                        previous.map(|(_, read)| read).unwrap_or_default()
                    }
                },
            }
        };
        let local = local_subscribers(sessions);
        read.iter()
            .map(|keyed| EngineQueue {
                local_consumers: local.get(keyed.key.as_str()).copied().unwrap_or(0),
                ..keyed.queue.clone()
            })
            .collect()
    }

    /// Every consumer of the queue streams and of the durable subscriptions'.
    async fn read_engine(&self) -> Result<Vec<Keyed>, String> {
        let mut read = Vec::new();
        let own: Vec<String> = self
            .jetstream
            .stream_names()
            .try_filter(|name| std::future::ready(is_own_stream(&self.prefix, name)))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let listed = self.streams.iter().zip([false, true, true]);
        for (stream, durable) in listed.chain(own.iter().map(|stream| (stream, false))) {
            let stream = self
                .jetstream
                .get_stream_no_info(stream)
                .await
                .map_err(|e| e.to_string())?;
            let infos: Vec<Info> = stream
                .consumers()
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            read.extend(infos.iter().filter_map(|info| self.keyed(info, durable)));
        }
        read.sort_by(|a, b| a.queue.name.cmp(&b.queue.name));
        Ok(read)
    }

    /// One consumer as a queue; `None` for one that is not stomphub's.
    fn keyed(&self, info: &Info, durable: bool) -> Option<Keyed> {
        let (key, name, durable_topic) = if durable {
            let metadata = &info.config.metadata;
            let name = format!("{DURABLE_PREFIX}{}", metadata.get(KEY)?);
            (info.name.clone(), name, metadata.get(DESTINATION).cloned())
        } else {
            let name = queue_name(&self.prefix, &info.config.filter_subject)?;
            let name = format!("{QUEUE_PREFIX}{name}");
            (name.clone(), name, None)
        };
        Some(Keyed {
            key,
            queue: EngineQueue {
                name,
                durable_topic,
                pending: info.num_pending,
                ack_pending: u64::try_from(info.num_ack_pending).unwrap_or(0),
                redelivered: u64::try_from(info.num_redelivered).unwrap_or(0),
                waiting_pulls: u64::try_from(info.num_waiting).unwrap_or(0),
                local_consumers: 0,
            },
        })
    }
}

/// This node's subscribers, by the key [`Keyed`] uses (the table's lock
/// held for the count only).
fn local_subscribers(sessions: &Mutex<Sessions>) -> HashMap<String, usize> {
    let sessions = sessions.lock().unwrap_or_else(|p| p.into_inner());
    let mut counts = HashMap::new();
    for subscription in sessions.values().flat_map(HashMap::values) {
        let key = match &subscription.durable {
            Some(durable) => durable.consumer.clone(),
            None => subscription.destination.to_string(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts
}
