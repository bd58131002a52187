//! What the router does with a failed attempt: one table from [`FailureClass`] to "try the next
//! channel or stop" and to what the client is told if it was the last attempt. Adapters only
//! classify; every decision is here (README, "Error classes", is its rendering).
//!
//! Errors about our channel (key, permission, quota, configuration) never reach the client in
//! the vendor's words: the client gets a generic 502, the operator a scrubbed log line, and the
//! next channel is tried. Errors the client caused keep the vendor's message, scrubbed.

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::providers::scrub::scrub;
use crate::providers::{AttemptError, FailureClass, TimeoutPhase};
use crate::state::Channel;

/// What to do after a failed attempt.
#[derive(Debug)]
pub struct Decision {
    /// Whether another channel may be tried (nothing has reached the client yet either way).
    pub next_channel: bool,
    /// What the client is told if no other channel answers.
    pub client: ApiError,
}

/// The one table: class → (next channel?, client answer).
pub fn decide(failure: &AttemptError, channel: &Channel) -> Decision {
    let (next_channel, client) = match failure.class {
        FailureClass::KeyInvalid
        | FailureClass::PermissionDenied
        | FailureClass::QuotaExhausted
        | FailureClass::ChannelMisconfigured
        | FailureClass::ConnectionFailed
        | FailureClass::UpstreamServerError => (true, ApiError::Upstream),
        FailureClass::RateLimited { retry_after } | FailureClass::Overloaded { retry_after } => {
            (true, ApiError::UpstreamOverloaded { retry_after })
        }
        // A connect timeout is cheap to retry; so is an upstream that said it timed out.
        FailureClass::Timeout(TimeoutPhase::Connect | TimeoutPhase::Reported) => (true, ApiError::UpstreamTimeout),
        // Waiting the first-byte budget again on another channel would multiply the wait.
        FailureClass::Timeout(TimeoutPhase::FirstByte | TimeoutPhase::Idle) => (false, ApiError::UpstreamTimeout),
        FailureClass::InvalidResponse => (false, ApiError::UpstreamInvalidResponse),
        FailureClass::ClientError | FailureClass::ContextWindowExceeded | FailureClass::ContentFiltered => {
            (false, rejected(failure, channel))
        }
        // Another channel of another provider may honour it.
        FailureClass::Unsupported => (true, request_side(failure, true)),
        FailureClass::InvalidRequest => (false, request_side(failure, false)),
    };
    Decision { next_channel, client }
}

/// The vendor's refusal of the request, passed on with its message scrubbed.
fn rejected(failure: &AttemptError, channel: &Channel) -> ApiError {
    let detail = failure.detail.clone().unwrap_or_default();
    let secrets: Vec<&str> = channel.api_key.as_deref().into_iter().collect();
    let status = failure.status.and_then(|s| StatusCode::from_u16(s).ok()).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match failure.class {
        FailureClass::ContextWindowExceeded => Some("context_length_exceeded".to_owned()),
        FailureClass::ContentFiltered => Some("content_filter".to_owned()),
        _ => detail.code.map(|c| scrub(&c, &secrets)),
    };
    ApiError::UpstreamRejected {
        status,
        message: detail
            .message
            .map(|m| scrub(&m, &secrets))
            .unwrap_or_else(|| "The upstream provider rejected the request.".into()),
        param: detail.param.map(|p| scrub(&p, &secrets)),
        code,
    }
}

/// A request the gateway could not build for this channel (our own words, not the vendor's).
fn request_side(failure: &AttemptError, unsupported: bool) -> ApiError {
    let detail = failure.detail.clone().unwrap_or_default();
    let message = detail.message.unwrap_or_else(|| "The request could not be translated.".into());
    match (unsupported, detail.param) {
        (true, Some(param)) => ApiError::Unsupported { param, message },
        (true, None) => ApiError::Unsupported { param: "model".into(), message },
        (false, param) => ApiError::InvalidJson { message, param },
    }
}

/// The operator's log line for a failed attempt: class, status and the vendor's text, scrubbed.
pub fn log_attempt(failure: &AttemptError, channel: &Channel) {
    let secrets: Vec<&str> = channel.api_key.as_deref().into_iter().collect();
    let detail = failure.detail.as_ref();
    let message = detail.and_then(|d| d.message.as_deref()).map(|m| scrub(m, &secrets));
    let code = detail.and_then(|d| d.code.as_deref()).map(|c| scrub(c, &secrets));
    let class = failure.class.as_str();
    if failure.class.is_about_channel() {
        tracing::error!(channel_id = %channel.id, class, status = failure.status, code, message,
            "The upstream refused our channel; trying the next one.");
    } else {
        tracing::warn!(channel_id = %channel.id, class, status = failure.status, code, message,
            "Upstream attempt failed.");
    }
}
