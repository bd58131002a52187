//! Upstream non-2xx answers → our error classes. An upstream 401/403 is about *our* credential,
//! so the client never sees it as a 401; upstream 4xx about the request itself pass through in
//! OpenAI shape.

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use super::AttemptError;
use crate::error::ApiError;
use crate::state::Channel;

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
pub async fn from_response(channel: &Channel, resp: reqwest::Response, idle: Duration) -> AttemptError {
    let (status, retry_after, body) = crate::providers::read_error(channel, resp, idle, |s| {
        (400..500).contains(&s) && !matches!(s, 401 | 403 | 408 | 429)
    })
    .await;
    match status {
        429 => AttemptError { error: ApiError::UpstreamOverloaded { retry_after }, retriable: true },
        401 | 403 => AttemptError { error: ApiError::Upstream, retriable: true },
        408 => AttemptError { error: ApiError::UpstreamTimeout, retriable: true },
        400..=499 => {
            let detail = serde_json::from_slice::<Envelope>(&body).ok().map(|e| e.error);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
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
