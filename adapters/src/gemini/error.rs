//! Gemini non-2xx answers → failure classes. Detection only: Gemini reports a bad API key as a
//! 400 whose details say `API_KEY_INVALID`, a blocked key or project as `PERMISSION_DENIED`, an
//! unavailable region or billing as `FAILED_PRECONDITION`, quota and rate limits as 429
//! `RESOURCE_EXHAUSTED` (the delay from `Retry-After` or the `RetryInfo` detail). What the router
//! does with the class is decided in the gateway's `call::policy`.

use std::time::Duration;

use super::wire::{ErrorBody, ErrorObject, GenerateContentResponse};
use crate::Channel;
use crate::failure::{
    AttemptError, FailureClass, TimeoutPhase, VendorDetail, by_status, mentions, says_context_exceeded,
    says_key_invalid, says_quota_exhausted,
};

/// Whether an error says the API key itself is wrong.
fn key_refused(e: &ErrorObject) -> bool {
    e.details().iter().any(|d| matches!(d.reason.as_deref(), Some("API_KEY_INVALID" | "API_KEY_SERVICE_BLOCKED")))
}

/// Seconds from a `RetryInfo` detail (`"retryDelay": "31s"`).
fn retry_delay(e: &ErrorObject) -> Option<u64> {
    e.details().iter().find_map(|d| {
        let s = d.retry_delay.as_deref()?.strip_suffix('s')?;
        s.parse::<f64>().ok().map(|f| f.ceil() as u64)
    })
}

/// Maps a status and body (already read) to an attempt failure. A body that is not Google's error
/// shape is classified by the status alone.
pub fn map(status: u16, retry_after: Option<u64>, body: &[u8]) -> AttemptError {
    let e = serde_json::from_slice::<ErrorBody>(body).ok().and_then(|b| b.error).unwrap_or_default();
    let message = e.message.as_deref();
    let code = e.status.as_deref();
    let text = message.unwrap_or_default();
    let client_side = (400..500).contains(&status);
    let class = match (status, code) {
        (401, _) => FailureClass::KeyInvalid,
        _ if key_refused(&e) || (client_side && says_key_invalid(text)) => FailureClass::KeyInvalid,
        (429, _) => FailureClass::RateLimited { retry_after: retry_after.or_else(|| retry_delay(&e)) },
        (_, Some("PERMISSION_DENIED" | "UNAUTHENTICATED")) => FailureClass::PermissionDenied,
        _ if client_side && says_quota_exhausted(text) => FailureClass::QuotaExhausted,
        (_, Some("FAILED_PRECONDITION")) if mentions(text, &["location", "region", "country"]) => {
            FailureClass::PermissionDenied
        }
        (503, _) | (_, Some("UNAVAILABLE")) => FailureClass::Overloaded { retry_after },
        (504, _) => FailureClass::Timeout(TimeoutPhase::Reported),
        _ => match by_status(status, retry_after) {
            Some(c) => c,
            None if says_context_exceeded(text) => FailureClass::ContextWindowExceeded,
            None if client_side => FailureClass::ClientError,
            None => FailureClass::UpstreamServerError,
        },
    };
    let error = AttemptError::status(class, status);
    if message.is_none() && code.is_none() {
        return error;
    }
    error.with_detail(VendorDetail { message: message.map(str::to_owned), param: None, code: code.map(str::to_owned) })
}

/// The failure an event carries when a stream's *first* chunk is `{"error":{…}}`: nothing reached
/// the client yet, so it is an attempt failure. The error's `code` names the real status.
pub fn in_band(data: &[u8]) -> Option<AttemptError> {
    let chunk: GenerateContentResponse = serde_json::from_slice(data).ok()?;
    let error = chunk.error?;
    let status = error
        .object()
        .and_then(|o| o.code.as_ref())
        .and_then(serde_json::Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c));
    let mut failure = map(status.unwrap_or(500), None, data);
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

    #[test]
    fn a_refused_key_is_ours_and_quota_errors_carry_their_delay() {
        let bad_key = br#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.",
            "status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",
            "reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}"#;
        assert_eq!(map(400, None, bad_key).class, FailureClass::KeyInvalid);
        let quota = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED",
            "details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}"#;
        assert_eq!(map(429, None, quota).class, FailureClass::RateLimited { retry_after: Some(31) });
        assert_eq!(map(429, Some(5), quota).class, FailureClass::RateLimited { retry_after: Some(5) });
        let denied =
            br#"{"error":{"code":403,"message":"Permission denied on project 1234","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(map(403, None, denied).class, FailureClass::PermissionDenied);
        let region = br#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(map(400, None, region).class, FailureClass::PermissionDenied);
        let long = br#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(map(400, None, long).class, FailureClass::ContextWindowExceeded);
        let bad =
            map(400, None, br#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#);
        assert_eq!(bad.class, FailureClass::ClientError);
        let detail = bad.detail.unwrap_or_default();
        assert_eq!(detail.message.as_deref(), Some("Invalid JSON payload"));
        assert_eq!(detail.code.as_deref(), Some("INVALID_ARGUMENT"));
        let first = br#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        let f = in_band(first);
        assert_eq!(
            f.as_ref().map(|f| (f.class, f.status)),
            Some((FailureClass::RateLimited { retry_after: None }, Some(429)))
        );
        assert_eq!(in_band(br#"{"candidates":[]}"#), None);
    }
}
