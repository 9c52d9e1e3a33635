//! Log lines a flood could multiply (failed logins, permission denials,
//! connects and disconnects) are written at most so many a second; the rest
//! are only counted, so that a flood cannot fill the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// At most `per_second` lines in each whole second since `started`.
#[derive(Debug)]
pub struct LogBudget {
    started: Instant,
    per_second: u64,
    /// The second the lines count in, and how many were written in it.
    second: AtomicU64,
    in_second: AtomicU64,
}

impl LogBudget {
    /// A budget of `per_second` lines a second.
    pub fn new(per_second: u64) -> LogBudget {
        LogBudget {
            started: Instant::now(),
            per_second,
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
        }
    }

    /// Whether one more line may be written now. Two threads crossing a
    /// second boundary may let a line or two more through: a bound, not
    /// an exact count.
    pub fn allow(&self) -> bool {
        let second = self.started.elapsed().as_secs();
        if self.second.swap(second, Ordering::Relaxed) != second {
            self.in_second.store(0, Ordering::Relaxed);
        }
        self.in_second.fetch_add(1, Ordering::Relaxed) < self.per_second
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_the_budget() {
        let budget = LogBudget::new(3);
        let allowed = (0..100).filter(|_| budget.allow()).count();
        // Unless the burst straddled a second boundary.
        assert!((3..=6).contains(&allowed), "{allowed}");
    }
}
