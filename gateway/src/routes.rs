//! The `/v1` surface: path → handler pairs and the layers, assembled in one place. Every route is
//! authenticated; there is no unauthenticated route here. Every response carries `x-request-id`.
//!
//! The client protocol is decided here, once per request, by the route group: OpenAI's, Anthropic's
//! and Gemini's routes put their [`Protocol`] into the request extensions; the model-listing routes
//! that all three SDKs share decide it from the request ([`handlers::context::negotiate_models`]).
//! Authentication, error shapes and handlers read that extension and never look at the path.

use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Extension, Router, middleware};

use crate::ctx::AppState;
use crate::error::ApiError;
use crate::handlers;
use crate::protocol::Protocol;

/// The router for `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, and
/// Anthropic's `/v1/messages` and `/v1/messages/count_tokens`, and Gemini's
/// `/v1beta/models/{model}:generateContent`, `:streamGenerateContent` and `:countTokens` (also
/// under `/v1/models/`, where the `google-genai` SDK sends them when given a base URL).
pub fn router(state: AppState) -> Router {
    let openai = Router::new()
        .route("/v1/chat/completions", post(handlers::proxy::chat_completions))
        .route("/v1/completions", post(handlers::proxy::completions))
        .route("/v1/embeddings", post(handlers::proxy::embeddings));
    let anthropic = Router::new()
        .route("/v1/messages", post(handlers::messages::create))
        .route("/v1/messages/count_tokens", post(handlers::messages::count_tokens))
        .route("/v1/messages/{*rest}", any(handlers::messages::unknown));
    let gemini = Router::new()
        .route("/v1beta/models", get(handlers::gemini::list))
        .route("/v1beta/models/{*rest}", get(handlers::gemini::get).post(handlers::gemini::action))
        .route("/v1beta/{*rest}", any(handlers::gemini::unknown));
    let models = Router::new()
        .route("/v1/models", get(handlers::models::list))
        .route("/v1/models/{*rest}", get(handlers::models::get).post(handlers::gemini::action))
        .method_not_allowed_fallback(|req: axum::extract::Request| async move {
            ApiError::MethodNotAllowed.into_response_for(handlers::context::negotiate_models(&req))
        })
        .route_layer(middleware::from_fn_with_state(state.clone(), handlers::context::authenticate))
        .route_layer(middleware::from_fn(handlers::context::negotiate));
    Router::new()
        .merge(speaking(Protocol::OpenAi, openai, &state))
        .merge(speaking(Protocol::Anthropic, anthropic, &state))
        .merge(speaking(Protocol::Gemini, gemini, &state))
        .merge(models)
        .with_state(state)
        .layer(middleware::from_fn(handlers::context::request_id))
}

/// `routes` in `protocol`: the protocol goes into every request's extensions before
/// authentication, and a known path with another method is a 405 in that protocol's shape.
fn speaking(protocol: Protocol, routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .method_not_allowed_fallback(move || async move { ApiError::MethodNotAllowed.into_response_for(protocol) })
        .route_layer(middleware::from_fn_with_state(state.clone(), handlers::context::authenticate))
        .route_layer(Extension(protocol))
}

/// A fallback for unknown `/v1/*` paths, in OpenAI's error shape (404 `unknown_url`). The gateway's
/// router sets no fallback itself so that the binary can merge it with other routers.
pub async fn unknown_route() -> Response {
    ApiError::UnknownRoute.into_response()
}
