//! A fake Google Gemini upstream on loopback speaking the real Gemini API wire protocol
//! (`v1beta`, as served by `generativelanguage.googleapis.com`), camelCase JSON as the REST API
//! returns it:
//!
//! - `POST /v1beta/models/{model}:generateContent`: one `GenerateContentResponse`.
//! - `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`: `text/event-stream`, one
//!   `data: {GenerateContentResponse}` event per chunk, CRLF separators, no `[DONE]`: the stream
//!   ends when the connection closes. Every chunk carries `usageMetadata` (cumulative: the last
//!   one holds the final counts) and the last content chunk carries `finishReason`. Without
//!   `alt=sse` the same chunks come as one JSON array, written element by element.
//! - `POST /v1beta/models/{model}:countTokens`: `{"totalTokens": N}`, N the word count of every
//!   text in the body.
//! - `POST /v1beta/models/{model}:batchEmbedContents`: one embedding per request (no usage, as
//!   Gemini reports none for embeddings).
//! - `GET /v1beta/models` and `GET /v1beta/models/{model}`: model metadata.
//!
//! What it answers follows the request body: with `tools[].functionDeclarations` (and
//! `toolConfig.functionCallingConfig.mode` not `NONE`), two `functionCall` parts (parallel calls,
//! cycling through the declared functions; one when `allowedFunctionNames` names exactly one),
//! each whole in one chunk, as Gemini never streams arguments; with
//! `generationConfig.thinkingConfig.includeThoughts`, a `thought` part first (with a
//! `thoughtSignature`); with `generationConfig.responseMimeType: "application/json"`, a text part
//! holding a JSON object; else text from the configured pieces, one chunk each. Fields are also
//! accepted in snake_case, as the real API accepts both.
//!
//! Usage follows Gemini's semantics (see [`GeminiUsage`]). Failures are chosen per request by the
//! `x-fake-scenario` header (same syntax as the OpenAI fake), else by [`FakeGemini::set_scenario`];
//! errors have Gemini's shape `{"error":{"code","message","status"}}`. Safety blocks are
//! simulated with canned answers: see [`FakeGemini::blocked_prompt_response`] and
//! [`FakeGemini::safety_stop_response`]. Every request is recorded, query string included.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

pub use crate::fake_openai::Scenario;

/// The thought summary text sent when thoughts are asked for.
pub const FAKE_THOUGHT: &str = "Let me think about it.";

/// The `thoughtSignature` carried by the thought part.
pub const FAKE_THOUGHT_SIGNATURE: &str = "c2lnLWZha2UtZ2VtaW5p";

/// `thoughtsTokenCount` reported when thoughts are asked for and [`GeminiUsage`] has none set.
pub const DEFAULT_THOUGHTS_TOKENS: u64 = 7;

/// The model assumed when the path names none.
const DEFAULT_MODEL: &str = "gemini-2.5-flash";

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Path and query, e.g. `/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse`.
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

    /// A query parameter's raw (not percent-decoded) value, if any.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        let (_, query) = self.path.split_once('?')?;
        query.split('&').find_map(|kv| match kv.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if kv == name => Some(""),
            _ => None,
        })
    }

    /// The API key the request carried: the `x-goog-api-key` header, else the `key` query
    /// parameter.
    pub fn api_key(&self) -> Option<&str> {
        self.header("x-goog-api-key").or_else(|| self.query_param("key"))
    }
}

/// The usage the fake reports, in Gemini's semantics: `promptTokenCount` *includes*
/// `cachedContentTokenCount`; billable output is `candidatesTokenCount + thoughtsTokenCount`;
/// `totalTokenCount` is prompt + candidates + thoughts. Zero cached and thoughts counts are
/// omitted from the JSON, as the real API omits them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeminiUsage {
    /// `promptTokenCount` (cached tokens included).
    pub prompt_token_count: u64,
    /// `candidatesTokenCount` (the answer, thoughts excluded).
    pub candidates_token_count: u64,
    /// `cachedContentTokenCount` (part of the prompt).
    pub cached_content_token_count: u64,
    /// `thoughtsTokenCount`; when it is zero and thoughts are asked for,
    /// [`DEFAULT_THOUGHTS_TOKENS`] is reported instead.
    pub thoughts_token_count: u64,
}

impl Default for GeminiUsage {
    fn default() -> Self {
        GeminiUsage {
            prompt_token_count: 20,
            candidates_token_count: 12,
            cached_content_token_count: 5,
            thoughts_token_count: 0,
        }
    }
}

impl GeminiUsage {
    /// The `usageMetadata` object with `candidates` answer tokens so far (omitted when zero, as
    /// in the first chunks of a real stream).
    fn to_json(self, candidates: u64, thoughts: u64) -> Value {
        let mut u = json!({
            "promptTokenCount": self.prompt_token_count,
            "totalTokenCount": self.prompt_token_count + candidates + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": self.prompt_token_count}],
        });
        if candidates > 0 {
            u["candidatesTokenCount"] = json!(candidates);
        }
        if self.cached_content_token_count > 0 {
            u["cachedContentTokenCount"] = json!(self.cached_content_token_count);
            u["cacheTokensDetails"] = json!([{"modality": "TEXT", "tokenCount": self.cached_content_token_count}]);
        }
        if thoughts > 0 {
            u["thoughtsTokenCount"] = json!(thoughts);
        }
        u
    }
}

struct Shared {
    scenario: Scenario,
    usage: GeminiUsage,
    pieces: Vec<String>,
    requests: Vec<RecordedRequest>,
    canned: Option<Value>,
    canned_stream: Option<Vec<Value>>,
    next_id: u64,
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

/// A running fake Gemini upstream; stops when dropped.
pub struct FakeGemini {
    addr: SocketAddr,
    state: FakeState,
    task: JoinHandle<()>,
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGemini {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<FakeGemini> {
        let state = FakeState(Arc::new(Mutex::new(Shared {
            scenario: Scenario::Normal,
            usage: GeminiUsage::default(),
            pieces: ["Hello", " from", " Gemini."].iter().map(|s| (*s).to_owned()).collect(),
            requests: Vec::new(),
            canned: None,
            canned_stream: None,
            next_id: 0,
        })));
        let app = Router::new()
            .route("/v1beta/models", get(list_models))
            .route("/v1beta/models/{*rest}", get(get_model).post(model_action))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeGemini { addr, state, task })
    }

    /// The base URL a channel should use: `http://127.0.0.1:<port>/v1beta`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1beta", self.addr)
    }

    /// Sets the behaviour for requests without an `x-fake-scenario` header.
    pub fn set_scenario(&self, scenario: Scenario) {
        self.state.with(|s| s.scenario = scenario);
    }

    /// Sets the usage reported from now on.
    pub fn set_usage(&self, usage: GeminiUsage) {
        self.state.with(|s| s.usage = usage);
    }

    /// Sets the text pieces generated (one stream chunk each; joined into one part for
    /// `generateContent`).
    pub fn set_pieces(&self, pieces: &[&str]) {
        self.state.with(|s| s.pieces = pieces.iter().map(|p| (*p).to_owned()).collect());
    }

    /// Answers every `generateContent` request with this response, verbatim (a recorded fixture).
    pub fn set_canned_response(&self, response: Value) {
        self.state.with(|s| s.canned = Some(response));
    }

    /// Answers every `streamGenerateContent` request with these chunks, verbatim and in order (a
    /// recorded fixture): one `data:` event each, or the elements of the array without `alt=sse`.
    /// Stream scenarios (`error-after:N`, …) still apply.
    pub fn set_canned_stream(&self, chunks: Vec<Value>) {
        self.state.with(|s| s.canned_stream = Some(chunks));
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.with(|s| s.requests.clone())
    }

    /// A response whose prompt was blocked: no candidates, `promptFeedback.blockReason: "SAFETY"`
    /// (what Gemini answers, with HTTP 200, to a prompt its filters refuse). Use it with
    /// [`FakeGemini::set_canned_response`], or as the single chunk of
    /// [`FakeGemini::set_canned_stream`].
    pub fn blocked_prompt_response() -> Value {
        json!({
            "promptFeedback": {
                "blockReason": "SAFETY",
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}
                ]
            },
            "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
            "modelVersion": DEFAULT_MODEL,
            "responseId": "fake-blocked"
        })
    }

    /// A response whose answer was stopped by the safety filters: one candidate with
    /// `finishReason: "SAFETY"`, no content, and the offending rating marked `blocked`. Use it
    /// with [`FakeGemini::set_canned_response`] or as the last chunk of
    /// [`FakeGemini::set_canned_stream`].
    pub fn safety_stop_response() -> Value {
        json!({
            "candidates": [{
                "finishReason": "SAFETY",
                "index": 0,
                "safetyRatings": [
                    {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
                    {"category": "HARM_CATEGORY_HARASSMENT", "probability": "MEDIUM", "blocked": true},
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}
                ]
            }],
            "usageMetadata": {"promptTokenCount": 8, "candidatesTokenCount": 0, "totalTokenCount": 8,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 8}]},
            "modelVersion": DEFAULT_MODEL,
            "responseId": "fake-safety-stop"
        })
    }
}

/// A field by its camelCase name, or by its snake_case spelling (the API accepts both).
fn field<'a>(v: &'a Value, camel: &str) -> Option<&'a Value> {
    if let Some(found) = v.get(camel) {
        return Some(found);
    }
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    v.get(snake)
}

/// A nested field, each step by camelCase or snake_case name.
fn field_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, name| field(v, name))
}

/// The parts of the answer, each sent in its own stream chunk.
enum Piece {
    Thought,
    Text(String),
    Calls(Vec<Value>),
}

impl Piece {
    fn parts(&self) -> Vec<Value> {
        match self {
            Piece::Thought => {
                vec![json!({"text": FAKE_THOUGHT, "thought": true, "thoughtSignature": FAKE_THOUGHT_SIGNATURE})]
            }
            Piece::Text(t) => vec![json!({"text": t})],
            Piece::Calls(calls) => calls.iter().map(|c| json!({"functionCall": c})).collect(),
        }
    }
}

/// What to answer to this request body: the pieces in order, and whether thoughts were asked for.
fn plan(body: &Value, pieces: &[String]) -> (Vec<Piece>, bool) {
    let mut out = Vec::new();
    let thinking = field_at(body, &["generationConfig", "thinkingConfig", "includeThoughts"]).and_then(Value::as_bool)
        == Some(true);
    if thinking {
        out.push(Piece::Thought);
    }
    let declared: Vec<&str> = field(body, "tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| field(t, "functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|d| d.get("name").and_then(Value::as_str))
        .collect();
    let calling = field_at(body, &["toolConfig", "functionCallingConfig"]);
    let forbidden = calling.and_then(|c| c.get("mode")).and_then(Value::as_str) == Some("NONE");
    let allowed: Vec<&str> = calling
        .and_then(|c| field(c, "allowedFunctionNames"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let names = if allowed.is_empty() { declared } else { allowed };
    if !names.is_empty() && !forbidden {
        let count =
            if names.len() == 1 && calling.is_some_and(|c| field(c, "allowedFunctionNames").is_some()) { 1 } else { 2 };
        let calls = (0..count)
            .map(|i| json!({"name": names[i % names.len()], "args": {"location": format!("City {i}")}}))
            .collect();
        out.push(Piece::Calls(calls));
        return (out, thinking);
    }
    if field_at(body, &["generationConfig", "responseMimeType"]).and_then(Value::as_str) == Some("application/json") {
        let text = json!({"answer": pieces.concat()}).to_string();
        // Streamed in two pieces, split inside the object as the real API does.
        let cut = text.find(':').map_or(text.len(), |i| i + 1);
        out.push(Piece::Text(text[..cut].to_owned()));
        if cut < text.len() {
            out.push(Piece::Text(text[cut..].to_owned()));
        }
        return (out, thinking);
    }
    out.extend(pieces.iter().map(|p| Piece::Text(p.clone())));
    (out, thinking)
}

fn safety_ratings() -> Value {
    json!([
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"}
    ])
}

/// A Gemini error response: `{"error":{"code","message","status"}}`, with `Retry-After` and a
/// `RetryInfo` detail when `retry_after` is set.
fn error_response(status: u16, retry_after: Option<u32>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (kind, message) = match status {
        400 => ("INVALID_ARGUMENT", "Request contains an invalid argument."),
        401 => ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
        403 => ("PERMISSION_DENIED", "The caller does not have permission"),
        404 => ("NOT_FOUND", "Requested entity was not found."),
        409 => ("ABORTED", "The operation was aborted."),
        429 => ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
        499 => ("CANCELLED", "The operation was cancelled."),
        500 => ("INTERNAL", "An internal error has occurred."),
        503 => ("UNAVAILABLE", "The model is overloaded. Please try again later."),
        504 => ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
        s if (400..500).contains(&s) => ("FAILED_PRECONDITION", "Precondition check failed."),
        _ => ("UNKNOWN", "An unknown error has occurred."),
    };
    let mut error = json!({"code": status, "message": message, "status": kind});
    if let Some(ra) = retry_after {
        error["details"] =
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{ra}s")}]);
    }
    let mut resp = (code, axum::Json(json!({"error": error}))).into_response();
    if let Some(ra) = retry_after
        && let Ok(v) = ra.to_string().parse()
    {
        resp.headers_mut().insert("retry-after", v);
    }
    resp
}

fn not_found(message: String) -> Response {
    let body = json!({"error": {"code": 404, "message": message, "status": "NOT_FOUND"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

/// The in-band error a failing stream ends with.
fn stream_error() -> Value {
    json!({"error": {"code": 500, "message": "An internal error has occurred.", "status": "INTERNAL"}})
}

struct Request {
    scenario: Scenario,
    usage: GeminiUsage,
    pieces: Vec<String>,
    canned: Option<Value>,
    canned_stream: Option<Vec<Value>>,
    response_id: String,
    body: Value,
}

fn record(state: &FakeState, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Request {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let from_header = headers.get("x-fake-scenario").and_then(|v| v.to_str().ok()).and_then(Scenario::parse);
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
    state.with(|s| {
        s.requests.push(RecordedRequest { path, headers: headers.clone(), body: parsed.clone() });
        s.next_id += 1;
        Request {
            scenario: from_header.unwrap_or_else(|| s.scenario.clone()),
            usage: s.usage,
            pieces: s.pieces.clone(),
            canned: s.canned.clone(),
            canned_stream: s.canned_stream.clone(),
            response_id: format!("fake-gemini-{}", s.next_id),
            body: parsed,
        }
    })
}

/// The failures every POST action shares; `None` means answer normally.
async fn common_failure(req: &Request) -> Option<Response> {
    match &req.scenario {
        Scenario::ErrorBody { .. } => req.scenario.error_body_response(),
        Scenario::FailStatus { status, retry_after } => Some(error_response(*status, *retry_after)),
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

async fn model_action(
    State(state): State<FakeState>,
    Path(rest): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = record(&state, &uri, &headers, &body);
    let Some((model, action)) = rest.rsplit_once(':') else {
        return not_found(format!("Method not found: models/{rest}"));
    };
    if !matches!(action, "generateContent" | "streamGenerateContent" | "countTokens" | "batchEmbedContents") {
        return not_found(format!("Method not found: models/{model}:{action}"));
    }
    if let Some(resp) = common_failure(&req).await {
        return resp;
    }
    let model = if model.is_empty() { DEFAULT_MODEL } else { model };
    match action {
        "generateContent" => generate(&req, model).await,
        "streamGenerateContent" => {
            let sse = uri.query().unwrap_or_default().split('&').any(|p| p == "alt=sse");
            stream_generate(&req, model, if sse { Format::Sse } else { Format::Array })
        }
        "batchEmbedContents" => batch_embed(&req),
        _ => count_tokens(&req),
    }
}

/// `batchEmbedContents`: one embedding per request, `outputDimensionality` values long (8 by
/// default), derived from the text so equal texts embed equally. Gemini reports no usage here.
fn batch_embed(req: &Request) -> Response {
    let requests = req.body.get("requests").and_then(Value::as_array).cloned().unwrap_or_default();
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| {
            let text: String = r
                .pointer("/content/parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect();
            let dims = r.get("outputDimensionality").and_then(Value::as_u64).unwrap_or(8);
            let seed = text.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
            let values: Vec<f64> = (0..dims).map(|i| f64::from(((seed >> (i % 32)) & 0xff) as u32) / 256.0).collect();
            json!({"values": values})
        })
        .collect();
    axum::Json(json!({"embeddings": embeddings})).into_response()
}

async fn generate(req: &Request, model: &str) -> Response {
    if let Scenario::SlowChunks(d) = &req.scenario {
        tokio::time::sleep(*d * u32::try_from(req.pieces.len()).unwrap_or(1)).await;
    }
    if req.scenario == Scenario::ErrorBody200 {
        return axum::Json(stream_error()).into_response();
    }
    if let Some(c) = &req.canned {
        return axum::Json(c.clone()).into_response();
    }
    let (pieces, thinking) = plan(&req.body, &req.pieces);
    let mut parts = Vec::new();
    let mut text = String::new();
    for p in &pieces {
        match p {
            Piece::Text(t) => text.push_str(t),
            other => parts.extend(other.parts()),
        }
    }
    if !text.is_empty() {
        parts.push(json!({"text": text}));
    }
    let mut resp = json!({
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0,
            "safetyRatings": safety_ratings()}],
        "modelVersion": model,
        "responseId": req.response_id,
    });
    if req.scenario != Scenario::NoUsage {
        resp["usageMetadata"] = req.usage.to_json(req.usage.candidates_token_count, thoughts(req.usage, thinking));
    }
    axum::Json(resp).into_response()
}

fn thoughts(usage: GeminiUsage, thinking: bool) -> u64 {
    if thinking && usage.thoughts_token_count == 0 { DEFAULT_THOUGHTS_TOKENS } else { usage.thoughts_token_count }
}

fn stream_generate(req: &Request, model: &str, format: Format) -> Response {
    if let Some(chunks) = &req.canned_stream {
        return stream_body(&req.scenario, chunks.clone(), format);
    }
    if req.scenario == Scenario::ErrorBody200 {
        return stream_body(&Scenario::ErrorAfterChunks(0), Vec::new(), format);
    }
    let (pieces, thinking) = plan(&req.body, &req.pieces);
    let thoughts = thoughts(req.usage, thinking);
    let total = req.usage.candidates_token_count;
    let n = pieces.len();
    let chunks = pieces
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let last = i + 1 == n;
            let mut candidate = json!({"content": {"role": "model", "parts": p.parts()}, "index": 0});
            if last {
                candidate["finishReason"] = json!("STOP");
                candidate["safetyRatings"] = safety_ratings();
            }
            let mut chunk = json!({"candidates": [candidate], "modelVersion": model, "responseId": req.response_id});
            if req.scenario != Scenario::NoUsage {
                // Cumulative: nothing yet in the first chunk, a share in the middle, all at the end.
                let so_far = if last { total } else { total * i as u64 / n as u64 };
                chunk["usageMetadata"] = req.usage.to_json(so_far, thoughts);
            }
            chunk
        })
        .collect();
    stream_body(&req.scenario, chunks, format)
}

fn count_tokens(req: &Request) -> Response {
    fn words(v: &Value, n: &mut u64) {
        match v {
            Value::Object(o) => {
                for (k, v) in o {
                    match (k.as_str(), v) {
                        ("text", Value::String(s)) => *n += s.split_whitespace().count() as u64,
                        _ => words(v, n),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| words(v, n)),
            _ => {}
        }
    }
    let mut n = 0;
    words(&req.body, &mut n);
    axum::Json(json!({"totalTokens": n, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": n}]}))
        .into_response()
}

fn model_json(name: &str) -> Value {
    let display = match name {
        "gemini-2.5-pro" => "Gemini 2.5 Pro",
        "gemini-2.5-flash-lite" => "Gemini 2.5 Flash-Lite",
        "gemini-2.5-flash" => "Gemini 2.5 Flash",
        other => other,
    };
    json!({
        "name": format!("models/{name}"),
        "version": "001",
        "displayName": display,
        "description": format!("Fake {display}"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent", "batchGenerateContent"],
        "temperature": 1,
        "topP": 0.95,
        "topK": 64,
        "maxTemperature": 2,
        "thinking": true
    })
}

async fn list_models(State(state): State<FakeState>, uri: Uri, headers: HeaderMap) -> Response {
    let req = record(&state, &uri, &headers, &Bytes::new());
    if matches!(req.scenario, Scenario::ErrorBody { .. } | Scenario::FailStatus { .. })
        && let Some(resp) = common_failure(&req).await
    {
        return resp;
    }
    let models: Vec<Value> =
        ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite"].iter().map(|m| model_json(m)).collect();
    axum::Json(json!({"models": models})).into_response()
}

async fn get_model(State(state): State<FakeState>, Path(rest): Path<String>, uri: Uri, headers: HeaderMap) -> Response {
    let _ = record(&state, &uri, &headers, &Bytes::new());
    if rest.contains(':') {
        return not_found(format!("Method not found: GET models/{rest}"));
    }
    axum::Json(model_json(&rest)).into_response()
}

/// How stream chunks are written.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    /// `alt=sse`: `data: {chunk}\r\n\r\n` per chunk.
    Sse,
    /// No `alt`: one JSON array, `[` … `,\r\n` … `]`.
    Array,
}

enum Frame {
    Data(Bytes),
    Abort,
    Stall,
}

/// Builds the stream body. `error-after:N`, `close-after:N`, `stall-after:N` and
/// `invalid-json-after:N` send the first N chunks (all, when there are fewer), then the failure:
/// an in-band `{"error":…}`, an aborted connection, silence, or text that is not JSON. The
/// OpenRouter and vLLM mid-stream error scenarios behave as `error-after:N`; `comments-crlf`
/// adds an SSE comment line first; the other OpenAI vendor scenarios behave as `normal`.
fn stream_body(scenario: &Scenario, chunks: Vec<Value>, format: Format) -> Response {
    let limit = match scenario {
        Scenario::ErrorAfterChunks(n)
        | Scenario::CloseAfterChunks(n)
        | Scenario::StallAfterChunks(n)
        | Scenario::InvalidJsonAfterChunks(n)
        | Scenario::OpenRouterErrorAfterChunks(n)
        | Scenario::VllmErrorAfterChunks(n) => *n,
        _ => usize::MAX,
    };
    // One element: an SSE event, or an array element with its opening bracket or separator.
    let element = |text: &str, sent: &mut usize| {
        let b = match format {
            Format::Sse => format!("data: {text}\r\n\r\n"),
            Format::Array if *sent == 0 => format!("[{text}"),
            Format::Array => format!(",\r\n{text}"),
        };
        *sent += 1;
        Frame::Data(Bytes::from(b))
    };
    let mut frames = Vec::new();
    let mut sent = 0usize;
    if *scenario == Scenario::CommentsAndCrlf && format == Format::Sse {
        frames.push(Frame::Data(Bytes::from(": keep-alive\r\n\r\n")));
    }
    for c in chunks.iter().take(limit) {
        frames.push(element(&c.to_string(), &mut sent));
    }
    match scenario {
        Scenario::ErrorAfterChunks(_) | Scenario::OpenRouterErrorAfterChunks(_) | Scenario::VllmErrorAfterChunks(_) => {
            frames.push(element(&stream_error().to_string(), &mut sent));
            if format == Format::Array {
                frames.push(Frame::Data(Bytes::from("]")));
            }
        }
        Scenario::CloseAfterChunks(_) => frames.push(Frame::Abort),
        Scenario::StallAfterChunks(_) => frames.push(Frame::Stall),
        Scenario::InvalidJsonAfterChunks(_) => frames.push(element("{not json", &mut sent)),
        _ if format == Format::Array => {
            frames.push(Frame::Data(Bytes::from(if sent == 0 { "[]" } else { "]" })));
        }
        _ => {}
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
                // Let the chunks before it reach the socket first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::other("fake upstream aborts the connection"))
            }
        }
    });
    let content_type = match format {
        Format::Sse => "text/event-stream",
        Format::Array => "application/json; charset=UTF-8",
    };
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
