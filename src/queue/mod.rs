//! Queue semantics as plain data: FIFO of ready messages, NACKed messages
//! waiting out their redelivery delay, bounds with an overflow policy, expiry
//! and the dead-letter decision. No I/O and no tasks: the router owns every
//! queue and calls in. Who consumes, and with how much credit, is the
//! router's business (it knows the sessions).
//!
//! Order: FIFO, except that messages returned unacknowledged (a consumer
//! left) go back to the front in their original order, and a NACKed message
//! comes back to the front when its delay is over: both are older than what
//! waits behind them.

mod engine;
mod memory;
mod settings;

use crate::config::Overflow;
use crate::model::message::Message;
use crate::model::session_id::SessionId;
use crate::store::{QueueId, Sequence};
pub use engine::{
    close_reason, DeliveryKey, DurableRefusal, DurableSubscribe, EngineAck, EngineFuture,
    EngineQueue, QueueEngine, QueueSend, QueueSubscribe, REFUSAL,
};
pub use memory::QueueMemory;
pub use settings::{QueueArguments, QueuePolicy, QueueSettings};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A message in a queue, with how often it was delivered.
#[derive(Debug, Clone)]
pub struct QueuedMessage {
    /// The message, shared with in-flight deliveries.
    pub message: Arc<Message>,
    /// Deliveries so far.
    pub deliveries: u32,
    /// Its position in the store, when it is stored.
    pub sequence: Option<Sequence>,
}

/// A **consumer**: a queue subscription as its queue holds it for
/// round-robin dispatch (the session and subscription id naming the
/// router's `Subscription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    /// The session.
    pub session: SessionId,
    /// Its subscription id.
    pub subscription: Arc<str>,
}

/// Messages a queue dropped or refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Expired before delivery.
    pub expired: u64,
    /// Dropped by a full `drop-oldest` queue.
    pub overflow: u64,
    /// Refused by a full `reject` queue (the publisher got ERROR).
    pub rejected: u64,
}

/// The queue is full and its policy is `reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFull(pub String);

/// One queue.
#[derive(Debug)]
pub struct Queue {
    /// Its destination name (`/queue/...` or `/reply-queue/...`).
    pub name: String,
    /// Its settings, fixed at creation.
    pub settings: QueueSettings,
    ready: VecDeque<QueuedMessage>,
    /// NACKed messages by (due time, arrival number).
    delayed: BTreeMap<(Instant, u64), QueuedMessage>,
    delayed_count: u64,
    /// Bytes (bodies and headers, [`Message::size`]) of every held
    /// message, ready or delayed.
    bytes: usize,
    /// The broker-wide count that `bytes` is part of.
    memory: Arc<QueueMemory>,
    /// Consumers in round-robin order.
    pub consumers: Vec<Consumer>,
    /// Where round-robin continues.
    pub next_consumer: usize,
    /// Messages dropped by `drop-oldest` or expiry (for logs and metrics).
    pub dropped: u64,
    /// Drops by reason not yet counted in the metrics (see
    /// [`Queue::take_drop_counts`]).
    unreported: DropCounts,
    /// Its id in the store, when it is stored.
    pub store_id: Option<QueueId>,
    /// Stored messages dropped since the last `take_discarded`: the router
    /// removes them from the store.
    discarded: Vec<QueuedMessage>,
}

impl Queue {
    /// An empty queue.
    pub fn new(name: String, settings: QueueSettings, memory: Arc<QueueMemory>) -> Queue {
        Queue {
            name,
            settings,
            ready: VecDeque::new(),
            delayed: BTreeMap::new(),
            delayed_count: 0,
            bytes: 0,
            memory,
            consumers: Vec::new(),
            next_consumer: 0,
            dropped: 0,
            unreported: DropCounts::default(),
            store_id: None,
            discarded: Vec::new(),
        }
    }

    /// Stored messages dropped (expired, `drop-oldest`) since the last call.
    pub fn take_discarded(&mut self) -> Vec<QueuedMessage> {
        std::mem::take(&mut self.discarded)
    }

    /// Puts back a message recovered from the store, bounds aside.
    pub fn restore(&mut self, message: QueuedMessage) {
        self.hold(message.message.size());
        self.ready.push_back(message);
    }

    /// Drops by reason since the last call (the router adds them to the
    /// metrics under the queue's class).
    pub fn take_drop_counts(&mut self) -> DropCounts {
        std::mem::take(&mut self.unreported)
    }

    fn discard(&mut self, message: QueuedMessage, expired: bool) {
        self.dropped += 1;
        if expired {
            self.unreported.expired += 1;
        } else {
            self.unreported.overflow += 1;
        }
        if message.sequence.is_some() {
            self.discarded.push(message);
        }
    }

    /// Removes every held message (an operator's purge); unacked
    /// deliveries stay with their consumers.
    pub fn purge(&mut self) -> Vec<QueuedMessage> {
        let mut purged: Vec<QueuedMessage> = self.ready.drain(..).collect();
        purged.extend(std::mem::take(&mut self.delayed).into_values());
        let bytes = self.bytes;
        self.release(bytes);
        purged
    }

    /// Messages held, ready and delayed.
    pub fn len(&self) -> usize {
        self.ready.len() + self.delayed.len()
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages ready for delivery now.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Appends a new message (stored at `sequence`, if stored), applying
    /// the overflow policy.
    pub fn enqueue(
        &mut self,
        message: Arc<Message>,
        sequence: Option<Sequence>,
    ) -> Result<(), QueueFull> {
        let size = message.size();
        let full =
            |q: &Queue| q.len() >= q.settings.max_length || q.bytes + size > q.settings.max_bytes;
        if full(self) {
            match self.settings.overflow {
                Overflow::Reject => {
                    self.unreported.rejected += 1;
                    return Err(QueueFull(format!(
                        "queue '{}' is full ({} messages, {} bytes; max_length {}, max_bytes {})",
                        self.name,
                        self.len(),
                        self.bytes,
                        self.settings.max_length,
                        self.settings.max_bytes
                    )));
                }
                Overflow::DropOldest => {
                    while full(self) {
                        let Some(oldest) = self.ready.pop_front() else {
                            break;
                        };
                        self.release(oldest.message.size());
                        self.discard(oldest, false);
                    }
                    if full(self) {
                        // Only delayed messages are left; the newest cannot fit.
                        return Err(QueueFull(format!(
                            "queue '{}' is full of messages awaiting redelivery",
                            self.name
                        )));
                    }
                }
            }
        }
        self.hold(size);
        self.ready.push_back(QueuedMessage {
            message,
            deliveries: 0,
            sequence,
        });
        Ok(())
    }

    fn hold(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.memory.add(bytes);
    }

    fn release(&mut self, bytes: usize) {
        self.bytes -= bytes;
        self.memory.sub(bytes);
    }

    /// Takes the next ready message, dropping expired ones on the way.
    pub fn pop_ready(&mut self, now_ms: u64) -> Option<QueuedMessage> {
        while let Some(next) = self.ready.pop_front() {
            self.release(next.message.size());
            if next.message.expired(now_ms) {
                self.discard(next, true);
                continue;
            }
            return Some(next);
        }
        None
    }

    /// Puts returned messages back in front, in the order given.
    pub fn return_to_front(&mut self, messages: impl DoubleEndedIterator<Item = QueuedMessage>) {
        for message in messages.rev() {
            self.hold(message.message.size());
            self.ready.push_front(message);
        }
    }

    /// Holds a NACKed message until `due`.
    pub fn delay(&mut self, message: QueuedMessage, due: Instant) {
        self.hold(message.message.size());
        self.delayed_count += 1;
        self.delayed.insert((due, self.delayed_count), message);
    }

    /// Moves delayed messages that are due to the front; true if any moved.
    pub fn promote_due(&mut self, now: Instant) -> bool {
        let mut due = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        let moved = !due.is_empty();
        for message in due.into_iter().rev() {
            self.ready.push_front(message);
        }
        moved
    }

    /// When the next delayed message is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.delayed.keys().next().map(|(due, _)| *due)
    }

    /// The NACK delay before the next delivery of a message delivered
    /// `deliveries` times: the base delay doubled per earlier delivery, capped.
    pub fn redelivery_delay(&self, deliveries: u32) -> Duration {
        let doublings = deliveries.saturating_sub(1).min(16);
        self.settings
            .redelivery_delay
            .saturating_mul(1 << doublings)
            .min(self.settings.redelivery_delay_max)
    }

    /// Whether a message that came back (NACK, or its consumer left) has had
    /// its deliveries and goes to the dead-letter queue instead.
    pub fn dead_letter_for(&self, message: &QueuedMessage) -> Option<&str> {
        if message.deliveries >= self.settings.max_deliveries {
            self.settings.dead_letter.as_deref()
        } else {
            None
        }
    }

    /// Removes a consumer; true if it was one.
    pub fn remove_consumer(&mut self, session: SessionId, subscription: &str) -> bool {
        let before = self.consumers.len();
        self.consumers
            .retain(|c| !(c.session == session && &*c.subscription == subscription));
        self.consumers.len() != before
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // A deleted queue (auto-delete, reply queue) frees what it held.
        self.memory.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    impl Queue {
        fn enqueue_test(&mut self, message: Arc<Message>) -> Result<(), QueueFull> {
            self.enqueue(message, None)
        }
    }

    fn new_queue(settings: QueueSettings) -> Queue {
        Queue::new(
            "/queue/q".into(),
            settings,
            Arc::new(QueueMemory::new(usize::MAX)),
        )
    }

    fn settings(max_length: usize, overflow: Overflow) -> QueueSettings {
        QueueSettings {
            prefetch: 10,
            max_length,
            max_bytes: 1 << 20,
            overflow,
            message_ttl: None,
            max_deliveries: 3,
            redelivery_delay: Duration::from_millis(100),
            redelivery_delay_max: Duration::from_millis(350),
            dead_letter: Some("/queue/q.dlq".into()),
            exclusive: false,
            auto_delete: false,
        }
    }

    fn message(id: &str, expires_at: Option<u64>) -> Arc<Message> {
        Arc::new(Message {
            id: id.into(),
            destination: "/queue/q".into(),
            headers: Vec::new(),
            body: Bytes::from_static(b"body"),
            text: true,
            expires_at,
        })
    }

    fn ids(queue: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| queue.pop_ready(0))
            .map(|m| m.message.id.to_string())
            .collect()
    }

    #[test]
    fn reject_and_drop_oldest_overflow() {
        let mut queue = new_queue(settings(2, Overflow::Reject));
        queue.enqueue_test(message("1", None)).expect("fits");
        queue.enqueue_test(message("2", None)).expect("fits");
        assert!(queue.enqueue_test(message("3", None)).is_err());
        let mut queue = new_queue(settings(2, Overflow::DropOldest));
        for id in ["1", "2", "3"] {
            queue.enqueue_test(message(id, None)).expect("drops oldest");
        }
        assert_eq!(ids(&mut queue), vec!["2", "3"]);
        assert_eq!(queue.dropped, 1);
    }

    #[test]
    fn expired_messages_are_skipped() {
        let mut queue = new_queue(settings(10, Overflow::Reject));
        queue.enqueue_test(message("old", Some(5))).expect("fits");
        queue.enqueue_test(message("new", Some(50))).expect("fits");
        assert_eq!(
            queue.pop_ready(10).map(|m| m.message.id.to_string()),
            Some("new".into())
        );
        assert!(queue.is_empty());
    }

    #[test]
    fn returned_messages_go_first_in_their_order() {
        let mut queue = new_queue(settings(10, Overflow::Reject));
        queue.enqueue_test(message("3", None)).expect("fits");
        let returned = ["1", "2"].map(|id| QueuedMessage {
            message: message(id, None),
            deliveries: 1,
            sequence: None,
        });
        queue.return_to_front(returned.into_iter());
        assert_eq!(ids(&mut queue), vec!["1", "2", "3"]);
    }

    #[test]
    fn delayed_messages_come_back_when_due_and_backoff_doubles() {
        let mut queue = new_queue(settings(10, Overflow::Reject));
        let now = Instant::now();
        queue.delay(
            QueuedMessage {
                message: message("n", None),
                deliveries: 1,
                sequence: None,
            },
            now + Duration::from_millis(100),
        );
        assert!(!queue.promote_due(now));
        assert!(queue.promote_due(now + Duration::from_millis(100)));
        assert_eq!(ids(&mut queue), vec!["n"]);
        assert_eq!(queue.redelivery_delay(1), Duration::from_millis(100));
        assert_eq!(queue.redelivery_delay(2), Duration::from_millis(200));
        assert_eq!(
            queue.redelivery_delay(3),
            Duration::from_millis(350),
            "capped"
        );
    }

    #[test]
    fn dead_letter_after_max_deliveries() {
        let queue = new_queue(settings(10, Overflow::Reject));
        let twice = QueuedMessage {
            message: message("m", None),
            deliveries: 2,
            sequence: None,
        };
        assert_eq!(queue.dead_letter_for(&twice), None);
        let thrice = QueuedMessage {
            deliveries: 3,
            ..twice
        };
        assert_eq!(queue.dead_letter_for(&thrice), Some("/queue/q.dlq"));
    }

    #[test]
    fn headers_count_against_max_bytes() {
        // Empty bodies with 40 KB of headers: the second does not fit in
        // 64 KiB, although the bodies weigh nothing.
        let mut queue = new_queue(QueueSettings {
            max_bytes: 64 * 1024,
            ..settings(10, Overflow::Reject)
        });
        let heavy = |id: &str| {
            Arc::new(Message {
                id: id.into(),
                destination: "/queue/q".into(),
                headers: vec![("x".into(), "h".repeat(40_000))],
                body: Bytes::new(),
                text: true,
                expires_at: None,
            })
        };
        queue.enqueue_test(heavy("1")).expect("fits");
        assert!(queue.enqueue_test(heavy("2")).is_err());
        assert_eq!(queue.memory.bytes(), heavy("1").size());
        assert!(queue.pop_ready(0).is_some());
        assert_eq!(queue.memory.bytes(), 0, "released with its headers");
    }
}
