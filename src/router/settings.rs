//! What the broker hands the router at start: its channel's bounds, the
//! policies, the store, the topic index's writing half and the counters.

use crate::config::{LimitsConfig, SlowConsumersConfig};
use crate::fanout::IndexWriter;
use crate::metrics::Metrics;
use crate::model::destination;
use crate::queue::{QueueMemory, QueuePolicy};
use crate::store::writer::StoreWriter;
use crate::store::StoredQueue;
use std::sync::Arc;

/// Settings the router needs.
#[derive(Debug)]
pub struct RouterSettings {
    /// Capacity of the command channel.
    pub channel_capacity: usize,
    /// `router.max_queued_bytes`: SEND bytes in the command channel.
    pub max_queued_bytes: usize,
    /// Caps on state keyed by names clients choose.
    pub caps: LimitsConfig,
    /// Queue settings by name.
    pub queue_policy: QueuePolicy,
    /// Default prefetch of client-ack topic subscriptions.
    pub topic_prefetch: usize,
    /// Unsettled deliveries per connection.
    pub max_unacked_per_connection: usize,
    /// Memory of all queues, shared with sessions for back-pressure.
    pub queue_memory: Arc<QueueMemory>,
    /// Slow-consumer policies.
    pub slow_consumers: SlowConsumersConfig,
    /// Limits for parsing the policies' patterns.
    pub destination_limits: destination::DestinationLimits,
    /// The store's writer.
    pub store: StoreWriter,
    /// Whether anything is stored at all.
    pub store_enabled: bool,
    /// What the store held at start.
    pub recovered: Vec<StoredQueue>,
    /// `[storage] persistent`: destination patterns persistent by default.
    pub persistent_patterns: Vec<String>,
    /// `[storage] max_disk_bytes`.
    pub max_disk_bytes: u64,
    /// The writing half of the shared topic index.
    pub index: IndexWriter,
    /// The broker's counters; the router writes its own ([`crate::metrics::RouterCounts`]).
    pub metrics: Arc<Metrics>,
}
