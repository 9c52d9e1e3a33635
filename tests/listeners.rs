//! Several listeners in one broker: ws:// and wss:// at the same time, one
//! router behind them, each with its own path and Origin rules; and the
//! binary's `--listen`, which replaces the first listener's address.

mod common;

use common::{start, test_config, BrokerProcess, Client};
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use stomphub::config::{EndpointConfig, TlsConfig};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// A self-signed certificate for localhost, written into `dir`.
fn certificate(dir: &std::path::Path) -> (rcgen::CertifiedKey<rcgen::KeyPair>, TlsConfig) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).expect("write");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write");
    (
        certified,
        TlsConfig {
            cert_file,
            key_file,
        },
    )
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// Opens `wss://localhost:<port><path>` trusting `certificate` only.
async fn open_wss(port: u16, path: &str, certificate: &rcgen::Certificate) -> Wss {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let mut request = format!("wss://localhost:{port}{path}")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    let (ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade over TLS");
    ws
}

/// Sends one STOMP frame as a text message.
async fn send(ws: &mut Wss, frame: &str) {
    ws.send(Message::text(frame)).await.expect("send");
}

/// The next frame's text (the broker sends one frame per message here).
async fn next(ws: &mut Wss) -> String {
    loop {
        let message = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("in time")
            .expect("open")
            .expect("message");
        let text = String::from_utf8(message.into_data().to_vec()).expect("utf8");
        // Lone EOLs are heart-beats.
        if !text.trim_matches(['\r', '\n']).is_empty() {
            return text;
        }
    }
}

#[tokio::test]
async fn ws_and_wss_listeners_serve_one_broker() {
    let dir = tempfile::tempdir().expect("dir");
    let (certified, tls) = certificate(dir.path());
    let mut config = test_config();
    config.listeners.push(EndpointConfig {
        kind: stomphub::config::ListenerKind::Ws,
        address: "127.0.0.1:0".parse().expect("address"),
        path: "/secure".into(),
        allowed_origins: vec!["https://app.example.com".into()],
        allow_missing_origin: true,
        tls: Some(tls),
        proxy_protocol: false,
    });
    let broker = start(config).await;
    let urls = broker.urls();
    assert_eq!(urls.len(), 2, "{urls:?}");
    assert!(
        urls[0].starts_with("ws://") && urls[0].ends_with("/ws"),
        "{urls:?}"
    );
    assert!(
        urls[1].starts_with("wss://") && urls[1].ends_with("/secure"),
        "{urls:?}"
    );
    let addresses = broker.local_addrs();
    assert_ne!(addresses[0].port(), addresses[1].port());

    // A subscriber on wss://, a publisher on ws://, and the other way round.
    let mut secure = open_wss(addresses[1].port(), "/secure", &certified.cert).await;
    send(
        &mut secure,
        "CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0",
    )
    .await;
    assert!(next(&mut secure).await.starts_with("CONNECTED"));
    send(
        &mut secure,
        "SUBSCRIBE\nid:s\ndestination:/topic/both\nreceipt:r\n\n\0",
    )
    .await;
    assert!(next(&mut secure).await.starts_with("RECEIPT"));
    let mut plain = Client::connect(&urls[0]).await;
    plain.subscribe("p", "/topic/both").await;
    plain.publish("/topic/both", "from-ws").await;
    let delivered = next(&mut secure).await;
    assert!(
        delivered.starts_with("MESSAGE") && delivered.ends_with("from-ws\0"),
        "{delivered:?}"
    );
    assert_eq!(&plain.message().await.body[..], b"from-ws");
    send(&mut secure, "SEND\ndestination:/topic/both\n\nfrom-wss\0").await;
    assert_eq!(&plain.message().await.body[..], b"from-wss");
    assert!(next(&mut secure).await.ends_with("from-wss\0"));

    // Each listener keeps its own path.
    assert!(
        Client::try_open(&format!("ws://{}/secure", addresses[0]), &[])
            .await
            .is_err(),
        "/secure is the TLS listener's path only"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn the_binary_prints_every_listener_and_listen_replaces_the_first_address() {
    let dir = tempfile::tempdir().expect("dir");
    // The first listener's address is taken by --listen 127.0.0.1:0; the
    // second, also on port 0, is reached by its own printed URL.
    let config = "[[listeners]]\naddress = \"127.0.0.1:1\"\n[[listeners]]\naddress = \"127.0.0.1:0\"\npath = \"/second\"\n";
    let broker = BrokerProcess::start(config, dir.path());
    assert!(broker.url.ends_with("/ws"), "{}", broker.url);
    let mut first = Client::connect(&broker.url).await;
    first.subscribe("s", "/topic/x").await;
    let second_url = broker.url.replace("/ws", "/second");
    assert!(
        Client::try_open(&second_url, &[]).await.is_err(),
        "the second listener has another port"
    );

    // A leftover [listener] address stops the start and says where it went.
    let old = BrokerProcess::try_start("[listener]\naddress = \"127.0.0.1:0\"\n", dir.path())
        .err()
        .expect("refused");
    assert!(old.contains("listener.address has moved"), "{old}");
}
