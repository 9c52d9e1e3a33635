//! A topic message as it travels between brokers: the NATS payload.
//!
//! Our own length-prefixed layout rather than NATS headers, which cannot
//! hold every STOMP header (names with `:`, values with line breaks):
//!
//! ```text
//! version (1 byte, 1)
//! id, destination: u32 length (big-endian) + UTF-8 bytes each
//! expires_at: 1 byte (0 none, 1 some) + u64 ms since the epoch
//! header count: u32, then per header: name and value as id is written
//! body: the rest
//! ```
//!
//! The broker-owned live-feed headers (`x-offset`, `x-epoch`) are left out:
//! each node numbers its own feeds.

use crate::model::message::Message;
use bytes::{Buf, BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
/// Headers the receiving node sets itself.
const NODE_OWNED: [&str; 2] = ["x-offset", "x-epoch"];

/// The payload for `message`.
pub fn encode(message: &Message) -> Bytes {
    let headers: Vec<&(String, String)> = message
        .headers
        .iter()
        .filter(|(name, _)| !NODE_OWNED.contains(&name.as_str()))
        .collect();
    let size = 1
        + 8
        + message.id.len()
        + message.destination.len()
        + 9
        + 4
        + headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum::<usize>()
        + message.body.len();
    let mut out = BytesMut::with_capacity(size);
    out.put_u8(VERSION);
    put_text(&mut out, &message.id);
    put_text(&mut out, &message.destination);
    match message.expires_at {
        Some(at) => {
            out.put_u8(1);
            out.put_u64(at);
        }
        None => {
            out.put_u8(0);
            out.put_u64(0);
        }
    }
    out.put_u32(u32::try_from(headers.len()).unwrap_or(u32::MAX));
    for (name, value) in headers {
        put_text(&mut out, name);
        put_text(&mut out, value);
    }
    out.put_slice(&message.body);
    out.freeze()
}

/// The message in `payload`; `None` if it is not one [`encode`] made.
pub fn decode(mut payload: Bytes) -> Option<Message> {
    if payload.try_get_u8().ok()? != VERSION {
        return None;
    }
    let id = take_text(&mut payload)?;
    let destination = take_text(&mut payload)?;
    let has_expiry = payload.try_get_u8().ok()?;
    let at = payload.try_get_u64().ok()?;
    let expires_at = match has_expiry {
        0 => None,
        1 => Some(at),
        _ => return None,
    };
    let count = payload.try_get_u32().ok()?;
    // Each header takes at least 8 bytes: a count beyond that is a lie,
    // and must not size an allocation.
    if usize::try_from(count).ok()? > payload.remaining() / 8 {
        return None;
    }
    let mut headers = Vec::with_capacity(usize::try_from(count).ok()?);
    for _ in 0..count {
        let name = take_text(&mut payload)?;
        let value = take_text(&mut payload)?;
        headers.push((name, value));
    }
    let text = std::str::from_utf8(&payload).is_ok();
    Some(Message {
        id: id.into(),
        destination,
        headers,
        body: payload,
        text,
        expires_at,
    })
}

fn put_text(out: &mut BytesMut, text: &str) {
    // Destinations, ids and headers are bounded far below 4 GiB by the
    // frame limits.
    out.put_u32(u32::try_from(text.len()).unwrap_or(u32::MAX));
    out.put_slice(text.as_bytes());
}

fn take_text(payload: &mut Bytes) -> Option<String> {
    let length = usize::try_from(payload.try_get_u32().ok()?).ok()?;
    if length > payload.remaining() {
        return None;
    }
    String::from_utf8(payload.split_to(length).to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "m-1".into(),
            destination: "/topic/a b.c".into(),
            headers: vec![
                ("x-offset".into(), "7".into()),
                ("we:ird".into(), "line\nbreak".into()),
                ("content-type".into(), "text/plain".into()),
            ],
            body: Bytes::from_static(b"\0binary\xff"),
            text: false,
            expires_at: Some(1_700_000_000_000),
        }
    }

    #[test]
    fn a_message_reads_back_without_the_node_owned_headers() {
        let decoded = decode(encode(&message())).expect("decodes");
        assert_eq!(&*decoded.id, "m-1");
        assert_eq!(decoded.destination, "/topic/a b.c");
        assert_eq!(
            decoded.headers,
            vec![
                ("we:ird".to_owned(), "line\nbreak".to_owned()),
                ("content-type".to_owned(), "text/plain".to_owned())
            ]
        );
        assert_eq!(&decoded.body[..], b"\0binary\xff");
        assert!(!decoded.text);
        assert_eq!(decoded.expires_at, Some(1_700_000_000_000));
    }

    #[test]
    fn every_cut_or_damaged_payload_is_refused_without_panicking() {
        let whole = encode(&message());
        for cut in 0..whole.len() - b"\0binary\xff".len() {
            assert!(decode(whole.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut lying = whole.to_vec();
        lying[0] = 9;
        assert!(decode(Bytes::from(lying)).is_none());
        let huge_count = [
            1u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
        ];
        assert!(decode(Bytes::copy_from_slice(&huge_count)).is_none());
    }
}
