//! What `topics.rs` sends to the engine: one queue of outgoing messages
//! (plain topic messages, live-feed messages, persistent topic SENDs kept
//! for durable subscriptions) and the one task that publishes them in
//! order on the node's connection.

use super::confirm::{publish_confirmed, Confirm};
use super::feeds::not_stored;
use async_nats::jetstream::context::PublishAckFuture;
use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// One message on its way to the engine.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub(super) subject: String,
    pub(super) payload: Bytes,
    /// A feed message whose SEND waits for the feed stream's PubAck: it
    /// is published through JetStream and the PubAck's future (or why it
    /// could not be sent) goes here.
    pub(super) confirm: Option<oneshot::Sender<Result<PublishAckFuture, String>>>,
    /// A persistent topic SEND with a RECEIPT (`confirm.rs`): published
    /// through JetStream, kept by the durable subscriptions' stream.
    pub(super) kept: Option<Confirm>,
    /// A feed message's copy for durable subscriptions: the same payload,
    /// published on this subject right after (core NATS, not waited for),
    /// which the durable subscriptions' stream captures when one matches.
    pub(super) copy: Option<String>,
}

/// Publishes what `export` queued, in order, on the one connection.
pub(super) async fn publish_loop(
    client: async_nats::Client,
    jetstream: async_nats::jetstream::Context,
    mut outgoing_rx: mpsc::Receiver<Outgoing>,
    outgoing_bytes: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(256);
    let mut refused: u64 = 0;
    while outgoing_rx.recv_many(&mut batch, 256).await > 0 {
        for Outgoing {
            subject,
            payload,
            confirm,
            kept,
            copy,
        } in batch.drain(..)
        {
            outgoing_bytes.fetch_sub(payload.len(), Ordering::AcqRel);
            // After the feed message, in line with what follows it.
            let copy = copy.map(|copy| (copy, payload.clone()));
            if let Some(confirm) = kept {
                // The same one message, on the same connection and so in
                // order, with a reply subject for the PubAck.
                publish_confirmed(&jetstream, subject, payload, confirm).await;
                continue;
            }
            if let Some(confirm_tx) = confirm {
                // In line with the rest (order holds); the PubAck is
                // awaited by the SEND, not here.
                let sent = jetstream
                    .publish(subject, payload)
                    .await
                    .map_err(|e| not_stored(&e));
                // No copy of one the engine did not take (its SEND gets
                // ERROR; a retry would make it twice).
                if sent.is_ok() {
                    publish_copy(&client, copy, &mut refused).await;
                }
                let _ = confirm_tx.send(sent);
                continue;
            }
            // Waits while the client's own buffer is full (reconnecting);
            // our bounded queue takes the rest.
            match client.publish(subject, payload).await {
                Ok(()) => publish_copy(&client, copy, &mut refused).await,
                Err(error) => refused_one(&error, &mut refused),
            }
        }
    }
}

/// Publishes a feed message's copy for durable subscriptions, if any.
async fn publish_copy(
    client: &async_nats::Client,
    copy: Option<(String, Bytes)>,
    refused: &mut u64,
) {
    if let Some((subject, payload)) = copy {
        if let Err(error) = client.publish(subject, payload).await {
            refused_one(&error, refused);
        }
    }
}

/// Counts a message the client would not take: too large for the server's
/// max_payload (warned at start) or the client closed for good. Logged at
/// 1, 2, 4, 8, ...
fn refused_one(error: &dyn std::fmt::Display, refused: &mut u64) {
    *refused += 1;
    if refused.is_power_of_two() {
        warn!(%error, refused = *refused, "topic message not published to the engine");
    }
}
