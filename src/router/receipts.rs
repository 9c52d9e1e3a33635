//! RECEIPTs and router-detected ERRORs: a RECEIPT goes out at once, or is
//! held for the store's next sync when its frame changed the store or an
//! earlier RECEIPT of the same session is still held (so RECEIPTs keep
//! their order).

use super::{Router, SessionId};
use crate::model::close::CloseReason;
use crate::model::frames;
use crate::outbound::{Closing, OutFrame, PushError};
use crate::store::writer::PendingReceipt;
use std::sync::atomic::Ordering;
use tracing::debug;

impl Router {
    /// Sends RECEIPT `receipt` to `session`, if both exist: at once, or
    /// after the store's next sync when `durable` or when earlier RECEIPTs
    /// of the session are still waiting for one.
    pub(super) fn receipt(&mut self, session: SessionId, receipt: Option<String>, durable: bool) {
        let Some(receipt) = receipt else { return };
        let Some(entry) = self.sessions.get(&session) else {
            return;
        };
        if durable || entry.held_receipts.load(Ordering::Acquire) > 0 {
            entry.held_receipts.fetch_add(1, Ordering::AcqRel);
            self.batch.receipts.push(PendingReceipt {
                outbound: entry.outbound.clone(),
                receipt,
                version: entry.version,
                durable,
                held: entry.held_receipts.clone(),
            });
            return;
        }
        let frame = OutFrame::new(frames::receipt(entry.version, &receipt), true);
        if entry.outbound.push(frame) == Err(PushError::SlowConsumer) {
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
        let bytes = frames::error(
            entry.version,
            &frames::ErrorFrame {
                message: &message,
                receipt_id: receipt,
                ..frames::ErrorFrame::default()
            },
        );
        // Ignoring a full queue: the connection is closing either way.
        let _ = entry.outbound.push(OutFrame {
            bytes,
            text: true,
            close: Some(Box::new(Closing { reason, message })),
        });
        self.remove_session(session);
    }
}
