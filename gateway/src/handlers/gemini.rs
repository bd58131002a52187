//! Gemini's surface: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent`
//! (`?alt=sse` for SSE, else one JSON array) and `:countTokens`, and `GET /v1beta/models[/{model}]`;
//! the same actions under `/v1/models/` (Gemini's `v1`, which the `google-genai` SDK uses when
//! given a base URL).
//! The call path is the one of every other protocol; every answer and error is in Gemini's shape
//! `{"error":{"code","message","status"}}`.

use axum::Extension;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::context::{log_answered, log_request};
use super::proxy;
use crate::call::CallOptions;
use crate::ctx::AppState;
use crate::ctx::{Caller, RequestId};
use crate::error::ApiError;
use crate::protocol::Protocol;
use crate::request::{self, Endpoint};
use crate::state::KeyEntry;
use crate::{routing, tokenizer};

/// `POST /v1beta/models/{model}:{action}`
pub async fn action(
    State(app): State<AppState>,
    Extension(rid): Extension<RequestId>,
    Extension(caller): Extension<Caller>,
    Extension(protocol): Extension<Protocol>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    // Not Gemini's only on `POST /v1/models/{name}` without an action (an OpenAI client's typo).
    let Some((model, action)) = rest.rsplit_once(':') else {
        return ApiError::UnknownRoute.into_response_for(protocol);
    };
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    // Before anything else, so no action puts an unbounded name into an event or an answer.
    if let Err(e) = crate::limits::identifier(&model, "model", crate::limits::MAX_MODEL_BYTES) {
        log_request(&app, &rid, Some(caller.0.as_ref()), Endpoint::GenerateContent.name(), None, &e);
        return e.into_response_for(Protocol::Gemini);
    }
    let stream = match action {
        "generateContent" => false,
        "streamGenerateContent" => true,
        "countTokens" => return count_tokens(app, rid, caller, model, req).await,
        _ => return ApiError::UnknownRoute.into_response_for(Protocol::Gemini),
    };
    let sse = req.uri().query().is_some_and(|q| {
        form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "alt" && v.eq_ignore_ascii_case("sse"))
    });
    let providers = routing::ProviderFilter::from_headers(req.headers());
    let prepared = match proxy::read(&app, req).await {
        Ok(bytes) => request::prepare_gemini(
            &model,
            stream,
            bytes,
            &app.cfg.limits.capped(caller.0.max_output_tokens, caller.0.max_n),
        ),
        Err(e) => Err(e),
    };
    let Caller(key) = caller;
    let options = CallOptions { anthropic_beta: None, gemini_sse: sse, providers };
    proxy::run(app, rid, key, Endpoint::GenerateContent, prepared, options).await
}

/// `:countTokens`: the prompt's tokens, *estimated* with the gateway's own tokenizer (free, and
/// the same for every channel; it can differ by a few percent from what the upstream bills). The
/// body is `{"contents": …}` or `{"generateContentRequest": {…}}`.
async fn count_tokens(app: AppState, rid: RequestId, Caller(key): Caller, model: String, req: Request) -> Response {
    const ENDPOINT: &str = "generate_content.count_tokens";
    let counted = match proxy::read(&app, req).await {
        // Parsed on the counting pool: a body up to the limit is too much work for the runtime.
        Ok(body) => tokenizer::on_pool(move || counted_body(body)).await.unwrap_or(Err(ApiError::Internal)),
        Err(e) => Err(e),
    };
    let checked = counted.and_then(|b| routing::check_model(&app.snapshot(), &key, &model).map(|()| b));
    let body = match checked {
        Ok(b) => b,
        Err(e) => {
            log_request(&app, &rid, Some(&key), ENDPOINT, Some(&model), &e);
            return e.into_response_for(Protocol::Gemini);
        }
    };
    let counted = tokenizer::count_prompt(Endpoint::GenerateContent, model.clone(), body.into());
    let Some(total) = counted.await else {
        return ApiError::Internal.into_response_for(Protocol::Gemini);
    };
    log_answered(&app, &rid, &key, ENDPOINT, Some(&model));
    axum::Json(json!({"totalTokens": total})).into_response()
}

/// The `generateContent` body to count: the request itself, or its `generateContentRequest`.
fn counted_body(body: bytes::Bytes) -> Result<Vec<u8>, ApiError> {
    let v: Value = serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson {
        message: format!("We could not parse the JSON body of your request: {e}."),
        param: None,
    })?;
    match v.get("generateContentRequest").or_else(|| v.get("generate_content_request")) {
        Some(inner) => Ok(serde_json::to_vec(inner).unwrap_or_default()),
        None if v.is_object() => Ok(body.to_vec()),
        None => Err(ApiError::InvalidJson { message: "The request body must be a JSON object.".into(), param: None }),
    }
}

fn model_json(name: &str) -> Value {
    json!({"name": format!("models/{name}"), "baseModelId": name, "version": "001", "displayName": name,
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"]})
}

/// `GET /v1beta/models`: the models the caller's key may use, in Gemini's list shape.
pub async fn list(State(app): State<AppState>, Extension(Caller(key)): Extension<Caller>) -> Response {
    let models = routing::visible_models(&app.snapshot(), &key);
    axum::Json(json!({"models": models.iter().map(|m| model_json(m)).collect::<Vec<_>>()})).into_response()
}

/// `GET /v1beta/models/{model}`: one model, or 404 when the key cannot use it.
pub async fn get(
    State(app): State<AppState>,
    Extension(Caller(key)): Extension<Caller>,
    Path(rest): Path<String>,
) -> Response {
    model(&app, &key, &rest)
}

/// One model in Gemini's shape, or a Gemini-shaped 404 when the key cannot use it.
pub fn model(app: &AppState, key: &KeyEntry, name: &str) -> Response {
    let name = name.strip_prefix("models/").unwrap_or(name);
    match routing::check_model(&app.snapshot(), key, name) {
        Ok(_) => axum::Json(model_json(name)).into_response(),
        Err(e) => e.into_response_for(Protocol::Gemini),
    }
}

/// Unknown paths below `/v1beta/`, in Gemini's shape.
pub async fn unknown() -> Response {
    ApiError::UnknownRoute.into_response_for(Protocol::Gemini)
}
