//! `GET /sse?destination=<d>` (repeatable, wildcards allowed): Server-Sent
//! Events, one event per MESSAGE. The feed is a STOMP session without a
//! socket, subscribed once per destination: so read permissions, wildcard
//! matching through the topic index, the outbound budget and the
//! slow-consumer policy are those of any subscriber, with no copy of them.
//!
//! Events: `data:` the body, one line per body line, when it is UTF-8;
//! otherwise `event: binary` and the body in base64. `?format=json` sends
//! `{"destination","headers","body"}` instead. A comment every
//! [`HEARTBEAT`] keeps proxies from closing an idle feed; `retry:` tells the
//! browser when to reconnect. No `id:` yet: resuming needs per-destination
//! offsets, which do not exist yet.

use super::publish::{connect, credentials, error, status_for, unauthorized, Publisher};
use super::{Body, HttpConnection};
use crate::auth::origin_allowed;
use crate::outbound::OutFrame;
use crate::shutdown::Shutdown;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL,
    CONTENT_TYPE, ORIGIN, VARY,
};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::time::Duration;
use stomp_protocol::{Command, Frame, Limits, Version};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

/// How often an idle feed gets a comment line.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// The browser's reconnection delay, sent as `retry:` (milliseconds).
pub const RETRY_MS: u64 = 3000;
/// How long the answer waits for the subscriptions' receipts.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// MESSAGE frames taken from the outbound queue per body chunk.
const BATCH: usize = 64;

/// How events are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// The body as `data:` lines.
    Plain,
    /// `{"destination","headers","body"}` per event.
    Json,
}

/// Answers one SSE request: refusals as JSON errors, else the feed.
pub(super) async fn events(shared: &HttpConnection, request: Request<Incoming>) -> Response<Body> {
    let query = request.uri().query().unwrap_or("");
    let destinations: Vec<String> = query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("destination="))
        .map(crate::websocket::percent_decode)
        .collect();
    if destinations.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "at least one destination query parameter is required (/sse?destination=/topic/...)",
        );
    }
    let format = if super::publish::query_parameter(query, "format").as_deref() == Some("json") {
        Format::Json
    } else {
        Format::Plain
    };
    let origin = request
        .headers()
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
    let credentials = match credentials(&request, query, origin.clone()) {
        Ok(credentials) => credentials,
        Err(message) => return unauthorized(message),
    };
    let mut feed = match connect(shared, credentials).await {
        Ok(feed) => feed,
        Err(failure) => return unauthorized(failure.message),
    };
    let mut early = Vec::new();
    if let Err((status, message)) = subscribe(&mut feed, &destinations, &mut early).await {
        feed.end().await;
        return error(status, &message);
    }
    let mut first = BytesMut::new();
    first.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
    for frame in &early {
        encode_event(frame, format, &mut first);
    }
    let state = Feed {
        expires_at: feed.session.expires_at(),
        publisher: Some(feed),
        format,
        heartbeat: heartbeat(),
        shutdown: shared.shutdown.clone(),
        first: Some(first.freeze()),
        batch: Vec::new(),
    };
    let body = StreamBody::new(stream::unfold(state, Feed::next)).boxed();
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Cross-origin EventSource: only for allowed origins (checked above).
    if let Some(origin) = origin.and_then(|o| HeaderValue::from_str(&o).ok()) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// Subscribes the feed's session to every destination and waits for their
/// receipts, so that the feed is live when the answer starts. MESSAGEs that
/// arrive meanwhile go to `early`.
async fn subscribe(
    feed: &mut Publisher,
    destinations: &[String],
    early: &mut Vec<OutFrame>,
) -> Result<(), (StatusCode, String)> {
    for (index, destination) in destinations.iter().enumerate() {
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", format!("sse-{index}"))
            .header("destination", destination.as_str())
            .header("ack", "auto")
            .header("receipt", format!("sse-{index}"));
        feed.session
            .handle(subscribe)
            .await
            .map_err(|failure| (status_for(&failure.message), failure.message))?;
    }
    let mut receipts = 0;
    let deadline = Instant::now() + SUBSCRIBE_WAIT;
    let mut batch = Vec::new();
    while receipts < destinations.len() {
        batch.clear();
        match tokio::time::timeout_at(deadline, feed.outbound.recv_many(&mut batch, BATCH)).await {
            Ok(0) => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is stopping".into(),
                ))
            }
            Ok(_) => {}
            Err(_) => {
                return Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no subscription receipt in time".into(),
                ))
            }
        }
        for frame in batch.drain(..) {
            if frame.bytes.starts_with(b"RECEIPT\n") {
                receipts += 1;
            } else if frame.bytes.starts_with(b"ERROR\n") {
                let message = super::publish::error_message(&frame.bytes);
                return Err((status_for(&message), message));
            } else {
                early.push(frame);
            }
        }
    }
    Ok(())
}

/// Sleeps until `at`; forever without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn heartbeat() -> Interval {
    let mut heartbeat = interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat
}

/// One open feed: the body's state between chunks.
struct Feed {
    /// The subscribed session; ended when the feed ends (see `Drop`).
    publisher: Option<Publisher>,
    format: Format,
    heartbeat: Interval,
    shutdown: Shutdown,
    /// The `retry:` line and the MESSAGEs that came with the receipts.
    first: Option<Bytes>,
    /// Reused between chunks.
    batch: Vec<OutFrame>,
    /// When the feed's token expires: the feed ends then, as a STOMP
    /// session does.
    expires_at: Option<Instant>,
}

type Chunk = Result<BodyFrame<Bytes>, Infallible>;

impl Feed {
    /// The next body chunk; `None` ends the feed (the client reconnects
    /// after `retry:`).
    async fn next(mut self) -> Option<(Chunk, Feed)> {
        if let Some(first) = self.first.take() {
            return Some((Ok(BodyFrame::data(first)), self));
        }
        let publisher = self.publisher.as_mut()?;
        let overflow = publisher.overflow.clone();
        let chunk = tokio::select! {
            biased;
            _ = self.shutdown.wait() => None,
            // Past its outbound budget under the `disconnect` policy: the
            // feed ends like a slow STOMP subscriber's connection.
            _ = overflow.wait() => None,
            received = publisher.outbound.recv_many(&mut self.batch, BATCH) => {
                if received == 0 {
                    None
                } else {
                    let mut out = BytesMut::new();
                    let mut ended = false;
                    for frame in self.batch.drain(..) {
                        if frame.bytes.starts_with(b"ERROR\n") {
                            // A final ERROR (slow consumer, shutdown...): say
                            // why as a comment, then end.
                            let message = super::publish::error_message(&frame.bytes);
                            out.put_slice(format!(": closed: {}\n\n", message.replace('\n', " ")).as_bytes());
                            ended = true;
                            break;
                        }
                        encode_event(&frame, self.format, &mut out);
                    }
                    self.batch.clear();
                    if ended {
                        // The next call finds no session and ends the body.
                        self.publisher_end();
                    }
                    Some(out.freeze())
                }
            }
            _ = self.heartbeat.tick() => Some(Bytes::from_static(b": heartbeat\n\n")),
            _ = until(self.expires_at) => {
                self.publisher_end();
                Some(Bytes::from_static(b": closed: token expired\n\n"))
            }
        };
        match chunk {
            Some(bytes) => Some((Ok(BodyFrame::data(bytes)), self)),
            None => {
                self.publisher_end();
                None
            }
        }
    }

    /// Ends the session now (in the background: the router detaches it).
    fn publisher_end(&mut self) {
        if let Some(publisher) = self.publisher.take() {
            tokio::spawn(publisher.end());
        }
    }
}

impl Drop for Feed {
    /// The client went away (hyper drops the body): the subscriptions must
    /// not outlive it.
    fn drop(&mut self) {
        self.publisher_end();
    }
}

/// Limits for reading our own MESSAGE frames back: they were checked when
/// they came in; the broker's added headers must not trip them.
fn own_frame_limits() -> Limits {
    Limits {
        max_headers: usize::MAX,
        max_header_line_bytes: usize::MAX,
        max_header_bytes: usize::MAX,
        max_body_bytes: usize::MAX,
        ..Limits::default()
    }
}

/// Appends the SSE event for one outbound frame (MESSAGEs only).
fn encode_event(frame: &OutFrame, format: Format, out: &mut BytesMut) {
    if !frame.bytes.starts_with(b"MESSAGE\n") {
        return;
    }
    let limits = own_frame_limits();
    let Ok(length) = stomp_protocol::check(&frame.bytes, &limits) else {
        return;
    };
    let Ok(message) = stomp_protocol::parse(frame.bytes.slice(..length), Version::V1_2, &limits)
    else {
        return;
    };
    let text = std::str::from_utf8(&message.body).ok();
    if text.is_none() {
        out.put_slice(b"event: binary\n");
    }
    let body = match text {
        Some(text) => text.to_owned(),
        None => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&message.body)
        }
    };
    match format {
        Format::Plain => data_lines(&body, out),
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = message
                .headers
                .iter()
                .filter(|(name, _)| *name != "content-length")
                .map(|(name, value)| (name.to_owned(), value.into()))
                .collect();
            let event = serde_json::json!({
                "destination": message.get("destination").unwrap_or_default(),
                "headers": headers,
                "body": body,
            });
            // JSON escapes line breaks: one `data:` line.
            data_lines(&event.to_string(), out);
        }
    }
    out.put_slice(b"\n");
}

/// `data:` lines for `text`: SSE ends lines at CR, LF or CRLF, so each of
/// them starts a new `data:` line (the browser joins them with LF).
fn data_lines(text: &str, out: &mut BytesMut) {
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &[u8]) -> OutFrame {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a")
            .header("message-id", "m-1")
            .header("subscription", "sse-0")
            .body(Bytes::copy_from_slice(body));
        OutFrame {
            bytes: stomp_protocol::encode(&frame, Version::V1_2),
            text: false,
            close: None,
        }
    }

    fn event(body: &[u8], format: Format) -> String {
        let mut out = BytesMut::new();
        encode_event(&message(body), format, &mut out);
        String::from_utf8(out.to_vec()).expect("UTF-8 event")
    }

    #[test]
    fn utf8_bodies_are_data_lines_and_others_base64() {
        assert_eq!(event(b"42", Format::Plain), "data: 42\n\n");
        assert_eq!(
            event(b"a\nb\r\nc\rd", Format::Plain),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(b"", Format::Plain), "data: \n\n");
        assert_eq!(
            event(&[0xff, 0x00, 0x01], Format::Plain),
            "event: binary\ndata: /wAB\n\n"
        );
    }

    #[test]
    fn json_events_carry_destination_headers_and_body() {
        let text = event(b"x\ny", Format::Json);
        let line = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one data line");
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(value["destination"], "/topic/a");
        assert_eq!(value["headers"]["message-id"], "m-1");
        assert_eq!(value["body"], "x\ny");
    }
}
