//! Everything durable, behind one API. Nothing outside this module names
//! sled: a clustered backend can replace [`SledStore`] by implementing
//! [`Store`], without touching sessions or routing.
//!
//! The router decides *what* is durable and sends [`StoreOp`]s in order; the
//! [`writer`] applies them on its own thread with group commit (many batches,
//! one sync) and only then reports each batch's completion (the router
//! turns it into a RECEIPT). Nothing here knows STOMP frames or connections.

mod coalesce;
mod record;
mod sled_store;
pub mod writer;

use crate::model::message::Message;
pub use sled_store::SledStore;
use std::sync::Arc;

/// A queue's identity in the store.
pub type QueueId = u64;
/// A message's position in its queue (global, increasing).
pub type Sequence = u64;

/// What the store keeps about a queue: enough to recreate it as it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueDefinition {
    /// The queue's destination name.
    pub name: String,
    /// `x-message-ttl` it was created with, in ms.
    pub message_ttl_ms: Option<u64>,
    /// `x-max-length` it was created with.
    pub max_length: Option<u64>,
    /// `x-dead-letter-routing-key` it was created with (as a destination).
    pub dead_letter: Option<String>,
    /// For a durable topic subscription: the topic pattern it collects.
    pub binding: Option<String>,
    /// For a durable topic subscription: the principal it belongs to
    /// (`router::Principal`'s stored form); `None` in records written
    /// before owners were stored.
    pub owner: Option<String>,
}

/// One durable change, applied in order.
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// Creates or replaces a queue definition.
    DefineQueue {
        /// Its id.
        id: QueueId,
        /// What it is.
        definition: QueueDefinition,
    },
    /// Deletes a queue and every message in it.
    DeleteQueue {
        /// Its id.
        id: QueueId,
    },
    /// Stores a message in a queue.
    Put {
        /// The queue.
        queue: QueueId,
        /// Its position.
        sequence: Sequence,
        /// The message.
        message: Arc<Message>,
    },
    /// Records how often a stored message was delivered.
    Delivered {
        /// The queue.
        queue: QueueId,
        /// Its position.
        sequence: Sequence,
        /// Deliveries so far.
        deliveries: u32,
    },
    /// Removes a message (acknowledged, expired, dropped or moved).
    Remove {
        /// The queue.
        queue: QueueId,
        /// Its position.
        sequence: Sequence,
    },
    /// A persistent live feed's state after a publication: its epoch, next
    /// offset and retained offset.
    FeedState {
        /// The destination's topic words joined by `.`.
        destination: Arc<str>,
        /// Its epoch (kept across restarts).
        epoch: Arc<str>,
        /// The offset the next publication gets.
        next_offset: u64,
        /// The offset of its retained value, if any.
        retained: Option<u64>,
    },
    /// Keeps one message of a persistent live feed.
    FeedPut {
        /// The destination's topic words joined by `.`.
        destination: Arc<str>,
        /// Its offset.
        offset: u64,
        /// When it was published, in ms since the Unix epoch.
        at_ms: u64,
        /// Part of the history (else only the retained value).
        in_history: bool,
        /// The message, with its `x-offset` and `x-epoch`.
        message: Arc<Message>,
    },
    /// Drops a kept message of a persistent live feed.
    FeedForget {
        /// The destination's topic words joined by `.`.
        destination: Arc<str>,
        /// Its offset.
        offset: u64,
    },
}

/// A persistent live feed as recovered.
#[derive(Debug)]
pub struct StoredFeed {
    /// The destination's topic words joined by `.`.
    pub destination: String,
    /// Its epoch.
    pub epoch: String,
    /// The offset the next publication gets.
    pub next_offset: u64,
    /// The offset of its retained value, if any.
    pub retained: Option<u64>,
    /// Kept messages, by increasing offset.
    pub entries: Vec<StoredFeedEntry>,
}

/// One kept message of a recovered live feed.
#[derive(Debug)]
pub struct StoredFeedEntry {
    /// Its offset.
    pub offset: u64,
    /// When it was published, in ms since the Unix epoch.
    pub at_ms: u64,
    /// Part of the history (else only the retained value).
    pub in_history: bool,
    /// The message.
    pub message: Message,
}

/// A stored message as recovered.
#[derive(Debug)]
pub struct StoredMessage {
    /// Its position.
    pub sequence: Sequence,
    /// The message.
    pub message: Message,
    /// Deliveries before the restart.
    pub deliveries: u32,
}

/// A stored queue as recovered, messages in order.
#[derive(Debug)]
pub struct StoredQueue {
    /// Its id.
    pub id: QueueId,
    /// Its definition.
    pub definition: QueueDefinition,
    /// Its messages, oldest first.
    pub messages: Vec<StoredMessage>,
}

/// A storage failure, with a text for logs and ERROR frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// A durable store. Called from one thread (the writer) after recovery.
pub trait Store: Send + 'static {
    /// Everything stored, for the start-up rebuild. A store that cannot be
    /// read completely is an error: never a shortened queue.
    fn recover(&mut self) -> Result<Vec<StoredQueue>, StoreError>;
    /// Persistent live feeds, for the start-up rebuild (none by default).
    fn recover_feeds(&mut self) -> Result<Vec<StoredFeed>, StoreError> {
        Ok(Vec::new())
    }
    /// Applies `ops` in order (not yet durable).
    fn write(&mut self, ops: &[StoreOp]) -> Result<(), StoreError>;
    /// Makes every earlier write durable on stable storage.
    fn sync(&mut self) -> Result<(), StoreError>;
    /// Bytes of stored records, for the disk budget.
    fn stored_bytes(&self) -> u64;
}

/// A store that keeps nothing: `[storage] enabled = false`.
#[derive(Debug, Default)]
pub struct NoStore;

impl Store for NoStore {
    fn recover(&mut self) -> Result<Vec<StoredQueue>, StoreError> {
        Ok(Vec::new())
    }
    fn write(&mut self, _ops: &[StoreOp]) -> Result<(), StoreError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    fn stored_bytes(&self) -> u64 {
        0
    }
}
