//! The upstream adapters, callable from any crate (the gateway's call pipeline, the health
//! workers' probes): per vendor, build and send a request, decode an answer (unary and stream),
//! read its usage, classify a failed answer into a [`FailureClass`], list models. One folder per
//! adapter, dispatched through [`Provider`] with an exhaustive `match`. Every provider name other
//! than `anthropic` and `gemini` is served by the OpenAI-compatible adapter (OpenAI itself and the
//! vendors that speak its protocol, described by [`presets`]).
//!
//! Also here, because the adapters need them and so does everything that calls them: the
//! [`Channel`] an attempt goes to, the protocol-neutral [`canonical`] form translations go
//! through, the upstream HTTP client ([`http`]) with the checking resolver of the outbound
//! address policy, [`scrub`] for vendor text, and usage objects read into [`usage::TokenCounts`].
//! No axum, no app state, no event log: what to *do* about a failure (the next channel, what the
//! client sees) is decided by the caller.

pub mod anthropic;
pub mod balance;
pub mod canonical;
pub mod channel;
pub mod failure;
pub mod gemini;
pub mod http;
pub mod models;
pub mod openai;
pub mod presets;
pub mod scrub;
pub mod sse;
pub mod usage;

pub use channel::{ANY_MODEL, Channel};
pub use failure::{AttemptError, FailureClass, TimeoutPhase};
use reqwest::header::HeaderValue;

/// The adapter a channel uses, from its `provider` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI and every OpenAI-compatible vendor.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API (`generateContent`).
    Gemini,
}

impl Provider {
    /// The adapter for a channel's `provider` name.
    pub fn of(name: &str) -> Provider {
        match name {
            "anthropic" => Provider::Anthropic,
            "gemini" => Provider::Gemini,
            _ => Provider::OpenAi,
        }
    }
}

impl Provider {
    /// The failure a stream's first event carries, when it is the vendor's error event.
    pub fn first_event_failure(self, data: &[u8]) -> Option<AttemptError> {
        // Every vendor's error event says `error`; a normal first event is not parsed twice.
        if !data.windows(5).any(|w| w == b"error") {
            return None;
        }
        match self {
            Provider::OpenAi => openai::error::in_band(data),
            Provider::Anthropic => anthropic::error::in_band(data),
            Provider::Gemini => gemini::error::in_band(data),
        }
    }
}

/// Adds the channel key as the header `name`, marked sensitive so no debug output shows it.
fn with_key(
    req: reqwest::RequestBuilder,
    channel: &Channel,
    name: &'static str,
) -> Result<reqwest::RequestBuilder, AttemptError> {
    let Some(key) = &channel.api_key else { return Ok(req) };
    match HeaderValue::from_str(key) {
        Ok(mut v) => {
            v.set_sensitive(true);
            Ok(req.header(name, v))
        }
        // A key that is not a valid header value cannot authenticate anywhere.
        Err(_) => Err(AttemptError::new(FailureClass::KeyInvalid)),
    }
}

/// Sends `req` and waits, until `first_byte_deadline`, for the response headers (of any status).
pub async fn dispatch(
    channel: &Channel,
    req: reqwest::RequestBuilder,
    first_byte_deadline: tokio::time::Instant,
) -> Result<reqwest::Response, AttemptError> {
    // The HTTP client's resolver checks names; a literal address never reaches it, so the
    // channel's precomputed verdict stands in, and the attempt fails as a connection would.
    if let Some(refused) = &channel.egress_refused {
        tracing::warn!(channel_id = %channel.id, %refused, "Upstream request refused by the outbound address policy.");
        return Err(AttemptError::new(FailureClass::ConnectionFailed));
    }
    match tokio::time::timeout_at(first_byte_deadline, req.send()).await {
        Err(_) => Err(AttemptError::new(FailureClass::Timeout(TimeoutPhase::FirstByte))),
        Ok(Err(e)) => {
            // The reqwest error text can carry the URL; only its class is logged.
            tracing::warn!(channel_id = %channel.id, connect = e.is_connect(), timeout = e.is_timeout(),
                "Upstream request failed.");
            let class = match http::proxy_fault(&e) {
                Some(http::ProxyFault::Down) => FailureClass::ProxyFailed,
                _ if e.is_timeout() => FailureClass::Timeout(TimeoutPhase::Connect),
                _ => FailureClass::ConnectionFailed,
            };
            Err(AttemptError::new(class))
        }
        Ok(Ok(r)) => Ok(r),
    }
}

/// Most of an upstream error body we read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A non-2xx answer read ([`read_error`]) and classified by the adapter's `map`.
pub async fn read_failure(
    channel: &Channel,
    resp: reqwest::Response,
    idle: std::time::Duration,
    map: fn(u16, Option<u64>, &[u8]) -> AttemptError,
) -> AttemptError {
    let (status, retry_after, body) = read_error(channel, resp, idle).await;
    map(status, retry_after, &body)
}

/// A non-2xx answer, read: its status, `Retry-After` seconds, and up to 64 KiB of its body, all
/// within `idle` (a slow error body must not hold up the failover). Logged by status only, never
/// by content.
pub async fn read_error(
    channel: &Channel,
    mut resp: reqwest::Response,
    idle: std::time::Duration,
) -> (u16, Option<u64>, Vec<u8>) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| failure::parse_retry_after(v, std::time::SystemTime::now()));
    tracing::warn!(channel_id = %channel.id, status, "Upstream answered with an error status.");
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + idle;
    while body.len() < MAX_ERROR_BODY {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
            _ => break,
        }
    }
    (status, retry_after, body)
}
