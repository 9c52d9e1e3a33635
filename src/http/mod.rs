//! HTTP on a WebSocket listener's port, beside the upgrade: a plain answer
//! for `GET /` (and `/healthz`), 404 naming the WebSocket path for unknown
//! paths, 426 for a GET of the WebSocket path without the upgrade, and
//! `POST /api/publish` ([`publish`]) and `GET /sse` ([`sse`]).
//!
//! Who serves what: [`head`] reads the first request head; a WebSocket
//! upgrade goes to tungstenite exactly as before (so an idle WebSocket
//! connection carries nothing of hyper), anything else to [`serve`], a hyper
//! HTTP/1.1 connection. An HTTP connection takes a listener permit and
//! counts against its address like a WebSocket one.

mod cors;
mod direct;
pub mod head;
mod publish;
mod sse;
mod sse_event;

use crate::context::BrokerContext;
use crate::endpoint::Endpoint;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, UPGRADE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

pub use head::{read_head, HeadError, Rewind, Wants};

/// A response body: whole (answers) or streamed (SSE).
pub type Body = BoxBody<Bytes, Infallible>;

/// How long open requests may take to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// What every request of one HTTP connection shares.
struct HttpConnection {
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    /// The client's address (from the PROXY header where there is one).
    peer_ip: IpAddr,
    /// The session publishing for this connection, while its credentials
    /// stay the same (requests on one HTTP/1.1 connection come one by one,
    /// so the lock is never contended). Boxed: an SSE feed's connection
    /// never publishes and should not carry room for a session here.
    publisher: tokio::sync::Mutex<Option<Box<publish::Publisher>>>,
    /// Ends SSE feeds at shutdown.
    shutdown: Shutdown,
    /// Why the connection was not admitted (per-address limits): every
    /// request is answered 429 with it.
    refusal: Option<String>,
}

/// Serves one HTTP/1.1 connection (the first request's head is already in
/// `stream`, rewound) until the client closes it or shutdown.
pub async fn serve<S>(
    stream: Rewind<S>,
    peer_ip: IpAddr,
    context: Arc<BrokerContext>,
    endpoint: Arc<Endpoint>,
    shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let admitted = context.admit(peer_ip);
    let handshake_timeout = context.config.listener.handshake_timeout;
    let shared = Arc::new(HttpConnection {
        context,
        endpoint,
        peer_ip,
        publisher: tokio::sync::Mutex::new(None),
        shutdown: shutdown.clone(),
        refusal: admitted.as_ref().err().cloned(),
    });
    let ending = shared.clone();
    // Held as long as the connection: it counts against its address.
    let _slot = admitted.ok();
    if shared.refusal.is_none() {
        // An SSE feed as the first request is answered without hyper, whose
        // buffers an idle feed would keep for its whole life.
        if let Some(request) = direct::sse_request(stream.prefix()) {
            direct::serve_sse(stream, request, &shared).await;
            return;
        }
    }
    // Boxed apart: hyper's connection state is large, and an SSE feed
    // answered above should not carry room for it.
    Box::pin(serve_hyper(stream, shared, handshake_timeout, shutdown)).await;
    let publisher = ending.publisher.lock().await.take();
    if let Some(publisher) = publisher {
        // Boxed: ending a session is a large future, and inline this task
        // would keep room for it through an SSE feed's whole life.
        Box::pin(publisher.end()).await;
    }
}

/// Serves the connection's requests with hyper.
async fn serve_hyper<S>(
    stream: Rewind<S>,
    shared: Arc<HttpConnection>,
    handshake_timeout: Duration,
    mut shutdown: Shutdown,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let keep_alive = shared.refusal.is_none();
    let service = service_fn(move |request| {
        let shared = shared.clone();
        // Boxed, the request's state (a publish, an SSE subscription) takes
        // room only while a request is in flight, not for the connection's life.
        Box::pin(async move { Ok::<_, Infallible>(route(&shared, request).await) })
    });
    let mut builder = http1::Builder::new();
    // A request head must arrive within the handshake timeout (slowloris);
    // it also ends idle kept-alive connections.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout)
        .keep_alive(keep_alive);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%error, "HTTP connection ended");
            }
        }
        _ = shutdown.wait() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

/// Chooses the answer to one request.
async fn route(shared: &HttpConnection, request: Request<Incoming>) -> Response<Body> {
    if let Some(refusal) = &shared.refusal {
        return text(StatusCode::TOO_MANY_REQUESTS, format!("{refusal}\n"));
    }
    let websocket_path = shared.endpoint.config.path.as_str();
    let path = request.uri().path();
    let method = request.method();
    let readable = method == Method::GET || method == Method::HEAD;
    let allowed = &shared.endpoint.config.allowed_origins;
    if method == Method::OPTIONS {
        return cors::options(request.headers(), allowed);
    }
    match path {
        "/api/publish" if method == Method::POST => {
            let headers = request.headers().clone();
            let mut response = publish::publish(shared, request).await;
            cors::allow(&headers, allowed, &mut response);
            response
        }
        "/api/publish" => method_not_allowed("POST, OPTIONS"),
        "/sse" if method == Method::GET => sse::events(shared, request).await,
        "/sse" => method_not_allowed("GET, OPTIONS"),
        "/" | "/healthz" if readable => text(
            StatusCode::OK,
            format!(
                "stomphub {}: WebSocket STOMP at {websocket_path}\n",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        "/" | "/healthz" => method_not_allowed("GET, HEAD, OPTIONS"),
        _ if path == websocket_path => {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                format!("{websocket_path} is WebSocket STOMP: connect with a WebSocket client (subprotocol v12.stomp)\n"),
            );
            response
                .headers_mut()
                .insert(UPGRADE, HeaderValue::from_static("websocket"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("not found: WebSocket STOMP is at {websocket_path}\n"),
        ),
    }
}

/// 405 with the methods the path takes.
fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A plain-text answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
