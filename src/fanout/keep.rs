//! Keeping a published message in its destination's feed: as its retained
//! value and in its history, as the feed's policy says, within
//! `max_history_bytes` over all feeds (the publishing destination's oldest
//! go first). Used for local publications (`feeds.rs`) and for messages
//! from the cluster engine's feed stream (`engine_feeds.rs`).

use super::feed::{stamp_size, Feed, Kept};
use super::feeds::Feeds;
use crate::model::message::Message;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The most a frame a kept body is sliced from may hold besides the body:
/// the MESSAGE line, `destination`, `message-id`, `subscription`,
/// `content-length` and the feed headers, short.
const FRAME_SLACK: usize = 256;
/// The smallest body kept as a slice of its frame. The slice keeps the
/// frame's whole allocation (its unused capacity and the headers the kept
/// message holds again), which `max_history_bytes` does not count: against
/// a body this large that is a few percent; a smaller body is copied.
const SLICE_MIN: usize = 4096;

impl Feeds {
    /// Keeps `message` (without its feed headers), numbered `offset`, in
    /// `feed` as its policy (and `retain`, its `x-retain`) asks, within
    /// `max_history_bytes`. `frame` is a MESSAGE frame of it the fan-out
    /// encoded, if any: its body is kept as a slice of that.
    pub(super) fn keep(
        &self,
        feed: &mut Feed,
        message: &Message,
        frame: Option<&Bytes>,
        offset: u64,
        now: u64,
        retain: bool,
    ) {
        let keep = feed.policy.history > 0 || feed.policy.retain_last || retain;
        if keep {
            // As much as when kept messages carried the feed headers.
            let size = message.size() + stamp_size(feed.stamp_of(offset));
            // Sliced only where the frame holds little besides the body
            // (not a subscriber's long `subscription` id, nor many headers),
            // so that `max_history_bytes` stays about what is held.
            let frame = frame.filter(|frame| {
                message.body.len() >= SLICE_MIN && frame.len() <= message.body.len() + FRAME_SLACK
            });
            let kept = Kept {
                offset,
                at_ms: now,
                size,
                message: Arc::new(kept_copy(message, frame)),
            };
            if retain && message.body.is_empty() {
                // An empty x-retain deletes the retained value.
                self.forget(feed.retained.take());
            } else if retain || feed.policy.retain_last {
                self.kept_bytes.fetch_add(kept.size, Ordering::Relaxed);
                self.forget(feed.retained.replace(kept.clone()));
            }
            if feed.policy.history > 0 {
                self.kept_bytes.fetch_add(kept.size, Ordering::Relaxed);
                feed.history.push_back(kept);
                while feed.history.len() > feed.policy.history {
                    let oldest = feed.history.pop_front();
                    self.forget_oldest(feed, oldest);
                }
            }
            // Over the byte bound: this destination's oldest go first; what
            // still does not fit is not kept.
            while self.kept_bytes.load(Ordering::Relaxed) > self.max_history_bytes {
                if let Some(oldest) = feed.history.pop_front() {
                    self.forget_oldest(feed, Some(oldest));
                } else {
                    self.forget(feed.retained.take());
                    break;
                }
            }
        }
        if feed.history.back().is_none_or(|k| k.offset != offset) {
            // Not in the history: a resume from before it cannot be whole.
            feed.floor = feed.floor.max(offset);
        }
    }

    /// [`forget`](Self::forget) for a message leaving the front of `feed`'s
    /// history: offsets up to it are no longer all kept.
    pub(super) fn forget_oldest(&self, feed: &mut Feed, oldest: Option<Kept>) {
        if let Some(kept) = &oldest {
            feed.floor = feed.floor.max(kept.offset);
        }
        self.forget(oldest);
    }
}

/// A copy of `message` to keep, with a body that is not part of its
/// connection's read buffer: a kept slice of that would pin the whole
/// buffer (not the bytes counted against `max_history_bytes`) and make the
/// connection allocate a new one for every read. The body is a slice of
/// `frame`, an encoded MESSAGE of it (the frame's own allocation, about the
/// size counted; no copy), else a copy.
fn kept_copy(message: &Message, frame: Option<&Bytes>) -> Message {
    Message {
        id: message.id.clone(),
        destination: message.destination.clone(),
        headers: message.headers.clone(),
        body: frame
            .and_then(|frame| body_of(frame, &message.body))
            .unwrap_or_else(|| Bytes::copy_from_slice(&message.body)),
        text: message.text,
        expires_at: message.expires_at,
    }
}

/// `body` as a slice of `frame`, a MESSAGE frame that ends with it and a
/// NUL; None if it does not.
fn body_of(frame: &Bytes, body: &[u8]) -> Option<Bytes> {
    let end = frame.len().checked_sub(1)?;
    let start = end.checked_sub(body.len())?;
    (frame.get(start..end) == Some(body) && frame.get(end) == Some(&0))
        .then(|| frame.slice(start..end))
}

#[cfg(test)]
mod tests {
    use super::body_of;
    use crate::config::{Retain, TopicRule, TopicsConfig};
    use crate::fanout::encode::{encode_feed, Delivery};
    use crate::fanout::Feeds;
    use crate::model::destination::DestinationLimits;
    use crate::model::message::Message;
    use bytes::Bytes;
    use stomp_protocol::Version;

    #[test]
    fn a_kept_body_is_a_slice_of_its_frame_only_when_the_frame_ends_with_it() {
        let frame = Bytes::from_static(b"MESSAGE\ncontent-length:3\n\nabc\0");
        let body = body_of(&frame, b"abc").expect("the frame's body");
        assert_eq!(&body[..], b"abc");
        assert_eq!(body.as_ptr(), frame[frame.len() - 4..].as_ptr(), "shared");
        assert_eq!(body_of(&frame, b"abd"), None);
        assert_eq!(body_of(&frame, b"toolong-toolong-toolong-toolong"), None);
        assert_eq!(body_of(&Bytes::from_static(b"abc"), b"abc"), None);
        let empty = Bytes::from_static(b"MESSAGE\n\n\0");
        assert_eq!(body_of(&empty, b"").map(|b| b.len()), Some(0));
    }

    /// Whether the body kept for a message fanned out to a subscription
    /// named `subscription` lies inside the frame the fan-out encoded.
    fn kept_inside_frame(subscription: &str, body: usize) -> bool {
        let limits = DestinationLimits {
            max_words: 32,
            max_multi_word_wildcards: 4,
        };
        let config = TopicsConfig {
            rules: vec![TopicRule {
                pattern: "/topic/k.*".into(),
                history: 2,
                history_age: None,
                retain: Retain::None,
                persistent: false,
            }],
            ..TopicsConfig::default()
        };
        let feeds = Feeds::new(&config, &limits).expect("feeds");
        let words: Vec<Box<str>> = vec!["k".into(), "a".into()];
        let mut message = Message {
            id: "m1".into(),
            destination: "/topic/k.a".into(),
            headers: Vec::new(),
            body: Bytes::from(vec![b'x'; body]),
            text: true,
            expires_at: None,
        };
        let mut frame = Bytes::new();
        let policy = feeds.policy_for(&words);
        feeds.publish(&words, policy, &mut message, false, |message, stamp| {
            let delivery = Delivery {
                subscription,
                ack_id: None,
                previous_deliveries: 0,
            };
            frame = encode_feed(message, delivery, Version::V1_2, stamp, &[]).bytes;
            Some(frame.clone())
        });
        assert!(message.headers.is_empty(), "no header strings made");
        let shard = feeds.shard(&words);
        let kept = &shard.get(&words[..]).expect("a feed").history[0].message;
        assert_eq!(kept.body, message.body);
        assert!(kept.headers.is_empty(), "kept without x-offset, x-epoch");
        frame.as_ptr_range().contains(&kept.body.as_ptr())
    }

    #[test]
    fn a_kept_body_shares_the_frame_only_when_large_and_the_frame_is_not_much_larger() {
        assert!(kept_inside_frame("sub-0", 8192), "shared");
        assert!(
            !kept_inside_frame(&"s".repeat(200), 8192),
            "copied: long id"
        );
        assert!(!kept_inside_frame("sub-0", 100), "copied: small body");
        assert!(!kept_inside_frame("sub-0", 0), "copied: empty body");
    }
}
