//! Scenario `micro`: in-process micro-benchmarks. The codec's decode and
//! encode throughput on a typical SEND, the decode of a 1 MiB frame without
//! `content-length` fed 1 byte at a time (as many tiny WebSocket messages
//! would bring it: the decoder must not rescan it), and the topic trie's
//! matches per second with 10 000 subscriptions, a quarter of them wildcards.

use crate::report::Report;
use crate::Fallible;
use bytes::BytesMut;
use std::hint::black_box;
use std::time::Instant;
use stomp_protocol::{encode, Decoder, Limits, Version};
use stomphub::model::destination::{topic_pattern, topic_words, DestinationLimits};
use stomphub::router::topic_trie::TopicTrie;

const LIMITS: DestinationLimits = DestinationLimits {
    max_words: 32,
    max_multi_word_wildcards: 4,
};

fn codec(report: &mut Report) {
    let frame = format!(
        "SEND\ndestination:/topic/prices.nasdaq.acme\ncontent-type:application/json\nx-trace:a\\cb\\nc\ncontent-length:100\n\n{}\0",
        "x".repeat(100)
    );
    let copies = 100_000;
    let wire: Vec<u8> = frame.as_bytes().repeat(copies);
    let started = Instant::now();
    let mut buffer = BytesMut::from(&wire[..]);
    let mut decoder = Decoder::new(Limits::default());
    let mut frames = Vec::with_capacity(copies);
    while let Ok(Some(frame)) = decoder.decode(&mut buffer) {
        frames.push(frame);
    }
    let decode = started.elapsed();
    let started = Instant::now();
    let mut bytes = 0;
    for frame in &frames {
        bytes += black_box(encode(frame, Version::V1_2)).len();
    }
    let encoding = started.elapsed();
    let megabytes = wire.len() as f64 / 1e6;
    let (decode_mb_s, encode_mb_s) = (
        megabytes / decode.as_secs_f64(),
        bytes as f64 / 1e6 / encoding.as_secs_f64(),
    );
    report.figure("decode MB/s", decode_mb_s);
    report.figure("encode MB/s", encode_mb_s);
    report.line(format!(
        "codec: decoded {} frames ({:.1} MB) at {:.0} MB/s, {:.2} M frames/s; encoded {:.1} MB at {:.0} MB/s",
        frames.len(),
        megabytes,
        decode_mb_s,
        frames.len() as f64 / decode.as_secs_f64() / 1e6,
        bytes as f64 / 1e6,
        encode_mb_s
    ));
}

/// A 1 MiB SEND without `content-length`, fed one byte at a time. Linear
/// decoding takes milliseconds; rescanning the body on every byte would take
/// about 5 × 10^11 comparisons.
fn split_frame(report: &mut Report) -> Fallible<()> {
    let body_bytes = 1 << 20;
    let mut wire = b"SEND\ndestination:/topic/big\n\n".to_vec();
    wire.resize(wire.len() + body_bytes, b'x');
    wire.push(0);
    let limits = Limits {
        max_body_bytes: 2 << 20,
        ..Limits::default()
    };
    let started = Instant::now();
    let mut decoder = Decoder::new(limits);
    let mut buffer = BytesMut::new();
    let mut frames = 0;
    for byte in wire.chunks(1) {
        buffer.extend_from_slice(byte);
        while let Some(frame) = decoder.decode(&mut buffer)? {
            black_box(frame);
            frames += 1;
        }
    }
    let elapsed = started.elapsed();
    if frames != 1 {
        return Err(format!("the split 1 MiB frame decoded as {frames} frames").into());
    }
    report.figure("1 MiB in 1-byte pieces ms", elapsed.as_secs_f64() * 1e3);
    report.line(format!(
        "codec: a 1 MiB frame without content-length fed 1 byte at a time decoded in {:.1} ms ({:.0} MB/s)",
        elapsed.as_secs_f64() * 1e3,
        wire.len() as f64 / 1e6 / elapsed.as_secs_f64()
    ));
    Ok(())
}

fn trie(report: &mut Report) -> Fallible<()> {
    let mut trie: TopicTrie<usize, usize> = TopicTrie::default();
    let subscriptions = 10_000;
    for i in 0..subscriptions {
        let pattern = match i % 4 {
            0 => format!("/topic/prices.m{}.s{}.#", i % 50, i % 7),
            1 => format!("/topic/prices.*.s{}", i % 200),
            _ => format!("/topic/prices.m{}.s{}", i % 50, i % 200),
        };
        trie.insert(&topic_pattern(&pattern, &LIMITS).map_err(|e| e.0)?, i, i);
    }
    let names: Vec<Vec<Box<str>>> = (0..1000)
        .map(|i| {
            topic_words(&format!("/topic/prices.m{}.s{}", i % 50, i % 200), &LIMITS)
                .map_err(|e| e.0)
        })
        .collect::<Result<_, _>>()?;
    let rounds = 200;
    let mut matched = 0;
    let mut out = Vec::new();
    let started = Instant::now();
    for _ in 0..rounds {
        for name in &names {
            out.clear();
            trie.matches(name, &mut out);
            matched += out.len();
        }
    }
    let elapsed = started.elapsed();
    let lookups = rounds * names.len();
    report.figure(
        "trie M lookups/s",
        lookups as f64 / elapsed.as_secs_f64() / 1e6,
    );
    report.line(format!(
        "trie: {subscriptions} subscriptions (25 % with #, 25 % with *): {:.2} M lookups/s, {:.1} matching subscriptions each, {:.0} M matches/s",
        lookups as f64 / elapsed.as_secs_f64() / 1e6,
        matched as f64 / lookups as f64,
        matched as f64 / elapsed.as_secs_f64() / 1e6
    ));
    Ok(())
}

/// Runs all three.
pub fn run() -> Fallible<Report> {
    let mut report = Report::default();
    codec(&mut report);
    split_frame(&mut report)?;
    trie(&mut report)?;
    Ok(report)
}
