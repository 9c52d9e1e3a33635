//! Live-feed state on JetStream: the stream `<prefix>_feeds` and this
//! node's reader of it.
//!
//! The stream captures `<prefix>.feed.>` (the feed destinations' subjects,
//! `subject::feed_subject`), keeping per subject as many messages as the
//! largest `[[topics.rules]]` history, at least [`MIN_PER_SUBJECT`] (slack
//! for a node that reads behind; each node keeps only what its rule says), in
//! total at most `topics.max_history_bytes` (the oldest go first), with
//! `cluster.replicas` copies; file storage when a rule is `persistent`,
//! memory otherwise. Publishers put feed messages on it with a plain
//! publish, in order with their other topic messages (`topics.rs`).
//!
//! Each node reads the whole stream, in order, with one ordered consumer
//! (it replays from the start when the node starts, then follows; it makes
//! itself again after a gap or a reconnection) and applies every message
//! to its mirror of the feeds (`TopicIndex::publish_from_engine`): the
//! stream sequence is the message's `x-offset`, the stream's creation time
//! its `x-epoch`. So offsets, history and retained values are the same on
//! every node, and a client resumes on any node.

use super::subject::{feed_words, feeds_pattern};
use super::wire;
use crate::config::{ClusterConfig, TopicsConfig};
use crate::fanout::{FeedAck, IndexKey, TopicIndex};
use crate::metrics::Metrics;
use crate::model::compact::push_base62;
use crate::router::{RouterCommand, RouterHandle};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

/// Messages the stream keeps per destination at least, beyond what rules
/// keep: the stream drops a destination's oldest message when a newer one
/// comes past this limit, so a node reading it more than this many messages
/// of one destination behind would never see the dropped ones (it notices,
/// `engine_feeds.rs`: a resume from before them says `x-recovered:false`).
/// Bounded in bytes like the rest of the stream.
const MIN_PER_SUBJECT: usize = 128;

/// Why a feed message was not stored, for the client's ERROR.
pub(super) fn not_stored(error: &dyn std::fmt::Display) -> String {
    format!("cluster engine unreachable or behind: the feed message was not stored ({error})")
}

/// The confirmation of a feed message handed to the outgoing queue: the
/// publishing task sends the PubAck's future (or why it could not publish)
/// on `published_rx`; dropped unsent when the queue was full.
pub(super) fn confirmation(
    published_rx: oneshot::Receiver<Result<PublishAckFuture, String>>,
) -> FeedAck {
    Box::pin(async move {
        let acked = published_rx
            .await
            .map_err(|_| not_stored(&"the outgoing queue is full"))??;
        acked
            .await
            .map(|ack| ack.sequence)
            .map_err(|e| not_stored(&e))
    })
}

/// How often the reader asks whether its stream is still the same one.
const STREAM_CHECK: Duration = Duration::from_secs(2);

/// The feed stream of this node, before its reader starts.
#[derive(Debug)]
pub struct FeedStream {
    jetstream: jetstream::Context,
    config: stream::Config,
    prefix: Arc<str>,
    /// The stream's last sequence when the node started: the mirror is
    /// whole once it has applied it.
    pub last_at_start: u64,
}

/// Creates (or updates) the feed stream on `client`, trying again until
/// `connect_timeout` (a new JetStream cluster elects its leader first).
pub async fn feed_stream(
    client: async_nats::Client,
    cluster: &ClusterConfig,
    topics: &TopicsConfig,
) -> Result<FeedStream, String> {
    let jetstream = jetstream::new(client);
    let name = stream_name(&cluster.subject_prefix);
    let history = topics.rules.iter().map(|r| r.history).max().unwrap_or(0);
    let per_subject = history.max(MIN_PER_SUBJECT);
    let persistent = topics.rules.iter().any(|r| r.persistent);
    let config = stream::Config {
        name: name.clone(),
        subjects: vec![feeds_pattern(&cluster.subject_prefix)],
        retention: stream::RetentionPolicy::Limits,
        storage: if persistent {
            stream::StorageType::File
        } else {
            stream::StorageType::Memory
        },
        num_replicas: cluster.replicas,
        max_messages_per_subject: i64::try_from(per_subject.max(1)).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(topics.max_history_bytes).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::Old,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + cluster.connect_timeout;
    let last_at_start = loop {
        match make_stream(&jetstream, &config).await {
            Ok((_, last)) => break last,
            Err(error) if tokio::time::Instant::now() < deadline => {
                debug!(%error, stream = %name, "cluster: feed stream not created yet; trying again");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(error) => {
                return Err(format!(
                    "cluster: cannot create the feed stream '{name}' (cluster.replicas {}; a \
                     stream made with another storage kind must be deleted first): {error}",
                    cluster.replicas
                ))
            }
        }
    };
    info!(stream = %name, persistent, per_subject, "cluster live feeds on JetStream");
    Ok(FeedStream {
        jetstream,
        config,
        prefix: cluster.subject_prefix.as_str().into(),
        last_at_start,
    })
}

/// Creates or updates the stream; its epoch and last sequence.
async fn make_stream(
    jetstream: &jetstream::Context,
    config: &stream::Config,
) -> Result<(Arc<str>, u64), String> {
    let info = jetstream
        .create_or_update_stream(config.clone())
        .await
        .map_err(|e| e.to_string())?;
    // The stream's creation time: a stream made again after a loss has
    // another, so offsets from before it are known to be another epoch's.
    Ok((epoch_of(&info), info.state.last_sequence))
}

/// The feed stream's name: `<prefix>_feeds`.
pub(super) fn stream_name(prefix: &str) -> String {
    format!("{}_feeds", prefix.replace('.', "_"))
}

/// The epoch of the stream `info` describes: its creation time.
pub(super) fn epoch_of(info: &stream::Info) -> Arc<str> {
    let created = u64::try_from(info.created.unix_timestamp_nanos() / 1_000).unwrap_or(0);
    let mut epoch = String::with_capacity(12);
    push_base62(&mut epoch, created);
    epoch.into()
}

/// Whether the stream is still the one of `epoch` (not lost, not made
/// anew). The ordered consumer alone would wait for a lost stream for ever.
async fn still_there(stream: &mut stream::Stream, epoch: &str) -> Result<(), String> {
    let info = stream
        .info()
        .await
        .map_err(|e| format!("the feed stream: {e}"))?;
    if *epoch_of(info) == *epoch {
        Ok(())
    } else {
        Err("the feed stream was made anew".into())
    }
}

impl FeedStream {
    /// Starts this node's reader: every feed message, in stream order, into
    /// `index` (and through `router` to its client-ack subscriptions).
    pub fn spawn(self, index: Arc<TopicIndex>, router: RouterHandle, metrics: Arc<Metrics>) {
        tokio::spawn(read_loop(self, index, router, metrics));
    }
}

/// Reads the stream for ever; after a failure, makes the stream and the
/// consumer again and goes on after the last sequence applied.
async fn read_loop(
    feeds: FeedStream,
    index: Arc<TopicIndex>,
    router: RouterHandle,
    metrics: Arc<Metrics>,
) {
    let mut epoch: Option<Arc<str>> = None;
    let mut applied = 0u64;
    loop {
        match read(&feeds, &index, &router, &metrics, &mut epoch, &mut applied).await {
            Ok(()) => return,
            Err(error) => {
                warn!(%error, applied, "cluster: feed stream reader stopped; starting again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One consumer's life. `Ok` only when the router has gone (shutdown).
async fn read(
    feeds: &FeedStream,
    index: &TopicIndex,
    router: &RouterHandle,
    metrics: &Metrics,
    epoch: &mut Option<Arc<str>>,
    applied: &mut u64,
) -> Result<(), String> {
    let (now_epoch, _) = make_stream(&feeds.jetstream, &feeds.config).await?;
    if epoch.as_ref() != Some(&now_epoch) {
        if epoch.is_some() {
            warn!("cluster: the feed stream was made anew: feeds start a new epoch");
        }
        *epoch = Some(now_epoch.clone());
        *applied = 0;
        index.feeds_restarted();
    }
    let deliver_policy = match *applied {
        0 => consumer::DeliverPolicy::All,
        last => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: last + 1,
        },
    };
    let mut stream = feeds
        .jetstream
        .get_stream(&feeds.config.name)
        .await
        .map_err(|e| e.to_string())?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: feeds_pattern(&feeds.prefix),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let mut check = tokio::time::interval(STREAM_CHECK);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            _ = check.tick() => {
                still_there(&mut stream, &now_epoch).await?;
                continue;
            }
        };
        let Some(message) = message else { break };
        let message = message.map_err(|e| e.to_string())?;
        let (sequence, at_ms) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0),
            ),
            Err(error) => {
                debug!(%error, "a feed message without stream info: ignored");
                continue;
            }
        };
        *applied = sequence;
        let decoded = feed_words(&feeds.prefix, &message.subject)
            .zip(wire::decode(message.message.payload.clone()));
        let Some((words, mut decoded)) = decoded else {
            debug!(subject = %message.subject, "not a feed message: ignored");
            index.feeds_applied(sequence);
            continue;
        };
        let (pushed, for_router) =
            index.publish_from_engine(&words, &mut decoded, sequence, &now_epoch, at_ms);
        metrics.engine_delivered_add(&decoded.destination, pushed);
        let durables = for_router
            .iter()
            .any(|key| matches!(key, IndexKey::Durable(_)));
        let subscriptions: Vec<_> = for_router
            .into_iter()
            .filter_map(IndexKey::into_subscription)
            .collect();
        if subscriptions.is_empty() && !durables {
            continue;
        }
        // Every node reads each feed message once. Durable subscriptions
        // live in the engine; any the router still holds (restored from
        // the store of a version that kept feed durables per node) get it
        // here.
        let remote = RouterCommand::Remote {
            words,
            message: decoded,
            subscriptions,
            durables,
        };
        if router.send(remote).await.is_err() {
            return Ok(());
        }
    }
    Err("the consumer's messages ended".into())
}
