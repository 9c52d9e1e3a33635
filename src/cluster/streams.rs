//! The streams queues live in: the shared one (every queue the `[queues]`
//! defaults bound) and a queue's own one (a queue whose rule or
//! `x-max-length` gives it other bounds), with the bounds JetStream applies.
//!
//! JetStream's limits are per stream: `max_msgs_per_subject` (one value
//! for every subject), `max_msgs`, `max_bytes` and one discard policy. So
//! the shared stream applies the default `max_length` per queue (a queue is
//! one subject) and the default `overflow`, and a queue with other bounds
//! gets a stream of its own, with its `max_length`, `max_bytes` and
//! `overflow` as the stream's limits. An existing shared stream keeps its
//! per-queue bounds at a start (a change would drop or refuse messages of
//! every queue): only a new one gets the config's.

use super::subject::{bounded_queue_subject, queue_consumer, queues_pattern};
use crate::config::{ClusterConfig, Overflow, QueuesConfig};
use crate::queue::QueueSettings;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate.
pub(super) const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The shared stream's name under `prefix`.
pub(super) fn shared_stream(prefix: &str) -> String {
    format!("{}_queues", prefix.replace('.', "_"))
}

/// The name of queue `name`'s own stream under `prefix`.
pub(super) fn own_stream(prefix: &str, name: &str) -> String {
    format!("{}_{}", prefix.replace('.', "_"), queue_consumer(name))
}

/// Whether stream `stream` is a queue's own one under `prefix`: its name
/// is the prefix's, then the queue's consumer name (`q-...`).
pub(super) fn is_own_stream(prefix: &str, stream: &str) -> bool {
    stream
        .strip_prefix(&prefix.replace('.', "_"))
        .is_some_and(|rest| rest.starts_with("_q-"))
}

/// Whether a queue with `settings` needs its own stream: its bounds are
/// not the defaults the shared stream applies.
pub(super) fn needs_own_stream(settings: &QueueSettings, defaults: &QueuesConfig) -> bool {
    (settings.max_length, settings.max_bytes, settings.overflow)
        != (defaults.max_length, defaults.max_bytes, defaults.overflow)
}

/// Refuses a new own stream for queue `name` past `[cluster]
/// max_queue_streams` (each reserves up to `max_bytes` on every replica:
/// a client cycling queue names with `x-max-length` would exhaust the
/// store). `Err` is the SEND's or SUBSCRIBE's ERROR.
pub(super) async fn room_for_own_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<(), String> {
    let own = loop {
        match own_streams(jetstream, config, name).await {
            Ok(own) => break own,
            // An election: tried again, as the creation is.
            Err(error) if tokio::time::Instant::now() + LIST_PAUSE < deadline => {
                debug!(%error, "cluster: streams not listed yet; trying again");
                tokio::time::sleep(LIST_PAUSE).await;
            }
            Err(error) => return Err(format!("queue engine: cannot list the streams: {error}")),
        }
    };
    match own {
        Some(own) if own >= config.max_queue_streams => Err(format!(
            "queue '/queue/{name}' not created: the cluster has {own} queues with bounds of their \
             own (a rule or x-max-length other than the [queues] defaults), \
             cluster.max_queue_streams is {}; use the default bounds, delete such queues or raise \
             the setting",
            config.max_queue_streams
        )),
        _ => Ok(()),
    }
}

/// How many own streams there are under the prefix; `None` if queue
/// `name`'s is one of them (no new one then).
async fn own_streams(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
    name: &str,
) -> Result<Option<usize>, String> {
    let prefix = &config.subject_prefix;
    let wanted = own_stream(prefix, name);
    let mut names = jetstream.stream_names();
    let mut own = 0;
    while let Some(stream) = names.next().await {
        let stream = stream.map_err(|e| e.to_string())?;
        if stream == wanted {
            return Ok(None);
        }
        own += usize::from(is_own_stream(prefix, &stream));
    }
    Ok(Some(own))
}

/// The pause between two listings of the streams while JetStream cannot
/// answer.
const LIST_PAUSE: Duration = Duration::from_millis(250);

/// The stream of queue `name` with `settings` (its own bounds): one
/// subject; `reject` refuses a new message past a bound, `drop-oldest`
/// drops the oldest message. The bytes are at most `[cluster] max_bytes`.
pub(super) fn own_stream_config(
    config: &ClusterConfig,
    name: &str,
    settings: &QueueSettings,
) -> stream::Config {
    let max_bytes = u64::try_from(settings.max_bytes)
        .unwrap_or(u64::MAX)
        .min(config.max_bytes);
    stream::Config {
        name: own_stream(&config.subject_prefix, name),
        subjects: vec![bounded_queue_subject(&config.subject_prefix, name)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        // 0 would mean no bound to JetStream.
        max_messages: i64::try_from(settings.max_length.max(1)).unwrap_or(i64::MAX),
        max_bytes: i64::try_from(max_bytes.max(1)).unwrap_or(i64::MAX),
        duplicate_window: DUPLICATE_WINDOW,
        discard: discard(settings.overflow),
        // A COMMIT's SENDs to this queue are one atomic batch.
        allow_atomic_publish: true,
        ..Default::default()
    }
}

/// JetStream's discard policy for `overflow`.
fn discard(overflow: Overflow) -> stream::DiscardPolicy {
    match overflow {
        Overflow::Reject => stream::DiscardPolicy::New,
        Overflow::DropOldest => stream::DiscardPolicy::Old,
    }
}

/// Creates (or updates) the stream holding every queue the defaults bound;
/// returns its name and whether the server kept `allow_atomic` in its
/// config.
pub(super) async fn queue_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
    queues: &QueuesConfig,
) -> Result<(String, bool), String> {
    if config.max_deliver != ClusterConfig::default().max_deliver {
        warn!(
            max_deliver = config.max_deliver,
            "cluster.max_deliver is ignored: queues on the engine dead-letter after [queues] \
             max_deliveries (and its rules), as on one node"
        );
    }
    let stream = shared_stream(&config.subject_prefix);
    let mut stream_config = stream::Config {
        name: stream.clone(),
        subjects: vec![queues_pattern(&config.subject_prefix)],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: config.replicas,
        max_bytes: i64::try_from(config.max_bytes).unwrap_or(i64::MAX),
        // Each queue is one subject: `[queues] max_length` per queue.
        max_messages_per_subject: i64::try_from(queues.max_length.max(1)).unwrap_or(i64::MAX),
        // `reject`: a SEND past a queue's bound is refused; `drop-oldest`:
        // the queue's oldest message goes (per-subject limits drop old
        // messages unless told otherwise).
        discard_new_per_subject: queues.overflow == Overflow::Reject,
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
        let attempt = match existing(jetstream, &stream).await {
            Ok(Some(kept)) => {
                keep_per_queue_bounds(&mut stream_config, &kept);
                jetstream
                    .update_stream(stream_config.clone())
                    .await
                    .map_err(|e| e.to_string())
            }
            Ok(None) => jetstream
                .create_stream(stream_config.clone())
                .await
                .map(|created| created.cached_info().clone())
                .map_err(|e| e.to_string()),
            Err(error) => Err(error),
        };
        match attempt {
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

/// The config of stream `name` if it exists; `Ok(None)` if the server
/// says there is none.
async fn existing(
    jetstream: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>, String> {
    match jetstream.get_stream(name).await {
        Ok(stream) => Ok(Some(stream.cached_info().config.clone())),
        Err(error) => match error.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(api)
                if api.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(error.to_string()),
        },
    }
}

/// An existing shared stream keeps its per-queue bounds: changing them at
/// a node's start would drop the oldest messages of every queue over a
/// lowered limit (receipted ones) or flip the overflow of every queue, on
/// one node's config. A difference is logged; the NATS tools change them.
fn keep_per_queue_bounds(wanted: &mut stream::Config, kept: &stream::Config) {
    if (
        wanted.max_messages_per_subject,
        wanted.discard_new_per_subject,
    ) != (kept.max_messages_per_subject, kept.discard_new_per_subject)
    {
        warn!(
            stream = %kept.name,
            config_max_length = wanted.max_messages_per_subject,
            stream_max_length = kept.max_messages_per_subject,
            config_reject = wanted.discard_new_per_subject,
            stream_reject = kept.discard_new_per_subject,
            "cluster: [queues] max_length/overflow differ from the queue stream's; the stream's \
             are kept (a change would drop or refuse messages of every queue): change them with \
             the NATS tools (nats stream edit --max-msgs-per-subject, --discard-per-subject)"
        );
    }
    wanted.max_messages_per_subject = kept.max_messages_per_subject;
    wanted.discard_new_per_subject = kept.discard_new_per_subject;
}

/// Whether a PubAck's error `text` says a bound of the stream refused the
/// message: a queue's own stream full, or the shared stream's per-queue
/// `max_length` reached (the shared stream's own `max_bytes` is the
/// engine's, not the queue's).
pub(super) fn is_queue_full(text: &str, own: bool) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("maximum messages per subject exceeded")
        || (own
            && (text.contains("maximum messages exceeded")
                || text.contains("maximum bytes exceeded")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queues_own_stream_is_told_from_the_others() {
        assert!(is_own_stream("sh.a", &own_stream("sh.a", "orders")));
        assert!(is_own_stream("sh.a", &own_stream("sh.a", "")));
        assert!(!is_own_stream("sh.a", &shared_stream("sh.a")));
        assert!(!is_own_stream("sh.a", "sh_a_durables"));
        assert!(!is_own_stream("sh.b", &own_stream("sh.a", "orders")));
    }

    #[test]
    fn a_full_queue_is_told_from_a_full_engine() {
        assert!(is_queue_full(
            "nats: maximum messages per subject exceeded",
            false
        ));
        assert!(is_queue_full("maximum messages exceeded", true));
        assert!(is_queue_full("maximum bytes exceeded", true));
        assert!(!is_queue_full("maximum bytes exceeded", false));
        assert!(!is_queue_full("timed out", true));
    }
}
