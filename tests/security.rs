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
        cookie: Some("stomp_token".into()),
        ..common::hs256_jwt(SECRET)
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
            roles: Vec::new(),
        },
        UserConfig {
            login: "bob".into(),
            password_hash: stomphub::auth::password::hash("builder").expect("hash"),
            read: vec!["/topic/public.#".into()],
            write: vec!["/queue/orders".into()],
            roles: Vec::new(),
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
    /// `base64url.bearer.authorization.stomp.<base64url token>` beside v12.stomp.
    Subprotocol,
    /// The `[auth.jwt] cookie`, from an allowed page's Origin.
    Cookie,
}

async fn connect_with_token(url: &str, carrier: Carrier, token: &str) -> Frame {
    let url = match carrier {
        Carrier::Query => format!("{url}?access_token={token}"),
        _ => url.to_owned(),
    };
    let mut request = url.as_str().into_client_request().expect("request");
    let protocols = match carrier {
        Carrier::Subprotocol => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
            format!("v12.stomp, base64url.bearer.authorization.stomp.{encoded}")
        }
        _ => "v12.stomp".to_owned(),
    };
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_str(&protocols).expect("header"),
    );
    match carrier {
        Carrier::Header => {
            request.headers_mut().insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
            );
        }
        Carrier::Cookie => {
            let headers = request.headers_mut();
            headers.insert(
                "Cookie",
                HeaderValue::from_str(&format!("theme=dark; stomp_token={token}")).expect("header"),
            );
            headers.insert("Origin", HeaderValue::from_static("http://localhost:8080"));
        }
        _ => {}
    }
    let (ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("open");
    // The token subprotocol is never the answer: only the STOMP version.
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.as_bytes()),
        Some(&b"v12.stomp"[..]),
        "{carrier:?}"
    );
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
    for carrier in [
        Carrier::Passcode,
        Carrier::Header,
        Carrier::Query,
        Carrier::Subprotocol,
        Carrier::Cookie,
    ] {
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
        algorithm: Some("ES256".into()),
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
    // Whatever RUST_LOG says: the crates that see frame bytes stay capped,
    // also when a directive names their modules or comes after a catch-all.
    for rust_log in [
        "trace",
        "tungstenite::protocol=trace",
        "trace,tungstenite=trace",
        "trace,tokio_tungstenite=trace,tungstenite::protocol::frame=trace",
    ] {
        secrets_stay_out_of_the_log_at(rust_log).await;
    }
}

async fn secrets_stay_out_of_the_log_at(rust_log: &str) {
    let dir = tempfile::tempdir().expect("dir");
    let hash = stomphub::auth::password::hash("p4ssw0rd-in-clear").expect("hash");
    let config = format!(
        "[auth]\nanonymous = \"never\"\n[[auth.users]]\nlogin = \"erin\"\npassword_hash = \"{hash}\"\nread = [\"/topic/#\"]\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\naudience = \"stomphub\"\n"
    );
    let broker = BrokerProcess::start_logging(&config, dir.path(), rust_log).expect("starts");
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
    assert_eq!(
        connect_with_token(&broker.url, Carrier::Subprotocol, &good)
            .await
            .command,
        Command::Connected
    );
    let encoded = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&good)
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let read_log = || std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    let mut log = read_log();
    if rust_log.starts_with("trace") {
        // The log is written by the broker process: wait for it to show
        // the sessions (5 s at most) before looking for secrets in it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !log.contains("connected") {
            assert!(
                std::time::Instant::now() < deadline,
                "the log is at trace level and saw the sessions"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            log = read_log();
        }
    }
    for secret in [
        "p4ssw0rd-in-clear",
        "wrong-guess-secret",
        SECRET,
        good.as_str(),
        &good[good.len() - 20..],
        &encoded[encoded.len() - 20..],
    ] {
        assert!(
            !log.contains(secret),
            "RUST_LOG={rust_log}: a secret reached the log: {secret}"
        );
    }
}

// ---- Security, round 2 (issue 11): authentication ----

/// A config from TOML text (new settings stay out of Rust struct literals)
/// on a free loopback port.
fn from_toml(text: &str) -> stomphub::Config {
    let mut config = stomphub::Config::from_toml(text, "test config").expect("config parses");
    config.listeners[0].address = "127.0.0.1:0".parse().expect("address");
    config
}

/// Signs `claims` with `key` under `header`.
fn sign(header: Header, claims: &serde_json::Value, key: &EncodingKey) -> String {
    encode(&header, claims, key).expect("token")
}

fn claims_for(subject: &str, exp: u64) -> serde_json::Map<String, serde_json::Value> {
    let claims = serde_json::json!({
        "sub": subject, "aud": "stomphub", "iss": "https://issuer.example", "exp": exp,
        "stomp_read": ["/topic/public.#"], "stomp_write": ["/topic/public.#"],
    });
    match claims {
        serde_json::Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    }
}

#[tokio::test]
async fn jwt_aud_and_iss_are_required_when_configured() {
    let config = from_toml(&format!(
        "[auth]\nanonymous = \"never\"\n[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\naudience = \"stomphub\"\nissuer = \"https://issuer.example\"\nleeway_seconds = 0\n"
    ));
    let broker = start(config).await;
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let full = claims_for("carol", now() + 600);
    let good = sign(Header::default(), &full.clone().into(), &key);
    let answer = connect_with_token(&broker.url(), Carrier::Header, &good).await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    for (claim, reason) in [
        ("aud", "missing claim 'aud'"),
        ("iss", "missing claim 'iss'"),
    ] {
        let mut claims = full.clone();
        claims.remove(claim);
        let without = sign(Header::default(), &claims.into(), &key);
        for carrier in [Carrier::Passcode, Carrier::Header] {
            let answer = connect_with_token(&broker.url(), carrier, &without).await;
            assert_eq!(
                answer.get("message"),
                Some(format!("authentication failed: {reason}").as_str()),
                "a token without {claim} ({carrier:?}): {answer:?}"
            );
        }
    }
    let mut claims = full.clone();
    claims.insert("iss".into(), "https://other.example".into());
    let wrong = sign(Header::default(), &claims.into(), &key);
    let answer = connect_with_token(&broker.url(), Carrier::Header, &wrong).await;
    assert_eq!(
        answer.get("message"),
        Some("authentication failed: wrong issuer")
    );
}

/// alice/wonderland (default argon2 parameters) and bob/builder.
fn users_toml() -> String {
    let alice = stomphub::auth::password::hash("wonderland").expect("hash");
    let bob = stomphub::auth::password::hash("builder").expect("hash");
    format!(
        "[[auth.users]]\nlogin = \"alice\"\npassword_hash = \"{alice}\"\nread = [\"/topic/#\"]\n[[auth.users]]\nlogin = \"bob\"\npassword_hash = \"{bob}\"\nread = [\"/topic/#\"]\n"
    )
}

/// CONNECT with login and passcode from the loopback address `source`;
/// the answer and how long it took from sending CONNECT.
async fn login_from(
    source: std::net::Ipv4Addr,
    url: &str,
    login: &str,
    passcode: &str,
) -> (Client, Frame, Duration) {
    let mut client = Client::open_from(source, url)
        .await
        .expect("WebSocket opens");
    let started = std::time::Instant::now();
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", login)
                .header("passcode", passcode),
        )
        .await;
    let answer = client.frame().await;
    (client, answer, started.elapsed())
}

#[tokio::test]
async fn a_login_flood_from_one_address_leaves_others_fast() {
    let config = from_toml(&format!(
        "[auth]\nanonymous = \"never\"\nfailure_delay = \"250ms\"\n{}",
        users_toml()
    ));
    let broker = start(config).await;
    let url = broker.url();
    // A correct login with no flood: what a password check costs on this
    // machine today.
    let (_before, answer, quiet) = login_from([127, 0, 0, 3].into(), &url, "bob", "builder").await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    // 150 wrong CONNECTs at once from 127.0.0.1; each task reports once its
    // CONNECT is sent, so that the correct login below runs during the flood.
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<()>(200);
    let mut flood = Vec::new();
    for _ in 0..150 {
        let (url, sent_tx) = (url.clone(), sent_tx.clone());
        flood.push(tokio::spawn(async move {
            let mut client = Client::open_from([127, 0, 0, 1].into(), &url)
                .await
                .expect("WebSocket opens");
            client
                .send(
                    Frame::new(Command::Connect)
                        .header("accept-version", "1.2")
                        .header("login", "alice")
                        .header("passcode", "guess"),
                )
                .await;
            let _ = sent_tx.send(()).await;
            client.frame().await
        }));
    }
    drop(sent_tx);
    for _ in 0..150 {
        sent_rx.recv().await.expect("flood CONNECT sent");
    }
    let (_bob, answer, took) = login_from([127, 0, 0, 2].into(), &url, "bob", "builder").await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    eprintln!("correct login from 127.0.0.2 during the flood: {took:?} (without: {quiet:?})");
    // Queued behind the flood's 150 checks it would take seconds (5.6 s
    // before the checks were made fair); a busy machine may make one
    // check slower, so the bound scales with the quiet one.
    let bound = Duration::from_secs(2).max(quiet * 5);
    assert!(
        took < bound,
        "a correct login from another address took {took:?} during the flood (bound {bound:?})"
    );
    // Every flooding attempt is answered (refused), none hangs.
    for attempt in flood {
        let answer = tokio::time::timeout(Duration::from_secs(30), attempt)
            .await
            .expect("flood answered")
            .expect("task");
        assert_eq!(answer.command, Command::Error, "{answer:?}");
    }
}

#[tokio::test]
async fn a_success_clears_only_its_own_back_off() {
    let config = from_toml(&format!(
        "[auth]\nanonymous = \"never\"\nfailure_delay = \"400ms\"\nfailure_delay_max = \"30s\"\n{}",
        users_toml()
    ));
    let broker = start(config).await;
    let url = broker.url();
    let source = std::net::Ipv4Addr::new(127, 0, 0, 3);
    // Guesses at alice's password, one after the other.
    for _ in 0..4 {
        let (_, answer, _) = login_from(source, &url, "alice", "guess").await;
        assert_eq!(answer.command, Command::Error, "{answer:?}");
    }
    // Bob logs in from the same address...
    let (_bob, answer, _) = login_from(source, &url, "bob", "builder").await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    // ...which must not reset the back-off on alice's password (3.2 s after
    // the fourth failure; a reset would answer within a fraction of 400 ms).
    let (_, answer, took) = login_from(source, &url, "alice", "guess").await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    eprintln!("fifth guess at alice after bob's success: {took:?}");
    assert!(
        took >= Duration::from_millis(1500),
        "the fifth guess at alice's password was checked after only {took:?}"
    );
}

/// Opens a WebSocket with `origin` and offers v12.stomp.
async fn open_with_origin(
    url: &str,
    origin: &'static str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request().expect("request");
    request
        .headers_mut()
        .insert("Origin", HeaderValue::from_static(origin));
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| Client::from_ws(ws))
}

#[tokio::test]
async fn the_default_config_lets_no_foreign_page_in() {
    let broker = start(test_config()).await;
    for refused in ["null", "http://evil.example"] {
        match open_with_origin(&broker.url(), refused).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{refused}")
            }
            other => panic!("{refused}: expected 403, got {:?}", other.map(|_| ())),
        }
    }
    let mut local = open_with_origin(&broker.url(), "http://localhost:1234")
        .await
        .expect("a page served from this machine may connect");
    assert_eq!(local.stomp_connect().await.command, Command::Connected);

    // Even where an operator allows every origin, loopback anonymous access
    // is for this machine's pages only: a foreign page gets no anonymous session.
    let mut open = test_config();
    open.listeners[0].allowed_origins = vec!["*".into()];
    let broker = start(open).await;
    let mut foreign = open_with_origin(&broker.url(), "http://evil.example")
        .await
        .expect("upgrade");
    foreign
        .send(Frame::new(Command::Connect).header("accept-version", "1.2"))
        .await;
    foreign
        .expect_error("authentication required", CloseCode::Policy)
        .await;
    let mut local = open_with_origin(&broker.url(), "http://127.0.0.1:8000")
        .await
        .expect("upgrade");
    assert_eq!(local.stomp_connect().await.command, Command::Connected);
}

/// A config with one user whose password hash is `hash`.
fn one_user(login: &str, hash: &str) -> String {
    format!("[auth]\nanonymous = \"never\"\nfailure_delay = \"0ms\"\n[[auth.users]]\nlogin = \"{login}\"\npassword_hash = \"{hash}\"\nread = [\"/topic/#\"]\n")
}

/// An argon2id hash of `password` with memory `m` KiB and `t` passes.
fn argon2id(password: &str, m: u32, t: u32) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(m, t, 1, None).expect("params");
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"sixteen byte slt").expect("salt");
    hasher
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

#[tokio::test]
async fn weak_or_foreign_password_hashes_stop_the_start() {
    let cases = [
        (
            "pbkdf2-user",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$T2sX0Fj3lq1bKtmuO8kN6yVUcHBMWRi8KwqyAyVUA3A"
                .to_owned(),
        ),
        (
            "bcrypt-user",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW".to_owned(),
        ),
        ("plain-user", "hunter2".to_owned()),
        ("weak-argon-user", argon2id("pw", 1024, 1)),
        ("few-passes-user", argon2id("pw", 19456, 1)),
    ];
    for (login, hash) in cases {
        let dir = tempfile::tempdir().expect("dir");
        match BrokerProcess::try_start(&one_user(login, &hash), dir.path()) {
            Ok(_) => panic!("{login}: a broker started with the hash {hash}"),
            Err(output) => assert!(
                output.contains(&format!("'{login}'")),
                "{login}: the error does not name the user: {output}"
            ),
        }
    }
    // The minimum itself is fine.
    let dir = tempfile::tempdir().expect("dir");
    BrokerProcess::start(&one_user("ok", &argon2id("pw", 19456, 2)), dir.path());
}

#[tokio::test]
async fn unknown_logins_take_as_long_as_known_ones() {
    // alice's hash costs several times the default (64 MiB, 3 passes): an
    // unknown login must cost as much, or timing tells which logins exist.
    let broker = start(from_toml(&one_user(
        "alice",
        &argon2id("wonderland", 65536, 3),
    )))
    .await;
    let url = broker.url();
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        for (login, samples) in [("alice", &mut known), ("mallory", &mut unknown)] {
            let (_, answer, took) = login_from([127, 0, 0, 4].into(), &url, login, "guess").await;
            assert_eq!(answer.command, Command::Error, "{answer:?}");
            samples.push(took);
        }
    }
    let (known, unknown) = (
        known.into_iter().min().expect("samples"),
        unknown.into_iter().min().expect("samples"),
    );
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    eprintln!("fastest failed login: unknown {unknown:?}, known {known:?} (ratio {ratio:.2})");
    assert!(
        (0.5..=2.0).contains(&ratio),
        "unknown login {unknown:?} vs known login {known:?} (ratio {ratio:.2})"
    );
}

#[tokio::test]
async fn several_jwt_keys_of_different_algorithms() {
    let dir = tempfile::tempdir().expect("dir");
    let ec = rcgen::KeyPair::generate().expect("key");
    let public = dir.path().join("es256.pub.pem");
    std::fs::write(&public, ec.public_key_pem()).expect("write");
    let config = from_toml(&format!(
        "[auth]\nanonymous = \"never\"\n[auth.jwt]\naudience = \"stomphub\"\nleeway_seconds = 0\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\n[[auth.jwt.keys]]\nalgorithm = \"ES256\"\npublic_key_file = \"{}\"\n",
        public.display()
    ));
    let broker = start(config).await;
    let claims: serde_json::Value = claims_for("dave", now() + 600).into();
    let hs = sign(
        Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let es_key = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).expect("key");
    let es = sign(
        Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &es_key,
    );
    for (name, token) in [("HS256", &hs), ("ES256", &es)] {
        let answer = connect_with_token(&broker.url(), Carrier::Header, token).await;
        assert_eq!(answer.command, Command::Connected, "{name}: {answer:?}");
    }
    let stranger = rcgen::KeyPair::generate().expect("key");
    let forged = sign(
        Header::new(jsonwebtoken::Algorithm::ES256),
        &claims,
        &EncodingKey::from_ec_pem(stranger.serialize_pem().as_bytes()).expect("key"),
    );
    let answer = connect_with_token(&broker.url(), Carrier::Header, &forged).await;
    assert_eq!(
        answer.get("message"),
        Some("authentication failed: invalid signature")
    );
}

#[tokio::test]
async fn a_jwks_with_several_kids_beside_a_static_key() {
    let dir = tempfile::tempdir().expect("dir");
    let pairs: Vec<(&str, rcgen::KeyPair)> = ["2026-a", "2026-b"]
        .into_iter()
        .map(|kid| (kid, rcgen::KeyPair::generate().expect("key")))
        .collect();
    let encoding = |pair: &rcgen::KeyPair| {
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("key")
    };
    let jwks: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(kid, pair)| {
            let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
                &encoding(pair),
                jsonwebtoken::Algorithm::ES256,
            )
            .expect("jwk");
            jwk.common.key_id = Some((*kid).to_owned());
            serde_json::to_value(jwk).expect("json")
        })
        .collect();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, serde_json::json!({ "keys": jwks }).to_string()).expect("write");
    let config = from_toml(&format!(
        "[auth]\nanonymous = \"never\"\n[auth.jwt]\naudience = \"stomphub\"\n[[auth.jwt.keys]]\nalgorithm = \"ES256\"\njwks_file = \"{}\"\n[[auth.jwt.keys]]\nalgorithm = \"HS256\"\nsecret = \"{SECRET}\"\nkid = \"shared-1\"\n",
        jwks_file.display()
    ));
    let broker = start(config).await;
    let claims: serde_json::Value = claims_for("erin", now() + 600).into();
    let with_kid = |kid: &str| {
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(kid.to_owned());
        header
    };
    for (kid, pair) in &pairs {
        let token = sign(with_kid(kid), &claims, &encoding(pair));
        let answer = connect_with_token(&broker.url(), Carrier::Header, &token).await;
        assert_eq!(answer.command, Command::Connected, "kid {kid}: {answer:?}");
    }
    let shared = Header {
        kid: Some("shared-1".into()),
        ..Header::default()
    };
    let token = sign(
        shared,
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    let answer = connect_with_token(&broker.url(), Carrier::Header, &token).await;
    assert_eq!(answer.command, Command::Connected, "static key: {answer:?}");
    let unknown = sign(with_kid("2025-old"), &claims, &encoding(&pairs[0].1));
    let answer = connect_with_token(&broker.url(), Carrier::Header, &unknown).await;
    assert_eq!(
        answer.get("message"),
        Some("authentication failed: unknown key id")
    );
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let broker = start(secured()).await;
    let url = format!(
        "{}?access_token={}",
        broker.url(),
        token(now() + 2, "stomphub", SECRET)
    );
    let mut client = Client::open(&url, &["v12.stomp"]).await;
    let connected = client.stomp_connect().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    let since = std::time::Instant::now();
    client
        .expect_error("token expired", CloseCode::Policy)
        .await;
    let took = since.elapsed();
    eprintln!("token expiry ended the session {took:?} after CONNECTED");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(4),
        "the session ended {took:?} after CONNECTED, its token expired 1-2 s after it"
    );
}

/// Opens with `headers` (and v12.stomp) and sends CONNECT 1.2 without
/// credentials; returns the answer.
async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Frame {
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    for (name, value) in headers {
        let name = tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
            .expect("name");
        request
            .headers_mut()
            .insert(name, HeaderValue::from_str(value).expect("header"));
    }
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("open");
    let mut client = Client::from_ws(ws);
    client
        .send(Frame::new(Command::Connect).header("accept-version", "1.2"))
        .await;
    client.frame().await
}

#[tokio::test]
async fn token_cookie_is_honoured_only_where_the_origin_check_tells_sites_apart() {
    let good = token(now() + 600, "stomphub", SECRET);
    let cookie = format!("stomp_token={good}");
    // The default allow-list (this machine's pages) or no Origin at all
    // (not a browser): the cookie counts.
    let broker = start(secured()).await;
    for origin in [Some("http://localhost:3000"), None] {
        let mut headers = vec![("Cookie", cookie.as_str())];
        headers.extend(origin.map(|o| ("Origin", o)));
        let answer = connect_with_headers(&broker.url(), &headers).await;
        assert_eq!(answer.command, Command::Connected, "{origin:?}: {answer:?}");
    }
    // An unconfigured cookie name is just a cookie.
    let answer =
        connect_with_headers(&broker.url(), &[("Cookie", &format!("session={good}"))]).await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    // `*` lets every site's pages open a WebSocket carrying our cookie
    // (cross-site WebSocket hijacking): the cookie is ignored there.
    let mut config = secured();
    config.listeners[0].allowed_origins = vec!["*".into()];
    let broker = start(config).await;
    let answer = connect_with_headers(
        &broker.url(),
        &[("Cookie", &cookie), ("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    assert!(answer
        .get("message")
        .unwrap_or_default()
        .contains("authentication required"));
}
