//! What the router does with a failed attempt: one table from [`FailureClass`] to what happens
//! to the key that was used ([`Verdict`]), whether another key or channel is tried ([`Next`]),
//! and what the client is told if it was the last attempt. Adapters only classify; every decision
//! is here (README, "What each failure does", is its rendering).
//!
//! Errors about our channel (key, permission, quota, configuration) never reach the client in
//! the vendor's words: the client gets a generic 502, the operator a scrubbed log line, and the
//! next key or channel is tried. Errors the client caused keep the vendor's message, scrubbed.

use axum::http::StatusCode;

use crate::error::ApiError;
use crate::health::Verdict;
use crate::state::Channel;
use adapters::scrub::scrub;
use adapters::{AttemptError, FailureClass, TimeoutPhase};

/// Where a call goes after a failed attempt (nothing has reached the client yet either way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Answer the client now.
    Stop,
    /// The next candidate: another key of the same channel first (the failure was the key's).
    Key,
    /// The next candidate of another channel when there is one, else another key (the failure
    /// is likely the upstream's, which every key of the channel shares).
    Channel,
}

/// What to do after a failed attempt.
#[derive(Debug)]
pub struct Decision {
    /// Whether and where another attempt goes.
    pub next: Next,
    /// What the failure means for the key that was used.
    pub key: Verdict,
    /// What the client is told if no other attempt answers.
    pub client: ApiError,
}

/// The one table: class → (what happens to the key, next attempt, client answer).
pub fn decide(failure: &AttemptError, channel: &Channel) -> Decision {
    use Next::{Channel as NextChannel, Key, Stop};
    let (key, next, client) = match failure.class {
        FailureClass::KeyInvalid => (Verdict::Disable("key_invalid"), Key, ApiError::Upstream),
        FailureClass::QuotaExhausted => (Verdict::Disable("quota_exhausted"), Key, ApiError::Upstream),
        // A 403 may be about one account (another key may pass) or the region (none will): the
        // breaker decides, not one answer.
        FailureClass::PermissionDenied => (Verdict::Breaker, Key, ApiError::Upstream),
        // Our configuration, not the key: every key of the channel would fail alike.
        FailureClass::ChannelMisconfigured => (Verdict::Neutral, NextChannel, ApiError::Upstream),
        FailureClass::RateLimited { retry_after } => {
            (Verdict::CoolDown(retry_after), Key, ApiError::UpstreamOverloaded { retry_after })
        }
        FailureClass::Overloaded { retry_after } => {
            (Verdict::Breaker, NextChannel, ApiError::UpstreamOverloaded { retry_after })
        }
        FailureClass::ConnectionFailed | FailureClass::UpstreamServerError => {
            (Verdict::Breaker, NextChannel, ApiError::Upstream)
        }
        // Every node of the channel's proxy pool failed before the upstream was reached: the
        // proxies' breakers counted it, the key is not to blame; another channel may go another way.
        FailureClass::ProxyFailed => (Verdict::Neutral, NextChannel, ApiError::Upstream),
        // A connect timeout is cheap to retry; so is an upstream that said it timed out.
        FailureClass::Timeout(TimeoutPhase::Connect | TimeoutPhase::Reported) => {
            (Verdict::Breaker, NextChannel, ApiError::UpstreamTimeout)
        }
        // Waiting the first-byte budget again elsewhere would multiply the wait.
        FailureClass::Timeout(TimeoutPhase::FirstByte | TimeoutPhase::Idle) => {
            (Verdict::Breaker, Stop, ApiError::UpstreamTimeout)
        }
        // The duration cap is ours, not the upstream's fault, and would be reached again.
        FailureClass::Timeout(TimeoutPhase::Total) => (Verdict::Neutral, Stop, ApiError::UpstreamTimeout),
        FailureClass::InvalidResponse => (Verdict::Breaker, Stop, ApiError::UpstreamInvalidResponse),
        FailureClass::ClientError | FailureClass::ContextWindowExceeded | FailureClass::ContentFiltered => {
            (Verdict::Neutral, Stop, rejected(failure, channel))
        }
        // Another channel of another provider may honour it.
        FailureClass::Unsupported => (Verdict::Neutral, NextChannel, request_side(failure, true)),
        FailureClass::InvalidRequest => (Verdict::Neutral, Stop, request_side(failure, false)),
    };
    Decision { next, key, client }
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

/// The in-band error code a client gets when a stream that had started fails with `class` (the
/// attempt is logged with `class` itself). Overloaded and rate-limited keep their meaning (the
/// client may retry later); what is not a timeout or a broken stream is an upstream failure.
pub fn mid_stream_code(class: FailureClass) -> &'static str {
    match class {
        // Not the upstream's fault: the client is told the stream hit our bound.
        FailureClass::Timeout(TimeoutPhase::Total) => "stream_too_long",
        FailureClass::Timeout(_) => "upstream_timeout",
        FailureClass::InvalidResponse => "upstream_protocol_error",
        FailureClass::Overloaded { .. } | FailureClass::RateLimited { .. } => "upstream_overloaded",
        _ => "upstream_error",
    }
}

/// A request the gateway could not build for this channel (our own words, not the vendor's).
fn request_side(failure: &AttemptError, unsupported: bool) -> ApiError {
    let detail = failure.detail.clone().unwrap_or_default();
    // The parser's message may quote the client's own value (of any length): scrubbed and capped
    // like vendor text, so an answer never echoes an unbounded input.
    let message = detail.message.map_or_else(|| "The request could not be translated.".into(), |m| scrub(&m, &[]));
    match (unsupported, detail.param) {
        (true, Some(param)) => ApiError::Unsupported { param, message },
        (true, None) => ApiError::Unsupported { param: "model".into(), message },
        (false, param) => ApiError::InvalidJson { message, param },
    }
}

/// The operator's log line for a failed attempt: class, status and the vendor's text, scrubbed.
pub fn log_attempt(failure: &AttemptError, channel: &Channel, key_id: &str) {
    let secrets: Vec<&str> = channel.api_key.as_deref().into_iter().collect();
    let detail = failure.detail.as_ref();
    let message = detail.and_then(|d| d.message.as_deref()).map(|m| scrub(m, &secrets));
    let code = detail.and_then(|d| d.code.as_deref()).map(|c| scrub(c, &secrets));
    let class = failure.class.as_str();
    if failure.class.is_about_channel() {
        tracing::error!(channel_id = %channel.id, key_id, class, status = failure.status, code, message,
            "The upstream refused our channel's key; trying the next key or channel.");
    } else {
        tracing::warn!(channel_id = %channel.id, key_id, class, status = failure.status, code, message,
            "Upstream attempt failed.");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use adapters::failure::VendorDetail;
    use adapters::presets;

    const KEY: &str = "weird-channel-key-0001";

    fn channel() -> Channel {
        Channel {
            id: "ch_t".into(),
            tenant: schemas::GLOBAL_TENANT.into(),
            provider: "openai".into(),
            preset: presets::for_provider("openai"),
            api_version: None,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: Some(KEY.into()),
            key_unusable: false,
            models: vec![],
            priority: 0,
            weight: 1,
            enabled: true,
            egress_refused: None,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }
    }

    fn failure(class: FailureClass, status: u16, message: &str) -> AttemptError {
        AttemptError::status(class, status).with_detail(VendorDetail {
            message: Some(message.into()),
            param: None,
            code: Some("some_code".into()),
        })
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn channel_errors_go_to_the_next_channel_with_a_generic_answer_and_client_errors_stop() {
        let ch = channel();
        let ours = decide(&failure(FailureClass::QuotaExhausted, 402, "owner a@b.example must pay"), &ch);
        assert_eq!((ours.next, ours.key), (Next::Key, Verdict::Disable("quota_exhausted")));
        assert!(matches!(ours.client, ApiError::Upstream));
        let theirs = decide(&failure(FailureClass::ClientError, 422, &format!("bad 'n' for key {KEY}")), &ch);
        assert_eq!((theirs.next, theirs.key), (Next::Stop, Verdict::Neutral));
        assert_eq!(theirs.client.status_code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(theirs.client.to_string(), "bad 'n' for key [redacted]");
        let first_byte = decide(&AttemptError::new(FailureClass::Timeout(TimeoutPhase::FirstByte)), &ch);
        assert!(first_byte.next == Next::Stop && matches!(first_byte.client, ApiError::UpstreamTimeout));
        assert_eq!(first_byte.key, Verdict::Breaker);
        let limited = decide(&AttemptError::new(FailureClass::RateLimited { retry_after: Some(4) }), &ch);
        assert_eq!((limited.next, limited.key), (Next::Key, Verdict::CoolDown(Some(4))));
        let down = decide(&AttemptError::status(FailureClass::UpstreamServerError, 503), &ch);
        assert_eq!((down.next, down.key), (Next::Channel, Verdict::Breaker));
        let invalid = decide(&AttemptError::status(FailureClass::KeyInvalid, 401), &ch);
        assert_eq!((invalid.next, invalid.key), (Next::Key, Verdict::Disable("key_invalid")));
        assert!(matches!(limited.client, ApiError::UpstreamOverloaded { retry_after: Some(4) }));
        let proxies = decide(&AttemptError::new(FailureClass::ProxyFailed), &ch);
        assert_eq!(
            (proxies.next, proxies.key),
            (Next::Channel, Verdict::Neutral),
            "a proxy's failure is not the key's"
        );
        assert!(matches!(proxies.client, ApiError::Upstream));
    }

    #[test]
    fn the_operators_log_line_names_the_class_and_holds_no_secret() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
        tracing::subscriber::with_default(subscriber, || {
            log_attempt(
                &failure(
                    FailureClass::KeyInvalid,
                    400,
                    &format!("Incorrect API key provided: {KEY}; owner ops@acme.example, org org-AbC123"),
                ),
                &channel(),
                "ukey_t",
            );
        });
        let text = out.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        assert!(text.contains("key_invalid") && text.contains("ch_t") && text.contains("400"), "{text}");
        assert!(text.contains("Incorrect API key provided"), "{text}");
        for secret in [KEY, "ops@", "org-AbC"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn a_started_stream_tells_the_client_one_code_per_class() {
        assert_eq!(mid_stream_code(FailureClass::Timeout(TimeoutPhase::Idle)), "upstream_timeout");
        assert_eq!(mid_stream_code(FailureClass::InvalidResponse), "upstream_protocol_error");
        assert_eq!(mid_stream_code(FailureClass::RateLimited { retry_after: None }), "upstream_overloaded");
        assert_eq!(mid_stream_code(FailureClass::Overloaded { retry_after: Some(3) }), "upstream_overloaded");
        assert_eq!(mid_stream_code(FailureClass::UpstreamServerError), "upstream_error");
        assert_eq!(mid_stream_code(FailureClass::ConnectionFailed), "upstream_error");
    }
}
