//! `[limits]`: sizes and counts a client may use, per frame, per connection
//! and on the whole server.

use serde::{Deserialize, Serialize};
use stomp_protocol::Limits;

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// See [`Limits::max_command_bytes`].
    pub max_command_bytes: usize,
    /// See [`Limits::max_headers`].
    pub max_headers: usize,
    /// See [`Limits::max_header_line_bytes`].
    pub max_header_line_bytes: usize,
    /// See [`Limits::max_header_bytes`].
    pub max_header_bytes: usize,
    /// See [`Limits::max_body_bytes`].
    pub max_body_bytes: usize,
    /// Active subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Dot-separated words in a destination name.
    pub max_destination_words: usize,
    /// `#` wildcards in one subscription pattern (bounds matching work).
    pub max_multi_word_wildcards: usize,
    /// Open transactions per connection.
    pub max_transactions_per_connection: usize,
    /// SEND, ACK and NACK frames in one transaction.
    pub max_frames_per_transaction: usize,
    /// Unsettled deliveries per connection.
    pub max_unacked_per_connection: usize,
    /// Bytes (bodies and headers) in all queues together before publishers
    /// to queues wait.
    pub max_queued_message_bytes: usize,
    /// Bytes (bodies and headers) held in one connection's open transactions.
    pub max_transaction_bytes: usize,
    /// Subscriptions on the whole server (reply queues' included).
    pub max_subscriptions: usize,
    /// `/queue/...` queues on the whole server (created on first use).
    pub max_queues: usize,
    /// Durable topic subscriptions on the whole server.
    pub max_durable_subscriptions: usize,
    /// Durable topic subscriptions one connection may create.
    pub max_durable_subscriptions_per_connection: usize,
    /// `/temp-queue/` reply queues on the whole server.
    pub max_reply_queues: usize,
    /// `/temp-queue/` reply queues of one connection.
    pub max_reply_queues_per_connection: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_command_bytes: 64,
            max_headers: 64,
            max_header_line_bytes: 8192,
            max_header_bytes: 65536,
            max_body_bytes: 1024 * 1024,
            max_subscriptions_per_connection: 1000,
            max_destination_words: 32,
            max_multi_word_wildcards: 4,
            max_transactions_per_connection: 16,
            max_frames_per_transaction: 10_000,
            max_unacked_per_connection: 10_000,
            max_queued_message_bytes: 1024 * 1024 * 1024,
            max_transaction_bytes: 16 * 1024 * 1024,
            max_subscriptions: 1_000_000,
            max_queues: 10_000,
            max_durable_subscriptions: 10_000,
            max_durable_subscriptions_per_connection: 100,
            max_reply_queues: 100_000,
            max_reply_queues_per_connection: 100,
        }
    }
}

impl LimitsConfig {
    /// The codec's share of the limits.
    pub fn frame_limits(&self) -> Limits {
        Limits {
            max_command_bytes: self.max_command_bytes,
            max_headers: self.max_headers,
            max_header_line_bytes: self.max_header_line_bytes,
            max_header_bytes: self.max_header_bytes,
            max_body_bytes: self.max_body_bytes,
        }
    }
}
