//! The ordering promises, now that topic fan-out happens in the publishing
//! sessions and not in one router task: per-publisher order for every
//! subscriber (auto and client-ack, exact and wildcard, several publishers
//! at once), a RECEIPT after every MESSAGE its session caused, nothing after
//! an UNSUBSCRIBE's RECEIPT, a SUBSCRIBE's RECEIPT meaning every later
//! publish reaches it, a session seeing its own SUBSCRIBE and UNSUBSCRIBE
//! in order without receipts, publications the router handles whole
//! keeping their place, COMMIT, a slow disk not slowing non-persistent
//! topic traffic, and a slow consumer cut off by a publisher's push leaving
//! no state in the router.

mod common;

use common::{start, test_config, Client, Event};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};

fn body(frame: &Frame) -> String {
    String::from_utf8(frame.body.to_vec()).expect("utf8 body")
}

fn send(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned())
}

/// Reads `count` MESSAGEs; ACKs those that carry an `ack` header.
async fn messages(client: &mut Client, count: usize) -> Vec<Frame> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let frame = client.message().await;
        if frame.get("ack").is_some() {
            client.settle(&frame, false).await;
        }
        out.push(frame);
    }
    out
}

/// A subscription of the order test: id, pattern, ack mode, and the
/// publishers whose topics it matches.
type Planned = (&'static str, String, &'static str, Vec<usize>);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_subscriber_sees_each_publisher_in_order_with_nothing_lost_or_doubled() {
    const PUBLISHERS: usize = 4;
    const EACH: usize = 150;
    let broker = start(test_config()).await;
    let url = broker.url();
    // (client, [(subscription id, pattern, ack mode, publishers it matches)])
    let plans: Vec<Vec<Planned>> = vec![
        vec![(
            "all",
            "/topic/ord.*".into(),
            "auto",
            (0..PUBLISHERS).collect(),
        )],
        vec![(
            "all-acked",
            "/topic/ord.#".into(),
            "client",
            (0..PUBLISHERS).collect(),
        )],
        vec![
            ("p0", "/topic/ord.p0".into(), "auto", vec![0]),
            ("p1", "/topic/ord.p1".into(), "client-individual", vec![1]),
            ("any", "/topic/#".into(), "auto", (0..PUBLISHERS).collect()),
        ],
    ];
    let mut subscribers = Vec::new();
    for plan in &plans {
        let mut client = Client::connect(&url).await;
        for (id, pattern, ack, _) in plan {
            client
                .subscribe_with(id, pattern, &[("ack", ack), ("prefetch-count", "100000")])
                .await;
        }
        subscribers.push(client);
    }
    let mut tasks = Vec::new();
    for publisher in 0..PUBLISHERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&url).await;
            let topic = format!("/topic/ord.p{publisher}");
            for seq in 0..EACH {
                client
                    .send(send(&topic, &format!("{publisher}:{seq}")))
                    .await;
            }
            client
                .send_confirmed(send("/topic/elsewhere", "end"), "done")
                .await;
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    for (client, plan) in subscribers.iter_mut().zip(&plans) {
        let expected: usize = plan.iter().map(|(_, _, _, from)| from.len() * EACH).sum::<usize>()
            // `/topic/#` also gets the publishers' final "end" messages.
            + plan.iter().filter(|(_, p, _, _)| p == "/topic/#").count() * PUBLISHERS;
        let got = messages(client, expected).await;
        client.expect_silence(Duration::from_millis(200)).await;
        // subscription → publisher → the next sequence number expected.
        let mut next: HashMap<(String, usize), usize> = HashMap::new();
        for frame in &got {
            let subscription = frame.get("subscription").expect("subscription").to_owned();
            let text = body(frame);
            if text == "end" {
                continue;
            }
            let (publisher, seq) = text.split_once(':').expect("publisher:seq");
            let publisher: usize = publisher.parse().expect("publisher");
            let seq: usize = seq.parse().expect("seq");
            let expect = next.entry((subscription.clone(), publisher)).or_insert(0);
            assert_eq!(
                seq, *expect,
                "subscription {subscription}: publisher {publisher}'s messages out of order, lost or doubled"
            );
            *expect += 1;
        }
        for (id, _, _, from) in plan {
            for publisher in from {
                assert_eq!(
                    next.get(&(id.to_string(), *publisher)).copied(),
                    Some(EACH),
                    "subscription {id} got all of publisher {publisher}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_receipt_follows_every_message_it_caused_in_its_own_subscriptions() {
    let broker = start(test_config()).await;
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe_with("auto", "/topic/own.*", &[]).await;
    client
        .subscribe_with(
            "acked",
            "/topic/own.#",
            &[("ack", "client"), ("prefetch-count", "100000")],
        )
        .await;
    for round in 0..20 {
        for n in 0..10 {
            client
                .send(send("/topic/own.x", &format!("{round}.{n}")))
                .await;
        }
        let receipt = format!("r{round}");
        client
            .send(send("/topic/own.x", "last").header("receipt", &receipt))
            .await;
        // 11 messages on each of two subscriptions, then the RECEIPT.
        let mut seen = 0;
        loop {
            let frame = client.frame().await;
            match frame.command {
                Command::Message => seen += 1,
                Command::Receipt => {
                    assert_eq!(frame.get("receipt-id"), Some(receipt.as_str()));
                    break;
                }
                _ => panic!("unexpected {frame:?}"),
            }
        }
        assert_eq!(
            seen, 22,
            "round {round}: the RECEIPT came before its MESSAGEs"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_message_after_an_unsubscribe_receipt_while_a_publisher_floods() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = tokio::spawn({
        let url = url.clone();
        let stop = stop.clone();
        async move {
            let mut publisher = Client::connect(&url).await;
            let mut round = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for n in 0..50 {
                    publisher
                        .send(send("/topic/flood", &format!("{round}.{n}")))
                        .await;
                }
                // Paced by the broker: the subscriber never falls behind.
                publisher
                    .send_confirmed(send("/topic/other", "pace"), &format!("p{round}"))
                    .await;
                round += 1;
            }
        }
    });
    let mut subscriber = Client::connect(&url).await;
    let mut ended: HashSet<String> = HashSet::new();
    for i in 0..200 {
        let id = format!("s{i}");
        let ack = if i % 2 == 0 {
            "auto"
        } else {
            "client-individual"
        };
        // Checks every frame against subscriptions already ended.
        let check = |frame: &Frame, ended: &HashSet<String>| {
            if frame.command == Command::Message {
                let subscription = frame.get("subscription").unwrap_or_default();
                assert!(
                    !ended.contains(subscription),
                    "MESSAGE for {subscription} after its UNSUBSCRIBE's RECEIPT"
                );
            }
        };
        subscriber
            .send(
                Frame::new(Command::Subscribe)
                    .header("id", &id)
                    .header("destination", "/topic/flood")
                    .header("ack", ack),
            )
            .await;
        // Unsubscribe while the flood is reaching this subscription.
        loop {
            let frame = subscriber.frame().await;
            check(&frame, &ended);
            if frame.get("subscription") == Some(id.as_str()) {
                break;
            }
        }
        subscriber
            .send(
                Frame::new(Command::Unsubscribe)
                    .header("id", &id)
                    .header("receipt", format!("unsub-{i}")),
            )
            .await;
        loop {
            let frame = subscriber.frame().await;
            check(&frame, &ended);
            if frame.command == Command::Receipt
                && frame.get("receipt-id") == Some(format!("unsub-{i}").as_str())
            {
                break;
            }
        }
        ended.insert(id);
    }
    stop.store(true, Ordering::Relaxed);
    flood.await.expect("publisher");
    // Whatever is still on its way must not belong to an ended subscription.
    while let Some(event) = subscriber.event_within(Duration::from_millis(200)).await {
        match event {
            Event::Frame(frame) => {
                let subscription = frame.get("subscription").unwrap_or_default();
                assert!(
                    !ended.contains(subscription),
                    "late MESSAGE for {subscription}"
                );
            }
            Event::HeartBeat => {}
            Event::Closed(code) => panic!("closed: {code:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribe_receipt_means_the_next_publish_reaches_it() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    let mut publisher = Client::connect(&url).await;
    for i in 0..200 {
        let ack = if i % 2 == 0 { "auto" } else { "client" };
        let topic = format!("/topic/join.{i}");
        subscriber
            .subscribe_with(&format!("s{i}"), &topic, &[("ack", ack)])
            .await;
        publisher.send(send(&topic, &format!("m{i}"))).await;
        let message = subscriber.message().await;
        assert_eq!(message.get("subscription"), Some(format!("s{i}").as_str()));
        assert_eq!(body(&message), format!("m{i}"));
        if message.get("ack").is_some() {
            subscriber.settle(&message, false).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_sees_its_own_subscribe_and_unsubscribe_in_order_without_receipts() {
    let broker = start(test_config()).await;
    let mut client = Client::connect(&broker.url()).await;
    for i in 0..100 {
        let topic = format!("/topic/self.{i}");
        let id = format!("s{i}");
        client
            .send(
                Frame::new(Command::Subscribe)
                    .header("id", &id)
                    .header("destination", &topic),
            )
            .await;
        client.send(send(&topic, "in")).await;
        client
            .send(Frame::new(Command::Unsubscribe).header("id", &id))
            .await;
        client
            .send(send(&topic, "out").header("receipt", format!("r{i}")))
            .await;
        let message = client.message().await;
        assert_eq!(body(&message), "in", "the SEND after SUBSCRIBE reached it");
        client.expect_receipt(&format!("r{i}")).await;
    }
    client.expect_silence(Duration::from_millis(100)).await;
}

/// A disk that does not finish a sync until the test says so: a slow disk
/// whose slowness the test controls, so what it checks does not depend on
/// how fast a busy machine runs.
#[derive(Clone, Default)]
struct StuckDisk {
    open: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    syncing: Arc<AtomicBool>,
}

impl StuckDisk {
    /// Lets every sync finish, now and from now on.
    fn release(&self) {
        let (open, changed) = &*self.open;
        *open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        changed.notify_all();
    }
}

/// Releases the disk when the test ends, also when it panics, so the
/// broker's store thread can stop.
struct ReleaseOnDrop(StuckDisk);

impl Drop for ReleaseOnDrop {
    fn drop(&mut self) {
        self.0.release();
    }
}

struct SlowStore {
    disk: StuckDisk,
}

impl stomphub::store::Store for SlowStore {
    fn recover(
        &mut self,
    ) -> Result<Vec<stomphub::store::StoredQueue>, stomphub::store::StoreError> {
        Ok(Vec::new())
    }
    fn write(
        &mut self,
        _ops: &[stomphub::store::StoreOp],
    ) -> Result<(), stomphub::store::StoreError> {
        Ok(())
    }
    fn sync(&mut self) -> Result<(), stomphub::store::StoreError> {
        self.disk.syncing.store(true, Ordering::SeqCst);
        let (open, changed) = &*self.disk.open;
        let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
        while !*open {
            open = changed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        Ok(())
    }
    fn stored_bytes(&self) -> u64 {
        0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_disk_slows_persistent_queue_sends_but_not_topic_traffic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config();
    config.storage.data_dir = dir.path().to_path_buf();
    let disk = StuckDisk::default();
    let _release = ReleaseOnDrop(disk.clone());
    let store = SlowStore { disk: disk.clone() };
    let broker = stomphub::Broker::start_with_store(config, Box::new(store))
        .await
        .expect("starts");
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    subscriber.subscribe("live", "/topic/live").await;
    let mut topic_publisher = Client::connect(&url).await;

    // Persistent queue SENDs, the last with a receipt, start a sync that
    // does not finish until the test releases the disk (in the old design,
    // with every topic SEND in the same router, this stalled topics too).
    let persistent = tokio::spawn({
        let url = url.clone();
        async move {
            let mut producer = Client::connect(&url).await;
            for n in 0..2000 {
                producer
                    .send(send("/queue/disk", &format!("{n}")).header("persistent", "true"))
                    .await;
            }
            producer
                .send_confirmed(
                    send("/queue/disk", "sync").header("persistent", "true"),
                    "stored",
                )
                .await;
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !disk.syncing.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "no sync started in 10 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Topic traffic flows while the disk is stuck (a topic blocked behind
    // the sync would time out in `message()`).
    for round in 0..3 {
        for n in 0..200 {
            topic_publisher
                .send(send("/topic/live", &format!("{round}.{n}")))
                .await;
        }
        for n in 0..200 {
            let message = subscriber.message().await;
            assert_eq!(body(&message), format!("{round}.{n}"));
        }
    }
    assert!(
        !persistent.is_finished(),
        "a persistent SEND's RECEIPT waits for its sync"
    );
    disk.release();
    tokio::time::timeout(Duration::from_secs(10), persistent)
        .await
        .expect("the RECEIPT follows the sync")
        .expect("producer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publications_the_router_handles_whole_keep_their_place_in_line() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    subscriber.subscribe("live", "/topic/line").await;
    let mut publisher = Client::connect(&url).await;
    for round in 0..50 {
        // The middle one creates a reply queue first, in the router.
        publisher
            .send(send("/topic/line", &format!("{round}.a")))
            .await;
        publisher
            .send(send("/topic/line", &format!("{round}.b")).header("reply-to", "/temp-queue/r"))
            .await;
        publisher
            .send(send("/topic/line", &format!("{round}.c")))
            .await;
    }
    for round in 0..50 {
        for part in ["a", "b", "c"] {
            assert_eq!(body(&subscriber.message().await), format!("{round}.{part}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_commit_receipt_follows_its_topic_messages_in_order() {
    let broker = start(test_config()).await;
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe_with("auto", "/topic/tx", &[]).await;
    client
        .subscribe_with("acked", "/topic/tx", &[("ack", "client-individual")])
        .await;
    for round in 0..20 {
        let tx = format!("t{round}");
        client
            .send(Frame::new(Command::Begin).header("transaction", &tx))
            .await;
        for n in 0..3 {
            client
                .send(send("/topic/tx", &format!("{round}.{n}")).header("transaction", &tx))
                .await;
        }
        client
            .send(
                Frame::new(Command::Commit)
                    .header("transaction", &tx)
                    .header("receipt", format!("c{round}")),
            )
            .await;
        let mut next: HashMap<String, usize> = HashMap::new();
        for _ in 0..6 {
            let message = client.message().await;
            let subscription = message
                .get("subscription")
                .expect("subscription")
                .to_owned();
            let n = next.entry(subscription).or_insert(0);
            assert_eq!(body(&message), format!("{round}.{n}"));
            *n += 1;
            if message.get("ack").is_some() {
                client.settle(&message, false).await;
            }
        }
        client.expect_receipt(&format!("c{round}")).await;
    }
}

/// Subscribes on a fresh connection; whether the broker took it (RECEIPT)
/// rather than refusing it (ERROR).
async fn try_subscribe(url: &str, topic: &str) -> bool {
    let mut client = Client::connect(url).await;
    client
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "new")
                .header("destination", topic)
                .header("receipt", "joined"),
        )
        .await;
    client.frame().await.command == Command::Receipt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_consumer_cut_off_by_a_direct_push_leaves_no_state_behind() {
    let mut config = test_config();
    config.outbound.max_queued_bytes = 64 * 1024;
    config.outbound.max_queued_frames = 256;
    // The slow subscriber fills the server: another fits only once the
    // router has dropped the slow one.
    config.limits.max_subscriptions = 1;
    let broker = start(config).await;
    let url = broker.url();
    let mut slow = Client::connect(&url).await;
    slow.subscribe("s", "/topic/feed").await;
    assert!(!try_subscribe(&url, "/topic/other").await, "full at first");

    // 16 MB for a reader that reads nothing: far past its budget and what
    // socket buffers hold. Paced by receipts so the publisher never waits
    // on anything but the broker.
    let mut publisher = Client::connect(&url).await;
    let body = "x".repeat(4096);
    for round in 0..40 {
        for _ in 0..100 {
            publisher.publish("/topic/feed", &body).await;
        }
        publisher
            .send_confirmed(send("/topic/pace", "pace"), &format!("p{round}"))
            .await;
    }
    // It was cut off by the publisher's push, not by the router; its
    // Detach must still free its subscription.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if try_subscribe(&url, "/topic/other").await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the slow consumer's subscription was never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(slow);
}
