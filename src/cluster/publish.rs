//! A queue SEND made ready for the stream (`prepare`), and its way in when
//! the client waits for it (a RECEIPT, `persistent:true`): the PubAck
//! awaited, and the publish made again while the stream cannot answer for
//! a moment.
//!
//! When the stream's leader dies, JetStream elects another within seconds;
//! meanwhile a publish finds no responder (`no stream found`) or its
//! PubAck never comes (timed out). Rather than an ERROR (and the end of the
//! connection) for every SEND of those seconds, the same message is
//! published again, with the same `Nats-Msg-Id` (so a first attempt that
//! was stored after all is not stored twice), until `publish_timeout` is
//! over; only then does the client get ERROR. So is one that JetStream
//! refuses because the same id is still being stored (a client's retry). Other failures (the stream
//! full, a message too large) are final at once.

use super::definitions::Definitions;
use super::wire;
use crate::model::destination::QUEUE_PREFIX;
use crate::model::message::Message;
use crate::queue::{EngineAck, QueueSend, REFUSAL};
use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// The pause between two attempts (an election takes seconds).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// The ERROR message of a queue SEND the engine did not store.
pub(super) fn not_stored(error: &dyn std::fmt::Display) -> String {
    format!("queue engine unreachable or full: the message was not stored ({error})")
}

/// Where queue SENDs go: what [`prepare`] needs of the engine.
#[derive(Clone, Copy)]
pub(super) struct Place<'a> {
    /// The queues' definitions (and with them `[queues]`, its rules and
    /// which stream each queue lives in).
    pub(super) definitions: &'a Arc<Definitions>,
}

/// A queue SEND made ready for the stream: its queue, where it goes, NATS
/// headers and payload (`wire`).
pub(super) struct Prepared {
    /// The queue's name (without `/queue/`).
    pub(super) name: String,
    /// The queue's definition: its stream and subject, its bounds.
    pub(super) definition: super::definitions::Definition,
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
}

/// Makes `send` ready for the stream: its queue defined (a SEND to a
/// queue that does not exist yet creates it, with its own arguments),
/// its expiry (as on one node, a message without its own gets the
/// queue's `message_ttl`: its `x-message-ttl` when it was created with
/// one, else `[queues]` and its rules) and, with `dedup`, its
/// `Nats-Msg-Id`.
pub(super) async fn prepare(
    place: Place<'_>,
    send: QueueSend,
    dedup: bool,
) -> Result<Prepared, String> {
    let name = send
        .destination
        .strip_prefix(QUEUE_PREFIX)
        .unwrap_or(&send.destination)
        .to_owned();
    let definition = place
        .definitions
        .definition(&name, &send.arguments)
        .await
        // A refusal by the queue's settings (too many own streams) is
        // the client's ERROR as it is.
        .map_err(|e| {
            if e.starts_with(REFUSAL) {
                e
            } else {
                not_stored(&e)
            }
        })?;
    let subject = definition.subject.clone();
    let expires_at = send
        .expires_at
        .or_else(|| place.definitions.expiry(&name, &definition));
    let message = Message {
        expires_at,
        id: send.id,
        text: std::str::from_utf8(&send.body).is_ok(),
        destination: send.destination,
        headers: send.headers,
        body: send.body,
    };
    let mut headers = HeaderMap::new();
    if dedup {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, send.dedup_id.as_str());
    }
    Ok(Prepared {
        name,
        definition,
        subject,
        headers,
        payload: wire::encode(&message),
    })
}

/// Hands `send` to the stream; with `confirm`, the future of its PubAck,
/// published again through a leader election up to `publish_timeout`;
/// without, a future that fails only when a bound of the queue refused it.
pub(super) async fn publish(
    place: Place<'_>,
    jetstream: &jetstream::Context,
    publish_timeout: Duration,
    send: QueueSend,
) -> Result<EngineAck, String> {
    let confirm = send.confirm;
    let Prepared {
        name,
        definition,
        subject,
        headers,
        payload,
    } = prepare(place, send, true).await?;
    let acked = jetstream
        .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
        .await
        .map_err(|e| not_stored(&e))?;
    if confirm {
        // Published again through a leader election, up to
        // `publish_timeout` (`Publication::confirm`). A bound of the queue
        // that refuses it is the queue's ERROR, as on one node.
        let definitions = place.definitions.clone();
        let publication = Publication {
            jetstream: jetstream.clone(),
            subject,
            headers,
            payload,
            deadline: tokio::time::Instant::now() + publish_timeout,
        };
        return Ok(Box::pin(async move {
            publication
                .confirm(acked)
                .await
                .map_err(|e| definitions.refusal(&name, &definition, &e))
        }));
    }
    // No RECEIPT waits for it, but a bound that refuses it is still the
    // client's ERROR, as on one node (the session awaits it behind the
    // SEND, in order, without holding up its reading: `session/confirm.rs`).
    // Other failures are only logged: an election, an unreachable engine.
    let definitions = place.definitions.clone();
    Ok(Box::pin(async move {
        let Err(error) = acked.await else {
            return Ok(());
        };
        let refusal = definitions.refusal(&name, &definition, &error.to_string());
        if refusal.starts_with(REFUSAL) {
            return Err(refusal);
        }
        warn!(%error, "queue engine: a queue SEND without a receipt was not stored");
        Ok(())
    }))
}

/// One SEND's publication, kept to be made again.
pub(super) struct Publication {
    pub(super) jetstream: jetstream::Context,
    pub(super) subject: String,
    /// With the `Nats-Msg-Id`.
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
    /// After this, no new attempt: the last failure is the answer.
    pub(super) deadline: Instant,
}

impl Publication {
    /// Awaits `first`'s PubAck, publishing again while the failure is one
    /// an election explains and the deadline is ahead. `Err` says why the
    /// message was not stored.
    pub(super) async fn confirm(self, first: PublishAckFuture) -> Result<(), String> {
        let mut attempt = first;
        let mut attempts = 1;
        loop {
            let error = match attempt.await {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            if !passing(&error) || Instant::now() + RETRY_PAUSE >= self.deadline {
                return Err(error.to_string());
            }
            debug!(%error, attempts, subject = %self.subject, "queue engine: publishing again");
            tokio::time::sleep(RETRY_PAUSE).await;
            attempts += 1;
            attempt = self
                .jetstream
                .publish_with_headers(
                    self.subject.clone(),
                    self.headers.clone(),
                    self.payload.clone(),
                )
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}

/// Whether `error` passes with time: no stream leader to answer (no
/// responder, or no PubAck in time), or the same `Nats-Msg-Id` still being
/// stored from an earlier attempt (a client's retry on another node, say).
fn passing(error: &PublishError) -> bool {
    match error.kind() {
        PublishErrorKind::StreamNotFound | PublishErrorKind::TimedOut => true,
        PublishErrorKind::Other => std::error::Error::source(error)
            .and_then(|source| source.downcast_ref::<jetstream::Error>())
            .is_some_and(|api| api.error_code() == ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT),
        _ => false,
    }
}
