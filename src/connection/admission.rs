//! A connection's way in: TCP options, the PROXY protocol header (when the
//! listener expects one), the TLS handshake (`wss://`, or TLS on a `tcp`
//! listener) and, on a WebSocket listener, the first request head (an
//! upgrade goes on to tungstenite, anything else to [`crate::http`]) and the
//! upgrade, under one `listener.handshake_timeout`, then the per-address
//! admission. Refused
//! clients still get an ERROR over the open WebSocket (a browser never sees
//! an HTTP status) or the TCP stream, so that they read why.

use super::transport::Transport;
use super::{Connection, End};
use crate::config::ListenerKind;
use crate::context::BrokerContext;
use crate::endpoint::Endpoint;
use crate::http::{self, HeadError, Rewind, Wants};
use crate::model::session_id::SessionId;
use crate::outbound::outbound_channel;
use crate::proxy_protocol::{self, Proxied};
use crate::session::{ClientInfo, CloseReason, Session, SessionError};
use crate::shutdown::Shutdown;
use crate::websocket::{self, Handshake};
use bytes::Bytes;
use bytes::BytesMut;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use stomp_protocol::{Decoder, Version};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tracing::debug;

/// Handshakes, admits and serves one accepted TCP connection.
pub(super) async fn run(
    stream: TcpStream,
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) {
    // Two boxed futures in turn: a task keeps room for its largest await
    // point as long as it lives, and the handshakes (PROXY header, TLS,
    // the first request head, the upgrade) are large but brief. Boxed and
    // done before the connection is served, an idle connection's task holds
    // only what serves it: a STOMP connection, or an HTTP one (an idle SSE
    // feed carried a STOMP connection's 5 KiB of room when they shared one
    // future).
    let prepared = Box::pin(prepare(stream, peer_ip, id, context, endpoint, shutdown)).await;
    if let Some(serving) = prepared {
        serving.await;
    }
}

/// A boxed future that serves the connection, ready to run.
type Serving = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Socket options, the PROXY header, TLS and the handshake under one
/// deadline; then the future that serves the connection (`None`: refused,
/// logged).
async fn prepare(
    mut stream: TcpStream,
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) -> Option<Serving> {
    // Half-open peers are found by TCP keepalive even with heart-beats off.
    if let Err(error) = crate::socket_options::configure(&stream) {
        debug!(%error, "socket options not set");
    }
    // The PROXY header, TLS and WebSocket handshakes share one limit.
    let deadline = Instant::now() + context.config.listener.handshake_timeout;
    let peer_ip = if endpoint.config.proxy_protocol {
        match proxied_client(&mut stream, deadline).await? {
            Proxied::Client(client) => {
                tracing::Span::current().record("client", tracing::field::display(client));
                client.ip()
            }
            Proxied::Local => peer_ip,
        }
    } else {
        peer_ip
    };
    let target = Target {
        peer_ip,
        id,
        context,
        endpoint,
        shutdown,
    };
    match target.endpoint.tls.clone() {
        None => {
            let served = handshake(stream, deadline, &target.context, &target.endpoint).await;
            serving(served, target)
        }
        Some(acceptor) => match timeout_at(deadline, Box::pin(acceptor.accept(stream))).await {
            Ok(Ok(tls)) => {
                let served = handshake(tls, deadline, &target.context, &target.endpoint).await;
                serving(served, target)
            }
            Ok(Err(error)) => {
                debug!(%error, "TLS handshake failed");
                None
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                None
            }
        },
    }
}

/// What serving a connection needs besides its stream.
struct Target {
    /// The client's address (from the PROXY header where there is one).
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
}

/// The PROXY protocol header under the handshake deadline; `None` when it is
/// missing, malformed or late (logged once at debug: the connection is then
/// closed without a word, as the balancer or a stray client expects nothing).
async fn proxied_client(stream: &mut TcpStream, deadline: Instant) -> Option<Proxied> {
    match timeout_at(deadline, Box::pin(proxy_protocol::read_header(stream))).await {
        Ok(Ok(proxied)) => Some(proxied),
        Ok(Err(error)) => {
            debug!(%error, "refused: PROXY protocol header expected");
            None
        }
        Err(_) => {
            debug!("refused: PROXY protocol header timed out");
            None
        }
    }
}

/// The boxed future that serves the connection after its handshake.
fn serving<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    served: Served<S>,
    target: Target,
) -> Option<Serving> {
    let Target {
        peer_ip,
        id,
        context,
        endpoint,
        shutdown,
    } = target;
    match served {
        Served::Nothing => None,
        Served::Http(stream) => {
            debug!("HTTP request");
            Some(Box::pin(http::serve(
                stream, peer_ip, context, endpoint, shutdown,
            )))
        }
        Served::Stomp(transport, handshake) => Some(Box::pin(serve_stomp(
            transport, handshake, peer_ip, id, context, shutdown,
        ))),
    }
}

/// Who serves a connection once its handshake is done.
// Returned once and moved into a box at once: the variants' sizes do not
// stay anywhere.
#[allow(clippy::large_enum_variant)]
enum Served<S> {
    /// Nobody: the handshake failed (logged).
    Nothing,
    /// An HTTP request that is not an upgrade: [`crate::http`].
    Http(Rewind<S>),
    /// A STOMP connection, over an upgraded WebSocket or TCP.
    Stomp(Transport<Rewind<S>>, Handshake),
}

/// On a WebSocket listener, reads the first request head (an upgrade goes
/// to tungstenite, anything else to HTTP) and upgrades; on a TCP listener,
/// nothing to do.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    deadline: Instant,
    context: &BrokerContext,
    endpoint: &Endpoint,
) -> Served<S> {
    match endpoint.config.kind {
        ListenerKind::Ws => {
            let (head, wants) = match timeout_at(deadline, http::read_head(&mut stream)).await {
                Ok(Ok(read)) => read,
                Ok(Err(HeadError::TooLarge)) => {
                    debug!("HTTP request head too large");
                    refuse_large_head(&mut stream).await;
                    return Served::Nothing;
                }
                Ok(Err(HeadError::Io(error))) => {
                    debug!(%error, "connection ended before a request");
                    return Served::Nothing;
                }
                Err(_) => {
                    debug!("HTTP request head timed out");
                    return Served::Nothing;
                }
            };
            let stream = Rewind::new(head.freeze(), stream);
            if wants == Wants::Http {
                return Served::Http(stream);
            }
            match upgrade(stream, deadline, context, endpoint).await {
                Some((ws, handshake)) => Served::Stomp(Transport::WebSocket(ws), handshake),
                None => Served::Nothing,
            }
        }
        // STOMP straight on the stream: no handshake, so no subprotocol,
        // token or Origin; CONNECT says the rest.
        ListenerKind::Tcp => {
            debug!("STOMP over TCP open");
            let handshake = Handshake {
                subprotocol: None,
                allowed_versions: Version::ALL.to_vec(),
                bearer: None,
                origin: None,
            };
            Served::Stomp(Transport::Tcp(Rewind::new(Bytes::new(), stream)), handshake)
        }
    }
}

/// Admits and serves one STOMP connection (WebSocket upgraded, or TCP).
async fn serve_stomp<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    transport: Transport<S>,
    handshake: Handshake,
    peer_ip: std::net::IpAddr,
    id: SessionId,
    context: Arc<BrokerContext>,
    shutdown: Shutdown,
) {
    // TCP has no ping: a late client is late, whatever the setting.
    let ping_late = context.config.stomp.heartbeat_ping && transport.is_websocket();
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
        transport,
        overflow: outbound.overflow_signal(),
        outbound,
        buffer: BytesMut::new(),
        last_read: now,
        last_write: now,
        pinged: false,
        read_paused_until: None,
        connect_deadline: now + context.config.listener.connect_timeout,
        grace: context.config.stomp.heartbeat_grace,
        ping_late,
        frame_limits: context.config.limits.frame_limits(),
    };
    let _ip_slot = match ip_slot {
        Ok(slot) => slot,
        Err(refusal) => {
            // Refused after the upgrade, so that the client (a browser
            // too, which never sees an HTTP status) reads why; over TCP
            // the ERROR comes before any CONNECT.
            let error = SessionError::new(refusal, CloseReason::PolicyViolation);
            Box::pin(connection.finish(End::Error(error))).await;
            return;
        }
    };
    let end = connection.drive(shutdown).await;
    Box::pin(connection.finish(end)).await;
}

/// Answers a request head over [`http::head::MAX_HEAD_BYTES`] with 431 and
/// gives up the connection (whatever else the client sends is not read).
async fn refuse_large_head<S: AsyncWrite + Unpin>(stream: &mut S) {
    use tokio::io::AsyncWriteExt;
    let answer = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let _ = stream.write_all(answer).await;
    let _ = stream.shutdown().await;
}

/// The WebSocket upgrade under the handshake deadline; `None` when it failed
/// (logged).
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    deadline: Instant,
    context: &BrokerContext,
    endpoint: &Endpoint,
) -> Option<(tokio_tungstenite::WebSocketStream<S>, Handshake)> {
    let handshake_timeout = context.config.listener.handshake_timeout;
    match timeout_at(
        deadline,
        websocket::accept(stream, &context.config, &endpoint.config),
    )
    .await
    {
        Ok(Ok((ws, handshake))) => {
            debug!(subprotocol = ?handshake.subprotocol, "WebSocket open");
            Some((ws, handshake))
        }
        Ok(Err(error)) => {
            debug!(%error, "WebSocket handshake failed");
            None
        }
        Err(_) => {
            debug!(?handshake_timeout, "WebSocket handshake timed out");
            None
        }
    }
}
