//! The outbound queue's pending frames, each with a sequence number, and the
//! conflation index (subscription and destination → queued slot) that the
//! `conflate` slow-consumer policy replaces messages through.

use super::OutFrame;
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Which queued MESSAGE a conflating push may replace: the subscription
/// `id` and the destination.
pub type ConflationKey = (Arc<str>, Box<str>);

/// One queued frame: whether it may be dropped under pressure, and its
/// sequence number (increasing along the deque, so a slot is found by
/// binary search even after drops from the middle).
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) frame: OutFrame,
    pub(super) droppable: bool,
    pub(super) sequence: u64,
}

/// A conflating subscription's latest queued MESSAGE for one destination,
/// and how many it has replaced so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) sequence: u64,
    pub(super) conflated: u64,
}

/// Frames waiting, and the conflation index.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) frames: VecDeque<Queued>,
    next_sequence: u64,
    /// Conflation: (subscription, destination) → its queued slot. Entries
    /// whose frame has been taken are stale and pruned as the map grows.
    pub(super) slots: HashMap<ConflationKey, Slot>,
}

impl Pending {
    pub(super) fn push_back(&mut self, frame: OutFrame, droppable: bool) -> u64 {
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.frames.push_back(Queued {
            frame,
            droppable,
            sequence,
        });
        sequence
    }

    pub(super) fn position(&self, sequence: u64) -> Option<usize> {
        self.frames
            .binary_search_by_key(&sequence, |queued| queued.sequence)
            .ok()
    }

    /// Drops index entries whose frame has gone, once the map has outgrown
    /// the queue: memory stays bounded by the destinations still queued.
    pub(super) fn prune_slots(&mut self) {
        if self.slots.len() > 2 * self.frames.len() + 64 {
            let first = self.frames.front().map_or(u64::MAX, |q| q.sequence);
            self.slots.retain(|_, slot| slot.sequence >= first);
        }
    }
}

/// `frame` (an encoded MESSAGE) with `x-conflated:<count>` after its command line.
pub(super) fn with_conflated_header(frame: &OutFrame, count: u64) -> OutFrame {
    let bytes = &frame.bytes;
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |at| at + 1);
    let header = format!("x-conflated:{count}\n");
    let mut out = Vec::with_capacity(bytes.len() + header.len());
    out.extend_from_slice(&bytes[..split]);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&bytes[split..]);
    OutFrame {
        bytes: Bytes::from(out),
        text: frame.text,
        close: None,
    }
}
