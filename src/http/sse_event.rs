//! How one outbound frame becomes a Server-Sent Event: `id:` (the
//! message's `<epoch>:<offset>` on destinations with a feed), `data:` lines
//! or JSON, base64 with `event: binary` for bodies that are not UTF-8.

use crate::outbound::OutFrame;
use bytes::{BufMut, BytesMut};
use stomp_protocol::{Limits, Version};

/// How events are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// The body as `data:` lines.
    Plain,
    /// `{"destination","headers","body"}` per event.
    Json,
}

/// Limits for reading our own MESSAGE frames back: they were checked when
/// they came in; the broker's added headers must not trip them.
pub(super) fn own_frame_limits() -> Limits {
    Limits {
        max_headers: usize::MAX,
        max_header_line_bytes: usize::MAX,
        max_header_bytes: usize::MAX,
        max_body_bytes: usize::MAX,
        ..Limits::default()
    }
}

/// Appends the SSE event for one outbound frame (MESSAGEs only).
pub(super) fn encode_event(frame: &OutFrame, format: Format, out: &mut BytesMut) {
    if !frame.bytes.starts_with(b"MESSAGE\n") {
        return;
    }
    // Every feed encodes every message it gets: plain events are written
    // straight from the frame's bytes, without building a frame (the parse
    // below made an SSE delivery cost 8 times a WebSocket one in broker CPU).
    if format == Format::Plain {
        if let Some(parts) = plain_parts(&frame.bytes) {
            write_plain(&parts, out);
            return;
        }
    }
    let limits = own_frame_limits();
    let Ok(length) = stomp_protocol::check(&frame.bytes, &limits) else {
        return;
    };
    let Ok(message) = stomp_protocol::parse(frame.bytes.slice(..length), Version::V1_2, &limits)
    else {
        return;
    };
    // The event id is what `Last-Event-ID` sends back to resume from.
    if let (Some(epoch), Some(offset)) = (message.get("x-epoch"), message.get("x-offset")) {
        out.put_slice(format!("id: {epoch}:{offset}\n").as_bytes());
    }
    let text = std::str::from_utf8(&message.body).ok();
    if text.is_none() {
        out.put_slice(b"event: binary\n");
    }
    let body = match text {
        Some(text) => text.to_owned(),
        None => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&message.body)
        }
    };
    match format {
        Format::Plain => data_lines(&body, out),
        Format::Json => {
            let headers: serde_json::Map<String, serde_json::Value> = message
                .headers
                .iter()
                .filter(|(name, _)| *name != "content-length")
                .map(|(name, value)| (name.to_owned(), value.into()))
                .collect();
            let event = serde_json::json!({
                "destination": message.get("destination").unwrap_or_default(),
                "headers": headers,
                "body": body,
            });
            // JSON escapes line breaks: one `data:` line.
            data_lines(&event.to_string(), out);
        }
    }
    out.put_slice(b"\n");
}

/// `data:` lines for `text`: SSE ends lines at CR, LF or CRLF, so each of
/// them starts a new `data:` line (the browser joins them with LF).
fn data_lines(text: &str, out: &mut BytesMut) {
    if text.contains('\r') {
        let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
        return data_lines(&normalized, out);
    }
    for line in text.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
}

/// What a plain event takes from a MESSAGE frame.
struct PlainParts<'a> {
    epoch: Option<&'a [u8]>,
    offset: Option<&'a [u8]>,
    body: &'a [u8],
}

/// The `x-epoch` and `x-offset` values (first occurrence, as STOMP says)
/// and the body of a MESSAGE frame as the broker encodes it: LF line ends,
/// the body after the blank line, `content-length` bytes long or up to the
/// NUL. `None` for anything else (CR, escapes in those values, no blank
/// line, a bad length): the caller parses the frame then.
fn plain_parts(bytes: &[u8]) -> Option<PlainParts<'_>> {
    let headers_end = bytes.windows(2).position(|w| w == b"\n\n")?;
    let head = &bytes[..headers_end];
    if head.contains(&b'\r') {
        return None;
    }
    let (mut epoch, mut offset, mut length) = (None, None, None);
    // Skip the command line.
    for line in head.split(|b| *b == b'\n').skip(1) {
        let colon = line.iter().position(|b| *b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let slot = match name {
            b"x-epoch" => &mut epoch,
            b"x-offset" => &mut offset,
            b"content-length" => &mut length,
            _ => continue,
        };
        if slot.is_none() {
            if value.contains(&b'\\') {
                return None;
            }
            *slot = Some(value);
        }
    }
    let rest = &bytes[headers_end + 2..];
    let body = match length {
        Some(length) => {
            let length: usize = std::str::from_utf8(length).ok()?.parse().ok()?;
            if rest.get(length) != Some(&0) {
                return None;
            }
            &rest[..length]
        }
        None => &rest[..rest.iter().position(|b| *b == 0)?],
    };
    Some(PlainParts {
        epoch,
        offset,
        body,
    })
}

/// Writes a plain event from its parts, exactly as the parsing path does.
fn write_plain(parts: &PlainParts<'_>, out: &mut BytesMut) {
    if let (Some(epoch), Some(offset)) = (parts.epoch, parts.offset) {
        out.put_slice(b"id: ");
        out.put_slice(epoch);
        out.put_slice(b":");
        out.put_slice(offset);
        out.put_slice(b"\n");
    }
    match std::str::from_utf8(parts.body) {
        Ok(text) => data_lines(text, out),
        Err(_) => {
            use base64::Engine as _;
            out.put_slice(b"event: binary\n");
            let encoded = base64::engine::general_purpose::STANDARD.encode(parts.body);
            data_lines(&encoded, out);
        }
    }
    out.put_slice(b"\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use stomp_protocol::{Command, Frame};

    fn message(body: &[u8]) -> OutFrame {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a")
            .header("message-id", "m-1")
            .header("subscription", "sse-0")
            .body(Bytes::copy_from_slice(body));
        OutFrame {
            bytes: stomp_protocol::encode(&frame, Version::V1_2),
            text: false,
            close: None,
        }
    }

    fn event(body: &[u8], format: Format) -> String {
        let mut out = BytesMut::new();
        encode_event(&message(body), format, &mut out);
        String::from_utf8(out.to_vec()).expect("UTF-8 event")
    }

    #[test]
    fn utf8_bodies_are_data_lines_and_others_base64() {
        assert_eq!(event(b"42", Format::Plain), "data: 42\n\n");
        assert_eq!(
            event(b"a\nb\r\nc\rd", Format::Plain),
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(event(b"", Format::Plain), "data: \n\n");
        assert_eq!(
            event(&[0xff, 0x00, 0x01], Format::Plain),
            "event: binary\ndata: /wAB\n\n"
        );
    }

    #[test]
    fn feed_messages_carry_their_epoch_and_offset_as_the_event_id() {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a")
            .header("x-offset", "7")
            .header("x-epoch", "e1")
            .body(Bytes::from_static(b"v"));
        let frame = OutFrame {
            bytes: stomp_protocol::encode(&frame, Version::V1_2),
            text: false,
            close: None,
        };
        let mut out = BytesMut::new();
        encode_event(&frame, Format::Plain, &mut out);
        assert_eq!(&out[..], b"id: e1:7\ndata: v\n\n");
    }

    /// The event as the parsing path writes it.
    fn parsed_event(frame: &OutFrame) -> BytesMut {
        let limits = own_frame_limits();
        let mut out = BytesMut::new();
        let length = stomp_protocol::check(&frame.bytes, &limits).expect("a whole frame");
        let message = stomp_protocol::parse(frame.bytes.slice(..length), Version::V1_2, &limits)
            .expect("a frame");
        if let (Some(epoch), Some(offset)) = (message.get("x-epoch"), message.get("x-offset")) {
            out.put_slice(format!("id: {epoch}:{offset}\n").as_bytes());
        }
        match std::str::from_utf8(&message.body) {
            Ok(text) => data_lines(text, &mut out),
            Err(_) => {
                use base64::Engine as _;
                out.put_slice(b"event: binary\n");
                let encoded = base64::engine::general_purpose::STANDARD.encode(&message.body);
                data_lines(&encoded, &mut out);
            }
        }
        out.put_slice(b"\n");
        out
    }

    #[test]
    fn the_direct_path_writes_what_the_parsing_path_writes() {
        let bodies: [&[u8]; 6] = [
            b"42",
            b"",
            b"a\nb\r\nc\rd",
            &[0xff, 0x00, 0x01],
            b"nul\0inside",
            "ünï".as_bytes(),
        ];
        for body in bodies {
            for feed in [false, true] {
                let mut frame = Frame::new(Command::Message)
                    .header("destination", "/topic/a:b\nc")
                    .header("message-id", "m-1");
                if feed {
                    frame = frame.header("x-offset", "7").header("x-epoch", "e1");
                }
                let frame = OutFrame {
                    bytes: stomp_protocol::encode(
                        &frame.body(Bytes::copy_from_slice(body)),
                        Version::V1_2,
                    ),
                    text: false,
                    close: None,
                };
                assert!(plain_parts(&frame.bytes).is_some(), "{:?}", frame.bytes);
                let mut out = BytesMut::new();
                encode_event(&frame, Format::Plain, &mut out);
                assert_eq!(out, parsed_event(&frame), "body {body:?}");
            }
        }
        // An escaped epoch (a colon in it) goes through the parser.
        let frame = Frame::new(Command::Message)
            .header("x-offset", "1")
            .header("x-epoch", "a:b")
            .body(Bytes::from_static(b"v"));
        let frame = OutFrame {
            bytes: stomp_protocol::encode(&frame, Version::V1_2),
            text: false,
            close: None,
        };
        assert!(plain_parts(&frame.bytes).is_none());
        let mut out = BytesMut::new();
        encode_event(&frame, Format::Plain, &mut out);
        assert_eq!(&out[..], b"id: a:b:1\ndata: v\n\n");
    }

    #[test]
    fn json_events_carry_destination_headers_and_body() {
        let text = event(b"x\ny", Format::Json);
        let line = text
            .strip_prefix("data: ")
            .and_then(|t| t.strip_suffix("\n\n"))
            .expect("one data line");
        let value: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(value["destination"], "/topic/a");
        assert_eq!(value["headers"]["message-id"], "m-1");
        assert_eq!(value["body"], "x\ny");
    }
}
