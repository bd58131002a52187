//! Listing the models a channel's upstream serves: one `GET …/models` with the channel's key,
//! through the same dispatch and failure classification as a call, so a health probe learns
//! whether a key works (and why not) without spending tokens. One page only (up to 1000 models
//! where the vendor pages); a probe needs an answer, not a catalogue.

use std::time::Duration;

use serde::Deserialize;

use crate::{AttemptError, Channel, FailureClass, Provider, anthropic, dispatch, gemini, openai};

/// Most of a model list we read (OpenRouter's, with descriptions, is about 1 MiB).
pub const MAX_LIST_BYTES: usize = 8 * 1024 * 1024;

/// OpenAI's and Anthropic's list: `{"data": [{"id": …}, …]}`.
#[derive(Deserialize)]
struct DataList {
    data: Vec<Id>,
}

#[derive(Deserialize)]
struct Id {
    id: String,
}

/// Gemini's list: `{"models": [{"name": "models/…"}, …]}` (no `models` when there are none).
#[derive(Deserialize)]
struct GeminiList {
    #[serde(default)]
    models: Vec<Name>,
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// The model ids `channel`'s upstream lists, in its order. The response headers must arrive by
/// `first_byte_deadline`, and each piece of the body within `idle`. A non-2xx answer is
/// classified by the channel's adapter exactly as a call's would be; a 2xx that is not a model
/// list, or is larger than [`MAX_LIST_BYTES`], is [`FailureClass::InvalidResponse`].
pub async fn list(
    http: &reqwest::Client,
    channel: &Channel,
    first_byte_deadline: tokio::time::Instant,
    idle: Duration,
) -> Result<Vec<String>, AttemptError> {
    let provider = Provider::of(&channel.provider);
    let req = match provider {
        Provider::OpenAi => openai::models_request(http, channel)?,
        Provider::Anthropic => anthropic::models_request(http, channel)?,
        Provider::Gemini => gemini::models_request(http, channel)?,
    };
    let mut resp = dispatch(channel, req, first_byte_deadline).await?;
    let status = resp.status().as_u16();
    if !resp.status().is_success() {
        return Err(match provider {
            Provider::OpenAi => openai::error::from_response(channel, resp, idle).await,
            Provider::Anthropic => anthropic::error::from_response(channel, resp, idle).await,
            Provider::Gemini => gemini::error::from_response(channel, resp, idle).await,
        });
    }
    let invalid = || AttemptError::status(FailureClass::InvalidResponse, status);
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => return Err(AttemptError::status(FailureClass::Timeout(crate::TimeoutPhase::Idle), status)),
            Ok(Err(_)) => return Err(AttemptError::status(FailureClass::ConnectionFailed, status)),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(c))) if body.len() + c.len() > MAX_LIST_BYTES => return Err(invalid()),
            Ok(Ok(Some(c))) => body.extend_from_slice(&c),
        }
    }
    parse(provider, &body).ok_or_else(invalid)
}

/// The ids in a model list body of `provider`'s shape; `None` when it is not one.
pub fn parse(provider: Provider, body: &[u8]) -> Option<Vec<String>> {
    match provider {
        Provider::OpenAi | Provider::Anthropic => {
            serde_json::from_slice::<DataList>(body).ok().map(|l| l.data.into_iter().map(|m| m.id).collect())
        }
        Provider::Gemini => serde_json::from_slice::<GeminiList>(body).ok().map(|l| {
            l.models.into_iter().map(|m| m.name.strip_prefix("models/").map(str::to_owned).unwrap_or(m.name)).collect()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vendors_list_shape_gives_its_ids() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o","object":"model"},{"id":"o3"}]}"#;
        assert_eq!(parse(Provider::OpenAi, openai), Some(vec!["gpt-4o".to_owned(), "o3".to_owned()]));
        let anthropic = br#"{"data":[{"type":"model","id":"claude-sonnet-4-5"}],"has_more":false}"#;
        assert_eq!(parse(Provider::Anthropic, anthropic), Some(vec!["claude-sonnet-4-5".to_owned()]));
        let gemini = br#"{"models":[{"name":"models/gemini-2.5-flash"},{"name":"tunedModels/x"}]}"#;
        assert_eq!(
            parse(Provider::Gemini, gemini),
            Some(vec!["gemini-2.5-flash".to_owned(), "tunedModels/x".to_owned()])
        );
        assert_eq!(parse(Provider::Gemini, b"{}"), Some(vec![]));
        assert_eq!(parse(Provider::OpenAi, b"<html>"), None);
        assert_eq!(parse(Provider::OpenAi, br#"{"data":[{"name":"x"}]}"#), None);
    }
}
