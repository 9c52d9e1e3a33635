//! The PROXY protocol on a listener (`proxy_protocol = true`), black-box:
//! hand-written v1 and v2 headers before the WebSocket upgrade (and before
//! STOMP on a TCP listener); the per-address limit applies to the header's
//! address (and so does the anonymous-loopback rule), so two clients behind one balancer address are two addresses
//! and a third from the first one's address is refused; a connection
//! without a valid header is closed while a bystander goes on.

mod common;

use common::{start, test_config, Client, TestBroker, WAIT};
use std::net::SocketAddr;
use stomp_protocol::{encode, Command, Frame, Version};
use stomphub::config::{Anonymous, EndpointConfig, ListenerKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::MaybeTlsStream;

/// A v1 header naming `client` (IPv4) as the source.
fn v1(client: &str) -> Vec<u8> {
    format!("PROXY TCP4 {client} 10.0.0.1 40000 61614\r\n").into_bytes()
}

/// A v2 PROXY header over TCP/IPv4 naming `client`, with a TLV after the
/// addresses (as AWS NLB sends), which the broker must skip.
fn v2(client: [u8; 4]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11]);
    let mut block = client.to_vec();
    block.extend_from_slice(&[10, 0, 0, 1]);
    block.extend_from_slice(&40000u16.to_be_bytes());
    block.extend_from_slice(&61614u16.to_be_bytes());
    block.extend_from_slice(&[0xea, 0x00, 0x03, b'v', b'p', b'c']);
    header.extend_from_slice(&(block.len() as u16).to_be_bytes());
    header.extend_from_slice(&block);
    header
}

/// A broker whose only listener (WebSocket, or TCP) expects the header,
/// with one connection per client address and anonymous access for all.
async fn start_proxied(kind: ListenerKind) -> TestBroker {
    let mut config = test_config();
    config.auth.anonymous = Anonymous::Any;
    config.listener.max_connections_per_ip = 1;
    config.listeners[0] = EndpointConfig {
        kind,
        address: "127.0.0.1:0".parse().expect("address"),
        proxy_protocol: true,
        ..EndpointConfig::default()
    };
    start(config).await
}

/// Opens a TCP connection, writes `header`, then upgrades to WebSocket.
async fn open_behind_proxy(
    url: &str,
    header: &[u8],
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("v12.stomp"),
    );
    let authority = request.uri().authority().map(|a| a.as_str().to_owned());
    let address: SocketAddr = authority.unwrap_or_default().parse().expect("ws://IP:PORT");
    let mut stream = TcpStream::connect(address).await?;
    stream.write_all(header).await?;
    let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
    Ok(Client::from_ws(ws))
}

async fn connected_behind_proxy(url: &str, header: &[u8]) -> Client {
    let mut client = open_behind_proxy(url, header).await.expect("upgrade");
    let answer = client.stomp_connect().await;
    assert_eq!(answer.command, Command::Connected, "{answer:?}");
    client
}

#[tokio::test]
async fn v1_header_address_is_the_peer_for_the_per_address_limit() {
    let broker = start_proxied(ListenerKind::Ws).await;
    let url = broker.url();
    // Both come from 127.0.0.1 but name different clients: both admitted.
    let mut first = connected_behind_proxy(&url, &v1("203.0.113.1")).await;
    let _second = connected_behind_proxy(&url, &v1("203.0.113.2")).await;
    // A second connection of the first client's address is one too many.
    let mut third = open_behind_proxy(&url, &v1("203.0.113.1"))
        .await
        .expect("upgrade");
    third
        .expect_error("too many connections from 203.0.113.1", CloseCode::Policy)
        .await;
    first.publish("/topic/after", "still here").await;
}

#[tokio::test]
async fn anonymous_loopback_rule_sees_the_header_address() {
    let mut config = test_config();
    config.auth.anonymous = Anonymous::Loopback;
    config.listeners[0].proxy_protocol = true;
    let broker = start(config).await;
    let _local = connected_behind_proxy(&broker.url(), &v1("127.0.0.1")).await;
    let mut remote = open_behind_proxy(&broker.url(), &v1("203.0.113.1"))
        .await
        .expect("upgrade");
    let answer = remote.stomp_connect().await;
    assert_eq!(answer.command, Command::Error, "{answer:?}");
    let message = answer.get("message").unwrap_or_default();
    assert!(message.contains("authentication required"), "{message}");
}

#[tokio::test]
async fn v2_header_address_is_the_peer_for_the_per_address_limit() {
    let broker = start_proxied(ListenerKind::Ws).await;
    let url = broker.url();
    let _first = connected_behind_proxy(&url, &v2([198, 51, 100, 1])).await;
    let _second = connected_behind_proxy(&url, &v2([198, 51, 100, 2])).await;
    let mut third = open_behind_proxy(&url, &v2([198, 51, 100, 1]))
        .await
        .expect("upgrade");
    third.expect_error("198.51.100.1", CloseCode::Policy).await;
}

/// Reads from `stream` until it ends; whether it ended within the wait
/// without a single byte (closed by the broker, unanswered).
async fn closed_silently(mut stream: TcpStream) -> bool {
    let mut buffer = [0u8; 512];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buffer)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn missing_or_malformed_header_is_refused_and_a_bystander_goes_on() {
    let broker = start_proxied(ListenerKind::Ws).await;
    let url = broker.url();
    let mut bystander = connected_behind_proxy(&url, &v1("203.0.113.9")).await;
    bystander.subscribe("s", "/topic/calm").await;
    // No header: a plain WebSocket client is closed before the upgrade.
    assert!(
        Client::try_open(&url, &["v12.stomp"]).await.is_err(),
        "upgraded without a PROXY header"
    );
    let address = broker.local_addr();
    for bad in [
        &b"PROXY TCP4 203.0.113.1 10.0.0.1 1\r\nGET /ws HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP9 203.0.113.1 10.0.0.1 1 2\r\nGET /ws HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c123456789012GET /ws HTTP/1.1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(bad).await.expect("write");
        assert!(
            closed_silently(stream).await,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let mut publisher = connected_behind_proxy(&url, &v2([192, 0, 2, 1])).await;
    publisher.publish("/topic/calm", "fine").await;
    let message = bystander.message().await;
    assert_eq!(message.body.as_ref(), b"fine");
}

#[tokio::test]
async fn tcp_listener_reads_the_header_before_stomp() {
    let broker = start_proxied(ListenerKind::Tcp).await;
    let address = broker.local_addr();
    let connect = encode(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("heart-beat", "0,0"),
        Version::V1_2,
    );
    let (mut answers, mut open) = (Vec::new(), Vec::new());
    for header in [v1("203.0.113.5"), v2([203, 0, 113, 5])] {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        let mut bytes = header.clone();
        bytes.extend_from_slice(&connect);
        stream.write_all(&bytes).await.expect("write");
        let mut answer = vec![0u8; 1024];
        let read = tokio::time::timeout(WAIT, stream.read(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        answers.push(String::from_utf8_lossy(&answer[..read]).into_owned());
        // The first stays open, so that the second is over the limit.
        open.push(stream);
    }
    assert!(answers[0].starts_with("CONNECTED\n"), "{}", answers[0]);
    assert!(
        answers[1].starts_with("ERROR\n") && answers[1].contains("203.0.113.5"),
        "{}",
        answers[1]
    );
}
