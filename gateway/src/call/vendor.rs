//! Calls where the client and the upstream are not both OpenAI: which way a call goes
//! ([`Route`]), the request sent upstream (the client's own bytes when both sides speak the same
//! protocol, a translation through [`adapters::canonical`] otherwise), and finishing a non-stream
//! answer (usage read from the *upstream's* usage object, the answer in the client's protocol). The
//! OpenAI → OpenAI pass-through never comes here for its answer.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use schemas::UsageSource;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::body::read_answer;
use super::{Answer, Call, estimate};
use crate::codec;
use crate::ctx::AppState;
use crate::error::ApiError;
use crate::protocol::Protocol;
use crate::request::{Endpoint, Prepared};
use crate::state::Channel;
use crate::usage::Consumption;
use adapters::canonical::{self, FinishReason, Part, Unsupported, openai_chat};
use adapters::failure::VendorDetail;
use adapters::{AttemptError, FailureClass, Provider, anthropic, gemini, openai};

/// The class logged for an answer the upstream filtered (a 200 with no usable content).
pub const CONTENT_FILTERED: &str = "content_filtered";

/// Client protocol → upstream adapter of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// What the client speaks.
    pub client: Protocol,
    /// What the channel speaks.
    pub upstream: Provider,
}

impl Route {
    /// The route for a client protocol and a channel's adapter.
    pub fn new(client: Protocol, upstream: Provider) -> Route {
        Route { client, upstream }
    }

    /// Both sides speak the same protocol: the client's bytes go up and the upstream's come back.
    pub fn is_pass(self) -> bool {
        matches!(
            (self.client, self.upstream),
            (Protocol::OpenAi, Provider::OpenAi)
                | (Protocol::Anthropic, Provider::Anthropic)
                | (Protocol::Gemini, Provider::Gemini)
        )
    }

    /// The OpenAI pass-through, the hot path with its own relay.
    pub fn is_openai_pass(self) -> bool {
        self.client == Protocol::OpenAi && self.upstream == Provider::OpenAi
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AttemptError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        AttemptError::new(FailureClass::InvalidRequest).with_detail(VendorDetail {
            message: Some(format!("Invalid request: {}.", e.inner())),
            param: (path != "." && !path.is_empty()).then_some(path),
            code: None,
        })
    })
}

fn unsupported(u: Unsupported) -> AttemptError {
    AttemptError::new(FailureClass::Unsupported).with_detail(VendorDetail {
        message: Some(u.message),
        param: Some(u.param),
        code: None,
    })
}

/// The client's request in canonical form.
fn canonical_request(call: &Call) -> Result<canonical::Request, AttemptError> {
    let p = &call.prepared;
    match p.endpoint {
        Endpoint::ChatCompletions => {
            let req: openai_chat::wire::ChatRequest = parse(&p.original)?;
            openai_chat::convert::request_to_canonical(req).map_err(unsupported)
        }
        Endpoint::Messages => {
            let req: anthropic::wire::MessagesRequest = parse(&p.original)?;
            anthropic::convert::request_to_canonical(req).map_err(unsupported)
        }
        Endpoint::GenerateContent => {
            let v: Value = parse(&p.original)?;
            gemini::convert::request_to_canonical(&v, &p.model, p.stream).map_err(unsupported)
        }
        Endpoint::Completions | Endpoint::Embeddings => Err(unsupported(Unsupported::new(
            "model",
            format!("This model's provider does not support /v1/{}.", p.endpoint.name()),
        ))),
    }
}

/// Answers OpenAI embeddings served by a Gemini channel. Gemini reports no usage for
/// embeddings: the input is estimated with the tokenizer (`usage_source = estimated`).
async fn finish_embeddings(call: &Call, v: &Value) -> Result<Answer, ApiError> {
    let base64 = serde_json::from_slice::<Value>(&call.prepared.original)
        .is_ok_and(|b| b.get("encoding_format").and_then(Value::as_str) == Some("base64"));
    let consumption = estimate(call, String::new(), 0, None).await;
    let answer = gemini::embed::response(v, &call.prepared.model, base64, consumption.tokens.input)
        .ok_or(ApiError::UpstreamInvalidResponse)?;
    let mut response = (StatusCode::OK, json_bytes(&answer)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(Answer { response, consumption, class: None })
}

fn json_bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// The request to send to an OpenAI channel for a client of another protocol, as a [`Prepared`]
/// chat completion (`upstream_body` asks for the usage chunk; `original` does not, for vendors
/// that refuse `stream_options`).
fn openai_request(call: &Call) -> Result<Prepared, AttemptError> {
    let canonical = canonical_request(call)?;
    let mut body = openai_chat::convert::request_from_canonical(&canonical).map_err(unsupported)?;
    let upstream_body = json_bytes(&body);
    if let Some(o) = body.as_object_mut() {
        o.remove("stream_options");
    }
    Ok(Prepared {
        endpoint: Endpoint::ChatCompletions,
        model: call.prepared.model.clone(),
        stream: call.prepared.stream,
        client_wants_usage: false,
        user: call.prepared.user.clone(),
        original: json_bytes(&body),
        upstream_body,
    })
}

/// Sends one attempt of `call` to `channel` on `route` with the client `http` (direct, or through
/// one proxy node), translating the request when needed.
pub async fn send(
    app: &AppState,
    call: &Call,
    channel: &Channel,
    route: Route,
    http: &reqwest::Client,
    deadline: tokio::time::Instant,
) -> Result<reqwest::Response, AttemptError> {
    let idle = app.cfg.idle_timeout;
    let p = &call.prepared;
    match route.upstream {
        Provider::OpenAi if route.is_pass() => openai::send(http, channel, &p.openai(), deadline, idle).await,
        Provider::OpenAi => openai::send(http, channel, &openai_request(call)?.openai(), deadline, idle).await,
        Provider::Anthropic => {
            let (body, beta) = if route.is_pass() {
                (p.upstream_body.clone(), call.anthropic_beta.as_deref())
            } else {
                let c = canonical_request(call)?;
                (json_bytes(&anthropic::convert::request_from_canonical(&c).map_err(unsupported)?), None)
            };
            anthropic::send(http, channel, body, beta, deadline, idle).await
        }
        Provider::Gemini if p.endpoint == Endpoint::Embeddings => {
            let v: Value = parse(&p.original)?;
            let req = gemini::embed::request(&v, &p.model).map_err(unsupported)?;
            gemini::send(http, channel, &p.model, gemini::Action::Embed, json_bytes(&req.body), deadline, idle).await
        }
        Provider::Gemini => {
            let body = if route.is_pass() {
                p.upstream_body.clone()
            } else {
                let c = canonical_request(call)?;
                json_bytes(&gemini::convert::request_from_canonical(&c).map_err(unsupported)?)
            };
            gemini::send(http, channel, &p.model, gemini::Action::generate(p.stream), body, deadline, idle).await
        }
    }
}

/// Seconds since the epoch, for OpenAI's `created`.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
        .unwrap_or(0)
}

/// Reads a non-stream answer on `route` (never the OpenAI pass-through), puts it in the client's
/// protocol and reads what it consumed; [`super::record`] bills it before it is sent.
pub async fn finish(
    app: &AppState,
    call: &Call,
    channel: &Arc<Channel>,
    route: Route,
    mut resp: reqwest::Response,
) -> Result<Answer, ApiError> {
    let body = read_answer(&mut resp, &app.cfg, call.rid.started).await?;
    let v: Value = serde_json::from_slice(&body).map_err(|_| {
        tracing::warn!(channel_id = %channel.id, "Upstream answered 200 with a body that is not JSON.");
        ApiError::UpstreamInvalidResponse
    })?;
    if call.prepared.endpoint == Endpoint::Embeddings {
        return finish_embeddings(call, &v).await;
    }
    let (canonical, usage_field) = match route.upstream {
        Provider::Anthropic if v.get("type").and_then(Value::as_str) == Some("error") => {
            return Err(ApiError::Upstream);
        }
        Provider::Anthropic => (anthropic::convert::response_to_canonical(&v), "usage"),
        Provider::OpenAi | Provider::Gemini if v.get("error").is_some_and(|e| !e.is_null()) => {
            return Err(ApiError::Upstream);
        }
        Provider::OpenAi => (openai_chat::convert::response_to_canonical(&v), "usage"),
        Provider::Gemini => (gemini::convert::response_to_canonical(&v), "usageMetadata"),
    };
    let raw = v.get(usage_field).filter(|u| !u.is_null()).cloned();
    let model_served = match route.upstream {
        Provider::Gemini => v.get("modelVersion"),
        Provider::OpenAi | Provider::Anthropic => v.get("model"),
    };
    let model_served = model_served.and_then(Value::as_str).filter(|m| !m.is_empty()).map(str::to_owned);
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
            estimate(call, text, 0, model_served).await
        }
    };
    let out = if route.is_pass() {
        Bytes::from(body)
    } else {
        match route.client {
            Protocol::OpenAi => json_bytes(&codec::openai::response_from_canonical(&canonical, now_secs())),
            Protocol::Anthropic => json_bytes(&codec::anthropic::response_from_canonical(&canonical)),
            Protocol::Gemini => json_bytes(&codec::gemini::response_from_canonical(&canonical)),
        }
    };
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let class = (canonical.finish == Some(FinishReason::ContentFilter)).then_some(CONTENT_FILTERED);
    Ok(Answer { response, consumption, class })
}
