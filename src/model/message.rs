//! A message as the broker holds it between a SEND and its deliveries.

use super::compact::push_base62;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A routed message. Shared (`Arc`) between a queue and its deliveries.
#[derive(Debug)]
pub struct Message {
    /// The unique `message-id`.
    pub id: Arc<str>,
    /// The `destination` header of its MESSAGE frames.
    pub destination: String,
    /// Headers passed on, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The body is UTF-8, so frames can be text WebSocket messages.
    pub text: bool,
    /// Expiry, in ms since the Unix epoch.
    pub expires_at: Option<u64>,
}

/// Bytes of a header list, as counted against byte bounds: a 64 KiB header
/// block weighs as much as a 64 KiB body.
pub(crate) fn headers_size(headers: &[(String, String)]) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 2)
        .sum()
}

impl Message {
    /// What it weighs against queue memory: body, headers, destination and
    /// id (empty bodies with large headers are not free).
    pub fn size(&self) -> usize {
        self.body.len() + headers_size(&self.headers) + self.destination.len() + self.id.len()
    }

    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at <= now_ms)
    }

    /// Whether it has expired now; reads the clock only if it can expire
    /// (most messages cannot: the publishing path skips the clock for them).
    pub fn expired_now(&self) -> bool {
        self.expires_at.is_some_and(|at| at <= epoch_ms())
    }
}

/// Milliseconds since the Unix epoch (message expiry is in these units).
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Message ids, unique across the broker and its restarts: a prefix (the
/// start time) and a counter shared by every publishing session.
#[derive(Debug)]
pub struct MessageIds {
    prefix: String,
    last: AtomicU64,
}

impl Default for MessageIds {
    fn default() -> Self {
        // Base 62, because the id goes out in every MESSAGE: 7 characters
        // of start time and a counter that reaches 4 at 1 M messages
        // (hex and decimal took 11 and 7).
        let mut prefix = String::with_capacity(8);
        push_base62(&mut prefix, epoch_ms());
        prefix.push('-');
        MessageIds {
            prefix,
            last: AtomicU64::new(0),
        }
    }
}

impl MessageIds {
    /// The next id.
    pub fn next(&self) -> Arc<str> {
        let n = self.last.fetch_add(1, Ordering::Relaxed) + 1;
        let mut id = String::with_capacity(self.prefix.len() + 11);
        id.push_str(&self.prefix);
        push_base62(&mut id, n);
        id.into()
    }
}
