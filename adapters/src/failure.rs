//! Why one upstream attempt failed, as a typed class every adapter reports. Each adapter's
//! `error.rs` recognises its vendor's statuses and bodies and picks the class; what the router does
//! with a class (try the next channel or not, what the client is told) is decided in one table in
//! the gateway's `call::policy`, never here. No axum, no app state: adapters must stay callable from
//! outside the gateway (health probes).

/// When a timeout struck.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// The TCP/TLS connection was not established in time.
    Connect,
    /// Connected, but no response headers (or, for a stream, no first event) in time.
    FirstByte,
    /// The body stopped arriving between two chunks.
    Idle,
    /// The upstream itself answered that it timed out (408, Gemini's 504).
    Reported,
    /// The stream reached the gateway's own maximum stream duration: a bound we set, not a
    /// fault of the upstream (it is never counted against a key or channel).
    Total,
}

/// The class of an attempt failure. Stable: [`FailureClass::as_str`] is written into
/// `request.logged` and read by projections and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Our channel's key is refused (401, vendor "invalid key" bodies, a key that is not a valid
    /// header value).
    KeyInvalid,
    /// Our channel's key is valid but may not do this (403 permission, region, organization or
    /// account problems).
    PermissionDenied,
    /// Our channel's account is out of money or quota (402, `insufficient_quota`, "Insufficient
    /// Balance", billing not active, credit balance too low).
    QuotaExhausted,
    /// The channel is configured for something the upstream does not have (a vendor 404 for our
    /// deployment or fine-tune name, a base URL that does not parse).
    ChannelMisconfigured,
    /// The upstream rate-limits our key (429).
    RateLimited {
        /// Seconds from `Retry-After` (or the vendor's own retry hint).
        retry_after: Option<u64>,
    },
    /// The upstream is overloaded (Anthropic's 529, a 503 that says so).
    Overloaded {
        /// Seconds from `Retry-After`, when given.
        retry_after: Option<u64>,
    },
    /// A timeout, and when it struck.
    Timeout(TimeoutPhase),
    /// DNS, refused or reset connection, TLS failure, or a stream closed before its first event.
    ConnectionFailed,
    /// The egress proxy could not be reached or refused the handshake (or every node of the
    /// channel's pool failed before the upstream was reached): never the upstream key's fault.
    ProxyFailed,
    /// The upstream failed (5xx, or an error object inside a 200).
    UpstreamServerError,
    /// A 200 that is not the protocol: HTML, truncated JSON, a stream that is not SSE.
    InvalidResponse,
    /// The upstream refused the request itself (a 4xx caused by what the client sent).
    ClientError,
    /// The prompt does not fit the model's context window.
    ContextWindowExceeded,
    /// The upstream refused the prompt under its content policy.
    ContentFiltered,
    /// The request asks for something this adapter cannot express (another provider may).
    Unsupported,
    /// The client's body could not be read for translation (the same on every channel).
    InvalidRequest,
}

impl FailureClass {
    /// The stable snake_case name logged in `request.logged`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::KeyInvalid => "key_invalid",
            FailureClass::PermissionDenied => "permission_denied",
            FailureClass::QuotaExhausted => "quota_exhausted",
            FailureClass::ChannelMisconfigured => "channel_misconfigured",
            FailureClass::RateLimited { .. } => "rate_limited",
            FailureClass::Overloaded { .. } => "overloaded",
            FailureClass::Timeout(TimeoutPhase::Connect) => "connect_timeout",
            FailureClass::Timeout(TimeoutPhase::FirstByte) => "first_byte_timeout",
            FailureClass::Timeout(TimeoutPhase::Idle) => "idle_timeout",
            FailureClass::Timeout(TimeoutPhase::Reported) => "upstream_timeout",
            FailureClass::Timeout(TimeoutPhase::Total) => "stream_too_long",
            FailureClass::ConnectionFailed => "connection_failed",
            FailureClass::ProxyFailed => "proxy_failed",
            FailureClass::UpstreamServerError => "upstream_server_error",
            FailureClass::InvalidResponse => "invalid_response",
            FailureClass::ClientError => "client_error",
            FailureClass::ContextWindowExceeded => "context_window_exceeded",
            FailureClass::ContentFiltered => "content_filtered",
            FailureClass::Unsupported => "unsupported",
            FailureClass::InvalidRequest => "invalid_request",
        }
    }

    /// Whether the failure is about our channel (its key, account, quota or configuration) rather
    /// than the request: the vendor's words about it never reach the client.
    pub fn is_about_channel(self) -> bool {
        matches!(
            self,
            FailureClass::KeyInvalid
                | FailureClass::PermissionDenied
                | FailureClass::QuotaExhausted
                | FailureClass::ChannelMisconfigured
        )
    }
}

/// What the vendor said, as read from its error body (unscrubbed: it may hold our key or account
/// names; [`crate::scrub`] it before it goes anywhere).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VendorDetail {
    /// The vendor's message.
    pub message: Option<String>,
    /// The vendor's `param`, when it names one.
    pub param: Option<String>,
    /// The vendor's code or error type (`invalid_request_error`, `INVALID_ARGUMENT`, …).
    pub code: Option<String>,
}

/// Why an attempt failed. Nothing has reached the client when an attempt fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    /// The class the router acts on.
    pub class: FailureClass,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// The upstream's own description, when it gave one (or ours, for request-side classes).
    pub detail: Option<VendorDetail>,
}

impl AttemptError {
    /// A failure of `class` without a status or detail.
    pub fn new(class: FailureClass) -> AttemptError {
        AttemptError { class, status: None, detail: None }
    }

    /// A failure of `class` for an upstream answer of `status`.
    pub fn status(class: FailureClass, status: u16) -> AttemptError {
        AttemptError { class, status: Some(status), detail: None }
    }

    /// Adds the vendor's description.
    pub fn with_detail(mut self, detail: impl Into<Option<VendorDetail>>) -> AttemptError {
        self.detail = detail.into();
        self
    }
}

/// The rest a `Retry-After` value asks for, in whole seconds (RFC 9110 §10.2.3): delay-seconds,
/// or an HTTP date (IMF-fixdate, or the obsolete RFC 850 and asctime forms a recipient must
/// accept) counted from `now` and rounded up, so the rest never ends before the date the vendor
/// named; a date already past is 0. Anything else (garbage, a negative or fractional number) is
/// `None`, so the caller's default rest applies. The caller caps the result.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is still "a long time", not garbage.
        return Some(value.parse::<u64>().unwrap_or(u64::MAX));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at.duration_since(now).unwrap_or_default();
    Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
}

/// Lower-cased `text` contains any of `needles` (given lower-case).
pub(crate) fn mentions(text: &str, needles: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    needles.iter().any(|n| lower.contains(n))
}

/// Classes shared by every vendor for statuses whose meaning does not depend on the body.
pub(crate) fn by_status(status: u16, retry_after: Option<u64>) -> Option<FailureClass> {
    Some(match status {
        401 => FailureClass::KeyInvalid,
        402 => FailureClass::QuotaExhausted,
        403 => FailureClass::PermissionDenied,
        404 => FailureClass::ChannelMisconfigured,
        408 => FailureClass::Timeout(TimeoutPhase::Reported),
        429 => FailureClass::RateLimited { retry_after },
        529 => FailureClass::Overloaded { retry_after },
        500..=599 => FailureClass::UpstreamServerError,
        _ => return None,
    })
}

/// A message that says the API key itself is wrong (vendors that answer 400 instead of 401).
pub(crate) fn says_key_invalid(message: &str) -> bool {
    mentions(
        message,
        &["incorrect api key", "invalid api key", "api key not valid", "invalid x-api-key", "api_key_invalid"],
    )
}

/// A message that says the account has no money or quota left.
pub(crate) fn says_quota_exhausted(message: &str) -> bool {
    mentions(
        message,
        &[
            "insufficient balance",
            "insufficient_quota",
            "exceeded your current quota",
            "credit balance is too low",
            "billing",
            "payment required",
        ],
    )
}

/// A message that says the prompt is too long for the model.
pub(crate) fn says_context_exceeded(message: &str) -> bool {
    mentions(
        message,
        &[
            "context length",
            "context_length_exceeded",
            "context window",
            "prompt is too long",
            "exceeds the maximum number of tokens",
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date_and_ignores_garbage() {
        use std::time::{Duration, SystemTime};
        // Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110.
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_millis(2_500);
        assert_eq!(parse_retry_after("2", now), Some(2));
        assert_eq!(parse_retry_after(" 120 ", now), Some(120));
        assert_eq!(parse_retry_after("0", now), Some(0));
        assert_eq!(parse_retry_after("99999999999999999999999", now), Some(u64::MAX));
        // The three date forms; 2.5 s away rounds up to 3.
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(3));
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(3));
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994", now), Some(3));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", date + Duration::from_secs(60)), Some(0));
        for garbage in ["", "soon", "-5", "1.5", "2 s", "Sun, 06 Nov 1994 25:61:00 GMT", "Sun, 06 Nov 1994"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn every_class_has_a_distinct_stable_name() {
        let all = [
            FailureClass::KeyInvalid,
            FailureClass::PermissionDenied,
            FailureClass::QuotaExhausted,
            FailureClass::ChannelMisconfigured,
            FailureClass::RateLimited { retry_after: None },
            FailureClass::Overloaded { retry_after: None },
            FailureClass::Timeout(TimeoutPhase::Connect),
            FailureClass::Timeout(TimeoutPhase::FirstByte),
            FailureClass::Timeout(TimeoutPhase::Idle),
            FailureClass::Timeout(TimeoutPhase::Reported),
            FailureClass::ConnectionFailed,
            FailureClass::ProxyFailed,
            FailureClass::UpstreamServerError,
            FailureClass::InvalidResponse,
            FailureClass::ClientError,
            FailureClass::ContextWindowExceeded,
            FailureClass::ContentFiltered,
            FailureClass::Unsupported,
            FailureClass::InvalidRequest,
        ];
        let names: std::collections::BTreeSet<&str> = all.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }
}
