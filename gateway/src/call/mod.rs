//! One proxied call, run in its own task: try channels in order until one answers (only before
//! anything reached the client), then finish as a plain JSON answer ([`unary`]) or a relayed
//! stream ([`stream`]); calls where client and upstream are not both OpenAI go through [`vendor`]
//! and [`vendor_stream`] instead (same-protocol pass-through for Anthropic and Gemini, translation
//! through [`crate::canonical`] between protocols). Billing (`usage.recorded`) and `request.logged` happen here.

mod stream;
mod unary;
mod vendor;
mod vendor_stream;

use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use schemas::{EventBody, RequestLogged, StreamOutcome, UsageSource};
use tokio::sync::oneshot;

use crate::app::AppState;
use crate::error::ApiError;
use crate::handlers::context::RequestId;
use crate::providers::Provider;
use crate::request::Prepared;
use crate::state::{Channel, ControlState, KeyEntry};
use crate::tokenizer;
use crate::usage::{BillingContext, Consumption, TokenCounts};

/// Everything a call needs, owned so the task outlives the client connection.
pub struct Call {
    /// Request id and arrival time.
    pub rid: RequestId,
    /// The caller's key.
    pub key: Arc<KeyEntry>,
    /// The parsed request.
    pub prepared: Prepared,
    /// Channels to try, in order.
    pub channels: Vec<Arc<Channel>>,
    /// The control state when the request arrived: the prices it is charged at (the serving
    /// channel's override, else the model's price) come from here, whichever channel serves it.
    pub control: Arc<ControlState>,
    /// The client's `anthropic-beta` header, passed on to Anthropic channels on pass-through.
    pub anthropic_beta: Option<String>,
    /// A Gemini client's stream framing: SSE (`alt=sse`) or, when false, one JSON array.
    pub gemini_sse: bool,
}

impl Call {
    fn billing(&self, channel: &Channel) -> BillingContext {
        BillingContext {
            request_id: self.rid.id.to_string(),
            key_id: self.key.key_id.clone(),
            user: self.prepared.user.clone(),
            endpoint: self.prepared.endpoint.name(),
            model_requested: self.prepared.model.clone(),
            price: self.control.price_for(&channel.id, &self.prepared.model),
        }
    }
}

/// Runs the call and sends the response (or the stream's head) through `reply`. If the client is
/// gone, the call still completes and is billed.
pub async fn run(app: AppState, mut call: Call, reply: oneshot::Sender<Response>) {
    let max = usize::try_from(app.cfg.max_attempts.max(1)).unwrap_or(1);
    let mut last = ApiError::Upstream;
    let mut attempts = 0u32;
    let mut tried: Option<Arc<Channel>> = None;
    let channels = std::mem::take(&mut call.channels);
    for channel in channels.iter().take(max) {
        attempts += 1;
        tried = Some(channel.clone());
        // One first-byte budget per attempt, covering the headers and (for streams) the first event.
        let first_byte_deadline = tokio::time::Instant::now() + app.cfg.first_byte_timeout;
        let route = vendor::Route::new(call.prepared.endpoint.protocol(), Provider::of(&channel.provider));
        let sent = vendor::send(&app, &call, channel, route, first_byte_deadline).await;
        let resp = match sent {
            Ok(r) => r,
            Err(a) => {
                last = a.error;
                if a.retriable {
                    continue;
                }
                break;
            }
        };
        if call.prepared.stream {
            match stream::start(resp, first_byte_deadline).await {
                Ok(started) => {
                    if route.is_openai_pass() {
                        stream::relay(app, call, channel.clone(), started, reply, attempts).await;
                    } else {
                        vendor_stream::relay(app, call, channel.clone(), route, started, reply, attempts).await;
                    }
                    return;
                }
                Err(a) => {
                    last = a.error;
                    if a.retriable {
                        continue;
                    }
                    break;
                }
            }
        }
        let answer = if route.is_openai_pass() {
            unary::finish(&app, &call, channel, resp).await.map(|r| (r, None))
        } else {
            vendor::finish(&app, &call, channel, route, resp).await
        };
        let (status, class) = match &answer {
            Ok((_, class)) => (200, class.map(str::to_owned)),
            Err(e) => (e.status_code().as_u16(), Some(e.class().to_owned())),
        };
        log_request(&app, &call, Some(channel), status, attempts, None, class);
        let _ = reply.send(match answer {
            Ok((r, _)) => r,
            Err(e) => e.into_response_for(call.prepared.endpoint.protocol()),
        });
        return;
    }
    log_request(
        &app,
        &call,
        tried.as_deref(),
        last.status_code().as_u16(),
        attempts,
        None,
        Some(last.class().to_owned()),
    );
    let _ = reply.send(last.into_response_for(call.prepared.endpoint.protocol()));
}

/// Appends `usage.recorded` for a finished non-stream call and waits until it is durable; when it
/// is not, the answer is withheld (`usage_not_recorded`).
async fn bill(app: &AppState, call: &Call, channel: &Channel, consumption: Consumption) -> Result<(), ApiError> {
    let record =
        call.billing(channel).record(&channel.provider, &channel.id, consumption, false, StreamOutcome::Completed);
    let env = app.envelope(&call.key.tenant, &call.rid.id, EventBody::UsageRecorded(record));
    if let Err(e) = app.log.append(&env).await {
        tracing::error!(error = %e, "Usage could not be recorded; the answer is withheld.");
        return Err(ApiError::UsageNotRecorded);
    }
    Ok(())
}

/// Appends `request.logged` without waiting.
fn log_request(
    app: &AppState,
    call: &Call,
    channel: Option<&Channel>,
    status: u16,
    attempts: u32,
    ttft: Option<Duration>,
    error_class: Option<String>,
) {
    let data = RequestLogged {
        request_id: call.rid.id.to_string(),
        key_id: Some(call.key.key_id.clone()),
        endpoint: call.prepared.endpoint.name().to_owned(),
        model: Some(call.prepared.model.clone()),
        provider: channel.map(|c| c.provider.clone()),
        channel_id: channel.map(|c| c.id.clone()),
        status,
        latency_us: u64::try_from(call.rid.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        ttft_us: ttft.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX)),
        attempts,
        error_class,
        streamed: call.prepared.stream,
    };
    app.log.append_nowait(&app.envelope(&call.key.tenant, &call.rid.id, EventBody::RequestLogged(data)));
}

/// Counts tokens ourselves when the upstream reported no usage, on the tokenizer's bounded pool:
/// never cancelled (a client that left is still billed) and never 0 for a non-empty prompt.
async fn estimate(call: &Call, output_text: String, model_served: Option<String>) -> Consumption {
    let (endpoint, model) = (call.prepared.endpoint, call.prepared.model.clone());
    let (input, output) = tokenizer::estimate(endpoint, model, call.prepared.original.clone(), output_text).await;
    Consumption {
        tokens: TokenCounts { input, output, ..TokenCounts::default() },
        raw: None,
        source: UsageSource::Estimated,
        model_served,
    }
}
