//! Record encoding: keys in big-endian so that sled's order is queue order,
//! and values as STOMP frames, reusing the codec that is tested hardest.
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `queues` | queue id (u64 BE) | a frame whose headers hold the [`QueueDefinition`] (`name`, `x-message-ttl`, `x-max-length`, `dead-letter`, `binding`, `owner`; absent headers are `None`, so older records read unchanged) |
//! | `messages` | queue id, sequence (u64 BE each) | version byte, expiry (u64 BE, 0 = none), the MESSAGE frame |
//! | `deliveries` | as `messages` | deliveries (u32 BE) |

use super::{QueueDefinition, QueueId, Sequence, StoreError};
use crate::model::message::Message;
use bytes::{Bytes, BytesMut};
use stomp_protocol::{encode, Command, Decoder, Frame, Limits, Version};

const RECORD_VERSION: u8 = 1;

/// The key of a message (and of its delivery count).
pub fn message_key(queue: QueueId, sequence: Sequence) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&queue.to_be_bytes());
    key[8..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// Splits a message key.
pub fn split_message_key(key: &[u8]) -> Result<(QueueId, Sequence), StoreError> {
    let queue = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes);
    let sequence = key
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes);
    match (queue, sequence, key.len()) {
        (Some(q), Some(s), 16) => Ok((q, s)),
        _ => Err(corrupt("a message key is not 16 bytes")),
    }
}

/// Reads a queue key.
pub fn queue_id(key: &[u8]) -> Result<QueueId, StoreError> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a queue key is not 8 bytes"))
}

fn corrupt(what: &str) -> StoreError {
    StoreError(format!("corrupt store: {what}"))
}

fn decode_frame(bytes: &[u8]) -> Result<Frame, StoreError> {
    let limits = Limits {
        max_headers: 100_000,
        max_header_line_bytes: usize::MAX / 4,
        max_header_bytes: usize::MAX / 4,
        max_body_bytes: usize::MAX / 4,
        ..Limits::default()
    };
    let mut buffer = BytesMut::from(bytes);
    match Decoder::new(limits).decode(&mut buffer) {
        Ok(Some(frame)) if buffer.is_empty() => Ok(frame),
        Ok(_) => Err(corrupt("a record is not exactly one frame")),
        Err(error) => Err(corrupt(&format!("a record does not decode: {error}"))),
    }
}

/// Encodes a message record.
pub fn encode_message(message: &Message) -> Vec<u8> {
    let mut frame = Frame::new(Command::Message)
        .header("destination", message.destination.clone())
        .header("message-id", message.id.to_string());
    for (name, value) in &message.headers {
        frame.headers.push(name.clone(), value.clone());
    }
    frame.body = message.body.clone();
    let wire = encode(&frame, Version::V1_2);
    let mut record = Vec::with_capacity(9 + wire.len());
    record.push(RECORD_VERSION);
    record.extend_from_slice(&message.expires_at.unwrap_or(0).to_be_bytes());
    record.extend_from_slice(&wire);
    record
}

/// Decodes a message record.
pub fn decode_message(record: &[u8]) -> Result<Message, StoreError> {
    if record.first() != Some(&RECORD_VERSION) || record.len() < 9 {
        return Err(corrupt("a message record has an unknown version"));
    }
    let expires_at = record
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .unwrap_or(0);
    let frame = decode_frame(&record[9..])?;
    let mut headers = frame.headers.iter();
    let destination = headers.next().filter(|(n, _)| *n == "destination");
    let id = headers.next().filter(|(n, _)| *n == "message-id");
    let (Some((_, destination)), Some((_, id))) = (destination, id) else {
        return Err(corrupt("a message record lacks destination or message-id"));
    };
    let body: Bytes = frame.body.clone();
    Ok(Message {
        id: id.into(),
        destination: destination.to_owned(),
        headers: headers
            .filter(|(n, _)| *n != "content-length")
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
        text: std::str::from_utf8(&body).is_ok(),
        body,
        expires_at: (expires_at != 0).then_some(expires_at),
    })
}

/// The key of a live feed's kept message: destination, NUL, offset (so
/// that a destination's messages sort by offset).
pub fn feed_entry_key(destination: &str, offset: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(destination.len() + 9);
    key.extend_from_slice(destination.as_bytes());
    key.push(0);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

/// Splits a feed entry key into destination and offset.
pub fn split_feed_entry_key(key: &[u8]) -> Result<(String, u64), StoreError> {
    let split = key.len().checked_sub(9).filter(|at| key[*at] == 0);
    let Some(at) = split else {
        return Err(corrupt("a live-feed key is malformed"));
    };
    let destination = std::str::from_utf8(&key[..at])
        .map_err(|_| corrupt("a live-feed key is not UTF-8"))?
        .to_owned();
    let offset = key[at + 1..]
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a live-feed key is malformed"))?;
    Ok((destination, offset))
}

/// Encodes a live feed's kept message: when, whether in the history, the
/// message record.
pub fn encode_feed_entry(at_ms: u64, in_history: bool, message: &Message) -> Vec<u8> {
    let mut record = Vec::with_capacity(9 + message.size() + 64);
    record.extend_from_slice(&at_ms.to_be_bytes());
    record.push(u8::from(in_history));
    record.extend_from_slice(&encode_message(message));
    record
}

/// Decodes a live feed's kept message: (at_ms, in_history, message).
pub fn decode_feed_entry(record: &[u8]) -> Result<(u64, bool, Message), StoreError> {
    if record.len() < 9 {
        return Err(corrupt("a live-feed record is too short"));
    }
    let at_ms = record[..8]
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("a live-feed record is too short"))?;
    Ok((at_ms, record[8] == 1, decode_message(&record[9..])?))
}

/// Encodes a live feed's state: next offset, retained offset (0: none), epoch.
pub fn encode_feed_state(next_offset: u64, retained: Option<u64>, epoch: &str) -> Vec<u8> {
    let mut record = Vec::with_capacity(16 + epoch.len());
    record.extend_from_slice(&next_offset.to_be_bytes());
    record.extend_from_slice(&retained.unwrap_or(0).to_be_bytes());
    record.extend_from_slice(epoch.as_bytes());
    record
}

/// Decodes a live feed's state: (next offset, retained offset, epoch).
pub fn decode_feed_state(record: &[u8]) -> Result<(u64, Option<u64>, String), StoreError> {
    let number = |at: usize| {
        record
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| corrupt("a live-feed state is too short"))
    };
    let (next_offset, retained) = (number(0)?, number(8)?);
    let epoch = std::str::from_utf8(&record[16..])
        .map_err(|_| corrupt("a live-feed epoch is not UTF-8"))?
        .to_owned();
    Ok((next_offset, (retained != 0).then_some(retained), epoch))
}

/// Encodes a queue definition.
pub fn encode_definition(definition: &QueueDefinition) -> Vec<u8> {
    let mut frame = Frame::new(Command::Send).header("name", definition.name.clone());
    if let Some(ttl) = definition.message_ttl_ms {
        frame = frame.header("x-message-ttl", ttl.to_string());
    }
    if let Some(max) = definition.max_length {
        frame = frame.header("x-max-length", max.to_string());
    }
    if let Some(target) = &definition.dead_letter {
        frame = frame.header("dead-letter", target.clone());
    }
    if let Some(binding) = &definition.binding {
        frame = frame.header("binding", binding.clone());
    }
    if let Some(owner) = &definition.owner {
        frame = frame.header("owner", owner.clone());
    }
    encode(&frame, Version::V1_2).to_vec()
}

/// Decodes a queue definition.
pub fn decode_definition(record: &[u8]) -> Result<QueueDefinition, StoreError> {
    let frame = decode_frame(record)?;
    let number = |name: &str| -> Result<Option<u64>, StoreError> {
        frame
            .get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| corrupt("a queue definition has a bad number"))
            })
            .transpose()
    };
    Ok(QueueDefinition {
        name: frame
            .get("name")
            .ok_or_else(|| corrupt("a queue definition has no name"))?
            .to_owned(),
        message_ttl_ms: number("x-message-ttl")?,
        max_length: number("x-max-length")?,
        dead_letter: frame.get("dead-letter").map(str::to_owned),
        binding: frame.get("binding").map(str::to_owned),
        // Absent in records of older versions: read as "no owner yet".
        owner: frame.get("owner").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_records_round_trip() {
        let message = Message {
            id: "abc-1".into(),
            destination: "/queue/a".into(),
            headers: vec![("k".into(), "v:\n\\".into()), ("k".into(), "second".into())],
            body: Bytes::from_static(b"bin\0ary"),
            text: true,
            expires_at: Some(42),
        };
        let back = decode_message(&encode_message(&message)).expect("decodes");
        assert_eq!(back.id, message.id);
        assert_eq!(back.destination, message.destination);
        assert_eq!(back.headers, message.headers);
        assert_eq!(back.body, message.body);
        assert_eq!(back.expires_at, Some(42));
        assert!(decode_message(b"\x07garbage").is_err());
    }

    #[test]
    fn definitions_and_keys_round_trip() {
        let definition = QueueDefinition {
            name: "/durable/app/news".into(),
            message_ttl_ms: Some(5),
            max_length: None,
            dead_letter: Some("/queue/x".into()),
            binding: Some("/topic/news.#".into()),
            owner: Some("user:carol".into()),
        };
        assert_eq!(
            decode_definition(&encode_definition(&definition)),
            Ok(definition.clone())
        );
        // A record written before owners were stored still reads.
        let legacy = encode(
            &Frame::new(Command::Send)
                .header("name", "/durable/app/news")
                .header("binding", "/topic/news.#"),
            Version::V1_2,
        );
        assert_eq!(
            decode_definition(&legacy),
            Ok(QueueDefinition {
                name: definition.name,
                binding: definition.binding,
                ..QueueDefinition::default()
            })
        );
        assert_eq!(split_message_key(&message_key(7, 9)), Ok((7, 9)));
        assert!(
            message_key(1, u64::MAX) < message_key(2, 0),
            "queue order, then sequence order"
        );
    }
}
