//! The bounded queue of encoded frames from the router (and the session) to
//! one connection's writer, with the byte budget that defines a slow consumer.
//!
//! The router never waits on a connection: it *tries* to push, and a push that
//! would exceed the frame count or the byte budget marks the queue overflowed
//! and wakes the connection, which then closes with ERROR "slow consumer".

use crate::session::CloseReason;
use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// One encoded STOMP frame: exactly one WebSocket message.
#[derive(Debug, Clone)]
pub struct OutFrame {
    /// The frame's bytes, ending in NUL. Shared between subscribers.
    pub bytes: Bytes,
    /// The whole frame is valid UTF-8 and may go out as a text message.
    pub text: bool,
    /// Set on a final ERROR from the router: close the connection after it.
    pub close: Option<Box<Closing>>,
}

/// How to close after a final frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    /// The close code's meaning.
    pub reason: CloseReason,
    /// The close reason text (the ERROR's `message`).
    pub message: String,
}

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is too far behind; it is being closed.
    SlowConsumer,
    /// The connection has gone away.
    Closed,
}

/// State shared by the two halves.
#[derive(Debug)]
struct Budget {
    /// Bytes pushed and not yet written. Added by pushers, subtracted by the writer.
    queued_bytes: AtomicUsize,
    /// The budget for `queued_bytes`.
    max_bytes: usize,
    /// Set once, by the push that found the budget exhausted.
    overflowed: AtomicBool,
    /// Wakes the connection when `overflowed` is set (a stored permit if it is not waiting).
    overflow: Notify,
}

/// The sending half: held by the router for every subscription and by the session.
#[derive(Debug, Clone)]
pub struct OutboundQueue {
    /// Frames for the connection's writer; closing means no more frames.
    frames_tx: mpsc::Sender<OutFrame>,
    budget: Arc<Budget>,
}

/// The receiving half: owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    frames_rx: mpsc::Receiver<OutFrame>,
    budget: Arc<Budget>,
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn outbound_queue(max_frames: usize, max_bytes: usize) -> (OutboundQueue, OutboundReceiver) {
    let (frames_tx, frames_rx) = mpsc::channel(max_frames.max(1));
    let budget = Arc::new(Budget {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        OutboundQueue {
            frames_tx,
            budget: budget.clone(),
        },
        OutboundReceiver { frames_rx, budget },
    )
}

impl OutboundQueue {
    /// Queues a frame without waiting.
    pub fn push(&self, frame: OutFrame) -> Result<(), PushError> {
        if self.budget.overflowed.load(Ordering::Relaxed) {
            return Err(PushError::SlowConsumer);
        }
        let length = frame.bytes.len();
        let before = self
            .budget
            .queued_bytes
            .fetch_add(length, Ordering::Relaxed);
        if before + length > self.budget.max_bytes {
            return Err(self.overflow(length));
        }
        match self.frames_tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => Err(self.overflow(length)),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(PushError::Closed),
        }
    }

    /// Whether the queue is at most half full, by bytes and by frames. Queue
    /// dispatch to auto-ack consumers waits for this, so that queue messages
    /// stay in their queue instead of overflowing a slow connection.
    pub fn has_room(&self) -> bool {
        let half_frames = self.frames_tx.max_capacity() / 2;
        !self.budget.overflowed.load(Ordering::Relaxed)
            && self.budget.queued_bytes.load(Ordering::Relaxed) < self.budget.max_bytes / 2
            && self.frames_tx.capacity() > half_frames
    }

    fn overflow(&self, length: usize) -> PushError {
        self.budget
            .queued_bytes
            .fetch_sub(length, Ordering::Relaxed);
        if !self.budget.overflowed.swap(true, Ordering::Relaxed) {
            self.budget.overflow.notify_one();
        }
        PushError::SlowConsumer
    }
}

/// See [`OutboundReceiver::overflow_signal`].
#[derive(Debug, Clone)]
pub struct OverflowSignal(Arc<Budget>);

impl OverflowSignal {
    /// Resolves once the queue has overflowed (at once if it already has).
    pub async fn wait(&self) {
        let notified = self.0.overflow.notified();
        if self.0.overflowed.load(Ordering::Relaxed) {
            return;
        }
        notified.await;
    }
}

impl OutboundReceiver {
    /// Waits for frames and moves up to `limit` of them into `batch`.
    /// Returns 0 once every sender is gone and the queue is empty.
    pub async fn recv_many(&mut self, batch: &mut Vec<OutFrame>, limit: usize) -> usize {
        self.frames_rx.recv_many(batch, limit).await
    }

    /// Takes one frame if one is ready.
    pub fn try_recv(&mut self) -> Option<OutFrame> {
        self.frames_rx.try_recv().ok()
    }

    /// Gives back budget for frames the writer has written.
    pub fn written(&self, bytes: usize) {
        self.budget.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A handle that resolves when a push has found this connection over
    /// its budget; separate so it can be awaited while frames are received.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.budget.clone())
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.budget.queued_bytes.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> OutFrame {
        OutFrame {
            bytes: Bytes::from(vec![b'x'; n]),
            text: true,
            close: None,
        }
    }

    #[tokio::test]
    async fn byte_budget_overflow_is_sticky_and_signalled() {
        let (queue, receiver) = outbound_queue(10, 100);
        assert_eq!(queue.push(frame(60)), Ok(()));
        assert_eq!(queue.push(frame(60)), Err(PushError::SlowConsumer));
        // Even a small frame is refused once overflowed.
        assert_eq!(queue.push(frame(1)), Err(PushError::SlowConsumer));
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            receiver.overflow_signal().wait(),
        )
        .await
        .expect("overflow is signalled");
    }

    #[tokio::test]
    async fn frame_count_overflow() {
        let (queue, mut receiver) = outbound_queue(2, 1000);
        assert!(queue.push(frame(1)).is_ok());
        assert!(queue.push(frame(1)).is_ok());
        assert_eq!(queue.push(frame(1)), Err(PushError::SlowConsumer));
        assert!(receiver.try_recv().is_some());
    }

    #[tokio::test]
    async fn written_frames_return_budget() {
        let (queue, mut receiver) = outbound_queue(10, 100);
        queue.push(frame(80)).expect("fits");
        let taken = receiver.try_recv().expect("queued");
        receiver.written(taken.bytes.len());
        assert_eq!(receiver.queued_bytes(), 0);
        assert!(queue.push(frame(80)).is_ok());
    }
}
