//! Handshake, negotiation, receipts and every ERROR case, over real WebSockets.

mod common;

use common::{start, start_default, test_config, Client};
use std::time::Duration;
use stomp_protocol::{Command, Frame};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn each_subprotocol_is_echoed_and_the_highest_wins() {
    let broker = start_default().await;
    for (offered, answer) in [
        (&["v10.stomp"][..], "v10.stomp"),
        (&["v11.stomp"][..], "v11.stomp"),
        (&["v12.stomp"][..], "v12.stomp"),
        (&["v10.stomp", "v12.stomp", "v11.stomp"][..], "v12.stomp"),
        (&["mqtt", "v11.stomp"][..], "v11.stomp"),
    ] {
        let client = Client::open(&broker.url(), offered).await;
        assert_eq!(
            client.subprotocol.as_deref(),
            Some(answer),
            "offered {offered:?}"
        );
    }
}

#[tokio::test]
async fn no_subprotocol_is_accepted_and_version_comes_from_connect() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &[]).await;
    assert_eq!(client.subprotocol, None);
    client
        .send(Frame::new(Command::Connect).header("accept-version", "1.1"))
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.get("version"), Some("1.1"));
}

#[tokio::test]
async fn only_foreign_subprotocols_get_http_400_and_wrong_path_404() {
    let broker = start_default().await;
    let refused = Client::try_open(&broker.url(), &["mqtt"]).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("no supported STOMP subprotocol"), "{body}");
        }
        other => panic!("expected HTTP 400, got {:?}", other.map(|_| ())),
    }
    let url = broker.url().replace("/ws", "/elsewhere");
    match Client::try_open(&url, &["v12.stomp"]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 404)
        }
        other => panic!("expected HTTP 404, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn connected_carries_version_session_server_and_heart_beat() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Stomp)
                .header("accept-version", "1.0,1.1,1.2")
                .header("host", "anything"),
        )
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected);
    assert_eq!(connected.get("version"), Some("1.2"));
    assert!(connected.get("session").is_some());
    assert!(connected
        .get("server")
        .is_some_and(|s| s.starts_with("stomphub/")));
    // No heart-beat header is 0,0: none either way, and CONNECTED says so.
    assert_eq!(connected.get("heart-beat"), Some("0,0"));
}

#[tokio::test]
async fn missing_accept_version_means_1_0() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &[]).await;
    client.send(Frame::new(Command::Connect)).await;
    assert_eq!(client.frame().await.get("version"), Some("1.0"));
}

#[tokio::test]
async fn no_common_version_gets_error_with_version_header() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &[]).await;
    client
        .send(Frame::new(Command::Connect).header("accept-version", "2.0,3.1"))
        .await;
    let error = client
        .expect_error("unsupported protocol version", CloseCode::Protocol)
        .await;
    assert_eq!(error.get("version"), Some("1.0,1.1,1.2"));
    // The handshake offered only 1.1: CONNECT may not pick 1.2.
    let mut client = Client::open(&broker.url(), &["v11.stomp"]).await;
    client
        .send(Frame::new(Command::Connect).header("accept-version", "1.2"))
        .await;
    let error = client
        .expect_error("unsupported protocol version", CloseCode::Protocol)
        .await;
    assert_eq!(error.get("version"), Some("1.1"));
}

#[tokio::test]
async fn receipts_for_every_frame_kind_and_disconnect_closes_normally() {
    let broker = start_default().await;
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe("0", "/topic/a").await;
    client
        .send(
            Frame::new(Command::Send)
                .header("destination", "/topic/b")
                .header("receipt", "r-send"),
        )
        .await;
    client.expect_receipt("r-send").await;
    client
        .send(
            Frame::new(Command::Begin)
                .header("transaction", "t")
                .header("receipt", "r-begin"),
        )
        .await;
    client.expect_receipt("r-begin").await;
    client
        .send(
            Frame::new(Command::Abort)
                .header("transaction", "t")
                .header("receipt", "r-abort"),
        )
        .await;
    client.expect_receipt("r-abort").await;
    client
        .send(
            Frame::new(Command::Unsubscribe)
                .header("id", "0")
                .header("receipt", "r-unsub"),
        )
        .await;
    client.expect_receipt("r-unsub").await;
    client
        .send(Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await;
    client.expect_receipt("bye").await;
    client.expect_close(CloseCode::Normal).await;
}

/// What a bad-input case sends after CONNECT.
enum Input {
    /// Raw bytes in one binary message.
    Raw(&'static [u8]),
    /// A frame, sent with `receipt:failing` so the ERROR must echo it.
    Frame(Frame),
}

struct ErrorCase {
    input: Input,
    /// Part of the ERROR's `message`.
    needle: &'static str,
    close: CloseCode,
}

fn case(input: Input, needle: &'static str, close: CloseCode) -> ErrorCase {
    ErrorCase {
        input,
        needle,
        close,
    }
}

/// Each bad input after CONNECT: ERROR naming the problem, then a close with
/// the fitting code.
#[tokio::test]
async fn every_error_case_answers_error_then_closes() {
    use Input::Raw;
    let send = |destination: &str| Frame::new(Command::Send).header("destination", destination);
    let subscribe = || Frame::new(Command::Subscribe);
    let protocol = CloseCode::Protocol;
    let cases = vec![
        case(Raw(b"FROB\n\n\0"), "unknown command 'FROB'", protocol),
        case(
            Input::Frame(Frame::new(Command::Send)),
            "requires a 'destination'",
            protocol,
        ),
        case(
            Input::Frame(subscribe().header("destination", "/topic/a")),
            "requires a 'id'",
            protocol,
        ),
        case(
            Input::Frame(subscribe().header("id", "1")),
            "requires a 'destination'",
            protocol,
        ),
        case(
            Input::Frame(
                subscribe()
                    .header("id", "1")
                    .header("destination", "/topic/a")
                    .header("ack", "sometimes"),
            ),
            "not one of auto",
            protocol,
        ),
        case(
            Input::Frame(Frame::new(Command::Unsubscribe).header("id", "nope")),
            "no subscription with id 'nope'",
            protocol,
        ),
        case(
            Raw(b"SUBSCRIBE\nid:1\ndestination:/topic/a\n\nbody\0"),
            "must not have a body",
            protocol,
        ),
        case(
            Raw(b"SEND\ndestination:/topic/a\nx:a\\tb\n\n\0"),
            "undefined escape",
            protocol,
        ),
        case(
            Raw(b"SEND\ndestination:/topic/a\ncontent-length:x\n\n\0"),
            "content-length",
            protocol,
        ),
        case(
            Raw(b"SEND\ndestination:/topic/a\ncontent-length:1000000000\n\n"),
            "max_body_bytes",
            CloseCode::Size,
        ),
        case(
            Input::Frame(Frame::new(Command::Connect).header("accept-version", "1.2")),
            "already connected",
            protocol,
        ),
        case(
            Input::Frame(Frame::new(Command::Message)),
            "server frame",
            protocol,
        ),
        case(Input::Frame(send("/topic/a.*")), "wildcards", protocol),
        case(
            Input::Frame(send("/nowhere/x")),
            "unknown destination",
            protocol,
        ),
        case(
            Input::Frame(Frame::new(Command::Commit).header("transaction", "tx1")),
            "unknown transaction 'tx1'",
            protocol,
        ),
        case(
            Input::Frame(send("/topic/a").header("transaction", "nope")),
            "unknown transaction 'nope'",
            protocol,
        ),
        case(
            Input::Frame(Frame::new(Command::Ack).header("id", "never-delivered")),
            "ACK of unknown or already settled id",
            protocol,
        ),
        case(
            Input::Frame(
                subscribe()
                    .header("id", "1")
                    .header("destination", "/queue/q")
                    .header("prefetch-count", "0"),
            ),
            "prefetch-count '0'",
            protocol,
        ),
    ];
    let broker = start_default().await;
    for ErrorCase {
        input,
        needle,
        close,
    } in cases
    {
        let mut client = Client::connect(&broker.url()).await;
        let with_receipt = matches!(input, Input::Frame(_));
        match input {
            Raw(bytes) => client.send_bytes(bytes).await,
            Input::Frame(frame) => client.send(frame.header("receipt", "failing")).await,
        }
        let error = client.expect_error(needle, close).await;
        if with_receipt {
            assert_eq!(
                error.get("receipt-id"),
                Some("failing"),
                "{needle}: receipt-id echoed"
            );
        }
    }
}

#[tokio::test]
async fn a_frame_before_connect_is_an_error() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &["v12.stomp"]).await;
    client
        .send(Frame::new(Command::Send).header("destination", "/topic/a"))
        .await;
    client
        .expect_error("first frame must be CONNECT", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn a_malformed_heart_beat_header_is_an_error() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &["v12.stomp"]).await;
    client
        .send(
            Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("heart-beat", "x"),
        )
        .await;
    client
        .expect_error("heart-beat header 'x'", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn duplicate_subscription_id_is_an_error() {
    let broker = start_default().await;
    let mut client = Client::connect(&broker.url()).await;
    client.subscribe("s", "/topic/a").await;
    client.send_subscribe("s", "/topic/b", &[]).await;
    client
        .expect_error("already in use", CloseCode::Protocol)
        .await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_message_closes_with_1007() {
    let broker = start_default().await;
    let mut client = Client::connect(&broker.url()).await;
    // tungstenite's client refuses to send invalid UTF-8 as text, so write
    // the WebSocket frame by hand: FIN+text, masked with a zero key, 2 bytes.
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = client.ws.get_mut() else {
        panic!("plain TCP")
    };
    use tokio::io::AsyncWriteExt;
    tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .expect("write");
    client
        .expect_error("not valid UTF-8", CloseCode::Invalid)
        .await;
}

#[tokio::test]
async fn no_connect_in_time_is_cut_off() {
    let mut config = test_config();
    config.listener.connect_timeout = Duration::from_millis(200);
    let broker = start(config).await;
    let mut client = Client::open(&broker.url(), &["v12.stomp"]).await;
    client
        .expect_error("no CONNECT frame received in time", CloseCode::Policy)
        .await;
}

#[tokio::test]
async fn stomp_1_0_session_has_no_escaping_and_no_nack() {
    let broker = start_default().await;
    let mut client = Client::open(&broker.url(), &["v10.stomp"]).await;
    client.version = stomp_protocol::Version::V1_0;
    client
        .send(Frame::new(Command::Connect).header("accept-version", "1.0"))
        .await;
    let connected = client.frame().await;
    assert_eq!(connected.get("version"), Some("1.0"));
    assert_eq!(connected.get("heart-beat"), Some("0,0"));
    client
        .send(Frame::new(Command::Nack).header("message-id", "1"))
        .await;
    client
        .expect_error("NACK is not part of STOMP 1.0", CloseCode::Protocol)
        .await;
}
