//! Durable topic subscriptions on JetStream: 3 nats-servers (JetStream R3,
//! routed) and brokers with `engine = "nats"`. A durable subscription made
//! on one node is resumed on another (each of the three dialects) with
//! every message published meanwhile, in order, nothing else; deleting it
//! deletes what it collected; the stream captures only the subjects
//! durable subscriptions use; after a kill -9 of the subscriber's node its
//! unacknowledged messages come back on another node.

mod common;

use common::cluster::{http_get, next_message, start_node, NatsCluster};
use common::{BrokerProcess, Client, Event};
use std::time::Duration;
use stomp_protocol::{Command, Frame};

/// Bound on every wait for something to happen across nodes.
const ACROSS: Duration = Duration::from_secs(30);

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// Publishes `bodies` to `destination`, the last one with a receipt (so
/// that all have left the publisher's node once it comes).
async fn publish_all(client: &mut Client, destination: &str, bodies: &[String]) {
    for body in bodies {
        client.publish(destination, body).await;
    }
}

/// Keeps publishing `marker` to `destination` until `subscriber` gets a
/// MESSAGE; returns the bodies it got up to and including the first marker.
/// A topic message published on one node reaches the durable stream
/// shortly after (not awaited by the publisher): the marker proves that
/// everything published before it has arrived.
async fn until_marker(
    publisher: &mut Client,
    subscriber: &mut Client,
    destination: &str,
    marker: &str,
) -> Vec<String> {
    publisher.publish(destination, marker).await;
    let mut seen = Vec::new();
    loop {
        let frame = next_message(subscriber, ACROSS).await;
        let text = body(&frame);
        if std::env::var_os("DEBUG_DURABLES").is_some() {
            eprintln!("{text} {:?}", frame.get("redelivered"));
        }
        seen.push(text.clone());
        if text == marker {
            return seen;
        }
    }
}

/// Publishes `warm-up` to `destination` until `subscriber` gets one (the
/// new subscription's interest has reached the publisher's server), then
/// `live` once and reads up to it: every warm-up still on its way has
/// arrived. Acknowledges what it reads when the subscription wants acks.
async fn warm_up(publisher: &mut Client, subscriber: &mut Client, destination: &str) {
    let mut marker = None;
    while marker.is_none() {
        publisher.publish(destination, "warm-up").await;
        if let Some(Event::Frame(frame)) = subscriber.event_within(Duration::from_secs(1)).await {
            assert_eq!(frame.command, Command::Message, "{frame:?}");
            marker = Some(frame);
        }
    }
    let mut frame = marker.expect("a warm-up came");
    publisher.publish(destination, "live").await;
    loop {
        if frame.get("ack").is_some() {
            subscriber.settle(&frame, false).await;
        }
        if body(&frame) == "live" {
            return;
        }
        assert_eq!(body(&frame), "warm-up");
        frame = next_message(subscriber, ACROSS).await;
    }
}

/// Waits until no NATS server lists a connection named `name`.
async fn connection_gone(engine: &NatsCluster, name: &str) {
    let deadline = tokio::time::Instant::now() + ACROSS;
    loop {
        let listed = engine.servers.iter().any(|server| {
            http_get(server.monitor_port, "/connz?limit=1024")
                .is_some_and(|(_, text)| text.contains(&format!("\"{name}\"")))
        });
        if !listed {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} still connected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The stream's subjects, from the first server's monitoring endpoint.
fn durable_stream_subjects(engine: &NatsCluster) -> Vec<String> {
    for server in &engine.servers {
        let Some((200, text)) = http_get(server.monitor_port, "/jsz?streams=true&config=true")
        else {
            continue;
        };
        let jsz: serde_json::Value = serde_json::from_str(&text).expect("jsz is JSON");
        for account in jsz["account_details"].as_array().into_iter().flatten() {
            for stream in account["stream_detail"].as_array().into_iter().flatten() {
                if stream["name"] == "stomphub_durables" {
                    return stream["config"]["subjects"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect();
                }
            }
        }
    }
    Vec::new()
}

/// A dialect's SUBSCRIBE headers, and the UNSUBSCRIBE header that deletes
/// its durable subscription.
type Dialect = (
    &'static [(&'static str, &'static str)],
    (&'static str, &'static str),
);

fn bodies(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|n| format!("{prefix}{n}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_dialect_resumes_on_another_node_with_what_was_published_meanwhile() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let nodes = [
        start_node(&urls, 0).await,
        start_node(&urls, 1).await,
        start_node(&urls, 2).await,
    ];
    let mut publisher = Client::connect(&nodes[2].url()).await;
    // (SUBSCRIBE headers, the UNSUBSCRIBE header that deletes it).
    let dialects: [Dialect; 3] = [
        (
            &[("durable-subscription-name", "artemis")],
            ("durable-subscription-name", "artemis"),
        ),
        (
            &[("activemq.subscriptionName", "amq")],
            ("activemq.subscriptionName", "amq"),
        ),
        (
            &[("durable", "true"), ("auto-delete", "false")],
            ("durable", "true"),
        ),
    ];
    for (n, (headers, removal)) in dialects.iter().enumerate() {
        let client_id = format!("app{n}");
        let topic = format!("/topic/prices{n}.#");
        let eur = format!("/topic/prices{n}.eur");
        let zero = format!("/topic/prices{n}");

        let mut subscriber = Client::connect_as(&nodes[0].url(), &client_id).await;
        subscriber.subscribe_with("s1", &topic, headers).await;
        warm_up(&mut publisher, &mut subscriber, &eur).await;
        subscriber.send(Frame::new(Command::Disconnect)).await;
        drop(subscriber);

        // Away: published on node 2, to the pattern's topics and others.
        publish_all(&mut publisher, &eur, &bodies("away", 0..10)).await;
        publisher.publish(&zero, "zero-words").await;
        publisher
            .publish(&format!("/topic/other{n}.eur"), "not-mine")
            .await;

        // Back on node 1 (another node): what was published meanwhile, in
        // order, then live; nothing twice, nothing else.
        let mut subscriber = Client::connect_as(&nodes[1].url(), &client_id).await;
        subscriber.subscribe_with("s1", &topic, headers).await;
        let mut expected = bodies("away", 0..10);
        expected.push("zero-words".into());
        expected.push("back".into());
        let seen = until_marker(&mut publisher, &mut subscriber, &eur, "back").await;
        assert_eq!(seen, expected, "dialect {n}");

        // Deleted with what it collected: a new one starts empty.
        let mut unsubscribe = Frame::new(Command::Unsubscribe)
            .header("id", "s1")
            .header("receipt", "gone");
        unsubscribe = unsubscribe.header(removal.0, removal.1);
        subscriber.send(unsubscribe).await;
        subscriber.expect_receipt("gone").await;
        publish_all(&mut publisher, &eur, &bodies("dropped", 0..3)).await;
        subscriber.subscribe_with("s2", &topic, headers).await;
        let fresh = until_marker(&mut publisher, &mut subscriber, &eur, "fresh").await;
        assert!(
            fresh.iter().all(|b| !b.starts_with("dropped")),
            "dialect {n}: {fresh:?}"
        );
        let mut unsubscribe = Frame::new(Command::Unsubscribe)
            .header("id", "s2")
            .header("receipt", "gone2");
        unsubscribe = unsubscribe.header(removal.0, removal.1);
        subscriber.send(unsubscribe).await;
        subscriber.expect_receipt("gone2").await;
    }
    // No durable subscription left: the stream captures no topic subject,
    // so topic publishes are not JetStream writes.
    assert_eq!(
        durable_stream_subjects(&engine),
        vec!["stomphub.durables.none".to_owned()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_unacknowledged_durable_messages_come_back_on_another_node() {
    let engine = NatsCluster::start(3);
    let urls = engine.urls();
    let survivor = start_node(&urls, 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let servers: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let config = format!(
        "[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"doomed\"\nack_wait = \"3s\"\nconnect_timeout = \"30s\"\n",
        servers.join(", ")
    );
    let doomed = BrokerProcess::start(&config, dir.path());
    let mut publisher = Client::connect(&survivor.url()).await;
    let headers = [
        ("durable-subscription-name", "ledger"),
        ("ack", "client-individual"),
    ];
    let mut subscriber = Client::connect_as(&doomed.url, "books").await;
    subscriber
        .subscribe_with("s", "/topic/ledger.*", &headers)
        .await;
    warm_up(&mut publisher, &mut subscriber, "/topic/ledger.eur").await;
    publish_all(&mut publisher, "/topic/ledger.eur", &bodies("m", 0..6)).await;
    let mut frames = Vec::new();
    for n in 0..6 {
        let frame = next_message(&mut subscriber, ACROSS).await;
        assert_eq!(body(&frame), format!("m{n}"));
        frames.push(frame);
    }
    // The first three acknowledged, the rest held when the node dies; a
    // receipted ACK is at the engine when its RECEIPT comes.
    let held: Vec<String> = frames[3..].iter().map(body).collect();
    for (n, frame) in frames[..3].iter().enumerate() {
        let mut ack = Frame::new(Command::Ack).header("id", frame.get("ack").expect("ack"));
        if n == 2 {
            ack = ack.header("receipt", "acked");
        }
        subscriber.send(ack).await;
    }
    subscriber.expect_receipt("acked").await;
    doomed.kill();
    // Its pulls end with its connections: nothing published later goes to it.
    connection_gone(&engine, "stomphub doomed queues").await;

    publish_all(&mut publisher, "/topic/ledger.eur", &bodies("n", 0..4)).await;
    let mut back = Client::connect_as(&survivor.url(), "books").await;
    back.subscribe_with("s", "/topic/ledger.*", &headers).await;
    let mut seen = Vec::new();
    let mut redelivered = Vec::new();
    while seen.len() < held.len() + 4 {
        let frame = next_message(&mut back, ACROSS).await;
        back.settle(&frame, false).await;
        if frame.get("redelivered") == Some("true") {
            redelivered.push(body(&frame));
        }
        seen.push(body(&frame));
    }
    let mut got_held: Vec<String> = seen
        .iter()
        .filter(|b| b.starts_with('m'))
        .cloned()
        .collect();
    got_held.sort();
    assert_eq!(
        got_held, held,
        "the unacknowledged ones, once each: {seen:?}"
    );
    assert_eq!(redelivered, held, "marked redelivered: {seen:?}");
    let fresh: Vec<String> = seen
        .iter()
        .filter(|b| b.starts_with('n'))
        .cloned()
        .collect();
    assert_eq!(fresh, bodies("n", 0..4), "published while away, in order");
    // Nothing more: the next message is the marker.
    let rest = until_marker(&mut publisher, &mut back, "/topic/ledger.eur", "end").await;
    assert_eq!(rest, vec!["end".to_owned()]);
}

/// A node on `urls` where carol and bob log in (both read `/topic/public.#`)
/// and loopback clients are anonymous.
async fn tenant_node(urls: &[String], node: usize) -> common::TestBroker {
    use stomphub::config::{Anonymous, UserConfig};
    let user = |login: &str, password: &str| UserConfig {
        login: login.into(),
        password_hash: stomphub::auth::password::hash(password).expect("hash"),
        read: vec!["/topic/public.#".into()],
        write: vec!["/topic/public.#".into()],
        roles: Vec::new(),
    };
    let mut config = common::test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = urls.to_vec();
    config.cluster.node_name = format!("t{node}");
    config.cluster.replicas = 1;
    config.cluster.connect_timeout = Duration::from_secs(30);
    config.auth.anonymous = Anonymous::Loopback;
    config.auth.anonymous_read = vec!["/topic/#".into()];
    config.auth.anonymous_write = vec!["/topic/#".into()];
    config.auth.failure_delay = Duration::from_millis(10);
    config.auth.users = vec![user("carol", "singer"), user("bob", "builder")];
    common::start(config).await
}

async fn login(url: &str, login: &str, passcode: &str, client_id: &str) -> Client {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "0,0")
                .header("login", login)
                .header("passcode", passcode)
                .header("client-id", client_id),
        )
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_subscription_belongs_to_its_principal_on_every_node() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let nodes = [tenant_node(&urls, 0).await, tenant_node(&urls, 1).await];
    let mut publisher = Client::connect(&nodes[1].url()).await;
    let inbox = [("durable-subscription-name", "inbox")];

    let mut carol = login(&nodes[0].url(), "carol", "singer", "carol").await;
    carol.subscribe_with("s", "/topic/public.*", &inbox).await;
    // Another durable subscription whose subject overlaps carol's
    // (`public.*` and `*.news`): the stream holds both.
    let mut other = Client::connect_as(&nodes[0].url(), "other").await;
    other.subscribe_with("s", "/topic/*.news", &inbox).await;
    warm_up(&mut publisher, &mut carol, "/topic/public.news").await;
    let seen = until_marker(&mut publisher, &mut other, "/topic/public.news", "both").await;
    assert_eq!(seen.last().map(String::as_str), Some("both"), "{seen:?}");
    // JetStream refuses a stream whose own subjects overlap: one subject
    // holds both.
    assert_eq!(
        durable_stream_subjects(&engine),
        vec![
            "stomphub.dfeed.*.*.__".to_owned(),
            "stomphub.topic.*.*.__".to_owned()
        ]
    );
    carol.send(Frame::new(Command::Disconnect)).await;
    drop(carol);
    publisher.publish("/topic/public.sport", "kept").await;

    // Bob, on the other node, claims to be carol's application: refused.
    let mut bob = login(&nodes[1].url(), "bob", "builder", "carol").await;
    bob.send_subscribe("s", "/topic/public.*", &inbox).await;
    bob.expect_error(
        "belongs to another principal",
        tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy,
    )
    .await;

    // Carol's backlog is intact, on either node.
    let mut carol = login(&nodes[1].url(), "carol", "singer", "carol").await;
    carol.subscribe_with("s", "/topic/public.*", &inbox).await;
    let seen = until_marker(&mut publisher, &mut carol, "/topic/public.sport", "end").await;
    // ("both" reached her live, before she left.)
    assert_eq!(seen, ["kept", "end"]);

    // One connection at a time: a second, on the other node, is refused.
    let mut second = login(&nodes[0].url(), "carol", "singer", "carol").await;
    second.send_subscribe("s", "/topic/public.*", &inbox).await;
    // (After up to 4 s: the time a pull of a connection just gone may last.)
    let error = match second.event_within(ACROSS).await {
        Some(Event::Frame(frame)) => frame,
        other => panic!("expected ERROR, got {other:?}"),
    };
    assert_eq!(error.command, Command::Error, "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(
        message.contains("is already active on another connection"),
        "{message}"
    );
    second
        .expect_close(tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Policy)
        .await;

    // Re-bound to another topic: what it held for the old one goes, and
    // so does the old subject.
    carol
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "s"), "off")
        .await;
    publisher.publish("/topic/public.sport", "old-topic").await;
    carol
        .subscribe_with("s", "/topic/public.news", &inbox)
        .await;
    let seen = until_marker(&mut publisher, &mut carol, "/topic/public.news", "rebound").await;
    assert_eq!(seen, ["rebound"]);
    assert_eq!(
        durable_stream_subjects(&engine),
        vec![
            "stomphub.dfeed.*.news.__".to_owned(),
            "stomphub.topic.*.news.__".to_owned()
        ]
    );
}

/// The `x-subscribers` count of a `/meta/subscribers/` MESSAGE.
fn count_of(frame: &Frame) -> usize {
    frame
        .get("x-subscribers")
        .and_then(|n| n.parse().ok())
        .expect("x-subscribers")
}

/// Reads counts until one is `wanted`; every count is at most once a second.
async fn count_reaches(watcher: &mut Client, wanted: usize, last: &mut tokio::time::Instant) {
    loop {
        let frame = next_message(watcher, ACROSS).await;
        let now = tokio::time::Instant::now();
        assert!(
            now.duration_since(*last) >= Duration::from_millis(900),
            "at most once a second"
        );
        *last = now;
        if count_of(&frame) == wanted {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_counts_add_up_over_nodes_and_forget_a_killed_one() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "[cluster]\nengine = \"nats\"\nservers = [\"{}\"]\nnode_name = \"counted\"\nreplicas = 1\nconnect_timeout = \"30s\"\n",
        urls[0]
    );
    let doomed = BrokerProcess::start(&config, dir.path());
    let node = start_node(&urls, 1).await;

    let mut watcher = Client::connect(&node.url()).await;
    // The count comes at once (before a RECEIPT would).
    watcher
        .send_subscribe("w", "/meta/subscribers/topic/scores.game42", &[])
        .await;
    let mut last = tokio::time::Instant::now() - Duration::from_secs(1);
    count_reaches(&mut watcher, 0, &mut last).await;

    let mut fans = Vec::new();
    for (url, destination) in [
        (doomed.url.clone(), "/topic/scores.game42"),
        (doomed.url.clone(), "/topic/scores.*"),
        (node.url(), "/topic/scores.#"),
        (node.url(), "/topic/other"),
    ] {
        let mut fan = Client::connect(&url).await;
        fan.subscribe("f", destination).await;
        fans.push(fan);
    }
    // Two on the other node, one here; /topic/other is not counted.
    count_reaches(&mut watcher, 3, &mut last).await;

    let killed = tokio::time::Instant::now();
    doomed.kill();
    count_reaches(&mut watcher, 1, &mut last).await;
    let after = killed.elapsed();
    eprintln!("count without the killed node after {after:?}");
    // Forgotten after 3 s of silence, sent within the router's second.
    assert!(after < Duration::from_secs(10), "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipted_persistent_topic_send_is_kept_for_durable_subscribers_before_its_receipt() {
    let engine = NatsCluster::start(1);
    let urls = engine.urls();
    // Room for the 10 messages below (each about 100 bytes in the
    // stream), not for one of 8 KiB.
    let mut config = common::test_config();
    config.cluster.engine = stomphub::config::Engine::Nats;
    config.cluster.servers = urls.clone();
    config.cluster.replicas = 1;
    config.cluster.durable_max_bytes = 4096;
    config.cluster.connect_timeout = Duration::from_secs(30);
    let node = common::start(config).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let process_config = format!(
        "[cluster]\nengine = \"nats\"\nservers = [\"{}\"]\nnode_name = \"publishing\"\nreplicas = 1\ndurable_max_bytes = 4096\nconnect_timeout = \"30s\"\n",
        urls[0]
    );
    let publishing = BrokerProcess::start(&process_config, dir.path());
    let name = [("durable-subscription-name", "audit")];
    let mut subscriber = Client::connect_as(&node.url(), "auditor").await;
    subscriber
        .subscribe_with("s", "/topic/audit.*", &name)
        .await;
    let mut publisher = Client::connect(&publishing.url).await;
    warm_up(&mut publisher, &mut subscriber, "/topic/audit.log").await;
    subscriber.send(Frame::new(Command::Disconnect)).await;
    drop(subscriber);

    let persistent = |destination: &str, body: String| {
        Frame::new(Command::Send)
            .header("destination", destination)
            .header("persistent", "true")
            .body(body)
    };
    // Each RECEIPT comes once the durable subscription's stream has the
    // message; the node is killed right after the last one.
    for n in 0..10 {
        publisher
            .send_confirmed(
                persistent("/topic/audit.log", format!("r{n}")),
                &format!("r{n}"),
            )
            .await;
    }
    // A topic nobody keeps: confirmed at once (no stream has its subject).
    publisher
        .send_confirmed(
            persistent("/topic/nobody.keeps", "x".repeat(8192)),
            "unkept",
        )
        .await;
    // The stream full: ERROR, never a RECEIPT.
    publisher
        .send(persistent("/topic/audit.log", "x".repeat(8192)).header("receipt", "too-big"))
        .await;
    let error = publisher.frame().await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert_eq!(error.get("receipt-id"), Some("too-big"), "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains("not kept for them"), "{message}");
    publishing.kill();

    let mut subscriber = Client::connect_as(&node.url(), "auditor").await;
    subscriber
        .subscribe_with("s", "/topic/audit.*", &name)
        .await;
    let seen = until_marker(
        &mut Client::connect(&node.url()).await,
        &mut subscriber,
        "/topic/audit.log",
        "end",
    )
    .await;
    let mut expected = bodies("r", 0..10);
    expected.push("end".into());
    assert_eq!(seen, expected);
}
