//! The Anthropic upstream: `POST {base_url}/messages` with the channel key in `x-api-key` and
//! `anthropic-version: 2023-06-01`, under the connect and first-byte timeouts. The body is either
//! the client's own (Anthropic ingress, pass-through) or a translation made by [`convert`].

pub mod convert;
pub mod error;
pub mod stream;
pub mod wire;

use std::time::Duration;

use axum::http::{HeaderValue, header};
use bytes::Bytes;

use crate::providers::AttemptError;
use crate::state::Channel;

/// Sends `body` to `channel` and waits, until `first_byte_deadline`, for 2xx response headers.
/// `beta` is the client's `anthropic-beta` header, passed on for pass-through calls.
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    body: Bytes,
    beta: Option<&str>,
    first_byte_deadline: tokio::time::Instant,
    idle_timeout: Duration,
) -> Result<reqwest::Response, AttemptError> {
    let url = format!("{}/messages", channel.base_url);
    let req = http
        .post(url)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header("anthropic-version", HeaderValue::from_static(wire::VERSION))
        .body(body);
    let mut req = super::with_key(req, channel, "x-api-key")?;
    if let Some(b) = beta {
        req = req.header("anthropic-beta", b);
    }
    let resp = super::dispatch(channel, req, first_byte_deadline).await?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error::from_response(channel, resp, idle_timeout).await)
}
