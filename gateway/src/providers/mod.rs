//! Upstream providers, one folder each, dispatched through [`Provider`] with an exhaustive
//! `match`. Every provider name other than `anthropic` and `gemini` is served by the
//! OpenAI-compatible adapter (OpenAI itself and the vendors that speak its protocol).

pub mod anthropic;
pub mod gemini;
pub mod openai;

use axum::http::HeaderValue;
pub use openai::AttemptError;

use crate::error::ApiError;
use crate::state::Channel;

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

/// Adds the channel key as the header `name`, marked sensitive so no debug output shows it.
pub(crate) fn with_key(
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
        Err(_) => Err(AttemptError { error: ApiError::Upstream, retriable: true }),
    }
}

/// Sends `req` and waits, until `first_byte_deadline`, for the response headers (of any status).
pub(crate) async fn dispatch(
    channel: &Channel,
    req: reqwest::RequestBuilder,
    first_byte_deadline: tokio::time::Instant,
) -> Result<reqwest::Response, AttemptError> {
    // The HTTP client's resolver checks names; a literal address never reaches it, so the
    // channel's precomputed verdict stands in, and the attempt fails as a connection would.
    if let Some(refused) = &channel.egress_refused {
        tracing::warn!(channel_id = %channel.id, %refused, "Upstream request refused by the outbound address policy.");
        return Err(AttemptError { error: ApiError::Upstream, retriable: true });
    }
    match tokio::time::timeout_at(first_byte_deadline, req.send()).await {
        Err(_) => Err(AttemptError { error: ApiError::UpstreamTimeout, retriable: false }),
        Ok(Err(e)) => {
            // The reqwest error text can carry the URL; only its class is logged.
            tracing::warn!(channel_id = %channel.id, connect = e.is_connect(), timeout = e.is_timeout(),
                "Upstream request failed.");
            let error = if e.is_timeout() { ApiError::UpstreamTimeout } else { ApiError::Upstream };
            Err(AttemptError { error, retriable: true })
        }
        Ok(Ok(r)) => Ok(r),
    }
}

/// Most of an upstream error body we read.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A non-2xx answer, read: its status, `Retry-After` seconds, and (when `wanted(status)`) up to
/// 64 KiB of its body, each chunk within `idle`. Logged by status only, never by content.
pub(crate) async fn read_error(
    channel: &Channel,
    mut resp: reqwest::Response,
    idle: std::time::Duration,
    wanted: impl Fn(u16) -> bool,
) -> (u16, Option<u64>, Vec<u8>) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    tracing::warn!(channel_id = %channel.id, status, "Upstream answered with an error status.");
    let mut body = Vec::new();
    if wanted(status) {
        while body.len() < MAX_ERROR_BODY {
            match tokio::time::timeout(idle, resp.chunk()).await {
                Ok(Ok(Some(c))) => body.extend_from_slice(&c),
                _ => break,
            }
        }
    }
    (status, retry_after, body)
}
