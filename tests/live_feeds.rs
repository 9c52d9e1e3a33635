//! Live feeds, black-box: offsets and epochs, the retained last value,
//! snapshot then live with no gap and no duplicate, where a subscription
//! starts (`x-stream-offset`), resuming with offset and epoch, history age
//! and byte bounds, and permissions over snapshots.

mod common;

use common::{start, subscribe_frame, test_config, Client};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use stomphub::config::{Anonymous, Retain, TopicRule, UserConfig};
use stomphub::Config;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn rule(pattern: &str, history: usize, retain: Retain) -> TopicRule {
    TopicRule {
        pattern: pattern.into(),
        history,
        history_age: None,
        retain,
        persistent: false,
    }
}

fn with_rules(rules: Vec<TopicRule>) -> Config {
    let mut config = test_config();
    config.topics.rules = rules;
    config
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

/// Sends SUBSCRIBE with `headers` and a receipt; returns the MESSAGEs that
/// came before the RECEIPT (the snapshot) and the RECEIPT.
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
            Command::Receipt => {
                assert_eq!(frame.get("receipt-id"), Some(receipt.as_str()));
                return (messages, frame);
            }
            _ => panic!("unexpected {frame:?}"),
        }
    }
}

/// Publishes with a receipt, so that what follows sees it kept.
async fn publish_confirmed(
    client: &mut Client,
    destination: &str,
    body: &str,
    extra: &[(&str, &str)],
) {
    let mut frame = Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned());
    for (name, value) in extra {
        frame = frame.header(*name, *value);
    }
    client.send_confirmed(frame, "p").await;
}

#[tokio::test]
async fn a_late_joiner_gets_the_retained_value_first_then_live() {
    let broker = start(with_rules(vec![rule("/topic/prices.*", 0, Retain::Last)])).await;
    let mut publisher = Client::connect(&broker.url()).await;
    publish_confirmed(&mut publisher, "/topic/prices.acme", "1", &[]).await;
    // A forged offset is not passed on: the broker's own is the only one.
    publish_confirmed(
        &mut publisher,
        "/topic/prices.acme",
        "2",
        &[("x-offset", "999")],
    )
    .await;

    let mut late = Client::connect(&broker.url()).await;
    let (snapshot, receipt) = subscribe_snapshot(&mut late, "s", "/topic/prices.acme", &[]).await;
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert_eq!(body(&snapshot[0]), "2");
    assert_eq!(snapshot[0].get("x-retained"), Some("true"));
    assert_eq!(offset(&snapshot[0]), 2);
    let epoch = snapshot[0].get("x-epoch").expect("x-epoch").to_owned();
    assert_eq!(receipt.get("x-recovered"), None, "only offset= recovers");

    publisher.publish("/topic/prices.acme", "3").await;
    let live = late.message().await;
    assert_eq!(body(&live), "3");
    assert_eq!(offset(&live), 3);
    assert_eq!(live.get("x-epoch"), Some(epoch.as_str()));
    assert_eq!(live.get("x-retained"), None);

    // Plain fan-out is unchanged: no offsets where nothing is kept.
    let mut plain = Client::connect(&broker.url()).await;
    plain.subscribe("p", "/topic/news").await;
    publisher.publish("/topic/news", "n").await;
    let news = plain.message().await;
    assert_eq!(news.get("x-offset"), None, "{news:?}");
    broker.shutdown().await;
}

/// Client-ack subscribers get the two feed headers too (the router delivers
/// to them from the message, not from the fan-out's frames), once each and
/// equal to what auto-ack subscribers get.
#[tokio::test]
async fn client_ack_and_auto_ack_subscribers_get_the_same_offsets_once() {
    let broker = start(with_rules(vec![rule("/topic/ticks.*", 5, Retain::None)])).await;
    let mut auto = Client::connect(&broker.url()).await;
    auto.subscribe("a", "/topic/ticks.x").await;
    let mut acking = Client::connect(&broker.url()).await;
    acking
        .subscribe_with("c", "/topic/ticks.x", &[("ack", "client-individual")])
        .await;
    let mut publisher = Client::connect(&broker.url()).await;
    for n in 1..=3 {
        publisher.publish("/topic/ticks.x", &n.to_string()).await;
    }
    for n in 1..=3 {
        let plain = auto.message().await;
        let routed = acking.message().await;
        assert!(routed.get("ack").is_some(), "from the router: {routed:?}");
        for frame in [&plain, &routed] {
            assert_eq!(offset(frame), n, "{frame:?}");
            let stamps = frame
                .headers
                .iter()
                .filter(|(name, _)| *name == "x-offset" || *name == "x-epoch")
                .count();
            assert_eq!(stamps, 2, "x-offset and x-epoch once each: {frame:?}");
        }
        assert_eq!(plain.get("x-epoch"), routed.get("x-epoch"));
    }
    broker.shutdown().await;
}

// Several workers: the router, the publishing session and the readers
// really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_live_has_no_gap_and_no_duplicate_under_a_full_speed_publisher() {
    let mut config = with_rules(vec![rule("/topic/feed.*", 0, Retain::Last)]);
    // What is checked is the seam between snapshot and live, not the
    // slow-consumer limit: a subscriber a busy machine leaves behind the
    // full-speed publisher for a while must not be cut off.
    config.outbound.max_queued_frames = 1 << 20;
    config.outbound.max_queued_bytes = 256 << 20;
    let broker = start(config).await;
    let url = broker.url();
    let mut publisher = Client::connect(&url).await;
    publish_confirmed(&mut publisher, "/topic/feed.x", "seed", &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = stop.clone();
    let flood = tokio::spawn(async move {
        let mut n = 0u64;
        while !running.load(Ordering::Relaxed) {
            publisher.publish("/topic/feed.x", &n.to_string()).await;
            n += 1;
            if n.is_multiple_of(64) {
                // Let the subscribers' readers keep up on a small machine.
                tokio::task::yield_now().await;
            }
        }
        n
    });
    for round in 0..50 {
        let mut subscriber = Client::connect(&url).await;
        // The RECEIPT follows the snapshot; live messages published after
        // the snapshot was taken may come before the RECEIPT too.
        let (before_receipt, _) =
            subscribe_snapshot(&mut subscriber, "s", "/topic/feed.x", &[]).await;
        let retained = before_receipt.first().expect("the retained value");
        assert_eq!(retained.get("x-retained"), Some("true"), "round {round}");
        let mut last = offset(retained);
        let mut live_seen = 0;
        for live in &before_receipt[1..] {
            assert_eq!(
                live.get("x-retained"),
                None,
                "round {round}: one retained value"
            );
            assert_eq!(offset(live), last + 1, "round {round}: gap or duplicate");
            last += 1;
            live_seen += 1;
        }
        while live_seen < 20 {
            let live = subscriber.message().await;
            assert_eq!(live.get("x-retained"), None);
            let next = offset(&live);
            assert_eq!(next, last + 1, "round {round}: gap or duplicate");
            last = next;
            live_seen += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.await.expect("publisher");
    assert!(sent > 1000, "the publisher ran at speed: {sent}");
    broker.shutdown().await;
}

// Several workers: the router, the publishing session and the readers
// really run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_publishers_at_full_speed_give_every_subscriber_increasing_offsets() {
    let broker = start(with_rules(vec![rule("/topic/one", 0, Retain::Last)])).await;
    let url = broker.url();
    let mut subscribers = Vec::new();
    for n in 0..2 {
        let mut subscriber = Client::connect(&url).await;
        subscriber
            .subscribe_with(
                &format!("s{n}"),
                "/topic/one",
                &[("x-stream-offset", "next")],
            )
            .await;
        subscribers.push(subscriber);
    }
    const EACH: usize = 300;
    let mut publishers = Vec::new();
    for p in 0..4 {
        let url = url.clone();
        publishers.push(tokio::spawn(async move {
            let mut publisher = Client::connect(&url).await;
            for n in 0..EACH {
                publisher.publish("/topic/one", &format!("{p}-{n}")).await;
            }
            publisher
                .send_confirmed(Frame::new(Command::Disconnect), "bye")
                .await;
        }));
    }
    for subscriber in &mut subscribers {
        let mut per_publisher = [0usize; 4];
        for expected in 1..=(4 * EACH) as u64 {
            let message = subscriber.message().await;
            assert_eq!(offset(&message), expected, "offsets in order, none missing");
            let text = body(&message);
            let (p, n) = text.split_once('-').expect("p-n");
            let p: usize = p.parse().expect("publisher");
            assert_eq!(
                n.parse::<usize>().expect("n"),
                per_publisher[p],
                "publisher order"
            );
            per_publisher[p] += 1;
        }
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn a_wildcard_snapshot_has_every_matching_destination_up_to_its_bound() {
    let mut config = with_rules(vec![rule("/topic/prices.*", 0, Retain::Last)]);
    config.topics.max_snapshot_destinations = 5;
    let broker = start(config).await;
    let mut publisher = Client::connect(&broker.url()).await;
    for symbol in ["h", "g", "f", "e", "d", "c", "b", "a"] {
        publish_confirmed(
            &mut publisher,
            &format!("/topic/prices.{symbol}"),
            symbol,
            &[],
        )
        .await;
    }
    // No rule: x-retain:true retains all the same.
    publish_confirmed(
        &mut publisher,
        "/topic/other.z",
        "z",
        &[("x-retain", "true")],
    )
    .await;

    let mut late = Client::connect(&broker.url()).await;
    let (snapshot, _) = subscribe_snapshot(&mut late, "s", "/topic/prices.*", &[]).await;
    let bodies: Vec<String> = snapshot.iter().map(body).collect();
    assert_eq!(bodies, ["a", "b", "c", "d", "e"], "bounded, in name order");
    assert!(snapshot.iter().all(|m| m.get("x-retained") == Some("true")));

    let (snapshot, _) = subscribe_snapshot(&mut late, "t", "/topic/other.#", &[]).await;
    assert_eq!(snapshot.iter().map(body).collect::<Vec<_>>(), ["z"]);
    broker.shutdown().await;
}

#[tokio::test]
async fn x_stream_offset_next_last_first_and_timestamp() {
    let broker = start(with_rules(vec![rule("/topic/h.*", 10, Retain::Last)])).await;
    let mut publisher = Client::connect(&broker.url()).await;
    for n in 1..=5 {
        publish_confirmed(&mut publisher, "/topic/h.x", &n.to_string(), &[]).await;
    }
    let mut client = Client::connect(&broker.url()).await;
    let bodies = |frames: &[Frame]| frames.iter().map(body).collect::<Vec<_>>();

    let (next, _) = subscribe_snapshot(
        &mut client,
        "next",
        "/topic/h.x",
        &[("x-stream-offset", "next")],
    )
    .await;
    assert!(next.is_empty(), "{next:?}");
    let (last, _) = subscribe_snapshot(
        &mut client,
        "last",
        "/topic/h.x",
        &[("x-stream-offset", "last")],
    )
    .await;
    assert_eq!(bodies(&last), ["5"]);
    assert_eq!(last[0].get("x-retained"), Some("true"));
    let (default, _) = subscribe_snapshot(&mut client, "default", "/topic/h.x", &[]).await;
    assert_eq!(
        bodies(&default),
        ["5"],
        "last is the default where a rule keeps"
    );
    let (first, _) = subscribe_snapshot(
        &mut client,
        "first",
        "/topic/h.x",
        &[("x-stream-offset", "first")],
    )
    .await;
    assert_eq!(bodies(&first), ["1", "2", "3", "4", "5"]);
    assert_eq!(
        first.iter().map(offset).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(first.iter().all(|m| m.get("x-retained").is_none()));
    let (since, _) = subscribe_snapshot(
        &mut client,
        "ts0",
        "/topic/h.x",
        &[("x-stream-offset", "timestamp=0")],
    )
    .await;
    assert_eq!(since.len(), 5);
    let (future, _) = subscribe_snapshot(
        &mut client,
        "ts-future",
        "/topic/h.x",
        &[("x-stream-offset", "timestamp=99999999999")],
    )
    .await;
    assert!(future.is_empty());

    // Every one of them then gets the live stream.
    publisher.publish("/topic/h.x", "6").await;
    for _ in 0..6 {
        let live = client.message().await;
        assert_eq!(body(&live), "6");
        assert_eq!(offset(&live), 6);
    }

    // Refused with a clear ERROR: a bad value, offset= over a wildcard, a
    // client-ack subscription, a queue.
    for (destination, headers, needle) in [
        (
            "/topic/h.x",
            vec![("x-stream-offset", "yesterday")],
            "is not one of next",
        ),
        (
            "/topic/h.*",
            vec![("x-stream-offset", "offset=1"), ("x-epoch", "e")],
            "without wildcards",
        ),
        (
            "/topic/h.x",
            vec![("x-stream-offset", "offset=1")],
            "needs an x-epoch",
        ),
        (
            "/topic/h.x",
            vec![("x-stream-offset", "first"), ("ack", "client")],
            "needs ack:auto",
        ),
        (
            "/queue/q",
            vec![("x-stream-offset", "first")],
            "/topic/ subscriptions only",
        ),
    ] {
        let mut refused = Client::connect(&broker.url()).await;
        refused.send_subscribe("s", destination, &headers).await;
        refused.expect_error(needle, CloseCode::Protocol).await;
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn resume_with_offset_and_epoch_recovers_every_missed_message_or_says_it_cannot() {
    let broker = start(with_rules(vec![rule("/topic/game.*", 5, Retain::Last)])).await;
    let mut publisher = Client::connect(&broker.url()).await;
    let mut fan = Client::connect(&broker.url()).await;
    fan.subscribe_with("s", "/topic/game.1", &[("x-stream-offset", "next")])
        .await;
    for n in 1..=3 {
        publisher.publish("/topic/game.1", &n.to_string()).await;
    }
    let mut seen = 0;
    let mut epoch = String::new();
    for _ in 0..3 {
        let message = fan.message().await;
        seen = offset(&message);
        epoch = message.get("x-epoch").expect("epoch").to_owned();
    }
    drop(fan); // a forced disconnect
    for n in 4..=6 {
        publish_confirmed(&mut publisher, "/topic/game.1", &n.to_string(), &[]).await;
    }

    let mut back = Client::connect(&broker.url()).await;
    let from = format!("offset={}", seen + 1);
    let (missed, receipt) = subscribe_snapshot(
        &mut back,
        "s",
        "/topic/game.1",
        &[("x-stream-offset", &from), ("x-epoch", &epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("true"));
    assert_eq!(missed.iter().map(offset).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(missed[0].get("x-recovered"), Some("true"));
    publisher.publish("/topic/game.1", "7").await;
    assert_eq!(offset(&back.message().await), 7, "then live, no gap");

    // Nothing missed: recovered, nothing replayed.
    let (none, receipt) = subscribe_snapshot(
        &mut back,
        "t",
        "/topic/game.1",
        &[("x-stream-offset", "offset=8"), ("x-epoch", &epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("true"));
    assert!(none.is_empty());

    // Another epoch (a restart without persistence): not recovered, from last.
    for (from, epoch) in [("offset=4", "not-the-epoch"), ("offset=1", epoch.as_str())] {
        let mut other = Client::connect(&broker.url()).await;
        let (reset, receipt) = subscribe_snapshot(
            &mut other,
            "s",
            "/topic/game.1",
            &[("x-stream-offset", from), ("x-epoch", epoch)],
        )
        .await;
        assert_eq!(receipt.get("x-recovered"), Some("false"), "{from} {epoch}");
        assert_eq!(reset.len(), 1, "the last value only");
        assert_eq!(offset(&reset[0]), 7);
        assert_eq!(reset[0].get("x-recovered"), Some("false"));
        assert_eq!(reset[0].get("x-retained"), Some("true"));
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn an_empty_body_with_x_retain_deletes_the_retained_value() {
    let broker = start(test_config()).await;
    let mut publisher = Client::connect(&broker.url()).await;
    publish_confirmed(
        &mut publisher,
        "/topic/status",
        "up",
        &[("x-retain", "true")],
    )
    .await;
    let mut first = Client::connect(&broker.url()).await;
    let (snapshot, _) = subscribe_snapshot(&mut first, "s", "/topic/status", &[]).await;
    assert_eq!(snapshot.iter().map(body).collect::<Vec<_>>(), ["up"]);
    assert_eq!(offset(&snapshot[0]), 1);

    publish_confirmed(&mut publisher, "/topic/status", "", &[("x-retain", "true")]).await;
    let deleted = first.message().await;
    assert_eq!(offset(&deleted), 2, "the deletion is delivered live");
    let mut later = Client::connect(&broker.url()).await;
    let (snapshot, _) = subscribe_snapshot(&mut later, "s", "/topic/status", &[]).await;
    assert!(snapshot.is_empty(), "{snapshot:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn history_older_than_history_age_is_dropped_but_the_retained_value_stays() {
    let mut aged = rule("/topic/aged.*", 10, Retain::None);
    // Long enough that "young" holds on a busy machine, whose subscribe
    // may come a second late.
    aged.history_age = Some(Duration::from_secs(3));
    let mut kept = rule("/topic/kept.*", 10, Retain::Last);
    kept.history_age = Some(Duration::from_secs(3));
    let broker = start(with_rules(vec![aged, kept])).await;
    let mut publisher = Client::connect(&broker.url()).await;
    for destination in ["/topic/aged.x", "/topic/kept.x"] {
        publish_confirmed(&mut publisher, destination, "old", &[]).await;
    }
    let mut client = Client::connect(&broker.url()).await;
    let (young, _) = subscribe_snapshot(
        &mut client,
        "a",
        "/topic/aged.x",
        &[("x-stream-offset", "first")],
    )
    .await;
    assert_eq!(young.len(), 1, "kept while young");
    // Expired once older than 3 s: subscribe again until it is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        let (old, _) = subscribe_snapshot(
            &mut client,
            &format!("b{attempt}"),
            "/topic/aged.x",
            &[("x-stream-offset", "first")],
        )
        .await;
        if old.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not expired 10 s after publishing: {old:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (retained, _) = subscribe_snapshot(&mut client, "c", "/topic/kept.x", &[]).await;
    assert_eq!(
        retained.iter().map(body).collect::<Vec<_>>(),
        ["old"],
        "retain outlives the age"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn kept_history_stays_within_max_history_bytes_newest_first() {
    let mut config = with_rules(vec![rule("/topic/big.*", 1000, Retain::None)]);
    config.topics.max_history_bytes = 4096;
    let broker = start(config).await;
    let mut publisher = Client::connect(&broker.url()).await;
    let payload = "x".repeat(200);
    for _ in 0..100 {
        publisher.publish("/topic/big.x", &payload).await;
    }
    publish_confirmed(&mut publisher, "/topic/big.x", &payload, &[]).await;
    let mut client = Client::connect(&broker.url()).await;
    let (history, _) = subscribe_snapshot(
        &mut client,
        "s",
        "/topic/big.x",
        &[("x-stream-offset", "first")],
    )
    .await;
    assert!(!history.is_empty());
    assert!(history.len() * 200 <= 4096, "{} kept", history.len());
    let offsets: Vec<u64> = history.iter().map(offset).collect();
    assert_eq!(*offsets.last().expect("one"), 101, "the newest are kept");
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    broker.shutdown().await;
}

#[tokio::test]
async fn no_snapshot_of_a_destination_the_subscriber_may_not_read() {
    let mut config = with_rules(vec![rule("/topic/#", 0, Retain::Last)]);
    config.auth.anonymous = Anonymous::Never;
    config.auth.failure_delay = Duration::from_millis(10);
    config.auth.users = vec![
        UserConfig {
            login: "alice".into(),
            password_hash: stomphub::auth::password::hash("wonderland").expect("hash"),
            read: vec!["/topic/#".into()],
            write: vec!["/topic/#".into()],
            roles: Vec::new(),
        },
        UserConfig {
            login: "bob".into(),
            password_hash: stomphub::auth::password::hash("builder").expect("hash"),
            read: vec!["/topic/public.#".into()],
            write: Vec::new(),
            roles: Vec::new(),
        },
    ];
    let broker = start(config).await;
    let login = |login: &'static str, passcode: &'static str| {
        let url = broker.url();
        async move {
            let mut client = Client::open(&url, &["v12.stomp"]).await;
            client
                .send(
                    Frame::new(Command::Connect)
                        .header("accept-version", "1.2")
                        .header("login", login)
                        .header("passcode", passcode),
                )
                .await;
            assert_eq!(client.frame().await.command, Command::Connected);
            client
        }
    };
    let mut alice = login("alice", "wonderland").await;
    publish_confirmed(&mut alice, "/topic/public.news", "public", &[]).await;
    publish_confirmed(&mut alice, "/topic/private.plans", "secret", &[]).await;

    let mut bob = login("bob", "builder").await;
    let (snapshot, _) = subscribe_snapshot(&mut bob, "p", "/topic/public.#", &[]).await;
    assert_eq!(snapshot.iter().map(body).collect::<Vec<_>>(), ["public"]);
    // A wildcard over mixed permissions is refused whole: nothing of the
    // private destination comes before the ERROR.
    bob.send_subscribe("all", "/topic/#", &[("x-stream-offset", "first")])
        .await;
    let error = bob.frame().await;
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(error
        .get("message")
        .unwrap_or_default()
        .contains("read access"));
    // Nor a subscriber count of it.
    let mut bob = login("bob", "builder").await;
    bob.send_subscribe("n", "/meta/subscribers/topic/private.plans", &[])
        .await;
    bob.expect_error(
        "read access to '/topic/private.plans' denied",
        CloseCode::Policy,
    )
    .await;
    broker.shutdown().await;
}

#[tokio::test]
async fn a_persistent_feed_keeps_its_epoch_offsets_and_retained_value_across_a_restart() {
    const CONFIG: &str = "[[topics.rules]]\npattern = \"/topic/kept.*\"\nhistory = 3\nretain = \"last\"\npersistent = true\n\n[[topics.rules]]\npattern = \"/topic/memory.*\"\nhistory = 3\nretain = \"last\"\n";
    let dir = tempfile::tempdir().expect("dir");
    let broker = common::BrokerProcess::start(CONFIG, dir.path());
    let mut publisher = Client::connect(&broker.url).await;
    for n in 1..=5 {
        publish_confirmed(&mut publisher, "/topic/kept.x", &n.to_string(), &[]).await;
        publish_confirmed(&mut publisher, "/topic/memory.x", &n.to_string(), &[]).await;
    }
    let mut fan = Client::connect(&broker.url).await;
    let (before, _) = subscribe_snapshot(&mut fan, "s", "/topic/kept.x", &[]).await;
    let epoch = before[0].get("x-epoch").expect("epoch").to_owned();
    let (memory, _) = subscribe_snapshot(&mut fan, "m", "/topic/memory.x", &[]).await;
    let memory_epoch = memory[0].get("x-epoch").expect("epoch").to_owned();
    // SIGKILL: only what the RECEIPTs promised (synced) may be relied on.
    broker.kill();

    let broker = common::BrokerProcess::start(CONFIG, dir.path());
    let mut back = Client::connect(&broker.url).await;
    let (missed, receipt) = subscribe_snapshot(
        &mut back,
        "s",
        "/topic/kept.x",
        &[("x-stream-offset", "offset=4"), ("x-epoch", &epoch)],
    )
    .await;
    assert_eq!(
        receipt.get("x-recovered"),
        Some("true"),
        "epoch and history kept"
    );
    assert_eq!(missed.iter().map(body).collect::<Vec<_>>(), ["4", "5"]);
    let (first, _) = subscribe_snapshot(
        &mut back,
        "f",
        "/topic/kept.x",
        &[("x-stream-offset", "first")],
    )
    .await;
    assert_eq!(
        first.iter().map(offset).collect::<Vec<_>>(),
        [3, 4, 5],
        "history bound kept"
    );
    // Kept messages carry no x-offset or x-epoch of their own (frames are
    // given them): the ones the store keeps must not come out twice.
    for frame in before.iter().chain(&missed).chain(&first) {
        let stamps = frame
            .headers
            .iter()
            .filter(|(name, _)| *name == "x-offset" || *name == "x-epoch")
            .count();
        assert_eq!(stamps, 2, "x-offset and x-epoch once each: {frame:?}");
    }
    publisher = Client::connect(&broker.url).await;
    publish_confirmed(&mut publisher, "/topic/kept.x", "6", &[]).await;
    let live = back.message().await;
    assert_eq!(
        (offset(&live), live.get("x-epoch")),
        (6, Some(epoch.as_str())),
        "offsets go on"
    );
    assert_eq!(
        offset(&back.message().await),
        6,
        "the second subscription too"
    );

    // Not persistent: history lost, a new epoch, not recovered.
    let (reset, receipt) = subscribe_snapshot(
        &mut back,
        "m",
        "/topic/memory.x",
        &[("x-stream-offset", "offset=4"), ("x-epoch", &memory_epoch)],
    )
    .await;
    assert_eq!(receipt.get("x-recovered"), Some("false"));
    assert!(reset.is_empty(), "nothing kept: {reset:?}");
    let mut late = Client::connect(&broker.url).await;
    let (retained, _) = subscribe_snapshot(&mut late, "s", "/topic/kept.x", &[]).await;
    assert_eq!(retained.iter().map(body).collect::<Vec<_>>(), ["6"]);
    assert_eq!(retained[0].get("x-retained"), Some("true"));
    drop(broker);
}

#[tokio::test]
async fn subscriber_counts_come_at_once_then_on_change_at_most_once_a_second() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let mut watcher = Client::connect(&url).await;
    let count_of = |frame: &Frame| -> usize {
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        let n: usize = frame
            .get("x-subscribers")
            .and_then(|n| n.parse().ok())
            .expect("x-subscribers");
        let json: serde_json::Value = serde_json::from_slice(&frame.body).expect("JSON body");
        assert_eq!(json["destination"], "/topic/scores.game42");
        assert_eq!(json["subscribers"], n);
        n
    };
    // The clock starts before the SUBSCRIBE: the broker's own second starts
    // later, so "not before 900 ms" holds however late this client reads.
    let started = tokio::time::Instant::now();
    let (now, _) = subscribe_snapshot(
        &mut watcher,
        "w",
        "/meta/subscribers/topic/scores.game42",
        &[],
    )
    .await;
    assert_eq!(now.len(), 1);
    assert_eq!(count_of(&now[0]), 0);
    assert_eq!(
        now[0].get("destination"),
        Some("/meta/subscribers/topic/scores.game42")
    );

    let mut fans = Vec::new();
    for (id, destination) in [
        ("a", "/topic/scores.game42"),
        ("b", "/topic/scores.game42"),
        ("c", "/topic/scores.*"),
        ("d", "/topic/other"),
    ] {
        let mut fan = Client::connect(&url).await;
        fan.subscribe(id, destination).await;
        fans.push(fan);
    }
    // Three changes, usually one count (two if the fans took over a second
    // to get in); /topic/other is not counted.
    let mut previous = 0;
    loop {
        let changed = watcher.message().await;
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "at most once a second"
        );
        let count = count_of(&changed);
        assert!((previous..=3).contains(&count), "{previous} then {count}");
        if count == 3 {
            break;
        }
        previous = count;
    }
    watcher.expect_silence(Duration::from_millis(300)).await;

    drop(fans.remove(0)); // a fan goes away
    let changed = watcher.message().await;
    assert_eq!(count_of(&changed), 2);

    // Refused: wildcards, and counts that are not acknowledged.
    for (destination, headers) in [
        ("/meta/subscribers/topic/scores.*", vec![]),
        ("/meta/subscribers/queue/jobs", vec![]),
        (
            "/meta/subscribers/topic/scores.game42",
            vec![("ack", "client")],
        ),
    ] {
        let mut refused = Client::connect(&url).await;
        refused.send_subscribe("s", destination, &headers).await;
        refused.expect_error("", CloseCode::Protocol).await;
    }
    broker.shutdown().await;
}
