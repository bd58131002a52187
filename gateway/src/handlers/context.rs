//! Per-request context middleware: the request id (returned as `x-request-id` on every
//! response) and authentication (the key goes into the request extensions).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

use crate::auth;
use crate::ctx::{AppState, Caller, RequestId};
use crate::error::ApiError;
use crate::protocol::Protocol;
use crate::state::KeyEntry;

/// Assigns the request id and puts it on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = Arc::from(uuid::Uuid::now_v7().to_string());
    req.extensions_mut().insert(RequestId { id: id.clone(), started: Instant::now() });
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Authenticates; a failure is answered here (and logged as a request) without reaching a handler.
/// Anthropic's routes also take the key from `x-api-key` and answer in Anthropic's shape.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let snapshot = app.snapshot();
    let protocol = protocol_of(&req);
    let authenticated = match protocol {
        Protocol::OpenAi => auth::authenticate(req.headers(), &snapshot),
        Protocol::Anthropic => auth::authenticate_anthropic(req.headers(), &snapshot),
        Protocol::Gemini => auth::authenticate_gemini(req.headers(), req.uri().query(), &snapshot),
    };
    match authenticated {
        Ok(key) => {
            drop(snapshot);
            req.extensions_mut().insert(Caller(key));
            next.run(req).await
        }
        Err(e) => {
            if let Some(rid) = req.extensions().get::<RequestId>() {
                let endpoint = endpoint_of(req.uri().path());
                log_request(&app, rid, None, endpoint, None, &e);
            }
            e.into_response_for(protocol)
        }
    }
}

/// The protocol of the surface a request is on: Gemini's below `/v1beta/`, for
/// `/v1/models/{model}:{action}` and for model listing with `x-goog-api-key`; Anthropic's for
/// `/v1/messages` and below, or `GET /v1/models` from an Anthropic SDK (which sends
/// `anthropic-version` and its key in `x-api-key`); OpenAI's otherwise.
pub fn protocol_of(req: &Request) -> Protocol {
    let path = req.uri().path();
    let gemini_v1 = path.strip_prefix("/v1/models/").is_some_and(|rest| rest.contains(':'))
        || (path.starts_with("/v1/models") && req.headers().contains_key("x-goog-api-key"));
    if path.starts_with("/v1beta/") || path == "/v1beta" || gemini_v1 {
        Protocol::Gemini
    } else if path == "/v1/messages"
        || path.starts_with("/v1/messages/")
        || (path == "/v1/models" && req.headers().contains_key("anthropic-version"))
    {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

fn endpoint_of(path: &str) -> &'static str {
    match path {
        "/v1/chat/completions" => "chat.completions",
        "/v1/completions" => "completions",
        "/v1/embeddings" => "embeddings",
        "/v1/messages" => "messages",
        "/v1/messages/count_tokens" => "messages.count_tokens",
        p if p.starts_with("/v1beta/models/") || p.contains(':') => "generate_content",
        _ => "models",
    }
}

/// Appends `request.logged` (without waiting) for a request answered with `error`.
pub fn log_request(
    app: &AppState,
    rid: &RequestId,
    key: Option<&KeyEntry>,
    endpoint: &str,
    model: Option<&str>,
    error: &ApiError,
) {
    append_logged(app, rid, key, endpoint, model, error.status_code().as_u16(), Some(error.class().to_owned()));
}

/// Appends `request.logged` (without waiting) for a request the gateway answered itself with a
/// 200 (model lists, token counts): no upstream, no usage.
pub fn log_answered(app: &AppState, rid: &RequestId, key: &KeyEntry, endpoint: &str, model: Option<&str>) {
    append_logged(app, rid, Some(key), endpoint, model, 200, None);
}

fn append_logged(
    app: &AppState,
    rid: &RequestId,
    key: Option<&KeyEntry>,
    endpoint: &str,
    model: Option<&str>,
    status: u16,
    error_class: Option<String>,
) {
    app.log_request(rid, key, rid.logged(key, endpoint, model, status, error_class));
}
