//! Rate limits against the real broker: a flooding publisher is slowed to
//! its rule's rate while another publisher and a subscriber are unaffected
//! and nothing is lost; `action = "error"` ends the connection with an ERROR
//! naming the limit; new connections per second are limited per address.

mod common;

use common::{start, test_config, Client, Event};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use stomphub::config::{PublishRateRule, RateLimitAction};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn rule(pattern: &str, messages_per_second: Option<f64>, burst: f64) -> PublishRateRule {
    PublishRateRule {
        pattern: Some(pattern.into()),
        user: None,
        messages_per_second,
        bytes_per_second: None,
        burst_messages: Some(burst),
        burst_bytes: None,
        action: RateLimitAction::Slow,
    }
}

/// Sends `count` numbered SENDs to `destination` at full speed, the last
/// with a receipt, and returns how long until that RECEIPT came.
async fn flood(url: String, destination: &'static str, count: usize) -> Duration {
    let mut client = Client::connect(&url).await;
    let started = Instant::now();
    for n in 0..count {
        let mut frame = Frame::new(Command::Send)
            .header("destination", destination)
            .body(n.to_string());
        if n + 1 == count {
            frame = frame.header("receipt", "last");
        }
        client.send(frame).await;
    }
    match client.event_within(Duration::from_secs(30)).await {
        Some(Event::Frame(frame)) if frame.command == Command::Receipt => started.elapsed(),
        other => panic!("expected the RECEIPT, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_is_slowed_to_its_rate_and_nothing_is_lost() {
    let mut config = test_config();
    config.rate_limits.publish = vec![
        // No rates: exempt, although the next rule would match too.
        rule("/topic/free.#", None, 1.0),
        rule("/topic/#", Some(100.0), 10.0),
    ];
    let broker = start(config).await;
    let url = broker.url();
    let mut subscriber = Client::connect(&url).await;
    subscriber.subscribe("all", "/topic/#").await;

    let count = 500;
    let flooder = tokio::spawn(flood(url.clone(), "/topic/flood", count));
    let free = tokio::spawn(flood(url.clone(), "/topic/free.feed", count));

    // Every message of both arrives, each publisher's in order.
    let mut next = [0usize; 2];
    while next[0] < count || next[1] < count {
        let message = subscriber.message().await;
        let publisher = match message.get("destination") {
            Some("/topic/flood") => 0,
            Some("/topic/free.feed") => 1,
            other => panic!("unexpected destination {other:?}"),
        };
        assert_eq!(
            String::from_utf8_lossy(&message.body),
            next[publisher].to_string(),
            "publisher {publisher} out of order or lost"
        );
        next[publisher] += 1;
    }
    let flooded = flooder.await.expect("flooder");
    let free = free.await.expect("free publisher");
    // 500 SENDs at 100/s after a burst of 10: 4.9 s; it cannot be faster,
    // and the margin above is for a loaded machine.
    let rate = (count - 10) as f64 / flooded.as_secs_f64();
    eprintln!("limited: {flooded:?} ({rate:.0}/s, limit 100/s); unlimited: {free:?}");
    assert!(
        flooded >= Duration::from_millis(4600),
        "the flooder was not slowed: {flooded:?}"
    );
    assert!(
        rate > 50.0,
        "the flooder was slowed far below its rate: {rate:.0}/s"
    );
    assert!(
        free < Duration::from_millis(2500),
        "the unlimited publisher was slowed: {free:?}"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn action_error_ends_the_connection_with_an_error_naming_the_limit() {
    let mut config = test_config();
    let mut limited = rule("/topic/#", Some(0.01), 5.0);
    limited.action = RateLimitAction::Error;
    config.rate_limits.publish = vec![limited];
    let broker = start(config).await;
    let mut client = Client::connect(&broker.url()).await;
    for n in 0..5 {
        client.publish("/topic/a", &n.to_string()).await;
    }
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/a")
                .header("receipt", "sixth"),
        )
        .await;
    let error = client
        .expect_error(
            "publish rate limit exceeded: rate_limits.publish[0] (pattern /topic/#) allows 0.01 messages per second (burst 5)",
            CloseCode::Policy,
        )
        .await;
    assert_eq!(error.get("receipt-id"), Some("sixth"));
    // Bystanders are served.
    let mut other = Client::connect(&broker.url()).await;
    other.subscribe("s", "/topic/b").await;
    broker.shutdown().await;
}

#[tokio::test]
async fn new_connections_past_the_rate_of_an_address_are_refused_others_are_not() {
    let mut config = test_config();
    // One new connection per 100 s after a burst of 3: nothing refills
    // during the test.
    config.rate_limits.connections_per_second_per_ip = 0.01;
    config.rate_limits.connection_burst_per_ip = 3.0;
    let broker = start(config).await;
    let url = broker.url();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Client::connect(&url).await);
    }
    let mut fourth = Client::open(&url, &["v12.stomp"]).await;
    fourth
        .expect_error(
            "too many new connections from 127.0.0.1: rate_limits.connections_per_second_per_ip is 0.01 (burst 3)",
            CloseCode::Policy,
        )
        .await;
    // Another address has its own allowance.
    let mut other = Client::open_from(Ipv4Addr::new(127, 0, 0, 2), &url)
        .await
        .expect("127.0.0.2 connects");
    assert_eq!(other.stomp_connect().await.command, Command::Connected);
    // Closing connections gives no new ones back: it is a rate, not a count.
    drop(held);
    let mut fifth = Client::open(&url, &["v12.stomp"]).await;
    fifth
        .expect_error("too many new connections", CloseCode::Policy)
        .await;
    broker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_publisher_still_receives_and_is_not_cut_off_for_silence() {
    let mut config = test_config();
    // The client must be heard from every second; 2 s of silence ends it.
    config.stomp.heartbeat_receive = Duration::from_secs(1);
    config.rate_limits.publish = vec![PublishRateRule {
        bytes_per_second: Some(1000.0),
        burst_bytes: Some(1000.0),
        ..rule("/topic/slow.#", None, 1.0)
    }];
    let broker = start(config).await;
    let url = broker.url();
    let mut paused = Client::open(&url, &["v12.stomp"]).await;
    paused
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "1000,0"),
        )
        .await;
    assert_eq!(paused.frame().await.command, Command::Connected);
    paused.subscribe("news", "/topic/news").await;

    // About 5 000 bytes against 1 000 per second after a burst of 1 000:
    // the broker reads nothing more from this connection for about 4 s.
    let started = Instant::now();
    paused.publish("/topic/slow.big", &"b".repeat(5000)).await;
    paused
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/slow.small")
                .header("receipt", "after-the-pause"),
        )
        .await;
    // Meanwhile its subscription is served.
    let mut other = Client::connect(&url).await;
    other.publish("/topic/news", "while paused").await;
    let message = paused.message().await;
    assert_eq!(&message.body[..], b"while paused");
    assert!(
        started.elapsed() < Duration::from_millis(3000),
        "delivery waited for the pause: {:?}",
        started.elapsed()
    );
    // The pause (longer than the 2 s of silence that would end it) is not
    // the client's silence: the SEND after it is answered.
    match paused.event_within(Duration::from_secs(20)).await {
        Some(Event::Frame(frame)) if frame.command == Command::Receipt => {}
        other => panic!("expected the RECEIPT after the pause, got {other:?}"),
    }
    let paused_for = started.elapsed();
    eprintln!("receipt after {paused_for:?}");
    assert!(
        paused_for >= Duration::from_millis(3500),
        "no pause: {paused_for:?}"
    );
    broker.shutdown().await;
}
