//! The live-feed state of one destination (its epoch, next offset, kept
//! history and retained value) and which of its kept messages a
//! subscription's start asks for. The shards holding feeds are `feeds.rs`.

use super::start_at::StartAt;
use crate::model::message::Message;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// Snapshot messages, each with whether it is marked `x-retained`.
pub(super) type Picked = Vec<(Arc<Message>, bool)>;

/// A rule's policy, as a feed keeps it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub(super) history: usize,
    pub(super) history_age: Option<Duration>,
    pub(super) retain_last: bool,
}

/// One kept message.
#[derive(Debug, Clone)]
pub(super) struct Kept {
    pub(super) offset: u64,
    pub(super) at_ms: u64,
    /// Bytes counted against `max_history_bytes`.
    pub(super) size: usize,
    /// With its `x-offset` and `x-epoch` headers.
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
            .map(|kept| vec![(kept.message.clone(), true)])
            .unwrap_or_default()
    };
    let from = |first_offset: u64, first_ms: u64| -> Picked {
        feed.history
            .iter()
            .filter(|kept| kept.offset >= first_offset && kept.at_ms >= first_ms)
            .filter(live)
            .map(|kept| (kept.message.clone(), false))
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
            if **epoch == *feed.epoch && *offset >= oldest && *offset <= feed.next_offset {
                (from(*offset, 0), Some(true))
            } else {
                (last(), Some(false))
            }
        }
    }
}
