//! The node's pull tasks as a whole ([`PullTasks`]): how many run, and,
//! once the node is shutting down, the deliveries they hand back, kept
//! until none of them runs.
//!
//! Why: a pull request stays out on the server until it expires (at most
//! `PULL_WAIT`) even when its subscription has stopped, and JetStream hands
//! a nak'ed message to the first pull waiting, counting a delivery each
//! time. A node whose subscriptions all stop at once (a shutdown) and hand
//! back at once would pass the messages around among its own stopped pulls
//! until `max_deliver` sent them to the dead letters, and a pull still out
//! when the process exits takes messages that come back only after
//! `ack_wait`. So at shutdown the hand-backs wait until every pull of the
//! node is over, then go out together, to the other nodes' consumers.

use super::subscription::hand_back;
use crate::metrics::Metrics;
use async_nats::jetstream::message::Acker;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The node's pull tasks (cheap to clone: one shared state).
#[derive(Clone)]
pub(super) struct PullTasks(Arc<Shared>);

struct Shared {
    /// Where the tasks count their deliveries (`messages_delivered_total`).
    metrics: Arc<Metrics>,
    /// How many tasks run; each [`PullTask`] counts itself while it lives.
    running: watch::Sender<usize>,
    /// Set at the start of a shutdown: hand-backs are parked, not sent.
    closing: AtomicBool,
    /// The parked hand-backs. A leaf lock, never held across `.await`.
    parked: Mutex<Parked>,
}

/// Hand-backs held during a shutdown.
#[derive(Default)]
struct Parked {
    ackers: Vec<Acker>,
    /// `finish` has handed them back: a task still running after it (past
    /// its wait) hands back at once rather than park for good.
    finished: bool,
}

impl PullTasks {
    pub(super) fn new(metrics: Arc<Metrics>) -> PullTasks {
        PullTasks(Arc::new(Shared {
            metrics,
            running: watch::channel(0).0,
            closing: AtomicBool::new(false),
            parked: Mutex::new(Parked::default()),
        }))
    }

    /// Counts one task until the returned guard is dropped.
    pub(super) fn enter(&self) -> PullTask {
        self.0.running.send_modify(|running| *running += 1);
        PullTask(self.0.clone())
    }

    /// The node is shutting down: from now on hand-backs are parked until
    /// [`finish`](Self::finish).
    pub(super) fn close(&self) {
        self.0.closing.store(true, Ordering::SeqCst);
    }

    /// Waits until no task runs (at most `within`), then hands back what
    /// was parked. False if some task still ran: its pull may take messages
    /// that come back only after `ack_wait`.
    pub(super) async fn finish(&self, within: Duration) -> bool {
        let mut running = self.0.running.subscribe();
        let ended = tokio::time::timeout(within, running.wait_for(|n| *n == 0))
            .await
            .is_ok();
        let parked = {
            let mut parked = self.0.parked();
            parked.finished = true;
            std::mem::take(&mut parked.ackers)
        };
        hand_back(parked).await;
        ended
    }
}

impl Shared {
    fn parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One running pull task, counted in [`PullTasks`] while it lives.
pub(super) struct PullTask(Arc<Shared>);

impl PullTask {
    /// Counts one MESSAGE to `destination` queued for a client (as one
    /// node counts its queue deliveries).
    pub(super) fn delivered(&self, destination: &str) {
        self.0.metrics.engine_delivered_add(destination, 1);
    }

    /// Hands `deliveries` back (once the task's last pull is over): now, or
    /// parked until every pull has ended if the node is shutting down (now
    /// again once that wait is over).
    pub(super) async fn hand_back(&self, deliveries: Vec<Acker>) {
        if self.0.closing.load(Ordering::SeqCst) {
            let mut parked = self.0.parked();
            if !parked.finished {
                parked.ackers.extend(deliveries);
                return;
            }
        }
        hand_back(deliveries).await;
    }
}

impl Drop for PullTask {
    fn drop(&mut self) {
        self.0
            .running
            .send_modify(|running| *running = running.saturating_sub(1));
    }
}
