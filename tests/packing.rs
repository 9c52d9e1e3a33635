//! Packed delivery, black-box: a client that sends CONNECT
//! `x-pack-frames:true` may get several STOMP frames in one WebSocket
//! message, and every frame still arrives whole and in order; a client that
//! did not ask gets exactly one frame per message.

mod common;

use common::{start, test_config, Client, WAIT};
use futures_util::{SinkExt, StreamExt};
use stomp_protocol::{encode, Command, Frame, Version};
use tokio_tungstenite::tungstenite::Message;

const DESTINATION: &str = "/topic/packing";
/// Messages published in one burst (one WebSocket message of SENDs).
const MESSAGES: usize = 2000;

/// Connects, asking for packed frames or not; returns the client and the
/// CONNECTED frame.
async fn connect(url: &str, packed: bool) -> (Client, Frame) {
    let mut client = Client::open(url, &["v12.stomp"]).await;
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("heart-beat", "0,0");
    if packed {
        connect = connect.header("x-pack-frames", "true");
    }
    client.send(connect).await;
    let connected = client.frame().await;
    assert_eq!(connected.command, Command::Connected, "{connected:?}");
    (client, connected)
}

/// Publishes `MESSAGES` SENDs in one WebSocket message, so that the
/// subscribers' queues fill faster than their writers take them.
async fn publish_burst(url: &str) {
    let (mut publisher, _) = connect(url, false).await;
    let mut burst = Vec::new();
    for n in 0..MESSAGES {
        let send = Frame::new(Command::Send)
            .header("destination", DESTINATION)
            .body(format!("message {n}"));
        burst.extend_from_slice(&encode(&send, Version::V1_2));
    }
    publisher
        .ws
        .send(Message::binary(burst))
        .await
        .expect("burst sent");
}

/// Reads WebSocket messages until `MESSAGES` MESSAGE frames have arrived;
/// returns the bodies in order and the most frames any one message held.
async fn receive_all(client: &mut Client) -> (Vec<String>, usize) {
    let mut stream = Vec::new();
    let mut most_per_message = 0;
    let mut frames = 0;
    while frames < MESSAGES {
        let message = tokio::time::timeout(WAIT, client.ws.next())
            .await
            .expect("messages arrive in time")
            .expect("the connection stays open")
            .expect("a WebSocket message");
        let data = match message {
            Message::Text(text) => text.as_bytes().to_vec(),
            Message::Binary(bytes) => bytes.to_vec(),
            _ => continue,
        };
        // Text bodies hold no NUL: each NUL ends one frame.
        let in_message = data.iter().filter(|&&b| b == 0).count();
        most_per_message = most_per_message.max(in_message);
        frames += in_message;
        stream.extend_from_slice(&data);
    }
    let mut decoder = stomp_protocol::Decoder::new(stomp_protocol::Limits::default());
    let mut buffer = bytes::BytesMut::from(&stream[..]);
    let mut bodies = Vec::new();
    while let Some(frame) = decoder.decode(&mut buffer).expect("whole frames") {
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        bodies.push(String::from_utf8(frame.body.to_vec()).expect("text body"));
    }
    assert!(buffer.is_empty(), "no partial frame is left over");
    (bodies, most_per_message)
}

#[tokio::test]
async fn packed_frames_arrive_whole_and_in_order_and_only_for_clients_that_asked() {
    let broker = start(test_config()).await;
    let url = broker.url();
    let (mut packed, connected) = connect(&url, true).await;
    assert_eq!(connected.get("x-pack-frames"), Some("true"));
    let (mut plain, connected) = connect(&url, false).await;
    assert_eq!(connected.get("x-pack-frames"), None);
    packed.subscribe_confirmed("0", DESTINATION, "r0").await;
    plain.subscribe_confirmed("0", DESTINATION, "r1").await;

    publish_burst(&url).await;
    let expected: Vec<String> = (0..MESSAGES).map(|n| format!("message {n}")).collect();

    let (bodies, most) = receive_all(&mut plain).await;
    assert_eq!(bodies, expected);
    assert_eq!(most, 1, "one frame per WebSocket message unless asked");

    let (bodies, most) = receive_all(&mut packed).await;
    assert_eq!(bodies, expected);
    // The test's runtime has one thread: the publishing session queues many
    // frames before the subscriber's writer runs, which packs them.
    assert!(most > 1, "frames were packed (at most {most} per message)");
    broker.shutdown().await;
}
