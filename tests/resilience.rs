//! Heart-beats, slow consumers and shutdown, over real WebSockets and real time.

mod common;

use common::{start, test_config, Client, Event};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn fast_heartbeat_config() -> stomphub::Config {
    let mut config = test_config();
    config.stomp.heartbeat_send = Duration::from_millis(100);
    config.stomp.heartbeat_receive = Duration::from_millis(100);
    config
}

/// Connects with `heart_beat`; CONNECTED must announce `settled`.
async fn connect_with_heartbeat(url: &str, heart_beat: &str, settled: &str) -> Client {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", heart_beat),
        )
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.get("heart-beat"), Some(settled));
    client
}

#[tokio::test]
async fn server_sends_heart_beats_at_the_negotiated_interval() {
    let broker = start(fast_heartbeat_config()).await;
    // The client wants one every 150 ms: max(100, 150).
    let mut client = connect_with_heartbeat(&broker.url(), "0,150", "150,0").await;
    let started = Instant::now();
    let mut beats = Vec::new();
    while started.elapsed() < Duration::from_secs(2) {
        match client.event_within(Duration::from_secs(2)).await {
            Some(Event::HeartBeat) => beats.push(Instant::now()),
            other => panic!("expected heart-beats, got {other:?}"),
        }
    }
    // A beat goes out a quarter early (after 112 ms of silence).
    common::assert_beat_pace(
        &beats,
        6,
        Duration::from_millis(80)..=Duration::from_millis(200),
    );
}

#[tokio::test]
async fn client_heart_beats_keep_the_connection_alive() {
    let mut config = test_config();
    config.stomp.heartbeat_send = Duration::from_millis(500);
    config.stomp.heartbeat_receive = Duration::from_millis(500);
    let broker = start(config).await;
    // The broker cuts a client off after twice 500 ms without data: beats
    // every 100 ms for 2.5 s keep it, with room for a stalled machine.
    let mut client = connect_with_heartbeat(&broker.url(), "500,0", "0,500").await;
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.send_text("\n").await;
    }
    client.subscribe_confirmed("1", "/topic/x", "alive").await;
}

#[tokio::test]
async fn silent_client_is_cut_off_after_the_grace() {
    let broker = start(fast_heartbeat_config()).await;
    let mut client = connect_with_heartbeat(&broker.url(), "100,0", "0,100").await;
    let started = Instant::now();
    // Do not read (so no pong answers the server's ping) for longer than 2 × 100 ms.
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .expect_error("heart-beat timeout", CloseCode::Policy)
        .await;
    assert!(started.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn slow_consumer_is_cut_off_while_a_fast_one_keeps_receiving() {
    let mut config = test_config();
    config.outbound.max_queued_bytes = 64 * 1024;
    config.outbound.max_queued_frames = 256;
    config.limits.max_body_bytes = 16 * 1024;
    let broker = start(config).await;
    let url = broker.url();

    let mut slow = Client::connect(&url).await;
    slow.subscribe("s", "/topic/feed").await;
    let mut fast = Client::connect(&url).await;
    fast.subscribe("f", "/topic/feed").await;

    const COUNT: usize = 4000;
    let body = "x".repeat(4096);
    // The publisher stays at most 8 messages (32 KiB, half the budget) ahead of the fast reader: a
    // feed at the rate its healthy subscribers read, 16 MB in all, far more
    // than the slow reader's budget and socket buffers can hold.
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let publisher = tokio::spawn(async move {
        let mut publisher = Client::connect(&url).await;
        for i in 0..COUNT {
            if progress_rx.wait_for(|read| read + 8 >= i).await.is_err() {
                panic!("fast reader stopped");
            }
            publisher.publish("/topic/feed", &body).await;
        }
        publisher
            .send(Frame::new(Command::Disconnect).header("receipt", "end"))
            .await;
        publisher.expect_receipt("end").await;
    });
    // The fast subscriber reads everything while `slow` reads nothing.
    for i in 0..COUNT {
        let message = fast.frame().await;
        assert_eq!(message.command, Command::Message, "{message:?}");
        assert_eq!(message.body.len(), 4096);
        progress_tx.send_replace(i + 1);
    }
    publisher.await.expect("publisher");
    // Now `slow` reads: what its socket held, then the end. The ERROR "slow
    // consumer" is sent best-effort: when the client's socket buffer is full
    // it cannot get through, and the broker drops the TCP connection instead.
    let mut received = 0;
    loop {
        match slow.event().await {
            Event::Frame(frame) if frame.command == Command::Message => received += 1,
            Event::Frame(frame) => {
                assert_eq!(frame.command, Command::Error);
                assert_eq!(frame.get("message"), Some("slow consumer"));
            }
            Event::HeartBeat => {}
            Event::Closed(code) => {
                assert!(matches!(code, None | Some(CloseCode::Policy)), "{code:?}");
                break;
            }
        }
    }
    assert!(
        received < COUNT,
        "the slow consumer was cut off ({received} received)"
    );
}

#[tokio::test]
async fn shutdown_tells_sessions_and_finishes_in_time() {
    let broker = start(test_config()).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(Client::connect(&broker.url()).await);
    }
    let url = broker.url();
    let started = Instant::now();
    broker.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    for client in &mut clients {
        client
            .expect_error("server shutting down", CloseCode::Away)
            .await;
    }
    assert!(
        Client::try_open(&url, &[]).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn drop_oldest_policy_keeps_a_slow_subscriber_with_the_latest_messages() {
    let mut config = test_config();
    config.outbound.max_queued_bytes = 64 * 1024;
    config.outbound.max_queued_frames = 256;
    config.limits.max_body_bytes = 16 * 1024;
    config.slow_consumers = stomphub::Config::from_toml(
        "[[slow_consumers.rules]]\npattern = \"/topic/ticker.#\"\npolicy = \"drop-oldest\"\n",
        "test",
    )
    .expect("config")
    .slow_consumers;
    let broker = start(config).await;
    let url = broker.url();
    let mut slow = Client::connect(&url).await;
    slow.subscribe("t", "/topic/ticker.*").await;

    const COUNT: usize = 3000;
    let mut publisher = Client::connect(&url).await;
    let padding = "p".repeat(4000);
    for i in 0..COUNT {
        publisher
            .publish("/topic/ticker.acme", &format!("{i:05}{padding}"))
            .await;
    }
    publisher
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/ticker.acme")
                .header("receipt", "last")
                .body("last"),
        )
        .await;
    publisher.expect_receipt("last").await;

    // Only now does the slow subscriber read: older ticks are gone, the
    // connection is not, the order holds and the latest value is there.
    let mut previous: Option<usize> = None;
    let mut received = 0;
    loop {
        let message = slow.message().await;
        let body = String::from_utf8(message.body.to_vec()).expect("utf8");
        if body == "last" {
            break;
        }
        let sequence: usize = body[..5].parse().expect("sequence");
        assert!(previous.is_none_or(|p| sequence > p), "order kept");
        previous = Some(sequence);
        received += 1;
    }
    assert!(
        received < COUNT,
        "some old ticks were dropped ({received} of {COUNT} kept)"
    );
    slow.send_confirmed(
        Frame::new(Command::Unsubscribe).header("id", "t"),
        "still-connected",
    )
    .await;
}
