//! Durability against the real binary and real sled files: SIGKILL at any
//! moment loses nothing that was receipted, ACKs with receipts stick,
//! durable subscriptions of every dialect survive, the disk budget and store
//! failures turn SENDs into ERRORs and recover.

mod common;

use bytes::BytesMut;
use common::{BrokerProcess, Client};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = "[queues]\nredelivery_delay = \"50ms\"\n";

fn body(frame: &Frame) -> String {
    String::from_utf8(frame.body.to_vec()).expect("utf8")
}

fn persistent(destination: &str, text: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("persistent", "true")
        .body(text.to_owned())
}

/// Reads `count` MESSAGEs (each within the client's usual timeout), then
/// expects nothing more for 300 ms: exact, however slowly a busy machine
/// delivers them.
async fn drain(client: &mut Client, count: usize) -> Vec<Frame> {
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(client.message().await);
    }
    client.expect_silence(Duration::from_millis(300)).await;
    messages
}

#[tokio::test]
async fn receipted_messages_survive_sigkill_and_receipted_acks_stick() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = BrokerProcess::start(CONFIG, dir.path());
    let mut producer = Client::connect(&broker.url).await;
    for i in 0..5 {
        producer
            .send_confirmed(persistent("/queue/d", &format!("m{i}")), &format!("r{i}"))
            .await;
    }
    producer
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/d")
                .body("transient"),
            "rt",
        )
        .await;
    let mut consumer = Client::connect(&broker.url).await;
    consumer
        .subscribe_with("s", "/queue/d", &[("ack", "client-individual")])
        .await;
    let first: Vec<Frame> = drain(&mut consumer, 6).await;
    assert_eq!(
        first.iter().map(body).collect::<Vec<_>>(),
        ["m0", "m1", "m2", "m3", "m4", "transient"]
    );
    // m0: ACK with a receipt; everything else unsettled.
    let ack = first[0].get("ack").expect("ack").to_owned();
    consumer
        .send_confirmed(Frame::new(Command::Ack).header("id", &ack), "acked")
        .await;
    broker.kill();

    let broker = BrokerProcess::start(CONFIG, dir.path());
    let mut consumer = Client::connect(&broker.url).await;
    consumer
        .subscribe_with("s", "/queue/d", &[("ack", "client-individual")])
        .await;
    let again = drain(&mut consumer, 4).await;
    assert_eq!(
        again.iter().map(body).collect::<Vec<_>>(),
        ["m1", "m2", "m3", "m4"],
        "the receipted ACK stuck; non-persistent messages are not kept"
    );
    for message in &again {
        assert_eq!(message.get("redelivered"), Some("true"));
        assert_eq!(
            message.get("x-delivery-count"),
            Some("1"),
            "the delivery count survived"
        );
    }
}

/// One dialect of durable topic subscription: how to subscribe and how to
/// delete it, as header lists.
struct Dialect {
    name: &'static str,
    subscribe: &'static [(&'static str, &'static str)],
    unsubscribe: &'static [(&'static str, &'static str)],
}

const DIALECTS: [Dialect; 3] = [
    Dialect {
        name: "artemis",
        subscribe: &[("durable-subscription-name", "news")],
        unsubscribe: &[("durable-subscription-name", "news")],
    },
    Dialect {
        name: "activemq",
        subscribe: &[("activemq.subscriptionName", "news")],
        unsubscribe: &[("activemq.subscriptionName", "news")],
    },
    Dialect {
        name: "rabbitmq",
        subscribe: &[("durable", "true"), ("auto-delete", "false")],
        unsubscribe: &[("durable", "true")],
    },
];

#[tokio::test]
async fn durable_subscriptions_of_every_dialect_survive_disconnect_and_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = BrokerProcess::start(CONFIG, dir.path());
    for dialect in &DIALECTS {
        let topic = format!("/topic/news.{}", dialect.name);
        let mut subscriber = Client::connect_as(&broker.url, "app").await;
        subscriber
            .subscribe_with("sub-0", &topic, dialect.subscribe)
            .await;
        subscriber
            .send_confirmed(Frame::new(Command::Disconnect), "bye")
            .await;

        // Another application with the same stompjs-style id is another subscription.
        let mut other = Client::connect_as(&broker.url, "other-app").await;
        other
            .subscribe_with("sub-0", &topic, dialect.subscribe)
            .await;
        other
            .send_confirmed(Frame::new(Command::Disconnect), "bye")
            .await;

        let mut publisher = Client::connect(&broker.url).await;
        for i in 0..3 {
            publisher
                .send_confirmed(persistent(&topic, &format!("before-{i}")), &format!("p{i}"))
                .await;
        }
        broker.kill();
        broker = BrokerProcess::start(CONFIG, dir.path());
        let mut publisher = Client::connect(&broker.url).await;
        publisher
            .send_confirmed(persistent(&topic, "after"), "pa")
            .await;

        let mut subscriber = Client::connect_as(&broker.url, "app").await;
        subscriber
            .subscribe_with("sub-0", &topic, dialect.subscribe)
            .await;
        let kept: Vec<String> = drain(&mut subscriber, 4).await.iter().map(body).collect();
        assert_eq!(
            kept,
            ["before-0", "before-1", "before-2", "after"],
            "{}",
            dialect.name
        );

        // UNSUBSCRIBE with the dialect's durable header deletes it.
        let mut unsubscribe = Frame::new(Command::Unsubscribe).header("id", "sub-0");
        for (name, value) in dialect.unsubscribe {
            unsubscribe = unsubscribe.header(*name, *value);
        }
        subscriber.send_confirmed(unsubscribe, "gone").await;
        publisher
            .send_confirmed(persistent(&topic, "unseen"), "pu")
            .await;
        subscriber
            .subscribe_with("sub-1", &topic, dialect.subscribe)
            .await;
        assert!(
            drain(&mut subscriber, 0).await.is_empty(),
            "{}",
            dialect.name
        );

        let mut other = Client::connect_as(&broker.url, "other-app").await;
        other
            .subscribe_with("sub-0", &topic, dialect.subscribe)
            .await;
        assert_eq!(
            drain(&mut other, 5).await.len(),
            5,
            "{}: the other app's own copy",
            dialect.name
        );
    }
}

/// A client for the crash loop: every call may fail (the broker is killed).
struct Fragile {
    ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    decoder: Decoder,
    buffer: BytesMut,
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl Fragile {
    async fn connect(url: &str) -> Fallible<Fragile> {
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = Fragile {
            ws,
            decoder: Decoder::new(Limits::default()),
            buffer: BytesMut::new(),
        };
        client
            .send(Frame::new(Command::Connect).header("accept-version", "1.2"))
            .await?;
        match client.next().await? {
            frame if frame.command == Command::Connected => Ok(client),
            frame => Err(format!("unexpected {frame:?}").into()),
        }
    }

    async fn send(&mut self, frame: Frame) -> Fallible<()> {
        self.ws
            .send(Message::Binary(encode(&frame, Version::V1_2)))
            .await?;
        Ok(())
    }

    async fn next(&mut self) -> Fallible<Frame> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buffer)? {
                return Ok(frame);
            }
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await? {
                Some(Ok(Message::Binary(b))) => self.buffer.extend_from_slice(&b),
                Some(Ok(Message::Text(t))) => self.buffer.extend_from_slice(t.as_bytes()),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => return Err("closed".into()),
            }
        }
    }
}

#[derive(Default)]
struct Ledger {
    sent: HashSet<String>,
    receipted: HashSet<String>,
    delivered: HashMap<String, usize>,
    /// Messages whose ACK got its RECEIPT: never to be delivered again.
    ack_confirmed: HashSet<String>,
    violations: Vec<String>,
}

async fn produce(url: String, cycle: usize, ledger: Arc<Mutex<Ledger>>) -> Fallible<()> {
    let mut client = Fragile::connect(&url).await?;
    for n in 0.. {
        let text = format!("c{cycle}-{n}");
        ledger.lock().expect("ledger").sent.insert(text.clone());
        client
            .send(persistent("/queue/crash", &text).header("receipt", &text))
            .await?;
        let frame = client.next().await?;
        if frame.command == Command::Receipt {
            ledger.lock().expect("ledger").receipted.insert(text);
        }
    }
    Ok(())
}

async fn consume(url: String, ledger: Arc<Mutex<Ledger>>) -> Fallible<()> {
    let mut client = Fragile::connect(&url).await?;
    client
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "c")
                .header("destination", "/queue/crash")
                .header("ack", "client-individual")
                .header("prefetch-count", "20"),
        )
        .await?;
    let mut pending_acks: HashMap<String, String> = HashMap::new();
    let mut count = 0u64;
    loop {
        let frame = client.next().await?;
        match frame.command {
            Command::Message => {
                let text = body(&frame);
                {
                    let mut ledger = ledger.lock().expect("ledger");
                    if !ledger.sent.contains(&text) {
                        ledger
                            .violations
                            .push(format!("{text} delivered but never sent"));
                    }
                    if ledger.ack_confirmed.contains(&text) {
                        ledger
                            .violations
                            .push(format!("{text} delivered after its ACK was receipted"));
                    }
                    *ledger.delivered.entry(text.clone()).or_default() += 1;
                }
                let mut ack =
                    Frame::new(Command::Ack).header("id", frame.get("ack").unwrap_or_default());
                count += 1;
                if count.is_multiple_of(2) {
                    // Every other ACK with a receipt.
                    let receipt = format!("ack-{count}");
                    pending_acks.insert(receipt.clone(), text);
                    ack = ack.header("receipt", &receipt);
                }
                client.send(ack).await?;
            }
            Command::Receipt => {
                if let Some(text) = frame
                    .get("receipt-id")
                    .and_then(|id| pending_acks.remove(id))
                {
                    ledger.lock().expect("ledger").ack_confirmed.insert(text);
                }
            }
            _ => return Err(format!("unexpected {frame:?}").into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_loses_no_receipted_message() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for cycle in 0..12 {
        let receipted_before = ledger.lock().expect("ledger").receipted.len();
        let broker = BrokerProcess::start(CONFIG, dir.path());
        let producers: Vec<_> = (0..2)
            .map(|p| tokio::spawn(produce(broker.url.clone(), cycle * 2 + p, ledger.clone())))
            .collect();
        let consumer = tokio::spawn(consume(broker.url.clone(), ledger.clone()));
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let alive = 150 + (seed >> 33) % 500;
        tokio::time::sleep(Duration::from_millis(alive)).await;
        // Every cycle does real work before its crash, however slow the
        // disk is today: at least 10 new receipts (10 s at most).
        let deadline = Instant::now() + Duration::from_secs(10);
        while ledger.lock().expect("ledger").receipted.len() < receipted_before + 10
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        broker.kill();
        for task in producers {
            let _ = task.await;
        }
        let _ = consumer.await;
    }
    // A last run, without a crash, takes everything that is left.
    let broker = BrokerProcess::start(CONFIG, dir.path());
    let finisher = tokio::spawn(consume(broker.url.clone(), ledger.clone()));
    // Until every receipted message has come (60 s at most: a loss fails
    // below), then until nothing more comes for 500 ms (late duplicates).
    let deadline = Instant::now() + Duration::from_secs(60);
    let all_delivered = || {
        let ledger = ledger.lock().expect("ledger");
        ledger
            .receipted
            .iter()
            .all(|t| ledger.delivered.contains_key(t))
    };
    while !all_delivered() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut last = ledger.lock().expect("ledger").delivered.len();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let delivered = ledger.lock().expect("ledger").delivered.len();
        if delivered == last {
            break;
        }
        last = delivered;
    }
    finisher.abort();

    let ledger = ledger.lock().expect("ledger");
    assert!(ledger.violations.is_empty(), "{:?}", ledger.violations);
    let lost: Vec<&String> = ledger
        .receipted
        .iter()
        .filter(|t| !ledger.delivered.contains_key(*t))
        .collect();
    assert!(lost.is_empty(), "receipted but never delivered: {lost:?}");
    let duplicates = ledger.delivered.values().filter(|n| **n > 1).count();
    eprintln!(
        "crash loop: {} sent, {} receipted, {} delivered, {} delivered more than once, {} ACKs receipted",
        ledger.sent.len(),
        ledger.receipted.len(),
        ledger.delivered.len(),
        duplicates,
        ledger.ack_confirmed.len()
    );
    assert!(ledger.receipted.len() > 100, "the loop did real work");
}

#[tokio::test]
async fn disk_budget_turns_persistent_sends_into_errors_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!("{CONFIG}\n[storage]\nmax_disk_bytes = 40000\n");
    let broker = BrokerProcess::start(&config, dir.path());
    let chunk = "x".repeat(8000);
    let mut producer = Client::connect(&broker.url).await;
    let mut stored = 0;
    let error = loop {
        producer
            .send(persistent("/queue/full", &chunk).header("receipt", "r"))
            .await;
        let frame = producer.frame().await;
        if frame.command == Command::Error {
            break frame;
        }
        stored += 1;
    };
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .contains("storage full"),
        "{error:?}"
    );
    assert_eq!(
        error.get("receipt-id"),
        Some("r"),
        "an ERROR, never a RECEIPT"
    );
    producer.expect_close(CloseCode::Policy).await;
    assert!(
        (3..=5).contains(&stored),
        "{stored} stored under a 40 kB budget"
    );

    // Consumers keep working, and draining makes room again.
    let mut consumer = Client::connect(&broker.url).await;
    consumer
        .subscribe_with("s", "/queue/full", &[("ack", "client-individual")])
        .await;
    let backlog = drain(&mut consumer, stored).await;
    assert_eq!(backlog.len(), stored);
    for (i, message) in backlog.iter().enumerate() {
        let ack = message.get("ack").expect("ack").to_owned();
        consumer
            .send_confirmed(
                Frame::new(Command::Ack).header("id", &ack),
                &format!("a{i}"),
            )
            .await;
    }
    let mut producer = Client::connect(&broker.url).await;
    producer
        .send_confirmed(persistent("/queue/full", &chunk), "again")
        .await;
}

#[tokio::test]
async fn a_store_that_cannot_be_opened_stops_the_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The data directory is a file: sled cannot open it.
    std::fs::write(dir.path().join("data"), b"not a directory").expect("write");
    let refused = BrokerProcess::try_start(CONFIG, dir.path())
        .err()
        .expect("refuses to start");
    assert!(refused.contains("store at"), "{refused}");
}

/// The sled store with an injected "disk full".
struct FaultyStore {
    inner: stomphub::store::SledStore,
    full: Arc<std::sync::atomic::AtomicBool>,
}

impl FaultyStore {
    fn check(&self) -> Result<(), stomphub::store::StoreError> {
        if self.full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(stomphub::store::StoreError(
                "No space left on device (os error 28, injected)".into(),
            ));
        }
        Ok(())
    }
}

impl stomphub::store::Store for FaultyStore {
    fn recover(
        &mut self,
    ) -> Result<Vec<stomphub::store::StoredQueue>, stomphub::store::StoreError> {
        self.inner.recover()
    }
    fn write(
        &mut self,
        ops: &[stomphub::store::StoreOp],
    ) -> Result<(), stomphub::store::StoreError> {
        self.check()?;
        self.inner.write(ops)
    }
    fn sync(&mut self) -> Result<(), stomphub::store::StoreError> {
        self.check()?;
        self.inner.sync()
    }
    fn stored_bytes(&self) -> u64 {
        self.inner.stored_bytes()
    }
}

#[tokio::test]
async fn a_full_disk_refuses_persistent_sends_while_consumers_go_on_then_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let store = FaultyStore {
        inner: stomphub::store::SledStore::open(dir.path(), 2 << 20).expect("opens"),
        full: full.clone(),
    };
    let mut config = common::test_config();
    config.storage.data_dir = dir.path().to_path_buf();
    let broker = stomphub::Broker::start_with_store(config, Box::new(store))
        .await
        .expect("starts");
    let url = broker.url();

    let mut consumer = Client::connect(&url).await;
    consumer.subscribe("live", "/topic/live").await;
    let mut producer = Client::connect(&url).await;
    producer
        .send_confirmed(persistent("/queue/disk", "before"), "r1")
        .await;

    full.store(true, std::sync::atomic::Ordering::Relaxed);
    producer
        .send(persistent("/queue/disk", "lost").header("receipt", "r2"))
        .await;
    let error = producer
        .expect_error("could not store the message", CloseCode::Error)
        .await;
    assert_eq!(
        error.get("receipt-id"),
        Some("r2"),
        "an ERROR instead of the RECEIPT"
    );

    // While the store fails: persistent SENDs are refused at once, and
    // everything that needs no store keeps working.
    let mut producer = Client::connect(&url).await;
    producer.publish("/topic/live", "still flowing").await;
    assert_eq!(body(&consumer.message().await), "still flowing");
    producer
        .send(persistent("/queue/disk", "refused").header("receipt", "r3"))
        .await;
    producer
        .expect_error("storage unavailable", CloseCode::Error)
        .await;

    // The disk has room again: after a probe (every 500 ms), persistent
    // SENDs work. Until then each gets an ERROR and a close, so try again
    // on a new connection, 10 s at most.
    full.store(false, std::sync::atomic::Ordering::Relaxed);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut producer = Client::connect(&url).await;
        producer
            .send(persistent("/queue/disk", "after").header("receipt", "r4"))
            .await;
        let answer = producer.frame().await;
        if answer.command == Command::Receipt {
            assert_eq!(answer.get("receipt-id"), Some("r4"));
            break;
        }
        assert_eq!(answer.command, Command::Error, "{answer:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "persistent SENDs still refused 10 s after the disk had room"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut reader = Client::connect(&url).await;
    reader.subscribe("q", "/queue/disk").await;
    let mut bodies: Vec<String> = Vec::new();
    while bodies.last().map(String::as_str) != Some("after") {
        bodies.push(body(&reader.message().await));
    }
    reader.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(bodies.first().map(String::as_str), Some("before"));
    assert_eq!(bodies.last().map(String::as_str), Some("after"));
    assert!(!bodies.contains(&"refused".to_owned()));
}
