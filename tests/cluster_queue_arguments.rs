//! Queue arguments on the cluster engine, as on one node: the
//! `x-message-ttl` and `x-dead-letter-routing-key` of the frame that
//! created a queue hold for every node (they are kept in the queue's
//! JetStream consumer), and a later SUBSCRIBE's arguments do not change
//! them. A queue's consumer deleted in the engine under a subscriber is
//! made again by it. One nats-server, brokers in the test process.

mod common;

use common::cluster::{next_message, NatsCluster};
use common::{test_config, Client, TestBroker};
use std::time::Duration;
use stomp_protocol::{Command, Frame};

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

async fn node(urls: &[String], node: usize) -> TestBroker {
    let mut config = test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = urls.to_vec();
    config.cluster.node_name = format!("a{node}");
    config.cluster.replicas = 1;
    config.cluster.connect_timeout = Duration::from_secs(30);
    config.queues.redelivery_delay = Duration::ZERO;
    common::start(config).await
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("persistent", "true")
        .body(body.to_owned())
}

async fn unsubscribe(client: &mut Client, id: &str) {
    client
        .send_confirmed(
            Frame::new(Command::Unsubscribe).header("id", id),
            &format!("u-{id}"),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_arguments_of_the_frame_that_created_a_queue_hold_on_every_node() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [
        node(&urls, 0).await,
        node(&urls, 1).await,
        node(&urls, 2).await,
    ];
    let mut first = Client::connect(&nodes[0].url()).await;
    let mut producer = Client::connect(&nodes[1].url()).await;

    // Node 0's SUBSCRIBE creates /queue/ttl with x-message-ttl 500 ms.
    first
        .subscribe_with("t", "/queue/ttl", &[("x-message-ttl", "500")])
        .await;
    unsubscribe(&mut first, "t").await;
    // Node 1's SEND without an expiry gets the queue's 500 ms.
    producer
        .send_confirmed(send("/queue/ttl", "stale"), "s1")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    producer
        .send_confirmed(
            send("/queue/ttl", "fresh").header("expiration", "60000"),
            "s2",
        )
        .await;
    // A later SUBSCRIBE (node 1) with another x-message-ttl changes nothing.
    let mut second = Client::connect(&nodes[1].url()).await;
    second
        .subscribe_with("t", "/queue/ttl", &[("x-message-ttl", "600000")])
        .await;
    let fresh = next_message(&mut second, ACROSS).await;
    assert_eq!(&fresh.body[..], b"fresh", "the expired one is dropped");
    second.expect_silence(Duration::from_millis(500)).await;
    unsubscribe(&mut second, "t").await;
    // Node 2, which has not seen the queue, reads its definition: 500 ms.
    let mut late = Client::connect(&nodes[2].url()).await;
    late.send_confirmed(send("/queue/ttl", "stale again"), "s3")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    late.send_confirmed(
        send("/queue/ttl", "fresh again").header("expiration", "60000"),
        "s4",
    )
    .await;
    first.subscribe_with("t2", "/queue/ttl", &[]).await;
    let fresh = next_message(&mut first, ACROSS).await;
    assert_eq!(&fresh.body[..], b"fresh again", "node 2 applied the 500 ms");
    first.expect_silence(Duration::from_millis(500)).await;

    // x-dead-letter-routing-key on the creating SUBSCRIBE: after
    // max_deliveries (5) NACKs the message goes to /queue/failed.
    first
        .subscribe_with(
            "p",
            "/queue/fragile",
            &[
                ("ack", "client-individual"),
                ("x-dead-letter-routing-key", "failed"),
            ],
        )
        .await;
    producer
        .send_confirmed(send("/queue/fragile", "poison"), "p1")
        .await;
    for _ in 0..5 {
        let frame = next_message(&mut first, ACROSS).await;
        assert_eq!(&frame.body[..], b"poison");
        first.settle(&frame, true).await;
    }
    let mut collector = Client::connect(&nodes[2].url()).await;
    collector.subscribe_with("f", "/queue/failed", &[]).await;
    let dead = next_message(&mut collector, ACROSS).await;
    assert_eq!(&dead.body[..], b"poison");
    assert_eq!(dead.get("x-dead-letter-reason"), Some("max-deliveries"));
    assert_eq!(dead.get("x-original-destination"), Some("/queue/fragile"));
    first.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_consumer_lost_in_the_engine_is_made_again_by_its_subscribers() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let broker = node(&urls, 0).await;
    let mut consumer = Client::connect(&broker.url()).await;
    consumer
        .subscribe_with("c", "/queue/kept", &[("ack", "client-individual")])
        .await;
    let mut producer = Client::connect(&broker.url()).await;
    producer
        .send_confirmed(send("/queue/kept", "before"), "b")
        .await;
    let before = next_message(&mut consumer, ACROSS).await;
    assert_eq!(&before.body[..], b"before");
    consumer.settle(&before, false).await;

    // The queue's JetStream consumer deleted behind the brokers' backs (an
    // operator, a store lost): the subscription's pulls fail until its
    // task makes the consumer again.
    let client = async_nats::connect(urls[0].as_str())
        .await
        .expect("nats connects");
    let stream = async_nats::jetstream::new(client)
        .get_stream(common::cluster::QUEUE_STREAM)
        .await
        .expect("the queue stream");
    assert!(
        stream
            .delete_consumer("q-kept")
            .await
            .expect("deleted")
            .success
    );
    producer
        .send_confirmed(send("/queue/kept", "after"), "a")
        .await;
    let after = next_message(&mut consumer, ACROSS).await;
    assert_eq!(&after.body[..], b"after");
}
