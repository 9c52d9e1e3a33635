//! How connections end, and heart-beats negotiated per client, against the
//! real broker binary: a client's Close is answered with its code; an ERROR
//! and its close code always arrive, even while the client is still writing;
//! heart-beats follow the client's `heart-beat` header within floor and
//! ceiling; the strict and the lenient (WebSocket ping) cut-off.

mod common;

use common::{BrokerProcess, Client, Event, WAIT};
use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// The real binary with `config`; the directory lives as long as it does.
fn broker(config: &str) -> (BrokerProcess, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("stomphub-closing-")
        .tempdir()
        .expect("temp dir");
    (BrokerProcess::start(config, dir.path()), dir)
}

/// Opens a WebSocket and sends CONNECT 1.2 with `heart_beat`; returns the
/// client and CONNECTED's `heart-beat`.
async fn connect_with_heartbeat(url: &str, heart_beat: &str) -> (Client, String) {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", heart_beat),
        )
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let settled = connected.get("heart-beat").unwrap_or_default().to_owned();
    (client, settled)
}

#[tokio::test]
async fn a_client_close_is_answered_with_the_same_code_before_the_tcp_end() {
    let (broker, _dir) = broker("");
    for code in [CloseCode::Normal, CloseCode::Library(4001)] {
        let mut client = Client::connect(&broker.url).await;
        client
            .ws
            .close(Some(CloseFrame {
                code,
                reason: "bye".into(),
            }))
            .await
            .expect("close sent");
        match tokio::time::timeout(WAIT, client.ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => assert_eq!(frame.code, code),
            other => panic!("expected a Close frame echoing {code:?}, got {other:?}"),
        }
        // Then the server ends the TCP connection (it closes first, RFC 6455 §7.1.1).
        match tokio::time::timeout(WAIT, client.ws.next()).await {
            Ok(None) => {}
            other => panic!("expected the end of the connection, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_error_and_its_close_code_arrive_while_the_client_is_still_writing() {
    let (broker, _dir) = broker("");
    for attempt in 0..10 {
        let mut client = Client::connect(&broker.url).await;
        if attempt % 2 == 0 {
            // One WebSocket message of 2 MiB: refused at its frame header,
            // while the rest is still on its way.
            let mut frame = b"SEND\ndestination:/topic/x\ncontent-length:2097152\n\n".to_vec();
            frame.resize(frame.len() + 2 * 1024 * 1024, b'x');
            frame.push(0);
            assert!(
                client.try_send_bytes(&frame).await,
                "the broker read it all"
            );
            client
                .expect_error("max_body_bytes (1048576 bytes)", CloseCode::Size)
                .await;
        } else {
            // A content-length over the limit, then 2 MiB of body in 64 KiB
            // messages: refused by the codec after the first message.
            client
                .send_bytes(b"SEND\ndestination:/topic/x\ncontent-length:2097152\n\n")
                .await;
            let chunk = vec![b'x'; 64 * 1024];
            for _ in 0..32 {
                assert!(
                    client.try_send_bytes(&chunk).await,
                    "the broker read it all"
                );
            }
            client.expect_error("max_body_bytes", CloseCode::Size).await;
        }
    }
}

#[tokio::test]
async fn heart_beat_0_1000_gets_beats_well_inside_the_clients_timeout() {
    let (broker, _dir) = broker("");
    let (mut client, settled) = connect_with_heartbeat(&broker.url, "0,1000").await;
    assert_eq!(settled, "1000,0");
    let started = Instant::now();
    let mut last = started;
    let mut gaps = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        match client.event_within(Duration::from_secs(3)).await {
            Some(Event::HeartBeat) => {}
            other => panic!("expected a heart-beat, got {other:?}"),
        }
        gaps.push(last.elapsed());
        last = Instant::now();
    }
    // Beats go out a quarter early (every 750 ms), so a client that allows
    // 1 s plus its own margin never times out. A loaded machine may delay
    // one now and then: the typical gap is judged against 1 s, and every
    // gap against the twice-the-interval a client cuts off at.
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    let longest = gaps[gaps.len() - 1];
    assert!(
        median <= Duration::from_millis(1000),
        "median gap {median:?} between heart-beats (all: {gaps:?})"
    );
    assert!(
        longest < Duration::from_millis(2000),
        "a gap of {longest:?} between heart-beats"
    );
}

#[tokio::test]
async fn strict_a_silent_client_is_cut_off_within_the_grace_whatever_its_pings() {
    let (broker, _dir) = broker("[stomp]\nheartbeat_ping = false\n");
    // Timed from before the CONNECT: the broker's clock starts when it
    // reads it, so the lower bound below holds however late this task runs.
    let started = Instant::now();
    let (mut client, settled) = connect_with_heartbeat(&broker.url, "1000,0").await;
    assert_eq!(settled, "0,1000");
    // WebSocket pings are not STOMP heart-beats when the leniency is off.
    let error = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        let _ = client.ws.send(Message::Ping(Vec::new().into())).await;
        match client.event_within(Duration::from_millis(300)).await {
            None | Some(Event::HeartBeat) => continue,
            Some(Event::Frame(frame)) => break frame,
            Some(Event::Closed(code)) => panic!("closed ({code:?}) without ERROR"),
        }
    };
    let silent = started.elapsed();
    assert_eq!(error.command, Command::Error, "{error:?}");
    let message = error.get("message").unwrap_or_default();
    assert!(message.contains("heart-beat timeout"), "{message}");
    // 1000 ms × heartbeat_grace 2.0 (not after one interval, and not the
    // 20 s that the old fixed 10 s offer gave).
    assert!(
        silent >= Duration::from_millis(1500) && silent < Duration::from_secs(4),
        "cut off after {silent:?}"
    );
    client.expect_close(CloseCode::Policy).await;
}

#[tokio::test]
async fn lenient_a_client_whose_websocket_answers_pings_is_kept() {
    let (broker, _dir) = broker("");
    let (mut client, settled) = connect_with_heartbeat(&broker.url, "1000,0").await;
    assert_eq!(settled, "0,1000");
    // No STOMP byte for 3.5 s (past 1000 ms × grace 2), but reading lets
    // tungstenite answer the broker's pings, as a background tab would.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(3500) {
        match client.event_within(Duration::from_millis(200)).await {
            None | Some(Event::HeartBeat) => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }
    client.subscribe_confirmed("1", "/topic/x", "alive").await;
}

#[tokio::test]
async fn absurd_heart_beat_values_are_clamped_never_a_panic() {
    let (mut broker, _dir) = broker("");
    for (asked, settled) in [
        (
            "18446744073709551615,18446744073709551615",
            "3600000,3600000",
        ),
        ("99999999999999999999999,1", "1000,3600000"),
        ("10000,10000", "10000,10000"),
        ("1,0", "0,1000"),
    ] {
        let (mut client, got) = connect_with_heartbeat(&broker.url, asked).await;
        assert_eq!(got, settled, "CONNECTED heart-beat for {asked}");
        client.subscribe_confirmed("1", "/topic/x", "r").await;
        client.expect_silence(Duration::from_millis(100)).await;
    }
    assert!(broker.alive());
}
