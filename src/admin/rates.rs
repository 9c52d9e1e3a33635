//! Server-side rates for `/api/overview`: the published and delivered
//! totals sampled once a second, and the rate over the last
//! [`WINDOW`] (so a client does not have to poll to get one).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The span rates are taken over.
pub const WINDOW: Duration = Duration::from_secs(10);

/// (when, published total, delivered total), oldest first; one sample at
/// least `WINDOW` old is kept so the window is whole.
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, u64, u64)>>,
}

impl Rates {
    /// Records the totals at `now`.
    pub fn record(&self, now: Instant, published: u64, delivered: u64) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.push_back((now, published, delivered));
        // Drop samples while the next one is itself a whole window old.
        while samples.len() > 2
            && samples
                .get(1)
                .is_some_and(|(at, _, _)| now.duration_since(*at) >= WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Published and delivered per second between the oldest and newest
    /// sample (zero before there are two).
    pub fn per_second(&self) -> (f64, f64) {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let (Some(first), Some(last)) = (samples.front(), samples.back()) else {
            return (0.0, 0.0);
        };
        let seconds = last.0.duration_since(first.0).as_secs_f64();
        if seconds <= 0.0 {
            return (0.0, 0.0);
        }
        (
            last.1.saturating_sub(first.1) as f64 / seconds,
            last.2.saturating_sub(first.2) as f64 / seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_last_window_only() {
        let rates = Rates::default();
        let start = Instant::now();
        // 100/s for 20 s, then 10/s for 10 s.
        let mut total = 0;
        for second in 0..=30u64 {
            rates.record(start + Duration::from_secs(second), total, total * 2);
            total += if second < 20 { 100 } else { 10 };
        }
        let (published, delivered) = rates.per_second();
        assert!((published - 10.0).abs() < 0.01, "{published}");
        assert!((delivered - 20.0).abs() < 0.01, "{delivered}");
    }
}
