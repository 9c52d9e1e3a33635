//! Whether a durable topic subscription's consumer is still the one it
//! attached to, and what its pull task does when it is not.
//!
//! Why: a pull names a consumer, not one incarnation of it. A durable
//! consumer deleted (UNSUBSCRIBE with removal on another connection, an
//! operator) or re-bound to another topic by another node and made again
//! under the same name would take the old subscription's next pulls, and
//! that subscription would deliver (and auto-ack) or drop (pattern
//! mismatch, acked) messages that belong to the new holder. So each
//! consumer carries a token in its metadata, made with it (`durables.rs`;
//! the server's creation time is not stable across a recovery on every
//! server version), and the pull task checks it before a delivery when the
//! consumer may have changed unseen: the first one, one after the task
//! waited (credit, room) or after an empty or failed pull, and one whose
//! consumer sequence does not follow the last one's (a new consumer counts
//! from 1). A pull that JetStream ends with "consumer deleted", a token
//! that is not its own, or the consumer not found twice in a row ends it:
//! what it took is handed back (to the new holder), and its client gets an
//! ERROR (the connection closes: STOMP has no per-subscription error, and a
//! subscription that silently stops receiving is worse). While the engine
//! does not answer, the delivery waits (kept alive), not handed back: each
//! hand-back counts a delivery towards `max_deliver`. A consumer made again
//! by hand with the same metadata (token included) counts as the same one.

use crate::model::close::CloseReason;
use crate::outbound::OutFrame;
use async_nats::jetstream::consumer::{Info, PullConsumer};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use async_nats::jetstream::{AckKind, Message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stomp_protocol::Version;
use tokio::sync::watch;
use tracing::debug;

/// The consumer metadata key of a durable consumer's incarnation token.
pub(super) const INCARNATION: &str = "stomphub-incarnation";
/// The pause before the engine is asked again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// One incarnation of a consumer: its token (for a consumer made before
/// tokens, its creation time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Incarnation(String);

impl Incarnation {
    /// A new token, for a consumer about to be made: unique across nodes
    /// and restarts (process, time, a count).
    pub(super) fn fresh() -> String {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let count = MADE.fetch_add(1, Ordering::Relaxed);
        format!("{}-{nanos}-{count}", std::process::id())
    }

    /// The incarnation `info` describes.
    pub(super) fn of(info: &Info) -> Incarnation {
        match info.config.metadata.get(INCARNATION) {
            Some(token) => Incarnation(token.clone()),
            None => Incarnation(format!("created {}", info.created)),
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Binding {
    /// The consumer is the one attached to.
    Held,
    /// Deleted, or made again (another holder's now).
    Lost,
    /// The engine did not answer (or the consumer was not found once).
    Unknown,
}

/// One durable subscription's checks, kept by its pull task.
pub(super) struct Checker {
    attached: Incarnation,
    /// The last check found no consumer (once is not proof: a leader
    /// election may answer so).
    not_found: bool,
    /// A check is due before the next delivery.
    due: bool,
    /// The consumer sequence of the last delivery served.
    last_sequence: u64,
}

impl Checker {
    /// Checks against `attached`, the first before the first delivery.
    pub(super) fn new(attached: Incarnation) -> Checker {
        Checker {
            attached,
            not_found: false,
            due: true,
            last_sequence: 0,
        }
    }

    /// The consumer may have changed unseen (the task waited, a pull came
    /// back empty): the next delivery is checked.
    pub(super) fn make_due(&mut self) {
        self.due = true;
    }

    /// Before delivering `message`: checked if due or out of sequence;
    /// while the engine does not say, asked again (the message kept
    /// alive). `Unknown` only if the subscription stopped meanwhile.
    pub(super) async fn before(
        &mut self,
        consumer: &mut PullConsumer,
        message: &Message,
        stopped: &mut watch::Receiver<bool>,
    ) -> Binding {
        let sequence = message.info().map_or(0, |info| info.consumer_sequence);
        if !self.due && sequence == self.last_sequence.wrapping_add(1) {
            self.last_sequence = sequence;
            return Binding::Held;
        }
        loop {
            match self.check(consumer).await {
                Binding::Unknown => {}
                found => {
                    if found == Binding::Held {
                        self.due = false;
                        self.last_sequence = sequence;
                    }
                    return found;
                }
            }
            if let Err(error) = message.ack_with(AckKind::Progress).await {
                debug!(%error, "queue engine: a delivery's progress did not go out");
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = stopped.wait_for(|stop| *stop) => return Binding::Unknown,
            }
        }
    }

    /// After a failed pull (`error`): lost if JetStream ended it because
    /// the consumer was deleted, else what a check finds.
    pub(super) async fn after_failure(
        &mut self,
        consumer: &mut PullConsumer,
        error: &str,
    ) -> Binding {
        self.due = true;
        if error.to_ascii_lowercase().contains("consumer deleted") {
            return Binding::Lost;
        }
        self.check(consumer).await
    }

    /// Asks JetStream whether the consumer is still the attached one.
    async fn check(&mut self, consumer: &mut PullConsumer) -> Binding {
        match consumer.info().await {
            Ok(info) if Incarnation::of(info) == self.attached => {
                self.not_found = false;
                Binding::Held
            }
            Ok(_) => Binding::Lost,
            Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => {
                if std::mem::replace(&mut self.not_found, true) {
                    Binding::Lost
                } else {
                    Binding::Unknown
                }
            }
            Err(error) => {
                debug!(%error, "queue engine: durable consumer not checked");
                Binding::Unknown
            }
        }
    }
}

/// The final ERROR for the client of a durable subscription on
/// `destination` whose consumer is lost (the connection closes after it).
pub(super) fn lost_frame(destination: &str, version: Version) -> OutFrame {
    let message = format!(
        "durable subscription on '{destination}' was deleted or re-bound by another connection"
    );
    OutFrame::final_error(version, message, None, CloseReason::PolicyViolation)
}
