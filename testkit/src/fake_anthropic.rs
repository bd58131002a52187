//! A fake Anthropic upstream on loopback speaking the real Messages wire protocol
//! (`POST /v1/messages`, version `2023-06-01`): JSON answers, and SSE streams with the full event
//! sequence — `message_start`, `ping`, `content_block_start/delta/stop` (text, thinking with its
//! `signature_delta`, `tool_use` with `input_json_delta`), `message_delta` with *cumulative*
//! usage, `message_stop`. Usage carries `cache_creation_input_tokens` and
//! `cache_read_input_tokens` beside `input_tokens`, as Anthropic bills them.
//!
//! What it answers follows the request: with `tools`, two `tool_use` blocks (parallel tool use,
//! cycling through the tools given; one when `tool_choice` names a tool or disables parallel use); with `thinking` enabled, a thinking block first; else text.
//! Failures are chosen per request by the `x-fake-scenario` header (same syntax as the OpenAI
//! fake), else by [`FakeAnthropic::set_scenario`]. Every request is recorded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::fake_openai::Scenario;

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path, e.g. `/v1/messages`.
    pub path: String,
    /// All request headers.
    pub headers: HeaderMap,
    /// The body, parsed as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// A header's value, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The usage the fake reports, in Anthropic's semantics: the four counts are disjoint
/// (`input_tokens` excludes cache reads and writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnthropicUsage {
    /// `input_tokens` (uncached).
    pub input_tokens: u64,
    /// `output_tokens` (thinking included).
    pub output_tokens: u64,
    /// `cache_creation_input_tokens`.
    pub cache_creation_input_tokens: u64,
    /// `cache_read_input_tokens`.
    pub cache_read_input_tokens: u64,
}

impl Default for AnthropicUsage {
    fn default() -> Self {
        AnthropicUsage {
            input_tokens: 20,
            output_tokens: 12,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 5,
        }
    }
}

impl AnthropicUsage {
    fn to_json(self, output_tokens: u64) -> Value {
        json!({"input_tokens": self.input_tokens, "output_tokens": output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "service_tier": "standard"})
    }
}

struct Shared {
    scenario: Scenario,
    usage: AnthropicUsage,
    pieces: Vec<String>,
    requests: Vec<RecordedRequest>,
    canned: Option<Value>,
    canned_stream: Option<Vec<Value>>,
}

#[derive(Clone)]
struct FakeState(Arc<Mutex<Shared>>);

impl FakeState {
    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        let mut guard = match self.0.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }
}

/// A running fake Anthropic upstream; stops when dropped.
pub struct FakeAnthropic {
    addr: SocketAddr,
    state: FakeState,
    task: JoinHandle<()>,
}

impl Drop for FakeAnthropic {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeAnthropic {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<FakeAnthropic> {
        let state = FakeState(Arc::new(Mutex::new(Shared {
            scenario: Scenario::Normal,
            usage: AnthropicUsage::default(),
            pieces: ["Hello", ",", " world", "!"].iter().map(|s| (*s).to_owned()).collect(),
            requests: Vec::new(),
            canned: None,
            canned_stream: None,
        })));
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/models", get(models))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeAnthropic { addr, state, task })
    }

    /// The base URL a channel should use: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Sets the behaviour for requests without an `x-fake-scenario` header.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.state.with(|s| s.scenario = scenario);
    }

    /// Sets the usage reported from now on.
    pub fn set_usage(&self, usage: AnthropicUsage) {
        self.state.with(|s| s.usage = usage);
    }

    /// Sets the text pieces generated (one `text_delta` each; joined for JSON answers).
    pub fn set_pieces(&self, pieces: &[&str]) {
        self.state.with(|s| s.pieces = pieces.iter().map(|p| (*p).to_owned()).collect());
    }

    /// Answers every non-stream request with this message, verbatim (a recorded fixture).
    pub fn set_canned_response(&self, message: Value) {
        self.state.with(|s| s.canned = Some(message));
    }

    /// Answers every stream request with these events' data, verbatim and in order (a recorded
    /// fixture); each goes out as `event: <type>` + `data:`.
    pub fn set_canned_stream(&self, events: Vec<Value>) {
        self.state.with(|s| s.canned_stream = Some(events));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.with(|s| s.requests.clone())
    }
}

/// One content block of the answer, with the pieces it streams in.
enum Block {
    Thinking(Vec<String>),
    Text(Vec<String>),
    ToolUse { id: String, name: String, json_pieces: Vec<String> },
}

impl Block {
    fn full(&self) -> Value {
        match self {
            Block::Thinking(p) => json!({"type": "thinking", "thinking": p.concat(), "signature": "sig-fake"}),
            Block::Text(p) => json!({"type": "text", "text": p.concat()}),
            Block::ToolUse { id, name, json_pieces } => {
                let input: Value = serde_json::from_str(&json_pieces.concat()).unwrap_or_else(|_| json!({}));
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        }
    }

    fn events(&self, index: usize) -> Vec<Value> {
        let (start, deltas): (Value, Vec<Value>) = match self {
            Block::Thinking(p) => (
                json!({"type": "thinking", "thinking": "", "signature": ""}),
                p.iter()
                    .map(|t| json!({"type": "thinking_delta", "thinking": t}))
                    .chain(std::iter::once(json!({"type": "signature_delta", "signature": "sig-fake"})))
                    .collect(),
            ),
            Block::Text(p) => (
                json!({"type": "text", "text": ""}),
                p.iter().map(|t| json!({"type": "text_delta", "text": t})).collect(),
            ),
            Block::ToolUse { id, name, json_pieces } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                json_pieces.iter().map(|j| json!({"type": "input_json_delta", "partial_json": j})).collect(),
            ),
        };
        std::iter::once(json!({"type": "content_block_start", "index": index, "content_block": start}))
            .chain(deltas.into_iter().map(|d| json!({"type": "content_block_delta", "index": index, "delta": d})))
            .chain(std::iter::once(json!({"type": "content_block_stop", "index": index})))
            .collect()
    }
}

fn plan_blocks(body: &Value, pieces: &[String]) -> (Vec<Block>, &'static str) {
    let mut blocks = Vec::new();
    if body.pointer("/thinking/type").and_then(Value::as_str) == Some("enabled") {
        blocks.push(Block::Thinking(vec!["Let me think".into(), " about it.".into()]));
    }
    let tools: Vec<&str> = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    let forbids_tools = body.pointer("/tool_choice/type").and_then(Value::as_str) == Some("none");
    if !tools.is_empty() && !forbids_tools {
        // A forced tool, or parallel use disabled, gets one call; otherwise two (parallel use).
        let forced = body.pointer("/tool_choice/name").and_then(Value::as_str);
        let single = forced.is_some()
            || body.pointer("/tool_choice/disable_parallel_tool_use").and_then(Value::as_bool) == Some(true);
        for i in 0..if single { 1 } else { 2 } {
            blocks.push(Block::ToolUse {
                id: format!("toolu_fake{i}"),
                name: forced.unwrap_or(tools[i % tools.len()]).to_owned(),
                json_pieces: vec!["{\"location\": ".into(), format!("\"City {i}\"}}")],
            });
        }
        return (blocks, "tool_use");
    }
    blocks.push(Block::Text(pieces.to_vec()));
    (blocks, "end_turn")
}

fn error_response(status: u16, retry_after: Option<u32>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": format!("fake upstream status {status}")}});
    let mut resp = (code, axum::Json(body)).into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = ra.to_string().parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

/// `GET /v1/models`: two models, or the scenario's failure (`ErrorBody`, `FailStatus`).
async fn models(State(state): State<FakeState>, uri: Uri, headers: HeaderMap) -> Response {
    let from_header = headers.get("x-fake-scenario").and_then(|v| v.to_str().ok()).and_then(Scenario::parse);
    let scenario = state.with(|s| {
        let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        s.requests.push(RecordedRequest { path, headers: headers.clone(), body: Value::Null });
        from_header.unwrap_or_else(|| s.scenario.clone())
    });
    match &scenario {
        Scenario::ErrorBody { .. } => scenario.error_body_response().unwrap_or_default(),
        Scenario::FailStatus { status, retry_after } => error_response(*status, *retry_after),
        _ => axum::Json(json!({"data": [
            {"type": "model", "id": "claude-sonnet-4-5", "display_name": "Claude Sonnet 4.5", "created_at": "2025-09-29T00:00:00Z"},
            {"type": "model", "id": "claude-haiku-4-5", "display_name": "Claude Haiku 4.5", "created_at": "2025-10-01T00:00:00Z"}
        ], "has_more": false, "first_id": "claude-sonnet-4-5", "last_id": "claude-haiku-4-5"}))
        .into_response(),
    }
}

async fn messages(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let from_header = headers.get("x-fake-scenario").and_then(|v| v.to_str().ok()).and_then(Scenario::parse);
    let (scenario, usage, pieces, canned, canned_stream) = state.with(|s| {
        s.requests.push(RecordedRequest {
            path: uri.path().to_owned(),
            headers: headers.clone(),
            body: parsed.clone(),
        });
        let scenario = from_header.unwrap_or_else(|| s.scenario.clone());
        (scenario, s.usage, s.pieces.clone(), s.canned.clone(), s.canned_stream.clone())
    });
    match &scenario {
        Scenario::ErrorBody { .. } => return scenario.error_body_response().unwrap_or_default(),
        Scenario::FailStatus { status, retry_after } => return error_response(*status, *retry_after),
        Scenario::Hang => {
            futures::future::pending::<()>().await;
        }
        Scenario::Html200 => {
            return (StatusCode::OK, [("content-type", "text/html")], "<html>Bad gateway</html>").into_response();
        }
        _ => {}
    }
    let model = parsed.get("model").and_then(Value::as_str).unwrap_or("claude-sonnet-4-5").to_owned();
    let (blocks, stop_reason) = plan_blocks(&parsed, &pieces);
    if parsed.get("stream").and_then(Value::as_bool) != Some(true) {
        if let Some(c) = canned {
            return axum::Json(c).into_response();
        }
        let mut msg = json!({"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
            "content": blocks.iter().map(Block::full).collect::<Vec<_>>(),
            "stop_reason": stop_reason, "stop_sequence": null});
        if scenario != Scenario::NoUsage {
            msg["usage"] = usage.to_json(usage.output_tokens);
        }
        return axum::Json(msg).into_response();
    }
    if let Some(events) = canned_stream {
        return sse(&scenario, events);
    }
    // message_start reports one output token so far; message_delta's count is cumulative.
    let mut events = vec![
        json!({"type": "message_start", "message": {"id": "msg_fake", "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": usage.to_json(1)}}),
        json!({"type": "ping"}),
    ];
    for (i, b) in blocks.iter().enumerate() {
        events.extend(b.events(i));
    }
    events.push(json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null},
        "usage": {"output_tokens": usage.output_tokens}}));
    events.push(json!({"type": "message_stop"}));
    sse(&scenario, events)
}

enum Frame {
    Data(Bytes),
    Abort,
    Stall,
}

fn frame(v: &Value) -> Frame {
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("message");
    Frame::Data(Bytes::from(format!("event: {kind}\ndata: {v}\n\n")))
}

/// Builds the SSE body; `error-after:N`, `close-after:N`, `stall-after:N` and
/// `invalid-json-after:N` count content *deltas* (the events before the first one always go out).
fn sse(scenario: &Scenario, events: Vec<Value>) -> Response {
    let limit = match scenario {
        Scenario::ErrorAfterChunks(n)
        | Scenario::CloseAfterChunks(n)
        | Scenario::StallAfterChunks(n)
        | Scenario::InvalidJsonAfterChunks(n)
        | Scenario::PingForeverAfterChunks(n) => Some(*n),
        _ => None,
    };
    let mut frames = Vec::new();
    let mut deltas = 0;
    let mut cut = false;
    for e in &events {
        let is_delta = e.get("type").and_then(Value::as_str) == Some("content_block_delta");
        if is_delta && limit.is_some_and(|n| deltas >= n) {
            cut = true;
            break;
        }
        deltas += usize::from(is_delta);
        if *scenario == Scenario::NoUsage && e.get("usage").is_some() {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.remove("usage");
            }
            frames.push(frame(&e));
            continue;
        }
        if *scenario == Scenario::NoUsage && e.pointer("/message/usage").is_some() {
            let mut e = e.clone();
            if let Some(m) = e.get_mut("message").and_then(Value::as_object_mut) {
                m.remove("usage");
            }
            frames.push(frame(&e));
            continue;
        }
        frames.push(frame(e));
    }
    if let (true, Scenario::PingForeverAfterChunks(_)) = (cut, scenario) {
        // Anthropic's own keep-alive, a `ping` event, every 50 ms and nothing else, forever.
        let head = futures::stream::iter(frames.into_iter().filter_map(|f| match f {
            Frame::Data(b) => Some(b),
            Frame::Abort | Frame::Stall => None,
        }));
        let pings = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Bytes::from_static(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"), ()))
        });
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(head.chain(pings).map(Ok::<Bytes, std::io::Error>)))
            .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    }
    if cut {
        frames.push(match scenario {
            Scenario::ErrorAfterChunks(_) => frame(&json!({"type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"}})),
            Scenario::CloseAfterChunks(_) => Frame::Abort,
            Scenario::StallAfterChunks(_) => Frame::Stall,
            _ => Frame::Data(Bytes::from("event: content_block_delta\ndata: {not json\n\n")),
        });
    }
    let delay = match scenario {
        Scenario::SlowChunks(d) => Some(*d),
        _ => None,
    };
    let stream = futures::stream::iter(frames).then(move |f| async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match f {
            Frame::Data(b) => Ok::<Bytes, std::io::Error>(b),
            Frame::Stall => {
                futures::future::pending::<()>().await;
                Ok(Bytes::new())
            }
            Frame::Abort => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("fake upstream aborts the connection"))
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
