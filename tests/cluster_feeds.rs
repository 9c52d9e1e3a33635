//! Live feeds on the cluster: 3 nats-servers (JetStream, routed) and
//! brokers with `engine = "nats"`, real WebSocket STOMP clients on
//! different nodes. Feed state lives in the engine's feed stream, so every
//! node gives the same offsets, epoch, retained values and history: a late
//! joiner on another node (or on a node started later) gets the retained
//! values published elsewhere, wildcards included; a client that drops and
//! resumes on another node (also after a kill -9 of its node) gets every
//! missed message once, in order, then live; a wrong epoch or a too old
//! offset says `x-recovered:false`; a receipted feed SEND waits for the
//! engine, and gets ERROR without it.

mod common;

use common::cluster::NatsCluster;
use common::{subscribe_frame, BrokerProcess, Client, Event, TestBroker};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use stomphub::config::{Retain, TopicRule};

fn rule(pattern: &str, history: usize, retain: Retain) -> TopicRule {
    TopicRule {
        pattern: pattern.into(),
        history,
        history_age: None,
        retain,
        persistent: false,
    }
}

/// A node on `nats` with `rules`.
async fn node(nats: &NatsCluster, index: usize, rules: &[TopicRule]) -> TestBroker {
    start_node_with(&nats.urls(), index, rules.to_vec()).await
}

async fn start_node_with(urls: &[String], index: usize, rules: Vec<TopicRule>) -> TestBroker {
    common::cluster::start_node_configured(urls, index, |config| config.topics.rules = rules).await
}

fn offset(frame: &Frame) -> u64 {
    frame
        .get("x-offset")
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("no x-offset: {frame:?}"))
}

fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned())
}

/// SUBSCRIBE with `headers` and a receipt; the MESSAGEs before the RECEIPT
/// (the snapshot) and the RECEIPT.
async fn subscribe_snapshot(
    client: &mut Client,
    id: &str,
    destination: &str,
    headers: &[(&str, &str)],
) -> (Vec<Frame>, Frame) {
    let receipt = format!("r-{id}");
    client
        .send(subscribe_frame(id, destination, headers).header("receipt", &receipt))
        .await;
    let mut messages = Vec::new();
    loop {
        let frame = client.frame().await;
        match frame.command {
            Command::Message => messages.push(frame),
            Command::Receipt => return (messages, frame),
            _ => panic!("unexpected {frame:?}"),
        }
    }
}

/// The next `count` MESSAGEs.
async fn messages(client: &mut Client, count: usize) -> Vec<Frame> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        got.push(client.message().await);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_joiner_on_any_node_gets_the_retained_values_and_history_kept_by_the_engine() {
    let nats = NatsCluster::start(3);
    let rules = [
        rule("/topic/prices.*", 0, Retain::Last),
        rule("/topic/chat.*", 3, Retain::None),
    ];
    let node1 = node(&nats, 1, &rules).await;
    let node2 = node(&nats, 2, &rules).await;
    let mut publisher = Client::connect(&node1.url()).await;
    // Watchers with `next` on both nodes: live only, and proof that a node
    // has applied what the test published before it asks for a snapshot.
    let mut watch1 = Client::connect(&node1.url()).await;
    let mut watch2 = Client::connect(&node2.url()).await;
    for watch in [&mut watch1, &mut watch2] {
        watch
            .subscribe_with("w", "/topic/prices.*", &[("x-stream-offset", "next")])
            .await;
        watch
            .subscribe_with("c", "/topic/chat.room", &[("x-stream-offset", "next")])
            .await;
    }
    for (destination, value) in [("/topic/prices.a", "1"), ("/topic/prices.b", "2")] {
        publisher
            .send_confirmed(send(destination, value), "p")
            .await;
    }
    publisher
        .send_confirmed(send("/topic/prices.a", "3"), "p")
        .await;
    let seen1 = messages(&mut watch1, 3).await;
    let seen2 = messages(&mut watch2, 3).await;
    let numbered = |frames: &[Frame]| -> Vec<(String, String, u64, String)> {
        frames
            .iter()
            .map(|f| {
                (
                    f.get("destination").unwrap_or("").to_owned(),
                    body(f),
                    offset(f),
                    f.get("x-epoch").unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(
        numbered(&seen1),
        numbered(&seen2),
        "the same offsets and epoch on both nodes"
    );
    let offsets: Vec<u64> = seen1.iter().map(offset).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
    let epoch = seen1[0].get("x-epoch").expect("epoch").to_owned();

    // A late joiner on node 2 (the values were published on node 1).
    let mut late = Client::connect(&node2.url()).await;
    let (snapshot, _) = subscribe_snapshot(&mut late, "s", "/topic/prices.*", &[]).await;
    let expected = [
        (
            "/topic/prices.a".to_owned(),
            "3".to_owned(),
            offsets[2],
            epoch.clone(),
        ),
        (
            "/topic/prices.b".to_owned(),
            "2".to_owned(),
            offsets[1],
            epoch.clone(),
        ),
    ];
    assert_eq!(numbered(&snapshot), expected);
    assert!(snapshot.iter().all(|f| f.get("x-retained") == Some("true")));

    // A node started after the publications has them before it lets
    // clients in.
    let node3 = node(&nats, 3, &rules).await;
    let mut watch3 = Client::connect(&node3.url()).await;
    watch3
        .subscribe_with("c", "/topic/chat.room", &[("x-stream-offset", "next")])
        .await;
    let mut later = Client::connect(&node3.url()).await;
    let (snapshot, _) = subscribe_snapshot(&mut later, "s", "/topic/prices.*", &[]).await;
    assert_eq!(numbered(&snapshot), expected, "node 3 after its start");
    let (exact, _) = subscribe_snapshot(
        &mut later,
        "e",
        "/topic/prices.a",
        &[("x-stream-offset", "last")],
    )
    .await;
    assert_eq!(numbered(&exact), expected[..1]);

    // Then live, with no gap and no duplicate: the next value from node 2.
    let mut publisher2 = Client::connect(&node2.url()).await;
    publisher2
        .send_confirmed(send("/topic/prices.a", "4"), "p")
        .await;
    for client in [&mut late, &mut later] {
        let next = client.message().await;
        assert_eq!(body(&next), "4");
        assert!(offset(&next) > offsets[2]);
        assert_eq!(next.get("x-retained"), None);
    }
    let next = later.message().await;
    assert_eq!(
        (body(&next), next.get("subscription")),
        ("4".into(), Some("e"))
    );

    // History: 3 kept per destination, the same on every node.
    for n in 1..=5 {
        publisher
            .send_confirmed(send("/topic/chat.room", &n.to_string()), "p")
            .await;
    }
    let _ = messages(&mut watch2, 1).await; // prices.a 4
    let chat: Vec<Frame> = messages(&mut watch2, 5).await;
    assert_eq!(
        chat.iter().map(body).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5"]
    );
    // Node 3 has read them too.
    assert_eq!(numbered(&messages(&mut watch3, 5).await), numbered(&chat));
    for (client, id) in [(&mut late, "h1"), (&mut later, "h2")] {
        let (history, _) = subscribe_snapshot(
            client,
            id,
            "/topic/chat.room",
            &[("x-stream-offset", "first")],
        )
        .await;
        assert_eq!(
            history.iter().map(body).collect::<Vec<_>>(),
            ["3", "4", "5"]
        );
        assert_eq!(
            history.iter().map(offset).collect::<Vec<_>>(),
            chat[2..].iter().map(offset).collect::<Vec<_>>()
        );
    }
    // `timestamp=` reads the engine's publication times.
    let an_hour_ago = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        - 3600)
        .to_string();
    let (since, _) = subscribe_snapshot(
        &mut later,
        "t",
        "/topic/chat.room",
        &[("x-stream-offset", &format!("timestamp={an_hour_ago}"))],
    )
    .await;
    assert_eq!(since.iter().map(body).collect::<Vec<_>>(), ["3", "4", "5"]);
    let in_an_hour = (an_hour_ago.parse::<u64>().expect("number") + 7200).to_string();
    let (none, _) = subscribe_snapshot(
        &mut later,
        "u",
        "/topic/chat.room",
        &[("x-stream-offset", &format!("timestamp={in_an_hour}"))],
    )
    .await;
    assert!(none.is_empty());

    // `x-retain:true` without a rule: retained on the engine too.
    watch2
        .subscribe_with("x", "/topic/misc.x", &[("x-stream-offset", "next")])
        .await;
    publisher
        .send_confirmed(
            send("/topic/misc.x", "kept").header("x-retain", "true"),
            "p",
        )
        .await;
    assert_eq!(body(&watch2.message().await), "kept");
    let (retained, _) = subscribe_snapshot(&mut late, "x", "/topic/misc.x", &[]).await;
    assert_eq!(retained.iter().map(body).collect::<Vec<_>>(), ["kept"]);
    assert_eq!(retained[0].get("x-retained"), Some("true"));

    for node in [node1, node2, node3] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_resumes_on_another_node_with_every_missed_message_once_in_order() {
    let nats = NatsCluster::start(3);
    let rules = [rule("/topic/game.*", 4, Retain::Last)];
    let node1 = node(&nats, 1, &rules).await;
    let node2 = node(&nats, 2, &rules).await;
    let mut publisher = Client::connect(&node1.url()).await;
    let mut fan = Client::connect(&node1.url()).await;
    fan.subscribe_with("s", "/topic/game.1", &[("x-stream-offset", "next")])
        .await;
    // A client-ack subscriber on the publishers' node: the router's own
    // deliveries come from the engine too, once each.
    let mut acking = Client::connect(&node1.url()).await;
    acking
        .subscribe_with("a", "/topic/game.1", &[("ack", "client-individual")])
        .await;
    // Durable subscriptions (consumers on the engine's feed stream), one
    // made on each node: every message once, with the same offsets.
    let mut durables = Vec::new();
    for (url, name) in [(node1.url(), "d1"), (node2.url(), "d2")] {
        let mut durable = Client::connect(&url).await;
        durable
            .subscribe_with("d", "/topic/game.1", &[("durable-subscription-name", name)])
            .await;
        durables.push(durable);
    }
    // Node 2's live subscriber from before: it tells when node 2 has read
    // 1..3 (a RECEIPT says only that the publishing node has).
    let mut early2 = Client::connect(&node2.url()).await;
    early2
        .subscribe_with("e", "/topic/game.1", &[("x-stream-offset", "next")])
        .await;
    for n in 1..=3 {
        publisher
            .send_confirmed(send("/topic/game.1", &n.to_string()), "p")
            .await;
    }
    let before = messages(&mut fan, 3).await;
    let early = messages(&mut early2, 3).await;
    assert_eq!(early.iter().map(body).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(before.iter().map(body).collect::<Vec<_>>(), ["1", "2", "3"]);
    let first_offset = offset(&before[0]);
    let seen = offset(&before[2]);
    let epoch = before[2].get("x-epoch").expect("epoch").to_owned();
    drop(fan); // a forced disconnect: no DISCONNECT, the socket just goes
               // Node 2's own live subscriber: it tells when node 2 has read 4..6.
               // From after 3, not `next`: node 2 may not have read 1..3 yet.
    let mut watch2 = Client::connect(&node2.url()).await;
    let after_seen = format!("offset={}", seen + 1);
    watch2
        .subscribe_with(
            "w",
            "/topic/game.1",
            &[("x-stream-offset", &after_seen), ("x-epoch", &epoch)],
        )
        .await;

    // Missed meanwhile, published on node 1, with another destination's
    // messages between them (the engine's offsets are not one per
    // destination).
    for n in 4..=6 {
        publisher
            .send_confirmed(send("/topic/game.1", &n.to_string()), "p")
            .await;
        publisher
            .send_confirmed(send("/topic/game.2", &n.to_string()), "p")
            .await;
    }
    let missed = messages(&mut watch2, 3).await;

    // Back on node 2: every missed message once, in order, then live.
    let mut back = Client::connect(&node2.url()).await;
    let from = format!("offset={}", seen + 1);
    let (snapshot, receipt) = subscribe_snapshot(
        &mut back,
        "s",
        "/topic/game.1",
        &[("x-stream-offset", &from), ("x-epoch", &epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("true"), "{snapshot:?}");
    assert_eq!(
        snapshot.iter().map(offset).collect::<Vec<_>>(),
        missed.iter().map(offset).collect::<Vec<_>>(),
        "the missed messages, as node 2 numbered them live"
    );
    publisher
        .send_confirmed(send("/topic/game.1", "7"), "p")
        .await;
    let mut resumed = snapshot;
    resumed.push(back.message().await);
    assert_eq!(
        resumed.iter().map(body).collect::<Vec<_>>(),
        ["4", "5", "6", "7"],
        "every missed message once, in order, then live"
    );
    let offsets: Vec<u64> = resumed.iter().map(offset).collect();
    assert!(
        offsets[0] > seen && offsets.windows(2).all(|w| w[0] < w[1]),
        "{offsets:?}"
    );
    assert_eq!(resumed[0].get("x-recovered"), Some("true"));
    back.expect_silence(Duration::from_millis(300)).await;
    let acked = messages(&mut acking, 7).await;
    assert_eq!(
        acked.iter().map(body).collect::<Vec<_>>(),
        ["1", "2", "3", "4", "5", "6", "7"]
    );
    assert_eq!(acked[6].get("x-offset"), resumed[3].get("x-offset"));
    for message in &acked {
        acking.settle(message, false).await;
    }
    acking.expect_silence(Duration::from_millis(300)).await;
    for durable in &mut durables {
        let got = messages(durable, 7).await;
        assert_eq!(
            got.iter().map(body).collect::<Vec<_>>(),
            ["1", "2", "3", "4", "5", "6", "7"]
        );
        assert_eq!(got[6].get("x-offset"), resumed[3].get("x-offset"));
        durable.expect_silence(Duration::from_millis(300)).await;
    }

    // Another epoch, or an offset older than the kept history (4 per
    // destination: 1..3 are gone): not recovered, the last value instead.
    for (from, epoch) in [
        (format!("offset={}", seen + 1), "not-the-epoch".to_owned()),
        (format!("offset={first_offset}"), epoch.clone()),
    ] {
        let mut other = Client::connect(&node1.url()).await;
        let (reset, receipt) = subscribe_snapshot(
            &mut other,
            "s",
            "/topic/game.1",
            &[("x-stream-offset", &from), ("x-epoch", &epoch)],
        )
        .await;
        assert_eq!(receipt.get("x-recovered"), Some("false"), "{from} {epoch}");
        assert_eq!(reset.iter().map(body).collect::<Vec<_>>(), ["7"]);
        assert_eq!(reset[0].get("x-recovered"), Some("false"));
        assert_eq!(reset[0].get("x-retained"), Some("true"));
        assert_eq!(offset(&reset[0]), offsets[3]);
    }
    node1.shutdown().await;
    node2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_live_has_no_gap_and_no_duplicate_on_every_node_under_a_full_speed_publisher()
{
    let nats = NatsCluster::start(3);
    let rules = vec![rule("/topic/tick.*", 0, Retain::Last)];
    // The clients are read one after another while the publisher floods:
    // the slow-consumer limit, which this test is not about, is lifted.
    let urls = nats.urls();
    let unbounded = |index| {
        let rules = rules.clone();
        common::cluster::start_node_configured(&urls, index, move |config| {
            config.topics.rules = rules;
            config.outbound.max_queued_frames = 1 << 20;
            config.outbound.max_queued_bytes = 256 << 20;
        })
    };
    let node1 = unbounded(1).await;
    let node2 = unbounded(2).await;
    let urls = [node1.url(), node2.url()];
    // On each node, everything from before the flood: that node's order.
    let mut watchers = Vec::new();
    for url in &urls {
        let mut watcher = Client::connect(url).await;
        watcher
            .subscribe_with("w", "/topic/tick.a", &[("x-stream-offset", "next")])
            .await;
        watchers.push(watcher);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut publisher = Client::connect(&node1.url()).await;
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                publisher.publish("/topic/tick.a", &n.to_string()).await;
            }
            publisher
                .send_confirmed(send("/topic/tick.a", "end"), "end")
                .await;
        }
    });
    let mut reference = Vec::new();
    for watcher in &mut watchers {
        reference.push(messages(watcher, 50).await);
    }
    // Late joiners on the publisher's node and on the other one, while the
    // publisher runs at full speed.
    let mut late = Vec::new();
    for url in &urls {
        let mut client = Client::connect(url).await;
        client
            .send(subscribe_frame("s", "/topic/tick.a", &[]))
            .await;
        late.push(client);
    }
    let mut got: Vec<Vec<Frame>> = Vec::new();
    for client in &mut late {
        got.push(messages(client, 20).await);
    }
    stop.store(true, Ordering::Relaxed);
    flood.await.expect("the publisher ends");
    let until_end = |frames: &Vec<Frame>| frames.last().map(body).as_deref() != Some("end");
    for (client, got) in late.iter_mut().zip(&mut got) {
        while until_end(got) {
            got.push(client.message().await);
        }
    }
    for (watcher, reference) in watchers.iter_mut().zip(&mut reference) {
        while until_end(reference) {
            reference.push(watcher.message().await);
        }
    }
    let offsets = |frames: &[Frame]| frames.iter().map(offset).collect::<Vec<_>>();
    let ends: Vec<u64> = reference.iter().map(|r| offset(&r[r.len() - 1])).collect();
    assert_eq!(ends[0], ends[1], "the same last offset on both nodes");
    for (got, reference) in got.iter().zip(&reference) {
        let all = offsets(reference);
        assert!(
            all.windows(2).all(|w| w[0] < w[1]),
            "the reference increases"
        );
        assert_eq!(got[0].get("x-retained"), Some("true"), "the snapshot first");
        assert!(got[1..].iter().all(|f| f.get("x-retained").is_none()));
        let from = all
            .iter()
            .position(|o| *o == offset(&got[0]))
            .expect("the snapshot is a message the node delivered");
        assert_eq!(offsets(got), all[from..], "no gap, no duplicate");
    }
    node1.shutdown().await;
    node2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipted_feed_send_waits_for_the_engine_and_gets_an_error_when_it_is_gone() {
    let mut nats = NatsCluster::start(1);
    let rules = [rule("/topic/score.*", 5, Retain::Last)];
    let node = node(&nats, 0, &rules).await;
    let mut client = Client::connect(&node.url()).await;
    client
        .subscribe_with("s", "/topic/score.x", &[("x-stream-offset", "next")])
        .await;
    // Pipelined: two receipted SENDs, their RECEIPTs in order once the
    // stream has them.
    client
        .send(send("/topic/score.x", "1").header("receipt", "r1"))
        .await;
    client
        .send(send("/topic/score.x", "2").header("receipt", "r2"))
        .await;
    let mut receipts = Vec::new();
    let mut bodies = Vec::new();
    while receipts.len() < 2 || bodies.len() < 2 {
        let frame = client.frame().await;
        match frame.command {
            Command::Receipt => receipts.push(frame.get("receipt-id").unwrap_or("").to_owned()),
            Command::Message => bodies.push(body(&frame)),
            _ => panic!("unexpected {frame:?}"),
        }
    }
    assert_eq!(receipts, ["r1", "r2"]);
    assert_eq!(bodies, ["1", "2"]);

    // The engine gone: an ERROR, never a RECEIPT.
    nats.servers[0].kill();
    client
        .send(send("/topic/score.x", "lost").header("receipt", "never"))
        .await;
    // The engine's answer is waited for up to its request timeout (5 s).
    let error = loop {
        match client.event_within(Duration::from_secs(30)).await {
            Some(Event::Frame(frame)) if frame.command == Command::Message => {}
            Some(Event::Frame(frame)) => break frame,
            Some(Event::HeartBeat) => {}
            other => panic!("expected an ERROR, got {other:?}"),
        }
    };
    assert_eq!(error.command, Command::Error, "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains("was not stored"), "{message}");
    drop(node);
}

/// A broker process on `nats` (its server list rotated by `n`) with a
/// history rule for `/topic/live.*`, and its directory.
fn feed_process(nats: &NatsCluster, n: usize) -> (BrokerProcess, tempfile::TempDir) {
    let mut servers = nats.urls();
    let len = servers.len();
    servers.rotate_left(n % len);
    let list: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    let config = format!(
        "[cluster]\nengine = \"nats\"\nservers = [{}]\nnode_name = \"p{n}\"\nconnect_timeout = \"30s\"\n\n\
         [[topics.rules]]\npattern = \"/topic/live.*\"\nhistory = 50\nretain = \"last\"\n",
        list.join(", ")
    );
    let dir = tempfile::tempdir().expect("temp dir");
    (BrokerProcess::start(&config, dir.path()), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_of_its_node_a_client_resumes_on_another_with_nothing_lost() {
    let nats = NatsCluster::start(3);
    let (doomed, _doomed_dir) = feed_process(&nats, 0);
    let (survivor, _survivor_dir) = feed_process(&nats, 1);
    let mut fan = Client::connect(&doomed.url).await;
    fan.subscribe_with("s", "/topic/live.1", &[("x-stream-offset", "next")])
        .await;
    // Receipted on the node that dies: the engine has them.
    let mut on_doomed = Client::connect(&doomed.url).await;
    for n in 1..=3 {
        on_doomed
            .send_confirmed(send("/topic/live.1", &n.to_string()), "p")
            .await;
    }
    let first = messages(&mut fan, 1).await;
    let epoch = first[0].get("x-epoch").expect("epoch").to_owned();
    let mut seen = vec![body(&first[0])];
    let mut last = offset(&first[0]);
    doomed.kill();
    // Whatever else reached the client before its node died.
    while let Some(event) = fan.event_within(Duration::from_secs(30)).await {
        match event {
            Event::Frame(frame) if frame.command == Command::Message => {
                last = offset(&frame);
                seen.push(body(&frame));
            }
            Event::Closed(_) => break,
            _ => {}
        }
    }
    let mut on_survivor = Client::connect(&survivor.url).await;
    for n in 4..=5 {
        on_survivor
            .send_confirmed(send("/topic/live.1", &n.to_string()), "p")
            .await;
    }

    let mut back = Client::connect(&survivor.url).await;
    let from = format!("offset={}", last + 1);
    let (snapshot, receipt) = subscribe_snapshot(
        &mut back,
        "s",
        "/topic/live.1",
        &[("x-stream-offset", &from), ("x-epoch", &epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("true"), "{snapshot:?}");
    on_survivor
        .send_confirmed(send("/topic/live.1", "6"), "p")
        .await;
    let mut resumed = snapshot;
    while resumed.last().map(body).as_deref() != Some("6") {
        resumed.push(back.message().await);
    }
    seen.extend(resumed.iter().map(body));
    assert_eq!(
        seen,
        ["1", "2", "3", "4", "5", "6"],
        "before the kill, then resumed on the other node: each once, in order"
    );
    survivor.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_stream_made_anew_is_a_new_epoch_and_old_offsets_do_not_resume() {
    let nats = NatsCluster::start(1);
    let rules = [rule("/topic/ep.*", 10, Retain::Last)];
    let node = node(&nats, 0, &rules).await;
    let mut client = Client::connect(&node.url()).await;
    client
        .send_confirmed(send("/topic/ep.a", "before"), "p")
        .await;
    let (old, _) = subscribe_snapshot(&mut client, "s", "/topic/ep.a", &[]).await;
    let old_epoch = old[0].get("x-epoch").expect("epoch").to_owned();
    let old_offset = offset(&old[0]);

    // The engine loses the stream (deleted here); the node makes it again.
    let engine = async_nats::connect(nats.urls()[0].as_str())
        .await
        .expect("connect");
    let jetstream = async_nats::jetstream::new(engine);
    jetstream
        .delete_stream("stomphub_feeds")
        .await
        .expect("delete the feed stream");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while jetstream.get_stream("stomphub_feeds").await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node makes the stream again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .send(send("/topic/ep.a", "after").header("receipt", "p"))
        .await;
    // The RECEIPT comes once this node has read the message back, so the
    // subscription's MESSAGE comes first.
    let after = client.message().await;
    assert_eq!(body(&after), "after");
    client.expect_receipt("p").await;
    let new_epoch = after.get("x-epoch").expect("epoch").to_owned();
    assert_ne!(new_epoch, old_epoch, "a new epoch");

    // The old epoch's offsets do not resume: the last value instead.
    let from = format!("offset={}", old_offset + 1);
    let (reset, receipt) = subscribe_snapshot(
        &mut client,
        "r",
        "/topic/ep.a",
        &[("x-stream-offset", &from), ("x-epoch", &old_epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("false"));
    assert_eq!(reset.iter().map(body).collect::<Vec<_>>(), ["after"]);
    assert_eq!(reset[0].get("x-epoch"), Some(new_epoch.as_str()));
    node.shutdown().await;
}
