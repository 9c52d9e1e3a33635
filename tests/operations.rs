//! Operations against the real binary: the effective config printed,
//! `check-config`, one-line startup errors, plain and JSON logs, SIGHUP,
//! and the admin listener (health, metrics, API).

mod common;

use common::BrokerProcess;
use std::process::Command;
use std::time::Duration;

fn stomphub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stomphub"))
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("stomphub-ops-")
        .tempdir()
        .expect("temp dir")
}

#[test]
fn print_config_shows_the_file_and_the_flags() {
    let dir = temp();
    let path = dir.path().join("broker.toml");
    std::fs::write(
        &path,
        "[queues]\nprefetch = 7\n[shutdown]\ngrace = \"1500ms\"\n",
    )
    .expect("write");
    let output = stomphub()
        .arg("--config")
        .arg(&path)
        .args([
            "--listen",
            "127.0.0.1:7001",
            "--admin-listen",
            "127.0.0.1:7002",
            "--print-config",
        ])
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    assert!(text.contains("prefetch = 7\n"), "{text}");
    assert!(text.contains("grace = \"1500ms\"\n"), "{text}");
    assert!(text.contains("address = \"127.0.0.1:7001\""), "{text}");
    assert!(text.contains("address = \"127.0.0.1:7002\""), "{text}");
    // Keys the file left out are printed with their defaults.
    assert!(text.contains("max_body_bytes = 1048576\n"), "{text}");
    // And what it prints is itself a valid configuration.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &text).expect("write");
    let check = stomphub()
        .arg("check-config")
        .arg(&printed)
        .output()
        .expect("runs");
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn check_config_accepts_a_good_file_and_names_what_is_wrong_in_a_bad_one() {
    let dir = temp();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[queues]\nprefetch = 5\n").expect("write");
    let output = stomphub()
        .arg("check-config")
        .arg(&good)
        .output()
        .expect("runs");
    assert!(output.status.success(), "{output:?}");

    let cases = [
        ("[auth]\nanonymos = \"any\"\n", "anonymos"),
        ("[queues]\nprefetch = 0\n", "queues.prefetch"),
        ("[[auth.users]]\nlogin = \"a\"\npassword_hash = \"x\"\n", "auth.users 'a'"),
        (
            "[[listeners]]\naddress = \"127.0.0.1:1\"\n[listeners.tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.key\"\n",
            "nonexistent",
        ),
    ];
    for (text, named) in cases {
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, text).expect("write");
        let output = stomphub()
            .arg("check-config")
            .arg(&bad)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(1), "{text}: {output:?}");
        let stderr = String::from_utf8(output.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.starts_with("stomphub: "), "{stderr}");
        assert!(stderr.contains(named), "{text}: {stderr}");
        assert!(
            !stderr.contains("Error {") && !stderr.contains("Os {"),
            "{stderr}"
        );
    }
}

#[test]
fn a_startup_error_is_one_readable_line() {
    let dir = temp();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = blocker.local_addr().expect("addr");
    let output = stomphub()
        .args([
            "--listen",
            &taken.to_string(),
            "--admin-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("stomphub: listeners: "), "{stderr}");
    assert!(last.contains(&taken.to_string()), "{stderr}");
    assert!(!stderr.contains("Os {"), "{stderr}");
}

#[test]
fn logs_have_no_colours_off_a_terminal_and_can_be_json() {
    let dir = temp();
    let broker = BrokerProcess::start_logging("", dir.path(), "info").expect("starts");
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    assert!(log.contains("listening"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a log file: {log:?}"
    );

    let dir = temp();
    let broker = BrokerProcess::start_logging("[log]\nformat = \"json\"\n", dir.path(), "info")
        .expect("starts");
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    let mut lines = 0;
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(value.get("level").is_some(), "{line}");
        lines += 1;
    }
    assert!(lines > 0 && log.contains("listening"), "{log}");
}

#[test]
fn sighup_does_not_stop_the_broker() {
    let dir = temp();
    let mut broker = BrokerProcess::start_logging("", dir.path(), "info").expect("starts");
    hangup(broker.pid());
    // The broker logs that it handled the signal; only then is "alive" news.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let log_path = dir.path().join("broker.log");
    while !std::fs::read_to_string(&log_path)
        .unwrap_or_default()
        .contains("SIGHUP")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no SIGHUP line in the log"
        );
        assert!(broker.alive(), "SIGHUP stopped the broker");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(broker.alive(), "SIGHUP stopped the broker");
}

/// One HTTP/1.1 request on a fresh connection; (status, body).
async fn http(base: &str, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    if let Some(value) = authorization {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    let response = String::from_utf8(response).expect("utf-8");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn basic(login: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"))
    )
}

#[tokio::test]
async fn health_and_readiness_answer_without_credentials() {
    let dir = temp();
    let mut broker = BrokerProcess::start("[admin]\nanonymous = \"never\"\n", dir.path());
    let admin = broker.admin_url();
    assert_eq!(
        http(&admin, "GET", "/healthz", None).await,
        (200, "ok\n".into())
    );
    assert_eq!(
        http(&admin, "GET", "/readyz", None).await,
        (200, "ready\n".into())
    );
    // Everything else needs credentials once loopback is not trusted.
    for path in ["/metrics", "/api/overview", "/"] {
        assert_eq!(http(&admin, "GET", path, None).await.0, 401, "{path}");
    }
    assert_eq!(http(&admin, "GET", "/nowhere", None).await.0, 401);
}

#[tokio::test]
async fn admin_access_takes_the_admin_role_or_claim() {
    let dir = temp();
    let admin_hash = stomphub::auth::password::hash("root-pw").expect("hash");
    let user_hash = stomphub::auth::password::hash("user-pw").expect("hash");
    let secret = "an-admin-test-secret-of-enough-length";
    let config = format!(
        "[admin]\nanonymous = \"never\"\n\
         [auth]\nfailure_delay = \"1ms\"\nfailure_delay_max = \"1ms\"\n\
         [[auth.users]]\nlogin = \"root\"\npassword_hash = \"{admin_hash}\"\nroles = [\"admin\"]\n\
         [[auth.users]]\nlogin = \"plain\"\npassword_hash = \"{user_hash}\"\n\
         [auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"{secret}\"\n"
    );
    let mut broker = BrokerProcess::start(&config, dir.path());
    let admin = broker.admin_url();
    let root = basic("root", "root-pw");
    assert_eq!(
        http(&admin, "GET", "/api/overview", Some(&root)).await.0,
        200
    );
    assert_eq!(
        http(
            &admin,
            "GET",
            "/api/overview",
            Some(&basic("root", "wrong"))
        )
        .await
        .0,
        401
    );
    assert_eq!(
        http(
            &admin,
            "GET",
            "/api/overview",
            Some(&basic("plain", "user-pw"))
        )
        .await
        .0,
        403
    );
    let token = |admin_claim: bool| {
        let claims = serde_json::json!({
            "sub": "ops", "exp": 4_000_000_000u64, "stomp_admin": admin_claim
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("token")
    };
    let bearer = format!("Bearer {}", token(true));
    assert_eq!(http(&admin, "GET", "/metrics", Some(&bearer)).await.0, 200);
    let not_admin = format!("Bearer {}", token(false));
    assert_eq!(
        http(&admin, "GET", "/metrics", Some(&not_admin)).await.0,
        403
    );
    // The failures are counted by method.
    let (_, metrics) = http(&admin, "GET", "/metrics", Some(&root)).await;
    assert!(
        metrics.contains("stomphub_auth_failures_total{method=\"password\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_api_lists_connections_and_queues_and_acts_on_them() {
    use common::Client;
    use stomp_protocol::{Command, Frame};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let dir = temp();
    let mut broker = BrokerProcess::start("", dir.path());
    let admin = broker.admin_url();

    let mut worker = Client::connect(&broker.url).await;
    worker.subscribe("w", "/queue/jobs").await;
    let mut producer = Client::connect(&broker.url).await;
    for i in 0..3 {
        producer
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", "/queue/backlog")
                    .body(format!("job {i}")),
                &format!("r{i}"),
            )
            .await;
    }

    let (status, body) = http(&admin, "GET", "/api/connections", None).await;
    assert_eq!(status, 200, "{body}");
    let connections = json(&body)["connections"]
        .as_array()
        .cloned()
        .expect("list");
    assert_eq!(connections.len(), 2, "{body}");
    let worker_entry = connections
        .iter()
        .find(|c| c["subscriptions"] == 1)
        .expect("the worker with its subscription");
    assert_eq!(worker_entry["transport"], "ws");
    assert_eq!(worker_entry["version"], "1.2");
    assert_eq!(worker_entry["address"], "127.0.0.1");

    let (_, body) = http(&admin, "GET", "/api/queues", None).await;
    let queues = json(&body);
    let backlog = queues["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "/queue/backlog").cloned())
        .expect("the backlog queue");
    assert_eq!(backlog["depth"], 3, "{queues}");
    let jobs = queues["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|q| q["name"] == "/queue/jobs").cloned())
        .expect("the jobs queue");
    assert_eq!(jobs["consumers"], 1, "{queues}");

    let (_, body) = http(&admin, "GET", "/api/overview", None).await;
    let overview = json(&body);
    assert_eq!(overview["connections"], 2, "{overview}");
    assert_eq!(overview["totals"]["published"], 3, "{overview}");

    // Purge, then delete: the queue empties, then goes.
    let (status, body) = http(
        &admin,
        "POST",
        "/api/queues/purge?name=%2Fqueue%2Fbacklog",
        None,
    )
    .await;
    assert_eq!(
        (status, json(&body)["removed_messages"].clone()),
        (200, 3.into()),
        "{body}"
    );
    let (status, _) = http(&admin, "POST", "/api/queues/delete?name=/queue/jobs", None).await;
    assert_eq!(status, 409, "a queue with a consumer stays");
    let (status, _) = http(
        &admin,
        "POST",
        "/api/queues/delete?name=/queue/backlog",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (_, body) = http(&admin, "GET", "/api/queues", None).await;
    assert!(!body.contains("/queue/backlog"), "{body}");
    assert_eq!(http(&admin, "GET", "/api/queues/purge", None).await.0, 405);

    // Closing a connection: it reads why, and the metrics count it.
    let id = worker_entry["id"].as_u64().expect("id");
    let (status, _) = http(
        &admin,
        "POST",
        &format!("/api/connections/close?id={id}&reason=maintenance"),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let error = worker.expect_error("maintenance", CloseCode::Policy).await;
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .starts_with("closed by an administrator"),
        "{error:?}"
    );
    assert_eq!(
        http(&admin, "POST", "/api/connections/close?id=999999", None)
            .await
            .0,
        404
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = http(&admin, "GET", "/metrics", None).await;
        if metrics.contains("stomphub_connections_closed_total{reason=\"admin\"} 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Opens a WebSocket and sends CONNECT with `login`/`passcode`; the answer.
async fn login(url: &str, login: &str, passcode: &str) -> (common::Client, stomp_protocol::Frame) {
    use stomp_protocol::{Command, Frame};
    let mut client = common::Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "0,0")
                .header("login", login)
                .header("passcode", passcode),
        )
        .await;
    let answer = client.frame().await;
    (client, answer)
}

fn users_config(users: &[(&str, &str, &str)]) -> String {
    let mut text = String::from(
        "[auth]\nanonymous = \"never\"\nfailure_delay = \"1ms\"\nfailure_delay_max = \"1ms\"\n",
    );
    for (name, password, read) in users {
        let hash = stomphub::auth::password::hash(password).expect("hash");
        text.push_str(&format!(
            "[[auth.users]]\nlogin = \"{name}\"\npassword_hash = \"{hash}\"\nread = [\"{read}\"]\nwrite = [\"/topic/#\"]\n"
        ));
    }
    text
}

#[tokio::test]
async fn reload_changes_users_and_permissions_and_keeps_connections() {
    use stomp_protocol::{Command, Frame};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let dir = temp();
    let mut broker = BrokerProcess::start(
        &users_config(&[("alice", "a-pw", "/topic/#"), ("bob", "b-pw", "/topic/#")]),
        dir.path(),
    );
    let admin = broker.admin_url();
    let (mut alice, connected) = login(&broker.url, "alice", "a-pw").await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    alice.subscribe("1", "/topic/a.x").await;
    let (_, refused) = login(&broker.url, "carol", "c-pw").await;
    assert_eq!(refused.command, Command::Error);

    // carol is added, bob's password changes, alice keeps read access to
    // what she subscribes to: her connection stays and still receives.
    let config = dir.path().join("broker.toml");
    std::fs::write(
        &config,
        users_config(&[
            ("alice", "a-pw", "/topic/a.#"),
            ("bob", "b-new", "/topic/#"),
            ("carol", "c-pw", "/topic/#"),
        ]),
    )
    .expect("write");
    let (status, body) = http(&admin, "POST", "/api/reload", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["reloaded"], true, "{body}");
    let (_, carol) = login(&broker.url, "carol", "c-pw").await;
    assert_eq!(carol.command, Command::Connected, "{carol:?}");
    let (_, old_bob) = login(&broker.url, "bob", "b-pw").await;
    assert_eq!(old_bob.command, Command::Error, "{old_bob:?}");
    let (mut bob, new_bob) = login(&broker.url, "bob", "b-new").await;
    assert_eq!(new_bob.command, Command::Connected, "{new_bob:?}");
    bob.send_confirmed(
        Frame::new(Command::Send)
            .header("destination", "/topic/a.x")
            .body("after reload"),
        "p1",
    )
    .await;
    let message = alice.message().await;
    assert_eq!(&message.body[..], b"after reload");

    // An invalid file changes nothing: 422, alice and carol as before.
    std::fs::write(&config, "[auth]\nanonymous = \"sometimes\"\n").expect("write");
    let (status, body) = http(&admin, "POST", "/api/reload", None).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("sometimes"), "{body}");
    let (_, carol) = login(&broker.url, "carol", "c-pw").await;
    assert_eq!(carol.command, Command::Connected, "{carol:?}");
    bob.send_confirmed(
        Frame::new(Command::Send)
            .header("destination", "/topic/a.x")
            .body("after a refused reload"),
        "p2",
    )
    .await;
    assert_eq!(&alice.message().await.body[..], b"after a refused reload");

    // SIGHUP applies a file that takes alice's read access away: her
    // session is told which subscription and closed.
    std::fs::write(
        &config,
        users_config(&[
            ("alice", "a-pw", "/topic/b.#"),
            ("bob", "b-new", "/topic/#"),
        ]),
    )
    .expect("write");
    hangup(broker.pid());
    let error = alice
        .expect_error("revoked by a configuration reload", CloseCode::Policy)
        .await;
    assert!(
        error
            .get("message")
            .unwrap_or_default()
            .contains("/topic/a.x"),
        "{error:?}"
    );
}

/// Sends SIGHUP.
fn hangup(pid: u32) {
    let status = Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn failed_logins_are_logged_without_the_passcode_and_rate_limited() {
    use stomp_protocol::Command;
    let dir = temp();
    let broker = BrokerProcess::start_logging(
        &users_config(&[("alice", "a-pw", "/topic/#")]),
        dir.path(),
        "info",
    )
    .expect("starts");
    let started = std::time::Instant::now();
    for _ in 0..30 {
        let (_, answer) = login(&broker.url, "alice", "not-the-secret-pw").await;
        assert_eq!(answer.command, Command::Error);
    }
    let seconds = started.elapsed().as_secs() as usize;
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("login failed")).collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(
        lines[0].contains("alice") && lines[0].contains("127.0.0.1"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("password"), "{}", lines[0]);
    assert!(
        !log.contains("not-the-secret-pw"),
        "the passcode was logged"
    );
    // At most 10 a second (every second the attempts touched counts).
    assert!(
        lines.len() <= 10 * (seconds + 2),
        "{} lines in {seconds} s",
        lines.len()
    );
}

#[tokio::test]
async fn the_overview_has_server_side_rates() {
    use stomp_protocol::{Command, Frame};
    let dir = temp();
    let mut broker = BrokerProcess::start("", dir.path());
    let admin = broker.admin_url();
    let (_, body) = http(&admin, "GET", "/api/overview", None).await;
    let idle = json(&body);
    assert_eq!(idle["rates"]["window_seconds"], 10, "{body}");
    assert_eq!(idle["rates"]["published_per_second"], 0.0, "{body}");

    let mut subscriber = common::Client::connect(&broker.url).await;
    subscriber.subscribe("1", "/topic/rates").await;
    let mut publisher = common::Client::connect(&broker.url).await;
    for n in 0..40 {
        publisher
            .send(
                Frame::new(Command::Send)
                    .header("destination", "/topic/rates")
                    .body(format!("{n}")),
            )
            .await;
    }
    for _ in 0..40 {
        subscriber.message().await;
    }
    // Two samples of the once-a-second sampler after the traffic.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, body) = http(&admin, "GET", "/api/overview", None).await;
    let rates = &json(&body)["rates"];
    let published = rates["published_per_second"].as_f64().expect("a number");
    let delivered = rates["delivered_per_second"].as_f64().expect("a number");
    // 40 messages over the 2 to 4 s the samples span.
    assert!((4.0..=40.0).contains(&published), "{body}");
    assert!((4.0..=40.0).contains(&delivered), "{body}");
}
