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
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_slice(b"\n");
    }
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
