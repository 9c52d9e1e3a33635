//! Hostile clients against the real broker binary. Each attack gets the
//! right ERROR or close; the broker's memory (VmHWM from /proc) stays within
//! a stated bound; and a well-behaved publisher/subscriber pair, connected
//! from another address throughout, loses nothing.

mod common;

use common::{BrokerProcess, Client, Event};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The broker's peak resident memory may grow by at most this much over the
/// whole run of attacks (its outbound budgets, queue memory limit and socket
/// buffers are what it may legitimately hold).
const MEMORY_BOUND_KIB: u64 = 48 * 1024;

const CONFIG: &str = r#"
[listener]
handshake_timeout = "1s"
connect_timeout = "1s"
max_connections_per_ip = 20

[limits]
max_queued_message_bytes = 8388608

[outbound]
max_queued_bytes = 1048576
max_queued_frames = 1024

[[queues.rules]]
pattern = "/queue/flood"
max_length = 1000000
"#;

/// The well-behaved pair: numbered messages every 2 ms from 127.0.0.2.
struct Canary {
    stop: tokio::sync::oneshot::Sender<()>,
    publisher: tokio::task::JoinHandle<u64>,
    subscriber: tokio::task::JoinHandle<(u64, Duration)>,
}

async fn start_canary(url: &str) -> Canary {
    let source = Ipv4Addr::new(127, 0, 0, 2);
    let mut subscriber = Client::open_from(source, url)
        .await
        .expect("canary subscriber");
    assert_eq!(subscriber.stomp_connect().await.command, Command::Connected);
    subscriber.subscribe("canary", "/topic/canary").await;
    let mut publisher = Client::open_from(source, url)
        .await
        .expect("canary publisher");
    assert_eq!(publisher.stomp_connect().await.command, Command::Connected);
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    // The canary's publisher stays at most 100 messages ahead of its
    // reader: what is watched is that the floods do not disturb it, not
    // whether a busy machine lets the reader fall a slow-consumer budget
    // behind.
    let (read, mut reader_progress) = tokio::sync::watch::channel(0u64);
    let publisher = tokio::spawn(async move {
        let mut sent = 0u64;
        while stopped.try_recv().is_err() {
            reader_progress
                .wait_for(|read| read + 100 > sent)
                .await
                .expect("the canary's reader is alive");
            publisher.publish("/topic/canary", &sent.to_string()).await;
            sent += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        publisher.publish("/topic/canary", "end").await;
        sent
    });
    let subscriber = tokio::spawn(async move {
        let mut expected = 0u64;
        let mut worst_gap = Duration::ZERO;
        let mut last = Instant::now();
        loop {
            let message = subscriber.message().await;
            worst_gap = worst_gap.max(last.elapsed());
            last = Instant::now();
            let body = String::from_utf8(message.body.to_vec()).expect("utf8");
            if body == "end" {
                return (expected, worst_gap);
            }
            assert_eq!(
                body,
                expected.to_string(),
                "canary lost or reordered a message"
            );
            expected += 1;
            read.send_replace(expected);
        }
    });
    Canary {
        stop,
        publisher,
        subscriber,
    }
}

/// An attacker's WebSocket, from 127.0.0.1, connected.
async fn attacker(url: &str) -> Client {
    Client::connect(url).await
}

/// Reads until the ERROR and the close; returns the ERROR's message.
async fn expect_error_close(client: &mut Client, code: CloseCode) -> String {
    let mut message = None;
    loop {
        match client.event().await {
            Event::Frame(frame) if frame.command == Command::Error => {
                message = frame.get("message").map(str::to_owned);
            }
            Event::Frame(_) | Event::HeartBeat => {}
            Event::Closed(got) => {
                assert_eq!(got, Some(code), "close code (ERROR was {message:?})");
                return message.expect("an ERROR before the close");
            }
        }
    }
}

async fn oversized_inputs(url: &str) {
    // A body without content-length, growing past max_body_bytes in 64 KiB messages.
    let mut client = attacker(url).await;
    client
        .try_send_bytes(b"SEND\ndestination:/topic/x\n\n")
        .await;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..32 {
        if !client.try_send_bytes(&chunk).await {
            break;
        }
    }
    assert!(expect_error_close(&mut client, CloseCode::Size)
        .await
        .contains("max_body_bytes"));

    // A content-length of 1 GB, announced: refused before any body byte.
    let mut client = attacker(url).await;
    client
        .send_bytes(b"SEND\ndestination:/topic/x\ncontent-length:1000000000\n\n")
        .await;
    assert!(expect_error_close(&mut client, CloseCode::Size)
        .await
        .contains("max_body_bytes is 1048576"));

    // 100 000 headers in one message.
    let mut client = attacker(url).await;
    let mut frame = b"SEND\ndestination:/topic/x\n".to_vec();
    for i in 0..100_000 {
        frame.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    client.try_send_bytes(&frame).await;
    let message = expect_error_close(&mut client, CloseCode::Size).await;
    assert!(
        message.contains("max_headers") || message.contains("max_header_bytes"),
        "{message}"
    );

    // A 1 MiB header line.
    let mut client = attacker(url).await;
    let mut frame = b"SEND\ndestination:/topic/x\nbig:".to_vec();
    frame.extend(std::iter::repeat_n(b'v', 1024 * 1024));
    client.try_send_bytes(&frame).await;
    assert!(expect_error_close(&mut client, CloseCode::Size)
        .await
        .contains("max_header_line_bytes"));

    // One WebSocket message larger than any frame may be.
    let mut client = attacker(url).await;
    client.try_send_bytes(&vec![b'x'; 2 * 1024 * 1024]).await;
    assert!(expect_error_close(&mut client, CloseCode::Size)
        .await
        .contains("WebSocket message too large"));
}

async fn malformed_inputs(url: &str) {
    // Invalid UTF-8 in a text message (hand-made WebSocket frame: FIN, text, masked).
    let mut client = attacker(url).await;
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.ws.get_mut() else {
        panic!("plain")
    };
    tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .expect("write");
    assert!(expect_error_close(&mut client, CloseCode::Invalid)
        .await
        .contains("UTF-8"));

    // A bad escape, and a frame after it in the same message that must never be routed.
    let mut client = attacker(url).await;
    client
        .send_bytes(b"SEND\ndestination:/topic/canary\nx:a\\tb\n\n\0SEND\ndestination:/topic/canary\n\nINJECTED\0")
        .await;
    assert!(expect_error_close(&mut client, CloseCode::Protocol)
        .await
        .contains("undefined escape"));

    // SEND before CONNECT.
    let mut client = Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/canary")
                .body("INJECTED"),
        )
        .await;
    assert!(expect_error_close(&mut client, CloseCode::Protocol)
        .await
        .contains("first frame must be CONNECT"));

    // A duplicate subscription id.
    let mut client = attacker(url).await;
    client.subscribe("same", "/topic/a").await;
    client
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "same")
                .header("destination", "/topic/b"),
        )
        .await;
    assert!(expect_error_close(&mut client, CloseCode::Protocol)
        .await
        .contains("already in use"));
}

async fn handshake_abuse(address: &str, url: &str) {
    // Slowloris: an upgrade request one byte at a time, never finished.
    let started = Instant::now();
    let mut slow = TcpStream::connect(address).await.expect("connect");
    let request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let mut closed = false;
    for byte in request.iter().cycle().take(60) {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !closed {
        let mut buffer = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buffer)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "the slow handshake is cut off"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(6));

    // An upgrade request with a megabyte of headers.
    let mut huge = TcpStream::connect(address).await.expect("connect");
    let mut request = b"GET /ws HTTP/1.1\r\nHost: x\r\n".to_vec();
    for i in 0..20_000 {
        request.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "y".repeat(40)).as_bytes());
    }
    let _ = huge.write_all(&request).await;
    let mut buffer = vec![0u8; 4096];
    let answer = tokio::time::timeout(Duration::from_secs(3), huge.read(&mut buffer)).await;
    match answer {
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buffer[..n]);
            assert!(
                n == 0 || !text.contains(" 101 "),
                "no upgrade for a huge request: {text}"
            );
        }
        Ok(Err(_)) => {}
        Err(_) => panic!("a huge upgrade request is neither answered nor closed"),
    }

    // A connection that never sends CONNECT.
    let mut idle = Client::open(url, &["v12.stomp"]).await;
    assert!(expect_error_close(&mut idle, CloseCode::Policy)
        .await
        .contains("no CONNECT"));

    // Too many connections from one address (127.0.0.3): 20 allowed.
    let source = Ipv4Addr::new(127, 0, 0, 3);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..25 {
        let mut client = Client::open_from(source, url).await.expect("open");
        let answer = client.stomp_connect().await;
        if answer.command == Command::Error {
            assert!(answer
                .get("message")
                .unwrap_or_default()
                .contains("max_connections_per_ip is 20"));
            refused += 1;
        }
        held.push(client);
    }
    assert_eq!(refused, 5);
}

async fn slow_subscriber_and_flooding_publisher(url: &str) {
    // A subscriber that never reads, while a publisher sends 16 MB at full speed.
    let mut sleeper = attacker(url).await;
    sleeper.subscribe("s", "/topic/flood").await;
    let mut publisher = attacker(url).await;
    let body = "z".repeat(4096);
    for _ in 0..4000 {
        publisher.publish("/topic/flood", &body).await;
    }
    publisher
        .send_confirmed(
            Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/topic/y"),
            "flushed",
        )
        .await;
    let mut received = 0;
    loop {
        match sleeper.event().await {
            Event::Frame(frame) if frame.command == Command::Message => received += 1,
            Event::Closed(_) => break,
            _ => {}
        }
    }
    assert!(received < 4000, "the sleeping subscriber was cut off");
}

async fn queue_flood_is_held_back(url: &str) {
    // No consumer; the queues' memory limit is 8 MiB. The publisher is held
    // back instead of the broker buffering 32 MB.
    let url_owned = url.to_owned();
    let flood = tokio::spawn(async move {
        let mut publisher = Client::connect(&url_owned).await;
        let body = "q".repeat(8192);
        for _ in 0..4000 {
            publisher.publish("/queue/flood", &body).await;
        }
        publisher
            .send_confirmed(Frame::new(Command::Disconnect), "all-sent")
            .await;
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !flood.is_finished(),
        "the publisher is paused while the queues are full"
    );

    // Connection setup stays responsive under the pressure: a newcomer gets
    // in (CONNECTED and a SUBSCRIBE's RECEIPT; 5 s is generous for a busy
    // machine, a broker stuck behind the flood would never answer) while
    // the flood is still held back.
    let started = Instant::now();
    let mut newcomer = Client::connect(url).await;
    newcomer
        .subscribe_confirmed("t", "/topic/newcomer", "newcomer-in")
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "CONNECT and SUBSCRIBE took {:?}",
        started.elapsed()
    );
    assert!(
        !flood.is_finished(),
        "the newcomer got in while the publisher was held back"
    );

    // A consumer drains the queue: the publisher resumes, nothing is lost.
    let mut consumer = Client::connect(url).await;
    consumer.subscribe("q", "/queue/flood").await;
    for _ in 0..4000 {
        assert_eq!(consumer.message().await.body.len(), 8192);
    }
    tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("publisher finished")
        .expect("task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_answered_bounded_and_harmless_to_others() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut broker = BrokerProcess::start(CONFIG, dir.path());
    let url = broker.url.clone();
    let canary = start_canary(&url).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_before, _) = broker.memory_kib();

    oversized_inputs(&url).await;
    malformed_inputs(&url).await;
    handshake_abuse(&broker.address, &url).await;
    slow_subscriber_and_flooding_publisher(&url).await;
    queue_flood_is_held_back(&url).await;

    assert!(broker.alive(), "the broker survived");
    let (rss_after, peak) = broker.memory_kib();
    eprintln!("broker memory: VmRSS before {rss_before} KiB, after {rss_after} KiB, peak (VmHWM) {peak} KiB");
    assert!(
        peak < rss_before + MEMORY_BOUND_KIB,
        "peak {peak} KiB exceeds the start ({rss_before} KiB) + {MEMORY_BOUND_KIB} KiB"
    );

    let _ = canary.stop.send(());
    let sent = canary.publisher.await.expect("canary publisher");
    let (received, worst_gap) = canary.subscriber.await.expect("canary subscriber");
    eprintln!("canary: {sent} sent, {received} received in order, worst gap {worst_gap:?}");
    assert_eq!(received, sent, "the well-behaved client lost nothing");
}
