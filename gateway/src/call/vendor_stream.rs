//! Relaying a stream when the client and the upstream are not both OpenAI: Anthropic events
//! passed through (usage read from `message_start` and the cumulative `message_delta`), or
//! translated event by event through canonical deltas. Billing and endings are exactly those of
//! [`super::stream`]: one `usage.recorded`, made durable before the final frame (`message_stop`
//! or `[DONE]`); failures become one in-band error in the client's protocol; a client that
//! leaves is billed after a bounded drain.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use schemas::{EventBody, StreamOutcome, UsageSource};
use serde_json::Value;
use tokio::sync::oneshot;

use super::stream::{End, Sink, Started, next_event};
use super::vendor::{Route, now_secs};
use super::{Call, estimate, log_request};
use crate::app::AppState;
use crate::canonical::Delta;
use crate::canonical::openai_chat::stream::{ChunkDecoder, ChunkEncoder, ChunkError};
use crate::error::error_body;
use crate::providers::anthropic::stream::{
    self as astream, CumulativeUsage, Decoder, DeltaView, Encoder, EventView, Step,
};
use crate::providers::openai::stream::SseEvent;
use crate::state::Channel;
use crate::usage::{self, Consumption, TokenCounts};

/// Per-route state.
enum Mode {
    /// Anthropic → Anthropic: frames go out as received; `message_stop` is held until billed.
    Pass { usage: CumulativeUsage },
    /// OpenAI client, Anthropic upstream.
    ToOpenAi { dec: Decoder, enc: ChunkEncoder },
    /// Anthropic client, OpenAI upstream.
    ToAnthropic { dec: ChunkDecoder, enc: Encoder },
}

/// What one upstream event changed.
enum Next {
    More,
    Done,
    Failed(&'static str, &'static str),
}

/// An Anthropic `error` event: overloaded and rate-limited keep their class (the client may
/// retry), anything else is an upstream failure. Anthropic's own message is not passed on.
fn anthropic_failure(v: &Value) -> Next {
    failure_of(v.pointer("/error/type").and_then(Value::as_str))
}

fn failure_of(kind: Option<&str>) -> Next {
    match kind {
        Some("overloaded_error" | "rate_limit_error") => {
            Next::Failed("upstream_overloaded", "The upstream provider is overloaded; retry later.")
        }
        _ => Next::Failed("upstream_error", "The upstream failed mid-stream."),
    }
}

const BAD_EVENT: Next = Next::Failed("upstream_protocol_error", "The upstream sent an invalid stream event.");

struct Acc {
    text: String,
    model_served: Option<String>,
    deltas: Vec<Delta>,
}

impl Mode {
    fn on_event(&mut self, event: SseEvent, acc: &mut Acc, out: &mut Vec<Bytes>) -> Next {
        let data = match event {
            SseEvent::Done => {
                return match self {
                    // `[DONE]` ends an OpenAI stream; Anthropic streams never send it.
                    Mode::ToAnthropic { enc, .. } => {
                        enc.end(out);
                        Next::Done
                    }
                    Mode::Pass { .. } | Mode::ToOpenAi { .. } => Next::More,
                };
            }
            SseEvent::Data(d) => d,
        };
        match self {
            Mode::Pass { usage } => {
                // Read without building a JSON tree: this is the Anthropic hot path.
                let Ok(v) = serde_json::from_slice::<EventView<'_>>(&data) else { return BAD_EVENT };
                let kind: &str = &v.kind;
                match kind {
                    "message_start" => {
                        if let Some(m) = &v.message {
                            if let Some(u) = m.usage {
                                usage.assign_raw(u);
                            }
                            acc.model_served = m.model.as_deref().map(str::to_owned);
                        }
                    }
                    "message_delta" => {
                        if let Some(u) = v.usage {
                            usage.assign_raw(u);
                        }
                    }
                    "message_stop" => return Next::Done,
                    "error" => return failure_of(v.error.as_ref().and_then(|e| e.kind.as_deref())),
                    "" => return BAD_EVENT,
                    _ => {}
                }
                if let Some(t) = v.delta.as_ref().and_then(DeltaView::text) {
                    acc.text.push_str(t);
                }
                let mut f = Vec::with_capacity(data.len() + kind.len() + 16);
                f.extend_from_slice(b"event: ");
                f.extend_from_slice(kind.as_bytes());
                f.extend_from_slice(b"\ndata: ");
                f.extend_from_slice(&data);
                f.extend_from_slice(b"\n\n");
                out.push(Bytes::from(f));
                Next::More
            }
            Mode::ToOpenAi { dec, enc } => {
                let Ok(v) = serde_json::from_slice::<Value>(&data) else { return BAD_EVENT };
                let step = dec.decode(&v, &mut acc.deltas);
                for d in acc.deltas.drain(..) {
                    note(&mut acc.text, &mut acc.model_served, &d);
                    enc.encode(d, out);
                }
                match step {
                    Step::More => Next::More,
                    Step::Stop => Next::Done,
                    Step::Error => anthropic_failure(&v),
                    Step::Invalid => BAD_EVENT,
                }
            }
            Mode::ToAnthropic { dec, enc } => {
                let decoded = dec.decode(&data, &mut acc.deltas);
                for d in acc.deltas.drain(..) {
                    note(&mut acc.text, &mut acc.model_served, &d);
                    enc.encode(d, out);
                }
                match decoded {
                    Ok(()) => Next::More,
                    Err(ChunkError::Upstream) => Next::Failed("upstream_error", "The upstream failed mid-stream."),
                    Err(ChunkError::Invalid) => BAD_EVENT,
                }
            }
        }
    }

    fn reported(&self) -> Option<(TokenCounts, Value)> {
        match self {
            Mode::Pass { usage } => usage.get(),
            Mode::ToOpenAi { dec, .. } => dec.usage.get(),
            Mode::ToAnthropic { dec, .. } => {
                let raw = serde_json::value::to_raw_value(dec.usage_raw.as_ref()?).ok()?;
                usage::from_openai(&raw)
            }
        }
    }

    /// The frames that end a successful stream, sent after the usage is durable.
    fn final_frames(&self, out: &mut Vec<Bytes>) {
        match self {
            Mode::Pass { .. } | Mode::ToAnthropic { .. } => out.push(Encoder::stop_frame()),
            Mode::ToOpenAi { enc, .. } => {
                out.extend(enc.usage_frame());
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
        }
    }

    fn error_frame(&self, code: &str, message: &str) -> Bytes {
        match self {
            Mode::ToOpenAi { .. } => {
                let mut b = b"data: ".to_vec();
                b.extend_from_slice(&error_body(message, "upstream_error", None, Some(code)));
                b.extend_from_slice(b"\n\n");
                Bytes::from(b)
            }
            Mode::Pass { .. } | Mode::ToAnthropic { .. } => {
                let kind = match code {
                    "upstream_timeout" => "timeout_error",
                    "upstream_overloaded" => "overloaded_error",
                    _ => "api_error",
                };
                astream::error_frame(kind, message)
            }
        }
    }
}

/// Keeps what billing needs from a delta: generated text for estimates, the model served.
fn note(text: &mut String, model: &mut Option<String>, d: &Delta) {
    match d {
        Delta::Text(t) | Delta::Thinking(t) | Delta::ToolCallArgs { json: t, .. } => text.push_str(t),
        Delta::Start { model: m, .. } if model.is_none() && !m.is_empty() => *model = Some(m.clone()),
        _ => {}
    }
}

/// Streams to the client on `route` (never [`Route::OpenAiToOpenAi`]), bills, logs.
pub async fn relay(
    app: AppState,
    call: Call,
    channel: Arc<Channel>,
    route: Route,
    started: Started,
    reply: oneshot::Sender<Response>,
    attempts: u32,
) {
    let Started { mut resp, mut parser, first } = started;
    let ttft = call.rid.started.elapsed();
    let mut sink = Sink::open(reply);
    let mut mode = match route {
        Route::OpenAiToAnthropic => Mode::ToOpenAi {
            dec: Decoder::default(),
            enc: ChunkEncoder::new(now_secs(), call.prepared.client_wants_usage),
        },
        Route::AnthropicToOpenAi => Mode::ToAnthropic { dec: ChunkDecoder::default(), enc: Encoder::default() },
        Route::AnthropicToAnthropic | Route::OpenAiToOpenAi => Mode::Pass { usage: CumulativeUsage::default() },
    };
    let mut acc = Acc { text: String::new(), model_served: None, deltas: Vec::new() };
    let mut out: Vec<Bytes> = Vec::new();
    let mut next = Some(first);
    let end = loop {
        let event = match next.take() {
            Some(e) => e,
            None => match next_event(&app, &mut parser, &mut resp, &mut sink).await {
                Ok(e) => e,
                Err(end) => break end,
            },
        };
        let step = mode.on_event(event, &mut acc, &mut out);
        sink.send_all(&mut out).await;
        match step {
            Next::More => {}
            Next::Done => break End::Done,
            Next::Failed(code, message) => break End::Failed(code, message),
        }
    };

    let outcome = match (&end, sink.connected()) {
        (_, false) | (End::DrainCapped, _) => StreamOutcome::ClientDisconnected,
        (End::Done, true) => StreamOutcome::Completed,
        (End::Failed(..), true) => StreamOutcome::UpstreamError,
    };
    let model_served = acc.model_served.take();
    let consumption = match mode.reported() {
        Some((tokens, raw)) => Consumption { tokens, raw: Some(raw), source: UsageSource::Upstream, model_served },
        None => estimate(&call, std::mem::take(&mut acc.text), model_served).await,
    };
    let record = call.billing().record(&channel.provider, &channel.id, consumption, true, outcome);
    let env = app.envelope(&call.key.tenant, &call.rid.id, EventBody::UsageRecorded(record));
    let recorded = app.log.append(&env).await;
    if let Err(e) = &recorded {
        tracing::error!(error = %e, "Usage of a stream could not be recorded.");
    }
    let class = match (&end, &recorded) {
        (End::Done, Ok(())) => {
            mode.final_frames(&mut out);
            sink.send_all(&mut out).await;
            None
        }
        (End::Done, Err(_)) => {
            sink.send(mode.error_frame("usage_not_recorded", "The service could not record usage.")).await;
            Some("usage_not_recorded")
        }
        (End::Failed(code, message), _) => {
            sink.send(mode.error_frame(code, message)).await;
            Some(*code)
        }
        (End::DrainCapped, _) => Some("client_disconnected"),
    };
    let class = if sink.connected() { class } else { Some("client_disconnected") };
    log_request(&app, &call, Some(&channel), 200, attempts, Some(ttft), class.map(str::to_owned));
}
