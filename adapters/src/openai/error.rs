//! OpenAI-compatible non-2xx answers → failure classes. Detection only: status plus the vendor's
//! `error.code` / `error.type` / message (OpenAI `invalid_api_key`, `insufficient_quota`,
//! `context_length_exceeded`, `content_filter`; DeepSeek's 402 "Insufficient Balance"; vendors
//! that answer a bad key with a 400). What the router does with the class is decided in
//! the gateway's `call::policy`.

use std::time::Duration;

use serde::Deserialize;

use crate::Channel;
use crate::failure::{
    AttemptError, FailureClass, VendorDetail, by_status, mentions, says_context_exceeded, says_key_invalid,
    says_quota_exhausted,
};

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
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Codes (in `code` or `type`) that are about our key or account, never the request.
const KEY_CODES: &[&str] = &["invalid_api_key", "invalid_authentication", "authentication_error"];
const QUOTA_CODES: &[&str] =
    &["insufficient_quota", "billing_hard_limit_reached", "billing_not_active", "insufficient_balance"];
const ACCOUNT_CODES: &[&str] = &[
    "invalid_organization",
    "organization_deactivated",
    "account_deactivated",
    "access_terminated",
    "unsupported_country_region_territory",
    "permission_error",
];

/// Maps a status and body (already read) to an attempt failure.
pub fn map(status: u16, retry_after: Option<u64>, body: &[u8]) -> AttemptError {
    let parsed = serde_json::from_slice::<Envelope>(body).ok().map(|e| e.error);
    let kind = parsed.as_ref().and_then(|e| e.kind.clone());
    let detail = parsed.map(|e| VendorDetail {
        message: e.message,
        param: e.param,
        code: e.code.and_then(|c| match c {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }),
    });
    let code = detail.as_ref().and_then(|d| d.code.clone()).unwrap_or_default();
    let message = detail.as_ref().and_then(|d| d.message.clone()).unwrap_or_default();
    let is = |list: &[&str]| list.contains(&code.as_str()) || kind.as_deref().is_some_and(|k| list.contains(&k));
    let client_side = (400..500).contains(&status);
    let class = if is(QUOTA_CODES) || (client_side && says_quota_exhausted(&message)) {
        FailureClass::QuotaExhausted
    } else if is(KEY_CODES) || (client_side && says_key_invalid(&message)) {
        FailureClass::KeyInvalid
    } else if is(ACCOUNT_CODES) {
        FailureClass::PermissionDenied
    } else if let Some(c) = by_status(status, retry_after) {
        match c {
            // Some vendors say "overloaded" with a plain 503.
            FailureClass::UpstreamServerError if status == 503 && mentions(&message, &["overloaded"]) => {
                FailureClass::Overloaded { retry_after }
            }
            other => other,
        }
    } else if matches!(code.as_str(), "context_length_exceeded" | "string_above_max_length")
        || says_context_exceeded(&message)
    {
        FailureClass::ContextWindowExceeded
    } else if matches!(code.as_str(), "content_filter" | "content_policy_violation") {
        FailureClass::ContentFiltered
    } else if client_side {
        FailureClass::ClientError
    } else {
        FailureClass::UpstreamServerError
    };
    AttemptError::status(class, status).with_detail(detail)
}

/// The failure an event carries when a stream's *first* event is an error (`{"error":{…}}`, or
/// vLLM's `{"object":"error",…}`): nothing reached the client yet, so it is an attempt failure.
/// The HTTP status was 200; a numeric `code` in the error names the real one.
pub fn in_band(data: &[u8]) -> Option<AttemptError> {
    let v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let (error, wrapped) = match v.get("error") {
        Some(e) if !e.is_null() => (e.clone(), v.clone()),
        _ if v.get("object").and_then(serde_json::Value::as_str) == Some("error") => {
            (v.clone(), serde_json::json!({"error": v}))
        }
        _ => return None,
    };
    let status = error
        .get("code")
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c));
    let body = serde_json::to_vec(&wrapped).ok()?;
    let mut failure = map(status.unwrap_or(500), None, &body);
    failure.status = status;
    Some(failure)
}

/// Reads and maps a non-2xx response.
pub async fn from_response(channel: &Channel, resp: reqwest::Response, idle: Duration) -> AttemptError {
    crate::read_failure(channel, resp, idle, map).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(status: u16, body: &str) -> FailureClass {
        map(status, None, body.as_bytes()).class
    }

    #[test]
    fn vendor_bodies_name_the_class_whatever_the_status() {
        let bad_key = r#"{"error":{"message":"Incorrect API key provided: sk-abc***xyz.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(class(401, bad_key), FailureClass::KeyInvalid);
        assert_eq!(class(400, r#"{"error":{"message":"Incorrect API key provided: sk-x"}}"#), FailureClass::KeyInvalid);
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        assert_eq!(class(429, quota), FailureClass::QuotaExhausted);
        let deepseek = r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#;
        assert_eq!(class(402, deepseek), FailureClass::QuotaExhausted);
        assert_eq!(class(429, "{}"), FailureClass::RateLimited { retry_after: None });
        assert_eq!(
            class(404, r#"{"error":{"message":"The model ft:gpt-4o:acme:x does not exist"}}"#),
            FailureClass::ChannelMisconfigured
        );
        let long = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","code":"context_length_exceeded"}}"#;
        assert_eq!(class(400, long), FailureClass::ContextWindowExceeded);
        assert_eq!(class(400, r#"{"error":{"message":"x","code":"content_filter"}}"#), FailureClass::ContentFiltered);
        assert_eq!(
            class(400, r#"{"error":{"message":"bad temperature","param":"temperature"}}"#),
            FailureClass::ClientError
        );
        assert_eq!(
            class(503, r#"{"error":{"message":"The engine is currently overloaded"}}"#),
            FailureClass::Overloaded { retry_after: None }
        );
        assert_eq!(class(500, "<html>"), FailureClass::UpstreamServerError);
    }
}
