//! The gateway's typed configuration. The binary builds it (defaults → file → environment); this
//! crate only reads it. No I/O here.

use std::time::Duration;

use schemas::secret::MasterKey;

/// 32 MiB: room for vision requests with inline base64 images, small enough to bound memory.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 32 * 1024 * 1024;

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
    /// Upstream attempts per request (first try included), each on a different channel, and only
    /// before the first byte reached the client.
    pub max_attempts: u32,
    /// The outbound address policy upstream connections are checked against (channels are set
    /// by admins, so private and loopback hosts are reachable; forbidden ones never are).
    pub egress: egress::Policy,
    /// How upstream host names are looked up (the system resolver; a table in tests).
    pub dns: egress::Dns,
}

impl GatewayConfig {
    /// Defaults suitable for production, with the given master key and instance name.
    pub fn new(master_key: MasterKey, instance: impl Into<String>) -> Self {
        GatewayConfig {
            body_limit_bytes: DEFAULT_BODY_LIMIT_BYTES,
            master_key,
            instance: instance.into(),
            connect_timeout: Duration::from_secs(5),
            // Reasoning models can think for minutes before the first token.
            first_byte_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(120),
            drain_max_bytes: 16 * 1024 * 1024,
            max_attempts: 3,
            egress: egress::Policy::default(),
            dns: egress::Dns::system(),
        }
    }
}
