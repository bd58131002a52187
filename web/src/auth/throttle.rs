//! Login throttling: failed logins are counted per email and per client address (IPv6 by /64)
//! in a fixed window; past the limit, logins for that email or from that address are refused
//! with 429 and `Retry-After` until the window ends, before any password is checked. The tables
//! are bounded: when one is full of live entries, new emails or addresses are not tracked (the
//! other table still is), so a flood of made-up emails cannot grow memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Failures per email per window.
    pub per_email: u32,
    /// Failures per client address per window.
    pub per_address: u32,
    /// The window.
    pub window: Duration,
    /// Most entries per table.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { per_email: 5, per_address: 20, window: Duration::from_secs(15 * 60), max_entries: 100_000 }
    }
}

#[derive(Debug, Clone, Copy)]
struct Count {
    since: Instant,
    failures: u32,
}

#[derive(Debug, Default)]
struct Table(HashMap<String, Count>);

impl Table {
    fn live(&self, key: &str, now: Instant, window: Duration) -> Option<Count> {
        self.0.get(key).copied().filter(|c| now.duration_since(c.since) < window)
    }

    fn fail(&mut self, key: &str, now: Instant, limits: &Limits) {
        if let Some(c) = self.0.get_mut(key) {
            if now.duration_since(c.since) >= limits.window {
                *c = Count { since: now, failures: 0 };
            }
            c.failures = c.failures.saturating_add(1);
            return;
        }
        if self.0.len() >= limits.max_entries {
            self.0.retain(|_, c| now.duration_since(c.since) < limits.window);
            if self.0.len() >= limits.max_entries {
                return;
            }
        }
        self.0.insert(key.to_owned(), Count { since: now, failures: 1 });
    }
}

/// The throttle.
#[derive(Debug, Default)]
pub struct Throttle {
    limits: Limits,
    tables: Mutex<(Table, Table)>,
}

/// The address key: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64).
pub fn address_key(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Throttle {
    /// A throttle with these limits.
    pub fn new(limits: Limits) -> Throttle {
        Throttle { limits, tables: Mutex::new((Table::default(), Table::default())) }
    }

    /// How long a login for `email` from `addr` must wait, if it must.
    pub fn check(&self, email: &str, addr: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let l = &self.limits;
        let wait = |c: Count, limit: u32| (c.failures >= limit).then(|| l.window.saturating_sub(now - c.since));
        let by_email = tables.0.live(email, now, l.window).and_then(|c| wait(c, l.per_email));
        let by_addr =
            addr.map(address_key).and_then(|a| tables.1.live(&a, now, l.window)).and_then(|c| wait(c, l.per_address));
        by_email.into_iter().chain(by_addr).max().map(|d| d.max(Duration::from_secs(1)))
    }

    /// Counts a failed login.
    pub fn failed(&self, email: &str, addr: Option<IpAddr>) {
        let now = Instant::now();
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        let (emails, addrs) = &mut *tables;
        emails.fail(email, now, &self.limits);
        if let Some(a) = addr {
            addrs.fail(&address_key(a), now, &self.limits);
        }
    }

    /// A successful login clears its email's count (not its address's: one valid account must
    /// not reset the guessing budget of an address).
    pub fn succeeded(&self, email: &str) {
        let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        tables.0.0.remove(email);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { per_email: 2, per_address: 3, window: Duration::from_secs(60), max_entries: 4 }
    }

    #[test]
    fn an_email_or_an_address_is_held_after_its_limit() {
        let t = Throttle::new(limits());
        let a: IpAddr = [10, 0, 0, 1].into();
        t.failed("x@y", Some(a));
        assert_eq!(t.check("x@y", Some(a)), None);
        t.failed("x@y", Some(a));
        assert!(t.check("x@y", None).is_some_and(|d| d <= Duration::from_secs(60)));
        assert_eq!(t.check("other@y", Some(a)), None, "the address has one failure left");
        t.failed("other@y", Some(a));
        assert!(t.check("third@y", Some(a)).is_some(), "the address is held for every email");
        t.succeeded("x@y");
        assert_eq!(t.check("x@y", None), None);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_tables_stay_bounded() {
        let t = Throttle::new(limits());
        for i in 0..3u16 {
            t.failed(&format!("u{i}@y"), Some(IpAddr::from([0x2001, 0xdb8, 1, 2, 0, 0, 0, i])));
        }
        assert!(t.check("new@y", Some(IpAddr::from([0x2001, 0xdb8, 1, 2, 9, 9, 9, 9]))).is_some());
        for i in 0..100 {
            t.failed(&format!("flood{i}@y"), None);
        }
        assert!(t.tables.lock().map(|g| g.0.0.len()).unwrap_or(0) <= 4);
    }
}
