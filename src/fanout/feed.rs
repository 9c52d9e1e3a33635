//! The live-feed state of one destination (its epoch, next offset, kept
//! history and retained value) and which of its kept messages a
//! subscription's start asks for. The shards holding feeds are `feeds.rs`.

use super::encode::Stamp;
use super::start_at::StartAt;
use crate::model::message::Message;
use crate::store::{StoreOp, StoredFeed};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Snapshot messages, each with its offset and whether it is marked
/// `x-retained`.
pub(super) type Picked = Vec<(Arc<Message>, u64, bool)>;

/// A rule's policy, as a feed keeps it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub(super) history: usize,
    pub(super) history_age: Option<Duration>,
    pub(super) retain_last: bool,
    /// Kept through the store: publications go through the router.
    pub(super) persistent: bool,
}

/// One kept message.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) offset: u64,
    pub(super) at_ms: u64,
    /// Bytes counted against `max_history_bytes`.
    pub(super) size: usize,
    /// Without its `x-offset` and `x-epoch` headers: frames get them from
    /// `offset` and the feed's epoch ([`Stamp`]), so the publishing path
    /// makes no header strings for them.
    pub(super) message: Arc<Message>,
}

/// The feed state of one destination.
#[derive(Debug)]
pub(super) struct Feed {
    pub(super) epoch: Arc<str>,
    pub(super) next_offset: u64,
    pub(super) policy: Policy,
    /// Oldest first, offsets increasing.
    pub(super) history: VecDeque<Kept>,
    pub(super) retained: Option<Kept>,
    /// The highest offset of this destination no longer (or never) in
    /// `history`: every later one still is. 0 at first.
    pub(super) floor: u64,
    /// Offsets are the engine's stream sequences (a cluster): they
    /// increase, but not by one per message of this destination, so only
    /// `floor` tells whether a resume missed something.
    pub(super) gapped: bool,
}

/// The kept messages `start` asks of one feed, each with whether it is
/// marked `x-retained`, and for `offset=` whether nothing was missed.
pub(super) fn pick(feed: &Feed, start: &StartAt, now: u64) -> (Picked, Option<bool>) {
    let live = |kept: &&Kept| !kept.message.expired(now);
    let last = || -> Picked {
        feed.retained
            .as_ref()
            .or(feed.history.back())
            .filter(live)
            .map(|kept| vec![(kept.message.clone(), kept.offset, true)])
            .unwrap_or_default()
    };
    let from = |first_offset: u64, first_ms: u64| -> Picked {
        feed.history
            .iter()
            .filter(|kept| kept.offset >= first_offset && kept.at_ms >= first_ms)
            .filter(live)
            .map(|kept| (kept.message.clone(), kept.offset, false))
            .collect()
    };
    match start {
        StartAt::Next => (Vec::new(), None),
        StartAt::Default | StartAt::Last => (last(), None),
        StartAt::First if feed.history.is_empty() => (last(), None),
        StartAt::First => (from(0, 0), None),
        StartAt::Timestamp { at_ms } => (from(0, *at_ms), None),
        StartAt::Offset { offset, epoch } => {
            let oldest = feed.history.front().map_or(feed.next_offset, |k| k.offset);
            let kept = *offset > feed.floor && (feed.gapped || *offset >= oldest);
            if **epoch == *feed.epoch && kept && *offset <= feed.next_offset {
                (from(*offset, 0), Some(true))
            } else {
                (last(), Some(false))
            }
        }
    }
}

/// What a persistent feed kept before a publication: its history's offset
/// range and its retained offset.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeptView {
    history: Option<(u64, u64)>,
    retained: Option<u64>,
}

/// The two feed header names, which a stored kept message carries and a
/// kept message in memory does not.
pub const STAMP_HEADERS: [&str; 2] = ["x-offset", "x-epoch"];

/// Bytes the `x-offset` and `x-epoch` headers of `stamp` weigh against
/// `max_history_bytes`, as they did when kept messages carried them.
pub(super) fn stamp_size(stamp: Stamp) -> usize {
    let digits = stamp.offset.checked_ilog10().map_or(1, |d| d as usize + 1);
    STAMP_HEADERS[0].len() + digits + 2 + STAMP_HEADERS[1].len() + stamp.epoch.len() + 2
}

impl Feed {
    /// The place of the message numbered `offset` in this feed.
    pub(super) fn stamp_of(&self, offset: u64) -> Stamp<'_> {
        Stamp {
            offset,
            epoch: &self.epoch,
        }
    }

    /// Gives `message` its place in this feed as headers: the `x-offset`
    /// and `x-epoch` every MESSAGE of a feed carries. Only for a message
    /// that goes on past the fan-out (the router's subscribers, the store);
    /// fan-out frames are written from [`Feed::stamp_of`].
    pub(super) fn stamp(&self, message: &mut Message, offset: u64) {
        message
            .headers
            .push((STAMP_HEADERS[0].into(), offset.to_string()));
        message
            .headers
            .push((STAMP_HEADERS[1].into(), self.epoch.to_string()));
    }

    /// The offsets it keeps now. The history is always a contiguous range:
    /// every publication is appended, and only the oldest are dropped.
    pub(super) fn persistent_view(&self) -> KeptView {
        KeptView {
            history: self
                .history
                .front()
                .zip(self.history.back())
                .map(|(first, last)| (first.offset, last.offset)),
            retained: self.retained.as_ref().map(|k| k.offset),
        }
    }

    /// The store changes from `before` to now, after publication `offset`.
    pub(super) fn store_ops(
        &self,
        words: &[Box<str>],
        before: KeptView,
        offset: u64,
        now: u64,
    ) -> Vec<StoreOp> {
        let destination: Arc<str> = words.join(".").into();
        let after = self.persistent_view();
        let kept_after = |o: u64| {
            after.retained == Some(o) || after.history.is_some_and(|(a, b)| (a..=b).contains(&o))
        };
        let mut ops = Vec::new();
        let mut forget = |o: u64| {
            ops.push(StoreOp::FeedForget {
                destination: destination.clone(),
                offset: o,
            })
        };
        if let Some((first, last)) = before.history {
            (first..=last)
                .filter(|o| !kept_after(*o))
                .for_each(&mut forget);
        }
        let in_before_history = |o: u64| before.history.is_some_and(|(a, b)| (a..=b).contains(&o));
        if let Some(r) = before
            .retained
            .filter(|r| !kept_after(*r) && !in_before_history(*r))
        {
            forget(r);
        }
        let kept = self
            .history
            .back()
            .filter(|k| k.offset == offset)
            .map(|k| (k, true))
            .or_else(|| {
                self.retained
                    .as_ref()
                    .filter(|k| k.offset == offset)
                    .map(|k| (k, false))
            });
        if let Some((kept, in_history)) = kept {
            // Stored with its headers, as a frame of the feed shows it.
            let mut stamped = copy(&kept.message);
            self.stamp(&mut stamped, offset);
            ops.push(StoreOp::FeedPut {
                destination: destination.clone(),
                offset,
                at_ms: now,
                in_history,
                message: Arc::new(stamped),
            });
        }
        ops.push(StoreOp::FeedState {
            destination,
            epoch: self.epoch.clone(),
            next_offset: self.next_offset,
            retained: after.retained,
        });
        ops
    }

    /// A feed as the store kept it, under `policy`.
    pub(super) fn restore(stored: StoredFeed, policy: Policy) -> Feed {
        let mut history: VecDeque<Kept> = VecDeque::new();
        let mut retained = None;
        let epoch: Arc<str> = stored.epoch.into();
        for mut entry in stored.entries {
            // Kept in memory without the feed's headers (frames get them
            // from the offset and epoch).
            entry
                .message
                .headers
                .retain(|(name, _)| !STAMP_HEADERS.contains(&name.as_str()));
            let stamp = Stamp {
                offset: entry.offset,
                epoch: &epoch,
            };
            let kept = Kept {
                offset: entry.offset,
                at_ms: entry.at_ms,
                size: entry.message.size() + stamp_size(stamp),
                message: Arc::new(entry.message),
            };
            if stored.retained == Some(kept.offset) {
                retained = Some(kept.clone());
            }
            if entry.in_history {
                // Only a contiguous run is a history: an older entry kept
                // as the retained value is not part of it.
                if history.back().is_some_and(|k| k.offset + 1 != kept.offset) {
                    history.clear();
                }
                history.push_back(kept);
            }
        }
        while history.len() > policy.history {
            history.pop_front();
        }
        Feed {
            epoch,
            next_offset: stored.next_offset,
            policy,
            history,
            retained,
            floor: 0,
            gapped: false,
        }
    }
}

/// A copy sharing the body.
fn copy(message: &Message) -> Message {
    Message {
        id: message.id.clone(),
        destination: message.destination.clone(),
        headers: message.headers.clone(),
        body: message.body.clone(),
        text: message.text,
        expires_at: message.expires_at,
    }
}
