//! The `/v1` surface: path → handler pairs and the layers, assembled in one place. Every route is
//! authenticated; there is no unauthenticated route here. Every response carries `x-request-id`.

use axum::Router;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::ctx::AppState;
use crate::handlers;

/// The router for `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`, `/v1/models`, and
/// Anthropic's `/v1/messages` and `/v1/messages/count_tokens`, and Gemini's
/// `/v1beta/models/{model}:generateContent`, `:streamGenerateContent` and `:countTokens` (also
/// under `/v1/models/`, where the `google-genai` SDK sends them when given a base URL).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handlers::proxy::chat_completions))
        .route("/v1/completions", post(handlers::proxy::completions))
        .route("/v1/embeddings", post(handlers::proxy::embeddings))
        .route("/v1/models", get(handlers::models::list))
        .route("/v1/messages", post(handlers::messages::create))
        .route("/v1/messages/count_tokens", post(handlers::messages::count_tokens))
        .route("/v1/messages/{*rest}", axum::routing::any(handlers::messages::unknown))
        .route("/v1/models/{*rest}", get(handlers::models::get).post(handlers::gemini::action))
        .route("/v1beta/models", get(handlers::gemini::list))
        .route("/v1beta/models/{*rest}", get(handlers::gemini::get).post(handlers::gemini::action))
        .route("/v1beta/{*rest}", axum::routing::any(handlers::gemini::unknown))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), handlers::context::authenticate))
        .with_state(state)
        .layer(middleware::from_fn(handlers::context::request_id))
}

/// 405 for a known path with another method, in the error shape of the path's protocol.
async fn method_not_allowed(req: axum::extract::Request) -> Response {
    crate::error::ApiError::MethodNotAllowed.into_response_for(handlers::context::protocol_of(&req))
}

/// A fallback for unknown `/v1/*` paths, in OpenAI's error shape (404 `unknown_url`). The gateway's
/// router sets no fallback itself so that the binary can merge it with other routers.
pub async fn unknown_route() -> Response {
    crate::error::ApiError::UnknownRoute.into_response()
}
