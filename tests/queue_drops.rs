//! Queue operations seen from the admin listener of the real binary:
//! `stomphub_messages_dropped_total` (messages that expired, that a full
//! `drop-oldest` queue dropped and that a full `reject` queue refused, each
//! under its rule's class), and moving a dead-letter queue's messages back.

mod common;

use common::{BrokerProcess, Client};
use std::io::{Read, Write};
use stomp_protocol::{Command, Frame};

const CONFIG: &str = "\
[[queues.rules]]\npattern = \"/queue/old.#\"\nmax_length = 1\noverflow = \"drop-oldest\"\n\
[[queues.rules]]\npattern = \"/queue/rej.#\"\nmax_length = 1\noverflow = \"reject\"\n\
[[queues.rules]]\npattern = \"/queue/ttl.#\"\n";

/// GET `path` from the admin listener; the answer.
fn get(admin: &str, path: &str) -> String {
    request(admin, "GET", path)
}

/// `method path` to the admin listener; the whole answer (status line,
/// headers, body).
fn request(admin: &str, method: &str, path: &str) -> String {
    let address = admin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("admin");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    answer
}

/// The value of the sample whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

fn epoch_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
}

#[tokio::test]
async fn queue_drops_are_counted_by_reason_and_class() {
    let dir = tempfile::Builder::new()
        .prefix("stomphub-drops-")
        .tempdir()
        .expect("temp dir");
    let mut broker = BrokerProcess::start(CONFIG, dir.path());
    let admin = broker.admin_url();
    let mut client = Client::connect(&broker.url).await;
    // Three into a drop-oldest queue of one: two dropped.
    for n in 0..3 {
        client
            .send_confirmed(
                Frame::new(Command::Send)
                    .header("destination", "/queue/old.a")
                    .body(format!("m{n}")),
                &format!("old{n}"),
            )
            .await;
    }
    // One that expires while it waits.
    let expires = (epoch_ms() + 100).to_string();
    client
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/ttl.a")
                .header("expires", &expires)
                .body("soon gone"),
            "ttl",
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    client.subscribe("ttl", "/queue/ttl.a").await;
    client
        .expect_silence(std::time::Duration::from_millis(200))
        .await;
    // Two into a reject queue of one: the second is refused.
    client
        .send_confirmed(
            Frame::new(Command::Send)
                .header("destination", "/queue/rej.a")
                .body("kept"),
            "rej0",
        )
        .await;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/rej.a")
                .header("receipt", "rej1")
                .body("refused"),
        )
        .await;
    let answer = client.frame().await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");

    let metrics = get(&admin, "/metrics");
    let dropped = |class: &str, reason: &str| {
        sample(
            &metrics,
            &format!("stomphub_messages_dropped_total{{class=\"{class}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(dropped("/queue/old.#", "overflow"), Some(2.0), "{metrics}");
    assert_eq!(dropped("/queue/ttl.#", "expired"), Some(1.0), "{metrics}");
    assert_eq!(dropped("/queue/rej.#", "rejected"), Some(1.0), "{metrics}");
    assert_eq!(dropped("/queue/old.#", "expired"), Some(0.0), "{metrics}");
}

#[tokio::test]
async fn a_dead_letter_queue_moves_back_to_the_original_queue() {
    let dir = tempfile::Builder::new()
        .prefix("stomphub-dlq-")
        .tempdir()
        .expect("temp dir");
    let mut broker = BrokerProcess::start("[queues]\nmax_deliveries = 1\n", dir.path());
    let admin = broker.admin_url();
    let mut client = Client::connect(&broker.url).await;
    client
        .subscribe_with("w", "/queue/work", &[("ack", "client-individual")])
        .await;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/queue/work")
                .body("job"),
        )
        .await;
    let first = client.message().await;
    client.settle(&first, true).await;
    // Dead-lettered after one delivery; nothing comes again.
    client
        .expect_silence(std::time::Duration::from_millis(300))
        .await;

    let moved = request(&admin, "POST", "/api/queues/move-back?name=/queue/work.dlq");
    assert!(moved.starts_with("HTTP/1.1 200"), "{moved}");
    assert!(moved.contains("\"removed_messages\":1"), "{moved}");
    let again = client.message().await;
    assert_eq!(&again.body[..], b"job");
    assert_eq!(again.get("destination"), Some("/queue/work"), "{again:?}");
    assert_eq!(again.get("x-original-destination"), None, "{again:?}");
    let missing = request(&admin, "POST", "/api/queues/move-back?name=/queue/none");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
}
