//! Bounds in bytes and caps on client-named state, against the real broker:
//! each one reached gives its ERROR (with the `message` naming it) and a
//! close, while a bystander connection keeps being served.

mod common;

use common::{start, test_config, BrokerProcess, Client, TestBroker};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A bystander that subscribed before the attack: it still gets a message
/// published now, and can still make a new subscription.
async fn bystander_is_served(broker: &TestBroker, bystander: &mut Client, topic: &str) {
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish(topic, "still-served").await;
    assert_eq!(&bystander.message().await.body[..], b"still-served");
    bystander.subscribe("later", "/topic/bystander.later").await;
}

async fn with_bystander(config: stomphub::Config) -> (TestBroker, Client) {
    let broker = start(config).await;
    let mut bystander = Client::connect(&broker.url()).await;
    bystander.subscribe("b", "/topic/bystander").await;
    (broker, bystander)
}

#[tokio::test]
async fn a_wildcard_inside_a_word_is_refused_at_subscribe() {
    let (broker, mut bystander) = with_bystander(test_config()).await;
    for destination in ["/topic/foo/#", "/topic/a*", "/topic/a.b#"] {
        let mut client = Client::connect(&broker.url()).await;
        client
            .send_subscribe("0", destination, &[("receipt", "r")])
            .await;
        let error = client
            .expect_error(
                "wildcards '*' and '#' are whole dot-separated words",
                CloseCode::Protocol,
            )
            .await;
        assert_eq!(error.get("receipt-id"), Some("r"));
    }
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

#[tokio::test]
async fn transaction_bytes_are_bounded() {
    let mut config = test_config();
    config.limits.max_transaction_bytes = 100_000;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut client = Client::connect(&broker.url()).await;
    client
        .send_confirmed(Frame::new(Command::Begin).header("transaction", "t"), "b")
        .await;
    // Small bodies, big headers: headers weigh as much as bodies.
    let heavy = "h".repeat(8000);
    for _ in 0..20 {
        client
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/topic/bystander")
                    .header("transaction", "t")
                    .header("x", &heavy),
            )
            .await;
    }
    client
        .expect_error("max_transaction_bytes (100000)", CloseCode::Policy)
        .await;
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
    bystander.expect_silence(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn queue_memory_counts_headers() {
    let mut config = test_config();
    config.queues.max_bytes = 100_000;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut client = Client::connect(&broker.url()).await;
    let heavy = "h".repeat(8000);
    let mut refused = false;
    for i in 0..20 {
        let mut frame = Frame::new(Command::Send).header("destination", "/queue/heavy");
        for n in 0..7 {
            frame = frame.header(format!("x{n}"), &heavy);
        }
        client.send(frame.header("receipt", i.to_string())).await;
        let answer = client.frame().await;
        if answer.command == Command::Error {
            let message = answer.get("message").unwrap_or_default();
            assert!(message.contains("max_bytes 100000"), "{message}");
            refused = true;
            // Empty bodies: only headers can have filled it, after two.
            assert_eq!(i, 1, "the second 56 KB of headers does not fit");
            break;
        }
    }
    assert!(refused, "20 × 56 KB of headers fit in a 100 KB queue");
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

#[tokio::test]
async fn queues_created_on_first_use_are_capped() {
    let mut config = test_config();
    config.limits.max_queues = 3;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut consumer = Client::connect(&broker.url()).await;
    consumer.subscribe("q", "/queue/existing").await;
    let mut client = Client::connect(&broker.url()).await;
    client
        .send_confirmed(
            Frame::new(Command::Send).header("destination", "/queue/a"),
            "a",
        )
        .await;
    client
        .send_confirmed(
            Frame::new(Command::Send).header("destination", "/queue/a"),
            "again",
        )
        .await;
    // `/queue/a.dlq` is not created until something is dead-lettered.
    client
        .send_confirmed(
            Frame::new(Command::Send).header("destination", "/queue/b"),
            "b",
        )
        .await;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/c")
                .header("receipt", "c"),
        )
        .await;
    client
        .expect_error("max_queues is 3", CloseCode::Policy)
        .await;
    // SUBSCRIBE to a new queue is refused the same way.
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber.send_subscribe("s", "/queue/d", &[]).await;
    subscriber
        .expect_error("max_queues is 3", CloseCode::Policy)
        .await;
    // Existing queues keep working.
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/queue/existing", "kept").await;
    assert_eq!(&consumer.message().await.body[..], b"kept");
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

#[tokio::test]
async fn durable_subscriptions_are_capped_per_connection_and_in_total() {
    let mut config = test_config();
    config.limits.max_durable_subscriptions = 2;
    config.limits.max_durable_subscriptions_per_connection = 1;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut first = Client::connect(&broker.url()).await;
    first
        .subscribe_with(
            "d1",
            "/topic/durable.one",
            &[("durable-subscription-name", "one")],
        )
        .await;
    first
        .send_subscribe(
            "d2",
            "/topic/durable.two",
            &[("durable-subscription-name", "two")],
        )
        .await;
    first
        .expect_error(
            "max_durable_subscriptions_per_connection is 1",
            CloseCode::Policy,
        )
        .await;
    let mut second = Client::connect(&broker.url()).await;
    second
        .subscribe_with(
            "d",
            "/topic/durable.two",
            &[("durable-subscription-name", "two")],
        )
        .await;
    let mut third = Client::connect(&broker.url()).await;
    third
        .send_subscribe(
            "d",
            "/topic/durable.three",
            &[("durable-subscription-name", "three")],
        )
        .await;
    third
        .expect_error("max_durable_subscriptions is 2", CloseCode::Policy)
        .await;
    // The existing durable subscription still collects and delivers.
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/topic/durable.two", "collected").await;
    assert_eq!(&second.message().await.body[..], b"collected");
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

fn request(reply_to: &str, receipt: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", "/topic/requests")
        .header("reply-to", reply_to)
        .header("receipt", receipt)
}

#[tokio::test]
async fn reply_queues_are_capped_per_connection_and_in_total() {
    let mut config = test_config();
    config.limits.max_reply_queues = 3;
    config.limits.max_reply_queues_per_connection = 2;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut first = Client::connect(&broker.url()).await;
    for (i, name) in ["a", "b", "a", "b"].iter().enumerate() {
        first
            .send(request(&format!("/temp-queue/{name}"), &i.to_string()))
            .await;
        first.expect_receipt(&i.to_string()).await;
    }
    first.send(request("/temp-queue/c", "c")).await;
    first
        .expect_error("max_reply_queues_per_connection is 2", CloseCode::Policy)
        .await;
    // The first connection's reply queues went with it: three more fit.
    let mut second = Client::connect(&broker.url()).await;
    for (i, name) in ["a", "b"].iter().enumerate() {
        second
            .send(request(&format!("/temp-queue/{name}"), &i.to_string()))
            .await;
        second.expect_receipt(&i.to_string()).await;
    }
    let mut third = Client::connect(&broker.url()).await;
    third.send(request("/temp-queue/a", "a")).await;
    third.expect_receipt("a").await;
    third.send(request("/temp-queue/b", "b")).await;
    third
        .expect_error("max_reply_queues is 3", CloseCode::Policy)
        .await;
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

#[tokio::test]
async fn subscriptions_are_capped_in_total() {
    let mut config = test_config();
    config.limits.max_subscriptions = 3;
    let (broker, mut bystander) = with_bystander(config).await;
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe("1", "/topic/one").await;
    client.subscribe("2", "/topic/two").await;
    client.send_subscribe("3", "/topic/three", &[]).await;
    client
        .expect_error("max_subscriptions is 3", CloseCode::Policy)
        .await;
    // The bystander's subscription is untouched; the closed connection's
    // two are gone, so there is room again.
    bystander_is_served(&broker, &mut bystander, "/topic/bystander").await;
}

#[tokio::test]
async fn a_reply_queue_cannot_take_over_a_subscription_id() {
    let (broker, mut bystander) = with_bystander(test_config()).await;
    // A topic subscription first, then a reply-to naming the same id.
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe("/temp-queue/x", "/topic/victim").await;
    client.send(request("/temp-queue/x", "r")).await;
    let error = client
        .expect_error("collides with the subscription id", CloseCode::Policy)
        .await;
    assert_eq!(error.get("receipt-id"), Some("r"));

    // A reply queue first, then a SUBSCRIBE with its id.
    let mut client = Client::connect(&broker.url()).await;
    client.send(request("/temp-queue/y", "r")).await;
    client.expect_receipt("r").await;
    client
        .send_subscribe("/temp-queue/y", "/topic/victim", &[])
        .await;
    client
        .expect_error("already in use on this connection", CloseCode::Protocol)
        .await;

    // Neither left a subscriber on /topic/victim behind: a publisher with a
    // receipt is answered, and nobody gets the message but the bystander's
    // own subscription to it.
    bystander.subscribe("v", "/topic/victim").await;
    let mut publisher = Client::connect(&broker.url()).await;
    publisher
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/topic/victim")
                .body("once"),
            "p",
        )
        .await;
    let message = bystander.message().await;
    assert_eq!(message.get("subscription"), Some("v"));
    bystander.expect_silence(Duration::from_millis(200)).await;
}

/// Many subscriptions with wildcard-bomb patterns (each with its own `#`
/// subtree) and a flood of 32-word publishes do not slow a canary's round
/// trip. Matching tried every split of every `#` before: about 500 000
/// steps per publish for these 16 patterns, tens of milliseconds each in a
/// debug build, so the flood held the router for many seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_bomb_does_not_slow_a_canary() {
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = BrokerProcess::start("[storage]\nenabled = false\n", dir.path());
    let url = broker.url.clone();
    let mut bomber = Client::connect(&url).await;
    for i in 0..16u32 {
        let prefix: Vec<&str> = (0..4)
            .map(|bit| if i >> bit & 1 == 1 { "x" } else { "*" })
            .collect();
        // Ends in `z`: nothing matches, so nobody must read deliveries.
        let pattern = format!("/topic/{}.#.x.#.x.#.x.#.z", prefix.join("."));
        bomber.subscribe(&i.to_string(), &pattern).await;
    }
    let mut canary = Client::connect(&url).await;
    canary.subscribe("c", "/topic/canary").await;

    let topic = format!("/topic/{}", vec!["x"; 32].join("."));
    let mut flooder = Client::connect(&url).await;
    for _ in 0..500 {
        flooder.publish(&topic, "boom").await;
    }
    // The canary's message is routed after the flood's.
    let started = Instant::now();
    canary
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/canary")
                .body("tweet"),
        )
        .await;
    assert_eq!(&canary.message().await.body[..], b"tweet");
    let round_trip = started.elapsed();
    eprintln!("canary round trip behind 500 bomb publishes: {round_trip:?}");
    assert!(
        round_trip < Duration::from_secs(2),
        "canary round trip {round_trip:?}"
    );
}
