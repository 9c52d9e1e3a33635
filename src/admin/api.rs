//! The admin API's documents (JSON) and actions, and the `/metrics`
//! scrape. Reads come from the connection table and one router snapshot
//! per request (bounded by the caps in `[limits]`); actions go to the
//! connection (close) or the router (purge, delete).

use super::response::{json, reply, text, Reply};
use super::scrape::{self, Scrape};
use super::AdminState;
use crate::metrics::connections::ConnectionEntry;
use crate::metrics::process;
use crate::router::sample::{AdminCommand, QueueSample, RouterSample};
use crate::router::RouterCommand;
use hyper::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::router::sample::QueueAction;

/// How long a request waits for the router's answer.
const ROUTER_TIME: Duration = Duration::from_secs(5);

/// The router's snapshot, or `None` if it did not answer in time; with
/// the cluster engine's queues added to its queues.
async fn sample(state: &AdminState) -> Option<RouterSample> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let asked = async {
        state
            .context
            .router
            .send(RouterCommand::Admin(AdminCommand::Sample { reply }))
            .await
            .ok()?;
        answer.await.ok()
    };
    let mut sample = tokio::time::timeout(ROUTER_TIME, asked)
        .await
        .ok()
        .flatten()?;
    // The cluster engine's queues (a cached reading: not one engine request
    // per scrape), after the node's own.
    if let Some(engine) = &state.context.queue_engine {
        if let Ok(queues) = tokio::time::timeout(ROUTER_TIME, engine.queues()).await {
            sample
                .queues
                .extend(queues.into_iter().map(QueueSample::from_engine));
        }
    }
    Some(sample)
}

/// `GET /metrics`: the OpenMetrics text.
pub async fn metrics(state: &AdminState) -> Reply {
    let reading = Scrape {
        metrics: state.context.metrics.clone(),
        store: state.store.clone(),
        sample: sample(state).await,
        process: process::read(),
    };
    match scrape::encode(reading) {
        Ok(body) => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body,
        ),
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded",
        ),
    }
}

fn epoch_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn sum(counters: &[AtomicU64]) -> u64 {
    counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
}

/// Messages published and delivered since the start.
pub fn totals(state: &AdminState) -> (u64, u64) {
    let metrics = &state.context.metrics;
    let connections = &metrics.connections;
    let live = connections.snapshot();
    let closed = connections.closed_counts();
    let published =
        live.iter().map(|e| sum(&e.counts.published)).sum::<u64>() + sum(&closed.published);
    let delivered = live.iter().map(|e| sum(&e.counts.delivered)).sum::<u64>()
        + sum(&closed.delivered)
        + sum(&metrics.router.delivered);
    (published, delivered)
}

/// `GET /api/overview`: version, uptime, totals, and published and
/// delivered per second over the last 10 s.
pub async fn overview(state: &AdminState) -> Reply {
    let metrics = &state.context.metrics;
    let connections = &metrics.connections;
    let live = connections.snapshot();
    let per_class = |pick: fn(&crate::metrics::connections::Counts) -> &[AtomicU64]| {
        live.iter().map(|e| sum(pick(&e.counts))).sum::<u64>()
            + sum(pick(connections.closed_counts()))
    };
    let classes = &metrics.classes;
    let by_class: Vec<Value> = (0..classes.len())
        .map(|class| {
            let count = |pick: fn(&crate::metrics::connections::Counts) -> &[AtomicU64]| {
                connections.total(&live, |c| &pick(c)[class])
            };
            let routed = metrics
                .router
                .delivered
                .get(class)
                .map_or(0, |c| c.load(Ordering::Relaxed));
            json!({
                "class": classes.label(class),
                "published": count(|c| &c.published),
                "delivered": count(|c| &c.delivered) + routed,
            })
        })
        .collect();
    let sample = sample(state).await;
    let (queues, queued, subscriptions) = sample.as_ref().map_or((0, 0, 0), |s| {
        (
            s.queues.len(),
            s.queues.iter().map(|q| q.depth).sum(),
            s.subscriptions,
        )
    });
    json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": metrics.started.elapsed().as_secs_f64(),
            "ready": state.ready().is_ok(),
            "connections": live.len(),
            "subscriptions": subscriptions,
            "queues": queues,
            "queued_messages": queued,
            "totals": {
                "published": per_class(|c| &c.published),
                "delivered": per_class(|c| &c.delivered)
                    + sum(&metrics.router.delivered)
                    + sum(&metrics.engine_delivered),
                "frames_received": live.iter().map(|e| sum(&e.counts.frames_in)).sum::<u64>() + sum(&connections.closed_counts().frames_in),
                "frames_sent": live.iter().map(|e| sum(&e.counts.frames_out)).sum::<u64>() + sum(&connections.closed_counts().frames_out),
                "bytes_received": connections.total(&live, |c| &c.bytes_in),
                "bytes_sent": connections.total(&live, |c| &c.bytes_out),
                "connections_opened": sum(&metrics.opened),
                "auth_failures": sum(&metrics.auth_failures),
            },
            "rates": {
                "window_seconds": super::rates::WINDOW.as_secs(),
                "published_per_second": state.rates.per_second().0,
                "delivered_per_second": state.rates.per_second().1,
            },
            "store_bytes": state.store.as_ref().map(|s| s.stored_bytes()),
            "classes": by_class,
        }),
    )
}

fn connection_json(entry: &ConnectionEntry, subscriptions: Option<usize>) -> Value {
    let connected = entry.connected.get();
    json!({
        "id": entry.id,
        "user": connected.and_then(|c| c.user.clone()),
        "address": entry.ip.to_string(),
        "transport": entry.transport,
        "version": connected.map(|c| c.version.as_str()),
        "subscriptions": subscriptions.unwrap_or(0),
        "outbound_bytes": entry.queued_bytes(),
        "since": epoch_seconds(entry.since),
        "frames_received": sum(&entry.counts.frames_in),
        "frames_sent": sum(&entry.counts.frames_out),
        "bytes_received": entry.counts.bytes_in.load(Ordering::Relaxed),
        "bytes_sent": entry.counts.bytes_out.load(Ordering::Relaxed),
    })
}

/// `GET /api/connections`: every open connection.
pub async fn connections(state: &AdminState) -> Reply {
    let live = state.context.metrics.connections.snapshot();
    let sample = sample(state).await.unwrap_or_default();
    let list: Vec<Value> = live
        .iter()
        .map(|entry| {
            connection_json(
                entry,
                sample.subscriptions_by_session.get(&entry.id).copied(),
            )
        })
        .collect();
    json(StatusCode::OK, &json!({ "connections": list }))
}

fn queue_json(queue: &QueueSample) -> Value {
    json!({
        "name": queue.name,
        "depth": queue.depth,
        "unacked": queue.unacked,
        "consumers": queue.consumers,
        "dropped": queue.dropped,
        "durable_topic": queue.durable_topic,
        // The cluster engine's own counts (null for the node's queues).
        "engine": queue.engine.as_ref().map(|e| json!({
            "pending": e.pending,
            "ack_pending": e.ack_pending,
            "redelivered": e.redelivered,
            "waiting_pulls": e.waiting_pulls,
            "local_consumers": e.local_consumers,
        })),
    })
}

/// `GET /api/queues` (every queue) or `GET /api/durables` (durable topic
/// subscriptions' queues only).
pub async fn queues(state: &AdminState, durable_only: bool) -> Reply {
    let Some(sample) = sample(state).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "the router did not answer");
    };
    let list: Vec<Value> = sample
        .queues
        .iter()
        .filter(|q| !durable_only || q.durable_topic.is_some())
        .map(queue_json)
        .collect();
    let key = if durable_only { "durables" } else { "queues" };
    json(StatusCode::OK, &json!({ key: list }))
}

fn parameter<'a>(parameters: &'a [(String, String)], name: &str) -> Option<&'a str> {
    parameters
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `POST /api/connections/close?id=N&reason=TEXT`: the connection gets
/// ERROR "closed by an administrator: TEXT" and is closed.
pub fn close_connection(state: &AdminState, parameters: &[(String, String)]) -> Reply {
    let Some(id) = parameter(parameters, "id").and_then(|id| id.parse::<u64>().ok()) else {
        return text(StatusCode::BAD_REQUEST, "id=N is required");
    };
    // The reason goes into an ERROR header: one printable line, bounded.
    let reason: String = parameter(parameters, "reason")
        .unwrap_or("no reason given")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    match state.context.metrics.connections.get(id) {
        Some(entry) => {
            tracing::info!(connection = id, %reason, "closed by an administrator");
            entry.request_close(reason);
            json(StatusCode::ACCEPTED, &json!({ "closing": id }))
        }
        None => text(StatusCode::NOT_FOUND, format!("no connection {id}")),
    }
}

/// `POST /api/queues/purge?name=/queue/X` and `POST /api/queues/delete?name=/queue/X`.
pub async fn queue_action(
    state: &AdminState,
    parameters: &[(String, String)],
    action: QueueAction,
) -> Reply {
    let Some(name) = parameter(parameters, "name") else {
        return text(StatusCode::BAD_REQUEST, "name=/queue/... is required");
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let command = RouterCommand::Admin(AdminCommand::QueueAction {
        name: name.to_owned(),
        action,
        reply,
    });
    let asked = async {
        state.context.router.send(command).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(ROUTER_TIME, asked)
        .await
        .ok()
        .flatten()
    {
        Some(Ok(removed)) => {
            tracing::info!(
                queue = name,
                ?action,
                removed,
                "queue changed by an administrator"
            );
            json(
                StatusCode::OK,
                &json!({ "queue": name, "removed_messages": removed }),
            )
        }
        Some(Err(why)) if why.starts_with("no queue") => text(StatusCode::NOT_FOUND, why),
        Some(Err(why)) => text(StatusCode::CONFLICT, why),
        None => text(StatusCode::SERVICE_UNAVAILABLE, "the router did not answer"),
    }
}

/// `POST /api/reload`: 200 with what changed, or 422 with why the
/// running configuration stays.
pub async fn reload(state: &AdminState) -> Reply {
    match (state.reload)().await {
        Ok(what) => json(
            StatusCode::OK,
            &json!({ "reloaded": true, "message": what }),
        ),
        Err(why) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({ "reloaded": false, "message": why }),
        ),
    }
}
