//! New connections per second per client address
//! (`rate_limits.connections_per_second_per_ip`): one token bucket per
//! address that connected recently.
//!
//! The table is bounded: a bucket that has refilled is the same as a new one
//! and is forgotten; if `MAX_ADDRESSES` addresses are still refilling at
//! once (a flood from many addresses), further addresses share one overflow
//! bucket instead of growing the table.

use crate::token_bucket::TokenBucket;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use tokio::time::Instant;

/// Most addresses with a bucket of their own.
const MAX_ADDRESSES: usize = 65_536;

/// The buckets, behind a lock held for a lookup only.
#[derive(Debug)]
pub struct ConnectionRate {
    /// Connections per second; zero: no limit.
    per_second: f64,
    burst: f64,
    table: Mutex<Table>,
}

#[derive(Debug)]
struct Table {
    buckets: HashMap<IpAddr, TokenBucket>,
    /// Shared by addresses that found the table full.
    overflow: Option<TokenBucket>,
    /// The table is swept of full buckets when it reaches this size, which
    /// doubles with what survives a sweep: sweeps cost O(1) per insertion.
    sweep_at: usize,
    /// The last sweep: at the cap, sweeps happen at most once a second.
    swept: Instant,
}

impl ConnectionRate {
    /// `per_second` zero turns the limit off.
    pub fn new(per_second: f64, burst: f64) -> Self {
        ConnectionRate {
            per_second,
            burst,
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: None,
                sweep_at: 1024,
                swept: Instant::now(),
            }),
        }
    }

    /// Counts a new connection from `ip`; `Err` with the refusal's text when
    /// that address is over its rate.
    pub fn admit(&self, ip: IpAddr) -> Result<(), String> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        // A poisoned lock only means a panic elsewhere; the buckets are plain.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let table = &mut *table;
        let at_cap = table.buckets.len() >= MAX_ADDRESSES;
        if !table.buckets.contains_key(&ip)
            && table.buckets.len() >= table.sweep_at
            && (!at_cap || now.saturating_duration_since(table.swept).as_secs() >= 1)
        {
            table.buckets.retain(|_, bucket| !bucket.is_full(now));
            table.sweep_at = (table.buckets.len() * 2).clamp(1024, MAX_ADDRESSES);
            table.swept = now;
        }
        let new_bucket = || TokenBucket::new(self.per_second, self.burst, now);
        let bucket = if table.buckets.contains_key(&ip) || table.buckets.len() < MAX_ADDRESSES {
            table.buckets.entry(ip).or_insert_with(new_bucket)
        } else {
            table.overflow.get_or_insert_with(new_bucket)
        };
        if bucket.try_take(1.0, now) {
            Ok(())
        } else {
            Err(format!(
                "too many new connections from {ip}: rate_limits.connections_per_second_per_ip is {} (burst {})",
                self.per_second, self.burst
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_burst() {
        let rate = ConnectionRate::new(0.001, 2.0);
        let one: IpAddr = "127.0.0.1".parse().expect("ip");
        let two: IpAddr = "127.0.0.2".parse().expect("ip");
        assert!(rate.admit(one).is_ok());
        assert!(rate.admit(one).is_ok());
        let refusal = rate.admit(one).unwrap_err();
        assert!(
            refusal.contains("connections_per_second_per_ip"),
            "{refusal}"
        );
        assert!(rate.admit(two).is_ok());
    }

    #[test]
    fn zero_is_no_limit() {
        let rate = ConnectionRate::new(0.0, 1.0);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        assert!((0..10_000).all(|_| rate.admit(ip).is_ok()));
    }

    #[test]
    fn the_table_stays_bounded() {
        let rate = ConnectionRate::new(0.001, 1.0);
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            let _ = rate.admit(IpAddr::from(i.to_be_bytes()));
        }
        let table = rate.table.lock().expect("lock");
        assert!(table.buckets.len() <= MAX_ADDRESSES);
        assert!(
            table.overflow.is_some(),
            "late addresses share the overflow bucket"
        );
    }
}
