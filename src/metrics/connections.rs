//! The table of open connections: one [`ConnectionEntry`] per connection
//! with what the admin API shows (who, from where, since when) and its own
//! counters. A connection adds to its own entry only, so the hot path
//! touches no shared cache line; a scrape sums the live entries and the
//! totals folded in from closed ones.

use crate::outbound::OverflowSignal;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;
use stomp_protocol::{Command, Version};
use tokio::sync::Notify;

/// Client frame kinds counted, by [`Command::ALL`] index.
pub const COMMANDS: usize = Command::ALL.len();

/// Counters that add up over connections (live ones, then folded into
/// the closed totals).
#[derive(Debug)]
pub struct Counts {
    /// Frames received, by [`Command::ALL`] index.
    pub frames_in: [AtomicU64; COMMANDS],
    /// Frames written, by [`Command::ALL`] index (heart-beats not counted).
    pub frames_out: [AtomicU64; COMMANDS],
    /// Bytes read from the transport (STOMP bytes; WebSocket framing not counted).
    pub bytes_in: AtomicU64,
    /// Bytes written (STOMP frames).
    pub bytes_out: AtomicU64,
    /// SENDs published, by destination class.
    pub published: Box<[AtomicU64]>,
    /// Topic messages pushed by this connection's SENDs straight to
    /// subscribers, by destination class.
    pub delivered: Box<[AtomicU64]>,
}

impl Counts {
    fn new(classes: usize) -> Counts {
        Counts {
            frames_in: std::array::from_fn(|_| AtomicU64::new(0)),
            frames_out: std::array::from_fn(|_| AtomicU64::new(0)),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            published: (0..classes).map(|_| AtomicU64::new(0)).collect(),
            delivered: (0..classes).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn fold_into(&self, total: &Counts) {
        let pairs = self
            .frames_in
            .iter()
            .zip(&total.frames_in)
            .chain(self.frames_out.iter().zip(&total.frames_out))
            .chain(self.published.iter().zip(total.published.iter()))
            .chain(self.delivered.iter().zip(total.delivered.iter()))
            .chain([
                (&self.bytes_in, &total.bytes_in),
                (&self.bytes_out, &total.bytes_out),
            ]);
        for (own, sum) in pairs {
            sum.fetch_add(own.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

/// Adds to a per-connection counter (one writer: no contention).
pub fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// The index of `command` in [`Command::ALL`].
pub fn command_index(command: Command) -> usize {
    Command::ALL.iter().position(|c| *c == command).unwrap_or(0)
}

/// The [`Command::ALL`] index of a frame the server encoded, from its
/// first byte alone (the server sends only these four; a heart-beat EOL
/// is none). One comparison per frame: this runs for every delivery.
pub fn encoded_command(bytes: &[u8]) -> Option<usize> {
    let command = match bytes.first()? {
        b'M' => Command::Message,
        b'R' => Command::Receipt,
        b'E' => Command::Error,
        b'C' => Command::Connected,
        _ => return None,
    };
    Some(command_index(command))
}

/// After CONNECT: what the session negotiated and who it is.
#[derive(Debug, Clone)]
pub struct Connected {
    /// The negotiated STOMP version.
    pub version: Version,
    /// The login or token subject; none for anonymous clients.
    pub user: Option<String>,
}

/// One open connection.
#[derive(Debug)]
pub struct ConnectionEntry {
    /// The session id (as in logs).
    pub id: u64,
    /// The client's address.
    pub ip: IpAddr,
    /// `ws` or `tcp`.
    pub transport: &'static str,
    /// When it was accepted.
    pub since: SystemTime,
    /// Set once, on CONNECTED.
    pub connected: OnceLock<Connected>,
    /// Its counters.
    pub counts: Counts,
    /// Its outbound queue, read for queued bytes and drops (not a sender:
    /// it does not keep the queue open).
    outbound: OverflowSignal,
    /// Why an operator asked to close it; the connection waits on `close`.
    close_reason: Mutex<Option<String>>,
    /// Notified when an operator asks to close it.
    close: Notify,
}

impl ConnectionEntry {
    /// Bytes queued for the client and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.outbound.queued_bytes()
    }

    /// Topic messages dropped for it by the `drop-oldest` policy.
    pub fn dropped(&self) -> u64 {
        self.outbound.dropped()
    }

    /// Topic messages replaced for it by the `conflate` policy.
    pub fn conflated(&self) -> u64 {
        self.outbound.conflated()
    }

    /// Asks the connection to close with ERROR `reason`.
    pub fn request_close(&self, reason: String) {
        *self.close_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        self.close.notify_one();
    }

    /// Resolves with the reason once an operator asked to close it.
    pub async fn close_requested(&self) -> String {
        loop {
            let notified = self.close.notified();
            if let Some(reason) = self
                .close_reason
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
            {
                return reason;
            }
            notified.await;
        }
    }
}

/// Every open connection, and the counts of the closed ones.
#[derive(Debug)]
pub struct Connections {
    /// Bounded by `listener.max_connections` (one entry per connection
    /// task). Taken for one insert, removal or snapshot, never across an
    /// `.await`.
    open: Mutex<HashMap<u64, Arc<ConnectionEntry>>>,
    /// What closed connections counted.
    closed: Counts,
    /// Topic messages dropped for closed connections (`drop-oldest`).
    closed_dropped: AtomicU64,
    /// Topic messages replaced for closed connections (`conflate`).
    closed_conflated: AtomicU64,
    classes: usize,
}

/// Removes its entry when the connection ends, folding its counts in.
#[derive(Debug)]
pub struct Registered {
    connections: Arc<Connections>,
    /// The entry, shared with the session.
    pub entry: Arc<ConnectionEntry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.entry.id);
        self.entry.counts.fold_into(&self.connections.closed);
        add(&self.connections.closed_dropped, self.entry.dropped());
        add(&self.connections.closed_conflated, self.entry.conflated());
    }
}

impl Connections {
    /// An empty table for `classes` destination classes.
    pub fn new(classes: usize) -> Connections {
        Connections {
            open: Mutex::new(HashMap::new()),
            closed: Counts::new(classes),
            closed_dropped: AtomicU64::new(0),
            closed_conflated: AtomicU64::new(0),
            classes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionEntry>>> {
        // A poisoned lock only means a panic elsewhere; the table is plain.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a connection; it is removed when the guard drops.
    pub fn register(
        self: &Arc<Self>,
        id: u64,
        ip: IpAddr,
        transport: &'static str,
        outbound: OverflowSignal,
    ) -> Registered {
        let entry = Arc::new(ConnectionEntry {
            id,
            ip,
            transport,
            since: SystemTime::now(),
            connected: OnceLock::new(),
            counts: Counts::new(self.classes),
            outbound,
            close_reason: Mutex::new(None),
            close: Notify::new(),
        });
        self.lock().insert(id, entry.clone());
        Registered {
            connections: self.clone(),
            entry,
        }
    }

    /// The open connections, ordered by id.
    pub fn snapshot(&self) -> Vec<Arc<ConnectionEntry>> {
        let mut entries: Vec<_> = self.lock().values().cloned().collect();
        entries.sort_by_key(|entry| entry.id);
        entries
    }

    /// What closed connections counted.
    pub fn closed_counts(&self) -> &Counts {
        &self.closed
    }

    /// Topic messages dropped for connections that have closed.
    pub fn closed_dropped(&self) -> u64 {
        self.closed_dropped.load(Ordering::Relaxed)
    }

    /// Topic messages replaced by conflation for connections that have closed.
    pub fn closed_conflated(&self) -> u64 {
        self.closed_conflated.load(Ordering::Relaxed)
    }

    /// One open connection.
    pub fn get(&self, id: u64) -> Option<Arc<ConnectionEntry>> {
        self.lock().get(&id).cloned()
    }

    /// A counter summed over closed and the given live connections.
    pub fn total(
        &self,
        live: &[Arc<ConnectionEntry>],
        pick: impl Fn(&Counts) -> &AtomicU64,
    ) -> u64 {
        live.iter()
            .map(|entry| pick(&entry.counts).load(Ordering::Relaxed))
            .sum::<u64>()
            + pick(&self.closed).load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_commands_are_told_by_their_first_byte() {
        for command in [
            Command::Message,
            Command::Receipt,
            Command::Error,
            Command::Connected,
        ] {
            let encoded = format!("{}\nx:y\n\n\0", command.as_str());
            assert_eq!(
                encoded_command(encoded.as_bytes()),
                Some(command_index(command))
            );
        }
        assert_eq!(encoded_command(b"\n"), None);
        assert_eq!(encoded_command(b""), None);
    }
}
