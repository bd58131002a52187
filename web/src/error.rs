//! The read side's one error type, rendered in OpenAI's error shape on `/v1/*` and `/api/*`.
//! 5xx answers carry a generic message; the detail goes to the log.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a read request failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// Missing, unknown or revoked key.
    #[error("Invalid API key.")]
    InvalidKey,
    /// A query parameter is malformed.
    #[error("{message}")]
    BadParam {
        /// What is wrong.
        message: String,
        /// Which parameter.
        param: &'static str,
    },
    /// `scope=tenant` from a key that was not granted its tenant's usage.
    #[error("This key may read only its own usage.")]
    ScopeNotGranted,
    /// The read store failed (e.g. Postgres down).
    #[error("read store: {0}")]
    Store(#[from] projections::ProjectionError),
}

impl WebError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebError::InvalidKey => StatusCode::UNAUTHORIZED,
            WebError::BadParam { .. } => StatusCode::BAD_REQUEST,
            WebError::ScopeNotGranted => StatusCode::FORBIDDEN,
            WebError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match &self {
            WebError::InvalidKey => json!({"error": {
                "message": "Invalid API key.", "type": "authentication_error", "param": null, "code": "invalid_api_key"}}),
            WebError::BadParam { message, param } => json!({"error": {
                "message": message, "type": "invalid_request_error", "param": param, "code": "invalid_parameter"}}),
            WebError::ScopeNotGranted => json!({"error": {
                "message": "This key may read only its own usage; a key issued with --tenant-usage reads the whole tenant's.",
                "type": "permission_error", "param": "scope", "code": "scope_not_granted"}}),
            WebError::Store(e) => {
                tracing::warn!(error = %e, "Read store unavailable.");
                json!({"error": {
                    "message": "Usage data is temporarily unavailable; completions are not affected.",
                    "type": "server_error", "param": null, "code": "read_store_unavailable"}})
            }
        };
        (status, Json(body)).into_response()
    }
}
