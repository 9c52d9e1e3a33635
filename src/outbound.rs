//! The bounded queue of encoded frames to one connection's writer, from the
//! router, from publishing sessions (topic fan-out) and from the session
//! itself, with the byte budget that defines a slow consumer.
//!
//! No pusher ever waits on a connection: it *tries* to push. A push that
//! would exceed the frame count or the byte budget either makes room by
//! dropping the oldest *droppable* frames (topic messages of subscriptions
//! whose slow-consumer policy is `drop-oldest`), or marks the queue
//! overflowed and wakes the connection, which closes with ERROR "slow consumer".
//! A *conflating* push (policy `conflate`) is never refused: past the budget
//! it replaces the queued, not yet written MESSAGE of the same subscription
//! and destination (found through a small index of queued slots), so the
//! queue holds at most the budget plus one frame per destination.
//!
//! A `std::sync::Mutex` guards the deque: critical sections are a push or a
//! drain, never held across an `.await`. The writer sleeps on an
//! `AtomicWaker`, not a `Notify`: there is one writer, and a waiter list's
//! lock taken on every wait and every wake is, at low rates, a visible part
//! of each delivery's cost.

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

mod frame;
mod pending;
mod receiver;
mod wakes;

pub use frame::{CloseAfter, OutFrame};
pub use pending::ConflationKey;
use pending::{with_conflated_header, Pending, Slot};
pub use receiver::{OutboundReceiver, OverflowSignal, Overflowed};
pub use wakes::deferring_wakes;
use wakes::wake;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The connection is too far behind; it is being closed.
    SlowConsumer,
    /// The connection has gone away. (Not produced today: a push to a
    /// connection whose writer is gone is accepted, and freed when the last
    /// sender goes.)
    Gone,
}

/// State shared by the two halves.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    max_frames: usize,
    max_bytes: usize,
    /// Wakes the writer when frames arrive, the last sender goes or the
    /// queue overflows.
    ready: AtomicWaker,
    /// Live `OutboundSender` handles; zero means no more frames will come.
    senders: AtomicUsize,
    /// Bytes pushed and not yet written (pending plus the writer's batch).
    in_flight_bytes: AtomicUsize,
    /// Set once, by the push that found the budget exhausted.
    overflowed: AtomicBool,
    /// Wakes the connection when `overflowed` is set (a stored permit if it is not waiting).
    overflow: Notify,
    /// Frames dropped by `drop-oldest`.
    dropped: AtomicU64,
    /// Frames replaced by newer ones under `conflate`.
    conflated: AtomicU64,
    /// The most `in_flight_bytes` ever reached: what this connection needed
    /// of its budget (logged at close; sizes `outbound.max_queued_bytes`).
    peak_bytes: AtomicUsize,
}

impl Shared {
    /// Raises the peak to `in_flight`. Read first: a read-modify-write on
    /// every push would take the cache line from the writer's core each time.
    fn note_peak(&self, in_flight: usize) {
        if in_flight > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(in_flight, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The sending half: held by the router for every subscription and by the session.
#[derive(Debug)]
pub struct OutboundSender {
    shared: Arc<Shared>,
}

impl Clone for OutboundSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        OutboundSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for OutboundSender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.ready.wake();
        }
    }
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn outbound_channel(max_frames: usize, max_bytes: usize) -> (OutboundSender, OutboundReceiver) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        max_frames: max_frames.max(1),
        max_bytes,
        ready: AtomicWaker::new(),
        senders: AtomicUsize::new(1),
        in_flight_bytes: AtomicUsize::new(0),
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
        dropped: AtomicU64::new(0),
        conflated: AtomicU64::new(0),
        peak_bytes: AtomicUsize::new(0),
    });
    (
        OutboundSender {
            shared: shared.clone(),
        },
        OutboundReceiver::new(shared),
    )
}

impl OutboundSender {
    /// Queues a frame without waiting; past the budget the connection is a
    /// slow consumer.
    pub fn push(&self, frame: OutFrame) -> Result<(), PushError> {
        self.push_inner(frame, false)
    }

    /// Queues a topic message that may be dropped, oldest first, to make room
    /// for newer droppable ones (the `drop-oldest` policy).
    pub fn push_droppable(&self, frame: OutFrame) -> Result<(), PushError> {
        self.push_inner(frame, true)
    }

    fn push_inner(&self, frame: OutFrame, droppable: bool) -> Result<(), PushError> {
        let shared = &*self.shared;
        if shared.overflowed.load(Ordering::Relaxed) {
            return Err(PushError::SlowConsumer);
        }
        let length = frame.bytes.len();
        {
            let mut pending = shared.lock();
            let fits = |p: &Pending, in_flight: usize| {
                p.frames.len() < shared.max_frames && in_flight + length <= shared.max_bytes
            };
            if droppable {
                while !fits(&pending, shared.in_flight_bytes.load(Ordering::Relaxed)) {
                    let Some(at) = pending.frames.iter().position(|q| q.droppable) else {
                        // What fills the budget is already being written
                        // (older still): this message is the one to drop.
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                        return Ok(());
                    };
                    if let Some(old) = pending.frames.remove(at) {
                        shared
                            .in_flight_bytes
                            .fetch_sub(old.frame.bytes.len(), Ordering::Relaxed);
                        shared.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !fits(&pending, shared.in_flight_bytes.load(Ordering::Relaxed)) {
                drop(pending);
                if !shared.overflowed.swap(true, Ordering::Relaxed) {
                    shared.overflow.notify_one();
                    shared.ready.wake();
                }
                return Err(PushError::SlowConsumer);
            }
            let in_flight = shared.in_flight_bytes.fetch_add(length, Ordering::Relaxed) + length;
            shared.note_peak(in_flight);
            pending.push_back(frame, droppable);
            if pending.frames.len() > 1 {
                // Not the first frame since the writer last found the queue
                // empty: the push that made it non-empty woke the writer (or
                // will, see `deferring_wakes`), which takes every frame
                // before it waits again.
                return Ok(());
            }
        }
        wake(&self.shared);
        Ok(())
    }

    /// Queues a topic MESSAGE under the `conflate` policy; never refused.
    /// Within the budget it is queued as it is; past it, it replaces the
    /// queued, not yet written MESSAGE with the same `key` and carries
    /// `x-conflated:<messages replaced>`, or, if there is none, is queued
    /// anyway (at most one frame per key beyond the budget).
    pub fn push_conflating(&self, frame: OutFrame, key: ConflationKey) -> Result<(), PushError> {
        let shared = &*self.shared;
        let length = frame.bytes.len();
        {
            let mut pending = shared.lock();
            let in_flight = shared.in_flight_bytes.load(Ordering::Relaxed);
            let fits =
                pending.frames.len() < shared.max_frames && in_flight + length <= shared.max_bytes;
            let queued = if fits {
                None
            } else {
                pending.slots.get(&key).and_then(|slot| {
                    pending
                        .position(slot.sequence)
                        .map(|at| (at, slot.conflated))
                })
            };
            if let Some((at, conflated)) = queued {
                let replacement = with_conflated_header(&frame, conflated + 1);
                let new_length = replacement.bytes.len();
                if let Some(old) = pending.frames.get_mut(at) {
                    let old_length = old.frame.bytes.len();
                    old.frame = replacement;
                    shared
                        .in_flight_bytes
                        .fetch_add(new_length, Ordering::Relaxed);
                    shared
                        .in_flight_bytes
                        .fetch_sub(old_length, Ordering::Relaxed);
                    let sequence = old.sequence;
                    pending.slots.insert(
                        key,
                        Slot {
                            sequence,
                            conflated: conflated + 1,
                        },
                    );
                    shared.conflated.fetch_add(1, Ordering::Relaxed);
                }
                // Nothing new to wake the writer for: the slot was queued.
                return Ok(());
            }
            let in_flight = shared.in_flight_bytes.fetch_add(length, Ordering::Relaxed) + length;
            shared.note_peak(in_flight);
            let sequence = pending.push_back(frame, false);
            pending.slots.insert(
                key,
                Slot {
                    sequence,
                    conflated: 0,
                },
            );
            pending.prune_slots();
        }
        wake(&self.shared);
        Ok(())
    }

    /// Whether the queue is at most half full, by bytes and by frames. Queue
    /// dispatch to auto-ack consumers waits for this, so that queue messages
    /// stay in their queue instead of overflowing a slow connection.
    pub fn has_room(&self) -> bool {
        self.room() > 0
    }

    /// How many more frames fit before the queue is half full (0 when it is
    /// half full by bytes): what one auto-ack pull may ask for.
    pub fn room(&self) -> usize {
        let shared = &*self.shared;
        if shared.overflowed.load(Ordering::Relaxed)
            || shared.in_flight_bytes.load(Ordering::Relaxed) >= shared.max_bytes / 2
        {
            return 0;
        }
        (shared.max_frames / 2).saturating_sub(shared.lock().frames.len())
    }

    /// Frames dropped so far by `drop-oldest`.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Frames replaced so far under `conflate`.
    pub fn conflated(&self) -> u64 {
        self.shared.conflated.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::time::Duration;

    fn frame(n: usize) -> OutFrame {
        OutFrame::new(Bytes::from(vec![b'x'; n]), true)
    }

    #[tokio::test]
    async fn byte_budget_overflow_is_sticky_and_signalled() {
        let (queue, receiver) = outbound_channel(10, 100);
        assert_eq!(queue.push(frame(60)), Ok(()));
        assert_eq!(queue.push(frame(60)), Err(PushError::SlowConsumer));
        // Even a small frame is refused once overflowed.
        assert_eq!(queue.push(frame(1)), Err(PushError::SlowConsumer));
        tokio::time::timeout(Duration::from_secs(1), receiver.overflow_signal().wait())
            .await
            .expect("overflow is signalled");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_the_push_into_an_empty_queue_wakes_the_writer_and_none_is_missed() {
        let (queue, mut receiver) = outbound_channel(100_000, usize::MAX);
        let pusher = tokio::spawn(async move {
            for round in 0..2_000 {
                for _ in 0..(round % 5) + 1 {
                    assert!(queue.push(frame(1)).is_ok());
                }
                tokio::task::yield_now().await;
            }
        });
        let expected: usize = (0..2_000).map(|round| (round % 5) + 1).sum();
        let mut batch = Vec::new();
        let mut received = 0;
        while received < expected {
            // Fewer than a round may be taken at once: the rest must still
            // be taken without another wake.
            let taken =
                tokio::time::timeout(Duration::from_secs(10), receiver.recv_many(&mut batch, 3))
                    .await
                    .expect("a queued frame never left the queue");
            received += taken;
            batch.clear();
        }
        pusher.await.expect("pusher");
        assert_eq!(received, expected);
    }

    #[tokio::test]
    async fn a_deferring_scope_that_waits_wakes_the_writers_it_owes_first() {
        let (queue, mut receiver) = outbound_channel(10, 1000);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            receiver.recv_many(&mut batch, 10).await
        });
        tokio::task::yield_now().await;
        let pusher = queue.clone();
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        // What the scope waits for may need the writer (room in a queue the
        // writer's client drains): the push must not wait with it.
        let scope = tokio::spawn(deferring_wakes(async move {
            assert!(pusher.push(frame(1)).is_ok());
            let _ = held.await;
        }));
        let taken = tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .expect("the waiting scope woke its writer")
            .expect("writer");
        assert_eq!(taken, 1);
        assert!(!scope.is_finished(), "the scope still waits");
        let _ = release.send(());
        scope.await.expect("scope");
        drop(queue);
    }

    #[tokio::test]
    async fn frame_count_overflow() {
        let (queue, mut receiver) = outbound_channel(2, 1000);
        assert!(queue.push(frame(1)).is_ok());
        assert!(queue.push(frame(1)).is_ok());
        assert_eq!(queue.push(frame(1)), Err(PushError::SlowConsumer));
        assert!(receiver.try_recv().is_some());
    }

    #[tokio::test]
    async fn written_frames_return_budget() {
        let (queue, mut receiver) = outbound_channel(10, 100);
        queue.push(frame(80)).expect("fits");
        let taken = receiver.try_recv().expect("queued");
        receiver.written(taken.bytes.len());
        assert_eq!(receiver.queued_bytes(), 0);
        assert!(queue.push(frame(80)).is_ok());
        assert!(queue.push(frame(10)).is_ok());
        assert_eq!(receiver.peak_bytes(), 90);
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_newest_droppable_frames_and_every_other_frame() {
        let (queue, mut receiver) = outbound_channel(3, 1000);
        queue
            .push(OutFrame::new(Bytes::from_static(b"receipt"), true))
            .expect("fits");
        for n in 0..5u8 {
            queue
                .push_droppable(OutFrame::new(Bytes::from(vec![n]), true))
                .expect("makes room");
        }
        let mut batch = Vec::new();
        receiver.recv_many(&mut batch, 10).await;
        let kept: Vec<&[u8]> = batch.iter().map(|f| &f.bytes[..]).collect();
        assert_eq!(kept, vec![&b"receipt"[..], &[3u8][..], &[4u8][..]]);
        assert_eq!(queue.dropped(), 3);
    }

    #[tokio::test]
    async fn conflate_replaces_the_queued_message_of_the_same_key_past_the_budget() {
        let (queue, mut receiver) = outbound_channel(2, 1000);
        let key = |d: &str| -> ConflationKey { (Arc::from("s"), d.into()) };
        let message = |v: &str| OutFrame::new(Bytes::from(format!("MESSAGE\nv:{v}\n\n\0")), true);
        queue
            .push_conflating(message("a1"), key("a"))
            .expect("fits");
        queue
            .push_conflating(message("b1"), key("b"))
            .expect("fits");
        // Past the frame budget: replaced in place, never refused.
        for n in 2..=4 {
            queue
                .push_conflating(message(&format!("a{n}")), key("a"))
                .expect("conflated");
        }
        // A key with nothing queued goes in beyond the budget.
        queue
            .push_conflating(message("c1"), key("c"))
            .expect("queued");
        assert!(!receiver.overflow_signal().is_set());
        let mut batch = Vec::new();
        receiver.recv_many(&mut batch, 10).await;
        let kept: Vec<&[u8]> = batch.iter().map(|f| &f.bytes[..]).collect();
        assert_eq!(
            kept,
            vec![
                &b"MESSAGE\nx-conflated:3\nv:a4\n\n\0"[..],
                &b"MESSAGE\nv:b1\n\n\0"[..],
                &b"MESSAGE\nv:c1\n\n\0"[..],
            ]
        );
        assert_eq!(queue.conflated(), 3);
        let total: usize = batch.iter().map(|f| f.bytes.len()).sum();
        assert_eq!(receiver.queued_bytes(), total);
    }

    #[tokio::test]
    async fn the_end_is_seen_when_every_sender_is_gone() {
        let (queue, mut receiver) = outbound_channel(10, 100);
        let other = queue.clone();
        queue.push(frame(1)).expect("fits");
        drop(queue);
        drop(other);
        let mut batch = Vec::new();
        assert_eq!(receiver.recv_many(&mut batch, 10).await, 1);
        assert_eq!(
            tokio::time::timeout(Duration::from_secs(1), receiver.recv_many(&mut batch, 10)).await,
            Ok(0)
        );
    }
}
