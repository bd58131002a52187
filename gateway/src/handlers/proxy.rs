//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: read and parse the body,
//! route, then hand over to [`crate::call`], which runs in its own task so that a client
//! disconnect never cancels an upstream call we must bill.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;

use super::context::log_request;
use crate::call::{self, CallOptions};
use crate::ctx::AppState;
use crate::ctx::{Caller, RequestId};
use crate::error::ApiError;
use crate::request::{self, Endpoint};

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    proxy(app, rid, caller, Endpoint::ChatCompletions, req).await
}

/// `POST /v1/completions`
pub async fn completions(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    proxy(app, rid, caller, Endpoint::Completions, req).await
}

/// `POST /v1/embeddings`
pub async fn embeddings(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    req: Request,
) -> Response {
    proxy(app, rid, caller, Endpoint::Embeddings, req).await
}

/// Reads and parses a request of `endpoint`, then hands it to the call pipeline; every error is answered
/// in the endpoint's protocol.
pub(super) async fn proxy(
    app: AppState,
    rid: RequestId,
    Caller(key): Caller,
    endpoint: Endpoint,
    req: Request,
) -> Response {
    let anthropic_beta = req.headers().get("anthropic-beta").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let providers = crate::routing::ProviderFilter::from_headers(req.headers());
    let prepared = match read(&app, req).await {
        Ok(bytes) => request::prepare(endpoint, bytes, &app.cfg.limits.capped(key.max_output_tokens, key.max_n)),
        Err(e) => Err(e),
    };
    let options = CallOptions { anthropic_beta, gemini_sse: true, providers };
    run(app, rid, key, endpoint, prepared, options).await
}

/// Reads the body of `req` within the size limit.
pub(super) async fn read(app: &AppState, req: Request) -> Result<bytes::Bytes, ApiError> {
    let content_length =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let body: Body = req.into_body();
    request::read_body(body, app.cfg.body_limit_bytes, content_length).await
}

/// Hands a parsed request to the call pipeline ([`call::start`]); a request that did not parse
/// is answered here.
pub(super) async fn run(
    app: AppState,
    rid: RequestId,
    key: std::sync::Arc<crate::state::KeyEntry>,
    endpoint: Endpoint,
    prepared: Result<request::Prepared, ApiError>,
    options: CallOptions,
) -> Response {
    match prepared {
        Ok(prepared) => call::start(app, rid, key, prepared, options).await,
        Err(e) => {
            log_request(&app, &rid, Some(&key), endpoint.name(), None, &e);
            e.into_response_for(endpoint.protocol())
        }
    }
}
