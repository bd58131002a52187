//! Relaying an upstream SSE stream to the client chunk by chunk. The usage-only chunk is held
//! back (or dropped when the client did not ask for it), `usage.recorded` is made durable before
//! the final chunk and `[DONE]`, failures become one in-band error event and the stream closes
//! without `[DONE]`. If the client goes away the upstream is drained (bounded) and billed.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use schemas::{StreamOutcome, UsageSource};
use tokio::sync::{mpsc, oneshot};

use super::record::{Billable, Billing, Delivered, Outcome, record};
use super::{Attempts, Call, estimate, policy};
use crate::ctx::AppState;
use crate::error::error_body;
use crate::state::Channel;
use crate::usage::{self, Consumption, TokenCounts};
use adapters::openai::wire::ChunkView;
use adapters::sse::{SseEvent, SseParser};
use adapters::{AttemptError, FailureClass, TimeoutPhase};

/// Frames buffered between the relay task and the client connection.
const CLIENT_BUFFER: usize = 32;

/// A stream whose first event has arrived.
pub struct Started {
    pub(super) resp: reqwest::Response,
    pub(super) parser: SseParser,
    pub(super) first: SseEvent,
}

impl Started {
    /// The first event's data (`None` for `[DONE]`).
    pub(super) fn first_data(&self) -> Option<&[u8]> {
        match &self.first {
            SseEvent::Data(d) => Some(d),
            SseEvent::Done => None,
        }
    }
}

/// Waits for the first complete event, so that a failure before it can still go to another
/// channel (nothing has reached the client yet).
pub async fn start(mut resp: reqwest::Response, deadline: tokio::time::Instant) -> Result<Started, AttemptError> {
    let is_sse = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/event-stream"));
    if !is_sse {
        return Err(AttemptError::status(FailureClass::InvalidResponse, resp.status().as_u16()));
    }
    let mut parser = SseParser::default();
    loop {
        match parser.next_event() {
            Ok(Some(first)) => return Ok(Started { resp, parser, first }),
            Ok(None) => {}
            Err(_) => return Err(AttemptError::status(FailureClass::InvalidResponse, 200)),
        }
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(AttemptError::status(FailureClass::Timeout(TimeoutPhase::FirstByte), 200)),
            Ok(Err(_)) => return Err(AttemptError::status(FailureClass::ConnectionFailed, 200)),
            Ok(Ok(Some(c))) => parser.push(&c),
            Ok(Ok(None)) => match parser.finish() {
                Some(first) => return Ok(Started { resp, parser, first }),
                None => return Err(AttemptError::status(FailureClass::ConnectionFailed, 200)),
            },
        }
    }
}

/// The client side: frames go out until the client disconnects, then we only drain. Shared by
/// the pass-through relay here and the translating one in `vendor_stream`.
pub(super) struct Sink {
    tx: Option<mpsc::Sender<Result<Bytes, Infallible>>>,
    gone_at: Option<Instant>,
    drained: usize,
}

impl Sink {
    /// Sends the SSE response head through `reply` and returns the sink its body reads from.
    pub(super) fn open(reply: oneshot::Sender<Response>) -> Sink {
        Sink::open_as(reply, "text/event-stream")
    }

    /// Like [`Sink::open`], with another content type (a Gemini stream written as a JSON array).
    pub(super) fn open_as(reply: oneshot::Sender<Response>, content_type: &'static str) -> Sink {
        let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
        let mut head = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)).into_response();
        *head.status_mut() = StatusCode::OK;
        let h = head.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        let mut sink = Sink { tx: Some(tx), gone_at: None, drained: 0 };
        if reply.send(head).is_err() {
            sink.tx = None;
            sink.gone_at = Some(Instant::now());
        }
        sink
    }

    pub(super) async fn send(&mut self, frame: Bytes) {
        if let Some(tx) = &self.tx
            && tx.send(Ok(frame)).await.is_err()
        {
            self.tx = None;
            self.gone_at = Some(Instant::now());
        }
    }

    pub(super) async fn send_all(&mut self, frames: &mut Vec<Bytes>) {
        for f in frames.drain(..) {
            self.send(f).await;
        }
    }

    pub(super) fn connected(&self) -> bool {
        self.tx.is_some()
    }
}

/// The two clocks of a relay. The idle timer runs from the last event that carried content (text,
/// a tool call, usage, a finish) — not from the last byte: an upstream that sends only `: ping`
/// comments, `ping` events or empty chunks makes no progress and is cut after the idle timeout,
/// instead of holding a connection and a task forever. The duration cap ends even a stream that
/// keeps producing content, counted from the request's arrival.
pub(super) struct Clock {
    idle: std::time::Duration,
    idle_until: tokio::time::Instant,
    ends_at: tokio::time::Instant,
}

impl Clock {
    /// Both clocks for `call`, the idle one starting now (its first event has just arrived).
    pub(super) fn start(app: &AppState, call: &Call) -> Clock {
        let idle = app.cfg.idle_timeout;
        let ends_at = tokio::time::Instant::from_std(call.rid.started) + app.cfg.max_stream_duration;
        Clock { idle, idle_until: tokio::time::Instant::now() + idle, ends_at }
    }

    /// The upstream sent content: the idle timer starts again.
    pub(super) fn progress(&mut self) {
        self.idle_until = tokio::time::Instant::now() + self.idle;
    }
}

/// The in-band error of a stream cut at the maximum stream duration.
pub(super) const TOO_LONG: End = End::Failed(
    FailureClass::Timeout(TimeoutPhase::Total),
    "The stream reached the maximum stream duration and was ended.",
);

/// The next upstream event, reading more of the body as needed: before the idle timer (from the
/// last progress, see [`Clock`]) and the duration cap run out while the client listens, within
/// the drain caps once it has left. `None` when the upstream closed the connection; `Err` when
/// the stream ended otherwise.
pub(super) async fn next_event(
    app: &AppState,
    parser: &mut SseParser,
    resp: &mut reqwest::Response,
    sink: &mut Sink,
    clock: &Clock,
) -> Result<Option<SseEvent>, End> {
    loop {
        match parser.next_event() {
            Err(_) => return Err(End::Failed(FailureClass::InvalidResponse, "The upstream sent an invalid stream.")),
            Ok(Some(e)) => return Ok(Some(e)),
            Ok(None) => {}
        }
        let deadline = match sink.gone_at {
            None => clock.idle_until.min(clock.ends_at),
            Some(at) => {
                if at.elapsed() >= app.cfg.drain_timeout || sink.drained > app.cfg.drain_max_bytes {
                    return Err(End::DrainCapped);
                }
                (tokio::time::Instant::from_std(at) + app.cfg.drain_timeout).min(clock.idle_until)
            }
        };
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) if sink.gone_at.is_some() => return Err(End::DrainCapped),
            Err(_) if tokio::time::Instant::now() >= clock.ends_at => return Err(TOO_LONG),
            Err(_) => {
                return Err(End::Failed(FailureClass::Timeout(TimeoutPhase::Idle), "The upstream stopped sending."));
            }
            Ok(Err(_)) => {
                return Err(End::Failed(
                    FailureClass::UpstreamServerError,
                    "The upstream connection failed mid-stream.",
                ));
            }
            Ok(Ok(Some(c))) => {
                if !sink.connected() {
                    sink.drained += c.len();
                }
                parser.push(&c);
            }
            Ok(Ok(None)) => return Ok(parser.finish()),
        }
    }
}

/// How the upstream stream ended.
pub(super) enum End {
    /// `[DONE]`.
    Done,
    /// A failure of this class (logged with the attempt), told to the client as an in-band error
    /// with the code `policy::mid_stream_code` gives and this message.
    Failed(FailureClass, &'static str),
    /// The client left and the drain cap was reached.
    DrainCapped,
}

/// A stream whose connection closed before its final frame (every protocol but Gemini ends with
/// one; a Gemini stream ends by closing).
pub(super) const CUT: End =
    End::Failed(FailureClass::UpstreamServerError, "The upstream closed the stream before it finished.");

fn data_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

fn error_frame(code: &str, message: &str) -> Bytes {
    data_frame(&error_body(message, "upstream_error", None, Some(code)))
}

/// Streams to the client, bills, logs. Sends the response head through `reply` first.
pub async fn relay(
    app: AppState,
    call: Call,
    channel: Arc<Channel>,
    started: Started,
    reply: oneshot::Sender<Response>,
    attempts: Attempts,
) {
    let Started { mut resp, mut parser, first } = started;
    // The first event has just arrived.
    let ttft = call.rid.started.elapsed();
    let mut sink = Sink::open(reply);
    let mut clock = Clock::start(&app, &call);

    let mut text = OutputText::default();
    let mut model_served: Option<String> = None;
    let mut reported: Option<(TokenCounts, serde_json::Value)> = None;
    let mut held: Option<Bytes> = None;
    let mut next = Some(first);
    let end = loop {
        let event = match next.take() {
            Some(e) => e,
            None => match next_event(&app, &mut parser, &mut resp, &mut sink, &clock).await {
                Ok(Some(e)) => e,
                Ok(None) => break CUT,
                Err(end) => break end,
            },
        };
        let data = match event {
            SseEvent::Done => break End::Done,
            SseEvent::Data(d) => d,
        };
        let usage_only = {
            let Ok(view) = serde_json::from_slice::<ChunkView<'_>>(&data) else {
                break End::Failed(FailureClass::InvalidResponse, "The upstream sent an invalid stream chunk.");
            };
            if view.is_error() {
                break End::Failed(FailureClass::UpstreamServerError, "The upstream failed mid-stream.");
            }
            if model_served.is_none() {
                model_served = view.model.as_deref().map(str::to_owned);
            }
            view.collect_text(text.buf());
            text.settle();
            if let Some(u) = view.usage() {
                reported = usage::from_openai(u).or(reported);
            }
            // A chunk without choices or usage (`{"choices":[]}`) is a keep-alive, not progress.
            if view.choices.as_ref().is_some_and(|c| c.len > 0) || view.usage().is_some() {
                clock.progress();
            }
            view.is_usage_only()
        };
        if usage_only {
            if call.prepared.client_wants_usage {
                held = Some(data_frame(&data));
            }
            continue;
        }
        if let Some(h) = held.take() {
            sink.send(h).await;
        }
        sink.send(data_frame(&data)).await;
    };

    let usage = StreamUsage { reported, text, model_served };
    let mut closing = PassClosing { held };
    close(&app, &call, &channel, &mut sink, end, usage, ttft, attempts, &mut closing).await;
}

/// What a relay learnt about the usage of its stream.
pub(super) struct StreamUsage {
    /// The upstream's own counts and usage object, if it sent them.
    pub reported: Option<(TokenCounts, serde_json::Value)>,
    /// The generated text, to estimate from when the upstream reported nothing.
    pub text: OutputText,
    /// The model the upstream said served the call.
    pub model_served: Option<String>,
}

/// Generated text kept to estimate the output tokens from when the upstream reports no usage:
/// up to 1 MiB (the tokenizer's exact budget), and only the length of the rest, which is counted
/// by the bytes-per-token bound. A long stream never holds more than this in memory.
#[derive(Default)]
pub(super) struct OutputText {
    kept: String,
    /// Bytes of text beyond [`MAX_KEPT_OUTPUT`], not kept.
    over: usize,
}

/// The most generated text a relay keeps.
pub(super) const MAX_KEPT_OUTPUT: usize = crate::tokenizer::EXACT_BUDGET_BYTES;

impl OutputText {
    /// Where to append more text; call [`OutputText::settle`] after.
    pub(super) fn buf(&mut self) -> &mut String {
        &mut self.kept
    }

    /// Appends `t`.
    pub(super) fn push(&mut self, t: &str) {
        if self.over > 0 {
            self.over += t.len();
            return;
        }
        self.kept.push_str(t);
        self.settle();
    }

    /// Cuts the kept text back to the cap (at a character boundary), counting what was cut.
    pub(super) fn settle(&mut self) {
        if self.kept.len() <= MAX_KEPT_OUTPUT {
            return;
        }
        let mut cut = MAX_KEPT_OUTPUT;
        while !self.kept.is_char_boundary(cut) {
            cut -= 1;
        }
        self.over += self.kept.len() - cut;
        self.kept.truncate(cut);
    }

    /// The kept text and how many bytes beyond it were not kept.
    pub(super) fn into_parts(self) -> (String, usize) {
        (self.kept, self.over)
    }
}

/// How a relay ends its stream in the client's protocol, once [`close`] has recorded the usage.
pub(super) trait Closing {
    /// Sends the frames that end a stream whose usage is durable; returns the class to log for an
    /// answer that was complete but filtered.
    async fn final_frames(&mut self, sink: &mut Sink) -> Option<&'static str>;
    /// Sends one in-band error and whatever must close the stream after it.
    async fn error_frames(&mut self, sink: &mut Sink, code: &str, message: &str);
}

/// The OpenAI pass-through's ending: the usage chunk held back (when the client asked for it),
/// then `[DONE]`.
struct PassClosing {
    held: Option<Bytes>,
}

impl Closing for PassClosing {
    async fn final_frames(&mut self, sink: &mut Sink) -> Option<&'static str> {
        if let Some(h) = self.held.take() {
            sink.send(h).await;
        }
        sink.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
        None
    }

    async fn error_frames(&mut self, sink: &mut Sink, code: &str, message: &str) {
        sink.send(error_frame(code, message)).await;
    }
}

/// The billing tail both relays share: how the stream ended, what it consumed (estimated when the
/// upstream reported nothing), then [`record`] — the usage made durable before the final frames;
/// an in-band error instead when it could not be, or when the upstream failed.
#[expect(clippy::too_many_arguments, reason = "the parts of a finished relay, each owned by the relay until here")]
pub(super) async fn close(
    app: &AppState,
    call: &Call,
    channel: &Channel,
    sink: &mut Sink,
    end: End,
    usage: StreamUsage,
    ttft: std::time::Duration,
    mut attempts: Attempts,
    closing: &mut impl Closing,
) {
    let ending = match (&end, sink.connected()) {
        (_, false) | (End::DrainCapped, _) => StreamOutcome::ClientDisconnected,
        (End::Done, true) => StreamOutcome::Completed,
        (End::Failed(..), true) => StreamOutcome::UpstreamError,
    };
    let StreamUsage { reported, text, model_served } = usage;
    let consumption = match reported {
        Some((tokens, raw)) => Consumption { tokens, raw: Some(raw), source: UsageSource::Upstream, model_served },
        None => {
            let (text, over) = text.into_parts();
            estimate(call, text, over, model_served).await
        }
    };
    if let End::Failed(class, _) = &end {
        attempts.failed_mid_stream(*class);
    }
    let outcome = Outcome {
        channel: Some(channel),
        attempts,
        billable: Some(Billable { consumption, streamed: true, ending }),
        ttft: Some(ttft),
    };
    record(app, call, outcome, async |billing| {
        let class = match (&end, billing) {
            (End::Done, Billing::Recorded | Billing::NotBillable) => closing.final_frames(sink).await,
            (End::Done, Billing::NotRecorded) => {
                closing.error_frames(sink, "usage_not_recorded", "The service could not record usage.").await;
                Some("usage_not_recorded")
            }
            (End::Failed(class, message), _) => {
                let code = policy::mid_stream_code(*class);
                closing.error_frames(sink, code, message).await;
                Some(code)
            }
            (End::DrainCapped, _) => Some("client_disconnected"),
        };
        let class = if sink.connected() { class } else { Some("client_disconnected") };
        (Delivered::ok(class), ())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_text_keeps_at_most_the_cap_and_counts_the_rest() {
        let mut t = OutputText::default();
        let piece = "é".repeat(1000); // 2000 bytes, two-byte characters
        let pieces = MAX_KEPT_OUTPUT / 2000 + 10;
        for _ in 0..pieces {
            t.push(&piece);
        }
        // Text appended through `buf` is cut back as well.
        t.buf().push_str(&piece);
        t.settle();
        let (kept, over) = t.into_parts();
        assert!(kept.len() <= MAX_KEPT_OUTPUT && kept.len() > MAX_KEPT_OUTPUT - 4);
        assert_eq!(kept.len() + over, (pieces + 1) * 2000, "every byte is either kept or counted");
        assert!(kept.chars().all(|c| c == 'é'), "cut at a character boundary");
    }

    #[test]
    fn short_output_is_kept_whole() {
        let mut t = OutputText::default();
        t.push("Hello, ");
        t.buf().push_str("world");
        t.settle();
        assert_eq!(t.into_parts(), ("Hello, world".to_owned(), 0));
    }
}
