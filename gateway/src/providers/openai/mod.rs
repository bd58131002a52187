//! The OpenAI-compatible upstream: one HTTP call with the channel's bearer key, under the
//! connect and first-byte timeouts. Translation-free: the body is already OpenAI's.

pub mod error;
pub mod stream;
pub mod wire;

use std::time::Duration;

use axum::http::{HeaderValue, header};
use bytes::Bytes;

use crate::error::ApiError;
use crate::request::Endpoint;
use crate::state::Channel;

/// Why an attempt failed, and whether another channel may be tried.
#[derive(Debug)]
pub struct AttemptError {
    /// What the client is told if this was the last attempt.
    pub error: ApiError,
    /// Whether another channel may be tried (nothing has reached the client yet either way).
    pub retriable: bool,
}

/// Sends `body` to `channel` and waits, until `first_byte_deadline`, for the response headers
/// (2xx only; anything else is mapped to an [`AttemptError`]).
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    endpoint: Endpoint,
    body: Bytes,
    first_byte_deadline: tokio::time::Instant,
    idle_timeout: Duration,
) -> Result<reqwest::Response, AttemptError> {
    let url = format!("{}{}", channel.base_url, endpoint.upstream_path());
    let mut req = http.post(url).header(header::CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body);
    if let Some(key) = &channel.api_key {
        req = req.bearer_auth(key);
    }
    let resp = match tokio::time::timeout_at(first_byte_deadline, req.send()).await {
        Err(_) => return Err(AttemptError { error: ApiError::UpstreamTimeout, retriable: false }),
        Ok(Err(e)) => {
            // The reqwest error text can carry the URL; only its class is logged.
            tracing::warn!(channel_id = %channel.id, connect = e.is_connect(), timeout = e.is_timeout(),
                "Upstream request failed.");
            let error = if e.is_timeout() { ApiError::UpstreamTimeout } else { ApiError::Upstream };
            return Err(AttemptError { error, retriable: true });
        }
        Ok(Ok(r)) => r,
    };
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error::from_response(channel, resp, idle_timeout).await)
}
