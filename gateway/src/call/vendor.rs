//! Calls where the client and the upstream are not both OpenAI: which way a call goes
//! ([`Route`]), the body sent upstream (the client's own bytes for Anthropic → Anthropic, a
//! translation through [`crate::canonical`] otherwise), and finishing a non-stream answer
//! (bill from the *upstream's* usage object, then answer in the client's protocol). The OpenAI →
//! OpenAI pass-through never comes here.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use schemas::{EventBody, StreamOutcome, UsageSource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Call, estimate};
use crate::app::AppState;
use crate::canonical::{Part, Unsupported, openai_chat};
use crate::error::ApiError;
use crate::providers::{AttemptError, Provider, anthropic};
use crate::request::{Endpoint, Prepared, Protocol};
use crate::state::Channel;
use crate::usage::Consumption;

/// Largest upstream JSON answer we buffer.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Client protocol → upstream protocol of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Pass-through, the existing hot path.
    OpenAiToOpenAi,
    /// Pass-through of an Anthropic client to an Anthropic channel.
    AnthropicToAnthropic,
    /// An OpenAI client on an Anthropic channel.
    OpenAiToAnthropic,
    /// An Anthropic client on an OpenAI(-compatible) channel.
    AnthropicToOpenAi,
}

impl Route {
    /// The route for a client protocol and a channel's adapter.
    pub fn new(client: Protocol, upstream: Provider) -> Route {
        match (client, upstream) {
            (Protocol::OpenAi, Provider::OpenAi) => Route::OpenAiToOpenAi,
            (Protocol::Anthropic, Provider::Anthropic) => Route::AnthropicToAnthropic,
            (Protocol::OpenAi, Provider::Anthropic) => Route::OpenAiToAnthropic,
            (Protocol::Anthropic, Provider::OpenAi) => Route::AnthropicToOpenAi,
        }
    }

    /// Whether the upstream speaks Anthropic.
    pub fn upstream_is_anthropic(self) -> bool {
        matches!(self, Route::AnthropicToAnthropic | Route::OpenAiToAnthropic)
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AttemptError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        AttemptError {
            error: ApiError::InvalidJson {
                message: format!("Invalid request: {}.", e.inner()),
                param: (path != "." && !path.is_empty()).then_some(path),
            },
            // The client's body is wrong whatever channel we try.
            retriable: false,
        }
    })
}

fn unsupported(u: Unsupported) -> AttemptError {
    // Another channel of another provider may honour it.
    AttemptError { error: ApiError::Unsupported { param: u.param, message: u.message }, retriable: true }
}

/// The request to send to an Anthropic channel.
pub fn anthropic_body(call: &Call, route: Route) -> Result<Bytes, AttemptError> {
    if route == Route::AnthropicToAnthropic {
        return Ok(call.prepared.upstream_body.clone());
    }
    if call.prepared.endpoint != Endpoint::ChatCompletions {
        return Err(unsupported(Unsupported::new(
            "model",
            format!("This model's provider does not support /v1/{}.", call.prepared.endpoint.name()),
        )));
    }
    let req: openai_chat::wire::ChatRequest = parse(&call.prepared.original)?;
    let canonical = openai_chat::convert::request_to_canonical(req).map_err(unsupported)?;
    let body = anthropic::convert::request_from_canonical(&canonical).map_err(unsupported)?;
    Ok(Bytes::from(serde_json::to_vec(&body).unwrap_or_default()))
}

/// The request to send to an OpenAI channel for an Anthropic client, as a [`Prepared`] chat
/// completion (`upstream_body` asks for the usage chunk; `original` does not, for vendors that
/// refuse `stream_options`).
pub fn openai_request(call: &Call) -> Result<Prepared, AttemptError> {
    let req: anthropic::wire::MessagesRequest = parse(&call.prepared.original)?;
    let canonical = anthropic::convert::request_to_canonical(req).map_err(unsupported)?;
    let mut body = openai_chat::convert::request_from_canonical(&canonical).map_err(unsupported)?;
    let upstream_body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    if let Some(o) = body.as_object_mut() {
        o.remove("stream_options");
    }
    Ok(Prepared {
        endpoint: Endpoint::ChatCompletions,
        model: call.prepared.model.clone(),
        stream: call.prepared.stream,
        client_wants_usage: false,
        user: call.prepared.user.clone(),
        original: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        upstream_body,
    })
}

/// Seconds since the epoch, for OpenAI's `created`.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// Reads, bills and answers a non-stream call on `route` (never [`Route::OpenAiToOpenAi`]).
pub async fn finish(
    app: &AppState,
    call: &Call,
    channel: &Arc<Channel>,
    route: Route,
    mut resp: reqwest::Response,
) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(resp.content_length().map_or(4096, |n| n.min(1 << 20) as usize));
    loop {
        match tokio::time::timeout(app.cfg.idle_timeout, resp.chunk()).await {
            Err(_) => return Err(ApiError::UpstreamTimeout),
            Ok(Err(_)) => return Err(ApiError::Upstream),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > MAX_RESPONSE_BYTES {
                    return Err(ApiError::UpstreamInvalidResponse);
                }
                body.extend_from_slice(&c);
            }
        }
    }
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        tracing::warn!(channel_id = %channel.id, "Upstream answered 200 with a body that is not JSON.");
        ApiError::UpstreamInvalidResponse
    })?;
    let upstream_anthropic = route.upstream_is_anthropic();
    if (upstream_anthropic && v.get("type").and_then(Value::as_str) == Some("error"))
        || (!upstream_anthropic && v.get("error").is_some_and(|e| !e.is_null()))
    {
        return Err(ApiError::Upstream);
    }
    let canonical = if upstream_anthropic {
        anthropic::convert::response_to_canonical(&v)
    } else {
        openai_chat::convert::response_to_canonical(&v)
    };
    let raw = v.get("usage").filter(|u| !u.is_null()).cloned();
    let model_served = v.get("model").and_then(Value::as_str).map(str::to_owned);
    let consumption = match (canonical.usage, raw) {
        (Some(tokens), Some(raw)) => {
            Consumption { tokens, raw: Some(raw), source: UsageSource::Upstream, model_served }
        }
        _ => {
            let text: String = canonical
                .content
                .iter()
                .map(|p| match p {
                    Part::Text(t) | Part::Thinking { text: t, .. } => t.clone(),
                    Part::ToolUse { input, .. } => input.to_string(),
                    _ => String::new(),
                })
                .collect();
            estimate(call, text, model_served).await
        }
    };
    let record = call.billing().record(&channel.provider, &channel.id, consumption, false, StreamOutcome::Completed);
    let env = app.envelope(&call.key.tenant, &call.rid.id, EventBody::UsageRecorded(record));
    if let Err(e) = app.log.append(&env).await {
        tracing::error!(error = %e, "Usage could not be recorded; the answer is withheld.");
        return Err(ApiError::UsageNotRecorded);
    }
    let out = match route {
        Route::OpenAiToOpenAi | Route::AnthropicToAnthropic => Bytes::from(body),
        Route::OpenAiToAnthropic => json_bytes(&openai_chat::convert::response_from_canonical(&canonical, now_secs())),
        Route::AnthropicToOpenAi => json_bytes(&anthropic::convert::response_from_canonical(&canonical)),
    };
    let mut out = (StatusCode::OK, out).into_response();
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(out)
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}
