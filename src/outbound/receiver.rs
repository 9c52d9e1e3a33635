//! The receiving half of a connection's outbound queue: the writer's wait
//! for frames (and for the queue's overflow), and the overflow signal.

use super::{OutFrame, Shared};
use std::future::poll_fn;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Poll;

/// The receiving half: owned by the connection's writer.
#[derive(Debug)]
pub struct OutboundReceiver {
    shared: Arc<Shared>,
}

/// The queue has overflowed: its connection is a slow consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// See [`OutboundReceiver::overflow_signal`].
#[derive(Debug, Clone)]
pub struct OverflowSignal(Arc<Shared>);

impl OverflowSignal {
    /// Whether the queue has overflowed.
    pub fn is_set(&self) -> bool {
        self.0.overflowed.load(Ordering::Relaxed)
    }

    /// Bytes queued and not yet written (for the admin API and metrics).
    pub fn queued_bytes(&self) -> usize {
        self.0.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// Frames dropped so far by `drop-oldest`.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Frames replaced so far under `conflate`.
    pub fn conflated(&self) -> u64 {
        self.0.conflated.load(Ordering::Relaxed)
    }

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
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        OutboundReceiver { shared }
    }

    /// Waits for frames and moves up to `limit` of them into `batch`.
    /// Returns 0 once every sender is gone and the queue is empty.
    /// Cancel-safe: frames are only taken when the call returns.
    pub async fn recv_many(&mut self, batch: &mut Vec<OutFrame>, limit: usize) -> usize {
        poll_fn(|cx| {
            // Registered before looking: a push after the look wakes it.
            self.shared.ready.register(cx.waker());
            match self.try_take(batch, limit) {
                Some(taken) => Poll::Ready(taken),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// As [`recv_many`](Self::recv_many), but once the queue has overflowed
    /// it resolves with [`Overflowed`] first: the connection's writer waits
    /// for its frames and for its end as a slow consumer in one wait.
    pub async fn recv_many_until_overflow(
        &mut self,
        batch: &mut Vec<OutFrame>,
        limit: usize,
    ) -> Result<usize, Overflowed> {
        poll_fn(|cx| {
            self.shared.ready.register(cx.waker());
            if self.shared.overflowed.load(Ordering::Relaxed) {
                return Poll::Ready(Err(Overflowed));
            }
            match self.try_take(batch, limit) {
                Some(taken) => Poll::Ready(Ok(taken)),
                None => Poll::Pending,
            }
        })
        .await
    }

    /// What one look at the queue gives: `Some(n)` frames taken (0 once
    /// every sender is gone), `None` when there is nothing to take yet.
    fn try_take(&self, batch: &mut Vec<OutFrame>, limit: usize) -> Option<usize> {
        let taken = self.take(batch, limit);
        if taken > 0 {
            return Some(taken);
        }
        if self.shared.senders.load(Ordering::Acquire) == 0 {
            // A push may have raced the last drop; look once more.
            return Some(self.take(batch, limit));
        }
        None
    }

    fn take(&self, batch: &mut Vec<OutFrame>, limit: usize) -> usize {
        let mut pending = self.shared.lock();
        let count = pending.frames.len().min(limit);
        batch.extend(pending.frames.drain(..count).map(|queued| queued.frame));
        count
    }

    /// Takes one frame if one is ready.
    pub fn try_recv(&mut self) -> Option<OutFrame> {
        let mut pending = self.shared.lock();
        pending.frames.pop_front().map(|queued| queued.frame)
    }

    /// Gives back budget for frames the writer has written.
    pub fn written(&self, bytes: usize) {
        self.shared
            .in_flight_bytes
            .fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A handle that resolves when a push has found this connection over
    /// its budget; separate so it can be awaited while frames are received.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal(self.shared.clone())
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.shared.in_flight_bytes.load(Ordering::Relaxed)
    }

    /// The most bytes ever queued and not yet written at once.
    pub fn peak_bytes(&self) -> usize {
        self.shared.peak_bytes.load(Ordering::Relaxed)
    }
}
