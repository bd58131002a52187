//! Gemini non-2xx answers → our error classes. Gemini reports a bad API key as a 400 whose
//! details say `API_KEY_INVALID`: that is *our* channel key, so it is treated like a 401 (never
//! shown to the client as its own fault, and another channel may be tried). 429
//! `RESOURCE_EXHAUSTED` is "overloaded, retry later", with the delay taken from `Retry-After` or
//! the `RetryInfo` detail. Other 4xx pass through with Gemini's message and status as `code`.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;
use crate::providers::AttemptError;
use crate::state::Channel;

/// Whether an error body says the API key itself is wrong.
fn key_refused(v: &Value) -> bool {
    let details = v.pointer("/error/details").and_then(Value::as_array);
    details
        .into_iter()
        .flatten()
        .any(|d| matches!(d.get("reason").and_then(Value::as_str), Some("API_KEY_INVALID" | "API_KEY_SERVICE_BLOCKED")))
}

/// Seconds from a `RetryInfo` detail (`"retryDelay": "31s"`).
fn retry_delay(v: &Value) -> Option<u64> {
    let details = v.pointer("/error/details").and_then(Value::as_array)?;
    details.iter().find_map(|d| {
        let s = d.get("retryDelay")?.as_str()?.strip_suffix('s')?;
        s.parse::<f64>().ok().map(|f| f.ceil() as u64)
    })
}

/// Maps a status and body (already read) to an attempt error.
pub fn map(status: u16, retry_after: Option<u64>, body: &[u8]) -> AttemptError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    match status {
        429 => AttemptError {
            error: ApiError::UpstreamOverloaded { retry_after: retry_after.or_else(|| retry_delay(&v)) },
            retriable: true,
        },
        401 | 403 => AttemptError { error: ApiError::Upstream, retriable: true },
        400 if key_refused(&v) => AttemptError { error: ApiError::Upstream, retriable: true },
        408 => AttemptError { error: ApiError::UpstreamTimeout, retriable: true },
        400..=499 => {
            let message = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .unwrap_or("The upstream provider rejected the request.")
                .to_owned();
            let code = v.pointer("/error/status").and_then(Value::as_str).map(str::to_owned);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            AttemptError { error: ApiError::UpstreamRejected { status, message, param: None, code }, retriable: false }
        }
        504 => AttemptError { error: ApiError::UpstreamTimeout, retriable: true },
        _ => AttemptError { error: ApiError::Upstream, retriable: true },
    }
}

/// Reads and maps a non-2xx response.
pub async fn from_response(channel: &Channel, resp: reqwest::Response, idle: Duration) -> AttemptError {
    let (status, retry_after, body) = crate::providers::read_error(channel, resp, idle, |status| {
        (400..500).contains(&status) && !matches!(status, 401 | 403 | 408)
    })
    .await;
    map(status, retry_after, &body)
}

/// Gemini's status name for an HTTP status (what its error bodies carry in `status`).
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_key_is_ours_and_quota_errors_carry_their_delay() {
        let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",
            "status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
            "reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        let e = map(400, None, bad_key);
        assert!(e.retriable && matches!(e.error, ApiError::Upstream));
        let quota = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}"#;
        assert!(matches!(map(429, None, quota).error, ApiError::UpstreamOverloaded { retry_after: Some(31) }));
        assert!(matches!(map(429, Some(5), quota).error, ApiError::UpstreamOverloaded { retry_after: Some(5) }));
        let bad =
            map(400, None, br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#);
        assert!(!bad.retriable);
        assert_eq!(bad.error.to_string(), "Invalid JSON payload");
        assert_eq!(bad.error.code(), Some("INVALID_ARGUMENT"));
    }
}
