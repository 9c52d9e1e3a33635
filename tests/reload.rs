//! What a reload (SIGHUP) applies beyond users and permissions, against the
//! real binary: a listener's Origin list, its TLS certificate (read again;
//! new handshakes get the new one) and the per-address connection limits.
//! Each test waits for the broker's "reloaded" log line, so nothing is timed.

mod common;

use common::{BrokerProcess, Client, Event};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stomp_protocol::Command as Stomp;
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stomphub-reload-")
        .tempdir()
        .expect("temp dir")
}

/// Sends SIGHUP and waits for the `n`th "reloaded" line in the log.
fn reload(broker: &BrokerProcess, dir: &std::path::Path, n: usize) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + common::WAIT;
    loop {
        let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
        assert!(!log.contains("reload refused"), "{log}");
        if log.matches("reloaded ").count() >= n {
            return;
        }
        assert!(Instant::now() < deadline, "no reload line: {log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens the WebSocket with an `Origin` header; `Err` with the refusal.
async fn open_with_origin(url: &str, origin: &str) -> Result<(), String> {
    let mut request = url.into_client_request().expect("request");
    let headers = request.headers_mut();
    headers.insert("Origin", HeaderValue::from_str(origin).expect("origin"));
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn origins_config(origins: &str) -> String {
    format!("[[listeners]]\naddress = \"127.0.0.1:0\"\nallowed_origins = [{origins}]\nallow_missing_origin = true\n")
}

#[tokio::test]
async fn reload_applies_a_new_origin_list_to_new_connections() {
    let dir = temp();
    let broker =
        BrokerProcess::start_logging(&origins_config("\"https://a.example\""), dir.path(), "info")
            .expect("starts");
    open_with_origin(&broker.url, "https://a.example")
        .await
        .expect("a is allowed");
    let refused = open_with_origin(&broker.url, "https://b.example").await;
    assert!(refused.is_err(), "b was let in before the reload");
    let mut held = Client::connect(&broker.url).await;

    std::fs::write(
        dir.path().join("broker.toml"),
        origins_config("\"https://b.example\""),
    )
    .expect("write");
    reload(&broker, dir.path(), 1);
    open_with_origin(&broker.url, "https://b.example")
        .await
        .expect("b is allowed after the reload");
    let refused = open_with_origin(&broker.url, "https://a.example").await;
    assert!(refused.is_err(), "a still let in after the reload");
    // The connection opened before the reload is still served.
    held.publish("/topic/still", "here").await;
}

/// A self-signed certificate for localhost written over `dir`'s cert.pem
/// and key.pem.
fn write_certificate(dir: &std::path::Path) -> rcgen::Certificate {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).expect("write");
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).expect("write");
    certified.cert
}

/// Whether a TLS handshake with `localhost:<port>` succeeds trusting
/// `certificate` only.
async fn handshake_trusting(port: u16, certificate: &rcgen::Certificate) -> bool {
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
    tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .is_ok()
}

#[tokio::test]
async fn reload_reads_the_tls_certificate_again() {
    let dir = temp();
    let first = write_certificate(dir.path());
    let config = format!(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let broker = BrokerProcess::start_logging(&config, dir.path(), "info").expect("starts");
    let port: u16 = broker
        .url
        .rsplit(':')
        .next()
        .and_then(|tail| tail.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("port in the url");
    assert!(broker.url.starts_with("wss://"), "{}", broker.url);
    assert!(handshake_trusting(port, &first).await);

    // Same paths, new files: only a reload makes the broker read them.
    let second = write_certificate(dir.path());
    assert!(
        handshake_trusting(port, &first).await,
        "the certificate changed before the reload"
    );
    reload(&broker, dir.path(), 1);
    assert!(
        handshake_trusting(port, &second).await,
        "the new certificate is not served after the reload"
    );
    assert!(
        !handshake_trusting(port, &first).await,
        "the old certificate is still served after the reload"
    );
}

fn limits_config(max_per_ip: usize, per_second: f64, burst: f64) -> String {
    format!(
        "[listener]\nmax_connections_per_ip = {max_per_ip}\n\
         [rate_limits]\nconnections_per_second_per_ip = {per_second}\nconnection_burst_per_ip = {burst}\n"
    )
}

/// Opens a connection and sends CONNECT: true when CONNECTED.
async fn admitted(url: &str, held: &mut Vec<Client>) -> bool {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    // A refused connection gets ERROR and a close, maybe before CONNECT.
    client
        .try_send_bytes(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
        .await;
    let answer = client.event().await;
    held.push(client);
    matches!(answer, Event::Frame(frame) if frame.command == Stomp::Connected)
}

#[tokio::test]
async fn reload_applies_per_address_connection_limits() {
    let dir = temp();
    let broker = BrokerProcess::start_logging(&limits_config(2, 0.0, 1.0), dir.path(), "info")
        .expect("starts");
    let mut held = Vec::new();
    assert!(admitted(&broker.url, &mut held).await);
    assert!(admitted(&broker.url, &mut held).await);
    assert!(
        !admitted(&broker.url, &mut held).await,
        "a third connection from one address past max_connections_per_ip 2"
    );
    held.pop();

    // More open connections, but a rate: a burst of 3, nothing refills
    // within the test.
    std::fs::write(
        dir.path().join("broker.toml"),
        limits_config(100, 0.01, 3.0),
    )
    .expect("write");
    reload(&broker, dir.path(), 1);
    for n in 0..3 {
        assert!(
            admitted(&broker.url, &mut held).await,
            "connection {n} after the reload refused"
        );
    }
    assert!(
        !admitted(&broker.url, &mut held).await,
        "the reloaded rate's burst of 3 was not applied"
    );
    assert_eq!(held.len(), 6);
}
