//! Anthropic's surface: `POST /v1/messages` (the same call path as chat completions, answered in
//! Anthropic's protocol) and `POST /v1/messages/count_tokens`. Every error here is in Anthropic's
//! shape `{"type":"error","error":{"type","message"}}`.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::context::{log_answered, log_request};
use crate::ctx::AppState;
use crate::ctx::{Caller, RequestId};
use crate::error::ApiError;
use crate::protocol::Protocol;
use crate::request::{self, Endpoint};
use crate::{routing, tokenizer};

/// `POST /v1/messages`
pub async fn create(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    super::proxy::proxy(app, rid, caller, Endpoint::Messages, req).await
}

/// `POST /v1/messages/count_tokens`: the prompt's input tokens, *estimated* with the gateway's
/// own tokenizer (the upstream is not asked, so the count is free and works for every channel;
/// it can differ by a few percent from what Anthropic will bill).
pub async fn count_tokens(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(Caller(key)): Extension<Caller>,
    req: Request,
) -> Response {
    const ENDPOINT: &str = "messages.count_tokens";
    let content_length =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let parsed = match request::read_body(req.into_body(), app.cfg.body_limit_bytes, content_length).await {
        Ok(bytes) => {
            // Parsed on the counting pool: a body up to the limit is too much work for the runtime.
            let limits = app.cfg.limits;
            tokenizer::on_pool(move || request::prepare(Endpoint::Messages, bytes, &limits))
                .await
                .unwrap_or(Err(ApiError::Internal))
        }
        Err(e) => Err(e),
    };
    let prepared = match parsed {
        Ok(p) => p,
        Err(e) => {
            log_request(&app, &rid, Some(&key), ENDPOINT, None, &e);
            return e.into_response_for(Protocol::Anthropic);
        }
    };
    if let Err(e) = routing::check_model(&app.snapshot(), &key, &prepared.model) {
        log_request(&app, &rid, Some(&key), ENDPOINT, Some(&prepared.model), &e);
        return e.into_response_for(Protocol::Anthropic);
    }
    let counted = tokenizer::count_prompt(Endpoint::Messages, prepared.model.clone(), prepared.original.clone());
    let Some(input_tokens) = counted.await else {
        return ApiError::Internal.into_response_for(Protocol::Anthropic);
    };
    log_answered(&app, &rid, &key, ENDPOINT, Some(&prepared.model));
    axum::Json(json!({"input_tokens": input_tokens})).into_response()
}

/// Unknown paths below `/v1/messages/`, in Anthropic's shape.
pub async fn unknown() -> Response {
    ApiError::UnknownRoute.into_response_for(Protocol::Anthropic)
}
