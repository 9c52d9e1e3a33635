//! Exclusive holds kept while their subscription lasts (`holders.rs` takes
//! them): refreshed every [`REFRESH`]; a refresh refused or unanswered
//! reads the key (ours at a newer revision: adopted; lapsed: taken again;
//! another's: the subscription ends with an ERROR, close 1008). The window:
//! a holder whose node cannot reach the engine for longer than the
//! [`LEASE`](super::holders::LEASE) may still deliver, until its next refresh sees the key lost,
//! while another node's exclusive SUBSCRIBE has taken the queue.

use super::holders::{Holders, REFRESH};
use super::subject::queue_consumer;
use super::subscription::Subscription;
use crate::model::close::CloseReason;
use crate::outbound::OutFrame;
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;
use stomp_protocol::Version;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// How often a refresh is tried before the next [`REFRESH`], and the pause
/// between tries: all well within the [`LEASE`](super::holders::LEASE).
const RENEW_TRIES: usize = 4;
const RENEW_PAUSE: Duration = Duration::from_millis(300);
/// How long an UNSUBSCRIBE waits for its hold to be given up.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

impl Holders {
    /// Keeps queue `name` (taken at `revision` by `holder`) while
    /// `subscription` lasts, then gives it up. A hold found lost (another
    /// subscription took the key after this one's lapsed) ends the
    /// subscription with an ERROR.
    pub(super) fn hold(
        self: Arc<Self>,
        name: String,
        holder: String,
        revision: u64,
        subscription: Arc<Subscription>,
        version: Version,
    ) {
        let this = self.clone();
        let key = holder.clone();
        // Spawned under the lock: the task removes its entry at its end,
        // never before it is put (no finished task left behind).
        let mut holds = self.holds();
        let task = tokio::spawn(async move {
            this.keep(name, holder, revision, subscription, version)
                .await;
        });
        holds.insert(key, task);
    }

    async fn keep(
        &self,
        name: String,
        holder: String,
        mut revision: u64,
        subscription: Arc<Subscription>,
        version: Version,
    ) {
        let key = queue_consumer(&name);
        let mut stopped = subscription.stopped();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(REFRESH) => {}
                _ = stopped.wait_for(|stop| *stop) => break,
            }
            match self.renew(&key, &holder, revision).await {
                Renewal::Kept(next) => revision = next,
                Renewal::Unknown => {}
                Renewal::Lost => {
                    warn!(queue = %name, "queue engine: exclusive hold lost to another subscription; its connection is closed");
                    let outbound = subscription.outbound();
                    subscription.stop();
                    if let Some(outbound) = outbound {
                        // Ignoring a full queue: the connection is closing either way.
                        let _ = outbound.push(lost_frame(&subscription.destination, version));
                    }
                    self.holds().remove(&holder);
                    return;
                }
            }
        }
        if let Err(error) = self.kv.delete_expect_revision(&key, Some(revision)).await {
            debug!(%error, queue = %name, "queue engine: exclusive hold not given up; it lapses");
        }
        self.holds().remove(&holder);
    }

    /// Refreshes the hold of `holder` on `key` (last known at `revision`).
    /// An update refused or failed is not the end: the key is read (a
    /// timed-out update may have been applied: ours at a newer revision is
    /// adopted; a lapsed key is taken again); tried a few times, fast,
    /// well within the lease.
    async fn renew(&self, key: &str, holder: &str, revision: u64) -> Renewal {
        let mut revision = revision;
        for _ in 0..RENEW_TRIES {
            match self
                .kv
                .update(key, Bytes::from(holder.to_owned()), revision)
                .await
            {
                Ok(next) => return Renewal::Kept(next),
                Err(error) => {
                    debug!(%error, %key, "queue engine: exclusive hold not refreshed; reading it");
                }
            }
            match self.kv.entry(key).await {
                Ok(Some(entry))
                    if entry.operation == kv::Operation::Put
                        && entry.value.as_ref() == holder.as_bytes() =>
                {
                    // Ours (a timed-out update applied): refreshed next try.
                    revision = entry.revision;
                    continue;
                }
                Ok(Some(entry)) if entry.operation == kv::Operation::Put => {
                    return Renewal::Lost;
                }
                Ok(_) => {
                    // Lapsed and nobody took it: ours again.
                    match self.kv.create(key, Bytes::from(holder.to_owned())).await {
                        Ok(next) => return Renewal::Kept(next),
                        Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => {
                            continue;
                        }
                        Err(error) => {
                            debug!(%error, %key, "queue engine: exclusive hold not taken again yet");
                        }
                    }
                }
                Err(error) => debug!(%error, %key, "queue engine: exclusive hold not read"),
            }
            tokio::time::sleep(RENEW_PAUSE).await;
        }
        warn!(%key, "queue engine: exclusive hold not refreshed; trying again at the next refresh");
        Renewal::Unknown
    }

    /// Gives up the hold of `holder` on queue `name` taken at `revision`
    /// (its SUBSCRIBE refused after all).
    pub(super) async fn give_up(&self, name: &str, holder: &str, revision: u64) {
        if let Err(error) = self
            .kv
            .delete_expect_revision(queue_consumer(name), Some(revision))
            .await
        {
            debug!(%error, %holder, queue = %name, "queue engine: exclusive hold not given up; it lapses");
        }
    }

    fn holds(&self) -> MutexGuard<'_, HashMap<String, JoinHandle<()>>> {
        self.holds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (a bounded time) until the hold of `holder`, if any, is given
    /// up: the UNSUBSCRIBE's RECEIPT goes out with the queue free.
    pub(super) async fn released(&self, holder: &str) {
        let task = self.holds().remove(holder);
        if let Some(task) = task {
            if tokio::time::timeout(RELEASE_WAIT, task).await.is_err() {
                debug!(%holder, "queue engine: exclusive hold not given up in time; it lapses");
            }
        }
    }
}

/// What a refresh of a hold found.
enum Renewal {
    /// Refreshed (or taken again): its revision now.
    Kept(u64),
    /// Another subscription holds the queue.
    Lost,
    /// The engine did not answer: tried again at the next refresh.
    Unknown,
}

/// The final ERROR for the client of an exclusive subscription on
/// `destination` whose hold another subscription has taken.
fn lost_frame(destination: &str, version: Version) -> OutFrame {
    let message = format!("exclusive hold lost: another subscription took '{destination}'");
    OutFrame::final_error(version, message, None, CloseReason::PolicyViolation)
}
