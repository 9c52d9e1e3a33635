//! Golden tests from the STOMP 1.2 specification's rules and examples. Every
//! golden input is fed whole, byte by byte, and in pseudo-random splits.

use bytes::BytesMut;
use stomp_protocol::{Command, DecodeError, Decoder, Frame, Limits, Version};

/// Feeds `chunks` one after another into one decoder, collecting frames.
fn feed(chunks: &[&[u8]], version: Version) -> Result<Vec<Frame>, DecodeError> {
    let mut decoder = Decoder::new(Limits::default());
    decoder.set_version(version);
    let mut buffer = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buffer.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buffer)? {
            frames.push(frame);
        }
    }
    Ok(frames)
}

/// Decodes `input` whole, byte by byte, and in 20 seeded random splits, and
/// checks that every way gives the same result.
fn decode_every_way(input: &[u8], version: Version) -> Result<Vec<Frame>, DecodeError> {
    let whole = feed(&[input], version);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(feed(&bytes, version), whole, "byte by byte differs");
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        let mut chunks = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let take = 1 + (seed >> 33) as usize % rest.len().clamp(1, 17);
            let (chunk, tail) = rest.split_at(take.min(rest.len()));
            chunks.push(chunk);
            rest = tail;
        }
        assert_eq!(feed(&chunks, version), whole, "a random split differs");
    }
    whole
}

fn one(input: &[u8]) -> Frame {
    let mut frames = decode_every_way(input, Version::V1_2).expect("decodes");
    assert_eq!(frames.len(), 1, "exactly one frame");
    frames.remove(0)
}

#[test]
fn spec_example_connect() {
    let frame = one(b"CONNECT\naccept-version:1.2\nhost:stomp.github.org\n\n\0");
    assert_eq!(frame.command, Command::Connect);
    assert_eq!(frame.get("accept-version"), Some("1.2"));
    assert_eq!(frame.get("host"), Some("stomp.github.org"));
    assert!(frame.body.is_empty());
}

#[test]
fn spec_example_send_with_body() {
    let frame = one(b"SEND\ndestination:/queue/a\ncontent-type:text/plain\n\nhello queue a\0");
    assert_eq!(frame.command, Command::Send);
    assert_eq!(frame.get("destination"), Some("/queue/a"));
    assert_eq!(&frame.body[..], b"hello queue a");
}

#[test]
fn spec_crlf_line_endings_are_accepted_everywhere() {
    let frame = one(b"SEND\r\ndestination:/a\r\nx:y\r\n\r\nbody\0\r\n");
    assert_eq!(frame.get("destination"), Some("/a"));
    assert_eq!(frame.get("x"), Some("y"));
    assert_eq!(&frame.body[..], b"body");
}

#[test]
fn spec_repeated_header_first_one_wins() {
    let frame = one(b"MESSAGE\nfoo:World\nfoo:Hello\n\n\0");
    assert_eq!(frame.get("foo"), Some("World"));
    assert_eq!(frame.headers.len(), 2, "repeats are kept for pass-through");
}

#[test]
fn spec_content_length_body_may_contain_nul() {
    let frame = one(b"SEND\ndestination:/a\ncontent-length:5\n\na\0b\0c\0");
    assert_eq!(&frame.body[..], b"a\0b\0c");
}

#[test]
fn spec_content_length_without_nul_is_an_error() {
    let result = feed(
        &[b"SEND\ndestination:/a\ncontent-length:2\n\nabc\0"],
        Version::V1_2,
    );
    assert!(matches!(result, Err(DecodeError::Invalid(_))));
}

#[test]
fn spec_eols_between_frames_are_heartbeats() {
    let frames = decode_every_way(
        b"\n\r\n\nSEND\ndestination:/a\n\none\0\n\n\r\nSEND\ndestination:/b\n\ntwo\0\n",
        Version::V1_2,
    )
    .expect("decodes");
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[1].body[..], b"two");
}

#[test]
fn spec_header_values_are_never_trimmed() {
    let frame = one(b"SEND\ndestination:/a\nfoo: bar \n\n\0");
    assert_eq!(frame.get("foo"), Some(" bar "));
    assert_eq!(frame.get("foo "), None);
}

#[test]
fn spec_commands_and_names_are_case_sensitive() {
    assert!(matches!(
        feed(&[b"send\ndestination:/a\n\n\0"], Version::V1_2),
        Err(DecodeError::Invalid(_))
    ));
    let frame = one(b"SEND\nDestination:/a\n\n\0");
    assert_eq!(frame.get("destination"), None);
}

#[test]
fn spec_value_escapes_decode_in_1_2() {
    let frame = one(b"SEND\ndestination:/a\nk\\cey:a\\cb\\nc\\\\d\\re\n\n\0");
    assert_eq!(frame.get("k:ey"), Some("a:b\nc\\d\re"));
}

#[test]
fn spec_undefined_escape_is_fatal() {
    let result = feed(&[b"SEND\ndestination:/a\nk:a\\tb\n\n\0"], Version::V1_2);
    assert!(matches!(result, Err(DecodeError::Invalid(ref m)) if m.contains("\\t")));
}

#[test]
fn spec_connect_headers_are_not_unescaped() {
    let frame = one(b"CONNECT\nlogin:guest\npasscode:pa\\css\n\n\0");
    assert_eq!(frame.get("passcode"), Some("pa\\css"));
}

#[test]
fn spec_1_0_headers_are_not_unescaped() {
    let frames = decode_every_way(b"SEND\ndestination:/a\nk:a\\cb\n\n\0", Version::V1_0).unwrap();
    assert_eq!(frames[0].get("k"), Some("a\\cb"));
}

#[test]
fn spec_only_send_message_error_may_have_a_body() {
    let result = feed(
        &[b"SUBSCRIBE\nid:0\ndestination:/a\n\nbody\0"],
        Version::V1_2,
    );
    assert!(
        matches!(result, Err(DecodeError::Invalid(ref m)) if m.contains("must not have a body"))
    );
}

#[test]
fn invalid_utf8_in_a_header_is_refused() {
    let result = feed(&[b"SEND\ndestination:/\xff\n\n\0"], Version::V1_2);
    assert!(matches!(result, Err(DecodeError::Invalid(_))));
}

#[test]
fn header_without_colon_is_refused() {
    let result = feed(&[b"SEND\ndestination\n\n\0"], Version::V1_2);
    assert!(matches!(result, Err(DecodeError::Invalid(_))));
}

#[test]
fn colon_inside_a_value_is_data() {
    let frame = one(b"SEND\ndestination:/a\nurl:http://x:80/\n\n\0");
    assert_eq!(frame.get("url"), Some("http://x:80/"));
}

#[test]
fn incomplete_input_asks_for_more() {
    for partial in [
        &b"SEN"[..],
        b"SEND\r",
        b"SEND\ndestination:/a\n",
        b"SEND\n\nbody",
        b"SEND\ncontent-length:3\n\nab",
    ] {
        assert_eq!(feed(&[partial], Version::V1_2), Ok(vec![]), "{partial:?}");
    }
}

fn small_limits() -> Limits {
    Limits {
        max_command_bytes: 16,
        max_headers: 4,
        max_header_line_bytes: 32,
        max_header_bytes: 100,
        max_body_bytes: 64,
    }
}

fn decode_with(limits: Limits, input: &[u8]) -> Result<Option<Frame>, DecodeError> {
    Decoder::new(limits).decode(&mut BytesMut::from(input))
}

fn too_large(limit: &'static str) -> Result<Option<Frame>, DecodeError> {
    Err(DecodeError::TooLarge {
        limit,
        max: match limit {
            "max_command_bytes" => 16,
            "max_headers" => 4,
            "max_header_line_bytes" => 32,
            "max_header_bytes" => 100,
            _ => 64,
        },
    })
}

#[test]
fn limits_are_enforced_before_the_frame_is_complete() {
    let limits = small_limits();
    // No EOL yet, but already longer than any command may be.
    assert_eq!(
        decode_with(limits, &[b'A'; 40]),
        too_large("max_command_bytes")
    );
    // A header line still growing past its limit.
    assert_eq!(
        decode_with(
            limits,
            b"SEND\nx:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ),
        too_large("max_header_line_bytes")
    );
    // Too many header lines.
    assert_eq!(
        decode_with(limits, b"SEND\na:1\nb:2\nc:3\nd:4\ne:5\n"),
        too_large("max_headers")
    );
    // An announced body over the limit fails before any body byte arrives.
    assert_eq!(
        decode_with(limits, b"SEND\ncontent-length:1000000000\n\n"),
        too_large("max_body_bytes")
    );
    // A body without content-length fails once more than the limit is buffered.
    let mut long = b"SEND\ndestination:/a\n\n".to_vec();
    long.extend_from_slice(&[b'x'; 65]);
    assert_eq!(decode_with(limits, &long), too_large("max_body_bytes"));
    // Exactly at the limit is fine.
    let mut exact = b"SEND\ndestination:/a\n\n".to_vec();
    exact.extend_from_slice(&[b'x'; 64]);
    exact.push(0);
    assert!(matches!(decode_with(limits, &exact), Ok(Some(_))));
}

#[test]
fn total_header_bytes_are_limited() {
    let limits = small_limits();
    let input = b"SEND\naaaaaaaaaaaaaaaaaaaaaaaaa:1\nbbbbbbbbbbbbbbbbbbbbbbbbbb:2\ncccccccccccccccccccccccccc:3\ndddddddddddddddddd";
    assert_eq!(decode_with(limits, input), too_large("max_header_bytes"));
}

#[test]
fn bad_content_length_is_refused() {
    for value in ["-1", "abc", "", "1 "] {
        let input = format!("SEND\ncontent-length:{value}\n\n\0");
        assert!(
            matches!(
                decode_with(Limits::default(), input.as_bytes()),
                Err(DecodeError::Invalid(_))
            ),
            "{value}"
        );
    }
}
