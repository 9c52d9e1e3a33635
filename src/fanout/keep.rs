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
            let kept = Kept {
                offset,
                at_ms: now,
                // As much as when kept messages carried the feed headers.
                size: message.size() + stamp_size(feed.stamp_of(offset)),
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
    use bytes::Bytes;

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
}
