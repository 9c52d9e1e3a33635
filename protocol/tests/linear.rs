//! The decoder's cost is linear in the bytes received, however they are
//! split (a frame fed in 1-byte WebSocket messages is not rescanned from its
//! start on every message), and a split never changes the outcome.

use bytes::BytesMut;
use proptest::prelude::*;
use std::time::{Duration, Instant};
use stomp_protocol::{Decoder, Frame, Limits};

/// Feeds `chunks` one after another into one decoder: the frames decoded,
/// and whether the input was refused.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>, limits: Limits) -> (Vec<Frame>, bool) {
    let mut decoder = Decoder::new(limits);
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

const HEAD: &[u8] = b"SEND\ndestination:/topic/big\ncontent-type:text/plain\n\n";

/// A SEND without `content-length` whose body is `body_bytes` long.
fn frame_without_content_length(body_bytes: usize) -> Vec<u8> {
    let mut wire = HEAD.to_vec();
    wire.resize(wire.len() + body_bytes, b'x');
    wire.push(0);
    wire
}

/// Decodes `wire` fed one byte at a time; `None` if that takes longer than
/// `give_up` (so that a quadratic decoder fails the test in seconds instead
/// of running for many minutes).
fn byte_by_byte(wire: &[u8], limits: Limits, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut decoder = Decoder::new(limits);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for (at, byte) in wire.chunks(1).enumerate() {
        buffer.extend_from_slice(byte);
        while let Some(frame) = decoder.decode(&mut buffer).expect("decodes") {
            frames.push(frame);
        }
        if at % 4096 == 0 && started.elapsed() > give_up {
            return None;
        }
    }
    let took = started.elapsed();
    assert_eq!(frames.len(), 1, "one frame");
    assert_eq!(frames[0].body.len(), wire.len() - HEAD.len() - 1);
    Some(took)
}

#[test]
fn decode_time_of_a_frame_fed_byte_by_byte_grows_linearly() {
    let limits = Limits {
        max_body_bytes: 2 << 20,
        ..Limits::default()
    };
    let small = frame_without_content_length(64 << 10);
    let large = frame_without_content_length(1 << 20);
    let forever = Duration::from_secs(600);
    // Warm up, then interleave the sizes so that a burst of load from
    // elsewhere hits both alike, and keep each size's quickest run: the
    // figure least disturbed by other work on a loaded machine.
    byte_by_byte(&small, limits, forever);
    let mut small_time = Duration::MAX;
    let mut large_time = Duration::MAX;
    for _ in 0..3 {
        for _ in 0..2 {
            let took = byte_by_byte(&small, limits, forever).unwrap_or(forever);
            small_time = small_time.min(took);
        }
        match byte_by_byte(&large, limits, bound(small_time)) {
            Some(took) => large_time = large_time.min(took),
            None => break,
        }
    }
    assert!(
        large_time < bound(small_time),
        "1 MiB took over {:?}, 64 times as long as 64 KiB ({small_time:?})",
        bound(small_time)
    );
    let ratio = large_time.as_secs_f64() / small_time.as_secs_f64().max(1e-6);
    eprintln!(
        "64 KiB: {small_time:?}, 1 MiB: {large_time:?}, ratio {ratio:.1} (linear 16, quadratic 256)"
    );
}

/// Sixteen times the bytes: linear cost gives about 16 times the time,
/// rescanning 256. The floor keeps a hiccup on a loaded machine from failing
/// a fast (release) build; the ceiling (over 100 times the 0.2 s a debug
/// build takes) ends the test in seconds for a rescanning decoder, which
/// takes minutes for 1 MiB.
fn bound(small: Duration) -> Duration {
    small
        .mul_f64(64.0)
        .clamp(Duration::from_secs(2), Duration::from_secs(30))
}

/// Pieces of STOMP-like input that reach every branch of the grammar and,
/// with small limits, every limit.
fn piece() -> impl Strategy<Value = &'static [u8]> {
    prop::sample::select(vec![
        &b"SEND\n"[..],
        b"CONNECT\r\n",
        b"MESSAGE\n",
        b"a:b\n",
        b"k:v\r\n",
        b"content-length:3\n",
        b"content-length:x\n",
        b"\n",
        b"\r\n",
        b"\r",
        b"\0",
        b":",
        b"x",
        b"abcdefghij",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_split_decodes_as_the_whole_buffer(
        pieces in proptest::collection::vec(piece(), 0..40),
        splits in proptest::collection::vec(1usize..9, 1..20),
    ) {
        let limits = Limits {
            max_command_bytes: 8,
            max_headers: 3,
            max_header_line_bytes: 12,
            max_header_bytes: 40,
            max_body_bytes: 16,
        };
        let wire = pieces.concat();
        let whole = feed([&wire[..]], limits);
        let mut chunks = Vec::new();
        let mut rest = &wire[..];
        for size in splits.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at((*size).min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        prop_assert_eq!(feed(chunks.iter().copied(), limits), whole.clone());
        prop_assert_eq!(feed(wire.chunks(1), limits), whole);
    }
}
