//! Upstream non-2xx answers → our error classes. An upstream 401/403 is about *our* credential,
//! so the client never sees it as a 401; upstream 4xx about the request itself pass through in
//! OpenAI shape.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use super::AttemptError;
use crate::error::ApiError;
use crate::state::Channel;

/// Most of an upstream error body we read; the rest is ignored.
const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Deserialize)]
struct Envelope {
    error: Detail,
}

#[derive(Deserialize)]
struct Detail {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

/// Maps a non-2xx response.
pub async fn from_response(channel: &Channel, mut resp: reqwest::Response, idle: Duration) -> AttemptError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    tracing::warn!(channel_id = %channel.id, status = status.as_u16(), "Upstream answered with an error status.");
    match status.as_u16() {
        429 => AttemptError { error: ApiError::UpstreamOverloaded { retry_after }, retriable: true },
        401 | 403 => AttemptError { error: ApiError::Upstream, retriable: true },
        408 => AttemptError { error: ApiError::UpstreamTimeout, retriable: true },
        400..=499 => {
            let mut body = Vec::new();
            while body.len() < MAX_ERROR_BODY {
                match tokio::time::timeout(idle, resp.chunk()).await {
                    Ok(Ok(Some(c))) => body.extend_from_slice(&c),
                    _ => break,
                }
            }
            let detail = serde_json::from_slice::<Envelope>(&body).ok().map(|e| e.error);
            let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_REQUEST);
            let (message, param, code) = match detail {
                Some(d) => (
                    d.message.unwrap_or_else(|| "The upstream provider rejected the request.".into()),
                    d.param,
                    d.code.and_then(|c| match c {
                        serde_json::Value::String(s) => Some(s),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    }),
                ),
                None => ("The upstream provider rejected the request.".into(), None, None),
            };
            AttemptError { error: ApiError::UpstreamRejected { status, message, param, code }, retriable: false }
        }
        _ => AttemptError { error: ApiError::Upstream, retriable: true },
    }
}
