//! Fuzzes whole sessions: random sequences of frames (valid, half-valid and
//! garbage), cut into random WebSocket messages, sent to a real broker. The
//! broker must answer (or close) every time, never hang, and keep serving a
//! fresh well-behaved client afterwards. Runs in every test run; failing
//! cases are shrunk and kept by proptest in `proptest-regressions/`.

mod common;

use common::{start, test_config, Client, Event};
use futures_util::SinkExt;
use proptest::prelude::*;
use std::time::Duration;
use stomp_protocol::Command;
use tokio_tungstenite::tungstenite::Message;

fn command() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("CONNECT"),
        Just("STOMP"),
        Just("SEND"),
        Just("SUBSCRIBE"),
        Just("UNSUBSCRIBE"),
        Just("ACK"),
        Just("NACK"),
        Just("BEGIN"),
        Just("COMMIT"),
        Just("ABORT"),
        Just("DISCONNECT"),
        Just("MESSAGE"),
        Just("send"),
        Just("FROB"),
    ]
}

fn header() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        Just("destination"),
        Just("id"),
        Just("ack"),
        Just("receipt"),
        Just("transaction"),
        Just("accept-version"),
        Just("heart-beat"),
        Just("content-length"),
        Just("reply-to"),
        Just("prefetch-count"),
        Just("expiration"),
        Just("x-max-length"),
        Just("exclusive"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("/topic/a".to_owned()),
        Just("/topic/a.*".to_owned()),
        Just("/topic/#".to_owned()),
        Just("/queue/q".to_owned()),
        Just("/temp-queue/t".to_owned()),
        Just("/reply-queue/s1.t".to_owned()),
        Just("client".to_owned()),
        Just("client-individual".to_owned()),
        Just("1.2".to_owned()),
        Just("0,0".to_owned()),
        Just("1".to_owned()),
        Just("0".to_owned()),
        Just("-1".to_owned()),
        Just("a\\cb".to_owned()),
        Just("bad\\t".to_owned()),
        Just("true".to_owned()),
        "[ -~]{0,12}",
    ];
    (name, value).prop_map(|(n, v)| format!("{n}:{v}\n"))
}

/// One piece of the byte stream.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (command(), proptest::collection::vec(header(), 0..5), "[a-z]{0,20}").prop_map(|(c, hs, body)| {
            let mut frame = format!("{c}\n{}\n{body}", hs.concat()).into_bytes();
            frame.push(0);
            frame
        }),
        1 => Just(b"\n".to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn case() -> impl Strategy<Value = (Vec<Vec<u8>>, usize)> {
    (proptest::collection::vec(piece(), 1..12), 1usize..64)
}

async fn run_case(pieces: Vec<Vec<u8>>, split: usize) -> Result<(), TestCaseError> {
    let broker = start(test_config()).await;
    let mut fuzzed = Client::open(&broker.url(), &["v12.stomp"]).await;
    let mut stream = b"CONNECT\naccept-version:1.2\n\n\0".to_vec();
    for piece in pieces {
        stream.extend_from_slice(&piece);
    }
    for chunk in stream.chunks(split) {
        if fuzzed
            .ws
            .send(Message::Binary(chunk.to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // Whatever it makes of that, the broker answers or closes in time.
    let _ = fuzzed
        .ws
        .send(Message::text(
            "SEND\ndestination:/topic/end\nreceipt:end\n\n\0",
        ))
        .await;
    loop {
        match fuzzed.event_within(Duration::from_secs(5)).await {
            None => {
                return Err(TestCaseError::fail(
                    "the broker neither answered nor closed",
                ))
            }
            Some(Event::Closed(_)) => break,
            Some(Event::Frame(frame))
                if frame.command == Command::Receipt && frame.get("receipt-id") == Some("end") =>
            {
                break
            }
            Some(_) => {}
        }
    }
    // And it still serves everyone else.
    let mut fresh = Client::connect(&broker.url()).await;
    fresh.subscribe("ok", "/topic/ok").await;
    fresh.publish("/topic/ok", "still here").await;
    prop_assert_eq!(&fresh.message().await.body[..], b"still here");
    // The case's runtime is dropped next, which ends the broker's tasks.
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn random_frame_sequences_never_break_the_broker((pieces, split) in case()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(run_case(pieces, split))?;
    }
}
