//! Security, black-box: passwords, JWTs through each carrier, permissions
//! (wildcards included), ACK of another connection's message, Origin, TLS,
//! and no secret in the logs.

mod common;

use common::{start, test_config, BrokerProcess, Client};
use jsonwebtoken::{encode, EncodingKey, Header};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stomp_protocol::{Command, Frame};
use stomphub::config::{Anonymous, JwtConfig, UserConfig};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const SECRET: &str = "test-shared-secret-of-some-length";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs()
}

fn token(exp: u64, aud: &str, secret: &str) -> String {
    let claims = serde_json::json!({
        "sub": "carol", "aud": aud, "exp": exp,
        "stomp_read": ["/topic/public.#"], "stomp_write": ["/topic/public.#"],
    });
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token")
}

fn hs256() -> JwtConfig {
    JwtConfig {
        algorithm: "HS256".into(),
        secret: Some(SECRET.into()),
        secret_file: None,
        public_key_file: None,
        jwks_file: None,
        audience: Some("stomphub".into()),
        issuer: None,
        read_claim: "stomp_read".into(),
        write_claim: "stomp_write".into(),
        leeway_seconds: 0,
    }
}

fn secured() -> stomphub::Config {
    let mut config = test_config();
    config.auth.anonymous = Anonymous::Never;
    config.auth.failure_delay = Duration::from_millis(10);
    config.auth.users = vec![
        UserConfig {
            login: "alice".into(),
            password_hash: stomphub::auth::password::hash("wonderland").expect("hash"),
            read: vec!["/topic/#".into(), "/queue/#".into()],
            write: vec!["/topic/#".into(), "/queue/#".into()],
        },
        UserConfig {
            login: "bob".into(),
            password_hash: stomphub::auth::password::hash("builder").expect("hash"),
            read: vec!["/topic/public.#".into()],
            write: vec!["/queue/orders".into()],
        },
    ];
    config.auth.jwt = Some(hs256());
    config
}

async fn connect_with(url: &str, headers: &[(&str, &str)]) -> (Client, Frame) {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    let mut connect = Frame::new(Command::Connect).header("accept-version", "1.2");
    for (name, value) in headers {
        connect = connect.header(*name, *value);
    }
    client.send(connect).await;
    let answer = client.frame().await;
    (client, answer)
}

#[tokio::test]
async fn passwords_good_bad_and_unknown_look_the_same_when_wrong() {
    let broker = start(secured()).await;
    let (_alice, answer) = connect_with(
        &broker.url(),
        &[("login", "alice"), ("passcode", "wonderland")],
    )
    .await;
    assert_eq!(answer.command, Command::Connected);
    let mut texts = Vec::new();
    for credentials in [
        [("login", "alice"), ("passcode", "wrong")],
        [("login", "mallory"), ("passcode", "wonderland")],
    ] {
        let (mut client, answer) = connect_with(&broker.url(), &credentials).await;
        assert_eq!(answer.command, Command::Error);
        texts.push(answer.get("message").unwrap_or_default().to_owned());
        client.expect_close(CloseCode::Policy).await;
    }
    assert_eq!(texts[0], "authentication failed");
    assert_eq!(
        texts[0], texts[1],
        "unknown user and wrong password are indistinguishable"
    );
    let (_, answer) = connect_with(&broker.url(), &[]).await;
    assert!(answer
        .get("message")
        .unwrap_or_default()
        .contains("authentication required"));
}

/// How a token travels.
#[derive(Clone, Copy, Debug)]
enum Carrier {
    Passcode,
    Header,
    Query,
}

async fn connect_with_token(url: &str, carrier: Carrier, token: &str) -> Frame {
    let url = match carrier {
        Carrier::Query => format!("{url}?access_token={token}"),
        _ => url.to_owned(),
    };
    let mut request = url.as_str().into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    if let Carrier::Header = carrier {
        request.headers_mut().insert(
            "Authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("open");
    let mut client = Client::from_ws(ws);
    let mut connect = Frame::new(Command::Connect).header("accept-version", "1.2");
    if let Carrier::Passcode = carrier {
        connect = connect.header("login", "carol").header("passcode", token);
    }
    client.send(connect).await;
    client.frame().await
}

#[tokio::test]
async fn jwts_through_each_carrier_and_their_failures() {
    let broker = start(secured()).await;
    let good = token(now() + 600, "stomphub", SECRET);
    let cases = [
        (token(now() - 600, "stomphub", SECRET), "token expired"),
        (token(now() + 600, "someone-else", SECRET), "wrong audience"),
        (
            token(now() + 600, "stomphub", "another-secret-entirely-different"),
            "invalid signature",
        ),
    ];
    for carrier in [Carrier::Passcode, Carrier::Header, Carrier::Query] {
        let answer = connect_with_token(&broker.url(), carrier, &good).await;
        assert_eq!(
            answer.command,
            Command::Connected,
            "{carrier:?}: {answer:?}"
        );
        for (bad, reason) in &cases {
            let answer = connect_with_token(&broker.url(), carrier, bad).await;
            assert_eq!(answer.command, Command::Error, "{carrier:?}");
            assert_eq!(
                answer.get("message"),
                Some(format!("authentication failed: {reason}").as_str()),
                "{carrier:?}"
            );
        }
    }
}

#[tokio::test]
async fn es256_tokens_with_a_public_key() {
    let key = rcgen::KeyPair::generate().expect("key");
    let dir = tempfile::tempdir().expect("dir");
    let public = dir.path().join("jwt.pub.pem");
    std::fs::write(&public, key.public_key_pem()).expect("write");
    let mut config = secured();
    config.auth.jwt = Some(JwtConfig {
        algorithm: "ES256".into(),
        secret: None,
        public_key_file: Some(public),
        ..hs256()
    });
    let broker = start(config).await;
    let claims = serde_json::json!({"sub": "dave", "aud": "stomphub", "exp": now() + 600, "stomp_read": ["/topic/x"]});
    let signed = encode(
        &Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).expect("key"),
    )
    .expect("token");
    assert_eq!(
        connect_with_token(&broker.url(), Carrier::Header, &signed)
            .await
            .command,
        Command::Connected
    );
    let forged = token(now() + 600, "stomphub", SECRET);
    let answer = connect_with_token(&broker.url(), Carrier::Header, &forged).await;
    assert_eq!(
        answer.get("message"),
        Some("authentication failed: wrong algorithm")
    );
}

#[tokio::test]
async fn permissions_hold_for_wildcards_writes_and_acks() {
    let broker = start(secured()).await;
    let url = broker.url();
    let (mut alice, _) =
        connect_with(&url, &[("login", "alice"), ("passcode", "wonderland")]).await;
    alice.subscribe("all", "/topic/#").await;

    // Bob may read /topic/public.# only: a wildcard spanning more is refused
    // and he receives nothing.
    let (mut bob, _) = connect_with(&url, &[("login", "bob"), ("passcode", "builder")]).await;
    bob.send(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/topic/#")
            .header("receipt", "r"),
    )
    .await;
    let error = bob
        .expect_error("read access to '/topic/#' denied", CloseCode::Policy)
        .await;
    assert_eq!(error.get("receipt-id"), Some("r"));
    let (mut bob, _) = connect_with(&url, &[("login", "bob"), ("passcode", "builder")]).await;
    bob.subscribe("pub", "/topic/public.*").await;
    alice.publish("/topic/private.x", "secret").await;
    alice.publish("/topic/public.x", "hello").await;
    assert_eq!(
        &bob.message().await.body[..],
        b"hello",
        "only the allowed message arrives"
    );

    // (Alice's own topic subscription sees both.)
    alice.message().await;
    alice.message().await;

    // A SEND to a forbidden queue: ERROR, and nothing is stored.
    bob.send(
        Frame::new(Command::Send)
            .header("destination", "/queue/secret")
            .body("x"),
    )
    .await;
    bob.expect_error("write access to '/queue/secret' denied", CloseCode::Policy)
        .await;
    alice.subscribe("q", "/queue/secret").await;
    alice.expect_silence(Duration::from_millis(300)).await;

    // An ACK of another connection's delivery is refused.
    let (mut bob, _) = connect_with(&url, &[("login", "bob"), ("passcode", "builder")]).await;
    alice
        .subscribe_with("w", "/queue/work", &[("ack", "client-individual")])
        .await;
    alice.publish("/queue/work", "job").await;
    let job = alice.message().await;
    bob.send(Frame::new(Command::Ack).header("id", job.get("ack").expect("ack")))
        .await;
    bob.expect_error("ACK of unknown or already settled id", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn origin_allowed_refused_and_absent() {
    let mut config = test_config();
    config.listeners[0].allowed_origins = vec!["https://app.example.com".into()];
    config.listeners[0].allow_missing_origin = false;
    let broker = start(config).await;
    let open = |origin: Option<&'static str>| {
        let url = broker.url();
        async move {
            let mut request = url.as_str().into_client_request().expect("request");
            if let Some(origin) = origin {
                request
                    .headers_mut()
                    .insert("Origin", HeaderValue::from_static(origin));
            }
            tokio_tungstenite::connect_async(request).await.map(|_| ())
        }
    };
    assert!(open(Some("https://app.example.com")).await.is_ok());
    for refused in [Some("https://evil.example.com"), None] {
        match open(refused).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{refused:?}")
            }
            other => panic!("{refused:?}: expected 403, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test]
async fn tls_serves_wss_with_its_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("cert");
    let dir = tempfile::tempdir().expect("dir");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, certified.cert.pem()).expect("write");
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).expect("write");
    let mut config = test_config();
    config.listeners[0].tls = Some(stomphub::config::TlsConfig {
        cert_file,
        key_file,
    });
    let broker = start(config).await;
    assert!(broker.url().starts_with("wss://"));

    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).expect("root");
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(broker.local_addr())
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let request = format!("wss://localhost:{}/ws", broker.local_addr().port());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .expect("upgrade over TLS");
    use futures_util::{SinkExt, StreamExt};
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        "CONNECT\naccept-version:1.2\n\n\0",
    ))
    .await
    .expect("send");
    let answer = ws.next().await.expect("answer").expect("message");
    assert!(answer.to_text().expect("text").starts_with("CONNECTED"));

    // Plain ws:// to a TLS port gets no upgrade.
    assert!(
        Client::try_open(&broker.url().replace("wss://", "ws://"), &[])
            .await
            .is_err()
    );
}

#[tokio::test]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("dir");
    let hash = stomphub::auth::password::hash("p4ssw0rd-in-clear").expect("hash");
    let config = format!(
        "[auth]\nanonymous = \"never\"\n[[auth.users]]\nlogin = \"erin\"\npassword_hash = \"{hash}\"\nread = [\"/topic/#\"]\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\naudience = \"stomphub\"\n"
    );
    let broker = BrokerProcess::start_logging(&config, dir.path(), "trace").expect("starts");
    let (_erin, answer) = connect_with(
        &broker.url,
        &[("login", "erin"), ("passcode", "p4ssw0rd-in-clear")],
    )
    .await;
    assert_eq!(answer.command, Command::Connected);
    let (_, refused) = connect_with(
        &broker.url,
        &[("login", "erin"), ("passcode", "wrong-guess-secret")],
    )
    .await;
    assert_eq!(refused.command, Command::Error);
    let good = token(now() + 600, "stomphub", SECRET);
    assert_eq!(
        connect_with_token(&broker.url, Carrier::Query, &good)
            .await
            .command,
        Command::Connected
    );
    assert_eq!(
        connect_with_token(&broker.url, Carrier::Passcode, &good)
            .await
            .command,
        Command::Connected
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    assert!(
        log.contains("connected"),
        "the log is at trace level and saw the sessions"
    );
    for secret in [
        "p4ssw0rd-in-clear",
        "wrong-guess-secret",
        SECRET,
        good.as_str(),
        &good[good.len() - 20..],
    ] {
        assert!(!log.contains(secret), "a secret reached the log: {secret}");
    }
}
