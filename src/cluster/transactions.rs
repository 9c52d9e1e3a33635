//! A COMMIT's queue SENDs on JetStream: one atomic batch, all stored or none.
//!
//! The queue stream allows atomic publishing (`allow_atomic`, checked at
//! start: [`check_atomic`]). Every message of the batch carries
//! `Nats-Batch-Id` (one random id), `Nats-Batch-Sequence` (1, 2, ...) and
//! the SEND's `Nats-Msg-Id` (built as for a single SEND: a client's
//! `message-id` deduplicates); the last one also `Nats-Batch-Commit: 1`.
//! The first and the last are requests: the first's answer says the
//! server took the batch on (or why not: atomic publishing off, too many
//! batches in flight), before the rest is uploaded; the last's is the
//! batch's PubAck, sent once the stream's replicas have stored the whole
//! batch, or an error, and then the stream keeps none of it. Until the
//! commit the server holds the batch apart: no consumer sees any of it.
//!
//! Not made again through a leader election (as a single SEND is,
//! `publish.rs`). A failure before the commit is sent stores nothing (the
//! server drops the staged part after 10 s). A commit without an answer
//! (timed out, connection lost) may have been stored: the client is told
//! the outcome is unknown, and a retry with the same `message-id`s is
//! refused as a duplicate (error 10201) rather than stored twice.

use super::publish::{not_stored, prepare, Place, Prepared};
use crate::queue::QueueSend;
use async_nats::jetstream::response::Response;
use async_nats::jetstream::ErrorCode;
use async_nats::RequestErrorKind;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use std::time::Duration;

/// The server's limit on messages in one atomic batch (its default
/// `max_batch_size`).
pub const MAX_BATCH: usize = 1000;

/// The oldest nats-server whose atomic batches take `Nats-Msg-Id`.
pub const MIN_SERVER: (u64, u64, u64) = (2, 12, 1);

/// A refused batch start or commit: too many batches in flight on the
/// stream (a retry may pass).
const TOO_MANY_IN_FLIGHT: ErrorCode = ErrorCode(10210);
/// A refused commit: a message of the batch has a `Nats-Msg-Id` the stream
/// has stored already (or the batch has twice).
const DUPLICATE_IN_BATCH: ErrorCode = ErrorCode(10201);

/// What a batch's answer says on success. The commit's has both fields;
/// the start's answer is empty.
#[derive(Debug, Deserialize)]
struct BatchAck {
    /// The batch's id.
    #[serde(default)]
    batch: Option<String>,
    /// How many messages the stream stored for the batch.
    #[serde(default)]
    count: Option<u64>,
}

/// Refuses to run on a stream (and server) where the batch headers would
/// be ignored: each message would then be stored on arrival and a COMMIT
/// would not be atomic. `stream_allows`: the stream config the server
/// returned has `allow_atomic`; `version`: the server's.
pub(super) fn check_atomic(stream_allows: bool, version: &str) -> Result<(), String> {
    let (major, minor, patch) = MIN_SERVER;
    let minimum = format!("{major}.{minor}.{patch}");
    if !at_least(version, MIN_SERVER) {
        return Err(format!(
            "cluster: nats-server {version} is too old: transactions need atomic batches with \
             message ids, nats-server {minimum} or later on every server"
        ));
    }
    if !stream_allows {
        return Err(format!(
            "cluster: the queue stream does not allow atomic publishing (allow_atomic): \
             transactions would not be atomic; nats-server {minimum} or later is needed"
        ));
    }
    Ok(())
}

/// Whether `version` ("2.12.1", "v2.14.0-beta.1") is `minimum` or later;
/// an unreadable version is not.
fn at_least(version: &str, minimum: (u64, u64, u64)) -> bool {
    let core = version.trim_start_matches('v');
    let core = core.split(['-', '+']).next().unwrap_or_default();
    let mut parts = core.split('.').map(str::parse::<u64>);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor)), patch) => {
            let patch = match patch {
                Some(Ok(patch)) => patch,
                None => 0,
                Some(Err(_)) => return false,
            };
            (major, minor, patch) >= minimum
        }
        _ => false,
    }
}

/// Stores `sends` as one atomic batch, in order, through `client`,
/// waiting `timeout` for each answer; `Err` is the ERROR message.
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
    let batch = batch_id()?;
    let mut prepared = Vec::with_capacity(total);
    for (index, send) in sends.into_iter().enumerate() {
        let mut message = prepare(place, send, true).await?;
        let sequence = index + 1;
        message.headers.insert("Nats-Batch-Id", batch.as_str());
        let sequence_text = sequence.to_string();
        message
            .headers
            .insert("Nats-Batch-Sequence", sequence_text.as_str());
        if sequence == total {
            message.headers.insert("Nats-Batch-Commit", "1");
        }
        prepared.push(message);
    }
    // An atomic batch is stored by one stream: a queue with bounds of its
    // own lives in a stream of its own (`streams.rs`).
    if let Some((first, other)) = prepared.first().and_then(|first| {
        prepared
            .iter()
            .find(|other| other.definition.stream != first.definition.stream)
            .map(|other| (first, other))
    }) {
        return Err(format!(
            "transaction not committed: its queue SENDs go to '/queue/{}' and '/queue/{}', which \
             live in different streams on the cluster engine (a queue with bounds of its own \
             has its own stream), and one transaction is stored by one stream",
            first.name, other.name
        ));
    }
    // Checked before anything is published: one too large would make the
    // server drop the batch only after the rest was uploaded.
    let max_payload = client.server_info().max_payload;
    if let Some(size) = prepared
        .iter()
        .map(|m| headers_len(&m.headers) + m.payload.len())
        .find(|size| *size > max_payload)
    {
        return Err(format!(
            "transaction not committed: a queue SEND in it is {size} bytes with its headers, \
             more than the engine's max_payload ({max_payload}); nothing was stored"
        ));
    }
    let not_committed =
        |e: &dyn std::fmt::Display| format!("transaction not committed: {}", not_stored(e));
    for (index, message) in prepared.into_iter().enumerate() {
        let Prepared {
            subject,
            headers,
            payload,
            ..
        } = message;
        let sequence = index + 1;
        if sequence == total {
            return commit(client, subject, headers, payload, timeout, &batch, total).await;
        }
        if sequence > 1 {
            // Held apart by the server until the commit; an error on one
            // of these makes the commit fail.
            client
                .publish_with_headers(subject, headers, payload)
                .await
                .map_err(|e| not_committed(&e))?;
            continue;
        }
        // The start is a request: a refusal is seen before the upload.
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(payload)
            .timeout(Some(timeout));
        let answer = client
            .send_request(subject, request)
            .await
            .map_err(|e| not_committed(&e))?;
        started(&answer.payload)?;
    }
    Ok(())
}

/// Sends the commit (the last message) and reads its PubAck.
async fn commit(
    client: &async_nats::Client,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
    timeout: Duration,
    batch: &str,
    total: usize,
) -> Result<(), String> {
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(payload)
        .timeout(Some(timeout));
    match client.send_request(subject, request).await {
        Ok(answer) => committed(&answer.payload, batch, total),
        // Nobody took the commit: the stream cannot have stored it.
        Err(error) if error.kind() == RequestErrorKind::NoResponders => {
            Err(format!("transaction not committed: {}", not_stored(&error)))
        }
        Err(error) => Err(format!(
            "transaction outcome unknown: the engine did not answer the commit ({error}); its \
             queue SENDs may be stored or not (a retry with the same message-id headers is \
             refused if they were)"
        )),
    }
}

/// Reads the answer to a batch's first message: empty when the server took
/// the batch on.
fn started(answer: &[u8]) -> Result<(), String> {
    if answer.is_empty() {
        return Ok(());
    }
    match serde_json::from_slice::<Response<BatchAck>>(answer) {
        Ok(Response::Ok(_)) => Ok(()),
        Ok(Response::Err { error }) => Err(refusal(&error)),
        Err(error) => Err(format!(
            "transaction not committed: unreadable answer from the engine ({error}); nothing \
             was stored"
        )),
    }
}

/// Reads the commit's answer: `Ok` only for the PubAck of this batch with
/// all `total` messages (a plain PubAck, without them, is what a server
/// ignoring the batch headers sends for the last message alone).
fn committed(answer: &[u8], batch: &str, total: usize) -> Result<(), String> {
    match serde_json::from_slice::<Response<BatchAck>>(answer) {
        Ok(Response::Ok(ack))
            if ack.batch.as_deref() == Some(batch) && ack.count == Some(total as u64) =>
        {
            Ok(())
        }
        Ok(Response::Ok(ack)) => Err(format!(
            "transaction outcome unknown: the engine answered the commit of {total} queue SENDs \
             with batch {:?} and count {:?}, not as an atomic batch; some may be stored",
            ack.batch, ack.count
        )),
        Ok(Response::Err { error }) => Err(refusal(&error)),
        Err(error) => Err(format!(
            "transaction outcome unknown: unreadable answer to the commit ({error})"
        )),
    }
}

/// The ERROR message for a batch the server refused (then nothing of it
/// is stored).
fn refusal(error: &async_nats::jetstream::Error) -> String {
    match error.error_code() {
        TOO_MANY_IN_FLIGHT => format!(
            "transaction not committed: too many transactions are being committed on the \
             engine at once; nothing was stored, retry ({error})"
        ),
        DUPLICATE_IN_BATCH => format!(
            "transaction not committed: a queue SEND in it has a message-id the engine has \
             stored already (by an earlier attempt of this COMMIT?) or that another SEND of it \
             has; none of its SENDs was stored now ({error})"
        ),
        _ => format!("transaction not committed: {}", not_stored(error)),
    }
}

/// The bytes `headers` take on the wire ("NATS/1.0", a line each, the
/// empty line), which count against `max_payload` with the payload.
fn headers_len(headers: &async_nats::HeaderMap) -> usize {
    let lines: usize = headers
        .iter()
        .map(|(name, values)| {
            values
                .iter()
                .map(|value| {
                    AsRef::<[u8]>::as_ref(name).len() + 2 + AsRef::<[u8]>::as_ref(value).len() + 2
                })
                .sum::<usize>()
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + 2
}

/// A random batch id: 128 bits, hex (the server takes up to 64 characters).
fn batch_id() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "transaction not committed: no randomness for a batch id".to_owned())?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pub_ack_without_batch_and_count_is_not_a_commit() {
        // What a server that ignores the batch headers answers for the
        // last message: each was stored on arrival, not atomically.
        let plain = br#"{"stream":"q","seq":7}"#;
        assert!(committed(plain, "b1", 3).is_err());
        let other_count = br#"{"stream":"q","seq":7,"batch":"b1","count":2}"#;
        assert!(committed(other_count, "b1", 3).is_err());
        let other_batch = br#"{"stream":"q","seq":7,"batch":"b2","count":3}"#;
        assert!(committed(other_batch, "b1", 3).is_err());
        let whole = br#"{"stream":"q","seq":7,"batch":"b1","count":3}"#;
        assert_eq!(committed(whole, "b1", 3), Ok(()));
    }

    #[test]
    fn refusals_say_what_to_do() {
        let too_many = br#"{"error":{"code":429,"err_code":10210,"description":"too many"}}"#;
        let message = started(too_many).expect_err("refused");
        assert!(message.contains("retry"), "{message}");
        let duplicate = br#"{"error":{"code":400,"err_code":10201,"description":"dup"}}"#;
        let message = committed(duplicate, "b1", 2).expect_err("refused");
        assert!(message.contains("message-id"), "{message}");
        assert_eq!(started(b""), Ok(()));
    }

    #[test]
    fn servers_before_2_12_1_are_refused() {
        assert!(check_atomic(true, "2.10.22").is_err());
        assert!(check_atomic(true, "2.12.0").is_err());
        assert!(check_atomic(false, "2.12.1").is_err());
        assert!(check_atomic(true, "2.12.1").is_ok());
        assert!(check_atomic(true, "v2.15.1-beta.2").is_ok());
        assert!(check_atomic(true, "garbage").is_err());
    }
}
