//! `GET /v1/models`: the models the caller's key may use, in OpenAI's list shape.

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::context::Caller;
use crate::app::AppState;
use crate::routing;

/// Lists models.
pub async fn list(State(app): State<AppState>, Extension(Caller(key)): Extension<Caller>) -> Response {
    let models = routing::visible_models(&app.snapshot(), &key);
    let data: Vec<_> =
        models.iter().map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "llm-router"})).collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}
