//! What the real binary logs at `info` about connections: connects (user,
//! address, transport, version), disconnects with their reason, and
//! permission denials (destination, user), the last rate-limited like
//! failed logins. The log is the child's stderr.

mod common;

use common::{BrokerProcess, Client};
use std::time::{Duration, Instant};
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

fn config() -> String {
    let hash = stomphub::auth::password::hash("a-pw").expect("hash");
    format!(
        "[auth]\nanonymous = \"loopback\"\nanonymous_read = []\nanonymous_write = []\n\
         [[auth.users]]\nlogin = \"alice\"\npassword_hash = \"{hash}\"\n\
         read = [\"/topic/a.#\"]\nwrite = [\"/topic/a.#\"]\n"
    )
}

async fn alice(url: &str) -> Client {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "0,0")
                .header("login", "alice")
                .header("passcode", "a-pw"),
        )
        .await;
    let answer = client.frame().await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    client
}

/// The log's lines containing every one of `needles`, once the broker has
/// written at least one (it writes asynchronously).
fn lines_with(dir: &std::path::Path, needles: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + common::WAIT;
    loop {
        let log = std::fs::read_to_string(dir.join("broker.log")).unwrap_or_default();
        let lines: Vec<String> = log
            .lines()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_owned)
            .collect();
        if !lines.is_empty() || Instant::now() > deadline {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn connects_disconnects_and_denials_are_logged_at_info() {
    let dir = tempfile::Builder::new()
        .prefix("stomphub-logging-")
        .tempdir()
        .expect("temp dir");
    let broker = BrokerProcess::start_logging(&config(), dir.path(), "info").expect("starts");

    let mut client = alice(&broker.url).await;
    client.send(Frame::new(Command::Disconnect)).await;
    let connected = lines_with(dir.path(), &["connected", "alice"]);
    let connected: Vec<&String> = connected
        .iter()
        .filter(|l| !l.contains("disconnected"))
        .collect();
    assert!(!connected.is_empty(), "no connect line");
    for needle in ["127.0.0.1", "ws", "1.2"] {
        assert!(connected[0].contains(needle), "{needle}: {}", connected[0]);
    }
    let gone = lines_with(dir.path(), &["disconnected", "alice", "disconnect"]);
    assert!(!gone.is_empty(), "no disconnect line");
    assert!(gone[0].contains("127.0.0.1"), "{}", gone[0]);

    // A denied SUBSCRIBE: who, where, and the connection's end with its
    // reason.
    let mut client = alice(&broker.url).await;
    client.send_subscribe("1", "/topic/b.secret", &[]).await;
    client
        .expect_error("read access to '/topic/b.secret' denied", CloseCode::Policy)
        .await;
    let denied = lines_with(dir.path(), &["permission denied", "/topic/b.secret"]);
    assert!(!denied.is_empty(), "no denial line");
    assert!(denied[0].contains("alice"), "{}", denied[0]);
    assert!(denied[0].contains("127.0.0.1"), "{}", denied[0]);
    let ended = lines_with(dir.path(), &["disconnected", "policy"]);
    assert!(!ended.is_empty(), "no disconnect line with the reason");

    // A flood of denials (anonymous: no password check slows it) is
    // logged at most 10 a second.
    let started = Instant::now();
    for n in 0..200 {
        let mut client = Client::connect(&broker.url).await;
        client
            .send(
                Frame::new(Command::Send)
                    .header("destination", format!("/topic/c.{n}"))
                    .body("x"),
            )
            .await;
        client.expect_error("write access", CloseCode::Policy).await;
    }
    let seconds = started.elapsed().as_secs() as usize;
    drop(broker);
    let log = std::fs::read_to_string(dir.path().join("broker.log")).expect("log");
    let denials = log
        .lines()
        .filter(|l| l.contains("permission denied") && l.contains("/topic/c."))
        .count();
    assert!(denials > 0, "{log}");
    assert!(
        denials <= 10 * (seconds + 2),
        "{denials} denial lines in {seconds} s"
    );
}
