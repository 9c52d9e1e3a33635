//! STOMP over plain TCP (a `kind = "tcp"` listener), black-box with a raw
//! TCP client: CONNECT and heart-beat negotiation, pub/sub, delivery across
//! TCP and WebSocket both ways, ERROR then close on a malformed frame with a
//! bystander unaffected, heart-beats at the negotiated pace and the
//! heart-beat timeout (strict: TCP has no ping), TLS, frames in 1-byte writes,
//! login, per-address admission and graceful shutdown.

mod common;

use bytes::{Buf, BytesMut};
use common::{start, test_config, Client, TestBroker, WAIT};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use stomphub::config::{Anonymous, Config, EndpointConfig, ListenerKind, TlsConfig, UserConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::rustls;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A raw STOMP-over-TCP client: frames encoded on the stream, EOLs between
/// frames reported as heart-beats.
struct TcpClient {
    stream: Box<dyn Stream>,
    decoder: Decoder,
    buffer: BytesMut,
}

/// What the server did next.
#[derive(Debug)]
enum Event {
    Frame(Frame),
    HeartBeat,
    /// End of stream (or a reset).
    Closed,
}

impl TcpClient {
    async fn open(address: SocketAddr) -> TcpClient {
        let stream = TcpStream::connect(address).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        TcpClient::over(Box::new(stream))
    }

    fn over(stream: Box<dyn Stream>) -> TcpClient {
        TcpClient {
            stream,
            decoder: Decoder::new(Limits::default()),
            buffer: BytesMut::new(),
        }
    }

    /// Opens and CONNECTs (1.2, `heart-beat`), returning the answer.
    async fn open_with(address: SocketAddr, headers: &[(&str, &str)]) -> (TcpClient, Frame) {
        let mut client = TcpClient::open(address).await;
        let answer = client.login(headers).await;
        (client, answer)
    }

    async fn login(&mut self, headers: &[(&str, &str)]) -> Frame {
        let mut connect = Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("host", "localhost");
        for (name, value) in headers {
            connect = connect.header(*name, *value);
        }
        self.send(connect).await;
        self.frame().await
    }

    /// Opens and CONNECTs without heart-beats; expects CONNECTED.
    async fn connect(address: SocketAddr) -> TcpClient {
        let (client, connected) = TcpClient::open_with(address, &[("heart-beat", "0,0")]).await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    async fn send(&mut self, frame: Frame) {
        let bytes = encode(&frame, Version::V1_2);
        self.send_bytes(&bytes).await;
    }

    async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        self.stream.flush().await.expect("flush");
    }

    async fn event_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = Instant::now() + limit;
        loop {
            if self.buffer.starts_with(b"\r\n") {
                self.buffer.advance(2);
                return Some(Event::HeartBeat);
            }
            if self.buffer.starts_with(b"\n") {
                self.buffer.advance(1);
                return Some(Event::HeartBeat);
            }
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buffer)
                .expect("server frames decode")
            {
                return Some(Event::Frame(frame));
            }
            match timeout_at(deadline, self.stream.read_buf(&mut self.buffer)).await {
                Err(_) => return None,
                Ok(Ok(0) | Err(_)) => return Some(Event::Closed),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame within `WAIT`, skipping heart-beats; panics on close.
    async fn frame(&mut self) -> Frame {
        loop {
            match self.event_within(WAIT).await {
                Some(Event::Frame(frame)) => return frame,
                Some(Event::HeartBeat) => continue,
                Some(Event::Closed) => panic!("closed while a frame was expected"),
                None => panic!("no frame within {WAIT:?}"),
            }
        }
    }

    /// Expects ERROR whose `message` contains `needle`, then the end of the stream.
    async fn expect_error(&mut self, needle: &str) -> Frame {
        let error = self.frame().await;
        assert_eq!(error.command, Command::Error, "{error:?}");
        let message = error.get("message").unwrap_or_default();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        self.expect_closed().await;
        error
    }

    async fn expect_closed(&mut self) {
        loop {
            match self.event_within(WAIT).await {
                Some(Event::Closed) => return,
                Some(Event::HeartBeat) => continue,
                other => panic!("expected the end of the stream, got {other:?}"),
            }
        }
    }

    async fn subscribe(&mut self, id: &str, destination: &str, ack: &str) {
        self.send(
            Frame::new(Command::Subscribe)
                .header("id", id)
                .header("destination", destination)
                .header("ack", ack)
                .header("receipt", id),
        )
        .await;
        self.expect_receipt(id).await;
    }

    async fn publish(&mut self, destination: &str, body: &str) {
        self.send(
            Frame::new(Command::Send)
                .header("destination", destination)
                .header("receipt", "sent")
                .body(body.as_bytes().to_vec()),
        )
        .await;
        self.expect_receipt("sent").await;
    }

    async fn expect_receipt(&mut self, receipt: &str) {
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Receipt, "{frame:?}");
        assert_eq!(frame.get("receipt-id"), Some(receipt));
    }

    async fn expect_message(&mut self, destination: &str, body: &str) -> Frame {
        let message = self.frame().await;
        assert_eq!(message.command, Command::Message, "{message:?}");
        assert_eq!(message.get("destination"), Some(destination));
        assert_eq!(message.body, body.as_bytes());
        message
    }
}

fn tcp_listener(tls: Option<TlsConfig>) -> EndpointConfig {
    EndpointConfig {
        kind: ListenerKind::Tcp,
        address: "127.0.0.1:0".parse().expect("address"),
        tls,
        ..EndpointConfig::default()
    }
}

/// A broker with the default WebSocket listener first and a TCP one second.
async fn start_with_tcp(mut config: Config) -> (TestBroker, SocketAddr) {
    config.listeners.push(tcp_listener(None));
    let broker = start(config).await;
    let tcp = broker.local_addrs()[1];
    assert_eq!(broker.urls()[1], format!("tcp://{tcp}"));
    (broker, tcp)
}

#[tokio::test]
async fn connect_negotiates_version_and_heart_beats() {
    let mut config = test_config();
    config.stomp.heartbeat_send = Duration::from_millis(300);
    config.stomp.heartbeat_receive = Duration::from_millis(400);
    let (_broker, tcp) = start_with_tcp(config).await;
    let (_client, connected) = TcpClient::open_with(
        tcp,
        &[("heart-beat", "1000,100"), ("accept-version", "1.1,1.2")],
    )
    .await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    assert_eq!(connected.get("version"), Some("1.2"));
    // We send every 300 ms (the client asked for 100: not faster than we
    // offer) and expect its beats every 1000 ms (slower than our 400).
    assert_eq!(connected.get("heart-beat"), Some("300,1000"));
    assert!(connected.get("session").is_some(), "{connected:?}");
}

#[tokio::test]
async fn subscribe_send_and_message_over_tcp() {
    let (_broker, tcp) = start_with_tcp(test_config()).await;
    let mut subscriber = TcpClient::connect(tcp).await;
    subscriber.subscribe("s1", "/topic/prices", "auto").await;
    let mut publisher = TcpClient::connect(tcp).await;
    publisher.publish("/topic/prices", "42").await;
    let message = subscriber.expect_message("/topic/prices", "42").await;
    assert_eq!(message.get("subscription"), Some("s1"));

    // A queue with client-individual acks: the ACK's receipt comes back.
    subscriber
        .subscribe("q1", "/queue/jobs", "client-individual")
        .await;
    publisher.publish("/queue/jobs", "job").await;
    let job = subscriber.expect_message("/queue/jobs", "job").await;
    let ack = job.get("ack").expect("ack header").to_owned();
    subscriber
        .send(
            Frame::new(Command::Ack)
                .header("id", ack.as_str())
                .header("receipt", "acked"),
        )
        .await;
    subscriber.expect_receipt("acked").await;

    // DISCONNECT with a receipt: the RECEIPT, then the end of the stream.
    subscriber
        .send(Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    subscriber.expect_receipt("bye").await;
    subscriber.expect_closed().await;
}

#[tokio::test]
async fn publish_on_tcp_delivers_on_websocket_and_back() {
    let (broker, tcp) = start_with_tcp(test_config()).await;
    let mut browser = Client::connect(&broker.urls()[0]).await;
    browser
        .subscribe_confirmed("w", "/topic/feed", "w-sub")
        .await;
    let mut backend = TcpClient::connect(tcp).await;
    backend.subscribe("t", "/topic/replies", "auto").await;

    backend.publish("/topic/feed", "from tcp").await;
    let message = browser.message().await;
    assert_eq!(message.get("destination"), Some("/topic/feed"));
    assert_eq!(&message.body[..], b"from tcp");

    browser.publish("/topic/replies", "from ws").await;
    backend.expect_message("/topic/replies", "from ws").await;
}

#[tokio::test]
async fn malformed_frame_gets_error_then_close_and_bystander_goes_on() {
    let (_broker, tcp) = start_with_tcp(test_config()).await;
    let mut bystander = TcpClient::connect(tcp).await;
    bystander.subscribe("b", "/topic/t", "auto").await;
    let mut offender = TcpClient::connect(tcp).await;
    // An escape that STOMP 1.2 does not define is fatal.
    offender
        .send_bytes(b"SEND\ndestination:/topic/t\nbad:\\x\n\nbody\0")
        .await;
    let error = offender.expect_error("").await;
    assert!(
        !error.get("message").unwrap_or_default().is_empty(),
        "{error:?}"
    );

    let mut publisher = TcpClient::connect(tcp).await;
    publisher.publish("/topic/t", "still here").await;
    bystander.expect_message("/topic/t", "still here").await;
}

#[tokio::test]
async fn the_server_beats_at_the_negotiated_pace() {
    let mut config = test_config();
    config.stomp.heartbeat_send = Duration::from_millis(200);
    config.stomp.heartbeat_receive = Duration::ZERO;
    let (_broker, tcp) = start_with_tcp(config).await;
    let (mut client, connected) = TcpClient::open_with(tcp, &[("heart-beat", "0,200")]).await;
    assert_eq!(connected.get("heart-beat"), Some("200,0"));
    let started = Instant::now();
    let mut beats = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        match client.event_within(Duration::from_secs(2)).await {
            Some(Event::HeartBeat) => beats.push(std::time::Instant::now()),
            other => panic!("expected heart-beats, got {other:?}"),
        }
    }
    // One each 150 ms (a quarter early): about 10 in 1.5 s.
    common::assert_beat_pace(
        &beats,
        5,
        Duration::from_millis(100)..=Duration::from_millis(250),
    );
}

#[tokio::test]
async fn a_silent_client_is_cut_off_after_interval_times_grace() {
    let mut config = test_config();
    config.stomp.heartbeat_send = Duration::ZERO;
    config.stomp.heartbeat_receive = Duration::from_millis(200);
    config.stomp.heartbeat_grace = 2.0;
    // The default pings late WebSocket clients; TCP has no ping, so the
    // cut-off is the strict one.
    assert!(config.stomp.heartbeat_ping);
    let (_broker, tcp) = start_with_tcp(config).await;
    // Timed from before the CONNECT: the broker's clock starts when it
    // reads it, so the lower bound below holds however late this task runs.
    let silent_since = Instant::now();
    let (mut client, connected) = TcpClient::open_with(tcp, &[("heart-beat", "200,0")]).await;
    assert_eq!(connected.get("heart-beat"), Some("0,200"));
    client.expect_error("heart-beat timeout").await;
    let waited = silent_since.elapsed();
    // Cut at 200 ms × grace 2.
    assert!(
        waited >= Duration::from_millis(350) && waited < Duration::from_millis(1500),
        "{waited:?}"
    );

    // A client that beats (one EOL each 100 ms) stays.
    let (mut beating, _) = TcpClient::open_with(tcp, &[("heart-beat", "200,0")]).await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        beating.send_bytes(b"\n").await;
    }
    beating.subscribe("alive", "/topic/x", "auto").await;
}

#[tokio::test]
async fn a_frame_in_one_byte_writes_is_one_frame() {
    let (_broker, tcp) = start_with_tcp(test_config()).await;
    let mut subscriber = TcpClient::connect(tcp).await;
    subscriber.subscribe("s", "/topic/split", "auto").await;
    let mut client = TcpClient::open(tcp).await;
    let connect = encode(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("heart-beat", "0,0"),
        Version::V1_2,
    );
    let send = encode(
        &Frame::new(Command::Send)
            .header("destination", "/topic/split")
            .header("receipt", "r")
            .body(b"one byte at a time".to_vec()),
        Version::V1_2,
    );
    for bytes in [&connect[..], &b"\r\n\n"[..], &send[..]] {
        for byte in bytes {
            client.send_bytes(&[*byte]).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client.expect_receipt("r").await;
    subscriber
        .expect_message("/topic/split", "one byte at a time")
        .await;
}

#[tokio::test]
async fn stomp_over_tls_on_a_tcp_listener() {
    let dir = tempfile::tempdir().expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).expect("write");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write");
    let mut config = test_config();
    config.listeners.push(tcp_listener(Some(TlsConfig {
        cert_file,
        key_file,
    })));
    let broker = start(config).await;
    let address = broker.local_addrs()[1];
    assert_eq!(broker.urls()[1], format!("ssl://{address}"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(address).await.expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut client = TcpClient::over(Box::new(tls));
    let connected = client.login(&[("heart-beat", "0,0")]).await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    client.subscribe("s", "/topic/secure", "auto").await;
    // Its own MESSAGE may overtake the RECEIPT: no receipt here.
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/secure")
                .body(&b"sealed"[..]),
        )
        .await;
    client.expect_message("/topic/secure", "sealed").await;

    // Plain STOMP on the TLS port is not served.
    let mut plain = TcpClient::open(address).await;
    plain
        .stream
        .write_all(&encode(&Frame::new(Command::Connect), Version::V1_2))
        .await
        .expect("write");
    assert!(matches!(
        plain.event_within(WAIT).await,
        Some(Event::Closed)
    ));
}

#[tokio::test]
async fn login_and_passcode_are_checked_as_over_websocket() {
    let mut config = test_config();
    config.auth.anonymous = Anonymous::Never;
    config.auth.failure_delay = Duration::ZERO;
    config.auth.users = vec![UserConfig {
        login: "svc".into(),
        password_hash: stomphub::auth::password::hash("s3cret").expect("hash"),
        read: vec!["/topic/#".into()],
        write: vec!["/topic/#".into()],
        roles: Vec::new(),
    }];
    let (_broker, tcp) = start_with_tcp(config).await;
    let (mut wrong, answer) =
        TcpClient::open_with(tcp, &[("login", "svc"), ("passcode", "nope")]).await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    wrong.expect_closed().await;
    let (mut anonymous, answer) = TcpClient::open_with(tcp, &[]).await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    anonymous.expect_closed().await;
    let (mut right, answer) =
        TcpClient::open_with(tcp, &[("login", "svc"), ("passcode", "s3cret")]).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    right.subscribe("s", "/topic/ok", "auto").await;
}

#[tokio::test]
async fn per_address_limit_counts_tcp_and_websocket_together() {
    let mut config = test_config();
    config.listener.max_connections_per_ip = 1;
    let (broker, tcp) = start_with_tcp(config).await;
    let _browser = Client::connect(&broker.urls()[0]).await;
    let mut refused = TcpClient::open(tcp).await;
    refused.expect_error("max_connections_per_ip is 1").await;
}

#[tokio::test]
async fn shutdown_sends_error_then_closes() {
    let (broker, tcp) = start_with_tcp(test_config()).await;
    let mut client = TcpClient::connect(tcp).await;
    let stopping = tokio::spawn(broker.shutdown());
    client.expect_error("shutting down").await;
    stopping.await.expect("shutdown");
}

#[tokio::test]
async fn an_oversized_frame_gets_error_naming_the_limit_then_close() {
    let mut config = test_config();
    config.limits.max_body_bytes = 1024;
    let (_broker, tcp) = start_with_tcp(config).await;
    let mut client = TcpClient::connect(tcp).await;
    // Refused from the header, before the body is buffered.
    client
        .send_bytes(b"SEND\ndestination:/topic/t\ncontent-length:100000\n\n")
        .await;
    client.expect_error("max_body_bytes").await;
}

#[tokio::test]
async fn connect_must_come_in_time() {
    let mut config = test_config();
    config.listener.connect_timeout = Duration::from_millis(200);
    let (_broker, tcp) = start_with_tcp(config).await;
    let mut client = TcpClient::open(tcp).await;
    client
        .expect_error("no CONNECT frame received in time")
        .await;
}

#[tokio::test]
async fn a_slow_tcp_consumer_is_cut_off_while_a_fast_one_keeps_receiving() {
    let mut config = test_config();
    config.outbound.max_queued_bytes = 64 * 1024;
    config.outbound.max_queued_frames = 256;
    config.limits.max_body_bytes = 16 * 1024;
    let (_broker, tcp) = start_with_tcp(config).await;
    let mut slow = TcpClient::connect(tcp).await;
    slow.subscribe("s", "/topic/feed", "auto").await;
    let mut fast = TcpClient::connect(tcp).await;
    fast.subscribe("f", "/topic/feed", "auto").await;

    const COUNT: usize = 4000;
    let body = "x".repeat(4096);
    // The publisher stays at most 8 messages ahead of the fast reader: 16 MB
    // in all, far more than the slow reader's budget and socket buffers hold.
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0usize);
    let publisher = tokio::spawn(async move {
        let mut publisher = TcpClient::connect(tcp).await;
        for i in 0..COUNT {
            if progress_rx.wait_for(|read| read + 8 >= i).await.is_err() {
                panic!("fast reader stopped");
            }
            publisher.publish("/topic/feed", &body).await;
        }
    });
    for i in 0..COUNT {
        let message = fast.frame().await;
        assert_eq!(message.command, Command::Message, "{message:?}");
        assert_eq!(message.body.len(), 4096);
        progress_tx.send_replace(i + 1);
    }
    publisher.await.expect("publisher");
    // Now `slow` reads what its socket held, then the end; the ERROR is
    // best-effort when its socket buffer is full.
    let mut received = 0;
    loop {
        match slow.event_within(WAIT).await {
            Some(Event::Frame(frame)) if frame.command == Command::Message => received += 1,
            Some(Event::Frame(frame)) => {
                assert_eq!(frame.command, Command::Error, "{frame:?}");
                assert_eq!(frame.get("message"), Some("slow consumer"));
            }
            Some(Event::HeartBeat) => {}
            Some(Event::Closed) => break,
            None => panic!("the slow consumer was never cut off ({received} read)"),
        }
    }
    assert!(received < COUNT, "cut off after {received} messages");
}

#[tokio::test]
async fn the_error_survives_a_client_that_keeps_sending() {
    let (_broker, tcp) = start_with_tcp(test_config()).await;
    let client = TcpClient::connect(tcp).await;
    // A fatal frame followed by 1 MiB the broker will never decode: the
    // ERROR still comes first and whole. (On loopback the ERROR is through
    // before any reset, so this does not tell the linger apart; the linger's
    // own tests in connection/closing.rs do.)
    let mut bytes = b"SEND\ndestination:/topic/t\nbad:\\x\n\nbody\0".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 1 << 20));
    let (mut read_half, mut write_half) = tokio::io::split(client.stream);
    let writer = tokio::spawn(async move {
        // Fails once the broker is gone: that is fine.
        let _ = write_half.write_all(&bytes).await;
        let _ = write_half.shutdown().await;
    });
    let mut received = Vec::new();
    let _ = tokio::time::timeout(WAIT, read_half.read_to_end(&mut received)).await;
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("ERROR\n") && text.contains("message:"),
        "{text:?}"
    );
    writer.await.expect("writer");
}
