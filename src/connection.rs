//! Drives one WebSocket connection: reads messages into the decoder, feeds
//! frames to the session, writes the outbound queue in batches (one flush per
//! batch), keeps heart-beats, and closes with ERROR and a fitting close code.

use crate::broker::BrokerContext;
use crate::listener::Endpoint;
use crate::outbound::{outbound_queue, Closing, OutFrame, OutboundReceiver, OverflowSignal};
use crate::router::SessionId;
use crate::session::heartbeat::Heartbeat;
use crate::session::{ClientInfo, CloseReason, Flow, Session, SessionError};
use crate::shutdown::Shutdown;
use crate::websocket;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{Command, Decoder, FrameEncoder, Version};
use tokio::io::{AsyncRead, AsyncWrite};
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
    // Frames go out whole and at once; Nagle would only add latency.
    let _ = stream.set_nodelay(true);
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
    let (queue, outbound) = outbound_queue(
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
        connect_deadline: now + context.config.listener.connect_timeout,
        grace: context.config.stomp.heartbeat_grace,
    };
    let Some(_ip_slot) = ip_slot else {
        let max = context.config.listener.max_connections_per_ip;
        let error = SessionError::new(
            format!("too many connections from {peer_ip}: max_connections_per_ip is {max}"),
            CloseReason::PolicyViolation,
        );
        Box::pin(connection.finish(End::Error(error))).await;
        return;
    };
    let end = connection.drive(shutdown).await;
    Box::pin(connection.finish(end)).await;
}

/// How the read/write loop ended.
enum End {
    /// The client closed the WebSocket or the TCP connection.
    ClientGone,
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
    connect_deadline: Instant,
    grace: f64,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn drive(&mut self, mut shutdown: Shutdown) -> End {
        // Grows on first use: an idle connection never needs 64 slots.
        let mut batch = Vec::new();
        loop {
            let timer = self.next_timer();
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
                message = self.ws.next() => {
                    if let Some(end) = self.on_message(message).await {
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
            None | Some(Ok(Message::Close(_))) => return Some(End::ClientGone),
            Some(Err(error)) => return Some(transport_error(error)),
            Some(Ok(Message::Text(text))) => text.into(),
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                // Pings are answered by tungstenite; both count as a sign of life.
                self.alive();
                return None;
            }
        };
        self.alive();
        self.buffer.extend_from_slice(&data);
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
        let send_at = send_every.map(|every| self.last_write + every);
        let check_at = expect_every.map(|every| {
            if self.pinged {
                self.last_read + every.mul_f64(self.grace)
            } else {
                self.last_read + every
            }
        });
        [send_at, check_at]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(far)
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
        let Heartbeat {
            send_every,
            expect_every,
        } = self.session.heartbeat();
        if let Some(every) = expect_every {
            let silent = now.saturating_duration_since(self.last_read);
            if silent >= every.mul_f64(self.grace) {
                return Some(End::Error(SessionError::new(
                    format!(
                        "heart-beat timeout: no data from the client for {} ms",
                        silent.as_millis()
                    ),
                    CloseReason::PolicyViolation,
                )));
            }
            if silent >= every && !self.pinged {
                // Late, perhaps a throttled background tab: a WebSocket ping
                // is answered by the browser itself, and a pong counts.
                self.pinged = true;
                if !send_within(&mut self.ws, Message::Ping(Bytes::new()), every).await {
                    return Some(End::ClientGone);
                }
            }
        }
        if let Some(every) = send_every {
            if now.saturating_duration_since(self.last_write) >= every {
                if !send_within(&mut self.ws, Message::text("\n"), every).await {
                    return Some(End::ClientGone);
                }
                self.last_write = now;
            }
        }
        None
    }

    /// The last words: queued frames, ERROR, the close handshake.
    async fn finish(mut self, end: End) {
        // Detach first: for DISCONNECT the router already did, and for errors
        // this stops deliveries before the connection goes.
        let version = self.session.version();
        let disconnecting = matches!(end, End::Disconnect);
        if !disconnecting {
            self.session.end().await;
        }
        let last_words = async {
            match end {
                End::ClientGone => {}
                End::Disconnect => {
                    // The router drops its queue handles after the RECEIPT,
                    // so recv_many returns 0 once everything is out.
                    let mut batch = Vec::with_capacity(WRITE_BATCH);
                    while self.outbound.recv_many(&mut batch, WRITE_BATCH).await > 0 {
                        if write_batch(&mut self.ws, &self.outbound, &mut batch)
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    close(&mut self.ws, CloseCode::Normal, "").await;
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
                            return;
                        }
                    }
                    let frame = error_frame(&error, version);
                    if self.ws.send(frame).await.is_err() {
                        return;
                    }
                    close(&mut self.ws, close_code(error.close), &error.message).await;
                }
                End::Closed(closing) => {
                    close(&mut self.ws, close_code(closing.reason), &closing.message).await;
                }
            }
        };
        let _ = timeout(CLOSING_TIME, last_words).await;
        if disconnecting {
            self.session.end().await;
        }
    }
}

fn slow_consumer() -> SessionError {
    SessionError::new("slow consumer", CloseReason::PolicyViolation).with_detail(
        "The client did not read its messages fast enough and exceeded its outbound budget \
         (outbound.max_queued_bytes / max_queued_frames).",
    )
}

/// Maps a tungstenite read error to how the connection ends.
fn transport_error(error: WsError) -> End {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
            End::Error(SessionError::new(
                format!("WebSocket message too large: {size} bytes, the limit is {max_size}"),
                CloseReason::TooBig,
            ))
        }
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

/// Sends one message unless the client's socket stays full for `limit`: a
/// client that cannot take a heart-beat within its interval is gone.
async fn send_within<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut Ws<S>,
    message: Message,
    limit: Duration,
) -> bool {
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
    let detail = error.detail.as_deref().unwrap_or("");
    let mut frame = FrameEncoder::begin(
        Command::Error,
        version,
        128 + error.message.len() + detail.len(),
    );
    frame.header("message", &error.message);
    if let Some(receipt) = &error.receipt_id {
        frame.header("receipt-id", receipt);
    }
    if let Some(versions) = &error.version {
        frame.header("version", versions);
    }
    if !detail.is_empty() {
        frame.header("content-type", "text/plain");
    }
    to_message(OutFrame {
        bytes: frame.finish(true, detail.as_bytes()),
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

/// Sends a close frame and waits briefly for the client's answer.
async fn close<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut Ws<S>, code: CloseCode, reason: &str) {
    // A close reason must fit in 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from(&reason[..end]),
    };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = ws.next().await {}
}
