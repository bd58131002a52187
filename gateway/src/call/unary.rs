//! Finishing a non-stream call: read the upstream body ([`super::body`]),
//! check it is JSON and read its usage; the upstream's bytes go to the client unchanged once
//! [`super::record`] has made the usage durable.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use schemas::UsageSource;

use super::body::read_answer;
use super::{Answer, Call, estimate};
use crate::ctx::AppState;
use crate::error::ApiError;
use crate::state::Channel;
use crate::usage::{self, Consumption};
use adapters::openai::wire::{self, ResponseHead};

/// Reads the answer and what it consumed.
pub async fn finish(
    app: &AppState,
    call: &Call,
    channel: &Arc<Channel>,
    mut resp: reqwest::Response,
) -> Result<Answer, ApiError> {
    let body = read_answer(&mut resp, &app.cfg, call.rid.started).await?;
    // The answer goes to the client as it came, so it must be text: the head below is read
    // without looking inside the strings it skips, where bytes that are not UTF-8 could hide.
    if std::str::from_utf8(&body).is_err() {
        tracing::warn!(channel_id = %channel.id, "Upstream answered 200 with a body that is not UTF-8.");
        return Err(ApiError::UpstreamInvalidResponse);
    }
    let (usage, model_served) = {
        let head: ResponseHead<'_> = serde_json::from_slice(&body).map_err(|_| {
            tracing::warn!(channel_id = %channel.id, "Upstream answered 200 with a body that is not JSON.");
            ApiError::UpstreamInvalidResponse
        })?;
        if head.error.is_some() {
            return Err(ApiError::Upstream);
        }
        (head.usage.and_then(usage::from_openai), head.model.map(|m| m.0.into_owned()))
    };
    let consumption = match usage {
        Some((tokens, raw)) => Consumption { tokens, raw: Some(raw), source: UsageSource::Upstream, model_served },
        None => estimate(call, wire::response_text(&body), 0, model_served).await,
    };
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(Answer { response, consumption, class: None })
}
