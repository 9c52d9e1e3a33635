//! An auto-ack queue subscription on JetStream whose client does not read
//! (one nats-server, one broker with `engine = "nats"`, a small outbound
//! queue, `[queues] max_deliveries = 2`): what does not fit in the connection's queue
//! waits in the broker for room instead of going back to JetStream, so no
//! message is counted as delivered again without the client having seen it
//! (none goes to the dead letters), and they arrive in order.

mod common;

use common::cluster::{next_message, start_node_configured, NatsCluster};
use common::Client;
use std::time::Duration;
use stomp_protocol::{Command, Frame};

/// Bound on every wait for a frame.
const WITHIN: Duration = Duration::from_secs(30);
/// Messages sent, and the size of each (together far more than the
/// loopback socket buffers and the connection's outbound queue hold).
const COUNT: usize = 60;
const SIZE: usize = 256 * 1024;

/// Message `index`'s body: its number, padded to [`SIZE`].
fn body(index: usize) -> Vec<u8> {
    let mut body = format!("{index:06}").into_bytes();
    body.resize(SIZE, b'.');
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_gets_every_message_once_in_order() {
    let engine = NatsCluster::start(1);
    let node = start_node_configured(&engine.urls(), 0, |config| {
        config.queues.max_deliveries = 2;
        config.outbound.max_queued_frames = 16;
        config.outbound.max_queued_bytes = config.limits.max_body_bytes;
    })
    .await;

    let mut slow = Client::connect(&node.url()).await;
    slow.subscribe_with(
        "s",
        "/queue/slow",
        &[
            ("ack", "auto"),
            ("prefetch-count", "64"),
            ("x-dead-letter-routing-key", "slow-dead"),
        ],
    )
    .await;
    // From here on `slow` reads nothing until every message is sent.
    let mut producer = Client::connect(&node.url()).await;
    for index in 0..COUNT {
        producer
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/queue/slow")
                    .body(body(index)),
            )
            .await;
    }
    producer
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/slow")
                .body(body(COUNT)),
            "last",
        )
        .await;
    // Time for the broker to fill what the socket takes and go round its
    // pulls (without waiting for room, each round would count a delivery of
    // what did not fit).
    tokio::time::sleep(Duration::from_secs(3)).await;

    for index in 0..=COUNT {
        let frame = next_message(&mut slow, WITHIN).await;
        assert_eq!(
            &frame.body[..6],
            format!("{index:06}").as_bytes(),
            "message {index} in order"
        );
        assert_eq!(frame.body.len(), SIZE);
    }
    slow.expect_silence(Duration::from_millis(500)).await;
    let mut collector = Client::connect(&node.url()).await;
    collector.subscribe_with("d", "/queue/slow-dead", &[]).await;
    collector.expect_silence(Duration::from_secs(1)).await;
}
