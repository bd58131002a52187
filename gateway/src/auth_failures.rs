//! Failed authentications: a per-address throttle (too many failures → 429 before the key is even
//! hashed) and the counts that become one `auth.failures_counted` event per interval instead of
//! one event per failure. Only the failure path takes a lock; a request from a client that never
//! failed costs one atomic load while no address is being tracked.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use schemas::AuthFailuresCounted;

/// Failures allowed per address and window before the address gets 429: enough for a person
/// trying a few keys or a client retrying with a stale one, far too few to guess a key.
pub const DEFAULT_FAILURE_LIMIT: u32 = 20;
/// The throttle's window; the 429's `Retry-After` is the rest of it.
pub const DEFAULT_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How often the counts are appended (when there were any).
pub const DEFAULT_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// Addresses tracked at most (~100 bytes each: ~10 MB). Beyond it, a new address is not
/// throttled until expired entries make room; it is still counted.
pub const DEFAULT_MAX_ADDRESSES: usize = 100_000;
/// Table shards, so concurrent failures from different addresses rarely wait on one lock.
const SHARDS: usize = 16;
/// Key prefixes kept per interval (a sample for the operator, not a record of every attempt).
const SAMPLE_PREFIXES: usize = 10;
/// Throttled addresses named per interval.
const SAMPLE_ADDRESSES: usize = 10;
/// Distinct addresses are counted up to this many per interval.
const MAX_DISTINCT: usize = 10_000;
/// Characters of a presented key kept in the sample, at most (and never more than half of it).
const PREFIX_CHARS: usize = 8;

/// Why an authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No key in any header the route accepts.
    Missing,
    /// Not text, not `Bearer`, empty or too long.
    Malformed,
    /// Well formed, but no such key.
    Unknown,
    /// A revoked key.
    Revoked,
    /// A key past its expiry.
    Expired,
}

/// A failed authentication: why, and a short prefix of what was presented.
#[derive(Debug)]
pub struct Failure {
    /// Why.
    pub reason: Reason,
    /// At most [`PREFIX_CHARS`] characters and never more than half of the presented key.
    pub prefix: Option<String>,
}

impl Failure {
    /// A failure without a key to sample.
    pub fn bare(reason: Reason) -> Self {
        Failure { reason, prefix: None }
    }

    /// A failure of the presented `key`, keeping only a short prefix of it.
    pub fn of(reason: Reason, key: &str) -> Self {
        let n = (key.chars().count() / 2).min(PREFIX_CHARS);
        let prefix: String = key
            .chars()
            .take(n)
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '?' })
            .collect();
        Failure { reason, prefix: (!prefix.is_empty()).then_some(prefix) }
    }
}

/// Settings of the throttle.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures per window before 429.
    pub limit: u32,
    /// The window.
    pub window: Duration,
    /// Addresses tracked at most.
    pub max_addresses: usize,
}

/// An address as the throttle sees it: IPv4 as is, IPv6 by its /64 (one host usually has a whole
/// /64, so single IPv6 addresses would be free to rotate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Addr(u128);

impl Addr {
    fn of(ip: IpAddr) -> Addr {
        match ip {
            IpAddr::V4(v4) => Addr(u128::from(v4.to_ipv6_mapped())),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Addr(u128::from(v4.to_ipv6_mapped())),
                None => Addr(u128::from(v6) & !((1u128 << 64) - 1)),
            },
        }
    }

    fn shard(self) -> usize {
        let x = (self.0 as u64) ^ ((self.0 >> 64) as u64);
        (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % SHARDS
    }

    fn display(self) -> String {
        let v6 = std::net::Ipv6Addr::from(self.0);
        match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{v6}/64"),
        }
    }
}

struct Entry {
    window_start: Instant,
    failures: u32,
}

/// Counts since the last report.
#[derive(Default)]
struct Interval {
    missing: u64,
    malformed: u64,
    unknown: u64,
    revoked: u64,
    expired: u64,
    throttled: u64,
    addresses: HashSet<Addr>,
    prefixes: Vec<String>,
    throttled_addresses: Vec<Addr>,
}

impl Interval {
    fn is_empty(&self) -> bool {
        self.missing + self.malformed + self.unknown + self.revoked + self.expired + self.throttled == 0
    }

    fn saw(&mut self, addr: Option<Addr>) {
        if let Some(a) = addr
            && self.addresses.len() < MAX_DISTINCT
        {
            self.addresses.insert(a);
        }
    }
}

/// The throttle table and the interval's counts.
pub struct AuthFailures {
    limits: Limits,
    shards: [Mutex<HashMap<Addr, Entry>>; SHARDS],
    tracked: AtomicUsize,
    interval: Mutex<(Instant, Interval)>,
}

impl AuthFailures {
    /// An empty table.
    pub fn new(limits: Limits) -> Self {
        AuthFailures {
            limits,
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            tracked: AtomicUsize::new(0),
            interval: Mutex::new((Instant::now(), Interval::default())),
        }
    }

    /// `Some(seconds to wait)` when `ip` has failed too often in the current window. Counted as a
    /// throttled request.
    pub fn throttled(&self, ip: Option<IpAddr>) -> Option<u64> {
        let ip = ip?;
        if self.tracked.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let addr = Addr::of(ip);
        let now = Instant::now();
        let retry_after = {
            let shard = self.shards[addr.shard()].lock().ok()?;
            let e = shard.get(&addr)?;
            let ends = e.window_start + self.limits.window;
            if e.failures < self.limits.limit || now >= ends {
                return None;
            }
            (ends - now).as_secs_f64().ceil().max(1.0) as u64
        };
        if let Ok(mut guard) = self.interval.lock() {
            let i = &mut guard.1;
            i.throttled += 1;
            i.saw(Some(addr));
            if i.throttled_addresses.len() < SAMPLE_ADDRESSES && !i.throttled_addresses.contains(&addr) {
                i.throttled_addresses.push(addr);
            }
        }
        Some(retry_after)
    }

    /// Counts a failed authentication from `ip`.
    pub fn record(&self, ip: Option<IpAddr>, failure: Failure) {
        let addr = ip.map(Addr::of);
        if let Some(addr) = addr {
            self.count_against(addr, Instant::now());
        }
        if let Ok(mut guard) = self.interval.lock() {
            let i = &mut guard.1;
            match failure.reason {
                Reason::Missing => i.missing += 1,
                Reason::Malformed => i.malformed += 1,
                Reason::Unknown => i.unknown += 1,
                Reason::Revoked => i.revoked += 1,
                Reason::Expired => i.expired += 1,
            }
            i.saw(addr);
            if let Some(p) = failure.prefix
                && i.prefixes.len() < SAMPLE_PREFIXES
                && !i.prefixes.contains(&p)
            {
                i.prefixes.push(p);
            }
        }
    }

    fn count_against(&self, addr: Addr, now: Instant) {
        let Ok(mut shard) = self.shards[addr.shard()].lock() else { return };
        let per_shard = (self.limits.max_addresses / SHARDS).max(1);
        if !shard.contains_key(&addr) && shard.len() >= per_shard {
            let removed = prune(&mut shard, self.limits.window, now);
            self.tracked.fetch_sub(removed, Ordering::Relaxed);
            if shard.len() >= per_shard {
                return;
            }
        }
        let entry = shard.entry(addr).or_insert_with(|| {
            self.tracked.fetch_add(1, Ordering::Relaxed);
            Entry { window_start: now, failures: 0 }
        });
        if now.duration_since(entry.window_start) >= self.limits.window {
            *entry = Entry { window_start: now, failures: 0 };
        }
        entry.failures = entry.failures.saturating_add(1);
    }

    /// Drops addresses whose window has passed, so the table and the fast path's counter shrink
    /// back once an attack stops.
    pub fn prune(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            if let Ok(mut shard) = shard.lock() {
                let removed = prune(&mut shard, self.limits.window, now);
                self.tracked.fetch_sub(removed, Ordering::Relaxed);
            }
        }
    }

    /// The counts since the last call, as an event body (`None` when there were none), and starts
    /// a new interval. `now_us` is the wall-clock end of the interval.
    pub fn take_report(&self, now_us: i64) -> Option<AuthFailuresCounted> {
        let (started, i) = {
            let mut guard = self.interval.lock().ok()?;
            std::mem::replace(&mut *guard, (Instant::now(), Interval::default()))
        };
        if i.is_empty() {
            return None;
        }
        let span = i64::try_from(started.elapsed().as_micros()).unwrap_or(i64::MAX);
        Some(AuthFailuresCounted {
            from_us: now_us.saturating_sub(span),
            to_us: now_us,
            missing: i.missing,
            malformed: i.malformed,
            unknown: i.unknown,
            revoked: i.revoked,
            expired: i.expired,
            throttled: i.throttled,
            distinct_addresses: i.addresses.len() as u64,
            key_prefixes: i.prefixes,
            throttled_addresses: i.throttled_addresses.into_iter().map(Addr::display).collect(),
        })
    }
}

fn prune(shard: &mut HashMap<Addr, Entry>, window: Duration, now: Instant) -> usize {
    let before = shard.len();
    shard.retain(|_, e| now.duration_since(e.window_start) < window);
    before - shard.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(limit: u32) -> AuthFailures {
        AuthFailures::new(Limits { limit, window: Duration::from_secs(60), max_addresses: 1000 })
    }

    #[test]
    fn an_address_is_throttled_after_the_limit_and_others_are_not() {
        let t = table(3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        for _ in 0..2 {
            t.record(Some(a), Failure::bare(Reason::Unknown));
        }
        assert_eq!(t.throttled(Some(a)), None);
        t.record(Some(a), Failure::bare(Reason::Unknown));
        assert!(t.throttled(Some(a)).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(t.throttled(Some(b)), None);
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_an_entry() -> anyhow::Result<()> {
        let t = table(2);
        let a: IpAddr = "2001:db8::1".parse()?;
        let b: IpAddr = "2001:db8::2".parse()?;
        let elsewhere: IpAddr = "2001:db8:0:1::1".parse()?;
        t.record(Some(a), Failure::bare(Reason::Missing));
        t.record(Some(b), Failure::bare(Reason::Missing));
        assert!(t.throttled(Some(a)).is_some());
        assert!(t.throttled(Some(elsewhere)).is_none());
        Ok(())
    }

    #[test]
    fn the_table_stays_within_its_bound() {
        let t = AuthFailures::new(Limits { limit: 1, window: Duration::from_secs(60), max_addresses: 64 });
        for i in 0..10_000u32 {
            t.record(Some(IpAddr::from(i.to_be_bytes())), Failure::bare(Reason::Unknown));
        }
        assert!(t.tracked.load(Ordering::Relaxed) <= 64);
    }

    #[test]
    fn a_report_samples_short_prefixes_and_never_a_whole_key() -> anyhow::Result<()> {
        let t = table(100);
        t.record(None, Failure::of(Reason::Unknown, "sk-abcdefghijklmnopqrstuvwxyz0123456789"));
        t.record(None, Failure::of(Reason::Unknown, "abcd"));
        t.record(None, Failure::bare(Reason::Missing));
        let r = t.take_report(1_000_000).ok_or_else(|| anyhow::anyhow!("no report"))?;
        assert_eq!((r.unknown, r.missing), (2, 1));
        assert_eq!(r.key_prefixes, vec!["sk-abcde".to_owned(), "ab".to_owned()]);
        assert!(t.take_report(2_000_000).is_none());
        Ok(())
    }
}
