//! How a connection ends: the last words (frames still queued, ERROR, over
//! WebSocket the Close frame with a fitting code) within [`CLOSING_TIME`],
//! then the linger. TCP and WebSocket end alike but for the Close frame.
//!
//! Closing follows RFC 6455 §7: a client's Close frame is answered with one
//! echoing its code, and after our own Close frame (over TCP, after the last
//! frame) the connection *lingers*:
//! it half-closes and reads and discards what the client still sends (bounded
//! by [`LINGER_TIME`] and [`LINGER_BYTES`]) before the socket goes. Closing a
//! socket with unread bytes makes the kernel send a reset, and a reset
//! destroys the ERROR and the Close frame still on their way to the client.

use super::writer::{write_batch, WRITE_BATCH};
use super::{Connection, End};
use crate::model::frames;
use crate::outbound::OutFrame;
use crate::session::SessionError;
use std::time::Duration;
use stomp_protocol::Version;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::debug;

/// How long the last words (queued frames, ERROR, close) may take.
const CLOSING_TIME: Duration = Duration::from_secs(2);
/// After our Close frame, how long we keep reading (and discarding) what the
/// client still sends: the rest of an oversized message on a slow link, its
/// Close reply. A client gone quiet ends it early by closing its side.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much we read and discard while lingering: the rest of a message
/// several times `max_body_bytes`; past it we close and accept the reset.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Writes what is queued at the end, as the drive loop writes; false
    /// when the client is gone.
    async fn write_out(&mut self, batch: &mut Vec<OutFrame>) -> bool {
        let packed = self.session.packs_frames();
        write_batch(&mut self.transport, &self.outbound, batch, packed)
            .await
            .is_ok()
    }

    /// The last words: queued frames, ERROR, the close; then the linger.
    pub(super) async fn finish(mut self, end: End) {
        // Detach first: for DISCONNECT the router already did, and for errors
        // this stops deliveries before the connection goes.
        let version = self.session.version();
        self.count_end(&end);
        let disconnecting = matches!(end, End::Disconnect);
        if !disconnecting {
            self.session.end().await;
        }
        // Whether our Close frame (or the answer to the client's) is out.
        let last_words = async {
            match end {
                End::ClientGone => false,
                // tungstenite queued the answer echoing the client's code
                // when it read the Close frame; a flush writes it.
                End::ClientClosed => self.transport.flush().await.is_ok(),
                End::Disconnect => {
                    // The router drops its queue handles after the RECEIPT,
                    // so recv_many returns 0 once everything is out.
                    let mut batch = Vec::with_capacity(WRITE_BATCH);
                    while self.outbound.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                        if !self.write_out(&mut batch).await {
                            return false;
                        }
                    }
                    self.transport.close(None, "").await
                }
                End::Error(error) => {
                    debug!(message = %error.message, "closing with ERROR");
                    if !self.overflow.is_set() {
                        // Frames queued before the error (RECEIPTs) go first.
                        let mut batch: Vec<OutFrame> =
                            std::iter::from_fn(|| self.outbound.try_recv()).collect();
                        if !self.write_out(&mut batch).await {
                            return false;
                        }
                    }
                    let frame = error_frame(&error, version);
                    if self.transport.write_frames(&[frame], false).await.is_err() {
                        return false;
                    }
                    self.transport
                        .close(Some(error.close), &error.message)
                        .await
                }
                End::FinalFrame(close_after) => {
                    self.transport
                        .close(Some(close_after.reason), &close_after.message)
                        .await
                }
            }
        };
        let closed = matches!(timeout(CLOSING_TIME, last_words).await, Ok(true));
        if disconnecting {
            self.session.end().await;
        }
        let drained = if closed {
            linger(self.transport.stream_mut()).await
        } else {
            0
        };
        // The outbound peak is what sizing outbound.max_queued_bytes needs.
        debug!(
            drained,
            outbound_peak_bytes = self.outbound.peak_bytes(),
            "closed"
        );
    }
}

fn error_frame(error: &SessionError, version: Option<Version>) -> OutFrame {
    // Before CONNECT no escaping is agreed: write headers unescaped (1.0 rules).
    let version = version.unwrap_or(Version::V1_0);
    let bytes = frames::error(
        version,
        &frames::ErrorFrame {
            message: &error.message,
            receipt_id: error.receipt_id.as_deref(),
            versions: error.version.as_deref(),
            detail: error.detail.as_deref(),
        },
    );
    OutFrame {
        bytes,
        text: true,
        close: None,
    }
}

/// Half-closes `stream` (our FIN follows the Close frame) and reads and
/// discards until the client closes its side, for at most [`LINGER_TIME`]
/// and [`LINGER_BYTES`]; returns the bytes discarded. Reads the raw stream:
/// after an oversized message the WebSocket framing is lost anyway.
pub async fn linger<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) -> usize {
    let deadline = Instant::now() + LINGER_TIME;
    if !matches!(timeout_at(deadline, stream.shutdown()).await, Ok(Ok(()))) {
        return 0;
    }
    // Only closing connections pay for the scratch buffer.
    let mut scratch = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match timeout_at(deadline, stream.read(&mut scratch)).await {
            Ok(Ok(read)) if read > 0 => drained += read,
            // The client closed its side (or failed, or took too long).
            _ => break,
        }
    }
    drained
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn linger_drains_until_the_peer_closes_and_half_closes_first() {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            theirs.write_all(&[b'x'; 100_000]).await.expect("write");
            // Our FIN reaches the peer while it is still writing.
            let mut rest = Vec::new();
            theirs.read_to_end(&mut rest).await.expect("read");
            assert!(rest.is_empty());
            theirs.shutdown().await.expect("shutdown");
        });
        assert_eq!(linger(&mut ours).await, 100_000);
        peer.await.expect("peer");
    }

    #[tokio::test]
    async fn linger_is_bounded_in_time_and_bytes() {
        // A peer that neither closes nor stops writing.
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let flood = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            while theirs.write_all(&chunk).await.is_ok() {}
        });
        let drained = linger(&mut ours).await;
        assert!((LINGER_BYTES..LINGER_BYTES + 64 * 1024).contains(&drained));
        drop(ours);
        flood.await.expect("flood ends");

        let (mut ours, _silent_peer) = tokio::io::duplex(1024);
        let started = Instant::now();
        assert_eq!(linger(&mut ours).await, 0);
        let waited = started.elapsed();
        assert!(
            waited >= LINGER_TIME && waited < LINGER_TIME + Duration::from_secs(3),
            "{waited:?}"
        );
    }
}
