//! A new subscription's snapshot: the retained values and history of every
//! matching destination with feed state, pushed by the router under the
//! index's write lock right after the insert (no publisher appends or
//! pushes meanwhile), so that snapshot and live stream meet with no gap and
//! no duplicate.

use super::encode::{encode_feed, Delivery, Stamp};
use super::feed::{pick, Picked};
use super::feeds::{Feeds, Words};
use super::start_at::StartAt;
use super::subscriber::Subscriber;
use crate::model::destination::{pattern_matches, PatternWord};
use crate::model::message::epoch_ms;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a new subscription's snapshot came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// For `offset=`: whether every missed message was delivered.
    pub recovered: Option<bool>,
}

impl Feeds {
    /// Pushes the snapshot of every destination matching `pattern` that has
    /// feed state to `subscriber`, as `start` asks. Called by the router
    /// under the index's write lock, right after inserting the subscription:
    /// no publisher appends or pushes meanwhile.
    pub(super) fn snapshot(
        &self,
        pattern: &[PatternWord],
        start: &StartAt,
        subscriber: &Subscriber,
    ) -> Snapshot {
        if matches!(start, StartAt::Next) || !self.active.load(Ordering::Acquire) {
            return Snapshot {
                recovered: matches!(start, StartAt::Offset { .. }).then_some(false),
            };
        }
        let now = epoch_ms();
        // (epoch, its messages) per destination, in name order.
        let mut found: Vec<(Words, Arc<str>, Picked)> = Vec::new();
        let mut recovered = None;
        let exact: Option<Vec<Box<str>>> = pattern
            .iter()
            .map(|word| match word {
                PatternWord::Exact(word) => Some(word.clone()),
                _ => None,
            })
            .collect();
        if let Some(words) = exact {
            let mut shard = self.shard(&words);
            if let Some(feed) = shard.get_mut(&words[..]) {
                self.expire(&words, feed, now);
                let (messages, was_recovered) = pick(feed, start, now);
                recovered = was_recovered;
                found.push((words.into(), feed.epoch.clone(), messages));
            } else if matches!(start, StartAt::Offset { .. }) {
                recovered = Some(false);
            }
        } else {
            if matches!(start, StartAt::Offset { .. }) {
                // Offsets are per destination: refused for wildcards by the
                // session; treated as `last` here should one arrive.
                recovered = Some(false);
            }
            for shard in self.shards.iter() {
                let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
                for (words, feed) in shard.iter_mut() {
                    let names: Vec<&str> = words.iter().map(|w| &**w).collect();
                    if !pattern_matches(pattern, &names) {
                        continue;
                    }
                    self.expire(words, feed, now);
                    let (messages, _) = pick(feed, start, now);
                    if !messages.is_empty() {
                        found.push((words.clone(), feed.epoch.clone(), messages));
                    }
                }
            }
            found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            found.truncate(self.max_snapshot_destinations);
        }
        let mut first = true;
        let messages = found.iter().flat_map(|(_, epoch, messages)| {
            messages
                .iter()
                .map(move |(message, offset, retained)| (epoch, message, *offset, *retained))
        });
        for (epoch, message, offset, retained) in messages {
            let mut extra: Vec<(&str, &str)> = Vec::new();
            if retained {
                extra.push(("x-retained", "true"));
            }
            if first {
                if let Some(recovered) = recovered {
                    extra.push(("x-recovered", if recovered { "true" } else { "false" }));
                }
            }
            first = false;
            let stamp = Stamp { offset, epoch };
            let frame = encode_feed(
                message,
                delivery(subscriber),
                subscriber.version,
                Some(stamp),
                &extra,
            );
            // A snapshot larger than the outbound budget cuts the
            // subscriber off like any slow consumer: its connection closes;
            // under `conflate` it is conflated like live traffic instead.
            let _ = if subscriber.conflate {
                let key = (subscriber.id.clone(), message.destination.as_str().into());
                subscriber.outbound.push_conflating(frame, key)
            } else {
                subscriber.outbound.push(frame)
            };
        }
        Snapshot { recovered }
    }
}

fn delivery(subscriber: &Subscriber) -> Delivery<'_> {
    Delivery {
        subscription: &subscriber.id,
        ack_id: None,
        previous_deliveries: 0,
    }
}
