//! An MQTT 3.1.1 client over WebSocket (subprotocol `mqtt`), as much as the
//! fan-out scenarios need: CONNECT/CONNACK (clean session), SUBSCRIBE/SUBACK
//! at QoS 0, PUBLISH at QoS 0, PINGREQ/PINGRESP for the keep-alive.
//!
//! The WebSocket messages are a byte stream of packets; [`decode`] takes
//! one whole packet from the front of the buffer or says it needs more.

use crate::connection::{open_websocket, WebSocket};
use crate::pubsub::{topic_path, PubSub};
use crate::Fallible;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The keep-alive announced in CONNECT; a PINGREQ goes out when nothing was
/// sent for half of it.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Client ids must differ per connection: a process-wide counter.
static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);

/// One packet from the broker.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet {
    /// CONNACK with its return code (0: accepted).
    ConnAck(u8),
    /// SUBACK with its packet id and first return code (0x80: refused).
    SubAck(u16, u8),
    /// PUBLISH: the payload.
    Publish(Bytes),
    /// PINGRESP and anything else a QoS 0 client can ignore.
    Other,
}

/// Appends the "remaining length" variable-length integer.
fn put_length(out: &mut BytesMut, mut length: usize) {
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if length == 0 {
            return;
        }
    }
}

/// Appends a UTF-8 string with its two-byte length.
fn put_string(out: &mut BytesMut, text: &[u8]) {
    out.put_u16(text.len() as u16);
    out.extend_from_slice(text);
}

/// A packet of `kind` (the first byte) around `body`.
fn packet(kind: u8, body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(body.len() + 5);
    out.put_u8(kind);
    put_length(&mut out, body.len());
    out.extend_from_slice(body);
    out.freeze()
}

/// CONNECT, MQTT 3.1.1, clean session, no credentials.
pub fn encode_connect(client_id: &str) -> Bytes {
    let mut body = BytesMut::new();
    put_string(&mut body, b"MQTT");
    body.put_u8(4); // protocol level 3.1.1
    body.put_u8(0x02); // clean session
    body.put_u16(KEEP_ALIVE.as_secs() as u16);
    put_string(&mut body, client_id.as_bytes());
    packet(0x10, &body)
}

/// SUBSCRIBE to one filter at QoS 0.
pub fn encode_subscribe(packet_id: u16, filter: &str) -> Bytes {
    let mut body = BytesMut::new();
    body.put_u16(packet_id);
    put_string(&mut body, filter.as_bytes());
    body.put_u8(0);
    packet(0x82, &body)
}

/// PUBLISH at QoS 0 (no packet id), not retained.
pub fn encode_publish(topic: &str, payload: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(topic.len() + payload.len() + 2);
    put_string(&mut body, topic.as_bytes());
    body.extend_from_slice(payload);
    packet(0x30, &body)
}

/// Takes one whole packet from the front of `buffer`; `None` until one has
/// arrived.
pub fn decode(buffer: &mut BytesMut) -> Fallible<Option<Packet>> {
    let mut length = 0usize;
    let mut header = 1;
    loop {
        let Some(byte) = buffer.get(header) else {
            return Ok(None);
        };
        length |= usize::from(byte & 0x7f) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            return Err("MQTT remaining length over four bytes".into());
        }
    }
    if buffer.len() < header + length {
        return Ok(None);
    }
    let kind = buffer[0];
    buffer.advance(header);
    let mut body = buffer.split_to(length);
    let too_short = || -> Box<dyn std::error::Error + Send + Sync> {
        format!("MQTT packet 0x{kind:02x} too short").into()
    };
    Ok(Some(match kind >> 4 {
        2 => Packet::ConnAck(*body.get(1).ok_or_else(too_short)?),
        9 => {
            if body.len() < 3 {
                return Err(too_short());
            }
            Packet::SubAck(body.get_u16(), body[0])
        }
        3 => {
            if body.len() < 2 {
                return Err(too_short());
            }
            let topic_length = usize::from(body.get_u16());
            // QoS 1 and 2 carry a packet id after the topic.
            let id_length = if kind & 0x06 != 0 { 2 } else { 0 };
            if body.len() < topic_length + id_length {
                return Err(too_short());
            }
            body.advance(topic_length + id_length);
            Packet::Publish(body.freeze())
        }
        _ => Packet::Other,
    }))
}

/// One MQTT connection over WebSocket.
pub struct MqttConnection {
    ws: WebSocket,
    buffer: BytesMut,
    /// When something was last sent, for the keep-alive.
    last_sent: Instant,
    /// WebSocket payload bytes received so far.
    received_bytes: u64,
}

impl MqttConnection {
    async fn next_packet(&mut self) -> Fallible<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buffer)? {
                return Ok(packet);
            }
            match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => {
                    self.received_bytes += b.len() as u64;
                    self.buffer.extend_from_slice(&b);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("connection closed".into()),
            }
        }
    }

    async fn feed(&mut self, packet: Bytes) -> Fallible<()> {
        self.ws.feed(Message::Binary(packet)).await?;
        self.last_sent = Instant::now();
        Ok(())
    }
}

impl PubSub for MqttConnection {
    fn topic(destination: &str) -> String {
        topic_path(destination)
            .split('.')
            .map(|level| if level == "*" { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/")
    }

    async fn open(url: &str) -> Fallible<MqttConnection> {
        let mut connection = MqttConnection {
            ws: open_websocket(url, Some("mqtt")).await?,
            buffer: BytesMut::new(),
            last_sent: Instant::now(),
            received_bytes: 0,
        };
        let client = NEXT_CLIENT.fetch_add(1, Ordering::Relaxed);
        let id = format!("bench-{}-{client}", std::process::id());
        connection.feed(encode_connect(&id)).await?;
        connection.ws.flush().await?;
        match connection.next_packet().await? {
            Packet::ConnAck(0) => Ok(connection),
            other => Err(format!("MQTT CONNECT refused: {other:?}").into()),
        }
    }

    async fn subscribe(&mut self, topic: &str, index: usize) -> Fallible<()> {
        let id = (index % 65535 + 1) as u16;
        self.feed(encode_subscribe(id, topic)).await?;
        self.ws.flush().await?;
        loop {
            match self.next_packet().await? {
                Packet::SubAck(acked, code) if acked == id && code < 0x80 => return Ok(()),
                Packet::SubAck(_, code) => {
                    return Err(format!("MQTT SUBSCRIBE refused: 0x{code:02x}").into())
                }
                Packet::ConnAck(_) | Packet::Publish(_) | Packet::Other => {}
            }
        }
    }

    async fn publish(&mut self, topic: &str, body: Bytes) -> Fallible<()> {
        self.feed(encode_publish(topic, &body)).await
    }

    async fn flush(&mut self) -> Fallible<()> {
        self.ws.flush().await?;
        Ok(())
    }

    async fn next_body(&mut self) -> Fallible<Bytes> {
        if self.last_sent.elapsed() > KEEP_ALIVE / 2 {
            self.feed(packet(0xc0, &[])).await?;
        }
        self.ws.flush().await?;
        loop {
            if let Packet::Publish(body) = self.next_packet().await? {
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
    fn packets_are_taken_whole_from_a_stream() {
        let mut stream = BytesMut::new();
        stream.extend_from_slice(&[0x20, 0x02, 0x00, 0x00]);
        stream.extend_from_slice(&[0x90, 0x03, 0x00, 0x07, 0x00]);
        let big = vec![b'x'; 300]; // a two-byte remaining length
        stream.extend_from_slice(&encode_publish("a/b", &big));
        stream.extend_from_slice(&[0xd0, 0x00]);
        for split in 0..stream.len() {
            let mut buffer = BytesMut::from(&stream[..split]);
            let mut rest = &stream[split..];
            let mut packets = Vec::new();
            loop {
                match decode(&mut buffer).expect("valid stream") {
                    Some(p) => packets.push(p),
                    None if rest.is_empty() => break,
                    None => {
                        buffer.extend_from_slice(&rest[..1]);
                        rest = &rest[1..];
                    }
                }
            }
            assert_eq!(
                packets,
                vec![
                    Packet::ConnAck(0),
                    Packet::SubAck(7, 0),
                    Packet::Publish(Bytes::from(big.clone())),
                    Packet::Other,
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn connect_and_subscribe_are_as_the_spec_draws_them() {
        let connect = encode_connect("c");
        assert_eq!(
            &connect[..],
            &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'c']
        );
        assert_eq!(
            &encode_subscribe(1, "t")[..],
            &[0x82, 6, 0, 1, 0, 1, b't', 0]
        );
    }
}
