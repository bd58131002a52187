//! Relaying a stream when the client and the upstream are not both OpenAI: Anthropic and Gemini
//! streams passed through to a client of the same protocol (usage read on the way: Anthropic's
//! `message_start` and cumulative `message_delta`, Gemini's last `usageMetadata`), or translated
//! event by event through canonical deltas from any upstream to any client protocol. Billing and
//! endings are those of [`super::stream`], through its shared tail ([`close`]): one `usage.recorded`, made durable before the
//! final frame (`message_stop`, `[DONE]`, or Gemini's chunk carrying `finishReason`); failures
//! become one in-band error in the client's protocol; a client that leaves is billed after a
//! bounded drain.

use std::sync::Arc;

use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::stream::{CUT, Clock, Closing, End, OutputText, Sink, Started, StreamUsage, close, next_event};
use super::vendor::{CONTENT_FILTERED, Route, now_secs};
use super::{Attempts, Call};
use crate::codec::{anthropic as acodec, gemini as gcodec, openai as ocodec};
use crate::ctx::AppState;
use crate::error::error_body;
use crate::protocol::Protocol;
use crate::state::Channel;
use crate::usage::{self, TokenCounts};
use adapters::anthropic::stream::{self as astream, CumulativeUsage, DeltaView, EventView, Step};
use adapters::canonical::openai_chat::stream::{ChunkDecoder, ChunkError};
use adapters::canonical::{Delta, FinishReason};
use adapters::gemini::stream as gstream;
use adapters::sse::SseEvent;
use adapters::{FailureClass, Provider};

/// What one upstream event changed.
enum Next {
    More,
    Done,
    Failed(FailureClass, &'static str),
}

const BAD_EVENT: Next = Next::Failed(FailureClass::InvalidResponse, "The upstream sent an invalid stream event.");
const FAILED: Next = Next::Failed(FailureClass::UpstreamServerError, "The upstream failed mid-stream.");
const OVERLOADED_MESSAGE: &str = "The upstream provider is overloaded; retry later.";

/// An upstream's in-band error: overloaded and rate-limited keep their class (the client may
/// retry), anything else is an upstream failure. The upstream's own message is not passed on.
fn anthropic_failure(kind: Option<&str>) -> Next {
    match kind {
        Some("overloaded_error") => Next::Failed(FailureClass::Overloaded { retry_after: None }, OVERLOADED_MESSAGE),
        Some("rate_limit_error") => Next::Failed(FailureClass::RateLimited { retry_after: None }, OVERLOADED_MESSAGE),
        _ => FAILED,
    }
}

fn gemini_failure(status: Option<&str>) -> Next {
    match status {
        Some("UNAVAILABLE") => Next::Failed(FailureClass::Overloaded { retry_after: None }, OVERLOADED_MESSAGE),
        Some("RESOURCE_EXHAUSTED") => Next::Failed(FailureClass::RateLimited { retry_after: None }, OVERLOADED_MESSAGE),
        _ => FAILED,
    }
}

/// Reads an upstream's events into canonical deltas.
enum Decoder {
    OpenAi(ChunkDecoder),
    Anthropic(astream::Decoder),
    Gemini(gstream::Decoder),
}

impl Decoder {
    fn new(upstream: Provider) -> Decoder {
        match upstream {
            Provider::OpenAi => Decoder::OpenAi(ChunkDecoder::default()),
            Provider::Anthropic => Decoder::Anthropic(astream::Decoder::default()),
            Provider::Gemini => Decoder::Gemini(gstream::Decoder::default()),
        }
    }

    fn decode(&mut self, event: SseEvent, out: &mut Vec<Delta>) -> Next {
        match (self, event) {
            // `[DONE]` ends an OpenAI stream; the others never send it.
            (Decoder::OpenAi(_), SseEvent::Done) => Next::Done,
            (Decoder::Anthropic(_) | Decoder::Gemini(_), SseEvent::Done) => Next::More,
            (Decoder::OpenAi(d), SseEvent::Data(data)) => match d.decode(&data, out) {
                Ok(()) => Next::More,
                Err(ChunkError::Upstream) => FAILED,
                Err(ChunkError::Invalid) => BAD_EVENT,
            },
            (Decoder::Anthropic(d), SseEvent::Data(data)) => {
                let Ok(v) = serde_json::from_slice::<Value>(&data) else { return BAD_EVENT };
                match d.decode(&v, out) {
                    Step::More => Next::More,
                    Step::Stop => Next::Done,
                    Step::Error => anthropic_failure(v.pointer("/error/type").and_then(Value::as_str)),
                    Step::Invalid => BAD_EVENT,
                }
            }
            (Decoder::Gemini(d), SseEvent::Data(data)) => match d.decode(&data, out) {
                gstream::Step::More => Next::More,
                gstream::Step::Error(status) => gemini_failure(status.as_deref()),
                gstream::Step::Invalid => BAD_EVENT,
            },
        }
    }

    /// Whether a closed connection is the normal end (a Gemini stream that sent its finish).
    fn done_on_close(&self) -> bool {
        matches!(self, Decoder::Gemini(d) if d.finished())
    }

    /// Deltas owed at the end of the upstream stream (Gemini's finish reason, held until then).
    fn end(&mut self, out: &mut Vec<Delta>) {
        if let Decoder::Gemini(d) = self {
            d.end(out);
        }
    }

    fn reported(&self) -> Option<(TokenCounts, Value)> {
        match self {
            Decoder::OpenAi(d) => {
                let raw = serde_json::value::to_raw_value(d.usage_raw.as_ref()?).ok()?;
                usage::from_openai(&raw)
            }
            Decoder::Anthropic(d) => d.usage.get(),
            Decoder::Gemini(d) => d.usage.clone(),
        }
    }
}

/// Writes canonical deltas in a client's protocol.
enum Encoder {
    OpenAi(ocodec::ChunkEncoder),
    Anthropic(acodec::Encoder),
    Gemini(gcodec::Encoder),
}

impl Encoder {
    fn encode(&mut self, d: Delta, out: &mut Vec<Bytes>) {
        match self {
            Encoder::OpenAi(e) => e.encode(d, out),
            Encoder::Anthropic(e) => e.encode(d, out),
            Encoder::Gemini(e) => e.encode(d, out),
        }
    }

    /// Frames that close the answer's content, sent before billing (Anthropic's `message_delta`).
    fn end(&mut self, out: &mut Vec<Bytes>) {
        if let Encoder::Anthropic(e) = self {
            e.end(out);
        }
    }

    /// The frames that end a successful stream, sent after the usage is durable.
    fn final_frames(&mut self, out: &mut Vec<Bytes>) {
        match self {
            Encoder::OpenAi(e) => {
                out.extend(e.usage_frame());
                out.push(Bytes::from_static(b"data: [DONE]\n\n"));
            }
            Encoder::Anthropic(_) => out.push(acodec::Encoder::stop_frame()),
            Encoder::Gemini(e) => {
                e.end(out);
                out.extend(e.framer.close());
            }
        }
    }
}

/// Per-route state.
enum Mode {
    /// Anthropic → Anthropic: frames go out as received; `message_stop` is held until billed.
    AnthropicPass { usage: CumulativeUsage },
    /// Gemini → Gemini: chunks go out as received (re-framed for the client); the chunk with the
    /// finish reason, and any after it, are held until billed.
    GeminiPass { dec: gstream::Decoder, framer: gcodec::Framer, held: Vec<Bytes> },
    /// Different protocols: decode to canonical deltas, encode for the client.
    Translate { dec: Decoder, enc: Encoder },
}

struct Acc {
    text: OutputText,
    model_served: Option<String>,
    deltas: Vec<Delta>,
    finish: Option<FinishReason>,
    /// The last upstream event carried content (a delta, usage, a finish), not only a keep-alive
    /// such as Anthropic's `ping`: the idle timer starts again.
    progressed: bool,
}

impl Acc {
    /// Takes the decoded deltas, noting each, and hands them to `f`.
    fn drain(&mut self, mut f: impl FnMut(Delta)) {
        let mut deltas = std::mem::take(&mut self.deltas);
        for d in deltas.drain(..) {
            self.note(&d);
            f(d);
        }
        self.deltas = deltas;
    }

    /// Keeps what billing and logging need from a delta.
    fn note(&mut self, d: &Delta) {
        self.progressed = true;
        match d {
            Delta::Text(t) | Delta::Thinking(t) | Delta::ToolCallArgs { json: t, .. } => self.text.push(t),
            Delta::Start { model: m, .. } if self.model_served.is_none() && !m.is_empty() => {
                self.model_served = Some(m.clone());
            }
            Delta::Finish { reason, .. } => self.finish = Some(*reason),
            _ => {}
        }
    }
}

impl Mode {
    fn new(call: &Call, route: Route) -> Mode {
        let framing = if call.gemini_sse { gcodec::Framing::Sse } else { gcodec::Framing::JsonArray };
        match (route.client, route.upstream) {
            (Protocol::Anthropic, Provider::Anthropic) => Mode::AnthropicPass { usage: CumulativeUsage::default() },
            (Protocol::Gemini, Provider::Gemini) => Mode::GeminiPass {
                dec: gstream::Decoder::default(),
                framer: gcodec::Framer::new(framing),
                held: Vec::new(),
            },
            (client, upstream) => Mode::Translate {
                dec: Decoder::new(upstream),
                enc: match client {
                    Protocol::OpenAi => {
                        Encoder::OpenAi(ocodec::ChunkEncoder::new(now_secs(), call.prepared.client_wants_usage))
                    }
                    Protocol::Anthropic => Encoder::Anthropic(acodec::Encoder::default()),
                    Protocol::Gemini => Encoder::Gemini(gcodec::Encoder::new(framing)),
                },
            },
        }
    }

    fn client(&self) -> Protocol {
        match self {
            Mode::AnthropicPass { .. } => Protocol::Anthropic,
            Mode::GeminiPass { .. } => Protocol::Gemini,
            Mode::Translate { enc: Encoder::OpenAi(_), .. } => Protocol::OpenAi,
            Mode::Translate { enc: Encoder::Anthropic(_), .. } => Protocol::Anthropic,
            Mode::Translate { enc: Encoder::Gemini(_), .. } => Protocol::Gemini,
        }
    }

    fn on_event(&mut self, event: SseEvent, acc: &mut Acc, out: &mut Vec<Bytes>) -> Next {
        match self {
            Mode::AnthropicPass { usage } => {
                let SseEvent::Data(data) = event else { return Next::More };
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
                    "error" => return anthropic_failure(v.error.as_ref().and_then(|e| e.kind.as_deref())),
                    "" => return BAD_EVENT,
                    _ => {}
                }
                acc.progressed |= kind != "ping";
                if let Some(t) = v.delta.as_ref().and_then(DeltaView::text) {
                    acc.text.push(t);
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
            Mode::GeminiPass { dec, framer, held } => {
                let SseEvent::Data(data) = event else { return Next::More };
                let step = dec.decode(&data, &mut acc.deltas);
                acc.drain(|_| {});
                match step {
                    gstream::Step::More => {
                        let frame = framer.chunk(&data);
                        if dec.finished() {
                            held.push(frame)
                        } else {
                            out.push(frame)
                        }
                        Next::More
                    }
                    gstream::Step::Error(status) => gemini_failure(status.as_deref()),
                    gstream::Step::Invalid => BAD_EVENT,
                }
            }
            Mode::Translate { dec, enc } => {
                let next = dec.decode(event, &mut acc.deltas);
                acc.drain(|d| enc.encode(d, out));
                next
            }
        }
    }

    /// Whether a closed upstream connection is the normal end of this stream.
    fn done_on_close(&self) -> bool {
        match self {
            Mode::AnthropicPass { .. } => false,
            Mode::GeminiPass { dec, .. } => dec.finished(),
            Mode::Translate { dec, .. } => dec.done_on_close(),
        }
    }

    /// The upstream finished: close the content, before billing.
    fn finish_content(&mut self, acc: &mut Acc, out: &mut Vec<Bytes>) {
        match self {
            Mode::AnthropicPass { .. } => {}
            Mode::GeminiPass { dec, .. } => {
                dec.end(&mut acc.deltas);
                acc.drain(|_| {});
            }
            Mode::Translate { dec, enc } => {
                dec.end(&mut acc.deltas);
                acc.drain(|d| enc.encode(d, out));
                enc.end(out);
            }
        }
    }

    fn reported(&self) -> Option<(TokenCounts, Value)> {
        match self {
            Mode::AnthropicPass { usage } => usage.get(),
            Mode::GeminiPass { dec, .. } => dec.usage.clone(),
            Mode::Translate { dec, .. } => dec.reported(),
        }
    }

    /// The frames that end a successful stream, sent after the usage is durable.
    fn final_frames(&mut self, out: &mut Vec<Bytes>) {
        match self {
            Mode::AnthropicPass { .. } => out.push(acodec::Encoder::stop_frame()),
            Mode::GeminiPass { framer, held, .. } => {
                out.append(held);
                out.extend(framer.close());
            }
            Mode::Translate { enc, .. } => enc.final_frames(out),
        }
    }

    fn error_frames(&mut self, code: &str, message: &str, out: &mut Vec<Bytes>) {
        match self.client() {
            Protocol::OpenAi => {
                let mut b = b"data: ".to_vec();
                b.extend_from_slice(&error_body(message, "upstream_error", None, Some(code)));
                b.extend_from_slice(b"\n\n");
                out.push(Bytes::from(b));
            }
            Protocol::Anthropic => {
                let kind = match code {
                    "upstream_timeout" | "stream_too_long" => "timeout_error",
                    "upstream_overloaded" => "overloaded_error",
                    _ => "api_error",
                };
                out.push(acodec::error_frame(kind, message));
            }
            Protocol::Gemini => {
                let (status, name) = match code {
                    "upstream_timeout" | "stream_too_long" => (504, "DEADLINE_EXCEEDED"),
                    "upstream_overloaded" | "usage_not_recorded" => (503, "UNAVAILABLE"),
                    _ => (502, "INTERNAL"),
                };
                let payload = gcodec::error_payload(status, name, message);
                let framer = match self {
                    Mode::GeminiPass { framer, .. } => framer,
                    Mode::Translate { enc: Encoder::Gemini(e), .. } => &mut e.framer,
                    _ => return,
                };
                out.push(framer.chunk(&payload));
                out.extend(framer.close());
            }
        }
    }
}

/// Streams to the client on `route` (never the OpenAI pass-through), bills, logs.
pub async fn relay(
    app: AppState,
    call: Call,
    channel: Arc<Channel>,
    route: Route,
    started: Started,
    reply: oneshot::Sender<Response>,
    attempts: Attempts,
) {
    let Started { mut resp, mut parser, first } = started;
    let ttft = call.rid.started.elapsed();
    let mut sink = if route.client == Protocol::Gemini && !call.gemini_sse {
        Sink::open_as(reply, "application/json")
    } else {
        Sink::open(reply)
    };
    let mut mode = Mode::new(&call, route);
    let mut clock = Clock::start(&app, &call);
    let mut acc =
        Acc { text: OutputText::default(), model_served: None, deltas: Vec::new(), finish: None, progressed: false };
    let mut out: Vec<Bytes> = Vec::new();
    let mut next = Some(first);
    let end = loop {
        let event = match next.take() {
            Some(e) => e,
            None => match next_event(&app, &mut parser, &mut resp, &mut sink, &clock).await {
                Ok(Some(e)) => e,
                Ok(None) if mode.done_on_close() => break End::Done,
                Ok(None) => break CUT,
                // A Gemini answer is complete once its finish reason came: a connection that
                // then stalls or breaks instead of closing loses nothing.
                Err(End::Failed(..)) if mode.done_on_close() => break End::Done,
                Err(end) => break end,
            },
        };
        let step = mode.on_event(event, &mut acc, &mut out);
        if std::mem::take(&mut acc.progressed) {
            clock.progress();
        }
        sink.send_all(&mut out).await;
        match step {
            Next::More => {}
            Next::Done => break End::Done,
            Next::Failed(class, message) => break End::Failed(class, message),
        }
    };
    if matches!(end, End::Done) {
        mode.finish_content(&mut acc, &mut out);
        sink.send_all(&mut out).await;
    }

    let usage = StreamUsage {
        reported: mode.reported(),
        text: std::mem::take(&mut acc.text),
        model_served: acc.model_served.take(),
    };
    let mut closing = ModeClosing { mode, out, finish: acc.finish };
    close(&app, &call, &channel, &mut sink, end, usage, ttft, attempts, &mut closing).await;
}

/// A translated or vendor pass-through stream's ending, in the client's protocol.
struct ModeClosing {
    mode: Mode,
    out: Vec<Bytes>,
    finish: Option<FinishReason>,
}

impl Closing for ModeClosing {
    async fn final_frames(&mut self, sink: &mut Sink) -> Option<&'static str> {
        self.mode.final_frames(&mut self.out);
        sink.send_all(&mut self.out).await;
        (self.finish == Some(FinishReason::ContentFilter)).then_some(CONTENT_FILTERED)
    }

    async fn error_frames(&mut self, sink: &mut Sink, code: &str, message: &str) {
        self.mode.error_frames(code, message, &mut self.out);
        sink.send_all(&mut self.out).await;
    }
}
