//! Queues and acknowledgements over real WebSockets: competing consumers,
//! backlog, ack modes, redelivery, NACK and dead letters, prefetch,
//! transactions, expiry, overflow, request/reply.

mod common;

use common::{start, start_default, test_config, Client, Event};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn body(frame: &Frame) -> String {
    String::from_utf8(frame.body.to_vec()).expect("utf8")
}

async fn send_all(url: &str, destination: &str, bodies: impl IntoIterator<Item = String>) {
    let mut producer = Client::connect(url).await;
    for body in bodies {
        producer.publish(destination, &body).await;
    }
    producer
        .send_confirmed(Frame::new(Command::Disconnect), "sent")
        .await;
}

#[tokio::test]
async fn competing_consumers_each_message_exactly_once() {
    let broker = start_default().await;
    let url = broker.url();
    let mut consumers = Vec::new();
    for _ in 0..3 {
        let mut consumer = Client::connect(&url).await;
        consumer
            .subscribe_with("work", "/queue/work", &[("ack", "client-individual")])
            .await;
        consumers.push(consumer);
    }
    send_all(&url, "/queue/work", (0..300).map(|i| i.to_string())).await;
    let mut seen_ids = HashSet::new();
    let mut seen_bodies = HashSet::new();
    let mut per_consumer = Vec::new();
    for consumer in &mut consumers {
        let mut count = 0;
        while let Some(common::Event::Frame(message)) =
            consumer.event_within(Duration::from_millis(300)).await
        {
            assert_eq!(message.command, Command::Message);
            assert!(
                seen_ids.insert(message.get("message-id").expect("id").to_owned()),
                "duplicate delivery"
            );
            seen_bodies.insert(body(&message));
            consumer.settle(&message, false).await;
            count += 1;
        }
        per_consumer.push(count);
    }
    assert_eq!(seen_ids.len(), 300);
    assert_eq!(seen_bodies, (0..300).map(|i| i.to_string()).collect());
    assert!(
        per_consumer.iter().all(|&n| n >= 50),
        "round-robin spreads the work: {per_consumer:?}"
    );
}

#[tokio::test]
async fn backlog_is_delivered_in_order_to_a_late_subscriber() {
    let broker = start_default().await;
    send_all(
        &broker.url(),
        "/queue/backlog",
        (0..20).map(|i| format!("m{i}")),
    )
    .await;
    let mut consumer = Client::connect(&broker.url()).await;
    consumer.subscribe("late", "/queue/backlog").await;
    for i in 0..20 {
        let message = consumer.message().await;
        assert_eq!(body(&message), format!("m{i}"));
        assert_eq!(message.get("destination"), Some("/queue/backlog"));
        assert_eq!(message.get("ack"), None, "auto mode has no ack header");
    }
    consumer.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn unacked_messages_are_redelivered_to_the_next_consumer_with_the_flag() {
    let broker = start_default().await;
    let url = broker.url();
    send_all(&url, "/queue/jobs", (0..4).map(|i| format!("j{i}"))).await;
    let mut first = Client::connect(&url).await;
    first
        .subscribe_with("s", "/queue/jobs", &[("ack", "client-individual")])
        .await;
    let received: Vec<Frame> = [
        first.message().await,
        first.message().await,
        first.message().await,
        first.message().await,
    ]
    .into();
    // ACK only j1; drop the connection without DISCONNECT.
    first.settle(&received[1], false).await;
    first
        .send_confirmed(
            Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/topic/sync"),
            "synced",
        )
        .await;
    drop(first);

    let mut second = Client::connect(&url).await;
    second
        .subscribe_with("s", "/queue/jobs", &[("ack", "client-individual")])
        .await;
    for expected in ["j0", "j2", "j3"] {
        let message = second.message().await;
        assert_eq!(
            body(&message),
            expected,
            "returned ahead of newer messages, in order"
        );
        assert_eq!(message.get("redelivered"), Some("true"));
        assert_eq!(message.get("x-delivery-count"), Some("1"));
        second.settle(&message, false).await;
    }
    second.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn client_mode_ack_is_cumulative_and_individual_is_not() {
    let broker = start_default().await;
    let url = broker.url();
    for (mode, acked_away) in [
        ("client", ["c0", "c1", "c2"].as_slice()),
        ("client-individual", ["c2"].as_slice()),
    ] {
        let queue = format!("/queue/mode.{mode}");
        send_all(&url, &queue, (0..5).map(|i| format!("c{i}"))).await;
        let mut consumer = Client::connect(&url).await;
        consumer.subscribe_with("s", &queue, &[("ack", mode)]).await;
        let messages: Vec<Frame> = [
            consumer.message().await,
            consumer.message().await,
            consumer.message().await,
        ]
        .into();
        consumer.settle(&messages[2], false).await;
        // Later deliveries (c3, c4) may arrive before the RECEIPT; unacked,
        // they go back with the rest.
        consumer
            .send(Frame::new(Command::Disconnect).header("receipt", "bye"))
            .await;
        while consumer.frame().await.command != Command::Receipt {}

        let mut next = Client::connect(&url).await;
        next.subscribe(&format!("n-{mode}"), &queue).await;
        let expected: Vec<String> = (0..5)
            .map(|i| format!("c{i}"))
            .filter(|b| !acked_away.contains(&b.as_str()))
            .collect();
        let mut rest = Vec::new();
        for _ in 0..expected.len() {
            rest.push(body(&next.message().await));
        }
        next.expect_silence(Duration::from_millis(300)).await;
        assert_eq!(rest, expected, "{mode}");
    }
}

#[tokio::test]
async fn acking_twice_is_an_error() {
    let broker = start_default().await;
    let mut consumer = Client::connect(&broker.url()).await;
    consumer
        .subscribe_with("s", "/queue/twice", &[("ack", "client-individual")])
        .await;
    consumer.publish("/queue/twice", "x").await;
    let message = consumer.message().await;
    consumer.settle(&message, false).await;
    consumer.settle(&message, false).await;
    consumer
        .expect_error("ACK of unknown or already settled id", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn stomp_1_1_acks_by_message_id_and_subscription() {
    let broker = start_default().await;
    let mut consumer = Client::open(&broker.url(), &["v11.stomp"]).await;
    consumer.version = stomp_protocol::Version::V1_1;
    consumer
        .send(Frame::new(Command::Connect).header("accept-version", "1.1"))
        .await;
    assert_eq!(consumer.frame().await.get("version"), Some("1.1"));
    consumer
        .subscribe_with("s1", "/queue/v11", &[("ack", "client")])
        .await;
    consumer.publish("/queue/v11", "x").await;
    let message = consumer.message().await;
    let id = message.get("message-id").expect("id").to_owned();
    consumer
        .send_confirmed(
            Frame::new(Command::Ack)
                .header("message-id", &id)
                .header("subscription", "s1"),
            "acked",
        )
        .await;
}

fn nack_config() -> stomphub::Config {
    let mut config = test_config();
    config.queues.redelivery_delay = Duration::from_millis(100);
    config.queues.max_deliveries = 3;
    config
}

#[tokio::test]
async fn nack_redelivers_after_a_delay_then_dead_letters_without_blocking_the_queue() {
    let broker = start(nack_config()).await;
    let url = broker.url();
    let mut consumer = Client::connect(&url).await;
    consumer
        .subscribe_with("s", "/queue/poison", &[("ack", "client-individual")])
        .await;
    consumer.publish("/queue/poison", "poison").await;
    consumer.publish("/queue/poison", "good").await;

    let first = consumer.message().await;
    assert_eq!(body(&first), "poison");
    let nacked_at = Instant::now();
    consumer.settle(&first, true).await;
    // The good message is not held up by the poison one.
    let good = consumer.message().await;
    assert_eq!(body(&good), "good");
    consumer.settle(&good, false).await;

    for delivery in 2..=3 {
        let again = consumer.message().await;
        assert_eq!(body(&again), "poison");
        assert_eq!(again.get("redelivered"), Some("true"));
        assert_eq!(
            again.get("x-delivery-count"),
            Some((delivery - 1).to_string().as_str())
        );
        if delivery == 2 {
            assert!(
                nacked_at.elapsed() >= Duration::from_millis(100),
                "NACK redelivery waits the delay"
            );
        }
        consumer.settle(&again, true).await;
    }
    consumer.expect_silence(Duration::from_millis(400)).await;

    let mut inspector = Client::connect(&url).await;
    inspector.subscribe("dlq", "/queue/poison.dlq").await;
    // The fourth delivery goes to the dead letters once its delay is over;
    // on a cluster it then travels through the engine to this node.
    let dead = match inspector.event_within(Duration::from_secs(30)).await {
        Some(Event::Frame(frame)) => frame,
        other => panic!("expected the dead letter, got {other:?}"),
    };
    assert_eq!(dead.command, Command::Message, "{dead:?}");
    assert_eq!(body(&dead), "poison");
    assert_eq!(dead.get("destination"), Some("/queue/poison.dlq"));
    assert_eq!(dead.get("x-dead-letter-reason"), Some("max-deliveries"));
    assert_eq!(dead.get("x-original-destination"), Some("/queue/poison"));
}

#[tokio::test]
async fn prefetch_limits_messages_in_flight() {
    let broker = start_default().await;
    let mut consumer = Client::connect(&broker.url()).await;
    consumer
        .subscribe_with(
            "s",
            "/queue/prefetch",
            &[("ack", "client-individual"), ("prefetch-count", "2")],
        )
        .await;
    send_all(
        &broker.url(),
        "/queue/prefetch",
        (0..5).map(|i| format!("p{i}")),
    )
    .await;
    let a = consumer.message().await;
    let _b = consumer.message().await;
    consumer.expect_silence(Duration::from_millis(300)).await;
    consumer.settle(&a, false).await;
    assert_eq!(body(&consumer.message().await), "p2");
    consumer.expect_silence(Duration::from_millis(300)).await;

    // ActiveMQ's alias works too.
    let mut other = Client::connect(&broker.url()).await;
    other
        .subscribe_with(
            "s",
            "/queue/prefetch",
            &[("ack", "client"), ("activemq.prefetchSize", "1")],
        )
        .await;
    let one = other.message().await;
    other.expect_silence(Duration::from_millis(300)).await;
    other.settle(&one, false).await;
    other.message().await;
}

#[tokio::test]
async fn transactions_commit_abort_and_disconnect() {
    let broker = start_default().await;
    let url = broker.url();
    let mut consumer = Client::connect(&url).await;
    consumer.subscribe("s", "/queue/tx").await;
    let mut producer = Client::connect(&url).await;
    let tx_send = |body: &str, tx: &str| {
        Frame::new(Command::Send)
            .header("destination", "/queue/tx")
            .header("transaction", tx)
            .body(body.to_owned())
    };

    producer
        .send_confirmed(Frame::new(Command::Begin).header("transaction", "t1"), "b1")
        .await;
    producer.send(tx_send("one", "t1")).await;
    producer.send_confirmed(tx_send("two", "t1"), "s2").await;
    consumer.expect_silence(Duration::from_millis(200)).await;
    producer
        .send_confirmed(
            Frame::new(Command::Commit).header("transaction", "t1"),
            "c1",
        )
        .await;
    assert_eq!(body(&consumer.message().await), "one");
    assert_eq!(body(&consumer.message().await), "two");

    producer
        .send_confirmed(Frame::new(Command::Begin).header("transaction", "t2"), "b2")
        .await;
    producer.send(tx_send("aborted", "t2")).await;
    producer
        .send_confirmed(Frame::new(Command::Abort).header("transaction", "t2"), "a2")
        .await;
    producer
        .send_confirmed(Frame::new(Command::Begin).header("transaction", "t3"), "b3")
        .await;
    producer.send(tx_send("never committed", "t3")).await;
    producer
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    consumer.expect_silence(Duration::from_millis(300)).await;

    // An ACK inside a transaction takes effect only at COMMIT.
    let mut acker = Client::connect(&url).await;
    acker
        .subscribe_with("a", "/queue/tx-ack", &[("ack", "client-individual")])
        .await;
    acker.publish("/queue/tx-ack", "held").await;
    let held = acker.message().await;
    acker
        .send_confirmed(Frame::new(Command::Begin).header("transaction", "t4"), "b4")
        .await;
    let ack_id = held.get("ack").expect("ack").to_owned();
    acker
        .send(
            Frame::new(Command::Ack)
                .header("id", &ack_id)
                .header("transaction", "t4"),
        )
        .await;
    acker
        .send_confirmed(Frame::new(Command::Abort).header("transaction", "t4"), "a4")
        .await;
    acker
        .send_confirmed(Frame::new(Command::Disconnect), "bye")
        .await;
    let mut after = Client::connect(&url).await;
    after.subscribe("b", "/queue/tx-ack").await;
    let again = after.message().await;
    assert_eq!(body(&again), "held", "the aborted ACK did not settle it");
    assert_eq!(again.get("redelivered"), Some("true"));
}

#[tokio::test]
async fn expired_messages_are_never_delivered() {
    let broker = start_default().await;
    let url = broker.url();
    let mut producer = Client::connect(&url).await;
    producer
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/exp")
                .header("expiration", "50")
                .body("relative"),
        )
        .await;
    producer
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/exp")
                .header("expires", "1000")
                .body("absolute, long past"),
        )
        .await;
    producer
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/exp")
                .header("x-message-ttl", "0")
                .body("kept"),
            "sent",
        )
        .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut consumer = Client::connect(&url).await;
    consumer.subscribe("s", "/queue/exp").await;
    assert_eq!(body(&consumer.message().await), "kept");
    consumer.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn queue_default_ttl_from_x_message_ttl() {
    let broker = start_default().await;
    let url = broker.url();
    let mut consumer = Client::connect(&url).await;
    // The first use creates the queue with a 50 ms time-to-live.
    consumer
        .subscribe_with("s", "/queue/ttl", &[("x-message-ttl", "50")])
        .await;
    consumer
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
        .await;
    send_all(&url, "/queue/ttl", ["short-lived".to_owned()]).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    consumer.subscribe("t", "/queue/ttl").await;
    consumer.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn max_length_overflow_reject_and_drop_oldest() {
    let mut config = test_config();
    config.queues = stomphub::Config::from_toml(
        "[[queues.rules]]\npattern = \"/queue/reject.#\"\nmax_length = 2\n\n[[queues.rules]]\npattern = \"/queue/drop.#\"\nmax_length = 2\noverflow = \"drop-oldest\"\n",
        "test",
    )
    .expect("config")
    .queues;
    let broker = start(config).await;
    let url = broker.url();

    let mut producer = Client::connect(&url).await;
    producer.publish("/queue/reject.a", "1").await;
    producer.publish("/queue/reject.a", "2").await;
    producer
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/reject.a")
                .header("receipt", "third")
                .body("3"),
        )
        .await;
    let error = producer.expect_error("is full", CloseCode::Policy).await;
    assert_eq!(error.get("receipt-id"), Some("third"));

    send_all(&url, "/queue/drop.a", ["1", "2", "3"].map(String::from)).await;
    let mut consumer = Client::connect(&url).await;
    consumer.subscribe("r", "/queue/reject.a").await;
    assert_eq!(body(&consumer.message().await), "1");
    assert_eq!(body(&consumer.message().await), "2");
    consumer.subscribe("d", "/queue/drop.a").await;
    assert_eq!(body(&consumer.message().await), "2");
    assert_eq!(body(&consumer.message().await), "3");
    consumer.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn temp_queue_request_reply() {
    let broker = start_default().await;
    let url = broker.url();
    let mut responder = Client::connect(&url).await;
    responder.subscribe("svc", "/queue/service").await;
    let mut requester = Client::connect(&url).await;
    requester
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/service")
                .header("reply-to", "/temp-queue/answers")
                .body("question"),
        )
        .await;
    let request = responder.message().await;
    let reply_to = request.get("reply-to").expect("reply-to").to_owned();
    assert!(reply_to.starts_with("/reply-queue/"), "{reply_to}");
    responder
        .send(
            Frame::new(Command::Send)
                .header("destination", &reply_to)
                .body("answer"),
        )
        .await;
    let reply = requester.message().await;
    assert_eq!(body(&reply), "answer");
    assert_eq!(reply.get("subscription"), Some("/temp-queue/answers"));
    // Nobody else may subscribe to a reply queue.
    responder
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "steal")
                .header("destination", &reply_to),
        )
        .await;
    responder
        .expect_error("cannot subscribe", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn exclusive_and_auto_delete_queues() {
    let broker = start_default().await;
    let url = broker.url();
    let mut owner = Client::connect(&url).await;
    owner
        .subscribe_with(
            "s",
            "/queue/excl",
            &[
                ("exclusive", "true"),
                ("auto-delete", "true"),
                ("ack", "client-individual"),
            ],
        )
        .await;
    let mut intruder = Client::connect(&url).await;
    intruder
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/queue/excl"),
        )
        .await;
    intruder.expect_error("exclusive", CloseCode::Policy).await;
    // A message delivered and not acknowledged: handed back at the
    // UNSUBSCRIBE, then deleted with the queue.
    send_all(&url, "/queue/excl", ["before".to_owned()]).await;
    assert_eq!(body(&owner.message().await), "before");

    owner
        .send_confirmed(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
        .await;
    // The auto-delete queue goes with its last consumer, and its messages
    // with it (on the engine once the last pull is over): wait for it.
    let admin = broker.admin_addr().expect("admin listener").port();
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_listed(admin, "/queue/excl").await {
        assert!(
            Instant::now() < deadline,
            "the auto-delete queue is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The hold went before the UNSUBSCRIBE's RECEIPT: anyone may subscribe,
    // and the first message is one sent now, not the one of before.
    let mut late = Client::connect(&url).await;
    late.subscribe_confirmed("t", "/queue/excl", "t").await;
    send_all(&url, "/queue/excl", ["after".to_owned()]).await;
    assert_eq!(body(&late.message().await), "after");
}

/// Whether queue `name` is in `GET /api/queues` of the admin on `port`.
async fn queue_listed(port: u16, name: &str) -> bool {
    let (status, body) =
        tokio::task::spawn_blocking(move || common::cluster::http_get(port, "/api/queues"))
            .await
            .expect("request task")
            .expect("admin answers");
    assert_eq!(status, 200, "{body}");
    let document: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    document["queues"]
        .as_array()
        .is_some_and(|queues| queues.iter().any(|q| q["name"] == name))
}
