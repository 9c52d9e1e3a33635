//! Transactions and temp-queue replies across nodes on the cluster engine
//! (3 nats-servers, JetStream R3): a COMMIT's queue SENDs on one node reach
//! consumers on another, none before the COMMIT; a COMMIT whose SENDs the
//! stream cannot take all (refused by the server), or with more SENDs
//! than a batch holds (refused by the broker before publishing), stores
//! none of them (ERROR, no RECEIPT); an ACK
//! committed on one node settles the message for every node; a reply sent
//! on the responder's node reaches the requester's reply queue on its own
//! node, and a forged name with the right node mark reaches nobody.

mod common;

use common::cluster::{next_message, start_node, start_node_configured, NatsCluster};
use common::{Client, Event, TestBroker};
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

/// Three nodes on a 3-server engine.
async fn three_nodes(engine: &NatsCluster) -> Vec<TestBroker> {
    let urls = engine.urls();
    let mut nodes = Vec::new();
    for node in 0..3 {
        nodes.push(start_node(&urls, node).await);
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_node_reaches_consumers_on_others_and_its_acks_settle_for_all() {
    let engine = NatsCluster::start(3);
    let nodes = three_nodes(&engine).await;
    let mut first = Client::connect(&nodes[1].url()).await;
    first.subscribe_confirmed("a", "/queue/tx.a", "sa").await;
    let mut second = Client::connect(&nodes[2].url()).await;
    second.subscribe_confirmed("b", "/queue/tx.b", "sb").await;

    let mut producer = Client::connect(&nodes[0].url()).await;
    producer
        .send_confirmed(tx_frame(Command::Begin, "t1"), "b1")
        .await;
    producer.send(tx_send("/queue/tx.a", "a1", "t1")).await;
    producer.send(tx_send("/queue/tx.b", "b1", "t1")).await;
    producer
        .send_confirmed(tx_send("/queue/tx.a", "a2", "t1"), "s3")
        .await;
    // Held on the producer's node until COMMIT: no node has them.
    first.expect_silence(Duration::from_millis(300)).await;
    second.expect_silence(Duration::from_millis(300)).await;
    producer
        .send_confirmed(tx_frame(Command::Commit, "t1"), "c1")
        .await;
    assert_eq!(body(&next_message(&mut first, ACROSS).await), "a1");
    assert_eq!(body(&next_message(&mut first, ACROSS).await), "a2");
    assert_eq!(body(&next_message(&mut second, ACROSS).await), "b1");

    // An ACK committed on node 1 settles the delivery for every node: a
    // later subscriber on node 2 gets what came after it, not it again.
    let mut acker = Client::connect(&nodes[1].url()).await;
    acker
        .subscribe_with("k", "/queue/tx.ack", &[("ack", "client-individual")])
        .await;
    producer.publish("/queue/tx.ack", "held").await;
    let held = next_message(&mut acker, ACROSS).await;
    assert_eq!(body(&held), "held");
    acker
        .send_confirmed(tx_frame(Command::Begin, "t2"), "b2")
        .await;
    let ack_id = held.get("ack").expect("ack").to_owned();
    acker
        .send(
            Frame::new(Command::Ack)
                .header("id", &ack_id)
                .header("transaction", "t2"),
        )
        .await;
    acker
        .send_confirmed(tx_frame(Command::Commit, "t2"), "c2")
        .await;
    acker
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    producer
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/tx.ack")
                .body("after"),
            "s4",
        )
        .await;
    let mut later = Client::connect(&nodes[2].url()).await;
    later.subscribe("l", "/queue/tx.ack").await;
    assert_eq!(body(&next_message(&mut later, ACROSS).await), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_stream_cannot_take_whole_stores_none_of_it() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    // Room for one of the transaction's messages, not for both.
    let small = |config: &mut stomphub::Config| config.cluster.max_bytes = 96 * 1024;
    let producer_node = start_node_configured(&urls, 0, small).await;
    let consumer_node = start_node_configured(&urls, 1, small).await;
    let mut producer = Client::connect(&producer_node.url()).await;
    let big = "x".repeat(60 * 1024);
    producer
        .send_confirmed(tx_frame(Command::Begin, "t"), "b")
        .await;
    producer.send(tx_send("/queue/atomic", &big, "t")).await;
    producer.send(tx_send("/queue/atomic", &big, "t")).await;
    producer
        .send(tx_frame(Command::Commit, "t").header("receipt", "c"))
        .await;
    producer
        .expect_error("transaction not committed", CloseCode::Error)
        .await;

    // Had the first SEND been stored, it would come before this one.
    let mut prober = Client::connect(&producer_node.url()).await;
    prober
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/atomic")
                .body("probe"),
            "p",
        )
        .await;
    let mut consumer = Client::connect(&consumer_node.url()).await;
    consumer.subscribe("s", "/queue/atomic").await;
    let first = body(&next_message(&mut consumer, ACROSS).await);
    assert!(
        first == "probe",
        "a {}-byte message of the refused COMMIT was stored",
        first.len()
    );

    // Past the engine's batch limit: ERROR, nothing stored.
    let mut bulk = Client::connect(&producer_node.url()).await;
    bulk.send_confirmed(tx_frame(Command::Begin, "many"), "b")
        .await;
    for n in 0..1001 {
        bulk.send(tx_send("/queue/atomic", &format!("bulk {n}"), "many"))
            .await;
    }
    bulk.send(tx_frame(Command::Commit, "many").header("receipt", "c"))
        .await;
    bulk.expect_error("at most 1000", CloseCode::Error).await;
    prober
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/atomic")
                .body("second probe"),
            "p2",
        )
        .await;
    assert_eq!(
        body(&next_message(&mut consumer, ACROSS).await),
        "second probe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_sent_on_the_responders_node_reaches_the_requester_on_its_own() {
    let engine = NatsCluster::start(3);
    let nodes = three_nodes(&engine).await;
    let mut responder = Client::connect(&nodes[1].url()).await;
    responder
        .subscribe_confirmed("svc", "/queue/service", "r")
        .await;
    let mut requester = Client::connect(&nodes[0].url()).await;
    requester
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/service")
                .header("reply-to", "/temp-queue/answers")
                .body("question"),
        )
        .await;
    let request = next_message(&mut responder, ACROSS).await;
    let reply_to = request.get("reply-to").expect("reply-to").to_owned();
    let secret = reply_to
        .strip_prefix("/reply-queue/")
        .and_then(|rest| rest.strip_suffix(".answers"))
        .expect("/reply-queue/<node><secret>.answers");
    assert!(
        secret.len() >= 48 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{reply_to}"
    );

    // Someone on node 2 who knows the node mark but not the secret: the
    // forgery crosses to node 0 and is dropped there.
    let mut forger = Client::connect(&nodes[2].url()).await;
    let mut forged = secret.as_bytes().to_vec();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = format!(
        "/reply-queue/{}.answers",
        String::from_utf8(forged).expect("hex")
    );
    forger
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", &forged)
                .body("forged"),
            "f",
        )
        .await;
    // The genuine reply, from node 2 as well, after it: the first thing the
    // requester gets.
    forger
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", &reply_to)
                .body("from node 2"),
            "g",
        )
        .await;
    let reply = next_message(&mut requester, ACROSS).await;
    assert_eq!(body(&reply), "from node 2");
    assert_eq!(reply.get("subscription"), Some("/temp-queue/answers"));

    // The responder answers on node 1.
    responder
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", &reply_to)
                .body("answer"),
            "a",
        )
        .await;
    let reply = next_message(&mut requester, ACROSS).await;
    assert_eq!(body(&reply), "answer");
    assert_eq!(reply.get("subscription"), Some("/temp-queue/answers"));

    // A topic request works the same way across nodes.
    let mut listener = Client::connect(&nodes[2].url()).await;
    listener.subscribe_confirmed("t", "/topic/ask", "lt").await;
    // Wait until node 0 knows of node 2's subscriber: probes until one arrives.
    let deadline = tokio::time::Instant::now() + ACROSS;
    let reply_to = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "topic request never crossed"
        );
        requester
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/topic/ask")
                    .header("reply-to", "/temp-queue/topical")
                    .body("topic question"),
            )
            .await;
        if let Some(Event::Frame(frame)) = listener.event_within(Duration::from_millis(500)).await {
            break frame.get("reply-to").expect("reply-to").to_owned();
        }
    };
    // Without a receipt: the reply is passed on all the same (the
    // requester's node answers each one; it is sent again until then).
    listener
        .send(
            Frame::new(Command::Send)
                .header("destination", &reply_to)
                .body("topic answer"),
        )
        .await;
    let reply = next_message(&mut requester, ACROSS).await;
    assert_eq!(body(&reply), "topic answer");
    assert_eq!(reply.get("subscription"), Some("/temp-queue/topical"));
}
