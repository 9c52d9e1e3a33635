//! Durable subscriptions to a live-feed destination (one a
//! `[[topics.rules]]` rule names) on the cluster engine: made on one node,
//! resumed on another with what was published meanwhile, in order, each
//! MESSAGE with the `x-offset` and `x-epoch` every node gives it; deleted
//! with what it held. And the durable subscription caps counted on the
//! engine.

mod common;

use common::cluster::{next_message, start_node_configured, NatsCluster};
use common::{Client, TestBroker};
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use stomphub::config::{Retain, TopicRule};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

/// A node whose rule makes `/topic/score.*` a feed keeping 4 messages.
async fn node(urls: &[String], index: usize) -> TestBroker {
    start_node_configured(urls, index, |config| {
        config.topics.rules = vec![TopicRule {
            pattern: "/topic/score.*".into(),
            history: 4,
            history_age: None,
            retain: Retain::Last,
            persistent: false,
        }];
        config.limits.max_durable_subscriptions = 3;
        config.limits.max_durable_subscriptions_per_connection = 2;
    })
    .await
}

/// Three such nodes.
async fn three_nodes(urls: &[String]) -> [TestBroker; 3] {
    [
        node(urls, 0).await,
        node(urls, 1).await,
        node(urls, 2).await,
    ]
}

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

fn offset(frame: &Frame) -> u64 {
    frame
        .get("x-offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no x-offset: {frame:?}"))
}

/// Publishes `bodies` to `destination`, each with a receipt: a receipted
/// feed SEND is stored by the engine before its RECEIPT.
async fn publish_stored(client: &mut Client, destination: &str, bodies: &[String]) {
    for (n, text) in bodies.iter().enumerate() {
        let send = Frame::new(Command::Send)
            .header("destination", destination)
            .body(text.clone());
        client.send_confirmed(send, &format!("p-{text}-{n}")).await;
    }
}

/// `count` MESSAGEs, each acknowledged (client-individual).
async fn take(client: &mut Client, count: usize) -> Vec<Frame> {
    let mut got = Vec::new();
    for _ in 0..count {
        let frame = next_message(client, ACROSS).await;
        client.settle(&frame, false).await;
        got.push(frame);
    }
    got
}

const DURABLE: &[(&str, &str)] = &[
    ("durable-subscription-name", "board"),
    ("ack", "client-individual"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_feed_subscription_resumes_on_another_node_with_offsets_and_epoch() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let nodes = three_nodes(&urls).await;
    let game = "/topic/score.g1";
    let mut publisher = Client::connect(&nodes[2].url()).await;
    // A plain subscriber on node 1: the offsets and epoch every node gives.
    let mut watcher = Client::connect(&nodes[1].url()).await;
    watcher.subscribe("w", game).await;

    let mut fan = Client::connect_as(&nodes[0].url(), "fan").await;
    fan.subscribe_with("s1", game, DURABLE).await;
    let live: Vec<String> = (0..3).map(|n| format!("live{n}")).collect();
    publish_stored(&mut publisher, game, &live).await;
    let got = take(&mut fan, 3).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), live);
    fan.send(Frame::new(Command::Disconnect)).await;
    drop(fan);

    // Away: more than the rule's history of 4 (the durable subscription
    // keeps what it has not acknowledged, not just the history).
    let away: Vec<String> = (0..10).map(|n| format!("away{n}")).collect();
    publish_stored(&mut publisher, game, &away).await;
    let watched: Vec<Frame> = {
        let mut all = Vec::new();
        for _ in 0..13 {
            all.push(next_message(&mut watcher, ACROSS).await);
        }
        all
    };
    assert_eq!(
        watched.iter().map(body).collect::<Vec<_>>(),
        live.iter().chain(&away).cloned().collect::<Vec<_>>()
    );

    // Back on another node: the ten, in order, with the watcher's offsets
    // and epoch; then live.
    let mut fan = Client::connect_as(&nodes[1].url(), "fan").await;
    fan.subscribe_with("s1", game, DURABLE).await;
    let back = take(&mut fan, 10).await;
    assert_eq!(back.iter().map(body).collect::<Vec<_>>(), away);
    for (durable, plain) in back.iter().zip(&watched[3..]) {
        assert_eq!(offset(durable), offset(plain), "{durable:?}");
        assert_eq!(durable.get("x-epoch"), plain.get("x-epoch"));
        assert!(plain.get("x-epoch").is_some_and(|e| !e.is_empty()));
        assert_eq!(durable.get("destination"), Some(game));
    }
    publish_stored(&mut publisher, game, &["then".to_owned()]).await;
    let then = take(&mut fan, 1).await;
    assert_eq!(body(&then[0]), "then");
    assert!(offset(&then[0]) > offset(&back[9]));

    // Deleted with what it held: a new one gets nothing published before it.
    let unsubscribe = Frame::new(Command::Unsubscribe)
        .header("id", "s1")
        .header("durable-subscription-name", "board");
    fan.send_confirmed(unsubscribe, "gone").await;
    publish_stored(&mut publisher, game, &["dropped".to_owned()]).await;
    fan.subscribe_with("s2", game, DURABLE).await;
    publish_stored(&mut publisher, game, &["fresh".to_owned()]).await;
    let fresh = take(&mut fan, 1).await;
    assert_eq!(body(&fresh[0]), "fresh");
    fan.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_subscription_caps_count_on_the_engine() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let nodes = [node(&urls, 0).await, node(&urls, 1).await];
    // Two on one connection (one on a feed, one on a plain topic) is the
    // per-connection cap.
    let mut first = Client::connect_as(&nodes[0].url(), "first").await;
    first
        .subscribe_with(
            "a",
            "/topic/score.g1",
            &[("durable-subscription-name", "a")],
        )
        .await;
    first
        .subscribe_with("b", "/topic/news", &[("durable-subscription-name", "b")])
        .await;
    first
        .send_subscribe("c", "/topic/news2", &[("durable-subscription-name", "c")])
        .await;
    first
        .expect_error(
            "max_durable_subscriptions_per_connection is 2",
            CloseCode::Policy,
        )
        .await;
    // The two stay (a closed connection detaches them): with one more on
    // node 1 that makes 3, the cluster's cap; a fourth on any node is
    // refused, and a resumed one is not a new one.
    let mut second = Client::connect_as(&nodes[1].url(), "second").await;
    second
        .subscribe_with("d", "/topic/news", &[("durable-subscription-name", "d")])
        .await;
    let mut third = Client::connect_as(&nodes[0].url(), "third").await;
    third
        .send_subscribe("e", "/topic/news", &[("durable-subscription-name", "e")])
        .await;
    third
        .expect_error("max_durable_subscriptions is 3", CloseCode::Policy)
        .await;
    let mut again = Client::connect_as(&nodes[1].url(), "first").await;
    again
        .subscribe_with(
            "a",
            "/topic/score.g1",
            &[("durable-subscription-name", "a")],
        )
        .await;
}

/// Publishes `body` to `destination` with `x-retain:true`, receipted.
async fn publish_retained(client: &mut Client, destination: &str, body: &str) {
    let send = Frame::new(Command::Send)
        .header("destination", destination)
        .header("x-retain", "true")
        .body(body.to_owned());
    client.send_confirmed(send, &format!("x-{body}")).await;
}

/// MESSAGEs up to and including the one with body `last`, acknowledged.
async fn until(client: &mut Client, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let frame = next_message(client, ACROSS).await;
        client.settle(&frame, false).await;
        seen.push(body(&frame));
        if body(&frame) == last {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_and_retained_durable_subscriptions_keep_feed_messages_across_nodes() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let nodes = three_nodes(&urls).await;
    let mut publisher = Client::connect(&nodes[2].url()).await;
    // A wildcard over feed destinations (the rule's), and one destination
    // made a feed by x-retain alone.
    let all_games: &[(&str, &str)] = &[
        ("durable-subscription-name", "all"),
        ("ack", "client-individual"),
    ];
    let flash: &[(&str, &str)] = &[
        ("durable-subscription-name", "flash"),
        ("ack", "client-individual"),
    ];
    let mut fan = Client::connect_as(&nodes[0].url(), "fan").await;
    fan.subscribe_with("all", "/topic/score.*", all_games).await;
    fan.subscribe_with("flash", "/topic/flash", flash).await;
    fan.send(Frame::new(Command::Disconnect)).await;
    drop(fan);

    // Away: feed messages to two games and a retained value.
    publish_stored(&mut publisher, "/topic/score.g1", &["g1-a".to_owned()]).await;
    publish_stored(&mut publisher, "/topic/score.g2", &["g2-a".to_owned()]).await;
    publish_stored(&mut publisher, "/topic/score.g1", &["g1-b".to_owned()]).await;
    publish_retained(&mut publisher, "/topic/flash", "breaking").await;

    // Back on another node: everything kept, in order; a marker published
    // after the resume proves the copies before it have arrived.
    let mut fan = Client::connect_as(&nodes[1].url(), "fan").await;
    fan.subscribe_with("all", "/topic/score.*", all_games).await;
    publish_stored(&mut publisher, "/topic/score.g3", &["marker".to_owned()]).await;
    assert_eq!(
        until(&mut fan, "marker").await,
        ["g1-a", "g2-a", "g1-b", "marker"]
    );
    fan.subscribe_with("flash", "/topic/flash", flash).await;
    publish_retained(&mut publisher, "/topic/flash", "later").await;
    assert_eq!(until(&mut fan, "later").await, ["breaking", "later"]);
}
