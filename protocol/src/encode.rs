//! Encoding frames to wire bytes, escaping headers by version and command.

use crate::frame::{Command, Frame};
use crate::header::{escape_into, Escaping};
use crate::version::Version;
use bytes::{BufMut, Bytes, BytesMut};

/// Writes one frame header by header. Used directly where a server composes
/// frames from parts (MESSAGE fan-out) and through [`encode`] otherwise.
#[derive(Debug)]
pub struct FrameEncoder {
    escaping: Escaping,
    out: BytesMut,
}

impl FrameEncoder {
    /// Starts a `command` frame for a session of `version`, reserving
    /// `capacity` bytes (make it the expected frame size to avoid regrowth).
    pub fn begin(command: Command, version: Version, capacity: usize) -> Self {
        let mut out = BytesMut::with_capacity(capacity);
        out.put_slice(command.as_str().as_bytes());
        out.put_u8(b'\n');
        FrameEncoder {
            escaping: Escaping::for_frame(version, command),
            out,
        }
    }

    /// Appends `name:value`, escaped. A header that this version cannot
    /// represent (a line break under 1.0) is left out; returns whether it was written.
    pub fn header(&mut self, name: &str, value: &str) -> bool {
        let start = self.out.len();
        let written = escape_into(name, self.escaping, &mut self.out) && {
            self.out.put_u8(b':');
            escape_into(value, self.escaping, &mut self.out)
        };
        if written {
            self.out.put_u8(b'\n');
        } else {
            self.out.truncate(start);
        }
        written
    }

    /// Appends a header whose value is a number, without allocating.
    pub fn header_number(&mut self, name: &str, value: u64) {
        self.out.put_slice(name.as_bytes());
        self.out.put_u8(b':');
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = value;
        loop {
            at -= 1;
            // `rest % 10` is below 10, so the cast cannot truncate.
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.out.put_slice(&digits[at..]);
        self.out.put_u8(b'\n');
    }

    /// Ends the headers, writes `content-length` when the frame has a body
    /// or is of a kind that may carry one, the body and the closing NUL.
    pub fn finish(mut self, command_may_have_body: bool, body: &[u8]) -> Bytes {
        if command_may_have_body || !body.is_empty() {
            self.header_number("content-length", body.len() as u64);
        }
        self.out.reserve(body.len() + 2);
        self.out.put_u8(b'\n');
        self.out.put_slice(body);
        self.out.put_u8(0);
        self.out.freeze()
    }
}

/// Encodes a whole frame for a session of `version`. A `content-length`
/// header of the frame is replaced by the body's real length.
pub fn encode(frame: &Frame, version: Version) -> Bytes {
    let capacity = 32
        + frame.body.len()
        + frame
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 2)
            .sum::<usize>();
    let mut encoder = FrameEncoder::begin(frame.command, version, capacity);
    for (name, value) in frame.headers.iter() {
        if name != "content-length" {
            encoder.header(name, value);
        }
    }
    encoder.finish(frame.command.may_have_body(), &frame.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_headers_are_not_escaped() {
        let frame = Frame::new(Command::Connected).header("session", "a:b");
        assert_eq!(
            &encode(&frame, Version::V1_2)[..],
            b"CONNECTED\nsession:a:b\n\n\0"
        );
    }

    #[test]
    fn message_gets_content_length_and_escapes() {
        let frame = Frame::new(Command::Message)
            .header("k", "a:b")
            .header("content-length", "999")
            .body(&b"x\0y"[..]);
        assert_eq!(
            &encode(&frame, Version::V1_2)[..],
            b"MESSAGE\nk:a\\cb\ncontent-length:3\n\nx\0y\0"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        let mut encoder = FrameEncoder::begin(Command::Receipt, Version::V1_2, 0);
        encoder.header_number("n", 0);
        encoder.header_number("m", u64::MAX);
        let bytes = encoder.finish(false, b"");
        assert_eq!(&bytes[..], b"RECEIPT\nn:0\nm:18446744073709551615\n\n\0");
    }
}
