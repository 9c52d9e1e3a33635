//! Keeps password guessing slow and fair.
//!
//! - One check in flight per address: while one login from an address is
//!   waiting or being verified, further ones from it are refused at once, so
//!   a flood from one address holds at most one of the few verification slots
//!   and everyone else's logins stay fast.
//! - Back-off before verifying: after failures, the next check of that
//!   (address, login) waits `base` doubled per failure (up to `max`), and
//!   every check from that address waits `base` doubled per four failures
//!   from it after the fourth (spraying many logins). Waiting happens before
//!   the verification, so throttled guesses cost no argon2 time at all.
//! - A success clears only its own (address, login) record: bob logging in
//!   does not reset the back-off on guesses at alice's password.
//!
//! IPv6 addresses count per /64 (one host usually has a whole /64). Every
//! table is bounded: records idle for `MEMORY` are forgotten, and past
//! `MAX_RECORDS` the oldest half goes.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures older than this are forgotten.
const MEMORY: Duration = Duration::from_secs(600);
/// Most records per table; past it expired ones, then the oldest half, go.
const MAX_RECORDS: usize = 10_000;
/// Failures from one address per doubling of its own delay.
const ADDRESS_FAILURES_PER_DOUBLING: u32 = 4;

/// Recent failures of one key.
#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// The last failure.
    last: Instant,
    /// No check for this key before then.
    not_before: Instant,
}

/// Records by key, bounded.
#[derive(Debug)]
struct Table<K>(HashMap<K, Record>);

impl<K: Hash + Eq + Copy> Table<K> {
    fn new() -> Self {
        Table(HashMap::new())
    }

    /// Counts a failure; `delay(failures)` says how long the key then waits.
    fn failed(&mut self, key: K, now: Instant, delay: impl Fn(u32) -> Duration) {
        if self.0.len() >= MAX_RECORDS && !self.0.contains_key(&key) {
            self.0
                .retain(|_, record| now.duration_since(record.last) < MEMORY);
            if self.0.len() >= MAX_RECORDS {
                let mut by_age: Vec<(K, Instant)> =
                    self.0.iter().map(|(key, r)| (*key, r.last)).collect();
                by_age.sort_by_key(|(_, last)| *last);
                for (old, _) in by_age.into_iter().take(MAX_RECORDS / 2) {
                    self.0.remove(&old);
                }
            }
        }
        let record = self.0.entry(key).or_insert(Record {
            failures: 0,
            last: now,
            not_before: now,
        });
        if now.duration_since(record.last) >= MEMORY {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        record.not_before = now + delay(record.failures);
    }

    fn not_before(&self, key: &K, now: Instant) -> Option<Instant> {
        self.0
            .get(key)
            .filter(|record| now.duration_since(record.last) < MEMORY)
            .map(|record| record.not_before)
    }
}

/// Password-check throttling, shared by all sessions. Short critical
/// sections only; no lock is held across an await.
#[derive(Debug)]
pub struct LoginThrottle {
    base: Duration,
    max: Duration,
    /// Per (address, hash of the login): the login is client-chosen and up
    /// to a header line long, so only a keyed 64-bit hash of it is kept.
    per_login: Mutex<Table<(IpAddr, u64)>>,
    per_address: Mutex<Table<IpAddr>>,
    /// Addresses with a check in flight; an entry lives as long as its
    /// [`Turn`], so the set is bounded by the connections being served.
    in_flight: Mutex<HashSet<IpAddr>>,
    login_hasher: RandomState,
}

/// An address's one check in flight; dropping it lets the next one in.
#[derive(Debug)]
pub struct Turn<'a> {
    throttle: &'a LoginThrottle,
    address: IpAddr,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.throttle.in_flight).remove(&self.address);
    }
}

/// A poisoned lock still guards consistent data here (plain inserts and removes).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The unit of "one address": IPv4 (and IPv4-mapped) as is, IPv6 per /64.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let masked = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(masked.into())
        }
        v4 => v4,
    }
}

impl LoginThrottle {
    /// Delays start at `base` and stop growing at `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        LoginThrottle {
            base,
            max,
            per_login: Mutex::new(Table::new()),
            per_address: Mutex::new(Table::new()),
            in_flight: Mutex::new(HashSet::new()),
            login_hasher: RandomState::new(),
        }
    }

    fn doubled(&self, doublings: u32) -> Duration {
        self.base
            .saturating_mul(1 << doublings.min(16))
            .min(self.max)
    }

    fn login_key(&self, ip: IpAddr, login: &str) -> (IpAddr, u64) {
        (address_key(ip), self.login_hasher.hash_one(login))
    }

    /// The address's turn to have a check, or `None` while another check
    /// from it is in flight.
    pub fn turn(&self, ip: IpAddr) -> Option<Turn<'_>> {
        let address = address_key(ip);
        // The guard is dropped before a Turn exists: a Turn's drop locks too.
        let inserted = lock(&self.in_flight).insert(address);
        inserted.then(|| Turn {
            throttle: self,
            address,
        })
    }

    /// When a check of `login` from `ip` may run (`None`: now).
    pub fn not_before(&self, ip: IpAddr, login: &str) -> Option<Instant> {
        let now = Instant::now();
        let by_login = lock(&self.per_login).not_before(&self.login_key(ip, login), now);
        let by_address = lock(&self.per_address).not_before(&address_key(ip), now);
        by_login.max(by_address).filter(|at| *at > now)
    }

    /// Records a failed check of `login` from `ip`.
    pub fn failed(&self, ip: IpAddr, login: &str) {
        let now = Instant::now();
        lock(&self.per_login).failed(self.login_key(ip, login), now, |failures| {
            self.doubled(failures - 1)
        });
        lock(&self.per_address).failed(address_key(ip), now, |failures| {
            if failures < ADDRESS_FAILURES_PER_DOUBLING {
                Duration::ZERO
            } else {
                self.doubled(failures / ADDRESS_FAILURES_PER_DOUBLING - 1)
            }
        });
    }

    /// A successful login clears its own (address, login) record only.
    pub fn succeeded(&self, ip: IpAddr, login: &str) {
        lock(&self.per_login).0.remove(&self.login_key(ip, login));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(throttle: &LoginThrottle, ip: IpAddr, login: &str) -> Duration {
        throttle
            .not_before(ip, login)
            .map_or(Duration::ZERO, |at| at - Instant::now())
    }

    #[test]
    fn delays_double_per_login_and_per_address_and_success_clears_its_own() {
        let throttle = LoginThrottle::new(Duration::from_secs(10), Duration::from_secs(35));
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        throttle.failed(ip, "alice");
        assert!(wait(&throttle, ip, "alice") > Duration::from_secs(9));
        assert_eq!(wait(&throttle, ip, "bob"), Duration::ZERO, "3 more to go");
        throttle.failed(ip, "alice");
        assert!(wait(&throttle, ip, "alice") > Duration::from_secs(19));
        throttle.failed(ip, "alice");
        throttle.failed(ip, "alice");
        assert!(
            wait(&throttle, ip, "alice") > Duration::from_secs(34),
            "capped"
        );
        assert!(wait(&throttle, ip, "alice") <= Duration::from_secs(35));
        let by_address = wait(&throttle, ip, "bob");
        assert!(by_address > Duration::from_secs(9) && by_address <= Duration::from_secs(10));
        throttle.succeeded(ip, "bob");
        assert!(
            wait(&throttle, ip, "alice") > Duration::from_secs(34),
            "bob's success leaves alice's back-off"
        );
        let other: IpAddr = "10.0.0.2".parse().expect("ip");
        assert_eq!(wait(&throttle, other, "alice"), Duration::ZERO);
    }

    #[test]
    fn one_turn_per_address_and_ipv6_counts_per_64() {
        let throttle = LoginThrottle::new(Duration::ZERO, Duration::ZERO);
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        let turn = throttle.turn(a).expect("first");
        assert!(throttle.turn(b).is_none(), "same /64");
        assert!(throttle.turn(c).is_some(), "another /64");
        drop(turn);
        assert!(throttle.turn(b).is_some());
    }

    #[test]
    fn tables_stay_bounded() {
        let throttle = LoginThrottle::new(Duration::from_millis(1), Duration::from_millis(1));
        for n in 0..(MAX_RECORDS as u32 + 10) {
            throttle.failed(IpAddr::from(n.to_be_bytes()), "x");
        }
        assert!(lock(&throttle.per_login).0.len() <= MAX_RECORDS);
        assert!(lock(&throttle.per_address).0.len() <= MAX_RECORDS);
    }
}
