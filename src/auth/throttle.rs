//! Slows down password guessing: a failed login from an address is answered
//! after a delay that doubles with each recent failure from that address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(600);
/// Most addresses remembered; past it the oldest half is forgotten.
const MAX_ADDRESSES: usize = 10_000;

/// Recent failures per address. Short critical sections only.
#[derive(Debug)]
pub struct FailureThrottle {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureThrottle {
    /// Delays start at `base` and stop growing at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        FailureThrottle {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure from `ip` and returns how long to wait before answering.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, last)| now.duration_since(*last) < MEMORY);
            if failures.len() >= MAX_ADDRESSES {
                let mut by_age: Vec<(IpAddr, Instant)> = failures
                    .iter()
                    .map(|(ip, (_, last))| (*ip, *last))
                    .collect();
                by_age.sort_by_key(|(_, last)| *last);
                for (old, _) in by_age.into_iter().take(MAX_ADDRESSES / 2) {
                    failures.remove(&old);
                }
            }
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= MEMORY {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let doublings = entry.0.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// A successful login clears the address's record.
    pub fn succeeded(&self, ip: IpAddr) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_per_failure_and_reset_on_success() {
        let throttle = FailureThrottle::new(Duration::from_millis(100), Duration::from_millis(350));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        assert_eq!(throttle.failed(ip), Duration::from_millis(100));
        assert_eq!(throttle.failed(ip), Duration::from_millis(200));
        assert_eq!(throttle.failed(ip), Duration::from_millis(350));
        throttle.succeeded(ip);
        assert_eq!(throttle.failed(ip), Duration::from_millis(100));
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(
            throttle.failed(other),
            Duration::from_millis(100),
            "per address"
        );
    }
}
