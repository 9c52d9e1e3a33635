//! The cluster engine's queues in the admin API and the metrics: one
//! nats-server and two brokers with `engine = "nats"`. Every node shows a
//! queue with the engine's counts (what waits, what is delivered and not
//! acknowledged on any node) and its own subscribers of it; the node that
//! delivers counts the deliveries in `messages_delivered_total`.

mod common;

use common::cluster::{http_get, start_node, NatsCluster};
use common::{Client, TestBroker};
use serde_json::Value;
use std::time::Duration;
use stomp_protocol::{Command, Frame};

/// Bound on every wait for the nodes' readings to agree.
const ACROSS: Duration = Duration::from_secs(30);
const QUEUE: &str = "/queue/stats.a";

/// The admin listener's port of `broker`.
fn admin(broker: &TestBroker) -> u16 {
    broker.admin_addr().expect("admin listener").port()
}

/// `QUEUE` in `GET /api/queues` of `port`, if listed.
fn listed(port: u16) -> Option<Value> {
    listed_as(port, QUEUE)
}

/// Queue `name` in `GET /api/queues` of `port`, if listed.
fn listed_as(port: u16, name: &str) -> Option<Value> {
    let (status, body) = http_get(port, "/api/queues").expect("admin answers");
    assert_eq!(status, 200, "{body}");
    let document: Value = serde_json::from_str(&body).expect("JSON");
    document["queues"]
        .as_array()?
        .iter()
        .find(|q| q["name"] == name)
        .cloned()
}

/// The value of the metrics sample whose line starts with `series`.
fn sample(port: u16, series: &str) -> Option<f64> {
    let (status, metrics) = http_get(port, "/metrics").expect("admin answers");
    assert_eq!(status, 200);
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls until `check` holds for `port`'s listing of `QUEUE` (the engine
/// is read at most every few seconds), panicking after [`ACROSS`].
async fn until_listed(port: u16, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        let queue = listed(port);
        if let Some(queue) = queue.as_ref().filter(|q| check(q)) {
            return queue.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {ACROSS:?}, last {queue:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_shows_the_engines_queues_and_counts_its_own_deliveries() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [start_node(&urls, 0).await, start_node(&urls, 1).await];
    let ports = [admin(&nodes[0]), admin(&nodes[1])];

    let mut producer = Client::connect(&nodes[0].url()).await;
    for n in 0..5 {
        let receipt = format!("r{n}");
        producer
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", QUEUE)
                    .body(format!("m{n}")),
                &receipt,
            )
            .await;
    }
    // Waiting in the engine: both nodes show it, neither has a subscriber.
    for port in ports {
        let queue = until_listed(port, "5 waiting", |q| q["depth"] == 5).await;
        assert_eq!(queue["unacked"], 0, "{queue}");
        assert_eq!(queue["consumers"], 0, "{queue}");
        assert_eq!(queue["engine"]["pending"], 5, "{queue}");
    }

    // A client-ack subscriber on node 2 holds 2 (its prefetch).
    let mut consumer = Client::connect(&nodes[1].url()).await;
    consumer
        .subscribe_with(
            "s",
            QUEUE,
            &[("ack", "client-individual"), ("prefetch-count", "2")],
        )
        .await;
    for _ in 0..2 {
        consumer.message().await;
    }
    let queue = until_listed(ports[1], "2 held on node 2", |q| {
        q["depth"] == 3 && q["unacked"] == 2 && q["consumers"] == 1
    })
    .await;
    assert_eq!(queue["engine"]["local_consumers"], 1, "{queue}");
    // Node 1 sees the same engine counts, and no subscriber of its own.
    until_listed(ports[0], "2 held, seen from node 1", |q| {
        q["depth"] == 3 && q["unacked"] == 2 && q["consumers"] == 0
    })
    .await;

    // In the metrics: the queue's gauges on both nodes, the deliveries on
    // the node that made them only.
    let gauges = [
        ("stomphub_queue_messages{class=\"other\"}", 3.0),
        ("stomphub_queue_unacked{class=\"other\"}", 2.0),
    ];
    for port in ports {
        for (series, value) in gauges {
            assert_eq!(sample(port, series), Some(value), "{series} on {port}");
        }
    }
    let delivered = "stomphub_messages_delivered_total{class=\"other\"}";
    assert_eq!(sample(ports[1], delivered), Some(2.0));
    assert_eq!(sample(ports[0], delivered), Some(0.0));
    assert_eq!(
        sample(ports[1], "stomphub_queue_consumers{class=\"other\"}"),
        Some(1.0)
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_bounds_of_its_own_is_listed_too() {
    // `x-max-length` gives the queue a stream of its own on the engine.
    const BOUNDED: &str = "/queue/stats.bounded";
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [start_node(&urls, 0).await, start_node(&urls, 1).await];
    let mut producer = Client::connect(&nodes[0].url()).await;
    for n in 0..3 {
        let receipt = format!("r{n}");
        producer
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", BOUNDED)
                    .header("x-max-length", "10")
                    .body(format!("m{n}")),
                &receipt,
            )
            .await;
    }
    for node in &nodes {
        let port = admin(node);
        let deadline = tokio::time::Instant::now() + ACROSS;
        loop {
            let queue = listed_as(port, BOUNDED);
            if queue.as_ref().is_some_and(|q| q["depth"] == 3) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{BOUNDED} with 3 waiting not listed on {port} within {ACROSS:?}: {queue:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    for node in nodes {
        node.shutdown().await;
    }
}
