//! Keeping a published message in its destination's feed: as its retained
//! value and in its history, as the feed's policy says, within
//! `max_history_bytes` over all feeds (the publishing destination's oldest
//! go first). Used for local publications (`feeds.rs`) and for messages
//! from the cluster engine's feed stream (`engine_feeds.rs`).

use super::feed::{Feed, Kept};
use super::feeds::Feeds;
use crate::model::message::Message;
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Feeds {
    /// Keeps `message`, numbered `offset`, in `feed` as its policy (and
    /// `retain`, its `x-retain`) asks, within `max_history_bytes`.
    pub(super) fn keep(
        &self,
        feed: &mut Feed,
        message: &Message,
        offset: u64,
        now: u64,
        retain: bool,
    ) {
        let keep = feed.policy.history > 0 || feed.policy.retain_last || retain;
        if keep {
            let kept = Kept {
                offset,
                at_ms: now,
                size: message.size(),
                message: Arc::new(kept_copy(message)),
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

/// A copy of `message` to keep, with a body of its own: a received body is
/// a slice of its connection's read buffer, which a kept slice would pin
/// (the whole buffer, not the bytes counted against `max_history_bytes`)
/// and make the connection allocate a new one for every read.
fn kept_copy(message: &Message) -> Message {
    Message {
        id: message.id.clone(),
        destination: message.destination.clone(),
        headers: message.headers.clone(),
        body: Bytes::copy_from_slice(&message.body),
        text: message.text,
        expires_at: message.expires_at,
    }
}
