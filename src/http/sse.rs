//! `GET /sse?destination=<d>` (repeatable, wildcards allowed): Server-Sent
//! Events, one event per MESSAGE. The feed is a STOMP session without a
//! socket, subscribed once per destination: so read permissions, wildcard
//! matching through the topic index, the outbound budget and the
//! slow-consumer policy are those of any subscriber, with no copy of them.
//!
//! Events are written by [`super::sse_event`]; `id:` is the message's
//! `<epoch>:<offset>` on destinations with a feed, and `Last-Event-ID` (or
//! `?lastEventId=`) resumes one past it, as STOMP's `x-stream-offset:
//! offset=<n>` with `x-epoch` does; an event `recovered` says whether that
//! was without a gap. `?x-stream-offset=` chooses the start otherwise. A
//! comment every heart-beat interval keeps proxies from closing an idle
//! feed; `retry:` tells the browser when to reconnect.

use super::publish::{connect, credentials, error, status_for, unauthorized, Publisher};
use super::sse_event::{encode_event, own_frame_limits, Format};
use super::{Body, HttpConnection};
use crate::auth::origin_allowed;
use crate::outbound::OutFrame;
use crate::shutdown::Shutdown;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame as BodyFrame;
use hyper::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL,
    CONTENT_TYPE, ORIGIN, VARY,
};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::time::Duration;
use stomp_protocol::{Command, Frame, Version};
use tokio::time::{interval_at, Instant, Interval, MissedTickBehavior};

/// The browser's reconnection delay, sent as `retry:` (milliseconds).
pub const RETRY_MS: u64 = 3000;
/// How long the answer waits for the subscriptions' receipts.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// MESSAGE frames taken from the outbound queue per body chunk.
const BATCH: usize = 64;

/// Answers one SSE request: refusals as JSON errors, else the feed.
pub(super) async fn events<B>(shared: &HttpConnection, request: Request<B>) -> Response<Body> {
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
    let start = start_at(&request, query, &destinations);
    let mut early = Vec::new();
    let recovered = match subscribe(&mut feed, &destinations, &start.headers, &mut early).await {
        Ok(recovered) => recovered,
        Err((status, message)) => {
            feed.end().await;
            return error(status, &message);
        }
    };
    let mut first = BytesMut::new();
    first.put_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
    if start.resuming {
        // Before the replayed events: `false` means a gap (history lost or
        // too old), and what follows starts at the last value.
        let recovered = recovered && !start.unusable;
        first.put_slice(format!("event: recovered\ndata: {recovered}\n\n").as_bytes());
    }
    for frame in &early {
        encode_event(frame, format, &mut first);
    }
    let state = Feed {
        expires_at: feed.session.expires_at(),
        publisher: Some(feed),
        format,
        heartbeat: heartbeat(shared.context.config.http.sse_heartbeat),
        shutdown: shared.shutdown.clone(),
        first: Some(first.freeze()),
        batch: Vec::new(),
        unwritten: early.iter().map(|frame| frame.bytes.len()).sum(),
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

/// Where a feed starts: the SUBSCRIBE headers that say it.
struct Start {
    /// `x-stream-offset` (and `x-epoch`) for each SUBSCRIBE.
    headers: Vec<(&'static str, String)>,
    /// Started from an event id: the feed says whether it resumed.
    resuming: bool,
    /// The event id cannot be resumed from (not `<epoch>:<offset>`, or the
    /// feed is not one destination without wildcards): starts at `last`.
    unusable: bool,
}

/// Reads `Last-Event-ID` (the browser's reconnect), else `?lastEventId=`,
/// else `?x-stream-offset=`: STOMP's resume, spelt for SSE. An id is
/// `<epoch>:<offset>` of the last event seen, so the feed starts one past it.
fn start_at<B>(request: &Request<B>, query: &str, destinations: &[String]) -> Start {
    let id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| super::publish::query_parameter(query, "lastEventId"))
        .filter(|id| !id.trim().is_empty());
    if let Some(id) = id {
        let parsed = id
            .trim()
            .rsplit_once(':')
            .and_then(|(epoch, offset)| Some((epoch.to_owned(), offset.parse::<u64>().ok()?)));
        // Offsets are per destination: an id names a place in one of them.
        let single = matches!(destinations, [d] if !d.contains(['*', '#']));
        return match parsed {
            Some((epoch, offset)) if single && !epoch.is_empty() => Start {
                headers: vec![
                    (
                        "x-stream-offset",
                        format!("offset={}", offset.saturating_add(1)),
                    ),
                    ("x-epoch", epoch),
                ],
                resuming: true,
                unusable: false,
            },
            _ => Start {
                headers: vec![("x-stream-offset", "last".into())],
                resuming: true,
                unusable: true,
            },
        };
    }
    let headers = super::publish::query_parameter(query, "x-stream-offset")
        .map(|value| vec![("x-stream-offset", value)])
        .unwrap_or_default();
    Start {
        headers,
        resuming: false,
        unusable: false,
    }
}

/// A RECEIPT's `x-recovered:true` (a SUBSCRIBE resumed with no gap).
fn receipt_recovered(bytes: &Bytes) -> bool {
    let limits = own_frame_limits();
    stomp_protocol::check(bytes, &limits)
        .ok()
        .and_then(|length| {
            stomp_protocol::parse(bytes.slice(..length), Version::V1_2, &limits).ok()
        })
        .is_some_and(|receipt| receipt.get("x-recovered") == Some("true"))
}

/// Subscribes the feed's session to every destination and waits for their
/// receipts, so that the feed is live when the answer starts. MESSAGEs that
/// arrive meanwhile go to `early`. Whether every receipt said `x-recovered:true`.
async fn subscribe(
    feed: &mut Publisher,
    destinations: &[String],
    start: &[(&'static str, String)],
    early: &mut Vec<OutFrame>,
) -> Result<bool, (StatusCode, String)> {
    for (index, destination) in destinations.iter().enumerate() {
        let mut subscribe = Frame::new(Command::Subscribe)
            .header("id", format!("sse-{index}"))
            .header("destination", destination.as_str())
            .header("ack", "auto")
            .header("receipt", format!("sse-{index}"));
        for (name, value) in start {
            subscribe = subscribe.header(*name, value.as_str());
        }
        feed.session
            .handle(subscribe)
            .await
            .map_err(|failure| (status_for(&failure.message), failure.message))?;
    }
    let mut receipts = 0;
    let mut recovered = true;
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
            if !frame.bytes.starts_with(b"MESSAGE\n") {
                // Read here, not written: its bytes go back to the budget
                // now (MESSAGEs when the feed's first chunk is taken).
                feed.outbound.written(frame.bytes.len());
            }
            if frame.bytes.starts_with(b"RECEIPT\n") {
                receipts += 1;
                recovered &= receipt_recovered(&frame.bytes);
            } else if frame.bytes.starts_with(b"ERROR\n") {
                let message = super::publish::error_message(&frame.bytes);
                return Err((status_for(&message), message));
            } else {
                early.push(frame);
            }
        }
    }
    Ok(recovered)
}

/// Sleeps until `at`; forever without one.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Ticks every `period` (`[http] sse_heartbeat`, validated positive).
fn heartbeat(period: Duration) -> Interval {
    let mut heartbeat = interval_at(Instant::now() + period, period);
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
    /// Bytes of the frames in the chunk last handed out: given back to the
    /// outbound budget when the next chunk is asked for (the body's reader,
    /// hyper or the direct writer, asks only once it has taken the last
    /// one), as a STOMP connection's writer gives them back once written.
    /// Never given back, every feed was cut off as a slow consumer after its
    /// first `max_queued_bytes` of messages.
    unwritten: usize,
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
        publisher
            .outbound
            .written(std::mem::take(&mut self.unwritten));
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
                    self.unwritten = self.batch.iter().map(|frame| frame.bytes.len()).sum();
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
