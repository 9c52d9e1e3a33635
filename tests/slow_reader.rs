//! A subscriber that stops reading: its socket fills, its writer waits,
//! and when it reads again it gets every message whole, in order, in each
//! of the three WebSocket length forms, and text stays text. (Written for
//! the direct writes of round 4, not kept; it holds for the writer alone.)

mod common;

use common::{start, test_config, Client};
use std::time::Duration;
use stomp_protocol::{Command, Frame};

/// Bodies in each WebSocket length form: under 126 bytes, 16-bit, 64-bit.
const SIZES: [usize; 3] = [20, 3_000, 70_000];

fn body(seq: usize) -> String {
    let size = SIZES[seq % SIZES.len()];
    let mut text = format!("{seq}:");
    // A character of two bytes too: the frame stays a text message.
    text.push('é');
    while text.len() < size {
        text.push(char::from(b'a' + (seq % 26) as u8));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_gets_every_message_whole_and_in_order() {
    const MESSAGES: usize = 600;
    let mut config = test_config();
    // Room for everything: the socket fills long before the budget.
    config.outbound.max_queued_bytes = 256 * 1024 * 1024;
    config.outbound.max_queued_frames = 100_000;
    let broker = start(config).await;
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    subscriber
        .subscribe_confirmed("s", "/topic/direct", "subscribed")
        .await;
    let mut publisher = Client::connect(&url).await;
    // The subscriber reads nothing until the publisher is done: about
    // 25 MB, far more than the two sockets' buffers hold.
    for seq in 0..MESSAGES {
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/topic/direct")
                    .body(body(seq)),
            )
            .await;
    }
    publisher
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/topic/elsewhere")
                .body("end"),
            "sent",
        )
        .await;
    for seq in 0..MESSAGES {
        let frame = tokio::time::timeout(Duration::from_secs(60), subscriber.message())
            .await
            .expect("every message arrives");
        let got = String::from_utf8(frame.body.to_vec()).expect("a text body");
        assert_eq!(got.len(), SIZES[seq % SIZES.len()], "message {seq} whole");
        assert_eq!(got, body(seq), "message {seq} in order and intact");
        assert!(!subscriber.last_was_binary, "message {seq} a text message");
    }
    subscriber.expect_silence(Duration::from_millis(200)).await;
}
