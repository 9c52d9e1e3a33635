//! Where a MESSAGE frame's body is, without decoding its headers.
//!
//! Fan-out subscribers need only a message's body (its [`Stamp`]). The full
//! decoder makes two strings per header; on a two-core machine the load
//! tool's own CPU sets the pace the broker's writers batch at, so a heavier
//! subscriber made the broker look worse per delivery, and every header a
//! broker added (`x-offset`, `x-epoch`) cost twice. The NATS and MQTT
//! subscribers already parse this leanly. Anything irregular is left to the
//! full decoder, which reports it.
//!
//! [`Stamp`]: crate::delivery::Stamp

use std::ops::Range;

/// What the start of a STOMP byte stream holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole MESSAGE frame (after `skip` heart-beat bytes) ending at
    /// `end` (its NUL included), whose body is `body`.
    Message { body: Range<usize>, end: usize },
    /// The start of a MESSAGE frame, or heart-beats only: wait for more.
    Incomplete,
    /// Another frame, or one this scan does not judge: decode it fully.
    Other,
}

/// Headers longer than this are left to the decoder (and its limits).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Scans `stream` (heart-beat end-of-lines first are passed over).
pub fn scan(stream: &[u8]) -> Scan {
    let mut at = 0;
    while at < stream.len() {
        match stream[at] {
            b'\n' => at += 1,
            b'\r' if stream.get(at + 1) == Some(&b'\n') => at += 2,
            _ => break,
        }
    }
    let rest = &stream[at..];
    if rest.is_empty() || rest == b"\r" {
        return Scan::Incomplete;
    }
    let command_end = match (
        rest.strip_prefix(b"MESSAGE\n"),
        rest.strip_prefix(b"MESSAGE\r\n"),
    ) {
        (Some(_), _) => at + 8,
        (_, Some(_)) => at + 9,
        _ if b"MESSAGE\r\n".starts_with(rest) || b"MESSAGE\n".starts_with(rest) => {
            return Scan::Incomplete
        }
        _ => return Scan::Other,
    };
    let mut line_start = command_end;
    let mut content_length: Option<usize> = None;
    let body_start = loop {
        if line_start - at > MAX_HEAD_BYTES {
            return Scan::Other;
        }
        let Some(newline) = stream[line_start..].iter().position(|&b| b == b'\n') else {
            return Scan::Incomplete;
        };
        let line_end = line_start + newline;
        let line = &stream[line_start..line_end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break line_end + 1;
        }
        // The first occurrence of a header is the one that counts.
        if content_length.is_none() {
            if let Some(value) = line.strip_prefix(b"content-length:") {
                match parse_length(value) {
                    Some(length) => content_length = Some(length),
                    None => return Scan::Other,
                }
            }
        }
        line_start = line_end + 1;
    };
    let body_end = match content_length {
        Some(length) => {
            let end = body_start + length;
            match stream.get(end) {
                None => return Scan::Incomplete,
                Some(0) => end,
                Some(_) => return Scan::Other,
            }
        }
        None => match stream[body_start..].iter().position(|&b| b == 0) {
            Some(nul) => body_start + nul,
            None => return Scan::Incomplete,
        },
    };
    Scan::Message {
        body: body_start..body_end,
        end: body_end + 1,
    }
}

/// A `content-length` value: ASCII digits only, not absurdly long.
fn parse_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use stomp_protocol::{Decoder, Limits};

    fn body_of(stream: &[u8]) -> Option<&[u8]> {
        match scan(stream) {
            Scan::Message { body, .. } => Some(&stream[body]),
            _ => None,
        }
    }

    #[test]
    fn finds_the_body_with_and_without_content_length() {
        let framed = b"MESSAGE\ndestination:/topic/a\ncontent-length:5\n\nhe\0lo\0";
        assert_eq!(body_of(framed), Some(&b"he\0lo"[..]));
        let unframed = b"\n\r\nMESSAGE\r\nsubscription:s\r\n\r\nhello\0MESSAGE\n";
        assert_eq!(body_of(unframed), Some(&b"hello"[..]));
        match scan(unframed) {
            Scan::Message { end, .. } => assert_eq!(&unframed[end..], b"MESSAGE\n"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_content_length_counts() {
        let stream = b"MESSAGE\ncontent-length:2\ncontent-length:9\n\nab\0";
        assert_eq!(body_of(stream), Some(&b"ab"[..]));
    }

    #[test]
    fn every_prefix_of_a_message_is_incomplete() {
        let stream = b"\nMESSAGE\ndestination:/topic/a\ncontent-length:3\n\nabc\0";
        for cut in 0..stream.len() {
            assert_eq!(scan(&stream[..cut]), Scan::Incomplete, "cut at {cut}");
        }
        assert_eq!(body_of(stream), Some(&b"abc"[..]));
    }

    #[test]
    fn other_frames_and_irregular_messages_go_to_the_decoder() {
        assert_eq!(scan(b"RECEIPT\nreceipt-id:1\n\n\0"), Scan::Other);
        assert_eq!(scan(b"ERROR\n\n\0"), Scan::Other);
        assert_eq!(scan(b"MESSAGES\n\n\0"), Scan::Other);
        assert_eq!(scan(b"MESSAGE\ncontent-length:x\n\n\0"), Scan::Other);
        assert_eq!(scan(b"MESSAGE\ncontent-length:1\n\nab\0"), Scan::Other);
    }

    #[test]
    fn agrees_with_the_decoder_on_valid_frames() {
        let frames: [&[u8]; 3] = [
            b"MESSAGE\ndestination:/topic/a\nmessage-id:1\nsubscription:s\ncontent-length:4\n\nbody\0",
            b"MESSAGE\r\ndestination:/topic/a\r\nx-offset:7\r\n\r\nno length\0",
            b"MESSAGE\nx:\\c\n\n\0",
        ];
        for frame in frames {
            let mut buffer = bytes::BytesMut::from(frame);
            let decoded = Decoder::new(Limits::default())
                .decode(&mut buffer)
                .expect("valid")
                .expect("whole");
            assert_eq!(body_of(frame), Some(&decoded.body[..]));
        }
    }
}
