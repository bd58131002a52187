//! A fake OpenAI upstream on loopback speaking the real wire format: chat completions (JSON and
//! SSE ending in `data: [DONE]`, with the `include_usage` chunk carrying `choices: []`),
//! completions, embeddings and models. Every request is recorded so tests can assert what a
//! gateway forwarded. Behaviour is chosen per request by the `x-fake-scenario` header, else by the
//! scenario set with [`FakeOpenAi::set_scenario`]. No gateway logic goes in here.
//!
//! Tool calls are opt-in ([`FakeOpenAi::set_tool_calls`]), since many callers send `tools` and
//! expect text: when on, a request with `tools` is answered with two `tool_calls` (parallel calls,
//! cycling through the tools given; one when `tool_choice` names a function or
//! `parallel_tool_calls` is false), their arguments streamed in pieces by `index`.

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

/// What the fake does with the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scenario {
    /// A normal answer with the configured usage.
    Normal,
    /// A normal answer without any usage object (and no usage chunk when streaming).
    NoUsage,
    /// Answer with this status before any body (`retry_after` sets `Retry-After` seconds).
    FailStatus {
        /// HTTP status, e.g. 500, 429, 401.
        status: u16,
        /// `Retry-After` header value in seconds.
        retry_after: Option<u32>,
    },
    /// Accept the request and never send a byte.
    Hang,
    /// Stream `n` content chunks, then an in-band `data: {"error":…}` event, then close.
    ErrorAfterChunks(usize),
    /// Stream `n` content chunks, then abort the connection (no terminating chunk, no `[DONE]`).
    CloseAfterChunks(usize),
    /// Stream `n` content chunks, then keep the connection open without sending anything.
    StallAfterChunks(usize),
    /// 200 with an HTML body (`content-type: text/html`).
    Html200,
    /// Normal answer, but each stream chunk is delayed by this much (a JSON answer is delayed by
    /// this much per content piece).
    SlowChunks(Duration),
    /// Stream with `: comment` lines and CRLF line endings.
    CommentsAndCrlf,
    /// Stream `n` good chunks, then a `data:` line that is not JSON.
    InvalidJsonAfterChunks(usize),
    /// DeepSeek's shapes: `reasoning_content` before the content, and usage with
    /// `prompt_cache_hit_tokens` / `prompt_cache_miss_tokens` instead of `prompt_tokens_details`.
    DeepSeek,
    /// Moonshot's shape: no usage chunk; the usage sits inside the last chunk's choice.
    MoonshotUsageInChoice,
    /// Moonshot with context caching: as [`Scenario::MoonshotUsageInChoice`], and the usage
    /// reports its cache hits as a top-level `cached_tokens` (no `prompt_tokens_details`), in the
    /// JSON answer too.
    MoonshotCachedTokens,
    /// OpenRouter: `: OPENROUTER PROCESSING` comment lines before the first event, then normal.
    OpenRouterProcessing,
    /// OpenRouter: comments, `n` chunks, then a chunk carrying an `error` object and
    /// `finish_reason: "error"` (HTTP status already 200), then `[DONE]`.
    OpenRouterErrorAfterChunks(usize),
    /// A non-stream 200 whose body is an error object (OpenRouter after its keep-alive padding).
    ErrorBody200,
    /// vLLM: `n` chunks, then `{"object":"error",…}`.
    VllmErrorAfterChunks(usize),
    /// Mistral and Zhipu: no usage chunk even when asked; the usage sits at the top level of the
    /// last chunk, beside its `finish_reason`.
    UsageOnLastChunk,
    /// Stream `n` content chunks, then only keep-alives forever: a `: ping` comment and an empty
    /// `{"choices":[]}` chunk, alternating every 50 ms. Never finishes.
    PingForeverAfterChunks(usize),
    /// Stream content chunks forever, one every this often. Never finishes.
    StreamForever(Duration),
    /// A non-stream answer whose JSON body arrives 16 bytes at a time, one piece every this often.
    DripBody(Duration),
    /// A non-stream 200 whose JSON body is cut off halfway (complete as HTTP, invalid as JSON).
    TruncatedJson200,
    /// Stream `n` good chunks, then a chunk whose content holds bytes that are not UTF-8 (`0xff
    /// 0xfe`); a JSON answer carries the same bytes in its content.
    InvalidUtf8AfterChunks(usize),
    /// Answer with this status and this JSON body, verbatim (a vendor's own error text). Every
    /// fake honours it; set it with `set_scenario` (it has no header form).
    ErrorBody {
        /// HTTP status.
        status: u16,
        /// The body, sent as `application/json`.
        body: String,
    },
}

impl Scenario {
    /// The response for [`Scenario::ErrorBody`]; `None` for any other scenario.
    pub fn error_body_response(&self) -> Option<Response> {
        let Scenario::ErrorBody { status, body } = self else { return None };
        let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        Some((code, [("content-type", "application/json")], body.clone()).into_response())
    }
}

impl Scenario {
    /// Parses the `x-fake-scenario` header: `normal`, `no-usage`, `fail-status:500`,
    /// `fail-status:429:7`, `hang`, `error-after:2`, `close-after:2`, `stall-after:2`, `html-200`, `slow:50`
    /// (milliseconds), `comments-crlf`, `invalid-json-after:1`, `deepseek`, `moonshot`,
    /// `openrouter`, `openrouter-error-after:2`, `error-body-200`, `vllm-error-after:2`,
    /// `usage-on-last-chunk`, `moonshot-cached`, `ping-forever:2`, `stream-forever:50`
    /// (milliseconds), `drip:50` (milliseconds),
    /// `truncated-json-200`, `invalid-utf8-after:1`.
    pub fn parse(s: &str) -> Option<Scenario> {
        let mut parts = s.split(':');
        let name = parts.next()?;
        let mut num = || parts.next().and_then(|p| p.parse::<u64>().ok());
        Some(match name {
            "normal" => Scenario::Normal,
            "no-usage" => Scenario::NoUsage,
            "fail-status" => {
                let status = u16::try_from(num()?).ok()?;
                Scenario::FailStatus { status, retry_after: num().and_then(|n| u32::try_from(n).ok()) }
            }
            "hang" => Scenario::Hang,
            "error-after" => Scenario::ErrorAfterChunks(usize::try_from(num()?).ok()?),
            "close-after" => Scenario::CloseAfterChunks(usize::try_from(num()?).ok()?),
            "stall-after" => Scenario::StallAfterChunks(usize::try_from(num()?).ok()?),
            "html-200" => Scenario::Html200,
            "slow" => Scenario::SlowChunks(Duration::from_millis(num()?)),
            "comments-crlf" => Scenario::CommentsAndCrlf,
            "invalid-json-after" => Scenario::InvalidJsonAfterChunks(usize::try_from(num()?).ok()?),
            "deepseek" => Scenario::DeepSeek,
            "moonshot" => Scenario::MoonshotUsageInChoice,
            "moonshot-cached" => Scenario::MoonshotCachedTokens,
            "openrouter" => Scenario::OpenRouterProcessing,
            "openrouter-error-after" => Scenario::OpenRouterErrorAfterChunks(usize::try_from(num()?).ok()?),
            "error-body-200" => Scenario::ErrorBody200,
            "vllm-error-after" => Scenario::VllmErrorAfterChunks(usize::try_from(num()?).ok()?),
            "usage-on-last-chunk" => Scenario::UsageOnLastChunk,
            "ping-forever" => Scenario::PingForeverAfterChunks(usize::try_from(num()?).ok()?),
            "stream-forever" => Scenario::StreamForever(Duration::from_millis(num()?)),
            "drip" => Scenario::DripBody(Duration::from_millis(num()?)),
            "truncated-json-200" => Scenario::TruncatedJson200,
            "invalid-utf8-after" => Scenario::InvalidUtf8AfterChunks(usize::try_from(num()?).ok()?),
            _ => return None,
        })
    }
}

/// The usage the fake reports (OpenAI semantics: `prompt_tokens` includes cached tokens,
/// `completion_tokens` includes reasoning tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FakeUsage {
    /// `prompt_tokens`.
    pub prompt_tokens: u64,
    /// `completion_tokens`.
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`.
    pub cached_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

impl Default for FakeUsage {
    fn default() -> Self {
        FakeUsage { prompt_tokens: 25, completion_tokens: 12, cached_tokens: 5, reasoning_tokens: 2 }
    }
}

impl FakeUsage {
    /// DeepSeek's usage object: the cache split at the top level, no `prompt_tokens_details`.
    fn to_deepseek_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_cache_hit_tokens": self.cached_tokens,
            "prompt_cache_miss_tokens": self.prompt_tokens - self.cached_tokens,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens}
        })
    }

    /// Moonshot's usage object: the cache hits as a top-level `cached_tokens`.
    fn to_moonshot_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cached_tokens": self.cached_tokens
        })
    }

    fn to_json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
        })
    }
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string, if any (Azure's `api-version=…`).
    pub query: Option<String>,
    /// All request headers.
    pub headers: HeaderMap,
    /// The body, parsed as JSON (`Value::Null` when it was not JSON).
    pub body: Value,
}

impl RecordedRequest {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Authorization` header value, if any.
    pub fn authorization(&self) -> Option<&str> {
        self.headers.get("authorization").and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    scenario: Scenario,
    /// Scenarios for requests authenticated with a given bearer key (before the default one).
    by_key: std::collections::HashMap<String, Scenario>,
    usage: FakeUsage,
    pieces: Vec<String>,
    requests: Vec<RecordedRequest>,
    recording: bool,
    tool_calls: bool,
    /// The `total_balance` DeepSeek's `GET /user/balance` answers (CNY); `None`: 404.
    balance: Option<String>,
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

/// A running fake upstream; stops when dropped.
pub struct FakeOpenAi {
    addr: SocketAddr,
    state: FakeState,
    task: JoinHandle<()>,
}

impl Drop for FakeOpenAi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeOpenAi {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<FakeOpenAi> {
        let state = FakeState(Arc::new(Mutex::new(Shared {
            scenario: Scenario::Normal,
            by_key: std::collections::HashMap::new(),
            usage: FakeUsage::default(),
            pieces: ["Hello", ",", " world", "!"].iter().map(|s| (*s).to_owned()).collect(),
            requests: Vec::new(),
            recording: true,
            tool_calls: false,
            balance: None,
        })));
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            // DeepSeek's balance, from the base URL's origin.
            .route("/user/balance", get(deepseek_balance))
            // Azure OpenAI: `/openai/deployments/{deployment}/…?api-version=…` with an `api-key` header.
            .route("/openai/deployments/{deployment}/chat/completions", post(azure_chat))
            .route("/openai/deployments/{deployment}/embeddings", post(azure_embeddings))
            // A real vendor takes large bodies (the gateway's own limit is what tests look at).
            .layer(axum::extract::DefaultBodyLimit::max(128 << 20))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeOpenAi { addr, state, task })
    }

    /// The base URL a channel should use: `http://127.0.0.1:<port>/v1`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The endpoint an Azure channel should use: `http://127.0.0.1:<port>` (no path).
    pub fn azure_endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets the behaviour for requests without an `x-fake-scenario` header.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.state.with(|s| s.scenario = scenario);
    }

    /// Sets the behaviour for requests whose bearer key is `key` (an upstream key that turns
    /// invalid, is rate-limited or fails while the channel's other keys work); `None` returns
    /// them to the default scenario. A `x-fake-scenario` header still wins.
    pub fn set_key_scenario(&self, key: &str, scenario: Option<Scenario>) {
        self.state.with(|s| match scenario {
            Some(sc) => s.by_key.insert(key.to_owned(), sc),
            None => s.by_key.remove(key),
        });
    }

    /// How many requests so far were authenticated with the bearer key `key`.
    pub fn requests_with_key(&self, key: &str) -> usize {
        let want = format!("Bearer {key}");
        self.state.with(|s| s.requests.iter().filter(|r| r.authorization() == Some(want.as_str())).count())
    }

    /// Sets the usage reported from now on.
    pub fn set_usage(&self, usage: FakeUsage) {
        self.state.with(|s| s.usage = usage);
    }

    /// Sets the content pieces generated (one stream chunk each; joined for non-stream answers).
    pub fn set_pieces(&self, pieces: &[&str]) {
        self.state.with(|s| s.pieces = pieces.iter().map(|p| (*p).to_owned()).collect());
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.with(|s| s.requests.clone())
    }

    /// Turns request recording on or off (off for benchmarks, so memory stays flat).
    pub fn set_recording(&self, on: bool) {
        self.state.with(|s| s.recording = on);
    }

    /// Answers requests that carry `tools` by calling them (off by default: callers that send
    /// tools and expect text keep getting text).
    pub fn set_tool_calls(&self, on: bool) {
        self.state.with(|s| s.tool_calls = on);
    }

    /// Sets the CNY balance `GET /user/balance` answers in DeepSeek's shape (`"110.00"`);
    /// `None` answers 404.
    pub fn set_balance(&self, total: Option<&str>) {
        self.state.with(|s| s.balance = total.map(str::to_owned));
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.with(|s| s.requests.clear());
    }
}

struct Plan {
    scenario: Scenario,
    usage: FakeUsage,
    pieces: Vec<String>,
    body: Value,
    tool_calls: bool,
}

fn record(state: &FakeState, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Plan {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let from_header = headers.get("x-fake-scenario").and_then(|v| v.to_str().ok()).and_then(Scenario::parse);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    state.with(|s| {
        let by_key = bearer.as_ref().and_then(|k| s.by_key.get(k)).cloned();
        s.requests.push(RecordedRequest {
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            headers: headers.clone(),
            body: parsed.clone(),
        });
        Plan {
            scenario: from_header.or(by_key).unwrap_or_else(|| s.scenario.clone()),
            usage: s.usage,
            pieces: s.pieces.clone(),
            body: parsed,
            tool_calls: s.tool_calls,
        }
    })
}

/// The failures every endpoint shares; `None` means answer normally.
async fn common_failure(plan: &Plan) -> Option<Response> {
    if let (Scenario::SlowChunks(d), false) = (&plan.scenario, wants_stream(plan)) {
        tokio::time::sleep(*d * u32::try_from(plan.pieces.len()).unwrap_or(1)).await;
    }
    match &plan.scenario {
        Scenario::ErrorBody { .. } => plan.scenario.error_body_response(),
        Scenario::FailStatus { status, retry_after } => {
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (kind, c) = match *status {
                401 => ("invalid_request_error", "invalid_api_key"),
                429 => ("rate_limit_error", "rate_limit_exceeded"),
                400..=499 => ("invalid_request_error", "bad_request"),
                _ => ("server_error", "server_error"),
            };
            let body = json!({"error": {"message": format!("fake upstream status {status}"), "type": kind,
                "param": null, "code": c}});
            let mut resp = (code, axum::Json(body)).into_response();
            if let Some(ra) = retry_after
                && let Ok(v) = ra.to_string().parse()
            {
                resp.headers_mut().insert("retry-after", v);
            }
            Some(resp)
        }
        Scenario::Hang => {
            futures::future::pending::<()>().await;
            None
        }
        Scenario::Html200 => Some(
            (StatusCode::OK, [("content-type", "text/html")], "<html><body>Bad gateway page</body></html>")
                .into_response(),
        ),
        _ => None,
    }
}

fn model_of(plan: &Plan) -> String {
    plan.body.get("model").and_then(Value::as_str).unwrap_or("gpt-4o-mini").to_owned()
}

fn wants_stream(plan: &Plan) -> bool {
    plan.body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn wants_usage_chunk(plan: &Plan) -> bool {
    plan.body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false)
}

/// Azure answers 401 without an `api-key` header and 404 without `api-version`, as Azure does.
fn azure_refusal(uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    if headers.get("api-key").is_none() {
        let body = json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key."}});
        return Some((StatusCode::UNAUTHORIZED, axum::Json(body)).into_response());
    }
    if !uri.query().unwrap_or_default().split('&').any(|p| p.starts_with("api-version=")) {
        let body = json!({"error": {"code": "404", "message": "Resource not found"}});
        return Some((StatusCode::NOT_FOUND, axum::Json(body)).into_response());
    }
    None
}

async fn azure_chat(state: State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match azure_refusal(&uri, &headers) {
        Some(r) => r,
        None => chat(state, uri, headers, body).await,
    }
}

async fn azure_embeddings(state: State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    match azure_refusal(&uri, &headers) {
        Some(r) => r,
        None => embeddings(state, uri, headers, body).await,
    }
}

/// The reasoning text the DeepSeek scenario streams before the content.
pub const FAKE_REASONING: &str = "Thinking it over.";

/// The tools to call, when tool calls are on and the request offers tools: `(id, name)` each.
fn planned_calls(plan: &Plan) -> Vec<(String, String)> {
    if !plan.tool_calls || plan.body.get("tool_choice").and_then(Value::as_str) == Some("none") {
        return Vec::new();
    }
    let tools: Vec<&str> = plan
        .body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer("/function/name").and_then(Value::as_str))
        .collect();
    if tools.is_empty() {
        return Vec::new();
    }
    let forced = plan.body.pointer("/tool_choice/function/name").and_then(Value::as_str);
    let single = forced.is_some() || plan.body.get("parallel_tool_calls").and_then(Value::as_bool) == Some(false);
    (0..if single { 1 } else { 2 })
        .map(|i| (format!("call_fake{i}"), forced.unwrap_or(tools[i % tools.len()]).to_owned()))
        .collect()
}

/// A call's arguments in the pieces they stream in; joined they are `{"location": "City i"}`.
fn argument_pieces(i: usize) -> [String; 2] {
    ["{\"location\": ".to_owned(), format!("\"City {i}\"}}")]
}

async fn chat(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let plan = record(&state, &uri, &headers, &body);
    if let Some(resp) = common_failure(&plan).await {
        return resp;
    }
    let model = model_of(&plan);
    let usage_json = match plan.scenario {
        Scenario::DeepSeek => plan.usage.to_deepseek_json(),
        Scenario::MoonshotCachedTokens => plan.usage.to_moonshot_json(),
        _ => plan.usage.to_json(),
    };
    let reasoning = plan.scenario == Scenario::DeepSeek;
    let calls = planned_calls(&plan);
    let finish_reason = if calls.is_empty() { "stop" } else { "tool_calls" };
    if wants_stream(&plan) {
        let mut last_choice = json!({"index": 0, "delta": {}, "finish_reason": finish_reason});
        if matches!(plan.scenario, Scenario::MoonshotUsageInChoice | Scenario::MoonshotCachedTokens) {
            last_choice["usage"] = usage_json.clone();
        }
        let thinking =
            reasoning.then(|| json!({"role": "assistant", "content": null, "reasoning_content": FAKE_REASONING}));
        let deltas: Vec<Value> = if calls.is_empty() {
            thinking
                .into_iter()
                .chain(plan.pieces.iter().enumerate().map(|(i, p)| {
                    if i == 0 && !reasoning {
                        json!({"role": "assistant", "content": p})
                    } else {
                        json!({"content": p})
                    }
                }))
                .collect()
        } else {
            // The first delta of each call names it; its arguments follow in pieces, by index.
            let mut out = vec![json!({"role": "assistant", "content": null})];
            for (i, (id, name)) in calls.iter().enumerate() {
                out.push(json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]}));
                for piece in argument_pieces(i) {
                    out.push(json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}));
                }
            }
            out
        };
        let mut last = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
            "created": 1_700_000_000, "model": model, "choices": [last_choice]});
        if plan.scenario == Scenario::UsageOnLastChunk {
            last["usage"] = usage_json.clone();
        }
        let chunks = deltas
            .into_iter()
            .map(|delta| {
                json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                    "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
            })
            .chain(std::iter::once(last))
            .collect();
        let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": model, "choices": [], "usage": usage_json});
        return sse(&plan, chunks, usage);
    }
    if plan.scenario == Scenario::ErrorBody200 {
        // OpenRouter pads a slow non-stream answer with whitespace, then may still fail in-band.
        let body = json!({"error": {"code": 502, "message": "Provider returned error"}});
        return (StatusCode::OK, [("content-type", "application/json")], format!("\n\n{body}")).into_response();
    }
    let mut message = json!({"role": "assistant", "content": plan.pieces.concat()});
    if reasoning {
        message["reasoning_content"] = json!(FAKE_REASONING);
    }
    if !calls.is_empty() {
        message["content"] = Value::Null;
        message["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, (id, name))| {
                json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": argument_pieces(i).concat()}})
            })
            .collect();
    }
    let mut resp = json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason}],
        "system_fingerprint": "fp_fake"
    });
    if plan.scenario != Scenario::NoUsage {
        resp["usage"] = usage_json;
    }
    if let Scenario::DripBody(every) = plan.scenario {
        return drip(resp.to_string().into_bytes(), every);
    }
    if let Scenario::InvalidUtf8AfterChunks(_) = plan.scenario {
        mark_content(&mut resp);
        let body = resp.to_string().replace(NOT_UTF8_MARK, "\u{1}").into_bytes();
        let body: Vec<u8> = body.into_iter().flat_map(|b| if b == 1 { vec![0xff, 0xfe] } else { vec![b] }).collect();
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    if plan.scenario == Scenario::TruncatedJson200 {
        let mut body = resp.to_string();
        body.truncate(body.len() / 2);
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    axum::Json(resp).into_response()
}

/// Stands for the bytes that are not UTF-8 until the body is serialised.
const NOT_UTF8_MARK: &str = "@@not-utf8@@";

/// Puts the mark into the answer's first message content.
fn mark_content(resp: &mut Value) {
    if let Some(m) = resp.pointer_mut("/choices/0/message") {
        m["content"] = json!(format!("Hello {NOT_UTF8_MARK} world"));
    }
}

/// `body` as JSON, 16 bytes at a time, one piece every `every`.
fn drip(body: Vec<u8>, every: Duration) -> Response {
    let pieces: Vec<Bytes> = body.chunks(16).map(Bytes::copy_from_slice).collect();
    let stream = futures::stream::iter(pieces).then(move |p| async move {
        tokio::time::sleep(every).await;
        Ok::<Bytes, std::io::Error>(p)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn completions(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let plan = record(&state, &uri, &headers, &body);
    if let Some(resp) = common_failure(&plan).await {
        return resp;
    }
    let model = model_of(&plan);
    if wants_stream(&plan) {
        let chunks = plan
            .pieces
            .iter()
            .map(|p| {
                json!({"id": "cmpl-fake", "object": "text_completion", "created": 1_700_000_000, "model": model,
                    "choices": [{"index": 0, "text": p, "logprobs": null, "finish_reason": null}]})
            })
            .collect();
        let usage = json!({"id": "cmpl-fake", "object": "text_completion", "created": 1_700_000_000,
            "model": model, "choices": [], "usage": plan.usage.to_json()});
        return sse(&plan, chunks, usage);
    }
    let mut resp = json!({
        "id": "cmpl-fake", "object": "text_completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "text": plan.pieces.concat(), "logprobs": null, "finish_reason": "stop"}]
    });
    if plan.scenario != Scenario::NoUsage {
        resp["usage"] = plan.usage.to_json();
    }
    axum::Json(resp).into_response()
}

async fn embeddings(State(state): State<FakeState>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let plan = record(&state, &uri, &headers, &body);
    if let Some(resp) = common_failure(&plan).await {
        return resp;
    }
    let inputs = match plan.body.get("input") {
        Some(Value::Array(a)) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0023, -0.0093, 0.0158]}))
        .collect();
    let mut resp = json!({"object": "list", "data": data, "model": model_of(&plan)});
    if plan.scenario != Scenario::NoUsage {
        resp["usage"] = json!({"prompt_tokens": plan.usage.prompt_tokens, "total_tokens": plan.usage.prompt_tokens});
    }
    axum::Json(resp).into_response()
}

async fn models(State(state): State<FakeState>, uri: Uri, headers: HeaderMap) -> Response {
    let plan = record(&state, &uri, &headers, &Bytes::new());
    if matches!(plan.scenario, Scenario::ErrorBody { .. } | Scenario::FailStatus { .. } | Scenario::Hang)
        && let Some(resp) = common_failure(&plan).await
    {
        return resp;
    }
    axum::Json(json!({"object": "list", "data": [
        {"id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": "openai"},
        {"id": "text-embedding-3-small", "object": "model", "created": 1_700_000_000, "owned_by": "openai"}
    ]}))
    .into_response()
}

async fn deepseek_balance(State(state): State<FakeState>, uri: Uri, headers: HeaderMap) -> Response {
    let plan = record(&state, &uri, &headers, &Bytes::new());
    if matches!(plan.scenario, Scenario::ErrorBody { .. } | Scenario::FailStatus { .. })
        && let Some(resp) = common_failure(&plan).await
    {
        return resp;
    }
    match state.with(|s| s.balance.clone()) {
        Some(total) => axum::Json(json!({"is_available": true, "balance_infos": [
            {"currency": "CNY", "total_balance": total, "granted_balance": "0.00", "topped_up_balance": total}
        ]}))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

enum Frame {
    Data(Bytes),
    Abort,
    Stall,
}

/// Builds the SSE body for `chunks` (+ the usage chunk when asked for) per the plan's scenario.
fn sse(plan: &Plan, chunks: Vec<Value>, usage_chunk: Value) -> Response {
    match plan.scenario {
        Scenario::PingForeverAfterChunks(n) => return endless(chunks.into_iter().take(n).collect(), ping_frames()),
        Scenario::StreamForever(every) => {
            let Some(first) = chunks.first().cloned() else { return StatusCode::INTERNAL_SERVER_ERROR.into_response() };
            return endless(Vec::new(), content_frames(first, every));
        }
        _ => {}
    }
    let crlf = plan.scenario == Scenario::CommentsAndCrlf;
    let eol = if crlf { "\r\n" } else { "\n" };
    let data = |v: &Value| Frame::Data(Bytes::from(format!("data: {v}{eol}{eol}")));
    let mut frames: Vec<Frame> = Vec::new();
    if crlf {
        frames.push(Frame::Data(Bytes::from(format!(": ping{eol}{eol}"))));
    }
    if matches!(plan.scenario, Scenario::OpenRouterProcessing | Scenario::OpenRouterErrorAfterChunks(_)) {
        for _ in 0..3 {
            frames.push(Frame::Data(Bytes::from(": OPENROUTER PROCESSING\n\n")));
        }
    }
    let limit = match plan.scenario {
        Scenario::ErrorAfterChunks(n)
        | Scenario::CloseAfterChunks(n)
        | Scenario::StallAfterChunks(n)
        | Scenario::InvalidJsonAfterChunks(n)
        | Scenario::OpenRouterErrorAfterChunks(n)
        | Scenario::VllmErrorAfterChunks(n)
        | Scenario::InvalidUtf8AfterChunks(n) => n,
        _ => usize::MAX,
    };
    for c in chunks.iter().take(limit) {
        frames.push(data(c));
        if crlf {
            frames.push(Frame::Data(Bytes::from(format!(": keep-alive{eol}"))));
        }
    }
    match plan.scenario {
        Scenario::ErrorAfterChunks(_) => frames.push(data(&json!({"error": {"message": "The server had an error \
             while processing your request.", "type": "server_error", "param": null, "code": null}}))),
        Scenario::CloseAfterChunks(_) => frames.push(Frame::Abort),
        Scenario::StallAfterChunks(_) => frames.push(Frame::Stall),
        Scenario::InvalidJsonAfterChunks(_) => frames.push(Frame::Data(Bytes::from("data: {not json\n\n"))),
        Scenario::InvalidUtf8AfterChunks(_) => frames.push(Frame::Data(Bytes::from_static(
            b"data: {\"id\":\"chatcmpl-fake\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
              \"model\":\"fake\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\xff\xfe\"},\
              \"finish_reason\":null}]}\n\n",
        ))),
        Scenario::OpenRouterErrorAfterChunks(_) => {
            frames.push(data(&json!({"id": "gen-fake", "object": "chat.completion.chunk", "created": 1_700_000_000,
                "model": "fake", "provider": "Fake", "error": {"code": "server_error",
                "message": "Provider disconnected unexpectedly"},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}]})));
            frames.push(Frame::Data(Bytes::from("data: [DONE]\n\n")));
        }
        Scenario::VllmErrorAfterChunks(_) => frames.push(data(&json!({"object": "error",
            "message": "The engine died.", "type": "InternalServerError", "param": null, "code": 500}))),
        _ => {
            let unasked = matches!(
                plan.scenario,
                Scenario::MoonshotUsageInChoice | Scenario::MoonshotCachedTokens | Scenario::UsageOnLastChunk
            );
            if plan.scenario != Scenario::NoUsage && !unasked && wants_usage_chunk(plan) {
                frames.push(data(&usage_chunk));
            }
            frames.push(Frame::Data(Bytes::from(format!("data: [DONE]{eol}{eol}"))));
        }
    }
    let delay = match plan.scenario {
        Scenario::SlowChunks(d) => Some(d),
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
                // Let the chunks before it reach the socket first.
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

/// Keep-alives forever, every 50 ms: a comment, then an empty chunk.
fn ping_frames() -> impl futures::Stream<Item = Bytes> + Send {
    futures::stream::unfold(0u64, |i| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frame = if i % 2 == 0 {
            Bytes::from_static(b": ping\n\n")
        } else {
            Bytes::from(format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": 1_700_000_000, "model": "fake", "choices": []})
            ))
        };
        Some((frame, i + 1))
    })
}

/// `chunk` with its content replaced by `tick N `, forever, one every `every`.
fn content_frames(chunk: Value, every: Duration) -> impl futures::Stream<Item = Bytes> + Send {
    futures::stream::unfold(0u64, move |i| {
        let mut c = chunk.clone();
        async move {
            tokio::time::sleep(every).await;
            if let Some(choice) = c.pointer_mut("/choices/0") {
                let field = if choice.get("text").is_some() { "text" } else { "delta" };
                choice[field] = if field == "text" {
                    json!(format!("tick {i} "))
                } else {
                    json!({"content": format!("tick {i} ")})
                };
            }
            Some((Bytes::from(format!("data: {c}\n\n")), i + 1))
        }
    })
}

/// An SSE answer: `chunks`, then `rest` (never ending).
fn endless(chunks: Vec<Value>, rest: impl futures::Stream<Item = Bytes> + Send + 'static) -> Response {
    let head = futures::stream::iter(chunks.into_iter().map(|c| Bytes::from(format!("data: {c}\n\n"))));
    let stream = head.chain(rest).map(Ok::<Bytes, std::io::Error>);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
