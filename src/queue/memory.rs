//! Memory held by all queues together, and the publisher back-pressure it
//! drives: past the high-water mark, SENDs to queues wait (their connections
//! stop being read) until consumers drain below the low-water mark.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use tokio::sync::Notify;

/// Bytes of messages (bodies and headers) held in queues, shared by every
/// queue and every session.
#[derive(Debug)]
pub struct QueueMemory {
    bytes: AtomicUsize,
    high_water: usize,
    low_water: usize,
    /// Set at the high-water mark, cleared at the low-water mark.
    paused: AtomicBool,
    /// Wakes every waiting publisher when `paused` clears.
    resumed: Notify,
}

impl QueueMemory {
    /// Pauses publishers at `max_bytes`, resumes them at 90% of it.
    pub fn new(max_bytes: usize) -> Self {
        QueueMemory {
            bytes: AtomicUsize::new(0),
            high_water: max_bytes,
            low_water: max_bytes / 10 * 9,
            paused: AtomicBool::new(false),
            resumed: Notify::new(),
        }
    }

    /// Counts bytes that entered a queue.
    pub fn add(&self, bytes: usize) {
        let now = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now >= self.high_water {
            self.paused.store(true, Ordering::Relaxed);
        }
    }

    /// Counts bytes that left a queue.
    pub fn sub(&self, bytes: usize) {
        let now = self
            .bytes
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        if now <= self.low_water && self.paused.swap(false, Ordering::Relaxed) {
            self.resumed.notify_waiters();
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether publishers to queues are being held back.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Waits while publishers are held back.
    pub async fn wait_for_room(&self) {
        loop {
            let resumed = self.resumed.notified();
            if !self.paused() {
                return;
            }
            resumed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn pauses_at_high_water_and_resumes_at_low_water() {
        let memory = Arc::new(QueueMemory::new(1000));
        memory.add(999);
        assert!(!memory.paused());
        memory.add(1);
        assert!(memory.paused());
        let waiter = tokio::spawn({
            let memory = memory.clone();
            async move { memory.wait_for_room().await }
        });
        memory.sub(50);
        assert!(memory.paused(), "950 is above the low-water mark of 900");
        memory.sub(50);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("resumed")
            .expect("task");
    }
}
