//! Property: any frame the encoder writes, the decoder reads back unchanged,
//! however the bytes are split.

use bytes::BytesMut;
use proptest::prelude::*;
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Send),
        Just(Command::Message),
        Just(Command::Error),
        Just(Command::Subscribe),
        Just(Command::Ack),
        Just(Command::Receipt),
    ]
}

/// Header text including every character that needs escaping.
fn text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[a-z:\\\\\n\r é-]{0,12}").expect("valid regex")
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        command(),
        proptest::collection::vec(
            (
                text().prop_filter("names are non-empty", |n| !n.is_empty()),
                text(),
            ),
            0..6,
        ),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(command, headers, body)| Frame {
            command,
            headers: headers
                .into_iter()
                .filter(|(name, _)| name != "content-length")
                .collect(),
            body: if command.may_have_body() {
                body.into()
            } else {
                Default::default()
            },
        })
}

proptest! {
    #[test]
    fn encode_then_decode_is_identity(frame in frame(), split in 1usize..64) {
        let wire = encode(&frame, Version::V1_2);
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for chunk in wire.chunks(split) {
            buffer.extend_from_slice(chunk);
            while let Some(f) = decoder.decode(&mut buffer).expect("own output decodes") {
                decoded.push(f);
            }
        }
        prop_assert_eq!(decoded.len(), 1);
        let mut back = decoded.remove(0);
        // The encoder adds content-length; take it off before comparing.
        back.headers = back.headers.iter().filter(|(n, _)| *n != "content-length").collect();
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut decoder = Decoder::new(Limits::default());
        let mut buffer = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buffer) {}
    }
}
