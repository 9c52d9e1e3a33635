//! `POST /api/publish?destination=<d>`: the request body as a message, sent
//! through a STOMP session without a socket, so that it takes exactly the
//! SEND path (`Session::send`: permissions, destination rules, publish
//! rate, topic fan-out through the index, queues and persistence through
//! the router) and the same auth (`Authorization: Bearer`, Basic for
//! `[[auth.users]]`, `?access_token=`, anonymous rules).
//!
//! [`super::sse`] feeds are such sessions too, sharing this code. For
//! publishing, one such session per HTTP connection and credentials, kept while the
//! connection is kept alive, so that the publish rate limit holds across a
//! client's requests as it does across a STOMP connection's SENDs. The
//! answer waits for the RECEIPT: after routing, and after the sync for a
//! persistent message.

use super::{json, Body, HttpConnection};
use crate::auth::origin_allowed;
use crate::model::session_id::SessionId;
use crate::outbound::{outbound_channel, OutFrame, OutboundReceiver, OverflowSignal};
use crate::session::{ClientInfo, Session, SessionError};
use crate::websocket::percent_decode;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, ORIGIN, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode};
use std::time::Duration;
use stomp_protocol::{Command, Frame, Version};

/// How long the answer waits for the RECEIPT (routing, a store sync).
const RECEIPT_WAIT: Duration = Duration::from_secs(10);

/// A connected session publishing for one HTTP connection's credentials.
pub(super) struct Publisher {
    /// The credentials it was connected with (compared, never logged).
    credentials: Credentials,
    /// The session: SENDs (publish) or SUBSCRIBEs (SSE) go through it.
    pub(super) session: Session,
    /// Its outbound queue: CONNECTED, RECEIPTs, ERRORs and (SSE) MESSAGEs.
    pub(super) outbound: OutboundReceiver,
    /// Set when the fan-out found the outbound queue over its budget.
    pub(super) overflow: OverflowSignal,
}

/// What a request authenticates with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Credentials {
    login: Option<String>,
    passcode: Option<String>,
    bearer: Option<String>,
    origin: Option<String>,
}

impl Publisher {
    /// Ends the session (the router forgets it), as a STOMP connection's end does.
    pub(super) async fn end(mut self) {
        self.session.end().await;
    }
}

/// Answers one publish request.
pub(super) async fn publish(shared: &HttpConnection, request: Request<Incoming>) -> Response<Body> {
    let context = &shared.context;
    let query = request.uri().query().unwrap_or("");
    let Some(destination) = query_parameter(query, "destination") else {
        return error(
            StatusCode::BAD_REQUEST,
            "the destination query parameter is required (/api/publish?destination=/topic/...)",
        );
    };
    let persistent = query_parameter(query, "persistent").as_deref() == Some("true");
    let headers = request.headers();
    let origin = headers
        .get(ORIGIN)
        .map(|v| v.to_str().unwrap_or("<not UTF-8>").to_owned());
    if let Some(origin) = &origin {
        if !origin_allowed(origin, &shared.endpoint.config.allowed_origins) {
            return error(
                StatusCode::FORBIDDEN,
                &format!("origin '{origin}' is not allowed"),
            );
        }
    }
    let credentials = match credentials(&request, query, origin) {
        Ok(credentials) => credentials,
        Err(message) => return unauthorized(message),
    };
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let max_body = context.config.limits.max_body_bytes;
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|length| length > max_body as u64) {
        return too_large(max_body);
    }
    let body = match Limited::new(request.into_body(), max_body).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(failure) if failure.is::<http_body_util::LengthLimitError>() => {
            return too_large(max_body)
        }
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            )
        }
    };

    let mut publisher = shared.publisher.lock().await;
    // A token that expired since the session connected must not go on
    // publishing: connecting again checks it (and refuses it).
    let stale = |p: &Publisher| {
        p.credentials != credentials
            || p.session
                .expires_at()
                .is_some_and(|at| at <= tokio::time::Instant::now())
    };
    if publisher.as_deref().is_none_or(stale) {
        if let Some(mut old) = publisher.take() {
            old.session.end().await;
        }
        match connect(shared, credentials).await {
            Ok(connected) => *publisher = Some(Box::new(connected)),
            Err(failure) => return unauthorized(failure.message),
        }
    }
    let Some(current) = publisher.as_mut() else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "no session");
    };
    let mut send = Frame::new(Command::Send)
        .header("destination", destination.as_str())
        .header("receipt", "http");
    if let Some(content_type) = content_type {
        send = send.header("content-type", content_type);
    }
    if persistent {
        send = send.header("persistent", "true");
    }
    let id = match current.session.send(send.body(body)).await {
        Ok(id) => id,
        Err(failure) => {
            // As a STOMP connection would be closed after this ERROR.
            if let Some(mut ended) = publisher.take() {
                ended.session.end().await;
            }
            return error(status_for(&failure.message), &failure.message);
        }
    };
    // Over a `slow` publish rate rule a STOMP connection stops reading for a
    // while; an HTTP publisher waits as long before its answer.
    if let Some(until) = current.session.take_read_pause() {
        tokio::time::sleep_until(until).await;
    }
    match tokio::time::timeout(RECEIPT_WAIT, receipt(&mut current.outbound)).await {
        Ok(Ok(())) => json(
            StatusCode::OK,
            &serde_json::json!({ "id": id.as_deref(), "destination": destination }),
        ),
        Ok(Err(message)) => {
            if let Some(mut ended) = publisher.take() {
                ended.session.end().await;
            }
            error(status_for(&message), &message)
        }
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no receipt in time"),
    }
}

/// A new session connected with `credentials` (the CONNECTED is consumed).
pub(super) async fn connect(
    shared: &HttpConnection,
    credentials: Credentials,
) -> Result<Publisher, SessionError> {
    let context = &shared.context;
    let (queue, mut outbound) = outbound_channel(
        context.config.outbound.max_queued_frames,
        context.config.outbound.max_queued_bytes,
    );
    let mut session = Session::new(
        SessionId(context.next_session_id()),
        context.clone(),
        ClientInfo {
            ip: shared.peer_ip,
            bearer: credentials.bearer.clone(),
            origin: credentials.origin.clone(),
        },
        Version::ALL.to_vec(),
        queue,
    );
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("heart-beat", "0,0");
    if let Some(login) = &credentials.login {
        connect = connect.header("login", login.as_str());
    }
    if let Some(passcode) = &credentials.passcode {
        connect = connect.header("passcode", passcode.as_str());
    }
    if let Err(failure) = session.handle(connect).await {
        session.end().await;
        return Err(failure);
    }
    // The CONNECTED frame: not for anyone here. Frames read by the HTTP
    // side give their bytes back to the budget as a writer's would.
    if let Some(connected) = outbound.try_recv() {
        outbound.written(connected.bytes.len());
    }
    Ok(Publisher {
        credentials,
        session,
        overflow: outbound.overflow_signal(),
        outbound,
    })
}

/// Waits for the RECEIPT of the SEND; an ERROR's message instead.
async fn receipt(outbound: &mut OutboundReceiver) -> Result<(), String> {
    let mut batch: Vec<OutFrame> = Vec::new();
    loop {
        batch.clear();
        if outbound.recv_many(&mut batch, 8).await == 0 {
            return Err("the server is shutting down".into());
        }
        outbound.written(batch.iter().map(|frame| frame.bytes.len()).sum());
        for frame in &batch {
            if frame.bytes.starts_with(b"RECEIPT\n") {
                return Ok(());
            }
            if frame.bytes.starts_with(b"ERROR\n") {
                return Err(error_message(&frame.bytes));
            }
        }
    }
}

/// The `message` header of an encoded ERROR frame.
pub(super) fn error_message(bytes: &Bytes) -> String {
    let head_end = bytes
        .windows(2)
        .position(|w| w == b"\n\n")
        .unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..head_end])
        .lines()
        .find_map(|line| line.strip_prefix("message:"))
        .unwrap_or("refused")
        .replace("\\c", ":")
        .replace("\\\\", "\\")
}

/// The credentials of a request: `Authorization: Bearer` or `Basic`, else
/// `?access_token=`, else none (anonymous rules apply).
pub(super) fn credentials<B>(
    request: &Request<B>,
    query: &str,
    origin: Option<String>,
) -> Result<Credentials, &'static str> {
    let mut credentials = Credentials {
        origin,
        ..Credentials::default()
    };
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .map(|v| {
            v.to_str()
                .map_err(|_| "the Authorization header is not text")
        })
        .transpose()?;
    match authorization {
        Some(value) => {
            if let Some(token) = value.strip_prefix("Bearer ") {
                credentials.bearer = Some(token.trim().to_owned());
            } else if let Some(encoded) = value.strip_prefix("Basic ") {
                use base64::Engine as _;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(encoded.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or("the Basic credentials are not base64 text")?;
                let (login, passcode) = decoded
                    .split_once(':')
                    .ok_or("the Basic credentials are not login:password")?;
                credentials.login = Some(login.to_owned());
                credentials.passcode = Some(passcode.to_owned());
            } else {
                return Err("the Authorization header is neither Bearer nor Basic");
            }
        }
        None => credentials.bearer = query_parameter(query, "access_token"),
    }
    Ok(credentials)
}

/// A query parameter, percent-decoded.
pub(super) fn query_parameter(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

/// The HTTP status for a refusal of the SEND, by what refused it.
pub(super) fn status_for(message: &str) -> StatusCode {
    if message.contains("denied") {
        StatusCode::FORBIDDEN
    } else if message.starts_with("publish rate limit") {
        StatusCode::TOO_MANY_REQUESTS
    } else if message.starts_with("storage") || message.contains("shutting down") {
        StatusCode::SERVICE_UNAVAILABLE
    } else if message.contains("too large") || message.contains("exceeds") {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// A JSON error: `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response<Body> {
    json(status, &serde_json::json!({ "error": message }))
}

fn too_large(max_body: usize) -> Response<Body> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body exceeds limits.max_body_bytes ({max_body} bytes)"),
    )
}

/// 401 with the schemes we take.
pub(super) fn unauthorized(message: impl AsRef<str>) -> Response<Body> {
    let mut response = error(StatusCode::UNAUTHORIZED, message.as_ref());
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer, Basic realm=\"stomphub\""),
    );
    response
}
