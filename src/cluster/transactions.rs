//! A COMMIT's queue SENDs on JetStream: one atomic batch, all stored or none.
//!
//! The queue stream allows atomic publishing (`allow_atomic`, nats-server
//! 2.12 and later). Every message of the batch carries `Nats-Batch-Id` (one
//! random id) and `Nats-Batch-Sequence` (1, 2, ...); the last one also
//! `Nats-Batch-Commit: 1` and is a request: its answer is the batch's
//! PubAck, sent once the stream's replicas have stored the whole batch, or
//! an error, and then the stream keeps none of it. Until the commit the
//! server holds the batch apart: no consumer sees any of it.
//!
//! Not made again through a leader election (as a single SEND is,
//! `publish.rs`): a batch whose commit fails is gone whole and the client
//! gets ERROR. No `Nats-Msg-Id` in a batch (atomic batches do not take
//! one): a client's `message-id` does not deduplicate a COMMIT's SENDs.

use super::publish::{not_stored, prepare, Place, Prepared};
use crate::queue::QueueSend;
use async_nats::jetstream::response::Response;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use std::time::Duration;

/// The server's limit on messages in one atomic batch (its default
/// `max_batch_size`).
pub const MAX_BATCH: usize = 1000;

/// What the commit's answer says on success.
#[derive(Debug, Deserialize)]
struct BatchAck {
    /// How many messages the stream stored for the batch.
    #[serde(default)]
    count: Option<u64>,
}

/// Stores `sends` as one atomic batch, in order, through `client`,
/// waiting `timeout` for the commit's answer; `Err` is the ERROR message
/// (then none of them is stored).
pub(super) async fn publish_batch(
    place: Place<'_>,
    client: &async_nats::Client,
    timeout: Duration,
    sends: Vec<QueueSend>,
) -> Result<(), String> {
    let total = sends.len();
    if total == 0 {
        return Ok(());
    }
    if total > MAX_BATCH {
        return Err(format!(
            "transaction not committed: it holds {total} queue SENDs and the cluster engine \
             stores at most {MAX_BATCH} in one transaction"
        ));
    }
    let mut prepared = Vec::with_capacity(total);
    for send in sends {
        prepared.push(prepare(place, send, false).await?);
    }
    let batch = batch_id()?;
    let refused =
        |e: &dyn std::fmt::Display| format!("transaction not committed: {}", not_stored(e));
    for (index, message) in prepared.into_iter().enumerate() {
        let Prepared {
            subject,
            mut headers,
            payload,
        } = message;
        let sequence = index + 1;
        headers.insert("Nats-Batch-Id", batch.as_str());
        headers.insert("Nats-Batch-Sequence", sequence.to_string().as_str());
        if sequence < total {
            // Held apart by the server until the commit; an error on
            // one of these makes the commit fail.
            client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| refused(&e))?;
            continue;
        }
        headers.insert("Nats-Batch-Commit", "1");
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(timeout));
        let answer = client
            .send_request(subject, request)
            .await
            .map_err(|e| refused(&e))?;
        return match serde_json::from_slice::<Response<BatchAck>>(&answer.payload) {
            Ok(Response::Ok(ack)) if ack.count.is_none_or(|n| n == total as u64) => Ok(()),
            Ok(Response::Ok(ack)) => Err(refused(&format!(
                "the engine stored {:?} of {total} messages",
                ack.count
            ))),
            Ok(Response::Err { error }) => Err(refused(&error)),
            Err(error) => Err(refused(&format!("unreadable answer: {error}"))),
        };
    }
    Ok(())
}

/// A random batch id: 128 bits, hex (the server takes up to 64 characters).
fn batch_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "transaction not committed: no randomness for a batch id".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
