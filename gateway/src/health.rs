//! The health of each upstream key as this gateway sees it, and the circuit breaker's rules.
//!
//! Two layers decide whether a key may take a request:
//! - its **folded status**, from `upstream_key.state_changed` events in the control log (every
//!   gateway of a cluster applies the same events, so they agree without a shared cache), and
//! - its **local health** ([`KeyHealth`]): a few atomics per key that count this gateway's
//!   outcomes, open the breaker, and block the key at once — before the event that says so has
//!   come back from the log.
//!
//! The hot path only reads and updates atomics (no lock, nothing held across an await); an event
//! is appended only when a key changes state, never per request ([`KeyHealth::outcome`] returns
//! the [`Transition`] to publish, at most once per change).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use schemas::UpstreamKeyState;

/// The circuit breaker and cool-down settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures among the last [`BreakerConfig::window`] requests of a key that open its breaker.
    pub failures: u32,
    /// How many of a key's last requests are counted (at most 64).
    pub window: u32,
    /// How long a breaker stays open the first time; each consecutive opening doubles it.
    pub cooldown: Duration,
    /// The longest a breaker stays open.
    pub max_cooldown: Duration,
    /// How long a rate-limited key rests when the vendor gave no `Retry-After`.
    pub rate_limit_cooldown: Duration,
    /// The longest rest a vendor's `Retry-After` can impose on a key.
    pub max_rate_limit_cooldown: Duration,
}

/// 5 failures among a key's last 20 requests open its breaker: one failure in four is past the
/// noise of a healthy vendor, and five in a row take well under a second at any real load.
pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
/// The requests counted per key.
pub const DEFAULT_BREAKER_WINDOW: u32 = 20;
/// 30 s open the first time: long enough for a vendor's short incident, short enough that a
/// recovered key is back within a minute.
pub const DEFAULT_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);
/// 10 min at most however often it reopens.
pub const DEFAULT_BREAKER_MAX_COOLDOWN: Duration = Duration::from_secs(600);
/// 10 s rest for a 429 without `Retry-After` (vendors' per-minute windows reset within a minute;
/// the next request then learns whether it did).
pub const DEFAULT_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(10);
/// One hour at most, whatever `Retry-After` says.
pub const DEFAULT_MAX_RATE_LIMIT_COOLDOWN: Duration = Duration::from_secs(3600);
/// The largest window the bit set holds.
pub const MAX_BREAKER_WINDOW: u32 = 64;

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: DEFAULT_BREAKER_FAILURES,
            window: DEFAULT_BREAKER_WINDOW,
            cooldown: DEFAULT_BREAKER_COOLDOWN,
            max_cooldown: DEFAULT_BREAKER_MAX_COOLDOWN,
            rate_limit_cooldown: DEFAULT_RATE_LIMIT_COOLDOWN,
            max_rate_limit_cooldown: DEFAULT_MAX_RATE_LIMIT_COOLDOWN,
        }
    }
}

impl BreakerConfig {
    /// How long the breaker stays open at its `opens`-th consecutive opening (1-based).
    pub fn cooldown_for(&self, opens: u32) -> Duration {
        let doublings = opens.saturating_sub(1).min(20);
        self.cooldown.saturating_mul(1u32 << doublings).min(self.max_cooldown.max(self.cooldown))
    }

    fn mask(&self) -> u64 {
        match self.window.clamp(1, MAX_BREAKER_WINDOW) {
            64 => u64::MAX,
            w => (1u64 << w) - 1,
        }
    }
}

/// A key's state as the control log has it (folded from `upstream_key.state_changed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyStatus {
    /// The state.
    pub state: UpstreamKeyState,
    /// End of a cool-down or open breaker, µs since the epoch.
    pub until_us: Option<i64>,
    /// Disabled by an admin.
    pub manual: bool,
    /// Consecutive breaker openings.
    pub opens: u32,
}

impl Default for KeyStatus {
    fn default() -> Self {
        KeyStatus { state: UpstreamKeyState::Active, until_us: None, manual: false, opens: 0 }
    }
}

impl KeyStatus {
    /// Until when the log keeps the key out (`i64::MAX`: until it is enabled); 0 when it does not.
    pub fn blocked_until(&self) -> i64 {
        match self.state {
            UpstreamKeyState::Active => 0,
            UpstreamKeyState::Disabled => i64::MAX,
            UpstreamKeyState::CoolingDown | UpstreamKeyState::Open => self.until_us.unwrap_or(0),
        }
    }
}

/// Whether a key may take an attempt now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// In rotation.
    Yes,
    /// Its breaker is half-open and this attempt is the one trial.
    Trial,
    /// Out of rotation.
    No,
}

/// What an attempt's outcome means for its key (from `call::policy`'s table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The upstream answered.
    Success,
    /// Says nothing about the key (the client's error, our own configuration).
    Neutral,
    /// Counts toward the breaker (5xx, overloaded, timeout, connection failure).
    Breaker,
    /// The key is unusable until a probe or an admin says otherwise; the failure class.
    Disable(&'static str),
    /// The vendor rate-limits the key: rest for this many seconds (or the default).
    CoolDown(Option<u64>),
}

/// A state change to publish as `upstream_key.state_changed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub state: UpstreamKeyState,
    /// End of the cool-down or open period.
    pub until_us: Option<i64>,
    /// Why (a failure class name or `recovered`).
    pub reason: &'static str,
    /// Consecutive breaker openings.
    pub opens: u32,
}

/// A trial older than this is taken to be lost (its task ended without an outcome), so the
/// breaker does not stay half-open forever.
const STALE_TRIAL_US: i64 = 300_000_000;

/// This gateway's counters and breaker for one key. Shared by every snapshot of the control
/// state, so a channel update keeps them. The two fields a routing scan reads come first, in
/// one cache line.
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub struct KeyHealth {
    /// Kept out locally until (µs since the epoch; `i64::MAX` = disabled), covering the time
    /// until the log's event comes back, and a log that could not take it.
    blocked_until_us: AtomicI64,
    /// Moving average of the time to first byte of answered attempts, µs (0: no sample yet).
    ttfb_ewma_us: AtomicU64,
    /// The last outcomes, newest in bit 0: 1 = a failure that counts toward the breaker.
    window: AtomicU64,
    /// When the half-open trial began; 0 = none in flight.
    trial_since_us: AtomicI64,
    /// Consecutive openings seen here or in the log.
    opens: AtomicU32,
    /// Attempts made with the key.
    pub requests: AtomicU64,
    /// Attempts that failed in a way that counts toward the breaker.
    pub failures: AtomicU64,
}

impl KeyHealth {
    /// Whether the key is out of rotation at `now_us` (no side effect: a half-open key is in).
    pub fn blocked(&self, status: &KeyStatus, now_us: i64) -> bool {
        self.blocked_after(status.blocked_until(), now_us)
    }

    /// [`KeyHealth::blocked`] with the log's block already read ([`KeyStatus::blocked_until`]).
    pub fn blocked_after(&self, log_until_us: i64, now_us: i64) -> bool {
        log_until_us > now_us || self.blocked_until_us.load(Ordering::Relaxed) > now_us
    }

    /// When the key is back at the earliest (µs; `i64::MAX` = not by itself).
    pub fn back_at(&self, status: &KeyStatus) -> i64 {
        self.back_at_after(status.blocked_until())
    }

    /// [`KeyHealth::back_at`] with the log's block already read ([`KeyStatus::blocked_until`]).
    pub fn back_at_after(&self, log_until_us: i64) -> i64 {
        log_until_us.max(self.blocked_until_us.load(Ordering::Relaxed))
    }

    /// Admits an attempt at `now_us`: a half-open key admits one trial at a time.
    pub fn admit(&self, status: &KeyStatus, now_us: i64) -> Admission {
        if self.blocked(status, now_us) {
            return Admission::No;
        }
        if status.state != UpstreamKeyState::Open {
            return Admission::Yes;
        }
        let since = self.trial_since_us.load(Ordering::Acquire);
        if since != 0 && now_us.saturating_sub(since) < STALE_TRIAL_US {
            return Admission::No;
        }
        match self.trial_since_us.compare_exchange(since, now_us.max(1), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Admission::Trial,
            Err(_) => Admission::No,
        }
    }

    /// Records an attempt's outcome; returns the state change to publish, if this outcome made
    /// one (at most one caller gets each change).
    pub fn outcome(
        &self,
        status: &KeyStatus,
        admission: Admission,
        verdict: Verdict,
        cfg: &BreakerConfig,
        now_us: i64,
    ) -> Option<Transition> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let trial = admission == Admission::Trial;
        if trial {
            self.trial_since_us.store(0, Ordering::Release);
        }
        match verdict {
            Verdict::Success | Verdict::Neutral => {
                if verdict == Verdict::Success {
                    self.record(false, cfg);
                }
                trial.then_some(Transition {
                    state: UpstreamKeyState::Active,
                    until_us: None,
                    reason: "recovered",
                    opens: 0,
                })
            }
            Verdict::Breaker => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if !(trial || self.record(true, cfg)) {
                    return None;
                }
                let opens = self.opens.load(Ordering::Relaxed).max(status.opens) + 1;
                self.opens.store(opens, Ordering::Relaxed);
                let until = now_us.saturating_add(micros(cfg.cooldown_for(opens)));
                self.blocked_until_us.fetch_max(until, Ordering::AcqRel);
                self.window.store(0, Ordering::Relaxed);
                Some(Transition { state: UpstreamKeyState::Open, until_us: Some(until), reason: "breaker", opens })
            }
            Verdict::Disable(reason) => {
                let before = self.blocked_until_us.swap(i64::MAX, Ordering::AcqRel);
                (before != i64::MAX && status.state != UpstreamKeyState::Disabled).then_some(Transition {
                    state: UpstreamKeyState::Disabled,
                    until_us: None,
                    reason,
                    opens: 0,
                })
            }
            Verdict::CoolDown(seconds) => {
                let rest = seconds.map_or(cfg.rate_limit_cooldown, Duration::from_secs);
                let until = now_us.saturating_add(micros(rest.min(cfg.max_rate_limit_cooldown)));
                let before = self.blocked_until_us.fetch_max(until, Ordering::AcqRel);
                // Concurrent 429s of one window publish once.
                (until > before.saturating_add(COALESCE_US)).then_some(Transition {
                    state: UpstreamKeyState::CoolingDown,
                    until_us: Some(until),
                    reason: "rate_limited",
                    opens: 0,
                })
            }
        }
    }

    /// Shifts one outcome into the window; true when it is the failure that reached the
    /// threshold (the window then starts over, so exactly one caller opens the breaker).
    fn record(&self, failed: bool, cfg: &BreakerConfig) -> bool {
        let mask = cfg.mask();
        let threshold = cfg.failures.max(1);
        let next = |w: u64| ((w << 1) | u64::from(failed)) & mask;
        let previous = self
            .window
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let n = next(w);
                Some(if n.count_ones() >= threshold { 0 } else { n })
            })
            .unwrap_or_default();
        failed && next(previous).count_ones() >= threshold
    }

    /// Folds an answered attempt's time to first byte into the moving average (weight 1/4, so a
    /// key that slows down is noticed within a few requests).
    pub fn note_ttfb(&self, ttfb: Duration) {
        let sample = u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self.ttfb_ewma_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == 0 { sample } else { old - old / 4 + sample / 4 })
        });
    }

    /// The moving average of the time to first byte, µs; 0 before the first answer.
    pub fn ttfb_us(&self) -> u64 {
        self.ttfb_ewma_us.load(Ordering::Relaxed)
    }

    /// The log says the key is active again (recovered, or enabled by an admin): forget what
    /// this gateway held against it.
    pub fn reset(&self) {
        self.window.store(0, Ordering::Relaxed);
        self.blocked_until_us.store(0, Ordering::Release);
        self.trial_since_us.store(0, Ordering::Release);
        self.opens.store(0, Ordering::Relaxed);
    }

    /// The log's count of consecutive openings, so the next cooldown grows from it here too.
    pub fn note_opens(&self, opens: u32) {
        self.opens.fetch_max(opens, Ordering::Relaxed);
    }
}

/// The gateway-wide retry budget: retries (attempts after a request's first) may be at most
/// `ratio` of the requests seen over the last one to two windows, plus `min` per window so a quiet
/// gateway can still retry. A dead upstream then costs at most `1 + ratio` times its traffic,
/// not `max_attempts` times. Two buckets of atomics; no lock.
#[derive(Debug)]
pub struct RetryBudget {
    ratio_permille: u64,
    min: u64,
    window_us: i64,
    /// Start of the current bucket (µs).
    bucket_start_us: AtomicI64,
    requests: [AtomicU64; 2],
    retries: [AtomicU64; 2],
}

/// 20 % of requests may be retried (besides the minimum).
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// 10 retries per window whatever the traffic.
pub const DEFAULT_RETRY_BUDGET_MIN: u64 = 10;
/// Counted over 10 s windows.
pub const RETRY_BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(DEFAULT_RETRY_BUDGET_RATIO, DEFAULT_RETRY_BUDGET_MIN)
    }
}

impl RetryBudget {
    /// A budget of `ratio` (0–1) of requests plus `min` retries per window.
    pub fn new(ratio: f64, min: u64) -> RetryBudget {
        let ratio_permille = (ratio.clamp(0.0, 1.0) * 1000.0).round() as u64;
        RetryBudget {
            ratio_permille,
            min,
            window_us: micros(RETRY_BUDGET_WINDOW),
            bucket_start_us: AtomicI64::new(0),
            requests: [AtomicU64::new(0), AtomicU64::new(0)],
            retries: [AtomicU64::new(0), AtomicU64::new(0)],
        }
    }

    /// The current bucket's index, rolling the buckets over when a window has passed.
    fn bucket(&self, now_us: i64) -> usize {
        let start = self.bucket_start_us.load(Ordering::Acquire);
        let index = |start: i64| usize::try_from((start / self.window_us.max(1)).rem_euclid(2)).unwrap_or(0);
        if now_us.saturating_sub(start) < self.window_us {
            return index(start);
        }
        let next = now_us - now_us.rem_euclid(self.window_us.max(1));
        if self.bucket_start_us.compare_exchange(start, next, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let i = index(next);
            // The bucket being reused held a window at least two windows old (or the gap was longer
            // than one window, and the other one is stale too).
            self.requests[i].store(0, Ordering::Relaxed);
            self.retries[i].store(0, Ordering::Relaxed);
            if now_us.saturating_sub(start) >= 2 * self.window_us {
                self.requests[1 - i].store(0, Ordering::Relaxed);
                self.retries[1 - i].store(0, Ordering::Relaxed);
            }
        }
        index(self.bucket_start_us.load(Ordering::Acquire))
    }

    /// Counts a request.
    pub fn request(&self, now_us: i64) {
        let i = self.bucket(now_us);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_retry(&self, now_us: i64) -> bool {
        let i = self.bucket(now_us);
        let requests = self.requests[0].load(Ordering::Relaxed) + self.requests[1].load(Ordering::Relaxed);
        let retries = self.retries[0].load(Ordering::Relaxed) + self.retries[1].load(Ordering::Relaxed);
        if retries >= self.min + requests * self.ratio_permille / 1000 {
            return false;
        }
        self.retries[i].fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// Rate-limit rests ending within this of one already published are not published again.
const COALESCE_US: i64 = 500_000;

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Now, in µs since the Unix epoch (the clock `until_us` values are on).
pub fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    fn cfg() -> BreakerConfig {
        BreakerConfig { failures: 3, window: 5, cooldown: Duration::from_secs(2), ..BreakerConfig::default() }
    }

    fn open(until: i64, opens: u32) -> KeyStatus {
        KeyStatus { state: UpstreamKeyState::Open, until_us: Some(until), manual: false, opens }
    }

    #[test]
    fn the_breaker_opens_at_the_threshold_within_the_window_and_only_once() {
        let h = KeyHealth::default();
        let st = KeyStatus::default();
        let c = cfg();
        // F S S S F: two failures within the last five.
        for v in [Verdict::Breaker, Verdict::Success, Verdict::Success, Verdict::Success, Verdict::Breaker] {
            assert_eq!(h.outcome(&st, Admission::Yes, v, &c, 0), None);
        }
        // A third failure after the first slid out of the window does not open it.
        assert_eq!(h.outcome(&st, Admission::Yes, Verdict::Success, &c, 0), None);
        assert_eq!(h.outcome(&st, Admission::Yes, Verdict::Breaker, &c, 0), None);
        assert!(!h.blocked(&st, 0));
        let t = h.outcome(&st, Admission::Yes, Verdict::Breaker, &c, 10 * S);
        assert_eq!(t.map(|t| (t.state, t.until_us, t.opens)), Some((UpstreamKeyState::Open, Some(12 * S), 1)));
        assert!(h.blocked(&st, 11 * S), "blocked locally before the event comes back");
        assert_eq!(h.outcome(&st, Admission::Yes, Verdict::Breaker, &c, 10 * S), None, "published once");
    }

    #[test]
    fn a_half_open_key_admits_one_trial_whose_failure_reopens_it_longer_and_success_closes_it() {
        let c = cfg();
        let h = KeyHealth::default();
        let st = open(12 * S, 1);
        assert_eq!(h.admit(&st, 11 * S), Admission::No, "open");
        assert_eq!(h.admit(&st, 12 * S), Admission::Trial);
        assert_eq!(h.admit(&st, 12 * S), Admission::No, "one trial at a time");
        let t = h.outcome(&st, Admission::Trial, Verdict::Breaker, &c, 13 * S);
        assert_eq!(t.map(|t| (t.until_us, t.opens)), Some((Some(17 * S), 2)), "the cooldown doubled");
        let st = open(17 * S, 2);
        assert_eq!(h.admit(&st, 16 * S), Admission::No);
        assert_eq!(h.admit(&st, 17 * S), Admission::Trial);
        let t = h.outcome(&st, Admission::Trial, Verdict::Success, &c, 17 * S);
        assert_eq!(t.map(|t| t.state), Some(UpstreamKeyState::Active));
        assert_eq!(c.cooldown_for(30), c.max_cooldown, "the growth is capped");
    }

    #[test]
    fn a_rate_limit_rests_exactly_retry_after_and_concurrent_429s_publish_once() {
        let c = cfg();
        let h = KeyHealth::default();
        let st = KeyStatus::default();
        let t = h.outcome(&st, Admission::Yes, Verdict::CoolDown(Some(2)), &c, 10 * S);
        assert_eq!(t.map(|t| (t.state, t.until_us)), Some((UpstreamKeyState::CoolingDown, Some(12 * S))));
        assert_eq!(h.outcome(&st, Admission::Yes, Verdict::CoolDown(Some(2)), &c, 10 * S + 1000), None);
        // Each 429 rests the key from its own arrival, and no longer.
        assert!(h.blocked(&st, 12 * S + 999) && !h.blocked(&st, 12 * S + 1000));
        let none = h.outcome(&st, Admission::Yes, Verdict::CoolDown(None), &c, 20 * S);
        assert_eq!(none.and_then(|t| t.until_us), Some(20 * S + micros(c.rate_limit_cooldown)));
    }

    #[test]
    fn the_retry_budget_allows_a_fifth_of_requests_plus_the_minimum_and_refills_with_time() {
        let b = RetryBudget::new(0.2, 2);
        for _ in 0..10 {
            b.request(S);
        }
        let granted = (0..10).filter(|_| b.try_retry(S)).count();
        assert_eq!(granted, 4, "2 + 20 % of 10");
        // Two windows later the old counts are gone.
        assert!(b.try_retry(S + 2 * micros(RETRY_BUDGET_WINDOW)));
    }

    #[test]
    fn the_ttfb_average_follows_the_samples() {
        let h = KeyHealth::default();
        assert_eq!(h.ttfb_us(), 0);
        h.note_ttfb(Duration::from_millis(100));
        assert_eq!(h.ttfb_us(), 100_000);
        for _ in 0..20 {
            h.note_ttfb(Duration::from_millis(20));
        }
        assert!(h.ttfb_us() < 25_000, "{}", h.ttfb_us());
    }

    #[test]
    fn a_disable_is_published_once_and_a_reset_brings_the_key_back() {
        let c = cfg();
        let h = KeyHealth::default();
        let st = KeyStatus::default();
        assert!(h.outcome(&st, Admission::Yes, Verdict::Disable("key_invalid"), &c, 0).is_some());
        assert_eq!(h.outcome(&st, Admission::Yes, Verdict::Disable("key_invalid"), &c, 0), None);
        assert!(h.blocked(&st, i64::MAX - 1));
        h.reset();
        assert!(!h.blocked(&st, 0));
        let disabled = KeyStatus { state: UpstreamKeyState::Disabled, ..KeyStatus::default() };
        assert!(h.blocked(&disabled, 0));
        assert_eq!(h.admit(&disabled, 0), Admission::No);
    }
}
