//! `GET /v1/models`: the models the caller's key may use, in OpenAI's list shape, or in
//! Anthropic's when the request comes from an Anthropic SDK (`anthropic-version` header).
//! Model lists and lookups are non-billable reads: they append no event (a client polling them
//! must not grow the log).

use axum::Extension;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::ctx::{AppState, Caller};
use crate::protocol::Protocol;
use crate::routing;

/// Lists models.
pub async fn list(
    State(app): State<AppState>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(protocol): Extension<Protocol>,
) -> Response {
    if protocol == Protocol::Gemini {
        return super::gemini::list(State(app), Extension(Caller(key))).await;
    }
    let models = routing::visible_models(&app.snapshot(), &key);
    let anthropic = protocol == Protocol::Anthropic;
    let data: Vec<_> =
        models.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "llm-router"})).collect();
    if anthropic {
        // Anthropic's list shape; creation dates are unknown to the gateway, so the epoch.
        let data: Vec<_> = models
            .iter()
            .map(|m| json!({"type": "model", "id": m, "display_name": m, "created_at": "1970-01-01T00:00:00Z"}))
            .collect();
        return axum::Json(json!({"data": data, "has_more": false,
            "first_id": models.first(), "last_id": models.last()}))
        .into_response();
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /v1/models/{model}`: one model the key may use (OpenAI's retrieve, or Anthropic's or
/// Gemini's shape for their SDKs); 404 in the caller's protocol otherwise.
pub async fn get(
    State(app): State<AppState>,
    Extension(Caller(key)): Extension<Caller>,
    Extension(protocol): Extension<Protocol>,
    Path(model): Path<String>,
) -> Response {
    if protocol == Protocol::Gemini {
        return super::gemini::model(&app, &key, &model);
    }
    if let Err(e) = routing::check_model(&app.snapshot(), &key, &model) {
        return e.into_response_for(protocol);
    }
    if protocol == Protocol::Anthropic {
        return axum::Json(json!({"type": "model", "id": model, "display_name": model,
            "created_at": "1970-01-01T00:00:00Z"}))
        .into_response();
    }
    axum::Json(json!({"id": model, "object": "model", "created": 0, "owned_by": "llm-router"})).into_response()
}
