//! Subscribers over Server-Sent Events (`--protocol sse`): each subscriber
//! is a `GET /sse?destination=<d>` on the broker's HTTP port (the WebSocket
//! listener's), read as a chunked `text/event-stream`; the publisher speaks
//! STOMP over WebSocket to the same URL. The fan-out accounting is the
//! STOMP subscribers' (delivery.rs): the stamp is the event's `data:`.
//!
//! Only what stomphub's feed sends is understood: `data:` lines (joined by
//! LF), `event:` (events other than messages, e.g. `recovered`, are
//! skipped), `id:` and `retry:` (ignored), comments (heart-beats).

use crate::connection::{tcp_connect, Connection};
use crate::pubsub::PubSub;
use crate::Fallible;
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest response head read.
const MAX_HEAD: usize = 16 * 1024;

/// A publisher (STOMP over WebSocket) or an SSE subscriber.
pub struct SseConnection {
    /// The broker's WebSocket URL, as the scenario was given it.
    url: String,
    /// The publishing connection, opened at the first publish.
    publisher: Option<Connection>,
    /// The feed's connection, once subscribed.
    feed: Option<TcpStream>,
    /// Body bytes read, still chunk-encoded.
    raw: BytesMut,
    /// De-chunked text not yet split into events.
    text: BytesMut,
    /// Message events parsed, not yet returned.
    events: VecDeque<Bytes>,
    /// HTTP body bytes received (chunk framing included).
    received_bytes: u64,
}

/// `host:port` of a `ws://host:port/path` URL.
fn authority(url: &str) -> Fallible<&str> {
    let rest = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or("a URL needs a scheme")?;
    Ok(rest.split('/').next().unwrap_or(rest))
}

/// A destination for a query string: `#` and anything unusual percent-encoded.
fn query_value(destination: &str) -> String {
    let mut out = String::new();
    for byte in destination.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/*".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

impl SseConnection {
    /// Moves whole chunks from `raw` to `text`; an error on a malformed
    /// chunk or the body's end.
    fn dechunk(&mut self) -> Fallible<()> {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let size = std::str::from_utf8(&self.raw[..line_end])?;
            let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size:?}"))?;
            if size == 0 {
                return Err("the feed ended".into());
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return Ok(());
            }
            self.raw.advance(line_end + 2);
            self.text.extend_from_slice(&self.raw[..size]);
            self.raw.advance(size + 2);
        }
    }

    /// Moves whole events from `text` to `events` (message events only).
    fn parse_events(&mut self) {
        while let Some(end) = self.text.windows(2).position(|w| w == b"\n\n") {
            let event = self.text.split_to(end + 2);
            let mut data: Option<Vec<u8>> = None;
            let mut kind: &[u8] = b"message";
            for line in event[..end].split(|b| *b == b'\n') {
                if let Some(value) = line.strip_prefix(b"data:") {
                    let value = value.strip_prefix(b" ").unwrap_or(value);
                    let data = data.get_or_insert_with(Vec::new);
                    if !data.is_empty() {
                        data.push(b'\n');
                    }
                    data.extend_from_slice(value);
                } else if let Some(value) = line.strip_prefix(b"event:") {
                    kind = value.strip_prefix(b" ").unwrap_or(value);
                }
            }
            if let Some(data) = data {
                if kind == b"message" {
                    self.events.push_back(Bytes::from(data));
                }
            }
        }
    }

    /// Reads once from the feed into `raw`.
    async fn read(&mut self) -> Fallible<()> {
        let feed = self.feed.as_mut().ok_or("not subscribed")?;
        let mut chunk = [0u8; 16 * 1024];
        let read = feed.read(&mut chunk).await?;
        if read == 0 {
            return Err("the feed's connection closed".into());
        }
        self.received_bytes += read as u64;
        self.raw.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

impl PubSub for SseConnection {
    fn topic(destination: &str) -> String {
        destination.to_owned()
    }

    async fn open(url: &str) -> Fallible<SseConnection> {
        Ok(SseConnection {
            url: url.to_owned(),
            publisher: None,
            feed: None,
            raw: BytesMut::new(),
            text: BytesMut::new(),
            events: VecDeque::new(),
            received_bytes: 0,
        })
    }

    /// Opens the feed; the broker answers once the subscription is live.
    async fn subscribe(&mut self, topic: &str, _index: usize) -> Fallible<()> {
        let authority = authority(&self.url)?.to_owned();
        let target = tokio::net::lookup_host(authority.as_str())
            .await?
            .next()
            .ok_or("the URL's host has no address")?;
        let mut stream = tcp_connect(target).await?;
        let request = format!(
            "GET /sse?destination={} HTTP/1.1\r\nHost: {authority}\r\nAccept: text/event-stream\r\n\r\n",
            query_value(topic)
        );
        stream.write_all(request.as_bytes()).await?;
        let mut head = BytesMut::new();
        let end = loop {
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if head.len() > MAX_HEAD {
                return Err("no end of the response head".into());
            }
            let mut chunk = [0u8; 4096];
            let read = stream.read(&mut chunk).await?;
            if read == 0 {
                return Err("closed before a response head".into());
            }
            head.extend_from_slice(&chunk[..read]);
        };
        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
        if !text.starts_with("http/1.1 200") {
            let body = String::from_utf8_lossy(&head[end..]);
            return Err(
                format!("SSE refused: {} {body}", text.lines().next().unwrap_or("")).into(),
            );
        }
        if !text.contains("transfer-encoding: chunked") {
            return Err("the feed is not chunked".into());
        }
        self.raw.extend_from_slice(&head[end..]);
        self.feed = Some(stream);
        Ok(())
    }

    async fn publish(&mut self, topic: &str, body: Bytes) -> Fallible<()> {
        if self.publisher.is_none() {
            self.publisher = Some(Connection::open(&self.url).await?);
        }
        let publisher = self.publisher.as_mut().ok_or("no publisher")?;
        PubSub::publish(publisher, topic, body).await
    }

    async fn flush(&mut self) -> Fallible<()> {
        match self.publisher.as_mut() {
            Some(publisher) => PubSub::flush(publisher).await,
            None => Ok(()),
        }
    }

    async fn next_body(&mut self) -> Fallible<Bytes> {
        loop {
            if let Some(body) = self.events.pop_front() {
                return Ok(body);
            }
            self.dechunk()?;
            self.parse_events();
            if self.events.is_empty() {
                self.read().await?;
            }
        }
    }

    fn received_bytes(&self) -> u64 {
        self.received_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Vec<Bytes>, Fallible<()>) {
        let mut connection = SseConnection {
            url: String::new(),
            publisher: None,
            feed: None,
            raw: BytesMut::from(raw),
            text: BytesMut::new(),
            events: VecDeque::new(),
            received_bytes: 0,
        };
        let result = connection.dechunk();
        connection.parse_events();
        (connection.events.into_iter().collect(), result)
    }

    #[test]
    fn chunks_and_events_split_anywhere_are_put_together() {
        let body = "retry: 3000\n\n: heartbeat\n\nid: e:1\ndata: a\ndata: b\n\nevent: recovered\ndata: true\n\ndata: 42\n\n";
        let mut raw = Vec::new();
        for piece in body.as_bytes().chunks(7) {
            raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            raw.extend_from_slice(piece);
            raw.extend_from_slice(b"\r\n");
        }
        let (events, result) = parsed(&raw);
        assert!(result.is_ok());
        assert_eq!(events, vec![Bytes::from("a\nb"), Bytes::from("42")]);
        // A chunk cut short waits for the rest; the last chunk ends the feed.
        let (events, result) = parsed(b"9\r\ndata: 1\n\n");
        assert!(events.is_empty() && result.is_ok());
        let (_, result) = parsed(b"0\r\n\r\n");
        assert!(result.is_err());
    }

    #[test]
    fn wildcards_are_encoded_for_the_query() {
        assert_eq!(query_value("/topic/a.#"), "/topic/a.%23");
        assert_eq!(query_value("/topic/a.*"), "/topic/a.*");
    }
}
