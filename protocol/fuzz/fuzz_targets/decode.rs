//! Fuzzes the streaming decoder: arbitrary bytes, fed in arbitrary splits,
//! must never panic, and whatever decodes must re-encode and decode the same.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stomp_protocol::{encode, Decoder, Limits, Version};

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else { return };
    let limits = Limits { max_body_bytes: 4096, ..Limits::default() };
    let mut decoder = Decoder::new(limits);
    let mut buffer = BytesMut::new();
    for chunk in input.chunks(usize::from(split).max(1)) {
        buffer.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => {
                    if frame.command.escapes_headers() {
                        let wire = encode(&frame, Version::V1_2);
                        let mut again = Decoder::new(limits);
                        let back = again.decode(&mut BytesMut::from(&wire[..]));
                        if let Ok(Some(mut back)) = back {
                            back.headers = back.headers.iter().filter(|(n, _)| *n != "content-length").collect();
                            let mut original = frame.clone();
                            original.headers = original.headers.iter().filter(|(n, _)| *n != "content-length").collect();
                            assert_eq!(back, original);
                        }
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
