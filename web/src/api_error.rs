//! Errors of the admin API (`/api/*`): `{"error": {"message", "type", "code"}}` with the status
//! that says what went wrong. Messages never carry secrets, and another tenant's objects are
//! "not found", never "forbidden".

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An admin API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    code: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, code, message: message.into(), retry_after: None }
    }

    /// 400: a malformed request.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", code, message)
    }

    /// 422: well-formed, but the values are refused.
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request_error", code, message)
    }

    /// 401: no valid session.
    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_session",
            "Log in first (POST /api/auth/login); the session is missing, expired or revoked.",
        )
    }

    /// 401: wrong email or password (one message for both).
    pub fn bad_credentials() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_credentials",
            "Invalid email or password.",
        )
    }

    /// 403: the role does not allow it.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "permission_error", "forbidden", message)
    }

    /// 403: a cookie-authenticated write without the CSRF header.
    pub fn csrf() -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "csrf_failed",
            "A write with the session cookie needs the X-CSRF-Token header (the llmr_csrf cookie's value) from this origin.",
        )
    }

    /// 404.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found_error", "not_found", format!("No such {what}."))
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict_error", code, message)
    }

    /// 429 with `Retry-After`.
    pub fn throttled(wait: Duration) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "login_throttled",
            "Too many failed logins; try again later.",
        );
        e.retry_after = Some(wait);
        e
    }

    /// 503: busy or a dependency is down.
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", code, message);
        e.retry_after = Some(Duration::from_secs(1));
        e
    }

    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method_not_allowed",
            "This path does not take this method; the Allow header lists the ones it takes.",
        )
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// How long the client should wait before trying again, when the error says.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl From<control::AdminError> for ApiError {
    fn from(e: control::AdminError) -> ApiError {
        use control::AdminError as E;
        match &e {
            E::InvalidTenant(_)
            | E::BadEmail
            | E::BadPassword(_)
            | E::NoUserChange
            | E::BadDisplayName
            | E::BadTimeZone(_) => ApiError::unprocessable("invalid_value", e.to_string()),
            E::ExpiryPast => ApiError::bad_request("invalid_value", e.to_string()),
            E::NoTenant(_) => ApiError::not_found("tenant"),
            E::NoUser => ApiError::not_found("user"),
            E::UserExists(_) => ApiError::conflict("user_exists", e.to_string()),
            E::TenantExists(_) => ApiError::conflict("tenant_exists", e.to_string()),
            E::AlreadyRevoked(_) => ApiError::conflict("already_revoked", e.to_string()),
            E::NoKey(_) => ApiError::not_found("key"),
            E::NoChannel(_) => ApiError::not_found("channel"),
            E::NoProxy(_) => ApiError::not_found("proxy"),
            E::NoRoute(_) => ApiError::not_found("route"),
            E::UnknownPool(_) => ApiError::unprocessable("unknown_pool", e.to_string()),
            E::ProxyNameTaken(_) => ApiError::conflict("proxy_exists", e.to_string()),
            E::DuplicateProxy(_) => ApiError::conflict("duplicate_proxy", e.to_string()),
            E::TooManyProxies(_) => ApiError::conflict("too_many_proxies", e.to_string()),
            E::UserDisabled(_) => ApiError::conflict("user_disabled", e.to_string()),
            E::ChannelNameTaken(_) => ApiError::conflict("channel_exists", e.to_string()),
            E::NoUpstreamKey { .. } => ApiError::not_found("upstream key"),
            E::DuplicateApiKey(..) => ApiError::conflict("duplicate_key", e.to_string()),
            E::LastApiKey(_) => ApiError::conflict("last_key", e.to_string()),
            E::KeyStateUnchanged(..) | E::ProxyStateUnchanged(..) => {
                ApiError::conflict("state_unchanged", e.to_string())
            }
            E::TooManyApiKeys(_) => ApiError::conflict("too_many_keys", e.to_string()),
            E::LastOwner(_) => ApiError::conflict("last_owner", e.to_string()),
            E::Busy => ApiError::conflict("busy", e.to_string()),
            E::KeyUnopenable(_) => {
                tracing::error!(error = %e, "A channel key cannot be opened with this master key.");
                ApiError::unavailable("key_unopenable", "A key of this channel cannot be opened here.")
            }
            E::Append { .. } | E::Log { .. } | E::Hashing => {
                tracing::warn!(error = %e, "Admin API write failed.");
                ApiError::unavailable("log_unavailable", "The event log is unavailable; nothing was changed.")
            }
            _ => ApiError::unprocessable("invalid_value", e.to_string()),
        }
    }
}

impl From<projections::ProjectionError> for ApiError {
    fn from(e: projections::ProjectionError) -> ApiError {
        tracing::warn!(error = %e, "Read store unavailable.");
        ApiError::unavailable("read_store_unavailable", "The read store is unavailable.")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"message": self.message, "type": self.kind, "code": self.code}});
        let mut res = (self.status, Json(body)).into_response();
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs().max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        res
    }
}
