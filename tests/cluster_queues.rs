//! Queues on JetStream: 3 nats-servers (JetStream R3, routed) and brokers
//! with `engine = "nats"`, real WebSocket STOMP clients on different nodes.
//! Competing consumers on different nodes get every message once between
//! them; NACK redelivers with `redelivered`; a retried SEND with the same
//! `message-id` is stored once; UNSUBSCRIBE hands unacked messages back at
//! once; receipted SENDs survive a kill -9 of the node that took them, and
//! the unacked messages of a killed consumer's node come back after
//! `ack_wait`; with the engine gone a persistent SEND gets ERROR; receipted
//! SENDs sent without waiting get their RECEIPTs in order.

mod common;

use common::cluster::NatsCluster;
use common::{test_config, BrokerProcess, Client, Event, TestBroker};
use std::collections::BTreeMap;
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

/// A broker on the engine `urls` with queue deliveries unacknowledged for
/// `ack_wait` redelivered.
async fn start_queue_node(urls: &[String], node: usize, ack_wait: Duration) -> TestBroker {
    common::start(queue_node_config(urls, node, ack_wait)).await
}

/// The configuration of [`start_queue_node`].
fn queue_node_config(urls: &[String], node: usize, ack_wait: Duration) -> stomphub::config::Config {
    let mut config = test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    let mut servers = urls.to_vec();
    servers.rotate_left(node % urls.len().max(1));
    config.cluster.servers = servers;
    config.cluster.node_name = format!("q{node}");
    config.cluster.replicas = urls.len().min(3);
    config.cluster.ack_wait = ack_wait;
    // A JetStream cluster just started on a busy machine may take a while
    // to elect the leader that creates the queue stream.
    config.cluster.connect_timeout = Duration::from_secs(30);
    config.queues.redelivery_delay = Duration::ZERO;
    config
}

fn send(destination: &str, body: &str, receipt: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("persistent", "true")
        .header("receipt", receipt)
        .body(body.to_owned())
}

/// The next frame within `limit`, skipping heart-beats.
async fn next_frame(client: &mut Client, limit: Duration) -> Frame {
    loop {
        match client.event_within(limit).await {
            Some(Event::Frame(frame)) => return frame,
            Some(Event::HeartBeat) => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

/// The next MESSAGE within `ACROSS`, skipping heart-beats; `None` if none.
async fn next_message(client: &mut Client, limit: Duration) -> Option<Frame> {
    loop {
        match client.event_within(limit).await? {
            Event::Frame(frame) => {
                assert_eq!(frame.command, Command::Message, "{frame:?}");
                return Some(frame);
            }
            Event::HeartBeat => continue,
            Event::Closed(code) => panic!("consumer closed: {code:?}"),
        }
    }
}

/// The next MESSAGE of either consumer: (which, frame).
async fn next_of(consumers: &mut [Client; 2]) -> (usize, Frame) {
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no message");
        for (index, consumer) in consumers.iter_mut().enumerate() {
            if let Some(frame) = next_message(consumer, Duration::from_millis(200)).await {
                return (index, frame);
            }
        }
    }
}

/// The next MESSAGE of either of two clients: (which, frame).
async fn next_of_pair(one: &mut Client, two: &mut Client) -> (usize, Frame) {
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no message");
        if let Some(frame) = next_message(one, Duration::from_millis(200)).await {
            return (0, frame);
        }
        if let Some(frame) = next_message(two, Duration::from_millis(200)).await {
            return (1, frame);
        }
    }
}

/// Receives from `consumers` (acking each) until `count` bodies arrived in
/// all, then a quiet second; returns how often each body arrived.
async fn collect(consumers: &mut [&mut Client], count: usize) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + ACROSS;
    while seen.values().sum::<usize>() < count {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {seen:?} of {count}"
        );
        for consumer in consumers.iter_mut() {
            if let Some(frame) = next_message(consumer, Duration::from_millis(200)).await {
                consumer.settle(&frame, false).await;
                *seen
                    .entry(String::from_utf8_lossy(&frame.body).into_owned())
                    .or_default() += 1;
            }
        }
    }
    for consumer in consumers.iter_mut() {
        consumer.expect_silence(Duration::from_secs(1)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_shared_by_every_node() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let mut nodes = Vec::new();
    for node in 0..3 {
        nodes.push(start_queue_node(&urls, node, Duration::from_secs(60)).await);
    }
    let url = |node: usize| nodes[node].url();

    // Competing consumers on nodes 1 and 2, a producer on node 0.
    let mut first = Client::connect(&url(1)).await;
    let mut second = Client::connect(&url(2)).await;
    for consumer in [&mut first, &mut second] {
        consumer
            .subscribe_with(
                "work",
                "/queue/jobs",
                &[("ack", "client-individual"), ("prefetch-count", "5")],
            )
            .await;
    }
    let mut producer = Client::connect(&url(0)).await;
    for n in 0..40 {
        producer
            .send_confirmed(
                send("/queue/jobs", &format!("job {n}"), &format!("r{n}")),
                &format!("r{n}"),
            )
            .await;
    }
    let seen = collect(&mut [&mut first, &mut second], 40).await;
    assert_eq!(seen.len(), 40, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "each once: {seen:?}");

    // A retried SEND with the same message-id, on another node, is stored once.
    let mut other_producer = Client::connect(&url(2)).await;
    for (client, receipt) in [(&mut producer, "d1"), (&mut other_producer, "d2")] {
        client
            .send_confirmed(
                send("/queue/jobs", "once", receipt).header("message-id", "m-1"),
                receipt,
            )
            .await;
    }
    let seen = collect(&mut [&mut first, &mut second], 1).await;
    assert_eq!(seen.get("once"), Some(&1), "{seen:?}");

    // ack:auto consumers on two nodes: each message once, none comes back.
    let mut auto_one = Client::connect(&url(1)).await;
    let mut auto_two = Client::connect(&url(2)).await;
    for consumer in [&mut auto_one, &mut auto_two] {
        consumer.subscribe_with("a", "/queue/auto", &[]).await;
    }
    for n in 0..10 {
        producer
            .send_confirmed(
                send("/queue/auto", &format!("auto {n}"), &format!("a{n}")),
                &format!("a{n}"),
            )
            .await;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    while seen.values().sum::<usize>() < 10 {
        let (got, frame) = next_of_pair(&mut auto_one, &mut auto_two).await;
        assert_eq!(frame.get("ack"), None, "auto: nothing to ack ({got})");
        *seen
            .entry(String::from_utf8_lossy(&frame.body).into_owned())
            .or_default() += 1;
    }
    assert_eq!(seen.len(), 10, "{seen:?}");
    auto_one.expect_silence(Duration::from_secs(1)).await;
    auto_two.expect_silence(Duration::from_secs(1)).await;

    // NACK: the message comes back, marked redelivered.
    producer
        .send_confirmed(send("/queue/jobs", "refused", "n1"), "n1")
        .await;
    let mut consumers = [first, second];
    let (got, frame) = next_of(&mut consumers).await;
    assert_eq!(frame.get("redelivered"), None, "{frame:?}");
    consumers[got].settle(&frame, true).await;
    let (got, again) = next_of(&mut consumers).await;
    assert_eq!(&again.body[..], b"refused");
    assert_eq!(again.get("redelivered"), Some("true"), "{again:?}");
    assert_eq!(again.get("x-delivery-count"), Some("1"), "{again:?}");
    consumers[got].settle(&again, false).await;
    let [_first, mut second] = consumers;

    // UNSUBSCRIBE hands unacked messages back at once (ack_wait is 60 s).
    second
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "work"), "u1")
        .await;
    let mut holder = Client::connect(&url(0)).await;
    holder
        .subscribe_with(
            "held",
            "/queue/held",
            &[("ack", "client"), ("prefetch-count", "3")],
        )
        .await;
    for n in 0..3 {
        producer
            .send_confirmed(
                send("/queue/held", &format!("held {n}"), &format!("h{n}")),
                &format!("h{n}"),
            )
            .await;
    }
    for _ in 0..3 {
        next_message(&mut holder, ACROSS)
            .await
            .expect("held message");
    }
    holder
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "held"), "u2")
        .await;
    let mut taker = Client::connect(&url(1)).await;
    taker
        .subscribe_with("take", "/queue/held", &[("ack", "client-individual")])
        .await;
    let seen = collect(&mut [&mut taker], 3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");

    // NACKed max_deliveries (5) times: to the dead-letter queue, as on one node.
    taker
        .subscribe_with("p", "/queue/poison", &[("ack", "client-individual")])
        .await;
    producer
        .send_confirmed(send("/queue/poison", "poison", "p1"), "p1")
        .await;
    for delivery in 1..=5 {
        let frame = next_message(&mut taker, ACROSS).await.expect("poison");
        assert_eq!(&frame.body[..], b"poison");
        let previous = (delivery > 1).then(|| (delivery - 1).to_string());
        assert_eq!(
            frame.get("x-delivery-count"),
            previous.as_deref(),
            "{frame:?}"
        );
        taker.settle(&frame, true).await;
    }
    let mut collector = Client::connect(&url(2)).await;
    collector
        .subscribe_with("dl", "/queue/poison.dlq", &[])
        .await;
    let dead = next_message(&mut collector, ACROSS)
        .await
        .expect("dead letter");
    assert_eq!(&dead.body[..], b"poison");
    assert_eq!(dead.get("x-dead-letter-reason"), Some("max-deliveries"));
    assert_eq!(dead.get("x-original-destination"), Some("/queue/poison"));
    assert_eq!(dead.get("x-deliveries"), Some("5"));
    taker.expect_silence(Duration::from_secs(1)).await;

    // A node shut down gracefully hands its unsettled deliveries back at
    // once (ack_wait is 60 s): a rolling restart delays them little.
    let mut leaving = Client::connect(&url(0)).await;
    leaving
        .subscribe_with(
            "r",
            "/queue/rolling",
            &[("ack", "client"), ("prefetch-count", "3")],
        )
        .await;
    for n in 0..3 {
        producer
            .send_confirmed(
                send("/queue/rolling", &format!("rolling {n}"), &format!("g{n}")),
                &format!("g{n}"),
            )
            .await;
    }
    for _ in 0..3 {
        next_message(&mut leaving, ACROSS)
            .await
            .expect("rolling message");
    }
    taker
        .subscribe_with("r", "/queue/rolling", &[("ack", "client-individual")])
        .await;
    nodes.remove(0).shutdown().await;
    let seen = collect(&mut [&mut taker], 3).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// A broker process on the engine (so that it can be killed with SIGKILL).
fn queue_process(urls: &[String], name: &str, dir: &std::path::Path) -> BrokerProcess {
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let config = format!(
        "[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"{name}\"\nack_wait = \"3s\"\nconnect_timeout = \"30s\"\n",
        servers.join(", ")
    );
    BrokerProcess::start(&config, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_a_node_is_killed() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let dirs: Vec<tempfile::TempDir> = (0..2)
        .map(|_| tempfile::tempdir().expect("temp dir"))
        .collect();
    let survivor = start_queue_node(&urls, 2, Duration::from_secs(3)).await;

    // Receipted persistent SENDs on a node that is then killed.
    let producer_node = queue_process(&urls, "p1", dirs[0].path());
    let mut producer = Client::connect(&producer_node.url).await;
    for n in 0..20 {
        producer
            .send_confirmed(
                send("/queue/kept", &format!("kept {n}"), &format!("k{n}")),
                &format!("k{n}"),
            )
            .await;
    }
    producer_node.kill();

    // A consumer on another node that takes 5 and acks none, then dies.
    let consumer_node = queue_process(&urls, "p2", dirs[1].path());
    let mut doomed = Client::connect(&consumer_node.url).await;
    doomed
        .subscribe_with(
            "d",
            "/queue/kept",
            &[("ack", "client"), ("prefetch-count", "5")],
        )
        .await;
    for _ in 0..5 {
        next_message(&mut doomed, ACROSS).await.expect("a message");
    }
    consumer_node.kill();

    // Every receipted message reaches a consumer on the surviving node; the
    // 5 the dead node held come back (after ack_wait, 3 s) redelivered.
    let mut consumer = Client::connect(&survivor.url()).await;
    consumer
        .subscribe_with(
            "s",
            "/queue/kept",
            &[("ack", "client-individual"), ("prefetch-count", "50")],
        )
        .await;
    let mut seen = BTreeMap::new();
    let mut redelivered = 0;
    while seen.len() < 20 {
        let frame = next_message(&mut consumer, ACROSS)
            .await
            .unwrap_or_else(|| panic!("only {seen:?}"));
        consumer.settle(&frame, false).await;
        if frame.get("redelivered") == Some("true") {
            redelivered += 1;
        }
        *seen
            .entry(String::from_utf8_lossy(&frame.body).into_owned())
            .or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    assert_eq!(redelivered, 5, "the dead node's 5 come back redelivered");
    consumer.expect_silence(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_send_the_engine_does_not_store_is_an_error() {
    let mut engine = NatsCluster::start(1);
    let mut config = queue_node_config(&engine.urls(), 0, Duration::from_secs(30));
    config.cluster.max_bytes = 4096;
    config.queues.rules.push(stomphub::config::QueueRule {
        pattern: "/queue/short".into(),
        prefetch: None,
        max_length: None,
        max_bytes: None,
        overflow: None,
        message_ttl: Some(Duration::from_millis(500)),
        max_deliveries: None,
        redelivery_delay: None,
        dead_letter: None,
    });
    let node = common::start(config).await;
    let mut client = Client::connect(&node.url()).await;
    client
        .send_confirmed(send("/queue/e", "stored", "ok"), "ok")
        .await;

    // The stream full: refused, not an older message dropped.
    let mut full = Client::connect(&node.url()).await;
    full.send(send("/queue/e", &"x".repeat(8192), "too-big"))
        .await;
    let error = next_frame(&mut full, ACROSS).await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert_eq!(error.get("receipt-id"), Some("too-big"), "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains("the message was not stored"), "{message}");
    let mut consumer = Client::connect(&node.url()).await;
    consumer
        .subscribe_with("c", "/queue/e", &[("ack", "client-individual")])
        .await;
    let kept = next_message(&mut consumer, ACROSS)
        .await
        .expect("the stored one");
    assert_eq!(&kept.body[..], b"stored");

    // A queue rule's message_ttl applies: an expired message is not delivered.
    client
        .send_confirmed(send("/queue/short", "stale", "s1"), "s1")
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    client
        .send_confirmed(
            send("/queue/short", "fresh", "s2").header("expiration", "60000"),
            "s2",
        )
        .await;
    consumer.subscribe_with("short", "/queue/short", &[]).await;
    let fresh = next_message(&mut consumer, ACROSS).await.expect("fresh");
    assert_eq!(&fresh.body[..], b"fresh", "the expired one is dropped");

    // The engine gone.
    engine.servers[0].kill();
    client.send(send("/queue/e", "not stored", "never")).await;
    // The engine's answer is waited for up to its request timeout (5 s).
    let error = next_frame(&mut client, ACROSS).await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains("the message was not stored"), "{message}");
    client.expect_close(CloseCode::Error).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_receipted_sends_get_their_receipts_in_order() {
    let engine = NatsCluster::start(1);
    let node = start_queue_node(&engine.urls(), 0, Duration::from_secs(30)).await;
    let mut producer = Client::connect(&node.url()).await;
    // 200 receipted persistent SENDs without waiting (more than fit in one
    // round trip), then a receipted SUBSCRIBE that must not overtake them.
    for n in 0..200 {
        producer
            .send(send(
                "/queue/pipelined",
                &format!("p {n}"),
                &format!("r{n}"),
            ))
            .await;
    }
    producer
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "none")
                .header("destination", "/topic/after")
                .header("receipt", "after"),
        )
        .await;
    for n in 0..200 {
        let receipt = next_frame(&mut producer, ACROSS).await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
        assert_eq!(
            receipt.get("receipt-id"),
            Some(format!("r{n}").as_str()),
            "RECEIPTs in SEND order"
        );
    }
    let after = next_frame(&mut producer, ACROSS).await;
    assert_eq!(after.get("receipt-id"), Some("after"), "{after:?}");

    let mut consumer = Client::connect(&node.url()).await;
    consumer
        .subscribe_with(
            "c",
            "/queue/pipelined",
            &[("ack", "client-individual"), ("prefetch-count", "50")],
        )
        .await;
    let seen = collect(&mut [&mut consumer], 200).await;
    assert_eq!(seen.len(), 200, "{seen:?}");
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
}
