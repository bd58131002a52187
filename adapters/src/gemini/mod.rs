//! The Google Gemini upstream (Generative Language API, `v1beta`):
//! `POST {base_url}/models/{model}:generateContent`, `:streamGenerateContent?alt=sse` for a
//! stream, or `:batchEmbedContents` for OpenAI embeddings, with the channel key in `x-goog-api-key`, under the connect and first-byte timeouts.
//! The body is the client's own (Gemini ingress, pass-through) or a translation made by
//! [`convert`].

pub mod convert;
pub mod embed;
pub mod error;
pub mod stream;
pub mod wire;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};

use crate::Channel;
use crate::{AttemptError, FailureClass};

/// What a call asks of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `:generateContent`
    Generate,
    /// `:streamGenerateContent?alt=sse`
    Stream,
    /// `:batchEmbedContents`
    Embed,
}

impl Action {
    /// The action for a call that does (or does not) stream.
    pub fn generate(stream: bool) -> Action {
        if stream { Action::Stream } else { Action::Generate }
    }
}

/// The request URL for `model` on `channel`. The model name is percent-encoded as one path
/// segment, so a client cannot reach another path through it.
pub fn upstream_url(channel: &Channel, model: &str, action: Action) -> Option<String> {
    let mut url = reqwest::Url::parse(&channel.base_url).ok()?;
    let name = match action {
        Action::Generate => "generateContent",
        Action::Stream => "streamGenerateContent",
        Action::Embed => "batchEmbedContents",
    };
    url.path_segments_mut().ok()?.pop_if_empty().extend(["models", &format!("{model}:{name}")]);
    if action == Action::Stream {
        url.query_pairs_mut().append_pair("alt", "sse");
    }
    Some(url.into())
}

/// `GET …/models` for `channel` (one page of up to 1000), with its key.
pub fn models_request(http: &reqwest::Client, channel: &Channel) -> Result<reqwest::RequestBuilder, AttemptError> {
    let mut url =
        reqwest::Url::parse(&channel.base_url).map_err(|_| AttemptError::new(FailureClass::ChannelMisconfigured))?;
    url.path_segments_mut()
        .map_err(|_| AttemptError::new(FailureClass::ChannelMisconfigured))?
        .pop_if_empty()
        .push("models");
    url.query_pairs_mut().append_pair("pageSize", "1000");
    super::with_key(http.get(url), channel, "x-goog-api-key")
}

/// Sends `body` for `model` to `channel` and waits, until `first_byte_deadline`, for 2xx
/// response headers.
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    model: &str,
    action: Action,
    body: Bytes,
    first_byte_deadline: tokio::time::Instant,
    idle_timeout: Duration,
) -> Result<reqwest::Response, AttemptError> {
    let Some(url) = upstream_url(channel, model, action) else {
        tracing::warn!(channel_id = %channel.id, "Channel base URL is not a valid URL.");
        return Err(AttemptError::new(FailureClass::ChannelMisconfigured));
    };
    let req = http.post(url).header(header::CONTENT_TYPE, HeaderValue::from_static("application/json")).body(body);
    let req = super::with_key(req, channel, "x-goog-api-key")?;
    let resp = super::dispatch(channel, req, first_byte_deadline).await?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error::from_response(channel, resp, idle_timeout).await)
}
