//! Errors of the `/v1` surface, answered in OpenAI's shape
//! `{"error":{"message","type","param","code"}}`, and the startup error of [`crate::Gateway`].
//! Messages never contain a key, an `Authorization` value, an upstream URL or prompt text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

/// Why a `/v1` request failed.
///
/// A wrong key is answered with `type: "authentication_error"` (OpenAI itself says
/// `invalid_request_error` there); we follow the error-type list every route of this project uses,
/// so clients can tell "fix your key" from "fix your request" by `type` alone. The `code`
/// (`invalid_api_key`) is OpenAI's.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing, malformed, unknown or revoked key: always the same answer.
    #[error("Invalid API key.")]
    InvalidApiKey,
    /// This client address failed authentication too often; its key is not even looked at.
    #[error("Too many failed authentications from this address; retry later.")]
    AuthThrottled {
        /// Seconds until the address may try again (`Retry-After`).
        retry_after: u64,
    },
    /// The request body did not arrive within the server's body-read deadline.
    #[error("The request body was not received in time.")]
    RequestTimeout,
    /// The path exists but not with this method.
    #[error("Method not allowed for this URL.")]
    MethodNotAllowed,
    /// Body larger than the limit.
    #[error("Request body is larger than the limit of {limit} bytes.")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Body is not valid JSON (or not UTF-8), or a field has the wrong type.
    #[error("{message}")]
    InvalidJson {
        /// What is wrong.
        message: String,
        /// The failing field path, when known.
        param: Option<String>,
    },
    /// A field we refuse to forward (`api_base`, `base_url`, `api_key`, proxy fields, …).
    #[error("Unsupported parameter: '{param}' is not allowed.")]
    UnsupportedParameter {
        /// The offending field.
        param: String,
    },
    /// A field the chosen upstream cannot honour (e.g. `logprobs` for an Anthropic model).
    #[error("{message}")]
    Unsupported {
        /// The client's field path.
        param: String,
        /// Why.
        message: String,
    },
    /// A field's value is out of its range or over its length limit ([`crate::limits`]). The
    /// message names the field and the bound, never the value.
    #[error("{message}")]
    InvalidValue {
        /// The field path.
        param: String,
        /// OpenAI's code: `string_above_max_length`, `integer_above_max_value`, `invalid_type`, …
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A required field is missing.
    #[error("Missing required parameter: '{param}'.")]
    MissingParameter {
        /// The missing field.
        param: String,
    },
    /// Unknown model, or a model the key may not use (same answer to avoid enumeration).
    #[error("The model `{}` does not exist or you do not have access to it.", crate::limits::shown_model(.model))]
    ModelNotFound {
        /// The model asked for.
        model: String,
    },
    /// No route under `/v1` matched.
    #[error("Unknown request URL.")]
    UnknownRoute,
    /// The upstream did not answer in time.
    #[error("The upstream provider did not respond in time.")]
    UpstreamTimeout,
    /// Connection failure, upstream 5xx, or an upstream refusing our credential.
    #[error("The upstream provider failed to handle the request.")]
    Upstream,
    /// Every candidate upstream is rate limiting us.
    #[error("The upstream provider is overloaded; retry later.")]
    UpstreamOverloaded {
        /// Seconds, passed on from the upstream's `Retry-After`.
        retry_after: Option<u64>,
    },
    /// Every key of every candidate channel is out of rotation (resting after a 429, breaker
    /// open, disabled): nothing was sent upstream.
    #[error("No upstream is available for this model right now; retry later.")]
    NoHealthyUpstream {
        /// Seconds until the first key returns to rotation (none when no key will by itself).
        retry_after: Option<u64>,
    },
    /// The upstream said 200 but sent something that is not the protocol.
    #[error("The upstream provider returned an invalid response.")]
    UpstreamInvalidResponse,
    /// The upstream refused the request itself (4xx): passed on in OpenAI shape.
    #[error("{message}")]
    UpstreamRejected {
        /// The upstream status (400, 404, 413, 422…).
        status: StatusCode,
        /// The upstream's message.
        message: String,
        /// The upstream's `param`.
        param: Option<String>,
        /// The upstream's `code`.
        code: Option<String>,
    },
    /// The usage event could not be made durable (spool full, writer gone): the answer is withheld.
    #[error("The service is temporarily unable to record usage; retry later.")]
    UsageNotRecorded,
    /// A bug or a lost task.
    #[error("Internal server error.")]
    Internal,
}

impl ApiError {
    /// The HTTP status.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidApiKey => StatusCode::UNAUTHORIZED,
            ApiError::AuthThrottled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::InvalidJson { .. }
            | ApiError::UnsupportedParameter { .. }
            | ApiError::Unsupported { .. }
            | ApiError::InvalidValue { .. }
            | ApiError::MissingParameter { .. } => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound { .. } | ApiError::UnknownRoute => StatusCode::NOT_FOUND,
            ApiError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Upstream | ApiError::UpstreamInvalidResponse => StatusCode::BAD_GATEWAY,
            ApiError::UpstreamOverloaded { .. } | ApiError::NoHealthyUpstream { .. } | ApiError::UsageNotRecorded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::UpstreamRejected { status, .. } => *status,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// OpenAI's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidApiKey => "authentication_error",
            ApiError::AuthThrottled { .. } => "rate_limit_error",
            ApiError::TooLarge { .. }
            | ApiError::RequestTimeout
            | ApiError::MethodNotAllowed
            | ApiError::InvalidJson { .. }
            | ApiError::UnsupportedParameter { .. }
            | ApiError::Unsupported { .. }
            | ApiError::InvalidValue { .. }
            | ApiError::MissingParameter { .. }
            | ApiError::ModelNotFound { .. }
            | ApiError::UnknownRoute
            | ApiError::UpstreamRejected { .. } => "invalid_request_error",
            ApiError::UpstreamTimeout
            | ApiError::Upstream
            | ApiError::UpstreamOverloaded { .. }
            | ApiError::NoHealthyUpstream { .. }
            | ApiError::UpstreamInvalidResponse => "upstream_error",
            ApiError::UsageNotRecorded | ApiError::Internal => "server_error",
        }
    }

    /// OpenAI's `code`; also the stable error class in `request.logged`.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            ApiError::InvalidApiKey => "invalid_api_key",
            ApiError::AuthThrottled { .. } => "too_many_failed_authentications",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::TooLarge { .. } => "request_too_large",
            ApiError::InvalidJson { .. } => "invalid_json",
            ApiError::UnsupportedParameter { .. } | ApiError::Unsupported { .. } => "unsupported_parameter",
            ApiError::InvalidValue { code, .. } => *code,
            ApiError::MissingParameter { .. } => "missing_required_parameter",
            ApiError::ModelNotFound { .. } => "model_not_found",
            ApiError::UnknownRoute => "unknown_url",
            ApiError::UpstreamTimeout => "upstream_timeout",
            ApiError::Upstream => "upstream_error",
            ApiError::UpstreamOverloaded { .. } => "upstream_overloaded",
            ApiError::NoHealthyUpstream { .. } => "no_healthy_upstream",
            ApiError::UpstreamInvalidResponse => "upstream_invalid_response",
            ApiError::UpstreamRejected { code, .. } => return code.as_deref(),
            ApiError::UsageNotRecorded => "usage_not_recorded",
            ApiError::Internal => "internal_error",
        })
    }

    /// The stable class recorded in `request.logged`.
    pub fn class(&self) -> &str {
        match self {
            // OpenAI and Azure refuse a filtered prompt with a 400 of this code.
            ApiError::UpstreamRejected { code: Some(c), .. }
                if matches!(c.as_str(), "content_filter" | "content_policy_violation") =>
            {
                "content_filtered"
            }
            ApiError::UpstreamRejected { code: Some(c), .. } if c == "context_length_exceeded" => {
                "context_window_exceeded"
            }
            ApiError::UpstreamRejected { .. } => "upstream_rejected",
            other => other.code().unwrap_or("error"),
        }
    }

    fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidJson { param, .. } | ApiError::UpstreamRejected { param, .. } => param.as_deref(),
            ApiError::UnsupportedParameter { param }
            | ApiError::MissingParameter { param }
            | ApiError::Unsupported { param, .. }
            | ApiError::InvalidValue { param, .. } => Some(param),
            ApiError::ModelNotFound { .. } => Some("model"),
            _ => None,
        }
    }

    /// The JSON body `{"error":{…}}`.
    pub fn body(&self) -> Bytes {
        error_body(&self.to_string(), self.kind(), self.param(), self.code())
    }
}

impl ApiError {
    /// Anthropic's error `type` for this error (by status, as Anthropic's own API assigns them).
    pub fn anthropic_kind(&self) -> &'static str {
        match self.status_code().as_u16() {
            400 | 422 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 if matches!(self, ApiError::UpstreamOverloaded { .. } | ApiError::NoHealthyUpstream { .. }) => {
                "overloaded_error"
            }
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    /// The body in Anthropic's shape `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> Bytes {
        let v =
            serde_json::json!({"type": "error", "error": {"type": self.anthropic_kind(), "message": self.to_string()}});
        Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
    }

    /// The body in Gemini's shape `{"error":{"code","message","status"}}`.
    pub fn gemini_body(&self) -> Bytes {
        let code = self.status_code().as_u16();
        let status = crate::codec::gemini::status_name(code);
        Bytes::from(crate::codec::gemini::error_payload(code, status, &self.to_string()))
    }

    /// The response in the shape of `protocol`.
    pub fn into_response_for(self, protocol: crate::protocol::Protocol) -> Response {
        let body = match protocol {
            crate::protocol::Protocol::OpenAi => return self.into_response(),
            crate::protocol::Protocol::Anthropic => self.anthropic_body(),
            crate::protocol::Protocol::Gemini => self.gemini_body(),
        };
        let mut resp = self.into_response();
        *resp.body_mut() = axum::body::Body::from(body);
        resp
    }
}

/// Serialises an OpenAI error object.
pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Bytes {
    let v = serde_json::json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status_code(), self.body()).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let retry_after = match self {
            ApiError::UpstreamOverloaded { retry_after: Some(s) }
            | ApiError::NoHealthyUpstream { retry_after: Some(s) }
            | ApiError::AuthThrottled { retry_after: s } => Some(s),
            _ => None,
        };
        if let Some(s) = retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if matches!(self, ApiError::RequestTimeout) {
            // The rest of the body is not read: the connection cannot carry another request.
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Why the gateway could not start. Never becomes a response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The event log could not be read.
    #[error("failed to read the control stream: {0}")]
    Log(#[from] nats::LogError),
    /// The upstream HTTP client could not be built.
    #[error("failed to build the upstream HTTP client: {0}")]
    HttpClient(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_content_filter_refusals_have_their_own_class() {
        let rejected = |code: &str| ApiError::UpstreamRejected {
            status: StatusCode::BAD_REQUEST,
            message: "filtered".into(),
            param: None,
            code: Some(code.into()),
        };
        assert_eq!(rejected("content_filter").class(), "content_filtered");
        assert_eq!(rejected("content_policy_violation").class(), "content_filtered");
        assert_eq!(rejected("invalid_value").class(), "upstream_rejected");
        assert_eq!(ApiError::UpstreamOverloaded { retry_after: None }.class(), "upstream_overloaded");
    }
}
