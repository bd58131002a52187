//! Per-request context middleware: the request id (returned as `x-request-id` on every
//! response) and authentication (the key goes into the request extensions).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
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

/// Authenticates; a failure is answered here without reaching a handler. Failures are not logged
/// one by one: they are counted (`auth_failures`) into one `auth.failures_counted` event per
/// interval, and a client address that failed too often gets 429 before its key is even hashed.
/// Anthropic's routes also take the key from `x-api-key` and answer in Anthropic's shape.
pub async fn authenticate(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    // Set by the route group (`routes`); every route has one.
    let protocol = req.extensions().get::<Protocol>().copied().unwrap_or(Protocol::OpenAi);
    // The socket's address (never `X-Forwarded-For`, which any client can write).
    let client = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(retry_after) = app.auth_failures.throttled(client) {
        return ApiError::AuthThrottled { retry_after }.into_response_for(protocol);
    }
    let authenticated = match protocol {
        Protocol::OpenAi => auth::authenticate(req.headers(), &app.control).await,
        Protocol::Anthropic => auth::authenticate_anthropic(req.headers(), &app.control).await,
        Protocol::Gemini => auth::authenticate_gemini(req.headers(), req.uri().query(), &app.control).await,
    };
    match authenticated {
        Ok(key) => {
            req.extensions_mut().insert(Caller(key));
            next.run(req).await
        }
        Err(failure) => {
            app.auth_failures.record(client, failure);
            ApiError::InvalidApiKey.into_response_for(protocol)
        }
    }
}

/// The protocol of a request on the routes every SDK shares (`/v1/models` and below): Gemini's for
/// `/v1/models/{model}:{action}` (the `google-genai` SDK given a base URL) and for a request with
/// `x-goog-api-key`; Anthropic's for a request from an Anthropic SDK (it sends
/// `anthropic-version`, and its key in `x-api-key`); OpenAI's otherwise.
pub fn negotiate_models(req: &Request) -> Protocol {
    let action = req.uri().path().strip_prefix("/v1/models/").is_some_and(|rest| rest.contains(':'));
    if action || req.headers().contains_key("x-goog-api-key") {
        Protocol::Gemini
    } else if req.headers().contains_key("anthropic-version") {
        Protocol::Anthropic
    } else {
        Protocol::OpenAi
    }
}

/// Puts [`negotiate_models`]' answer into the request extensions, as the other route groups'
/// fixed protocol is.
pub async fn negotiate(mut req: Request, next: Next) -> Response {
    let protocol = negotiate_models(&req);
    req.extensions_mut().insert(protocol);
    next.run(req).await
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
