//! Delivery accounting shared by the publish/subscribe scenarios (`fanout`,
//! `topics`, `publishers`): what a body carries, what each subscriber counts
//! (received, duplicates, per-publisher order violations, latency samples),
//! and the report made of all subscribers' counts.
//!
//! Every body starts with a [`Stamp`]: sequence number, send time and
//! publisher id in fixed-width decimal, so any broker passes it unchanged and
//! a subscriber needs no other state to account for it.

use crate::report::Report;
use crate::stats::{percentile, CpuUsed, ThreadsUsed};
use std::time::Duration;

/// Bytes of a [`Stamp`] at the start of every body.
pub const STAMP_BYTES: usize = 50;

/// What a publisher writes at the start of every body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// The publisher's own message counter, from 0.
    pub sequence: u64,
    /// Nanoseconds since the run's epoch when the message was sent.
    pub sent_ns: u64,
    /// Which publisher sent it (0 when there is one).
    pub publisher: u32,
}

impl Stamp {
    /// The body: the stamp, then `x` up to `body_bytes` in all.
    pub fn body(&self, body_bytes: usize) -> String {
        let padding = body_bytes.saturating_sub(STAMP_BYTES);
        format!(
            "{:020}{:020}{:010}{:x<padding$}",
            self.sequence, self.sent_ns, self.publisher, ""
        )
    }

    /// The stamp at the start of `body`, if there is a well-formed one.
    pub fn parse(body: &[u8]) -> Option<Stamp> {
        let number = |range: std::ops::Range<usize>| -> Option<u64> {
            std::str::from_utf8(body.get(range)?).ok()?.parse().ok()
        };
        Some(Stamp {
            sequence: number(0..20)?,
            sent_ns: number(20..40)?,
            publisher: u32::try_from(number(40..50)?).ok()?,
        })
    }
}

/// What one subscriber saw, counted per publisher.
pub struct Tally {
    /// Per publisher: which sequence numbers arrived (a bit each), allocated
    /// on the first message from that publisher.
    arrived: Vec<Vec<u64>>,
    /// Per publisher: the highest sequence number seen, plus one (0: none).
    next_after_highest: Vec<u64>,
    /// Messages per publisher, to size the bit sets and reject strays.
    messages: u64,
    /// Keep one latency in `sample_every`, so that big runs stay small in memory.
    sample_every: u64,
    /// Distinct wanted messages received.
    pub received: u64,
    /// Wanted messages this subscriber should receive.
    pub expected: u64,
    /// Messages received again, or not meant for this subscriber.
    pub duplicates: u64,
    /// Messages that arrived after a later one of the same publisher.
    pub order_violations: u64,
    /// Sampled latencies, microseconds.
    pub latencies_us: Vec<u32>,
    /// Bytes this subscriber received while counting (0: not measured),
    /// as [`Outcome::wire`] names them.
    pub wire_bytes: u64,
}

/// What [`Tally::record`] made of one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Recorded {
    /// A wanted message, first time.
    New,
    /// Seen before, or not wanted here.
    Duplicate,
}

impl Tally {
    /// A tally for `publishers` publishers of `messages` each, of which
    /// `expected` are meant for this subscriber; `expected_total` (over all
    /// subscribers) sets the latency sampling.
    pub fn new(publishers: usize, messages: u64, expected: u64, expected_total: u64) -> Tally {
        Tally {
            arrived: vec![Vec::new(); publishers],
            next_after_highest: vec![0; publishers],
            messages,
            sample_every: (expected_total / 2_000_000).max(1),
            received: 0,
            expected,
            duplicates: 0,
            order_violations: 0,
            latencies_us: Vec::new(),
            wire_bytes: 0,
        }
    }

    /// Accounts for one message; `wanted` says whether this subscriber
    /// should get it at all, `now_ns` is the receive time on the run's epoch.
    pub fn record(&mut self, stamp: Stamp, wanted: bool, now_ns: u64) -> Recorded {
        let publisher = stamp.publisher as usize;
        let (Some(bits), Some(highest)) = (
            self.arrived.get_mut(publisher),
            self.next_after_highest.get_mut(publisher),
        ) else {
            self.duplicates += 1;
            return Recorded::Duplicate;
        };
        if !wanted || stamp.sequence >= self.messages {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        if bits.is_empty() {
            bits.resize(self.messages.div_ceil(64) as usize, 0);
        }
        let (word, bit) = ((stamp.sequence / 64) as usize, stamp.sequence % 64);
        let Some(slot) = bits.get_mut(word) else {
            self.duplicates += 1;
            return Recorded::Duplicate;
        };
        if *slot & (1 << bit) != 0 {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        *slot |= 1 << bit;
        if stamp.sequence < *highest {
            self.order_violations += 1;
        }
        *highest = (*highest).max(stamp.sequence + 1);
        self.received += 1;
        if self.received.is_multiple_of(self.sample_every) {
            let us = now_ns.saturating_sub(stamp.sent_ns) / 1000;
            self.latencies_us.push(us.min(u64::from(u32::MAX)) as u32);
        }
        Recorded::New
    }

    /// The highest sequence number seen from `publisher`, plus one: how far
    /// that publisher's messages have come, for the publishers' window.
    pub fn progress(&self, publisher: usize) -> u64 {
        self.next_after_highest.get(publisher).copied().unwrap_or(0)
    }

    /// Whether everything expected has arrived.
    pub fn complete(&self) -> bool {
        self.received >= self.expected
    }
}

/// What a whole publish/subscribe run measured, turned into a report.
pub struct Outcome<'a> {
    /// First line: the scenario and its shape.
    pub title: String,
    /// Every subscriber's tally.
    pub tallies: &'a [Tally],
    /// What the subscribers' received bytes are (`wire_label`).
    pub wire: &'static str,
    /// Seconds from the first publish to the last delivery.
    pub elapsed: f64,
    /// Broker and tool CPU over the run.
    pub cpu: CpuUsed,
    /// The broker's threads over the run, when its pid is known.
    pub threads: Option<ThreadsUsed>,
}

impl Outcome<'_> {
    /// The report: deliveries/s, latency, lost, duplicates, order
    /// violations, CPU; any loss, duplicate or order violation is a problem.
    pub fn report(&self) -> Report {
        let sum = |f: fn(&Tally) -> u64| self.tallies.iter().map(f).sum::<u64>();
        let delivered = sum(|t| t.received);
        let expected = sum(|t| t.expected);
        let duplicates = sum(|t| t.duplicates);
        let order_violations = sum(|t| t.order_violations);
        let lost = expected.saturating_sub(delivered);
        let mut latencies: Vec<Duration> = self
            .tallies
            .iter()
            .flat_map(|t| t.latencies_us.iter())
            .map(|us| Duration::from_micros(u64::from(*us)))
            .collect();
        latencies.sort_unstable();
        let ms = |p: f64| percentile(&latencies, p).as_secs_f64() * 1e3;
        let (p50, p99, p999) = (ms(0.5), ms(0.99), ms(0.999));
        let elapsed = self.elapsed.max(1e-9);
        let mut report = Report::default();
        report.line(self.title.clone());
        report.line(format!(
            "delivered {delivered} of {expected} in {elapsed:.2} s: {:.0} deliveries/s | latency p50 {p50:.2} ms p99 {p99:.2} ms p999 {p999:.2} ms | lost {lost} | duplicates {duplicates} | order violations {order_violations}",
            delivered as f64 / elapsed,
        ));
        report.cpu(self.cpu, delivered as f64, "deliveries per broker CPU-s");
        let wire_bytes = sum(|t| t.wire_bytes);
        if wire_bytes > 0 && delivered > 0 {
            let per_delivery = wire_bytes as f64 / delivered as f64;
            report.line(format!(
                "{per_delivery:.1} {} received per delivery",
                self.wire
            ));
            report.figure("wire bytes per delivery", per_delivery);
        }
        if let Some(threads) = &self.threads {
            report.threads(threads);
        }
        report.figure("deliveries/s", delivered as f64 / elapsed);
        report.figure("p50 ms", p50);
        report.figure("p99 ms", p99);
        report.figure("p999 ms", p999);
        report.figure("lost", lost as f64);
        report.figure("duplicates", duplicates as f64);
        report.figure("order violations", order_violations as f64);
        if lost > 0 {
            report.problem(format!("{lost} deliveries lost"));
        }
        if duplicates > 0 {
            report.problem(format!("{duplicates} duplicate deliveries"));
        }
        if order_violations > 0 {
            report.problem(format!(
                "{order_violations} deliveries out of their publisher's order"
            ));
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_its_body() {
        let stamp = Stamp {
            sequence: 42,
            sent_ns: 123_456_789,
            publisher: 499,
        };
        let body = stamp.body(100);
        assert_eq!(body.len(), 100);
        assert_eq!(Stamp::parse(body.as_bytes()), Some(stamp));
        assert_eq!(Stamp::parse(b"short"), None);
    }

    #[test]
    fn duplicates_and_reordering_are_told_apart() {
        let mut tally = Tally::new(2, 10, 20, 20);
        let stamp = |publisher, sequence| Stamp {
            sequence,
            sent_ns: 0,
            publisher,
        };
        assert_eq!(tally.record(stamp(0, 0), true, 0), Recorded::New);
        assert_eq!(tally.record(stamp(0, 2), true, 0), Recorded::New);
        // Late but new: an order violation, not a duplicate.
        assert_eq!(tally.record(stamp(0, 1), true, 0), Recorded::New);
        assert_eq!(tally.record(stamp(0, 1), true, 0), Recorded::Duplicate);
        // Another publisher's order is its own.
        assert_eq!(tally.record(stamp(1, 0), true, 0), Recorded::New);
        // Unwanted, out of range, unknown publisher.
        assert_eq!(tally.record(stamp(1, 1), false, 0), Recorded::Duplicate);
        assert_eq!(tally.record(stamp(1, 10), true, 0), Recorded::Duplicate);
        assert_eq!(tally.record(stamp(7, 0), true, 0), Recorded::Duplicate);
        assert_eq!(
            (tally.received, tally.duplicates, tally.order_violations),
            (4, 4, 1)
        );
        assert_eq!(tally.progress(0), 3);
        assert!(!tally.complete());
    }
}
