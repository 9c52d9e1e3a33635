//! Topics across nodes: 3 nats-servers (JetStream, routed) and 3 brokers
//! with `engine = "nats"`, real WebSocket STOMP clients spread over the
//! nodes. A publish on any node reaches every matching subscriber on every
//! node once, in its publisher's order; NATS interest follows local
//! subscriptions; names NATS cannot hold travel encoded; `/readyz` follows
//! the engine.

mod common;

use common::cluster::{http_get, start_node, NatsCluster};
use common::{subscribe_frame, Client, Event, TestBroker};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

/// A publication a test sends: `x-pub` names the publisher, `x-seq` its
/// number (`ping` while interest spreads).
fn publication(destination: &str, publisher: &str, seq: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("x-pub", publisher)
        .header("x-seq", seq)
        .body(format!("{publisher} {seq}"))
}

/// What a subscriber connection got: per (subscription, publisher), the
/// sequence numbers in arrival order, and which pings arrived.
#[derive(Default)]
struct Received {
    numbered: BTreeMap<(String, String), Vec<u64>>,
    pinged: BTreeSet<(String, String)>,
}

impl Received {
    fn record(&mut self, frame: &Frame) {
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        let subscription = frame.get("subscription").expect("subscription").to_owned();
        let publisher = frame.get("x-pub").expect("x-pub").to_owned();
        match frame.get("x-seq").expect("x-seq") {
            "ping" => {
                self.pinged.insert((subscription, publisher));
            }
            seq => self
                .numbered
                .entry((subscription, publisher))
                .or_default()
                .push(seq.parse().expect("a number")),
        }
    }
}

/// Reads whatever `client` has within `limit` into `received`.
async fn drain(client: &mut Client, received: &mut Received, limit: Duration) {
    while let Some(event) = client.event_within(limit).await {
        match event {
            Event::Frame(frame) => {
                received.record(&frame);
                // Client-ack deliveries are settled, so that none waits
                // for room under the prefetch bound.
                if frame.get("ack").is_some() {
                    client.settle(&frame, false).await;
                }
            }
            Event::HeartBeat => {}
            Event::Closed(code) => panic!("subscriber closed: {code:?}"),
        }
    }
}

/// Publishes pings from every publisher to every destination until every
/// (subscriber, subscription, publisher) in `expected` has had one: NATS
/// interest spreads between servers asynchronously, after the SUBSCRIBE's
/// RECEIPT.
async fn spread_interest(
    publishers: &mut [(String, Client)],
    destinations: &[&str],
    subscribers: &mut [Client],
    received: &mut [Received],
    expected: &[BTreeSet<(String, String)>],
) {
    let started = Instant::now();
    loop {
        for (name, publisher) in publishers.iter_mut() {
            for destination in destinations {
                publisher.send(publication(destination, name, "ping")).await;
            }
        }
        for (subscriber, received) in subscribers.iter_mut().zip(received.iter_mut()) {
            drain(subscriber, received, Duration::from_millis(100)).await;
        }
        let missing: Vec<_> = received
            .iter()
            .zip(expected)
            .map(|(received, expected)| expected.difference(&received.pinged).count())
            .collect();
        if missing.iter().all(|&m| m == 0) {
            return;
        }
        assert!(
            started.elapsed() < ACROSS,
            "interest did not spread within {ACROSS:?}: missing pings per subscriber {missing:?}"
        );
    }
}

async fn nodes(engine: &NatsCluster, count: usize) -> Vec<TestBroker> {
    let mut brokers = Vec::with_capacity(count);
    for node in 0..count {
        brokers.push(start_node(&engine.urls(), node).await);
    }
    brokers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_any_node_reaches_every_matching_subscriber_once_in_order() {
    let engine = NatsCluster::start(3);
    let brokers = nodes(&engine, 3).await;

    // Per node one subscriber connection with overlapping patterns: the
    // engine hears `cl.prices.eur` on several of the node's subjects, and
    // each subscription must still get it once.
    let patterns = [
        ("exact", "/topic/cl.prices.eur"),
        ("one", "/topic/cl.prices.*"),
        ("all", "/topic/cl.#"),
        ("zero", "/topic/cl.prices.#"),
        ("middle", "/topic/cl.#.eur"),
    ];
    // Which subscriptions each destination reaches.
    let reaches = |destination: &str| -> Vec<&str> {
        match destination {
            "/topic/cl.prices.eur" => vec!["exact", "one", "all", "zero", "middle"],
            "/topic/cl.prices" => vec!["all", "zero"],
            other => panic!("{other}"),
        }
    };
    let mut subscribers = Vec::new();
    for broker in &brokers {
        let mut client = Client::connect(&broker.url()).await;
        for (id, pattern) in patterns {
            client.subscribe(id, pattern).await;
        }
        subscribers.push(client);
    }
    // Publishers on two nodes, one of them with a subscriber beside it.
    let mut publishers = vec![
        ("p0".to_owned(), Client::connect(&brokers[0].url()).await),
        ("p1".to_owned(), Client::connect(&brokers[1].url()).await),
    ];
    let destinations = ["/topic/cl.prices.eur", "/topic/cl.prices"];
    let every: BTreeSet<(String, String)> = patterns
        .iter()
        .flat_map(|(id, _)| ["p0", "p1"].map(|p| (id.to_string(), p.to_owned())))
        .collect();
    let expected = vec![every.clone(), every.clone(), every];
    let mut received: Vec<Received> = (0..3).map(|_| Received::default()).collect();
    spread_interest(
        &mut publishers,
        &destinations,
        &mut subscribers,
        &mut received,
        &expected,
    )
    .await;

    // Numbered messages, alternating between the destination and its
    // parent (the zero-word case of `cl.prices.#`).
    const COUNT: u64 = 200;
    let mut wanted: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for n in 0..COUNT {
        let destination = destinations[(n % 2) as usize];
        for (name, publisher) in publishers.iter_mut() {
            publisher
                .send(publication(destination, name, &n.to_string()))
                .await;
            for id in reaches(destination) {
                wanted
                    .entry((id.to_owned(), name.clone()))
                    .or_default()
                    .push(n);
            }
        }
    }
    let total: usize = wanted.values().map(Vec::len).sum();
    for (node, (subscriber, received)) in subscribers.iter_mut().zip(&mut received).enumerate() {
        let started = Instant::now();
        while received.numbered.values().map(Vec::len).sum::<usize>() < total {
            assert!(
                started.elapsed() < ACROSS,
                "node {node}: {} of {total} messages within {ACROSS:?}",
                received.numbered.values().map(Vec::len).sum::<usize>()
            );
            drain(subscriber, received, Duration::from_millis(200)).await;
        }
        // Nothing more: no copy through a second engine subscription, no
        // echo of a node's own publications.
        drain(subscriber, received, Duration::from_millis(500)).await;
        assert_eq!(
            received.numbered, wanted,
            "node {node}: every message once, in each publisher's order"
        );
    }
    for broker in brokers {
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_names_nats_cannot_hold_cross_nodes() {
    let engine = NatsCluster::start(3);
    let brokers = nodes(&engine, 2).await;
    let odd = "/topic/we ird.a>b.x_y.é.>";
    let mut subscriber = Client::connect(&brokers[1].url()).await;
    subscriber.subscribe("exact", odd).await;
    subscriber.subscribe("wild", "/topic/we ird.#").await;
    let mut publishers = vec![("p".to_owned(), Client::connect(&brokers[0].url()).await)];
    let mut subscribers = vec![subscriber];
    let mut received = vec![Received::default()];
    let expected = vec![[("exact", "p"), ("wild", "p")]
        .map(|(s, p)| (s.to_owned(), p.to_owned()))
        .into_iter()
        .collect()];
    spread_interest(
        &mut publishers,
        &[odd],
        &mut subscribers,
        &mut received,
        &expected,
    )
    .await;
    publishers[0].1.send(publication(odd, "p", "1")).await;
    // The MESSAGE names the destination exactly as it was sent.
    let message = loop {
        let frame = subscribers[0].message().await;
        if frame.get("x-seq") == Some("1") {
            break frame;
        }
    };
    assert_eq!(message.get("destination"), Some(odd));
    assert_eq!(message.body, b"p 1".to_vec());
    for broker in brokers {
        broker.shutdown().await;
    }
}

/// The subjects node b0's topic connection subscribes, but the one reply
/// inbox of its interest probes (a SUBSCRIBE's RECEIPT waits for a round
/// trip to the server), of which there is at most one.
fn topic_subscriptions(engine: &NatsCluster) -> Vec<String> {
    let (inboxes, subjects): (Vec<String>, Vec<String>) = engine
        .subscriptions_of("stomphub b0")
        .into_iter()
        .partition(|subject| subject.starts_with("_INBOX."));
    assert!(inboxes.len() <= 1, "one reply inbox at most: {inboxes:?}");
    subjects
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_hears_only_the_patterns_local_subscribers_use() {
    let engine = NatsCluster::start(1);
    let broker = start_node(&engine.urls(), 0).await;
    let subject = "stomphub.topic.cu.a.*.__".to_owned();
    let wait_for = |present: bool| {
        let started = Instant::now();
        loop {
            let subjects = topic_subscriptions(&engine);
            if subjects.contains(&subject) == present {
                return subjects;
            }
            assert!(
                started.elapsed() < ACROSS,
                "{subject} present={present} expected, have {subjects:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(wait_for(false).is_empty(), "no subscriber, no interest");

    // Two subscriptions of one pattern: one engine subscription, kept
    // until the last goes.
    let mut first = Client::connect(&broker.url()).await;
    let mut second = Client::connect(&broker.url()).await;
    first.subscribe("s", "/topic/cu.a.*").await;
    second.subscribe("s", "/topic/cu.a.*").await;
    let subjects = wait_for(true);
    assert_eq!(subjects, vec![subject.clone()], "one engine subscription");
    first
        .send_confirmed(
            Frame::new(Command::Unsubscribe).header("id", "s"),
            "unsub-1",
        )
        .await;
    // Still wanted by the second: give a wrong removal time to show.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(topic_subscriptions(&engine), vec![subject.clone()]);
    second
        .send_confirmed(
            Frame::new(Command::Unsubscribe).header("id", "s"),
            "unsub-2",
        )
        .await;
    wait_for(false);

    // A connection that goes takes its interest with it.
    let mut third = Client::connect(&broker.url()).await;
    third
        .send_confirmed(subscribe_frame("t", "/topic/cu.a.*", &[]), "sub-t")
        .await;
    wait_for(true);
    drop(third);
    wait_for(false);
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_engine_and_topics_flow_again_after_it_returns() {
    let mut engine = NatsCluster::start(1);
    let brokers = nodes(&engine, 2).await;
    let admins: Vec<u16> = brokers
        .iter()
        .map(|b| b.admin_addr().expect("admin listener").port())
        .collect();
    let wait_until = |port: u16, status: u16| {
        let started = Instant::now();
        loop {
            let (got, body) = http_get(port, "/readyz").expect("admin answers");
            if got == status {
                return body;
            }
            assert!(
                started.elapsed() < ACROSS,
                "/readyz still {got} {body}, not {status}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for &port in &admins {
        wait_until(port, 200);
    }
    let mut publishers = vec![("p".to_owned(), Client::connect(&brokers[0].url()).await)];
    let mut subscriber = Client::connect(&brokers[1].url()).await;
    subscriber.subscribe("s", "/topic/back.#").await;
    let mut subscribers = vec![subscriber];
    let expected = vec![BTreeSet::from([("s".to_owned(), "p".to_owned())])];
    let mut received = vec![Received::default()];
    spread_interest(
        &mut publishers,
        &["/topic/back.x"],
        &mut subscribers,
        &mut received,
        &expected,
    )
    .await;

    engine.servers[0].kill();
    for &port in &admins {
        let body = wait_until(port, 503);
        assert!(body.contains("cluster engine"), "{body}");
    }

    // Back: the nodes reconnect and subscribe again by themselves.
    engine.servers[0].restart();
    for &port in &admins {
        wait_until(port, 200);
    }
    drain(
        &mut subscribers[0],
        &mut received[0],
        Duration::from_millis(100),
    )
    .await;
    received[0].pinged.clear();
    spread_interest(
        &mut publishers,
        &["/topic/back.x"],
        &mut subscribers,
        &mut received,
        &expected,
    )
    .await;
    for broker in brokers {
        broker.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ack_topic_subscriptions_hear_other_nodes_once_each_in_order() {
    let engine = NatsCluster::start(1);
    let brokers = nodes(&engine, 2).await;
    // Two client-ack subscriptions of one connection whose engine subjects
    // both hear `ca.x`, and an auto-ack one beside them.
    let mut subscriber = Client::connect(&brokers[1].url()).await;
    for (id, pattern, ack) in [
        ("first", "/topic/ca.*", "client-individual"),
        ("second", "/topic/*.x", "client"),
        ("plain", "/topic/ca.#", "auto"),
    ] {
        subscriber
            .subscribe_with(id, pattern, &[("ack", ack)])
            .await;
    }
    let mut publishers = vec![("p".to_owned(), Client::connect(&brokers[0].url()).await)];
    let mut subscribers = vec![subscriber];
    let mut received = vec![Received::default()];
    let expected = vec![["first", "second", "plain"]
        .map(|s| (s.to_owned(), "p".to_owned()))
        .into_iter()
        .collect()];
    spread_interest(
        &mut publishers,
        &["/topic/ca.x"],
        &mut subscribers,
        &mut received,
        &expected,
    )
    .await;
    const COUNT: u64 = 50;
    for n in 0..COUNT {
        publishers[0]
            .1
            .send(publication("/topic/ca.x", "p", &n.to_string()))
            .await;
    }
    let subscriber = &mut subscribers[0];
    let mut numbered: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let started = Instant::now();
    while numbered.values().map(Vec::len).sum::<usize>() < 3 * COUNT as usize {
        assert!(started.elapsed() < ACROSS, "only {numbered:?}");
        let frame = subscriber.message().await;
        let id = frame.get("subscription").expect("subscription").to_owned();
        if id != "plain" {
            // Client-ack deliveries carry an ack id, and are settled.
            subscriber.settle(&frame, false).await;
        }
        if let Ok(n) = frame.get("x-seq").expect("x-seq").parse::<u64>() {
            numbered.entry(id).or_default().push(n);
        }
    }
    subscriber.expect_silence(Duration::from_millis(500)).await;
    let all: Vec<u64> = (0..COUNT).collect();
    for id in ["first", "second", "plain"] {
        assert_eq!(numbered.get(id), Some(&all), "{id}: once each, in order");
    }
    for broker in brokers {
        broker.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_that_cannot_reach_the_engine_does_not_start_and_says_why() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("bound")
        .port();
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = common::test_config();
    config.storage.data_dir = data.path().to_path_buf();
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = vec![format!("nats://127.0.0.1:{port}")];
    config.cluster.connect_timeout = Duration::from_secs(2);
    let error = match stomphub::Broker::start(config).await {
        Ok(_) => panic!("started without its engine"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("cluster.servers"), "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
}

/// Messages from other nodes pushed to a node's auto-ack subscribers are in
/// that node's `stomphub_messages_delivered_total` (no local publisher's
/// connection counts them), and nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiving_node_counts_what_it_delivers_from_other_nodes() {
    let engine = NatsCluster::start(1);
    let brokers = nodes(&engine, 2).await;
    let mut subscriber = Client::connect(&brokers[1].url()).await;
    subscriber
        .subscribe_confirmed("s", "/topic/counted.a", "subscribed")
        .await;
    let mut publisher = Client::connect(&brokers[0].url()).await;
    for n in 0..5 {
        let seq = n.to_string();
        publisher
            .send_confirmed(publication("/topic/counted.a", "p", &seq), &seq)
            .await;
    }
    for _ in 0..5 {
        let message = subscriber.message().await;
        assert_eq!(message.command, Command::Message, "{message:?}");
    }
    let delivered = |broker: &TestBroker| {
        let port = broker.admin_addr().expect("admin listener").port();
        let (status, metrics) = http_get(port, "/metrics").expect("admin answers");
        assert_eq!(status, 200);
        metrics
            .lines()
            .find(|line| line.starts_with("stomphub_messages_delivered_total{class=\"other\"}"))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no delivered count in {metrics}"))
    };
    assert_eq!(
        delivered(&brokers[1]),
        5.0,
        "the receiving node counts them"
    );
    assert_eq!(
        delivered(&brokers[0]),
        0.0,
        "the publishing node had no subscriber"
    );
    for broker in brokers {
        broker.shutdown().await;
    }
}
