//! Anthropic non-2xx answers → our error classes. 401/403 concern *our* channel key, so the client
//! never sees them as a 401; 429 and 529 (`overloaded_error`) are "overloaded, retry later" and
//! may go to another channel; other 4xx are about the request and pass through with Anthropic's
//! message and error type (as `code`).

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::ApiError;
use crate::providers::AttemptError;
use crate::state::Channel;

#[derive(Deserialize)]
struct Envelope {
    error: Detail,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Maps a status and body (already read) to an attempt error.
pub fn map(status: u16, retry_after: Option<u64>, body: &[u8]) -> AttemptError {
    match status {
        429 | 529 => AttemptError { error: ApiError::UpstreamOverloaded { retry_after }, retriable: true },
        401 | 403 => AttemptError { error: ApiError::Upstream, retriable: true },
        408 => AttemptError { error: ApiError::UpstreamTimeout, retriable: true },
        400..=499 => {
            let detail = serde_json::from_slice::<Envelope>(body).ok().map(|e| e.error);
            let (message, code) = match detail {
                Some(d) => (d.message.unwrap_or_else(|| "The upstream provider rejected the request.".into()), d.kind),
                None => ("The upstream provider rejected the request.".into(), None),
            };
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            AttemptError { error: ApiError::UpstreamRejected { status, message, param: None, code }, retriable: false }
        }
        _ => AttemptError { error: ApiError::Upstream, retriable: true },
    }
}

/// Reads and maps a non-2xx response.
pub async fn from_response(channel: &Channel, resp: reqwest::Response, idle: Duration) -> AttemptError {
    let (status, retry_after, body) = crate::providers::read_error(channel, resp, idle, |status| {
        (400..500).contains(&status) && !matches!(status, 401 | 403 | 408 | 429)
    })
    .await;
    map(status, retry_after, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_key_refused_is_never_a_client_401_and_overloaded_is_retriable() {
        assert!(matches!(map(401, None, b"").error, ApiError::Upstream));
        let o = map(529, None, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert!(o.retriable && matches!(o.error, ApiError::UpstreamOverloaded { .. }));
        let bad = map(
            400,
            None,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        );
        assert_eq!(bad.error.to_string(), "max_tokens: Field required");
        assert_eq!(bad.error.code(), Some("invalid_request_error"));
    }
}
