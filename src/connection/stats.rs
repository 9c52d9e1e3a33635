//! The connection's side of the metrics: it registers itself in the
//! table of open connections (which the admin API lists and can close),
//! counts what it reads and writes in its own entry, and names why it
//! ended.

use super::{Connection, End};
use crate::metrics::connections::{add, command_index, encoded_command, Registered, COMMANDS};
use crate::metrics::{transport_index, CloseKind};
use crate::model::close::CloseReason;
use crate::outbound::OutFrame;
use crate::session::SessionError;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};

/// The start of the ERROR message of a connection an operator closed.
pub(super) const CLOSED_BY_ADMIN: &str = "closed by an administrator";

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Adds this connection to the table; it leaves it when the guard drops.
    pub(super) fn register(&mut self) -> Registered {
        let metrics = self.session.metrics().clone();
        let transport = if self.transport.is_websocket() {
            "ws"
        } else {
            "tcp"
        };
        add(&metrics.opened[transport_index(transport)], 1);
        let registered = metrics.connections.register(
            self.session.id().0,
            self.session.client_ip(),
            transport,
            self.overflow.clone(),
        );
        self.session.set_stats(registered.entry.clone());
        registered
    }

    /// Counts a batch about to be written: frames by command, bytes.
    pub(super) fn count_written(&self, batch: &[OutFrame]) {
        let Some(stats) = self.session.stats() else {
            return;
        };
        // Summed here, added once per batch.
        let mut bytes = 0;
        let mut frames = [0u64; COMMANDS];
        for frame in batch {
            bytes += frame.bytes.len() as u64;
            if let Some(command) = encoded_command(&frame.bytes) {
                frames[command] += 1;
            }
        }
        for (counter, n) in stats.counts.frames_out.iter().zip(frames) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        add(&stats.counts.bytes_out, bytes);
    }

    /// Counts bytes read.
    pub(super) fn count_read(&self, bytes: usize) {
        if let Some(stats) = self.session.stats() {
            add(&stats.counts.bytes_in, bytes as u64);
        }
    }

    /// Counts a frame received.
    pub(super) fn count_frame(&self, command: stomp_protocol::Command) {
        if let Some(stats) = self.session.stats() {
            add(&stats.counts.frames_in[command_index(command)], 1);
        }
    }

    /// Counts the end and logs it (rate-limited) with its reason.
    pub(super) fn count_end(&self, end: &End) {
        let metrics = self.session.metrics();
        let kind = close_kind(end, self.overflow.is_set());
        metrics.closed(kind);
        if !metrics.may_log_connection() {
            return;
        }
        let stats = self.session.stats();
        let user = stats
            .and_then(|stats| stats.connected.get())
            .map(|connected| connected.user.as_deref().unwrap_or("anonymous"))
            .unwrap_or("-");
        let message = match end {
            End::Error(error) => error.message.as_str(),
            _ => "",
        };
        tracing::info!(
            session = self.session.id().0,
            user,
            address = %self.session.client_ip(),
            transport = stats.map_or("-", |stats| stats.transport),
            reason = kind.label(),
            message,
            "disconnected"
        );
    }
}

/// Why a connection ended, as the metrics label it.
fn close_kind(end: &End, overflowed: bool) -> CloseKind {
    match end {
        End::ClientGone => CloseKind::ClientGone,
        End::ClientClosed => CloseKind::ClientClosed,
        End::Disconnect => CloseKind::Disconnect,
        End::FinalFrame(_) => CloseKind::ServerError,
        End::Error(_) if overflowed => CloseKind::SlowConsumer,
        End::Error(error) => error_kind(error),
    }
}

fn error_kind(error: &SessionError) -> CloseKind {
    let message = error.message.as_str();
    if message.starts_with("heart-beat timeout") {
        return CloseKind::HeartbeatTimeout;
    }
    if message.starts_with("authentication") {
        return CloseKind::AuthFailed;
    }
    if message.starts_with(CLOSED_BY_ADMIN) {
        return CloseKind::Admin;
    }
    if message == "slow consumer" {
        return CloseKind::SlowConsumer;
    }
    match error.close {
        CloseReason::ProtocolError | CloseReason::InvalidData => CloseKind::ProtocolError,
        CloseReason::PolicyViolation => CloseKind::PolicyViolation,
        CloseReason::TooBig => CloseKind::TooBig,
        CloseReason::GoingAway => CloseKind::Shutdown,
        CloseReason::InternalError => CloseKind::ServerError,
    }
}
