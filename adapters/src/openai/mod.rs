//! The OpenAI-compatible upstream: one HTTP call with the channel's key, under the connect and
//! first-byte timeouts. Translation-free: the body is already OpenAI's. Vendor differences (URL
//! shape, auth header, `stream_options` support) come from the channel's [`presets::Preset`].

pub mod error;
pub mod wire;

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderValue};

use crate::presets::{self, Auth, StreamUsage, UrlStyle};
use crate::{AttemptError, Channel, FailureClass};

/// The OpenAI endpoints a channel is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/chat/completions`
    ChatCompletions,
    /// `/completions`
    Completions,
    /// `/embeddings`
    Embeddings,
}

impl Endpoint {
    /// The path below the channel's base URL.
    pub fn upstream_path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// One request to an OpenAI-compatible channel: the body in two forms, since vendors differ in
/// whether they accept `stream_options` (see [`body_for`]).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The model (names the deployment on Azure).
    pub model: &'a str,
    /// The body with `stream_options.include_usage` set on a stream, for vendors that accept it.
    pub upstream_body: &'a Bytes,
    /// The body without an injected `stream_options` (the client's own, on a pass-through).
    pub original: &'a Bytes,
}

/// Sends the request to `channel` and waits, until `first_byte_deadline`, for the response headers
/// (2xx only; anything else is mapped to an [`AttemptError`]).
pub async fn send(
    http: &reqwest::Client,
    channel: &Channel,
    prepared: &Request<'_>,
    first_byte_deadline: tokio::time::Instant,
    idle_timeout: Duration,
) -> Result<reqwest::Response, AttemptError> {
    let Some(url) = upstream_url(channel, prepared.endpoint, prepared.model) else {
        tracing::warn!(channel_id = %channel.id, "Channel base URL is not a valid URL.");
        return Err(AttemptError::new(FailureClass::ChannelMisconfigured));
    };
    let req = http
        .post(url)
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(body_for(channel, prepared));
    let req = authorize(req, channel)?;
    let resp = super::dispatch(channel, req, first_byte_deadline).await?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    Err(error::from_response(channel, resp, idle_timeout).await)
}

/// Adds the channel's key the way its preset sends it.
pub(crate) fn authorize(
    req: reqwest::RequestBuilder,
    channel: &Channel,
) -> Result<reqwest::RequestBuilder, AttemptError> {
    Ok(match (channel.preset.auth, &channel.api_key) {
        (Auth::ApiKeyHeader, _) => super::with_key(req, channel, "api-key")?,
        (Auth::Bearer | Auth::None, Some(key)) => req.bearer_auth(key),
        (Auth::Bearer | Auth::None, None) => req,
    })
}

/// `GET …/models` for `channel`, authorized (Azure: the resource's model list).
pub fn models_request(http: &reqwest::Client, channel: &Channel) -> Result<reqwest::RequestBuilder, AttemptError> {
    let url = match channel.preset.url_style {
        UrlStyle::OpenAi => format!("{}/models", channel.base_url),
        UrlStyle::AzureDeployment => {
            let base = channel.base_url.strip_suffix("/openai").unwrap_or(&channel.base_url);
            let version = channel.api_version.as_deref().unwrap_or(presets::AZURE_DEFAULT_API_VERSION);
            let mut url =
                reqwest::Url::parse(base).map_err(|_| AttemptError::new(FailureClass::ChannelMisconfigured))?;
            url.path_segments_mut()
                .map_err(|_| AttemptError::new(FailureClass::ChannelMisconfigured))?
                .pop_if_empty()
                .extend(["openai", "models"]);
            url.query_pairs_mut().append_pair("api-version", version);
            url.into()
        }
    };
    authorize(http.get(url), channel)
}

/// The request URL for `channel`. `None` when the base URL does not parse (Azure only; other
/// presets append the path as text, exactly as before presets existed).
pub fn upstream_url(channel: &Channel, endpoint: Endpoint, model: &str) -> Option<String> {
    match channel.preset.url_style {
        UrlStyle::OpenAi => Some(format!("{}{}", channel.base_url, endpoint.upstream_path())),
        UrlStyle::AzureDeployment => {
            // Tolerate an endpoint pasted with Azure's `/openai` suffix.
            let base = channel.base_url.strip_suffix("/openai").unwrap_or(&channel.base_url);
            let mut url = reqwest::Url::parse(base).ok()?;
            {
                let mut path = url.path_segments_mut().ok()?;
                path.pop_if_empty().extend(["openai", "deployments", model]);
                path.extend(endpoint.upstream_path().split('/').filter(|s| !s.is_empty()));
            }
            let version = channel.api_version.as_deref().unwrap_or(presets::AZURE_DEFAULT_API_VERSION);
            url.query_pairs_mut().append_pair("api-version", version);
            Some(url.into())
        }
    }
}

/// The body for `channel`: with the injected `stream_options.include_usage` when the vendor
/// accepts it. Vendors that send usage unasked get the client's own bytes, minus a
/// `stream_options` the client set (they may refuse the field, and send the usage anyway).
pub fn body_for(channel: &Channel, prepared: &Request<'_>) -> Bytes {
    match channel.preset.stream_usage {
        StreamUsage::Inject => prepared.upstream_body.clone(),
        StreamUsage::Unasked => without_stream_options(prepared.original).unwrap_or_else(|| prepared.original.clone()),
    }
}

/// `body` without its top-level `stream_options`; `None` when it has none (the usual case, checked
/// without parsing) or is not an object. Other fields keep their bytes; key order may change.
fn without_stream_options(body: &Bytes) -> Option<Bytes> {
    const FIELD: &[u8] = b"\"stream_options\"";
    if !body.windows(FIELD.len()).any(|w| w == FIELD) {
        return None;
    }
    let mut fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(body).ok()?;
    fields.remove("stream_options")?;
    serde_json::to_vec(&fields).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(provider: &str, base_url: &str, api_version: Option<&str>) -> Channel {
        Channel {
            id: "ch_t".into(),
            tenant: schemas::GLOBAL_TENANT.into(),
            provider: provider.into(),
            preset: presets::for_provider(provider),
            api_version: api_version.map(str::to_owned),
            base_url: base_url.into(),
            api_key: None,
            key_unusable: false,
            models: vec![],
            priority: 0,
            weight: 1,
            enabled: true,
            egress_refused: None,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }
    }

    #[test]
    fn azure_urls_name_the_deployment_and_the_api_version() {
        let az = channel("azure", "https://res.openai.azure.com", Some("2025-01-01-preview"));
        assert_eq!(
            upstream_url(&az, Endpoint::ChatCompletions, "gpt-4o").as_deref(),
            Some(
                "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2025-01-01-preview"
            )
        );
        let pasted = channel("azure", "https://res.openai.azure.com/openai", None);
        assert_eq!(
            upstream_url(&pasted, Endpoint::Embeddings, "a b/../c").as_deref(),
            Some("https://res.openai.azure.com/openai/deployments/a%20b%2F..%2Fc/embeddings?api-version=2024-10-21")
        );
        let ds = channel("deepseek", "https://api.deepseek.com", None);
        assert!(upstream_url(&channel("azure", "not a url", None), Endpoint::ChatCompletions, "m").is_none());
        assert_eq!(
            upstream_url(&ds, Endpoint::ChatCompletions, "deepseek-chat").as_deref(),
            Some("https://api.deepseek.com/chat/completions")
        );
    }
}
