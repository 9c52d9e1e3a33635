//! A real-WebSocket STOMP test client and a broker started on 127.0.0.1:0.
#![allow(dead_code)]

pub mod cluster;
pub mod conformance;
pub mod traffic;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};
use stomphub::{Broker, Config};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const WAIT: Duration = Duration::from_secs(5);

/// Judges the pace of heart-beats received at `beats`: at least `least` of
/// them, and the median gap within `typical`. Timers on a loaded machine
/// fire late now and then, and the test may read late, so the typical gap
/// is judged, not each one.
pub fn assert_beat_pace(
    beats: &[std::time::Instant],
    least: usize,
    typical: std::ops::RangeInclusive<Duration>,
) {
    assert!(beats.len() >= least, "{} heart-beats", beats.len());
    let mut gaps: Vec<Duration> = beats.windows(2).map(|pair| pair[1] - pair[0]).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(
        typical.contains(&median),
        "median gap {median:?} between heart-beats, expected {typical:?} (all: {gaps:?})"
    );
}

/// A SUBSCRIBE frame: `id`, `destination`, then `headers` in order.
pub fn subscribe_frame(id: &str, destination: &str, headers: &[(&str, &str)]) -> Frame {
    let mut frame = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination);
    for (name, value) in headers {
        frame = frame.header(*name, *value);
    }
    frame
}

/// HS256 tokens signed with `secret` for audience `stomphub`, with the
/// default claim names and no cookie.
pub fn hs256_jwt(secret: &str) -> stomphub::config::JwtConfig {
    stomphub::config::JwtConfig {
        algorithm: Some("HS256".into()),
        secret: Some(secret.into()),
        secret_file: None,
        public_key_file: None,
        jwks_file: None,
        audience: Some("stomphub".into()),
        issuer: None,
        read_claim: "stomp_read".into(),
        write_claim: "stomp_write".into(),
        admin_claim: "stomp_admin".into(),
        leeway_seconds: 0,
        keys: Vec::new(),
        cookie: None,
    }
}

/// The embedded default config on a free loopback port. Its data directory
/// is set by `start`, one per broker.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.listeners[0].address = "127.0.0.1:0".parse().expect("address");
    config.admin.address = "127.0.0.1:0".parse().expect("address");
    config
}

/// A broker with its own temporary data directory, removed when dropped;
/// in cluster mode (`conformance`) the first of three nodes, with the
/// others and the balancer in front of them.
pub struct TestBroker {
    broker: Broker,
    _data: tempfile::TempDir,
    cluster: Option<conformance::ClusterTarget>,
}

impl std::ops::Deref for TestBroker {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        &self.broker
    }
}

impl TestBroker {
    /// Where clients connect: the broker's first listener, or in cluster
    /// mode the balancer (each new connection on the next node).
    pub fn url(&self) -> String {
        match &self.cluster {
            Some(cluster) => cluster.url.clone(),
            None => self.broker.url(),
        }
    }

    pub async fn shutdown(self) {
        match self.cluster {
            Some(cluster) => cluster.shutdown(self.broker).await,
            None => self.broker.shutdown().await,
        }
    }
}

/// Starts `config`: one broker, or in cluster mode (unless `config` has a
/// cluster engine already) three nodes on the shared NATS engine behind a
/// balancer.
pub async fn start(config: Config) -> TestBroker {
    let local = config.cluster.engine == stomphub::config::Engine::Local;
    if !(local && conformance::cluster_mode()) {
        let (broker, data) = start_one(config).await;
        return TestBroker {
            broker,
            _data: data,
            cluster: None,
        };
    }
    conformance::refuse_excluded();
    let prefix = conformance::unique_prefix();
    let (broker, data) = start_one(conformance::node_config(config.clone(), &prefix, 0)).await;
    let mut others = Vec::new();
    for node in 1..conformance::nodes() {
        others.push(start_one(conformance::node_config(config.clone(), &prefix, node)).await);
    }
    let cluster = conformance::balanced(&broker, others).await;
    TestBroker {
        broker,
        _data: data,
        cluster: Some(cluster),
    }
}

/// One broker on `config` with a data directory of its own.
async fn start_one(mut config: Config) -> (Broker, tempfile::TempDir) {
    let data = tempfile::Builder::new()
        .prefix("stomphub-test-")
        .tempdir()
        .expect("temp dir");
    config.storage.data_dir = data.path().to_path_buf();
    // Tests run in parallel: never the fixed default admin port.
    config.admin.address.set_port(0);
    let broker = Broker::start(config).await.expect("broker starts");
    (broker, data)
}

pub async fn start_default() -> TestBroker {
    start(test_config()).await
}

/// What the server did next.
#[derive(Debug)]
pub enum Event {
    Frame(Frame),
    /// A WebSocket message that held only heart-beat EOLs.
    HeartBeat,
    Closed(Option<CloseCode>),
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    decoder: Decoder,
    buffer: BytesMut,
    pub version: Version,
    /// The subprotocol the server answered with.
    pub subprotocol: Option<String>,
    /// Whether the last frame came in a binary message.
    pub last_was_binary: bool,
}

impl Client {
    /// Opens the WebSocket, offering `protocols`.
    pub async fn open(url: &str, protocols: &[&str]) -> Client {
        Client::try_open(url, protocols)
            .await
            .expect("WebSocket opens")
    }

    pub async fn try_open(
        url: &str,
        protocols: &[&str],
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let mut request = url.into_client_request()?;
        if !protocols.is_empty() {
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).expect("header"),
            );
        }
        let (ws, response) = tokio_tungstenite::connect_async(request).await?;
        let mut client = Client::from_ws(ws);
        client.subprotocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(client)
    }

    /// Wraps an already opened WebSocket.
    pub fn from_ws(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        Client {
            ws,
            decoder: Decoder::new(Limits {
                max_body_bytes: 8 << 20,
                ..Limits::default()
            }),
            buffer: BytesMut::new(),
            version: Version::V1_2,
            subprotocol: None,
            last_was_binary: false,
        }
    }

    /// Opens a WebSocket from the loopback address `source` (127.0.0.x), so
    /// that tests can be different client IPs.
    pub async fn open_from(
        source: std::net::Ipv4Addr,
        url: &str,
    ) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
        let request = url.into_client_request()?;
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let address: std::net::SocketAddr = host.parse().expect("ws://IP:PORT url");
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind((source, 0).into())?;
        let stream = socket.connect(address).await?;
        let mut request = request;
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static("v12.stomp"),
        );
        let (ws, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        let mut client = Client::from_ws(ws);
        client.subprotocol = Some("v12.stomp".into());
        Ok(client)
    }

    /// Sends CONNECT 1.2 with no heart-beats on an open WebSocket; returns
    /// the first frame of the answer.
    pub async fn stomp_connect(&mut self) -> Frame {
        self.send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "0,0"),
        )
        .await;
        self.frame().await
    }

    /// Opens and CONNECTs (STOMP 1.2, no heart-beats) with `client-id`:
    /// what durable subscriptions and client message ids are named by.
    pub async fn connect_as(url: &str, client_id: &str) -> Client {
        let mut client = Client::open(url, &["v12.stomp"]).await;
        client
            .send(
                Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("heart-beat", "0,0")
                    .header("client-id", client_id),
            )
            .await;
        let connected = client.frame().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    /// Opens, sends CONNECT 1.2 with no heart-beats, expects CONNECTED.
    pub async fn connect(url: &str) -> Client {
        let mut client = Client::open(url, &["v12.stomp", "v11.stomp", "v10.stomp"]).await;
        client
            .send(
                Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("heart-beat", "0,0"),
            )
            .await;
        let connected = client.frame().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        client
    }

    pub async fn send(&mut self, frame: Frame) {
        let bytes = encode(&frame, self.version);
        self.ws.send(Message::Binary(bytes)).await.expect("send");
    }

    /// Sends `frame`, ignoring failure: `false` if the connection is gone.
    pub async fn try_send(&mut self, frame: Frame) -> bool {
        let bytes = encode(&frame, self.version);
        self.ws.send(Message::Binary(bytes)).await.is_ok()
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .expect("send");
    }

    /// Sends bytes, ignoring failure (the server may already have closed).
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> bool {
        self.ws
            .send(Message::Binary(bytes.to_vec().into()))
            .await
            .is_ok()
    }

    /// Subscribes and waits for the RECEIPT (`sub-{id}`): after it, every
    /// later publish reaches the subscription.
    pub async fn subscribe(&mut self, id: &str, destination: &str) {
        self.subscribe_confirmed(id, destination, &format!("sub-{id}"))
            .await;
    }

    /// Subscribes with `receipt` and waits for that RECEIPT.
    pub async fn subscribe_confirmed(&mut self, id: &str, destination: &str, receipt: &str) {
        self.send_confirmed(subscribe_frame(id, destination, &[]), receipt)
            .await;
    }

    /// Sends a SUBSCRIBE (with extra headers) without waiting for anything:
    /// for the ones the broker must refuse.
    pub async fn send_subscribe(&mut self, id: &str, destination: &str, headers: &[(&str, &str)]) {
        self.send(subscribe_frame(id, destination, headers)).await;
    }

    /// Sends `frame` with a receipt and waits for it.
    pub async fn send_confirmed(&mut self, frame: Frame, receipt: &str) {
        self.send(frame.header("receipt", receipt)).await;
        self.expect_receipt(receipt).await;
    }

    /// Subscribes with extra headers (ack mode, prefetch, ...), confirmed.
    pub async fn subscribe_with(&mut self, id: &str, destination: &str, headers: &[(&str, &str)]) {
        self.send_confirmed(
            subscribe_frame(id, destination, headers),
            &format!("sub-{id}"),
        )
        .await;
    }

    /// ACKs (or NACKs) a MESSAGE by its `ack` header (STOMP 1.2).
    pub async fn settle(&mut self, message: &Frame, nack: bool) {
        let command = if nack { Command::Nack } else { Command::Ack };
        let id = message.get("ack").expect("MESSAGE has an ack header");
        self.send(Frame::new(command).header("id", id)).await;
    }

    /// The next MESSAGE, asserting it is one.
    pub async fn message(&mut self) -> Frame {
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        frame
    }

    pub async fn publish(&mut self, destination: &str, body: &str) {
        self.send(
            Frame::new(Command::Send)
                .header("destination", destination)
                .body(body.to_owned()),
        )
        .await;
    }

    pub async fn expect_receipt(&mut self, receipt: &str) {
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Receipt, "{frame:?}");
        assert_eq!(frame.get("receipt-id"), Some(receipt));
    }

    /// The next event within `WAIT`.
    pub async fn event(&mut self) -> Event {
        self.event_within(WAIT)
            .await
            .expect("the server answers in time")
    }

    /// The next event, or `None` if nothing happens within `limit`.
    pub async fn event_within(&mut self, limit: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.buffer)
                .expect("server frames decode")
            {
                return Some(Event::Frame(frame));
            }
            let message = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(message) => message,
            };
            match message {
                None | Some(Err(_)) => return Some(Event::Closed(None)),
                Some(Ok(Message::Close(frame))) => {
                    return Some(Event::Closed(frame.map(|f| f.code)))
                }
                Some(Ok(Message::Text(text))) => {
                    self.last_was_binary = false;
                    if text.bytes().all(|b| b == b'\n' || b == b'\r') && self.buffer.is_empty() {
                        return Some(Event::HeartBeat);
                    }
                    self.buffer.extend_from_slice(text.as_bytes());
                }
                Some(Ok(Message::Binary(bytes))) => {
                    self.last_was_binary = true;
                    self.buffer.extend_from_slice(&bytes);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame, skipping heart-beats; panics on close.
    pub async fn frame(&mut self) -> Frame {
        loop {
            match self.event().await {
                Event::Frame(frame) => return frame,
                Event::HeartBeat => continue,
                Event::Closed(code) => {
                    panic!("connection closed ({code:?}) while a frame was expected")
                }
            }
        }
    }

    /// Expects ERROR whose `message` contains `needle`, then a close with `code`.
    pub async fn expect_error(&mut self, needle: &str, code: CloseCode) -> Frame {
        let error = self.frame().await;
        assert_eq!(error.command, Command::Error, "{error:?}");
        let message = error.get("message").unwrap_or_default();
        assert!(
            message.contains(needle),
            "message {message:?} lacks {needle:?}"
        );
        self.expect_close(code).await;
        error
    }

    pub async fn expect_close(&mut self, code: CloseCode) {
        loop {
            match self.event().await {
                Event::Closed(got) => {
                    assert_eq!(got, Some(code));
                    return;
                }
                Event::HeartBeat => continue,
                Event::Frame(frame) => panic!("expected close {code:?}, got {frame:?}"),
            }
        }
    }

    /// Asserts that no frame arrives within `limit`.
    pub async fn expect_silence(&mut self, limit: Duration) {
        loop {
            match self.event_within(limit).await {
                None => return,
                Some(Event::HeartBeat) => continue,
                Some(other) => panic!("expected nothing, got {other:?}"),
            }
        }
    }
}

/// The real `stomphub` binary on a free port, killed (SIGKILL) when dropped.
/// Its config and data live in `dir`, which outlives it so that a restart
/// finds the same store.
pub struct BrokerProcess {
    child: std::process::Child,
    pub url: String,
    pub address: String,
    /// The rest of its standard output (more listeners, the admin line).
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl BrokerProcess {
    pub fn start(config: &str, dir: &std::path::Path) -> BrokerProcess {
        BrokerProcess::try_start(config, dir).expect("broker starts")
    }

    /// Starts it; `Err` holds what it printed if it refused to start.
    pub fn try_start(config: &str, dir: &std::path::Path) -> Result<BrokerProcess, String> {
        BrokerProcess::start_logging(config, dir, "warn")
    }

    /// Starts it with `RUST_LOG=level`; its log goes to `dir/broker.log`.
    pub fn start_logging(
        config: &str,
        dir: &std::path::Path,
        level: &str,
    ) -> Result<BrokerProcess, String> {
        use std::io::{BufRead, BufReader};
        let path = dir.join("broker.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stomphub"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--config",
            ])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", level)
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("broker.log")).expect("log file"))
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        if line.is_empty() {
            let status = child.wait().expect("wait");
            let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
            return Err(format!("{status}: {log}"));
        }
        let url = line.trim().rsplit(' ').next().expect("url").to_owned();
        let address = url
            .trim_start_matches("ws://")
            .trim_end_matches("/ws")
            .to_owned();
        Ok(BrokerProcess {
            child,
            url,
            address,
            stdout,
        })
    }

    /// The admin listener's base URL (`http://127.0.0.1:PORT`), read from
    /// the line the broker prints after its listeners' URLs.
    pub fn admin_url(&mut self) -> String {
        use std::io::BufRead;
        loop {
            let mut line = String::new();
            let read = self.stdout.read_line(&mut line).expect("read");
            assert!(read > 0, "the broker printed no admin line");
            if let Some(url) = line.trim().strip_prefix("stomphub admin on ") {
                return url.trim_end_matches('/').to_owned();
            }
        }
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (VmRSS, VmHWM) in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .expect("field")
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
