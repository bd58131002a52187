//! One proxied call, run in its own task: try channels in order until one answers (only before
//! anything reached the client), then finish as a plain JSON answer ([`unary`]) or a relayed
//! stream ([`stream`]); calls where client and upstream are not both OpenAI go through [`vendor`]
//! and [`vendor_stream`] instead (same-protocol pass-through for Anthropic and Gemini, translation
//! through [`adapters::canonical`] between protocols). The pipeline: the handler admits and chooses
//! the channels ([`Call`]), [`run`] sends attempts until one is accepted, a finisher reads the
//! answer (one reader, [`body`]) or relays the stream (one billing tail, [`stream::close`]), and
//! every call, whatever its outcome, ends in [`record::record`]: the single exit that appends
//! `usage.recorded` and `request.logged`, and the seam for settlement.

mod body;
mod egress;
mod policy;
mod record;
mod stream;
mod unary;
mod vendor;
mod vendor_stream;

use std::sync::Arc;

use axum::response::Response;
use schemas::{AttemptRecord, MAX_LOGGED_ATTEMPTS, UsageSource};
use tokio::sync::oneshot;

use crate::ctx::AppState;
use crate::ctx::RequestId;
use crate::error::ApiError;
use crate::health::{Admission, Transition};
use crate::request::Prepared;
use crate::routing;
use crate::state::{Channel, ControlState, KeyEntry, Lane};
use crate::tokenizer;
use crate::usage::{BillingContext, Consumption, TokenCounts};
use adapters::{FailureClass, Provider, TimeoutPhase};
use record::{Billable, Billing, Delivered, Outcome, record};

/// Everything a call needs, owned so the task outlives the client connection.
pub struct Call {
    /// Request id and arrival time.
    pub rid: RequestId,
    /// The caller's key.
    pub key: Arc<KeyEntry>,
    /// The parsed request.
    pub prepared: Prepared,
    /// Lanes (a channel through one of its keys) to try, in order.
    pub lanes: Vec<Lane>,
    /// The control state when the request arrived: the prices it is charged at (the serving
    /// channel's override, else the model's price) come from here, whichever channel serves it.
    pub control: Arc<ControlState>,
    /// The client's `anthropic-beta` header, passed on to Anthropic channels on pass-through.
    pub anthropic_beta: Option<String>,
    /// A Gemini client's stream framing: SSE (`alt=sse`) or, when false, one JSON array.
    pub gemini_sse: bool,
    /// The providers the request pins or forbids.
    pub providers: routing::ProviderFilter,
    /// The model the client asked for (`prepared.model` is the one being tried: a fallback's).
    pub client_model: String,
}

impl Call {
    fn billing(&self, channel: &Channel) -> BillingContext {
        BillingContext {
            request_id: self.rid.id.to_string(),
            key_id: self.key.key_id.clone(),
            user: self.prepared.user.clone(),
            endpoint: self.prepared.endpoint.name(),
            model_requested: self.client_model.clone(),
            price: self.control.price_for(&channel.id, &self.prepared.model),
        }
    }
}

/// Per-protocol details of a call that are not in its body.
pub struct CallOptions {
    /// The client's `anthropic-beta` header.
    pub anthropic_beta: Option<String>,
    /// A Gemini stream's framing (`alt=sse`).
    pub gemini_sse: bool,
    /// `X-Router-Provider` / `X-Router-Exclude`.
    pub providers: routing::ProviderFilter,
}

/// The pipeline's entry, for a parsed request: admits it and chooses the channels to attempt
/// (today: the routing candidates; budget and rate-limit reservations belong here, next to the
/// refusal below), then runs the call in its own task and waits for its answer or the stream's
/// head. A refusal here is logged before any call exists; from [`run`] on, every outcome goes
/// through [`record::record`].
pub async fn start(
    app: AppState,
    rid: RequestId,
    key: Arc<KeyEntry>,
    prepared: Prepared,
    options: CallOptions,
) -> Response {
    let protocol = prepared.endpoint.protocol();
    let control = app.snapshot();
    let now = crate::health::now_us();
    app.retries.request(now);
    let lanes =
        match routing::candidates(&control, &key, &prepared.model, &options.providers, attempts_limit(&app), now) {
            Ok(c) => c,
            // Every key of the model is out of rotation: its fallback models may serve.
            Err(ApiError::NoHealthyUpstream { .. }) if !routing::fallbacks(&control, &prepared.model).is_empty() => {
                Vec::new()
            }
            Err(e) => {
                let (status, class) = (e.status_code().as_u16(), Some(e.class().to_owned()));
                let logged = rid.logged(Some(&key), prepared.endpoint.name(), Some(&prepared.model), status, class);
                app.log_request(&rid, Some(&key), logged);
                return e.into_response_for(protocol);
            }
        };
    let CallOptions { anthropic_beta, gemini_sse, providers } = options;
    let (tx, rx) = oneshot::channel();
    let client_model = prepared.model.clone();
    let call = Call { rid, key, prepared, lanes, control, anthropic_beta, gemini_sse, providers, client_model };
    tokio::spawn(run(app, call, tx));
    match rx.await {
        Ok(resp) => resp,
        Err(_) => ApiError::Internal.into_response_for(protocol),
    }
}

/// Every attempt of a call so far, for `request.logged`.
#[derive(Default)]
struct Attempts {
    count: u32,
    log: Vec<AttemptRecord>,
}

impl Attempts {
    /// Notes an attempt on `channel` that began at `started` and ended as `class`.
    fn note(&mut self, channel: &Channel, class: &str, status: Option<u16>, started: tokio::time::Instant) {
        if self.log.len() < MAX_LOGGED_ATTEMPTS {
            self.log.push(AttemptRecord {
                channel_id: channel.id.clone(),
                class: class.to_owned(),
                status,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            });
        }
    }

    /// The serving attempt's stream failed after it started, with `class`: it replaces `ok`.
    fn failed_mid_stream(&mut self, class: FailureClass) {
        if let Some(last) = self.log.last_mut() {
            last.class = class.as_str().to_owned();
        }
    }
}

/// The attempt class of a failure while reading an answer the upstream had started to give.
fn finish_class(e: &ApiError) -> &'static str {
    match e {
        ApiError::UpstreamTimeout => FailureClass::Timeout(TimeoutPhase::Idle).as_str(),
        ApiError::UpstreamInvalidResponse => FailureClass::InvalidResponse.as_str(),
        ApiError::Upstream => FailureClass::UpstreamServerError.as_str(),
        // The upstream answered; what failed was ours (recording usage).
        _ => ANSWERED,
    }
}

/// The attempt class of an attempt whose upstream answered.
const ANSWERED: &str = "ok";

/// Runs the call and sends the response (or the stream's head) through `reply`. If the client is
/// gone, the call still completes and is billed.
async fn run(app: AppState, mut call: Call, reply: oneshot::Sender<Response>) {
    let max = app.cfg.max_attempts.max(1);
    let mut last = ApiError::Upstream;
    let mut attempts = Attempts::default();
    let mut tried: Option<Arc<Channel>> = None;
    let mut lanes = std::mem::take(&mut call.lanes);
    let mut fallbacks = routing::fallbacks(&call.control, &call.prepared.model).into_iter();
    // After a failure the upstream likely shares, the rest of that channel's lanes wait until
    // every other channel's have been tried.
    let mut skip: Option<String> = None;
    let mut i = 0;
    'attempts: while attempts.count < max {
        if i >= lanes.len() {
            // The model's lanes are spent: its route's next fallback model, if the key may use it.
            let Some(next) = next_fallback(&mut fallbacks, &call, attempts_limit(&app)) else { break };
            let (model, next_lanes, prepared) = next;
            tracing::info!(from = %call.prepared.model, to = %model, "Trying the route's fallback model.");
            call.prepared = prepared;
            lanes = next_lanes;
            (i, skip) = (0, None);
            continue;
        }
        let Lane { channel, key } = &lanes[i];
        i += 1;
        if skip.as_deref() == Some(channel.id.as_str()) && lanes[i..].iter().any(|l| l.channel.id != channel.id) {
            continue;
        }
        if attempts.count >= 1 {
            // A retry: within the request's time budget and the gateway's retry budget only.
            if call.rid.started.elapsed() >= app.cfg.retry_time_budget {
                break;
            }
            if !app.retries.try_retry(crate::health::now_us()) {
                tracing::warn!("Retry budget of this gateway spent; answering the last failure.");
                break;
            }
        }
        let admission = key.health.admit(&key.status, crate::health::now_us());
        if admission == Admission::No {
            continue;
        }
        attempts.count += 1;
        tried = Some(channel.clone());
        let started = tokio::time::Instant::now();
        // One first-byte budget per attempt, covering the headers and (for streams) the first event.
        let first_byte_deadline = started + app.cfg.first_byte_timeout;
        let route = vendor::Route::new(call.prepared.endpoint.protocol(), Provider::of(&channel.provider));
        let sent = match egress::send(&app, &call, &lanes[i - 1], route, first_byte_deadline).await {
            Ok(resp) if call.prepared.stream => match stream::start(resp, first_byte_deadline).await {
                // An error as the very first event: nothing reached the client, another channel may serve.
                Ok(s) => match s.first_data().and_then(|d| route.upstream.first_event_failure(d)) {
                    Some(failure) => Err(failure),
                    None => Ok(Sent::Stream(s)),
                },
                Err(e) => Err(e),
            },
            Ok(resp) => Ok(Sent::Unary(resp)),
            Err(e) => Err(e),
        };
        let sent = match sent {
            Ok(s) => s,
            Err(failure) => {
                attempts.note(channel, failure.class.as_str(), failure.status, started);
                policy::log_attempt(&failure, channel, &key.id);
                let decision = policy::decide(&failure, channel);
                judged(&app, &lanes[i - 1], admission, decision.key, None);
                last = decision.client;
                match decision.next {
                    // A prompt too long for this model may fit a fallback's larger window.
                    policy::Next::Stop if failure.class == FailureClass::ContextWindowExceeded => {
                        i = lanes.len();
                        continue 'attempts;
                    }
                    policy::Next::Stop => break,
                    policy::Next::Key => continue,
                    policy::Next::Channel => {
                        skip = Some(channel.id.clone());
                        continue;
                    }
                }
            }
        };
        judged(&app, &lanes[i - 1], admission, crate::health::Verdict::Success, Some(started.elapsed()));
        let resp = match sent {
            Sent::Stream(started_stream) => {
                attempts.note(channel, ANSWERED, Some(200), started);
                if route.is_openai_pass() {
                    stream::relay(app, call, channel.clone(), started_stream, reply, attempts).await;
                } else {
                    vendor_stream::relay(app, call, channel.clone(), route, started_stream, reply, attempts).await;
                }
                return;
            }
            Sent::Unary(resp) => resp,
        };
        let status = resp.status().as_u16();
        let answer = if route.is_openai_pass() {
            unary::finish(&app, &call, channel, resp).await
        } else {
            vendor::finish(&app, &call, channel, route, resp).await
        };
        let protocol = call.prepared.endpoint.protocol();
        let response = match answer {
            Ok(Answer { response, consumption, class }) => {
                attempts.note(channel, ANSWERED, Some(status), started);
                let outcome = Outcome {
                    channel: Some(channel),
                    attempts,
                    billable: Some(Billable::unary(consumption)),
                    ttft: None,
                };
                record(&app, &call, outcome, async move |billing| match billing {
                    Billing::NotRecorded => {
                        let e = ApiError::UsageNotRecorded;
                        (Delivered::failed(&e), e.into_response_for(protocol))
                    }
                    Billing::Recorded | Billing::NotBillable => (Delivered::ok(class), response),
                })
                .await
            }
            Err(e) => {
                attempts.note(channel, finish_class(&e), Some(status), started);
                let outcome = Outcome { channel: Some(channel), attempts, billable: None, ttft: None };
                record(&app, &call, outcome, async move |_| (Delivered::failed(&e), e.into_response_for(protocol)))
                    .await
            }
        };
        let _ = reply.send(response);
        return;
    }
    if attempts.count == 0 {
        // Every candidate went out of rotation since it was chosen (another request took a
        // half-open trial, a key was disabled): nothing was sent.
        last = ApiError::NoHealthyUpstream { retry_after: Some(1) };
    }
    let protocol = call.prepared.endpoint.protocol();
    let outcome = Outcome { channel: tried.as_deref(), attempts, billable: None, ttft: None };
    let response =
        record(&app, &call, outcome, async move |_| (Delivered::failed(&last), last.into_response_for(protocol))).await;
    let _ = reply.send(response);
}

/// The most attempts one call makes, as a lane count.
fn attempts_limit(app: &AppState) -> usize {
    usize::try_from(app.cfg.max_attempts.max(1)).unwrap_or(1)
}

/// The next fallback model of the call's route that the caller's key may use and that has lanes
/// now, with its lanes and the request rewritten for it.
fn next_fallback(
    fallbacks: &mut std::vec::IntoIter<String>,
    call: &Call,
    limit: usize,
) -> Option<(String, Vec<Lane>, Prepared)> {
    for model in fallbacks.by_ref() {
        let now = crate::health::now_us();
        let Ok(lanes) = routing::candidates(&call.control, &call.key, &model, &call.providers, limit, now) else {
            continue;
        };
        if let Some(prepared) = call.prepared.with_model(&model) {
            return Some((model, lanes, prepared));
        }
    }
    None
}

/// Records what an attempt's outcome means for its key and, when that changed the key's state,
/// publishes the change as `upstream_key.state_changed` (without waiting: every gateway, this
/// one included, applies it from the log; this gateway already acts on it locally).
fn judged(
    app: &AppState,
    lane: &Lane,
    admission: Admission,
    verdict: crate::health::Verdict,
    ttfb: Option<std::time::Duration>,
) {
    let key = &lane.key;
    if let Some(ttfb) = ttfb {
        key.health.note_ttfb(ttfb);
    }
    let now = crate::health::now_us();
    let Some(Transition { state, until_us, reason, opens }) =
        key.health.outcome(&key.status, admission, verdict, &app.cfg.breaker, now)
    else {
        return;
    };
    tracing::warn!(channel_id = %lane.channel.id, key_id = %key.id, state = state.as_str(), reason, until_us,
        "Upstream key changed state.");
    let body = schemas::EventBody::UpstreamKeyStateChanged(schemas::UpstreamKeyStateChanged {
        channel_id: lane.channel.id.clone(),
        key_id: key.id.clone(),
        state,
        until_us,
        reason: reason.to_owned(),
        manual: false,
        opens,
    });
    app.log.append_nowait(&app.event(&lane.channel.tenant, body));
}

/// A non-stream answer, read and decoded, not yet billed.
struct Answer {
    /// What the client gets once the usage is durable.
    response: Response,
    /// What the upstream generated.
    consumption: Consumption,
    /// The class to log for a 200 that was filtered.
    class: Option<&'static str>,
}

/// An attempt the upstream accepted.
enum Sent {
    /// A stream whose first event arrived.
    Stream(stream::Started),
    /// A non-stream answer whose headers arrived.
    Unary(reqwest::Response),
}

/// Counts tokens ourselves when the upstream reported no usage, on the tokenizer's bounded pool:
/// never cancelled (a client that left is still billed) and never 0 for a non-empty prompt.
/// Text of a stream beyond what was kept (`output_over` bytes) counts by the bytes-per-token bound.
async fn estimate(call: &Call, output_text: String, output_over: usize, model_served: Option<String>) -> Consumption {
    let (endpoint, model) = (call.prepared.endpoint, call.prepared.model.clone());
    let (input, output) = tokenizer::estimate(endpoint, model, call.prepared.original.clone(), output_text).await;
    let output = output.saturating_add(tokenizer::by_bytes(output_over));
    Consumption {
        tokens: TokenCounts { input, output, ..TokenCounts::default() },
        raw: None,
        source: UsageSource::Estimated,
        model_served,
    }
}
