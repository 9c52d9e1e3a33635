//! Confirmed topic messages (`engine = "nats"`): the RECEIPT of a
//! persistent topic SEND waits until the stream that keeps messages for
//! durable subscriptions (`durables.rs`) has it.
//!
//! The session asks before it publishes ([`Confirms::ask`], by message
//! id); `export` takes the request with the message into the outgoing
//! queue, and the publishing task sends that one message as a JetStream
//! publish (the same message on the same connection, so in order, with a
//! reply subject for the PubAck) and tells the session the answer. A
//! subject no stream keeps is answered "no stream": nothing to keep it
//! for, so the RECEIPT goes out.

use async_nats::jetstream::context::PublishErrorKind;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Where a confirmation goes: `Err` is the ERROR message for the client.
pub(super) type Confirm = oneshot::Sender<Result<(), String>>;

/// Confirmations asked for and not yet taken by `export`.
#[derive(Debug, Default)]
pub(super) struct Confirms {
    /// By message id. A leaf lock, taken on the publishing path only while
    /// `asked` is above 0.
    waiting: Mutex<HashMap<Arc<str>, Confirm>>,
    asked: AtomicUsize,
}

impl Confirms {
    fn waiting(&self) -> MutexGuard<'_, HashMap<Arc<str>, Confirm>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for the confirmation of message `id`.
    pub(super) fn ask(&self, id: &Arc<str>) -> oneshot::Receiver<Result<(), String>> {
        let (confirm, answer) = oneshot::channel();
        if self.waiting().insert(id.clone(), confirm).is_none() {
            self.asked.fetch_add(1, Ordering::AcqRel);
        }
        answer
    }

    /// The request for message `id`, if any (taken: asked once).
    pub(super) fn take(&self, id: &Arc<str>) -> Option<Confirm> {
        if self.asked.load(Ordering::Acquire) == 0 {
            return None;
        }
        let taken = self.waiting().remove(id);
        if taken.is_some() {
            self.asked.fetch_sub(1, Ordering::AcqRel);
        }
        taken
    }
}

/// Tells a confirmation (if any) that its message was not sent: the
/// outgoing queue was full.
pub(super) fn refuse(confirm: Option<Confirm>) {
    if let Some(confirm) = confirm {
        let message = "cluster engine behind: the topic message did not reach the other nodes";
        let _ = confirm.send(Err(message.into()));
    }
}

/// Publishes one message whose sender waits for the engine to have it:
/// told `Ok` once the stream that captures its subject (the durable
/// subscriptions') has it, or when no stream does (nothing to keep it for).
pub(super) async fn publish_confirmed(
    jetstream: &async_nats::jetstream::Context,
    subject: String,
    payload: Bytes,
    confirm: Confirm,
) {
    let not_kept = |e: &dyn std::fmt::Display| {
        format!("durable subscriptions' engine unreachable or full: the message was not kept for them ({e})")
    };
    match jetstream.publish(subject, payload).await {
        Ok(acked) => {
            // Not awaited here: the next messages go out meanwhile.
            tokio::spawn(async move {
                let result = match acked.await {
                    Ok(_) => Ok(()),
                    Err(error) if error.kind() == PublishErrorKind::StreamNotFound => Ok(()),
                    Err(error) => Err(not_kept(&error)),
                };
                let _ = confirm.send(result);
            });
        }
        Err(error) => {
            let _ = confirm.send(Err(not_kept(&error)));
        }
    }
}
