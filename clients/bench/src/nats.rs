//! A NATS client over WebSocket, as much of the text protocol as the
//! fan-out scenarios need: INFO, CONNECT (`verbose:false`,
//! `pedantic:false`, no headers), PING/PONG, SUB, PUB, MSG, `+OK`, `-ERR`.
//!
//! The WebSocket messages are a byte stream (the server packs many
//! operations into one message); [`decode`] takes one whole operation from
//! the front of the buffer or says it needs more. A PING from the server is
//! answered as soon as it is read; a PING of ours followed by its PONG
//! confirms that the server has processed everything sent before it.

use crate::connection::{open_websocket, WebSocket};
use crate::pubsub::{topic_path, PubSub};
use crate::Fallible;
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::collections::VecDeque;
use tokio_tungstenite::tungstenite::Message;

/// What the client sends right after INFO: no `+OK` per operation, no
/// strict subject checks, no headers.
const CONNECT: &[u8] =
    b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1,\"headers\":false}\r\nPING\r\n";

/// One server operation.
#[derive(Debug, PartialEq, Eq)]
pub enum Op {
    /// `MSG <subject> <sid> [reply-to] <#bytes>` and its payload.
    Msg(Bytes),
    /// `PING`: to be answered with PONG.
    Ping,
    /// `PONG`: the answer to our PING.
    Pong,
    /// `INFO`, `+OK`: nothing to do.
    Other,
    /// `-ERR '<message>'`.
    Error(String),
}

/// Takes one whole operation from the front of `buffer`; `None` until one
/// has arrived.
pub fn decode(buffer: &mut BytesMut) -> Fallible<Option<Op>> {
    let Some(line_end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &buffer[..line_end];
    let word_end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    let op = match &line[..word_end] {
        b"MSG" => {
            let fields: Vec<&[u8]> = line
                .split(|b| *b == b' ')
                .filter(|f| !f.is_empty())
                .collect();
            if !(4..=5).contains(&fields.len()) {
                return Err(format!("bad MSG line: {}", String::from_utf8_lossy(line)).into());
            }
            let size: usize = std::str::from_utf8(fields[fields.len() - 1])?.parse()?;
            let payload_start = line_end + 2;
            if buffer.len() < payload_start + size + 2 {
                return Ok(None);
            }
            buffer.advance(payload_start);
            let payload = buffer.split_to(size).freeze();
            buffer.advance(2);
            return Ok(Some(Op::Msg(payload)));
        }
        b"PING" => Op::Ping,
        b"PONG" => Op::Pong,
        b"-ERR" => Op::Error(String::from_utf8_lossy(&line[word_end..]).trim().to_owned()),
        _ => Op::Other,
    };
    buffer.advance(line_end + 2);
    Ok(Some(op))
}

/// `PUB <subject> <#bytes>` and the payload, as one buffer.
pub fn encode_pub(subject: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(subject.len() + payload.len() + 24);
    out.extend_from_slice(format!("PUB {subject} {}\r\n", payload.len()).as_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
    out
}

/// One NATS connection over WebSocket.
pub struct NatsConnection {
    ws: WebSocket,
    buffer: BytesMut,
    /// Messages read while waiting for a PONG, handed out first.
    early: VecDeque<Bytes>,
    /// WebSocket payload bytes received so far.
    received_bytes: u64,
}

impl NatsConnection {
    /// The next operation from the server, answering its PINGs.
    async fn next_op(&mut self) -> Fallible<Op> {
        loop {
            match decode(&mut self.buffer)? {
                Some(Op::Ping) => {
                    self.ws.send(Message::binary(&b"PONG\r\n"[..])).await?;
                }
                Some(Op::Error(message)) => return Err(format!("NATS -ERR {message}").into()),
                Some(op) => return Ok(op),
                None => match self.ws.next().await {
                    Some(Ok(Message::Binary(b))) => self.take(&b),
                    Some(Ok(Message::Text(t))) => self.take(t.as_bytes()),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("connection closed".into()),
                },
            }
        }
    }

    fn take(&mut self, payload: &[u8]) {
        self.received_bytes += payload.len() as u64;
        self.buffer.extend_from_slice(payload);
    }

    /// Sends PING and waits for its PONG, keeping messages that come first.
    async fn round_trip(&mut self) -> Fallible<()> {
        self.ws.send(Message::binary(&b"PING\r\n"[..])).await?;
        self.wait_for_pong().await
    }

    async fn wait_for_pong(&mut self) -> Fallible<()> {
        loop {
            match self.next_op().await? {
                Op::Pong => return Ok(()),
                Op::Msg(body) => self.early.push_back(body),
                _ => {}
            }
        }
    }
}

impl PubSub for NatsConnection {
    fn topic(destination: &str) -> String {
        let path = topic_path(destination);
        match path.strip_suffix('#') {
            Some(prefix) => format!("{prefix}>"),
            None => path.to_owned(),
        }
    }

    async fn open(url: &str) -> Fallible<NatsConnection> {
        let mut connection = NatsConnection {
            ws: open_websocket(url, None).await?,
            buffer: BytesMut::new(),
            early: VecDeque::new(),
            received_bytes: 0,
        };
        // INFO comes first; CONNECT then PING, and the PONG says CONNECT was taken.
        connection.next_op().await?;
        connection.ws.send(Message::binary(CONNECT)).await?;
        connection.wait_for_pong().await?;
        Ok(connection)
    }

    async fn subscribe(&mut self, topic: &str, index: usize) -> Fallible<()> {
        self.ws
            .feed(Message::binary(format!("SUB {topic} {}\r\n", index + 1)))
            .await?;
        self.round_trip().await
    }

    async fn publish(&mut self, topic: &str, body: Bytes) -> Fallible<()> {
        self.ws
            .feed(Message::binary(encode_pub(topic, &body)))
            .await?;
        Ok(())
    }

    async fn flush(&mut self) -> Fallible<()> {
        self.ws.flush().await?;
        Ok(())
    }

    async fn next_body(&mut self) -> Fallible<Bytes> {
        if let Some(body) = self.early.pop_front() {
            return Ok(body);
        }
        self.ws.flush().await?;
        loop {
            if let Op::Msg(body) = self.next_op().await? {
                return Ok(body);
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

    #[test]
    fn operations_are_taken_whole_from_a_stream() {
        let stream =
            b"INFO {\"a\":1}\r\nMSG s.1 7 5\r\nhello\r\nPING\r\nMSG s 7 r 2\r\nhi\r\n-ERR 'x'\r\n";
        for split in 0..stream.len() {
            let mut buffer = BytesMut::from(&stream[..split]);
            let mut ops = Vec::new();
            let mut rest = &stream[split..];
            loop {
                match decode(&mut buffer).expect("valid stream") {
                    Some(op) => ops.push(op),
                    None if rest.is_empty() => break,
                    None => {
                        buffer.extend_from_slice(&rest[..1]);
                        rest = &rest[1..];
                    }
                }
            }
            assert_eq!(
                ops,
                vec![
                    Op::Other,
                    Op::Msg(Bytes::from_static(b"hello")),
                    Op::Ping,
                    Op::Msg(Bytes::from_static(b"hi")),
                    Op::Error("'x'".into()),
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn a_publish_is_one_buffer() {
        assert_eq!(encode_pub("a.b", b"xyz"), b"PUB a.b 3\r\nxyz\r\n");
    }
}
