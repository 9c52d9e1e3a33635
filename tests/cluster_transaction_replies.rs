//! Transactions on the cluster engine (3 nats-servers, JetStream R3) that
//! are retried or carry replies: a COMMIT retried with the same
//! `message-id`s (on another node) is refused and stores nothing twice; a
//! queue SEND with `reply-to` inside a COMMIT gets its reply across nodes,
//! and a reply to another node's reply queue inside a COMMIT arrives only
//! after it; a refused reply queue gives one ERROR, after the RECEIPTs of
//! the SENDs before it.

mod common;

use common::cluster::{start_node, start_node_configured, NatsCluster};
use common::{Client, Event};
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

fn tx_send(destination: &str, body: &str, tx: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("transaction", tx)
        .body(body.to_owned())
}

fn tx_frame(command: Command, tx: &str) -> Frame {
    Frame::new(command).header("transaction", tx)
}

/// The next frame within `ACROSS`, skipping heart-beats.
async fn next_frame(client: &mut Client) -> Frame {
    loop {
        match client.event_within(ACROSS).await {
            Some(Event::Frame(frame)) => return frame,
            Some(Event::HeartBeat) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The next MESSAGE within `ACROSS`.
async fn next_message(client: &mut Client) -> Frame {
    let frame = next_frame(client).await;
    assert_eq!(frame.command, Command::Message, "{frame:?}");
    frame
}

/// BEGIN, two queue SENDs with the client's `message-id`s, COMMIT.
async fn commit_two(client: &mut Client, tx: &str) {
    client
        .send_confirmed(tx_frame(Command::Begin, tx), "b")
        .await;
    for (id, text) in [("m1", "one"), ("m2", "two")] {
        client
            .send(tx_send("/queue/retried", text, tx).header("message-id", id))
            .await;
    }
    client
        .send(tx_frame(Command::Commit, tx).header("receipt", "c"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_retried_with_the_same_message_ids_stores_nothing_twice() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let first_node = start_node(&urls, 0).await;
    let second_node = start_node(&urls, 1).await;
    let mut first = Client::connect_as(&first_node.url(), "app").await;
    commit_two(&mut first, "t").await;
    first.expect_receipt("c").await;

    // The client did not see that RECEIPT (say) and retries on node 1.
    let mut retry = Client::connect_as(&second_node.url(), "app").await;
    commit_two(&mut retry, "t").await;
    retry
        .expect_error(
            "has a message-id the engine has stored already",
            CloseCode::Error,
        )
        .await;

    first
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/retried")
                .body("probe"),
            "p",
        )
        .await;
    let mut consumer = Client::connect(&second_node.url()).await;
    consumer.subscribe("s", "/queue/retried").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(body(&next_message(&mut consumer).await));
    }
    assert_eq!(got, ["one", "two", "probe"], "stored twice or lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_replies_inside_commits_cross_nodes() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let requester_node = start_node(&urls, 0).await;
    let responder_node = start_node(&urls, 1).await;
    let mut responder = Client::connect(&responder_node.url()).await;
    responder
        .subscribe_confirmed("svc", "/queue/tx.service", "r")
        .await;

    // The request is a queue SEND with reply-to inside a COMMIT.
    let mut requester = Client::connect(&requester_node.url()).await;
    requester
        .send_confirmed(tx_frame(Command::Begin, "q"), "b")
        .await;
    requester
        .send(tx_send("/queue/tx.service", "question", "q").header("reply-to", "/temp-queue/txa"))
        .await;
    requester
        .send_confirmed(tx_frame(Command::Commit, "q"), "c")
        .await;
    let request = next_message(&mut responder).await;
    assert_eq!(body(&request), "question");
    let reply_to = request.get("reply-to").expect("reply-to").to_owned();
    assert!(reply_to.starts_with("/reply-queue/"), "{reply_to}");

    // The reply, to the requester's node, inside a COMMIT on node 1:
    // nothing before the COMMIT, then the reply in its reply queue.
    responder
        .send_confirmed(tx_frame(Command::Begin, "a"), "b")
        .await;
    responder.send(tx_send(&reply_to, "answer", "a")).await;
    requester.expect_silence(Duration::from_millis(300)).await;
    responder
        .send_confirmed(tx_frame(Command::Commit, "a"), "c")
        .await;
    let reply = next_message(&mut requester).await;
    assert_eq!(body(&reply), "answer");
    assert_eq!(reply.get("subscription"), Some("/temp-queue/txa"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reply_queue_is_one_error_after_the_receipts_before_it() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let node = start_node_configured(&urls, 0, |config| {
        config.limits.max_reply_queues_per_connection = 1;
    })
    .await;
    let mut client = Client::connect(&node.url()).await;
    let send = |n: usize, reply_to: Option<&str>| {
        let frame = Frame::new(Command::Send)
            .header("destination", "/queue/refused.requests")
            .header("receipt", format!("r{n}"))
            .body(format!("request {n}"));
        match reply_to {
            Some(reply_to) => frame.header("reply-to", reply_to),
            None => frame,
        }
    };
    client
        .send_confirmed(send(0, Some("/temp-queue/one")), "r0")
        .await;
    // Pipelined: their RECEIPTs wait for the engine while the refused
    // reply queue is already read.
    for n in 1..=5 {
        client.send(send(n, None)).await;
    }
    client.send(send(6, Some("/temp-queue/two"))).await;
    for n in 1..=5 {
        let receipt = next_frame(&mut client).await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
        assert_eq!(receipt.get("receipt-id"), Some(format!("r{n}").as_str()));
    }
    // One ERROR, then the close (a second ERROR fails `expect_error`).
    let error = client
        .expect_error(
            "too many reply queues on this connection",
            CloseCode::Policy,
        )
        .await;
    assert_eq!(error.get("receipt-id"), Some("r6"));
}
