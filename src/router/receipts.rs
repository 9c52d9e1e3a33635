//! RECEIPTs and router-detected ERRORs: a RECEIPT goes out at once, or is
//! held for the store's next sync when its frame changed the store or an
//! earlier RECEIPT of the same session is still held (so RECEIPTs keep
//! their order). A held RECEIPT travels to the store writer as a
//! [`SyncCompletion`] that becomes the RECEIPT, or an ERROR when what its
//! frame wrote could not be stored.

use super::{Router, SessionId};
use crate::model::close::CloseReason;
use crate::model::frames;
use crate::outbound::{OutFrame, PushError};
use crate::store::writer::SyncCompletion;
use crate::store::StoreError;
use std::sync::{Mutex, MutexGuard};
use stomp_protocol::Version;
use tracing::debug;

impl Router {
    /// Sends RECEIPT `receipt` to `session`, if both exist: at once, or
    /// after the store's next sync when `durable` or when earlier RECEIPTs
    /// of the session are still waiting for one.
    pub(super) fn receipt(&mut self, session: SessionId, receipt: Option<String>, durable: bool) {
        self.receipt_with(session, receipt, durable, None);
    }

    /// [`Router::receipt`] with one more header (a SUBSCRIBE's
    /// `x-recovered`).
    pub(super) fn receipt_with(
        &mut self,
        session: SessionId,
        receipt: Option<String>,
        durable: bool,
        header: Option<(&'static str, &'static str)>,
    ) {
        let Some(receipt) = receipt else { return };
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        // Held together with the push, on both sides: see `held_receipts`.
        let mut held = lock(&entry.held_receipts);
        if durable || *held > 0 {
            *held += 1;
            drop(held);
            let (outbound, version) = (entry.outbound.clone(), entry.version);
            let held = entry.held_receipts.clone();
            self.batch
                .completions
                .push(SyncCompletion::new(move |result| {
                    let mut held = lock(&held);
                    // A full or closed queue: the connection is going anyway.
                    let _ = outbound.push(after_sync(version, &receipt, durable, header, result));
                    *held = held.saturating_sub(1);
                }));
            return;
        }
        let frame = OutFrame::new(frames::receipt_with(entry.version, &receipt, header), true);
        let pushed = entry.outbound.push(frame);
        drop(held);
        if pushed == Err(PushError::SlowConsumer) {
            self.remove_session(session);
        }
    }

    /// Ends `session` with an ERROR that only the router could detect.
    pub(super) fn fail(
        &mut self,
        session: SessionId,
        message: String,
        receipt: Option<&str>,
        reason: CloseReason,
    ) {
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        debug!(session = %session, %message, "failing session");
        // Ignoring a full queue: the connection is closing either way.
        let frame = OutFrame::final_error(entry.version, message, receipt, reason);
        let _ = entry.outbound.push(frame);
        self.remove_session(session);
    }
}

/// The frame a held RECEIPT becomes after the sync: the RECEIPT, or, for
/// a frame that wrote to the store when the write failed, a final ERROR.
fn after_sync(
    version: Version,
    receipt: &str,
    durable: bool,
    header: Option<(&str, &str)>,
    result: Result<(), &StoreError>,
) -> OutFrame {
    match result {
        Err(e) if durable => {
            let message = format!("could not store the message: {e}");
            OutFrame::final_error(version, message, Some(receipt), CloseReason::InternalError)
        }
        _ => OutFrame::new(frames::receipt_with(version, receipt, header), true),
    }
}

/// A session's count of held RECEIPTs; a poisoned lock (a panic while
/// pushing) still holds a valid count.
fn lock(held: &Mutex<usize>) -> MutexGuard<'_, usize> {
    held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
