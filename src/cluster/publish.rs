//! A queue SEND's way into the stream when the client waits for it (a
//! RECEIPT, `persistent:true`): the PubAck awaited, and the publish made
//! again while the stream cannot answer for a moment.
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

use async_nats::jetstream::context::{PublishAckFuture, PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use async_nats::HeaderMap;
use bytes::Bytes;
use std::time::Duration;
use tokio::time::Instant;
use tracing::debug;

/// The pause between two attempts (an election takes seconds).
const RETRY_PAUSE: Duration = Duration::from_millis(250);

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
