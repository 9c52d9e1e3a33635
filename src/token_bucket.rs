//! A token bucket: the one rate-limiting primitive of the broker, used for
//! publish rates (per connection) and new connections (per address).
//!
//! Written here rather than taken from a crate (governor): the publish limit
//! needs amounts of any size (a 1 MiB SEND against a 100 KiB/s limit must
//! pass, then pay for itself by a longer pause) and a "debt" that says how
//! long to stop reading; governor's GCRA refuses amounts above the burst and
//! has no debt. This is 40 lines of arithmetic with tests.

use std::time::Duration;
use tokio::time::Instant;

/// `rate` tokens per second, holding at most `capacity`. Starts full.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    /// Below zero when [`TokenBucket::take`] overdrew it: the debt.
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` must be positive (config validation sees to it).
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Takes `amount` if the bucket holds it; an amount larger than the
    /// whole bucket passes when the bucket is full (and leaves a debt), so
    /// that nothing is refused for ever. `false` leaves the bucket as it was.
    pub fn try_take(&mut self, amount: f64, now: Instant) -> bool {
        self.refill(now);
        if self.tokens < amount.min(self.capacity) {
            return false;
        }
        self.tokens -= amount;
        true
    }

    /// Takes `amount`, overdrawing if need be, and returns how long until
    /// the bucket is out of debt again (zero if it is not in debt): how long
    /// the taker must wait to keep to the rate.
    pub fn take(&mut self, amount: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= amount;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // At most amount / rate: bounded by the largest frame and the
        // smallest configured rate, both validated.
        Duration::try_from_secs_f64(-self.tokens / self.rate).unwrap_or(Duration::MAX)
    }

    /// Whether the bucket has refilled completely: then it is no different
    /// from a new one and can be forgotten.
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0, start);
        assert!((0..3).all(|_| bucket.try_take(1.0, start)));
        assert!(!bucket.try_take(1.0, start), "burst spent");
        assert!(!bucket.try_take(1.0, after(start, 50)), "half a token");
        assert!(
            bucket.try_take(1.0, after(start, 100)),
            "one token per 100 ms"
        );
        assert!(!bucket.try_take(1.0, after(start, 150)));
        // Never more than the capacity, however long it rests.
        let later = after(start, 60_000);
        assert!(bucket.is_full(later));
        assert!((0..3).all(|_| bucket.try_take(1.0, later)));
        assert!(!bucket.try_take(1.0, later));
    }

    #[test]
    fn take_overdraws_and_says_how_long_to_wait() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(100.0, 100.0, start);
        assert_eq!(bucket.take(60.0, start), Duration::ZERO);
        // 40 left; 90 more is a debt of 50 at 100 per second: half a second.
        let wait = bucket.take(90.0, start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // After that wait the debt is paid, and the next take waits for itself only.
        let wait = bucket.take(10.0, after(start, 500));
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
    }

    #[test]
    fn an_amount_above_the_capacity_passes_from_a_full_bucket_only() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 10.0, start);
        assert!(bucket.try_take(25.0, start), "full: passes, leaves a debt");
        assert!(
            !bucket.try_take(25.0, after(start, 1000)),
            "debt of 15 + 10 refilled"
        );
        assert!(!bucket.is_full(after(start, 2400)));
        assert!(
            bucket.try_take(25.0, after(start, 2500)),
            "full again after 2.5 s"
        );
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let start = after(Instant::now(), 1000);
        let mut bucket = TokenBucket::new(10.0, 1.0, start);
        assert!(bucket.try_take(1.0, start));
        assert!(!bucket.try_take(1.0, after(start, 0) - Duration::from_millis(500)));
    }
}
