//! The Anthropic upstream: `POST {base_url}/messages` with the channel key in `x-api-key` and
//! `anthropic-version: 2023-06-01`, under the connect and first-byte timeouts. The body is either
//! the client's own (Anthropic ingress, pass-through) or a translation made by [`convert`].

pub mod convert;
pub mod error;
pub mod stream;
pub mod wire;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};

use crate::AttemptError;
use crate::Channel;

/// The values of a client's comma-separated `anthropic-beta` header that the channel allows, in
/// the client's order; `None` when none is left (the usual case: the allow list is empty).
fn allowed_betas(header: &str, allowed: &[String]) -> Option<String> {
    if allowed.is_empty() {
        return None;
    }
    let kept: Vec<&str> =
        header.split(',').map(str::trim).filter(|b| allowed.iter().any(|a| a.as_str() == *b)).collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// `GET …/models` for `channel` (one page of up to 1000), with its key and API version.
pub fn models_request(http: &reqwest::Client, channel: &Channel) -> Result<reqwest::RequestBuilder, AttemptError> {
    let req = http
        .get(format!("{}/models?limit=1000", channel.base_url))
        .header("anthropic-version", HeaderValue::from_static(wire::VERSION));
    super::with_key(req, channel, "x-api-key")
}

/// Sends `body` to `channel` and waits, until `first_byte_deadline`, for 2xx response headers.
/// `beta` is the client's `anthropic-beta` header (pass-through calls): only the values the
/// channel allows go upstream, since the upstream account is shared by every tenant.
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
    if let Some(allowed) = beta.and_then(|b| allowed_betas(b, &channel.anthropic_beta)) {
        req = req.header("anthropic-beta", allowed);
    }
    let resp = super::dispatch(channel, req, first_byte_deadline).await?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error::from_response(channel, resp, idle_timeout).await)
}

#[cfg(test)]
mod tests {
    use super::allowed_betas;

    #[test]
    fn only_allowed_betas_go_upstream() {
        let allowed = vec!["prompt-caching-2024-07-31".to_owned(), "token-efficient-tools-2025-02-19".to_owned()];
        assert_eq!(allowed_betas("a-premium-beta, prompt-caching-2024-07-31", &[]), None);
        assert_eq!(
            allowed_betas("a-premium-beta, prompt-caching-2024-07-31", &allowed).as_deref(),
            Some("prompt-caching-2024-07-31")
        );
        assert_eq!(allowed_betas("a-premium-beta", &allowed), None);
    }
}
