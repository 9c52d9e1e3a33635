//! Fuzzes the decoder's resumed scanning: arbitrary bytes fed in arbitrary
//! pieces must decode exactly as the whole buffer does (the same frames, and
//! refused or not alike). Small limits, so that every limit is reached.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stomp_protocol::{Decoder, Frame, Limits};

const LIMITS: Limits = Limits {
    max_command_bytes: 16,
    max_headers: 4,
    max_header_line_bytes: 32,
    max_header_bytes: 96,
    max_body_bytes: 64,
};

/// The frames `chunks` decode to, and whether the input was refused.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, bool) {
    let mut decoder = Decoder::new(LIMITS);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buffer) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes choose the piece sizes (1 to 16, in turn).
    let (sizes, input) = data.split_at(data.len().min(8));
    let sizes: Vec<usize> = sizes.iter().map(|s| usize::from(s % 16) + 1).collect();
    let whole = feed([input]);
    let mut chunks = Vec::new();
    let mut rest = input;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at((*size).min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    assert_eq!(feed(chunks), whole, "a split decodes differently");
    assert_eq!(
        feed(input.chunks(1)),
        whole,
        "byte by byte decodes differently"
    );
});
