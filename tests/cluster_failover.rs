//! Node and engine failure for topics, with real processes: 3 nats-servers
//! (JetStream, routed) and 3 stomphub processes (the binary, so that
//! `kill -9` is real) with `engine = "nats"`, WebSocket STOMP clients spread
//! over the nodes.
//!
//! - kill -9 of a node: its clients see the connection end, reconnect to
//!   another node from their list of URLs (as a load balancer would send
//!   them), subscribe again, and get the surviving nodes' publishers'
//!   messages again (at most once, in order); subscribers on the surviving
//!   nodes get every message exactly once, in order, meanwhile.
//! - SIGTERM of a node: the same, and its clients get an ERROR and a close
//!   1001 (going away) first.
//! - kill -9 of one nats-server of three: the nodes connected to it move to
//!   another server by themselves and topics flow again between all nodes.

mod common;

use common::cluster::{http_get, NatsCluster};
use common::{BrokerProcess, Client, Event};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);
/// Bound on the engine's recovery after one server's death (the clients
/// reconnect with growing back-off).
const ENGINE_RECOVERY: Duration = Duration::from_secs(60);

const TOPIC: &str = "/topic/fo.feed";

/// A publication: `x-pub` names the publisher, `x-seq` its number (`ping`
/// while interest spreads).
fn publication(publisher: &str, seq: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", TOPIC)
        .header("x-pub", publisher)
        .header("x-seq", seq)
        .body(format!("{publisher} {seq}"))
}

/// One broker process and its directory.
struct Node {
    process: Option<BrokerProcess>,
    url: String,
    _dir: tempfile::TempDir,
}

/// `count` broker processes on `engine`, node `n` with the server list
/// rotated by `n` (so that they start on different servers).
fn start_nodes(engine: &NatsCluster, count: usize) -> Vec<Node> {
    (0..count)
        .map(|n| {
            let mut servers = engine.urls();
            let len = servers.len();
            servers.rotate_left(n % len);
            let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
            let config = format!(
                "[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"b{n}\"\n",
                list.join(", ")
            );
            let dir = tempfile::tempdir().expect("temp dir");
            let process = BrokerProcess::start(&config, dir.path());
            Node {
                url: process.url.clone(),
                process: Some(process),
                _dir: dir,
            }
        })
        .collect()
}

/// A subscriber connection and what it got.
struct Subscriber {
    client: Client,
    /// The node it is connected to (index into the URL list).
    node: usize,
    /// Per publisher, the numbers in arrival order.
    numbered: BTreeMap<String, Vec<u64>>,
    /// Publishers whose ping arrived since the last `clear`.
    pinged: BTreeSet<String>,
    /// ERROR frames the server sent.
    errors: Vec<Frame>,
    /// `Some(code)` once the connection ended.
    closed: Option<Option<CloseCode>>,
}

impl Subscriber {
    async fn open(urls: &[String], node: usize) -> Subscriber {
        let mut client = Client::connect(&urls[node]).await;
        client.subscribe("s", TOPIC).await;
        Subscriber {
            client,
            node,
            numbered: BTreeMap::new(),
            pinged: BTreeSet::new(),
            errors: Vec::new(),
            closed: None,
        }
    }

    /// Reads what arrives within `limit` of each event, until quiet or closed.
    async fn read(&mut self, limit: Duration) {
        while self.closed.is_none() {
            let Some(event) = self.client.event_within(limit).await else {
                return;
            };
            match event {
                Event::Frame(frame) if frame.command == Command::Message => {
                    let publisher = frame.get("x-pub").expect("x-pub").to_owned();
                    match frame.get("x-seq").expect("x-seq") {
                        "ping" => {
                            self.pinged.insert(publisher);
                        }
                        seq => self
                            .numbered
                            .entry(publisher)
                            .or_default()
                            .push(seq.parse().expect("a number")),
                    }
                }
                Event::Frame(frame) if frame.command == Command::Error => self.errors.push(frame),
                Event::Frame(frame) => panic!("unexpected {frame:?}"),
                Event::HeartBeat => {}
                Event::Closed(code) => self.closed = Some(code),
            }
        }
    }

    /// Whether the last number from every publisher in `names` is `last`.
    fn reached(&self, names: &[String], last: u64) -> bool {
        names
            .iter()
            .all(|p| self.numbered.get(p).and_then(|n| n.last()) == Some(&last))
    }

    /// After its node went away: connects to the next node of `urls` that
    /// answers (as a client with a list of URLs does) and subscribes again.
    async fn reconnect(&mut self, urls: &[String]) {
        for step in 1..=urls.len() {
            let node = (self.node + step) % urls.len();
            let Ok(mut client) = Client::try_open(&urls[node], &["v12.stomp"]).await else {
                continue;
            };
            let connected = client.stomp_connect().await;
            assert_eq!(connected.command, Command::Connected, "{connected:?}");
            client.subscribe("s", TOPIC).await;
            self.client = client;
            self.node = node;
            self.closed = None;
            return;
        }
        panic!("no node of {urls:?} accepts a connection");
    }
}

/// Pings from every publisher until every subscriber has had one from
/// each: NATS interest spreads between servers after the SUBSCRIBE's
/// RECEIPT, and after a failure only when the clients have reconnected.
/// Returns how long it took.
async fn spread_interest(
    publishers: &mut [(String, Client)],
    subscribers: &mut [Subscriber],
    within: Duration,
) -> Duration {
    let started = Instant::now();
    for subscriber in subscribers.iter_mut() {
        subscriber.pinged.clear();
    }
    let names: BTreeSet<String> = publishers.iter().map(|(name, _)| name.clone()).collect();
    loop {
        for (name, publisher) in publishers.iter_mut() {
            publisher.send(publication(name, "ping")).await;
        }
        for subscriber in subscribers.iter_mut() {
            subscriber.read(Duration::from_millis(100)).await;
            assert!(
                subscriber.closed.is_none(),
                "a subscriber on node {} was closed: {:?}",
                subscriber.node,
                subscriber.closed
            );
        }
        let missing: Vec<usize> = subscribers
            .iter()
            .map(|s| names.difference(&s.pinged).count())
            .collect();
        if missing.iter().all(|&m| m == 0) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "interest did not spread within {within:?}: missing pings per subscriber {missing:?}"
        );
    }
}

/// Publishes `range` from every publisher, alternating between them.
async fn publish(publishers: &mut [(String, Client)], range: std::ops::Range<u64>) {
    for n in range {
        for (name, publisher) in publishers.iter_mut() {
            publisher.send(publication(name, &n.to_string())).await;
        }
    }
}

/// Reads every subscriber until each has `last` from every publisher.
async fn read_until(subscribers: &mut [Subscriber], names: &[String], last: u64) {
    for subscriber in subscribers.iter_mut() {
        let started = Instant::now();
        while !subscriber.reached(names, last) {
            assert!(
                started.elapsed() < ACROSS,
                "a subscriber on node {} did not get message {last} within {ACROSS:?}: {:?}",
                subscriber.node,
                subscriber
                    .numbered
                    .iter()
                    .map(|(p, n)| (p, n.len()))
                    .collect::<Vec<_>>()
            );
            subscriber.read(Duration::from_millis(200)).await;
            assert!(subscriber.closed.is_none(), "{:?}", subscriber.closed);
        }
    }
    // Nothing more: a duplicate would show here.
    for subscriber in subscribers.iter_mut() {
        subscriber.read(Duration::from_millis(300)).await;
    }
}

/// How a node is stopped.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stop {
    Kill,
    Terminate,
}

/// Two subscribers per node, publishers on nodes 1 and 2; node 0 stops
/// between two batches; its subscribers reconnect for the third.
async fn node_failure(stop: Stop) {
    let engine = NatsCluster::start(3);
    let mut nodes = start_nodes(&engine, 3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let mut subscribers = Vec::new();
    for i in 0..6 {
        subscribers.push(Subscriber::open(&urls, i % 3).await);
    }
    let mut publishers = vec![
        ("p1".to_owned(), Client::connect(&urls[1]).await),
        ("p2".to_owned(), Client::connect(&urls[2]).await),
    ];
    let names: Vec<String> = publishers.iter().map(|(n, _)| n.clone()).collect();
    spread_interest(&mut publishers, &mut subscribers, ACROSS).await;

    const BATCH: u64 = 100;
    publish(&mut publishers, 0..BATCH).await;
    let mut process = nodes[0].process.take().expect("node 0 runs");
    match stop {
        Stop::Kill => process.kill(),
        Stop::Terminate => {
            let status = std::process::Command::new("kill")
                .args(["-TERM", &process.pid().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success());
            let started = Instant::now();
            while process.alive() {
                assert!(
                    started.elapsed() < ACROSS,
                    "node 0 still runs {ACROSS:?} after SIGTERM"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    publish(&mut publishers, BATCH..2 * BATCH).await;

    // Node 0's clients see their connection end, and how.
    for subscriber in subscribers.iter_mut().filter(|s| s.node == 0) {
        let started = Instant::now();
        while subscriber.closed.is_none() {
            assert!(started.elapsed() < ACROSS, "no close within {ACROSS:?}");
            subscriber.read(Duration::from_millis(200)).await;
        }
        if stop == Stop::Terminate {
            let messages: Vec<&str> = subscriber
                .errors
                .iter()
                .filter_map(|e| e.get("message"))
                .collect();
            assert!(
                messages.iter().any(|m| m.contains("shutting down")),
                "ERROR frames on SIGTERM: {messages:?}"
            );
            assert_eq!(subscriber.closed, Some(Some(CloseCode::Away)));
        }
        subscriber.reconnect(&urls).await;
        assert_ne!(subscriber.node, 0);
    }
    spread_interest(&mut publishers, &mut subscribers, ACROSS).await;
    publish(&mut publishers, 2 * BATCH..3 * BATCH).await;
    read_until(&mut subscribers, &names, 3 * BATCH - 1).await;

    let everything: Vec<u64> = (0..3 * BATCH).collect();
    for (i, subscriber) in subscribers.iter().enumerate() {
        for name in &names {
            let got = subscriber.numbered.get(name).cloned().unwrap_or_default();
            if i % 3 == 0 {
                // At most once, in order, and everything after reconnecting.
                assert!(
                    got.windows(2).all(|w| w[0] < w[1]),
                    "subscriber {i} from {name}: duplicates or out of order: {got:?}"
                );
                assert!(
                    (2 * BATCH..3 * BATCH).all(|n| got.contains(&n)),
                    "subscriber {i} from {name}: missing after reconnecting: {got:?}"
                );
            } else {
                assert_eq!(
                    got, everything,
                    "subscriber {i} (surviving node) from {name}: not exactly once in order"
                );
            }
        }
        assert!(
            subscriber.errors.is_empty() || i % 3 == 0,
            "{:?}",
            subscriber.errors
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_a_node_its_clients_continue_on_another_and_the_others_lose_nothing() {
    node_failure(Stop::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_a_node_closes_its_clients_with_going_away_and_the_others_lose_nothing() {
    node_failure(Stop::Terminate).await;
}

/// Which engine server (index) each node `b0`, `b1`, … is connected to,
/// from the servers' `/connz`; servers that do not answer are skipped.
fn servers_of_nodes(engine: &NatsCluster, count: usize) -> Vec<Option<usize>> {
    let mut found = vec![None; count];
    for (index, server) in engine.servers.iter().enumerate() {
        let Some((200, body)) = http_get(server.monitor_port, "/connz") else {
            continue;
        };
        let connz: serde_json::Value = serde_json::from_str(&body).expect("connz is JSON");
        for connection in connz["connections"].as_array().cloned().unwrap_or_default() {
            let name = connection["name"].as_str().unwrap_or_default();
            if let Some(node) = name
                .strip_prefix("stomphub b")
                .and_then(|n| n.parse::<usize>().ok())
            {
                if node < count {
                    found[node] = Some(index);
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_nats_server_the_nodes_on_it_move_and_topics_flow_again() {
    let mut engine = NatsCluster::start(3);
    let nodes = start_nodes(&engine, 3);
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
    let mut subscribers = Vec::new();
    for node in 0..3 {
        subscribers.push(Subscriber::open(&urls, node).await);
    }
    let mut publishers = Vec::new();
    for (node, url) in urls.iter().enumerate() {
        publishers.push((format!("p{node}"), Client::connect(url).await));
    }
    let names: Vec<String> = publishers.iter().map(|(n, _)| n.clone()).collect();
    spread_interest(&mut publishers, &mut subscribers, ACROSS).await;

    // The server node 0 is on (every node is on one once connected).
    let before = servers_of_nodes(&engine, 3);
    let victim = before[0].expect("node 0 is connected to a server");
    let moved: Vec<usize> = (0..3).filter(|n| before[*n] == Some(victim)).collect();
    engine.servers[victim].kill();

    let flowing = spread_interest(&mut publishers, &mut subscribers, ENGINE_RECOVERY).await;
    let after = servers_of_nodes(&engine, 3);
    eprintln!(
        "nats-server {victim} killed (nodes {moved:?} on it): topics flowed again between all \
         nodes {:.1} s later; nodes now on servers {after:?}",
        flowing.as_secs_f64()
    );
    for node in moved {
        assert!(
            after[node].is_some_and(|s| s != victim),
            "node {node} is on {:?} after the kill",
            after[node]
        );
    }
    // Once flowing, everything arrives exactly once, in order.
    publish(&mut publishers, 0..100).await;
    read_until(&mut subscribers, &names, 99).await;
    for subscriber in &subscribers {
        for name in &names {
            assert_eq!(
                subscriber.numbered.get(name).cloned().unwrap_or_default(),
                (0..100).collect::<Vec<u64>>(),
                "node {} from {name}",
                subscriber.node
            );
        }
    }
}
