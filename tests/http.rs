//! HTTP on the WebSocket listener's port, black-box with raw HTTP/1.1 over
//! TCP: `GET /` and `/healthz` answer with the version and the WebSocket
//! path, HEAD and OPTIONS behave, unknown paths get 404, a GET of the
//! WebSocket path without the upgrade gets 426, requests on a kept-alive
//! connection, the per-address limit, and WebSocket STOMP beside it all.

mod common;

use common::{start, start_default, test_config, Client};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP answer: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (with `Connection: close`) and reads the whole answer.
async fn request(address: SocketAddr, request: &str) -> Answer {
    let mut stream = TcpStream::connect(address).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("answer in time")
        .expect("read");
    parse(&bytes).0
}

/// Parses one answer with a content-length (or none: to the end); returns
/// it and what follows it.
fn parse(bytes: &[u8]) -> (Answer, &[u8]) {
    let end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole head")
        + 4;
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    // A HEAD answer names a length but has no body.
    let body_end = length.map_or(bytes.len(), |l| (end + l).min(bytes.len()));
    (
        Answer {
            status,
            headers,
            body: bytes[end..body_end].to_vec(),
        },
        &bytes[body_end..],
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn plain_requests_get_plain_answers() {
    let broker = start_default().await;
    let address = broker.local_addr();
    let version = env!("CARGO_PKG_VERSION");
    for path in ["/", "/healthz"] {
        let answer = request(address, &get(path)).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        assert_eq!(
            answer.text(),
            format!("stomphub {version}: WebSocket STOMP at /ws\n")
        );
        assert!(answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")));
    }
    let head = request(
        address,
        "HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "{head:?}");
    let unknown = request(address, &get("/nothing/here")).await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.text().contains("/ws"), "{}", unknown.text());
    let not_upgraded = request(address, &get("/ws")).await;
    assert_eq!(not_upgraded.status, 426);
    assert_eq!(not_upgraded.header("upgrade"), Some("websocket"));
    let options = request(
        address,
        "OPTIONS / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(options.status, 204);
    assert!(options.header("allow").is_some_and(|a| a.contains("GET")));
    let posted = request(
        address,
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    )
    .await;
    assert_eq!(posted.status, 405);
    // Not HTTP at all: hyper answers 400.
    let garbage = request(address, "HELLO THERE\r\n\r\n").await;
    assert_eq!(garbage.status, 400);
}

#[tokio::test]
async fn a_kept_alive_connection_answers_each_request_and_websocket_goes_on_beside() {
    let broker = start_default().await;
    let mut subscriber = Client::connect(&broker.url()).await;
    subscriber
        .subscribe_confirmed("s", "/topic/http", "subscribed")
        .await;
    let mut stream = TcpStream::connect(broker.local_addr())
        .await
        .expect("connect");
    let two = "GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(two.as_bytes()).await.expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut bytes))
        .await
        .expect("in time")
        .expect("read");
    let (first, rest) = parse(&bytes);
    let (second, _) = parse(rest);
    assert_eq!((first.status, second.status), (200, 404));
    let mut publisher = Client::connect(&broker.url()).await;
    publisher.publish("/topic/http", "still WebSocket").await;
    assert_eq!(subscriber.message().await.body.as_ref(), b"still WebSocket");
}

#[tokio::test]
async fn http_connections_count_against_the_per_address_limit() {
    let mut config = test_config();
    config.listener.max_connections_per_ip = 1;
    let broker = start(config).await;
    let address = broker.local_addr();
    assert_eq!(request(address, &get("/")).await.status, 200);
    let _held = Client::connect(&broker.url()).await;
    let refused = request(address, &get("/")).await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert!(
        refused.text().contains("max_connections_per_ip is 1"),
        "{}",
        refused.text()
    );
}
