//! The gateway's typed configuration. The binary builds it (defaults → file → environment); this
//! crate only reads it. No I/O here.

use std::time::Duration;

use schemas::secret::MasterKey;

/// 32 MiB: room for vision requests with inline base64 images, small enough to bound memory.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 32 * 1024 * 1024;

// The defaults of the upstream settings, defined once: [`GatewayConfig::new`] and the binary's
// configuration (file key, environment name) both take them from here.

/// 5 s: a TCP + TLS handshake to a vendor takes well under a second; longer means a dead route.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// 120 s until the upstream's first byte: reasoning models think for a minute or more before
/// their first token; beyond two minutes a client is better served by a 504 it can retry.
pub const DEFAULT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(120);
/// 60 s of silence between two chunks of a started answer: vendors send keep-alive comments or
/// tokens far more often than that.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// 120 s of draining an upstream after its client left, to learn the usage we will be billed.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(120);
/// 16 MiB read at most from an upstream after its client left (a long answer is a few hundred KiB).
pub const DEFAULT_DRAIN_MAX_BYTES: usize = 16 * 1024 * 1024;
/// 30 min from a request's arrival until its stream (or non-stream answer) must be complete: the
/// longest real generations (long reasoning, big documents) take a few minutes; a stream still
/// going after half an hour is a vendor stuck in a loop, and it holds a connection and a task.
pub const DEFAULT_MAX_STREAM_DURATION: Duration = Duration::from_secs(30 * 60);
/// 256 MiB: the largest non-stream upstream answer buffered. Embeddings of big batches are the
/// largest answers (2048 inputs × 3072 dimensions written as JSON numbers is about 130 MiB);
/// larger is treated as an invalid answer rather than risk the process's memory.
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;
/// 3 attempts (the first included), each on another key or channel, only before the first byte
/// reached the client: enough to route around one bad key or channel without multiplying a
/// vendor outage.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// 30 s: after this long since the request arrived, no further attempt starts (the client has
/// waited enough; the last failure is answered).
pub const DEFAULT_RETRY_TIME_BUDGET: Duration = Duration::from_secs(30);
/// The most attempts a configuration may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 10;

/// Settings of the hot path.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Largest request body accepted; larger ones get 413 `request_too_large` without being read
    /// further.
    pub body_limit_bytes: usize,
    /// Opens the sealed upstream credentials found in `channel.*` events.
    pub master_key: MasterKey,
    /// This instance's name, the `source` of the events it appends.
    pub instance: String,
    /// TCP (and TLS) connect timeout to an upstream.
    pub connect_timeout: Duration,
    /// Time from sending the request to the upstream's response headers (and, for streams, its
    /// first event). Exceeded → 504 `upstream_timeout` (or the next channel).
    pub first_byte_timeout: Duration,
    /// Longest silence between two body chunks of an upstream response. Exceeded mid-stream →
    /// in-band error event.
    pub idle_timeout: Duration,
    /// After the client went away, how long the upstream is still drained to learn the usage.
    pub drain_timeout: Duration,
    /// After the client went away, how many upstream bytes are still read at most.
    pub drain_max_bytes: usize,
    /// Longest time from a request's arrival until its upstream answer is complete. A stream that
    /// reaches it ends with an in-band error (`stream_too_long`) and is billed for what was
    /// delivered; a non-stream answer still being read gets 504.
    pub max_stream_duration: Duration,
    /// Largest non-stream upstream answer read; larger → 502 `upstream_invalid_response`.
    pub max_answer_bytes: usize,
    /// Upstream attempts per request (first try included), each on a different key or channel,
    /// and only before the first byte reached the client.
    pub max_attempts: u32,
    /// Caps on `max_tokens` and the number of messages a request may carry.
    pub limits: crate::limits::Limits,
    /// Failed authentications from one client address within `auth_failure_window` after which
    /// the address gets 429 (with `Retry-After`) without its key being looked at.
    pub auth_failure_limit: u32,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Duration,
    /// How often the failed-authentication counts are appended as one `auth.failures_counted`.
    pub auth_failure_report_interval: Duration,
    /// The outbound address policy upstream connections are checked against (channels are set
    /// by admins, so private and loopback hosts are reachable; forbidden ones never are).
    pub egress: egress::Policy,
    /// How upstream host names are looked up (the system resolver; a table in tests).
    pub dns: egress::Dns,
    /// When an upstream key's breaker opens and how long it and a rate-limited key rest.
    pub breaker: crate::health::BreakerConfig,
    /// No attempt after the first starts once the request is this old.
    pub retry_time_budget: Duration,
    /// Retries this gateway may make, as a share of its requests (per 10 s window)…
    pub retry_budget_ratio: f64,
    /// …plus this many per window.
    pub retry_budget_min: u64,
}

impl GatewayConfig {
    /// Failed authentications per client address and window before 429.
    pub const DEFAULT_AUTH_FAILURE_LIMIT: u32 = crate::auth_failures::DEFAULT_FAILURE_LIMIT;
    /// The window of the failed-authentication throttle.
    pub const DEFAULT_AUTH_FAILURE_WINDOW: Duration = crate::auth_failures::DEFAULT_FAILURE_WINDOW;

    /// Defaults suitable for production, with the given master key and instance name.
    pub fn new(master_key: MasterKey, instance: impl Into<String>) -> Self {
        GatewayConfig {
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            master_key,
            instance: instance.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            first_byte_timeout: DEFAULT_FIRST_BYTE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            drain_max_bytes: DEFAULT_DRAIN_MAX_BYTES,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_stream_duration: DEFAULT_MAX_STREAM_DURATION,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            limits: crate::limits::Limits::default(),
            auth_failure_limit: crate::auth_failures::DEFAULT_FAILURE_LIMIT,
            auth_failure_window: crate::auth_failures::DEFAULT_FAILURE_WINDOW,
            auth_failure_report_interval: crate::auth_failures::DEFAULT_REPORT_INTERVAL,
            egress: egress::Policy::default(),
            dns: egress::Dns::system(),
            breaker: crate::health::BreakerConfig::default(),
            retry_time_budget: DEFAULT_RETRY_TIME_BUDGET,
            retry_budget_ratio: crate::health::DEFAULT_RETRY_BUDGET_RATIO,
            retry_budget_min: crate::health::DEFAULT_RETRY_BUDGET_MIN,
        }
    }
}
