//! Anthropic non-2xx answers → failure classes. Detection only: Anthropic's error `type`
//! (`authentication_error`, `permission_error`, `billing_error`, `not_found_error`,
//! `rate_limit_error`, `overloaded_error`, `api_error`) and the messages it sends with a 400 for
//! account problems ("credit balance is too low") and long prompts ("prompt is too long"). What
//! the router does with the class is decided in the gateway's `call::policy`.

use std::time::Duration;

use serde::Deserialize;

use crate::Channel;
use crate::failure::{
    AttemptError, FailureClass, VendorDetail, by_status, says_context_exceeded, says_key_invalid, says_quota_exhausted,
};

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

/// Maps a status and body (already read) to an attempt failure.
pub fn map(status: u16, retry_after: Option<u64>, body: &[u8]) -> AttemptError {
    let detail = serde_json::from_slice::<Envelope>(body).ok().map(|e| VendorDetail {
        message: e.error.message,
        param: None,
        code: e.error.kind,
    });
    let kind = detail.as_ref().and_then(|d| d.code.as_deref()).unwrap_or_default();
    let message = detail.as_ref().and_then(|d| d.message.as_deref()).unwrap_or_default();
    let client_side = (400..500).contains(&status);
    let class = match kind {
        "authentication_error" => FailureClass::KeyInvalid,
        "permission_error" => FailureClass::PermissionDenied,
        "billing_error" => FailureClass::QuotaExhausted,
        "rate_limit_error" => FailureClass::RateLimited { retry_after },
        "overloaded_error" => FailureClass::Overloaded { retry_after },
        _ if client_side && says_quota_exhausted(message) => FailureClass::QuotaExhausted,
        _ if client_side && says_key_invalid(message) => FailureClass::KeyInvalid,
        _ => match by_status(status, retry_after) {
            Some(c) => c,
            None if says_context_exceeded(message) => FailureClass::ContextWindowExceeded,
            None if client_side => FailureClass::ClientError,
            None => FailureClass::UpstreamServerError,
        },
    };
    AttemptError::status(class, status).with_detail(detail)
}

/// The failure an event carries when a stream's *first* event is `{"type":"error",…}` (Anthropic
/// sends `overloaded_error` this way after a 200): nothing reached the client yet, so it is an
/// attempt failure.
pub fn in_band(data: &[u8]) -> Option<AttemptError> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    if v.get("type").and_then(serde_json::Value::as_str) != Some("error") {
        return None;
    }
    let mut failure = map(500, None, data);
    failure.status = None;
    Some(failure)
}

/// Reads and maps a non-2xx response.
pub async fn from_response(channel: &Channel, resp: reqwest::Response, idle: Duration) -> AttemptError {
    crate::read_failure(channel, resp, idle, map).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_key_and_account_problems_are_told_apart_from_the_requests_own() {
        assert_eq!(map(401, None, b"").class, FailureClass::KeyInvalid);
        let o = map(529, None, br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#);
        assert_eq!(o.class, FailureClass::Overloaded { retry_after: None });
        let credit = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        assert_eq!(map(400, None, credit).class, FailureClass::QuotaExhausted);
        let long = br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(map(400, None, long).class, FailureClass::ContextWindowExceeded);
        let bad = map(
            400,
            None,
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#,
        );
        assert_eq!(bad.class, FailureClass::ClientError);
        let detail = bad.detail.unwrap_or_default();
        assert_eq!(detail.message.as_deref(), Some("max_tokens: Field required"));
        assert_eq!(detail.code.as_deref(), Some("invalid_request_error"));
        assert_eq!(map(429, Some(3), b"{}").class, FailureClass::RateLimited { retry_after: Some(3) });
        let first = br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(in_band(first).map(|f| f.class), Some(FailureClass::Overloaded { retry_after: None }));
        assert_eq!(in_band(br#"{"type":"message_start","message":{}}"#), None);
    }
}
