//! Pipelined confirmations of queue SENDs on the cluster engine.
//!
//! A queue SEND is handed to the engine and the session reads on; the
//! engine's confirmation (a JetStream PubAck; for a SEND that is neither
//! receipted nor persistent, only a full queue's refusal) is awaited here,
//! by one task per session, in SEND order. Each confirmed
//! SEND's RECEIPT then goes to the router (as every RECEIPT does), so
//! RECEIPTs keep the order of the SENDs. Before any other frame that may
//! be answered (a RECEIPT, a DISCONNECT), the session drains what is in
//! flight, so that nothing overtakes them. A failed confirmation is an
//! ERROR with that SEND's receipt and the end of the connection: the task
//! stops there, so no later SEND gets a RECEIPT either.

use super::{CloseReason, SessionError};
use crate::queue::EngineAck;
use crate::router::{RouterCommand, RouterHandle, SessionId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Confirmations in flight per connection at most; the next SEND waits
/// (and so the connection reads no more) until one is done.
pub const MAX_PENDING_CONFIRMATIONS: usize = 256;

/// One SEND waiting for its confirmation.
struct Pending {
    ack: EngineAck,
    receipt: Option<String>,
    /// Held until its RECEIPT has gone to the router.
    _slot: OwnedSemaphorePermit,
}

/// The session's confirmations in flight (nothing until the first one).
#[derive(Default)]
pub(super) struct Confirmations {
    running: Option<Running>,
}

/// The task awaiting the confirmations, and its ends.
struct Running {
    /// Bounded like the slots: a SEND holds a slot before it is queued, so
    /// sending here never waits.
    queue: mpsc::Sender<Pending>,
    /// One permit per confirmation not yet done (its RECEIPT routed).
    slots: Arc<Semaphore>,
    /// The first failure, from the task.
    failed: oneshot::Receiver<SessionError>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // The session is over: its RECEIPTs have no one to go to.
        self.task.abort();
    }
}

impl Confirmations {
    /// Adds a SEND's confirmation; waits while the connection has
    /// `MAX_PENDING_CONFIRMATIONS` in flight. `Err`: an earlier one failed.
    pub(super) async fn push(
        &mut self,
        router: &RouterHandle,
        session: SessionId,
        ack: EngineAck,
        receipt: Option<String>,
    ) -> Result<(), SessionError> {
        let running = self
            .running
            .get_or_insert_with(|| start(router.clone(), session));
        let sent = match running.slots.clone().acquire_owned().await {
            Ok(slot) => {
                let pending = Pending {
                    ack,
                    receipt,
                    _slot: slot,
                };
                running.queue.send(pending).await.is_ok()
            }
            Err(_) => false,
        };
        if sent {
            Ok(())
        } else {
            // The task stopped: at a failure, which it reported first.
            Err(self.take_failure())
        }
    }

    /// Waits until every confirmation in flight is done and its RECEIPT
    /// routed. `Err`: one of them failed.
    pub(super) async fn drain(&mut self) -> Result<(), SessionError> {
        let Some(running) = &mut self.running else {
            return Ok(());
        };
        let all = u32::try_from(MAX_PENDING_CONFIRMATIONS).unwrap_or(u32::MAX);
        // A failure stops the task, which drops (and so frees) the rest.
        drop(running.slots.acquire_many(all).await);
        match running.failed_now() {
            Some(error) => {
                self.running = None;
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Resolves with the first failure (never, if none): the connection
    /// waits on it beside the client's frames, to end at once.
    pub(super) async fn failed(&mut self) -> SessionError {
        let failure = match &mut self.running {
            Some(running) => (&mut running.failed).await.ok(),
            None => None,
        };
        match failure {
            Some(error) => {
                self.running = None;
                error
            }
            None => std::future::pending().await,
        }
    }

    fn take_failure(&mut self) -> SessionError {
        let error = self.running.as_mut().and_then(Running::failed_now);
        self.running = None;
        error.unwrap_or_else(|| {
            SessionError::new(
                "queue engine: confirmations stopped; the message was not stored",
                CloseReason::InternalError,
            )
        })
    }
}

impl Running {
    fn failed_now(&mut self) -> Option<SessionError> {
        self.failed.try_recv().ok()
    }
}

fn start(router: RouterHandle, session: SessionId) -> Running {
    let (queue, pending) = mpsc::channel(MAX_PENDING_CONFIRMATIONS);
    let (fail, failed) = oneshot::channel();
    let task = tokio::spawn(confirm_in_order(pending, router, session, fail));
    Running {
        queue,
        slots: Arc::new(Semaphore::new(MAX_PENDING_CONFIRMATIONS)),
        failed,
        task,
    }
}

/// Awaits each confirmation in turn, routing its RECEIPT; stops at the
/// first failure, after reporting it.
async fn confirm_in_order(
    mut pending: mpsc::Receiver<Pending>,
    router: RouterHandle,
    session: SessionId,
    fail: oneshot::Sender<SessionError>,
) {
    while let Some(Pending {
        ack,
        receipt,
        _slot,
    }) = pending.recv().await
    {
        match ack.await {
            Ok(()) => {
                if let Some(receipt) = receipt {
                    if router
                        .send(RouterCommand::Receipt { session, receipt })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            Err(message) => {
                let reason = crate::queue::close_reason(&message);
                let error = SessionError::new(message, reason).with_receipt(receipt);
                // Reported before the rest (and their slots) are dropped.
                let _ = fail.send(error);
                return;
            }
        }
    }
}
