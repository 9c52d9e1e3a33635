//! Drives one WebSocket connection: reads messages into the decoder, feeds
//! frames to the session, writes the outbound queue in batches (one flush per
//! batch), keeps heart-beats, and closes with ERROR and a fitting close code.
//!
//! Closing follows RFC 6455 §7: a client's Close frame is answered with one
//! echoing its code, and after our own Close frame the connection *lingers*:
//! it half-closes and reads and discards what the client still sends (bounded
//! by [`LINGER_TIME`] and [`LINGER_BYTES`]) before the socket goes. Closing a
//! socket with unread bytes makes the kernel send a reset, and a reset
//! destroys the ERROR and the Close frame still on their way to the client.

use crate::context::BrokerContext;
use crate::endpoint::Endpoint;
use crate::model::frames;
use crate::model::session_id::SessionId;
use crate::outbound::{outbound_channel, Closing, OutFrame, OutboundReceiver, OverflowSignal};
use crate::session::heartbeat::Heartbeat;
use crate::session::{ClientInfo, CloseReason, Flow, Session, SessionError};
use crate::shutdown::Shutdown;
use crate::websocket;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{Decoder, Limits, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, info_span, Instrument};

type Ws<S> = WebSocketStream<S>;

/// Most frames written between two flushes.
const WRITE_BATCH: usize = 64;
/// How long the last words (queued frames, ERROR, close) may take.
const CLOSING_TIME: Duration = Duration::from_secs(2);
/// After our Close frame, how long we keep reading (and discarding) what the
/// client still sends: the rest of an oversized message on a slow link, its
/// Close reply. A client gone quiet ends it early by closing its side.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much we read and discard while lingering: the rest of a message
/// several times `max_body_bytes`; past it we close and accept the reset.
pub const LINGER_BYTES: usize = 8 * 1024 * 1024;
/// The longest a heart-beat or ping write may wait for a full socket: the
/// loop cannot see shutdown or overflow meanwhile, and intervals go up to
/// `stomp.heartbeat_max`.
const BEAT_WRITE_LIMIT: Duration = Duration::from_secs(10);
/// A heart-beat goes out this much (at most a quarter of the interval)
/// before the promised interval is over, so that timer and scheduling delays
/// on a busy machine never make it late at the client.
const BEAT_EARLY: Duration = Duration::from_millis(250);

/// Serves one accepted TCP connection until it ends.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) {
    let id = SessionId(context.next_session_id());
    let span = info_span!("conn", id = id.0, %peer);
    run(stream, peer.ip(), id, context, endpoint, shutdown)
        .instrument(span)
        .await;
}

async fn run(
    stream: TcpStream,
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) {
    // Half-open peers are found by TCP keepalive even with heart-beats off.
    if let Err(error) = crate::socket_options::configure(&stream) {
        debug!(%error, "socket options not set");
    }
    // TLS and WebSocket handshakes share one limit, in this task.
    let deadline = Instant::now() + context.config.listener.handshake_timeout;
    // Boxed futures: a task keeps room for its largest await point as long
    // as it lives, and the handshakes (tungstenite keeps a 4 KiB read chunk
    // inline), TLS and the closing words are large but brief. Boxed, an idle
    // connection's task holds only the live connection.
    match endpoint.tls.clone() {
        None => {
            Box::pin(serve_stream(
                stream, deadline, peer_ip, id, context, endpoint, shutdown,
            ))
            .await
        }
        Some(acceptor) => match timeout_at(deadline, Box::pin(acceptor.accept(stream))).await {
            Ok(Ok(tls)) => {
                Box::pin(serve_stream(
                    tls, deadline, peer_ip, id, context, endpoint, shutdown,
                ))
                .await
            }
            Ok(Err(error)) => debug!(%error, "TLS handshake failed"),
            Err(_) => debug!("TLS handshake timed out"),
        },
    }
}

async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    deadline: Instant,
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) {
    let handshake_timeout = context.config.listener.handshake_timeout;
    let (ws, handshake) = match timeout_at(
        deadline,
        Box::pin(websocket::accept(stream, &context.config, &endpoint.config)),
    )
    .await
    {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(error)) => {
            debug!(%error, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            debug!(?handshake_timeout, "WebSocket handshake timed out");
            return;
        }
    };
    debug!(subprotocol = ?handshake.subprotocol, "WebSocket open");
    let ip_slot = context.admit(peer_ip);
    let outbound_config = &context.config.outbound;
    let (queue, outbound) = outbound_channel(
        outbound_config.max_queued_frames,
        outbound_config.max_queued_bytes,
    );
    let now = Instant::now();
    let mut connection = Connection {
        decoder: Decoder::new(context.config.limits.frame_limits()),
        session: Session::new(
            id,
            context.clone(),
            ClientInfo {
                ip: peer_ip,
                bearer: handshake.bearer,
                origin: handshake.origin,
            },
            handshake.allowed_versions,
            queue,
        ),
        ws,
        overflow: outbound.overflow_signal(),
        outbound,
        buffer: BytesMut::new(),
        last_read: now,
        last_write: now,
        pinged: false,
        read_paused_until: None,
        connect_deadline: now + context.config.listener.connect_timeout,
        grace: context.config.stomp.heartbeat_grace,
        ping_late: context.config.stomp.heartbeat_ping,
        frame_limits: context.config.limits.frame_limits(),
    };
    let _ip_slot = match ip_slot {
        Ok(slot) => slot,
        Err(refusal) => {
            // Refused after the upgrade, so that the client (a browser
            // too, which never sees an HTTP status) reads why.
            let error = SessionError::new(refusal, CloseReason::PolicyViolation);
            Box::pin(connection.finish(End::Error(error))).await;
            return;
        }
    };
    let end = connection.drive(shutdown).await;
    Box::pin(connection.finish(end)).await;
}

/// How the read/write loop ended.
enum End {
    /// The TCP connection ended or failed without a Close frame.
    ClientGone,
    /// The client sent a Close frame: answer it (same code), then close.
    ClientClosed,
    /// DISCONNECT: write what is queued, then close normally.
    Disconnect,
    /// ERROR, then close.
    Error(SessionError),
    /// The router's final ERROR was written: close.
    Closed(Box<Closing>),
}

struct Connection<S> {
    ws: Ws<S>,
    session: Session,
    outbound: OutboundReceiver,
    /// Fires when the router found this connection over its outbound budget.
    overflow: OverflowSignal,
    decoder: Decoder,
    /// Received bytes not yet decoded (at most one partial frame, bounded by the limits).
    buffer: BytesMut,
    last_read: Instant,
    last_write: Instant,
    /// A WebSocket ping was sent because the client's heart-beat is late.
    pinged: bool,
    /// A publish rate limit: nothing is read or decoded until then (writes
    /// and heart-beats go on).
    read_paused_until: Option<Instant>,
    connect_deadline: Instant,
    grace: f64,
    /// `stomp.heartbeat_ping`: ping late clients, count pings and pongs.
    ping_late: bool,
    /// Frame size limits, named in the ERROR for an oversized message.
    frame_limits: Limits,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn drive(&mut self, mut shutdown: Shutdown) -> End {
        // Grows on first use: an idle connection never needs 64 slots.
        let mut batch = Vec::new();
        loop {
            let timer = self.next_timer();
            let paused_until = self.read_paused_until;
            tokio::select! {
                biased;
                _ = shutdown.wait() => {
                    return End::Error(SessionError::new("server shutting down", CloseReason::GoingAway));
                }
                _ = self.overflow.wait() => return End::Error(slow_consumer()),
                received = self.outbound.recv_many(&mut batch, WRITE_BATCH) => {
                    if received == 0 {
                        return End::Disconnect;
                    }
                    // A client that stops reading blocks this write; the
                    // overflow signal and shutdown still end it.
                    tokio::select! {
                        biased;
                        _ = self.overflow.wait() => return End::Error(slow_consumer()),
                        _ = shutdown.wait() => return End::ClientGone,
                        written = write_batch(&mut self.ws, &self.outbound, &mut batch) => {
                            match written {
                                Err(_) => return End::ClientGone,
                                Ok(Some(closing)) => return End::Closed(closing),
                                Ok(None) => self.last_write = Instant::now(),
                            }
                        }
                    }
                }
                message = self.ws.next(), if paused_until.is_none() => {
                    if let Some(end) = self.on_message(message).await {
                        return end;
                    }
                }
                _ = sleep_until(paused_until.unwrap_or(timer)), if paused_until.is_some() => {
                    self.read_paused_until = None;
                    if let Some(end) = self.decode_buffered().await {
                        return end;
                    }
                }
                _ = sleep_until(timer) => {
                    if let Some(end) = self.on_timer().await {
                        return end;
                    }
                }
            }
        }
    }

    /// Handles one WebSocket message; `Some` ends the loop.
    async fn on_message(&mut self, message: Option<Result<Message, WsError>>) -> Option<End> {
        let data: Bytes = match message {
            None => return Some(End::ClientGone),
            Some(Ok(Message::Close(_))) => return Some(End::ClientClosed),
            Some(Err(error)) => return Some(transport_error(error, &self.frame_limits)),
            Some(Ok(Message::Text(text))) => text.into(),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                // Pings are answered by tungstenite. Lenient, both count as a
                // sign of life; strict, only STOMP bytes do.
                if self.ping_late {
                    self.alive();
                }
                return None;
            }
        };
        self.alive();
        self.buffer.extend_from_slice(&data);
        self.decode_buffered().await
    }

    /// Handles the whole frames in the buffer; `Some` ends the loop.
    async fn decode_buffered(&mut self) -> Option<End> {
        loop {
            let frame = match self.decoder.decode(&mut self.buffer) {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(error) => return Some(End::Error(error.into())),
            };
            let handled = self.session.handle(frame).await;
            // Time the broker spent on the frame (publisher back-pressure)
            // is not the client's silence.
            self.alive();
            match handled {
                Ok(Flow::Continue) => {
                    if let Some(version) = self.session.version() {
                        self.decoder.set_version(version);
                    }
                    if let Some(until) = self.session.take_read_pause() {
                        // Over a publish rate: the rest waits in the buffer
                        // (and the socket), and the pause is not the
                        // client's silence.
                        self.read_paused_until = Some(until);
                        self.last_read = self.last_read.max(until);
                        return None;
                    }
                }
                // Frames after DISCONNECT are ignored.
                Ok(Flow::Disconnect) => return Some(End::Disconnect),
                Err(error) => return Some(End::Error(error)),
            }
        }
    }

    fn alive(&mut self) {
        self.last_read = Instant::now();
        self.pinged = false;
    }

    /// The next moment a timer needs attention.
    fn next_timer(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        if self.session.version().is_none() {
            return self.connect_deadline;
        }
        let Heartbeat {
            send_every,
            expect_every,
        } = self.session.heartbeat();
        // Intervals are clamped to stomp.heartbeat_max, but an Instant
        // overflow must never be what ends a connection: checked adds.
        let send_at = send_every.and_then(|every| self.last_write.checked_add(beat_after(every)));
        let check_at = expect_every.and_then(|every| {
            if self.ping_late && !self.pinged {
                self.last_read.checked_add(every)
            } else {
                self.last_read.checked_add(cut_off_after(every, self.grace))
            }
        });
        [send_at, check_at, self.session.expires_at()]
            .into_iter()
            .flatten()
            .min()
            .map_or(far, |at| at.min(far))
    }

    async fn on_timer(&mut self) -> Option<End> {
        let now = Instant::now();
        if self.session.version().is_none() {
            if now >= self.connect_deadline {
                return Some(End::Error(SessionError::new(
                    "no CONNECT frame received in time",
                    CloseReason::PolicyViolation,
                )));
            }
            return None;
        }
        // OWASP: a long-lived socket must not outlive its credentials.
        if self.session.expires_at().is_some_and(|at| now >= at) {
            return Some(End::Error(SessionError::new(
                "token expired",
                CloseReason::PolicyViolation,
            )));
        }
        let Heartbeat {
            send_every,
            expect_every,
        } = self.session.heartbeat();
        if let Some(every) = expect_every {
            let silent = now.saturating_duration_since(self.last_read);
            if silent >= cut_off_after(every, self.grace) {
                return Some(End::Error(SessionError::new(
                    format!(
                        "heart-beat timeout: no data from the client for {} ms",
                        silent.as_millis()
                    ),
                    CloseReason::PolicyViolation,
                )));
            }
            if self.ping_late && silent >= every && !self.pinged {
                // Late, perhaps a throttled background tab: a WebSocket ping
                // is answered by the browser itself, and a pong counts.
                self.pinged = true;
                if !send_within(&mut self.ws, Message::Ping(Bytes::new()), every).await {
                    return Some(End::ClientGone);
                }
            }
        }
        if let Some(every) = send_every {
            if now.saturating_duration_since(self.last_write) >= beat_after(every) {
                if !send_within(&mut self.ws, Message::text("\n"), every).await {
                    return Some(End::ClientGone);
                }
                self.last_write = now;
            }
        }
        None
    }

    /// The last words: queued frames, ERROR, the Close frame; then the linger.
    async fn finish(mut self, end: End) {
        // Detach first: for DISCONNECT the router already did, and for errors
        // this stops deliveries before the connection goes.
        let version = self.session.version();
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
                End::ClientClosed => self.ws.flush().await.is_ok(),
                End::Disconnect => {
                    // The router drops its queue handles after the RECEIPT,
                    // so recv_many returns 0 once everything is out.
                    let mut batch = Vec::with_capacity(WRITE_BATCH);
                    while self.outbound.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                        if write_batch(&mut self.ws, &self.outbound, &mut batch)
                            .await
                            .is_err()
                        {
                            return false;
                        }
                    }
                    close(&mut self.ws, CloseCode::Normal, "").await
                }
                End::Error(error) => {
                    debug!(message = %error.message, "closing with ERROR");
                    if !self.overflow.is_set() {
                        // Frames queued before the error (RECEIPTs) go first.
                        let mut batch: Vec<OutFrame> =
                            std::iter::from_fn(|| self.outbound.try_recv()).collect();
                        if write_batch(&mut self.ws, &self.outbound, &mut batch)
                            .await
                            .is_err()
                        {
                            return false;
                        }
                    }
                    let frame = error_frame(&error, version);
                    if self.ws.send(frame).await.is_err() {
                        return false;
                    }
                    close(&mut self.ws, close_code(error.close), &error.message).await
                }
                End::Closed(closing) => {
                    close(&mut self.ws, close_code(closing.reason), &closing.message).await
                }
            }
        };
        let closed = matches!(timeout(CLOSING_TIME, last_words).await, Ok(true));
        if disconnecting {
            self.session.end().await;
        }
        let drained = if closed {
            linger(self.ws.get_mut()).await
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

fn slow_consumer() -> SessionError {
    SessionError::new("slow consumer", CloseReason::PolicyViolation).with_detail(
        "The client did not read its messages fast enough and exceeded its outbound budget \
         (outbound.max_queued_bytes / max_queued_frames).",
    )
}

/// Maps a tungstenite read error to how the connection ends.
fn transport_error(error: WsError, limits: &Limits) -> End {
    match error {
        // tungstenite's `size` is the announced frame length or the bytes
        // received so far: not worth reporting. The limits are.
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => End::Error(SessionError::new(
            format!(
                "WebSocket message too large: frame body exceeds max_body_bytes ({} bytes) \
                 or headers exceed max_header_bytes ({} bytes)",
                limits.max_body_bytes, limits.max_header_bytes
            ),
            CloseReason::TooBig,
        )),
        WsError::Utf8(_) => End::Error(SessionError::new(
            "a WebSocket text message was not valid UTF-8",
            CloseReason::InvalidData,
        )),
        error => {
            debug!(%error, "connection lost");
            End::ClientGone
        }
    }
}

/// Sends one message unless the client's socket stays full for its interval
/// (at most [`BEAT_WRITE_LIMIT`]): a client that cannot take a heart-beat in
/// that time is gone.
async fn send_within<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Ws<S>,
    message: Message,
    interval: Duration,
) -> bool {
    let limit = interval.min(BEAT_WRITE_LIMIT);
    matches!(timeout(limit, ws.send(message)).await, Ok(Ok(())))
}

/// Writes `batch` with one flush. Stops at a final frame (one with `close`)
/// and returns how to close; frames after it are never written.
async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Ws<S>,
    outbound: &OutboundReceiver,
    batch: &mut Vec<OutFrame>,
) -> Result<Option<Box<Closing>>, WsError> {
    let mut bytes = 0;
    let mut closing = None;
    for mut frame in batch.drain(..) {
        bytes += frame.bytes.len();
        closing = frame.close.take();
        ws.feed(to_message(frame)).await?;
        if closing.is_some() {
            break;
        }
    }
    batch.clear();
    ws.flush().await?;
    outbound.written(bytes);
    Ok(closing)
}

/// One STOMP frame as one WebSocket message: text when it is UTF-8.
fn to_message(frame: OutFrame) -> Message {
    if frame.text {
        match Utf8Bytes::try_from(frame.bytes.clone()) {
            Ok(text) => Message::Text(text),
            Err(_) => Message::Binary(frame.bytes),
        }
    } else {
        Message::Binary(frame.bytes)
    }
}

fn error_frame(error: &SessionError, version: Option<Version>) -> Message {
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
    to_message(OutFrame {
        bytes,
        text: true,
        close: None,
    })
}

fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::ProtocolError => CloseCode::Protocol,
        CloseReason::PolicyViolation => CloseCode::Policy,
        CloseReason::TooBig => CloseCode::Size,
        CloseReason::InvalidData => CloseCode::Invalid,
        CloseReason::GoingAway => CloseCode::Away,
        CloseReason::InternalError => CloseCode::Error,
    }
}

/// Sends our Close frame; whether it went out. The client's answer is read
/// (and discarded) by [`linger`].
async fn close<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Ws<S>,
    code: CloseCode,
    reason: &str,
) -> bool {
    // A close reason must fit in 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    };
    ws.close(Some(frame)).await.is_ok()
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

/// When a heart-beat is due after our last write: [`BEAT_EARLY`] (at most a
/// quarter of the interval) before the interval is over.
fn beat_after(every: Duration) -> Duration {
    every - (every / 4).min(BEAT_EARLY)
}

/// How long a client may be silent: its interval × `stomp.heartbeat_grace`
/// (validated 1 to 100; intervals clamped to `heartbeat_max`, so no overflow;
/// an absurd product still saturates instead of panicking).
fn cut_off_after(every: Duration, grace: f64) -> Duration {
    Duration::try_from_secs_f64(every.as_secs_f64() * grace).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beats_go_out_a_little_early() {
        assert_eq!(
            beat_after(Duration::from_secs(1)),
            Duration::from_millis(750)
        );
        assert_eq!(
            beat_after(Duration::from_secs(10)),
            Duration::from_millis(9750)
        );
        assert_eq!(
            beat_after(Duration::from_millis(100)),
            Duration::from_millis(75)
        );
    }

    #[test]
    fn cut_off_never_overflows() {
        assert_eq!(
            cut_off_after(Duration::from_secs(1), 2.0),
            Duration::from_secs(2)
        );
        assert_eq!(cut_off_after(Duration::MAX, 100.0), Duration::MAX);
    }

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
