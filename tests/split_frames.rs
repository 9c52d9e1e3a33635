//! A frame without `content-length` that arrives in many tiny WebSocket
//! messages costs the broker time linear in its size: the connection keeps
//! one buffer and one decoder (which resumes its scan) for its whole life.

mod common;

use common::{start, test_config, Client, Event};
use futures_util::SinkExt;
use std::time::{Duration, Instant};
use stomp_protocol::Command;
use tokio_tungstenite::tungstenite::Message;

/// Publishes a SEND of `body_bytes` without `content-length` in 1-byte
/// WebSocket messages; how long until the subscriber has it, or `None`
/// after `give_up`.
async fn one_byte_messages(
    subscriber: &mut Client,
    publisher: &mut Client,
    destination: &str,
    body_bytes: usize,
    give_up: Duration,
) -> Option<Duration> {
    let mut wire = format!("SEND\ndestination:{destination}\n\n").into_bytes();
    wire.resize(wire.len() + body_bytes, b'x');
    wire.push(0);
    let started = Instant::now();
    for byte in wire.chunks(1) {
        // Fed without a flush each: the client's cost stays small, and the
        // broker still reads one WebSocket message per byte.
        publisher
            .ws
            .feed(Message::Binary(byte.to_vec().into()))
            .await
            .expect("feed");
    }
    publisher.ws.flush().await.expect("flush");
    loop {
        match subscriber
            .event_within(give_up.saturating_sub(started.elapsed()))
            .await?
        {
            Event::Frame(message) if message.command == Command::Message => {
                if message.get("destination") != Some(destination) {
                    // A late one of an abandoned run.
                    continue;
                }
                assert_eq!(message.body.len(), body_bytes);
                return Some(started.elapsed());
            }
            other => panic!("expected the MESSAGE, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_in_one_byte_messages_costs_time_linear_in_its_size() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    subscriber.subscribe("s", "/topic/split.#").await;
    let mut publisher = Client::connect(&url).await;
    let long = Duration::from_secs(60);
    // The quickest of two runs: the figure least disturbed by other work.
    let mut small = Duration::MAX;
    for _ in 0..2 {
        let took = one_byte_messages(
            &mut subscriber,
            &mut publisher,
            "/topic/split.small",
            16 << 10,
            long,
        )
        .await;
        small = small.min(took.expect("16 KiB arrives within a minute"));
    }
    // Sixteen times the bytes: about 16 times the time when linear (measured
    // 15), about 256 times when each message rescans the frame (the old
    // decoder took 1.2 s for 16 KiB and over a minute for 256 KiB).
    // The floor keeps a hiccup on a loaded machine from failing a fast
    // (release) build; rescanning takes tens of seconds even there. The
    // ceiling (over 10 times the 2.5 s of a debug build) ends a failing run.
    let give_up = small
        .mul_f64(48.0)
        .clamp(Duration::from_secs(5), Duration::from_secs(30));
    let mut large = None;
    for attempt in 0..2 {
        let destination = format!("/topic/split.large{attempt}");
        large = one_byte_messages(
            &mut subscriber,
            &mut publisher,
            &destination,
            256 << 10,
            give_up,
        )
        .await;
        if large.is_some() {
            break;
        }
        // The abandoned frame is still being read on that connection.
        publisher = Client::connect(&url).await;
    }
    eprintln!("16 KiB: {small:?}, 256 KiB: {large:?} (given up after {give_up:?})");
    assert!(
        large.is_some(),
        "256 KiB in 1-byte messages took over {give_up:?}, 48 times as long as 16 KiB ({small:?})"
    );
    broker.shutdown().await;
}
