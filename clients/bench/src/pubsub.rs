//! The publish/subscribe operations the fan-out scenarios need, as one trait
//! that each protocol's connection implements (STOMP here, NATS in nats.rs,
//! MQTT in mqtt.rs), so that the scenario code is written once.
//!
//! Scenarios name destinations the STOMP way (`/topic/a.b.*`, `/topic/a.#`);
//! each protocol maps them once, before the run, to its own form (NATS
//! `a.b.*` / `a.>`, MQTT `a/b/+` / `a/#`).

use crate::connection::Connection;
use crate::Fallible;
use bytes::Bytes;
use serde::Deserialize;
use std::future::Future;
use stomp_protocol::{Command, Frame};

/// The protocol a load-tool connection speaks.
#[derive(clap::ValueEnum, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// STOMP 1.2 over WebSocket (subprotocol `v12.stomp`).
    #[default]
    Stomp,
    /// The NATS text protocol over WebSocket.
    Nats,
    /// MQTT 3.1.1 over WebSocket (subprotocol `mqtt`), QoS 0.
    Mqtt,
    /// Subscribers over Server-Sent Events (`GET /sse`, stomphub), the
    /// publisher in STOMP over WebSocket (sse.rs).
    Sse,
}

impl Protocol {
    /// The lower-case name, as plan files and `--protocol` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Stomp => "stomp",
            Protocol::Nats => "nats",
            Protocol::Mqtt => "mqtt",
            Protocol::Sse => "sse",
        }
    }
}

/// One connection of a publish/subscribe protocol, as the scenarios use it.
/// The futures are `Send` so that every connection can run in its own task.
pub trait PubSub: Sized + Send + 'static {
    /// A scenario's destination (`/topic/...`, STOMP wildcards) in this
    /// protocol's form.
    fn topic(destination: &str) -> String;

    /// Connects and waits until the broker has accepted the connection.
    fn open(url: &str) -> impl Future<Output = Fallible<Self>> + Send;

    /// Subscribes to `topic` (in this protocol's form) and waits until the
    /// broker confirms it; `index` tells subscriptions apart where needed.
    fn subscribe(&mut self, topic: &str, index: usize)
        -> impl Future<Output = Fallible<()>> + Send;

    /// Queues one message to `topic` (written at the next flush).
    fn publish(&mut self, topic: &str, body: Bytes) -> impl Future<Output = Fallible<()>> + Send;

    /// Writes what is queued.
    fn flush(&mut self) -> impl Future<Output = Fallible<()>> + Send;

    /// The body of the next message delivered (flushing first).
    fn next_body(&mut self) -> impl Future<Output = Fallible<Bytes>> + Send;

    /// Bytes received so far (every frame, not only messages): WebSocket
    /// payload, STOMP bytes on TCP, or an SSE feed's HTTP body, as
    /// [`wire_label`] names them.
    fn received_bytes(&self) -> u64;
}

impl PubSub for Connection {
    fn topic(destination: &str) -> String {
        destination.to_owned()
    }

    async fn open(url: &str) -> Fallible<Connection> {
        Connection::open(url).await
    }

    async fn subscribe(&mut self, topic: &str, index: usize) -> Fallible<()> {
        self.subscribe_confirmed("sub-0", topic, &format!("ready-{index}"), &[])
            .await
    }

    async fn publish(&mut self, topic: &str, body: Bytes) -> Fallible<()> {
        self.send(
            Frame::new(Command::Send)
                .header("destination", topic)
                .body(body),
        )
        .await
    }

    async fn flush(&mut self) -> Fallible<()> {
        Connection::flush(self).await
    }

    async fn next_body(&mut self) -> Fallible<Bytes> {
        self.next_message_body().await
    }

    fn received_bytes(&self) -> u64 {
        Connection::received_bytes(self)
    }
}

/// What a subscriber's received bytes are, for the report: a `tcp://`
/// target has no WebSocket payload, an SSE feed neither.
pub fn wire_label(url: &str, protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Sse => "SSE body bytes (HTTP chunked, event framing included)",
        _ if url.starts_with("tcp://") || url.starts_with("ssl://") => "TCP bytes (STOMP frames)",
        _ => "WebSocket payload bytes",
    }
}

/// The part of a STOMP destination after `/topic/` (or the whole name).
pub fn topic_path(destination: &str) -> &str {
    destination.strip_prefix("/topic/").unwrap_or(destination)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_map_to_each_protocol() {
        use crate::mqtt::MqttConnection;
        use crate::nats::NatsConnection;
        assert_eq!(NatsConnection::topic("/topic/bench.fanout"), "bench.fanout");
        assert_eq!(NatsConnection::topic("/topic/w.3.*"), "w.3.*");
        assert_eq!(NatsConnection::topic("/topic/w.#"), "w.>");
        assert_eq!(MqttConnection::topic("/topic/bench.fanout"), "bench/fanout");
        assert_eq!(MqttConnection::topic("/topic/w.3.*"), "w/3/+");
        assert_eq!(MqttConnection::topic("/topic/w.#"), "w/#");
    }
}
