//! One conformance suite for every provider kind: each case below runs against every provider's
//! fake upstream on loopback, through the OpenAI client surface (plus Anthropic and Gemini client
//! variants). A provider declares the features it lacks; for those the case asserts the clear
//! answer instead (an `unsupported_parameter` refusal, or the vendor's documented limit), so
//! nothing is skipped silently. The README's "Providers and features" table is rendered from the
//! results, and the test fails when the README differs (`LLMR_UPDATE_README=1` rewrites it).
//! Vendor-specific behaviour beyond the shared cases belongs in the vendor's own test file.

use std::fmt::Write as _;
use std::time::Duration;

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, StreamOutcome, UsageRecorded, UsageSource};
use serde_json::{Value, json};
use testkit::fake_anthropic::FakeAnthropic;
use testkit::fake_gemini::{DEFAULT_THOUGHTS_TOKENS, FAKE_THOUGHT, FakeGemini};
use testkit::fake_openai::{FAKE_REASONING, FakeOpenAi, Scenario};

use crate::helpers::{TestApp, control, error_of, spawn_with, sse_payloads};

/// Every feature the table has a column for, in column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    Chat,
    Streaming,
    Tools,
    ParallelTools,
    StreamedToolArgs,
    Vision,
    JsonMode,
    Reasoning,
    ReasoningTokens,
    CachedTokens,
    Embeddings,
    AnthropicClient,
    GeminiClient,
    Upstream401,
    Upstream429,
    Upstream5xx,
    Timeout,
    MidStreamError,
    MalformedChunk,
}

const FEATURES: &[Feature] = &[
    Feature::Chat,
    Feature::Streaming,
    Feature::Tools,
    Feature::ParallelTools,
    Feature::StreamedToolArgs,
    Feature::Vision,
    Feature::JsonMode,
    Feature::Reasoning,
    Feature::ReasoningTokens,
    Feature::CachedTokens,
    Feature::Embeddings,
    Feature::AnthropicClient,
    Feature::GeminiClient,
    Feature::Upstream401,
    Feature::Upstream429,
    Feature::Upstream5xx,
    Feature::Timeout,
    Feature::MidStreamError,
    Feature::MalformedChunk,
];

impl Feature {
    /// The column header.
    fn header(self) -> &'static str {
        match self {
            Feature::Chat => "chat",
            Feature::Streaming => "streaming",
            Feature::Tools => "tools",
            Feature::ParallelTools => "parallel tools",
            Feature::StreamedToolArgs => "streamed tool args",
            Feature::Vision => "vision",
            Feature::JsonMode => "JSON mode",
            Feature::Reasoning => "reasoning",
            Feature::ReasoningTokens => "reasoning tokens",
            Feature::CachedTokens => "cached-token usage",
            Feature::Embeddings => "embeddings",
            Feature::AnthropicClient => "Anthropic client",
            Feature::GeminiClient => "Gemini client",
            Feature::Upstream401 => "401 → 502",
            Feature::Upstream429 => "429 → 503 + Retry-After",
            Feature::Upstream5xx => "5xx → 502",
            Feature::Timeout => "timeout → 504",
            Feature::MidStreamError => "mid-stream error",
            Feature::MalformedChunk => "malformed chunk",
        }
    }
}

/// Which fake speaks for the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    OpenAi,
    Anthropic,
    Gemini,
}

/// How a channel of this provider sends its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    Bearer,
    ApiKeyHeader,
    None,
}

/// One row of the table.
struct Provider {
    name: &'static str,
    vendor: Vendor,
    model: &'static str,
    auth: Auth,
    /// The scenario a normal answer uses: the vendor's own shapes where the fake has them.
    normal: Scenario,
    /// The vendor's way of failing after some chunks.
    mid_stream_error: Scenario,
    /// Whether the vendor sends `reasoning_content` (the fake's DeepSeek shape).
    reasoning_text: bool,
    /// What the provider does not support; the case asserts the refusal or limit instead.
    lacks: &'static [Feature],
}

const UPSTREAM_SECRET: &str = "sk-conformance-upstream";
const TOOLS_TEXT: &str = "Weather in Paris and Rome?";
/// 1×1 PNG header, enough for every vendor's image part.
const IMAGE_B64: &str = "iVBORw0KGgo=";

fn openai_compatible(name: &'static str, model: &'static str) -> Provider {
    Provider {
        name,
        vendor: Vendor::OpenAi,
        model,
        auth: Auth::Bearer,
        normal: Scenario::Normal,
        mid_stream_error: Scenario::ErrorAfterChunks(2),
        reasoning_text: false,
        lacks: &[],
    }
}

/// The table's rows, in the order the README lists the presets.
fn providers() -> Vec<Provider> {
    vec![
        openai_compatible("openai", "gpt-4.1-mini"),
        Provider { normal: Scenario::DeepSeek, reasoning_text: true, ..openai_compatible("deepseek", "deepseek-chat") },
        Provider { normal: Scenario::UsageOnLastChunk, ..openai_compatible("mistral", "mistral-small-latest") },
        Provider { normal: Scenario::DeepSeek, reasoning_text: true, ..openai_compatible("qwen", "qwen-plus") },
        Provider {
            normal: Scenario::MoonshotCachedTokens,
            // Moonshot's usage has no reasoning count.
            lacks: &[Feature::ReasoningTokens],
            ..openai_compatible("moonshot", "kimi-k2-0905-preview")
        },
        Provider { normal: Scenario::UsageOnLastChunk, ..openai_compatible("zhipu", "glm-4.5") },
        openai_compatible("ernie", "ernie-4.5-turbo-128k"),
        Provider {
            normal: Scenario::OpenRouterProcessing,
            mid_stream_error: Scenario::OpenRouterErrorAfterChunks(2),
            ..openai_compatible("openrouter", "openai/gpt-4o")
        },
        Provider { auth: Auth::ApiKeyHeader, ..openai_compatible("azure", "gpt-4o-eastus") },
        Provider { auth: Auth::None, ..openai_compatible("ollama", "llama3.2") },
        Provider {
            auth: Auth::None,
            mid_stream_error: Scenario::VllmErrorAfterChunks(2),
            ..openai_compatible("vllm", "Qwen/Qwen2.5-7B-Instruct")
        },
        Provider {
            vendor: Vendor::Anthropic,
            reasoning_text: true,
            // Anthropic reports thinking inside `output_tokens`, with no separate count.
            lacks: &[Feature::ReasoningTokens, Feature::Embeddings],
            ..openai_compatible("anthropic", "claude-sonnet-4-5")
        },
        Provider { vendor: Vendor::Gemini, reasoning_text: true, ..openai_compatible("gemini", "gemini-2.5-flash") },
    ]
}

impl Provider {
    fn supports(&self, f: Feature) -> bool {
        !self.lacks.contains(&f)
    }

    /// The model an embeddings call names: a second model of OpenAI-compatible channels (an Azure
    /// deployment of its own); the channel's one model elsewhere.
    fn embedding_model(&self) -> String {
        match self.vendor {
            Vendor::OpenAi => format!("{}-embed", self.model.replace('/', "-")),
            _ => self.model.to_owned(),
        }
    }

    /// The text the fake answers with.
    fn text(&self) -> &'static str {
        match self.vendor {
            Vendor::Gemini => "Hello from Gemini.",
            _ => "Hello, world!",
        }
    }

    /// What `usage.recorded` must say for a normal answer, from the fake's vendor-shaped numbers:
    /// (uncached input, cached input, cache-write input, output, reasoning).
    fn billed(&self) -> (u64, u64, u64, u64, u64) {
        match self.vendor {
            // Moonshot reports no reasoning count.
            Vendor::OpenAi if self.normal == Scenario::MoonshotCachedTokens => (20, 5, 0, 12, 0),
            // prompt_tokens 25 of which 5 cached; completion_tokens 12 of which 2 reasoning.
            Vendor::OpenAi => (20, 5, 0, 12, 2),
            // input_tokens 20 (uncached), cache reads 5, cache writes 3, output 12.
            Vendor::Anthropic => (20, 5, 3, 12, 0),
            // promptTokenCount 20 includes 5 cached; candidatesTokenCount 12.
            Vendor::Gemini => (15, 5, 0, 12, 0),
        }
    }
}

/// The running fake behind a provider.
enum Upstream {
    OpenAi(FakeOpenAi),
    Anthropic(FakeAnthropic),
    Gemini(FakeGemini),
}

impl Upstream {
    fn set_scenario(&self, s: Scenario) {
        match self {
            Upstream::OpenAi(f) => f.set_scenario(s),
            Upstream::Anthropic(f) => f.set_scenario(s),
            Upstream::Gemini(f) => f.set_scenario(s),
        }
    }

    /// (path, body) of every request received.
    fn requests(&self) -> Vec<(String, Value)> {
        match self {
            Upstream::OpenAi(f) => f.requests().into_iter().map(|r| (r.path, r.body)).collect(),
            Upstream::Anthropic(f) => f.requests().into_iter().map(|r| (r.path, r.body)).collect(),
            Upstream::Gemini(f) => f.requests().into_iter().map(|r| (r.path, r.body)).collect(),
        }
    }

    fn last_body(&self) -> anyhow::Result<Value> {
        self.requests().pop().map(|(_, b)| b).ok_or_else(|| anyhow::anyhow!("nothing reached the upstream"))
    }
}

/// One provider's gateway, channel and fake.
struct Ctx {
    p: Provider,
    app: TestApp,
    up: Upstream,
}

impl Ctx {
    async fn start(p: Provider) -> anyhow::Result<Ctx> {
        // A short first-byte timeout keeps the timeout case fast.
        let app = spawn_with(|c| c.first_byte_timeout = Duration::from_millis(500)).await?;
        let (up, base_url) = match p.vendor {
            Vendor::OpenAi => {
                let f = FakeOpenAi::start().await?;
                f.set_tool_calls(true);
                let url = if p.auth == Auth::ApiKeyHeader { f.azure_endpoint() } else { f.base_url() };
                (Upstream::OpenAi(f), url)
            }
            Vendor::Anthropic => {
                let f = FakeAnthropic::start().await?;
                let url = f.base_url();
                (Upstream::Anthropic(f), url)
            }
            Vendor::Gemini => {
                let f = FakeGemini::start().await?;
                let url = f.base_url();
                (Upstream::Gemini(f), url)
            }
        };
        let id = format!("ch_conf_{}", p.name);
        let mut models = vec![p.model.to_owned()];
        if p.vendor == Vendor::OpenAi {
            models.push(p.embedding_model());
        }
        app.log
            .append_acked(&control(
                GLOBAL_TENANT,
                EventBody::ChannelAdded(ChannelAdded {
                    channel_id: id.clone(),
                    name: p.name.into(),
                    provider: p.name.into(),
                    base_url,
                    api_key: (p.auth != Auth::None).then(|| app.master_key.seal(UPSTREAM_SECRET, &id)),
                    models,
                    priority: 0,
                    weight: 1,
                    api_version: (p.auth == Auth::ApiKeyHeader).then(|| "2024-10-21".to_owned()),
                    insecure_http: false,
                    anthropic_beta: Vec::new(),
                    proxy_pool: None,
                }),
            ))
            .await?;
        let until = app.log.last_seq(schemas::Stream::Control).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while app.gateway.control_seq() < until {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Ctx { p, app, up })
    }

    fn chat(&self, stream: bool) -> Value {
        json!({"model": self.p.model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
    }

    fn with_tools(&self, stream: bool) -> Value {
        let tool = |name: &str| {
            json!({"type": "function", "function": {"name": name, "description": "Looks it up.",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                    "required": ["location"]}}})
        };
        json!({"model": self.p.model, "stream": stream,
            "messages": [{"role": "user", "content": TOOLS_TEXT}],
            "tools": [tool("get_weather"), tool("get_time")]})
    }

    async fn post(&self, body: &Value) -> anyhow::Result<reqwest::Response> {
        self.app.post("/v1/chat/completions", body).await
    }

    /// Posts a non-stream chat and returns its 200 body.
    async fn answer(&self, body: &Value) -> anyhow::Result<Value> {
        let resp = self.post(body).await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status == 200, "status {status}: {text}");
        Ok(serde_json::from_str(&text)?)
    }

    /// Posts a stream chat and returns its chunks, checking it ends with `[DONE]`.
    async fn stream(&self, body: &Value) -> anyhow::Result<Vec<Value>> {
        let resp = self.post(body).await?;
        anyhow::ensure!(resp.status() == 200, "status {}: {}", resp.status(), resp.text().await?);
        let payloads = sse_payloads(resp).await?;
        anyhow::ensure!(payloads.last().map(String::as_str) == Some("[DONE]"), "no [DONE]: {payloads:?}");
        Ok(payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p)).collect::<Result<_, _>>()?)
    }

    async fn usage_count(&self) -> anyhow::Result<usize> {
        Ok(self.app.usage().await?.len())
    }

    /// The one `usage.recorded` appended after the first `before`.
    async fn billed_once(&self, before: usize) -> anyhow::Result<UsageRecorded> {
        let usage = self.app.wait_usage(before + 1).await?;
        anyhow::ensure!(usage.len() == before + 1, "expected {} usage events, got {}", before + 1, usage.len());
        let u = usage[before].1.clone();
        anyhow::ensure!(u.provider == self.p.name, "billed to {}", u.provider);
        Ok(u)
    }

    fn check_billed(&self, u: &UsageRecorded, what: &str) -> anyhow::Result<()> {
        let got = (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens, u.reasoning_tokens);
        anyhow::ensure!(got == self.p.billed(), "{what}: billed {got:?}, the vendor said {:?}", self.p.billed());
        anyhow::ensure!(u.usage_source == UsageSource::Upstream, "{what}: usage {:?}", u.usage_source);
        Ok(())
    }
}

/// What a case found.
#[derive(Debug)]
enum Outcome {
    Supported,
    NotSupported,
}

type CaseResult = anyhow::Result<Outcome>;

/// Runs one case for one provider.
async fn run(cx: &Ctx, f: Feature) -> CaseResult {
    cx.up.set_scenario(cx.p.normal.clone());
    match f {
        Feature::Chat => chat(cx).await,
        Feature::Streaming => streaming(cx).await,
        Feature::Tools => tools(cx).await,
        Feature::ParallelTools => parallel_tools(cx).await,
        Feature::StreamedToolArgs => streamed_tool_args(cx).await,
        Feature::Vision => vision(cx).await,
        Feature::JsonMode => json_mode(cx).await,
        Feature::Reasoning => reasoning(cx).await,
        Feature::ReasoningTokens => reasoning_tokens(cx).await,
        Feature::CachedTokens => cached_tokens(cx).await,
        Feature::Embeddings => embeddings(cx).await,
        Feature::AnthropicClient => anthropic_client(cx).await,
        Feature::GeminiClient => gemini_client(cx).await,
        Feature::Upstream401 => failing_upstream(cx, 401, None, 502, "upstream_error").await,
        Feature::Upstream429 => failing_upstream(cx, 429, Some(7), 503, "upstream_overloaded").await,
        Feature::Upstream5xx => failing_upstream(cx, 500, None, 502, "upstream_error").await,
        Feature::Timeout => timeout(cx).await,
        Feature::MidStreamError => mid_stream_error(cx).await,
        Feature::MalformedChunk => malformed_chunk(cx).await,
    }
}

async fn chat(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let body = cx.answer(&cx.chat(false)).await?;
    anyhow::ensure!(body["object"] == "chat.completion", "{body}");
    anyhow::ensure!(body["choices"][0]["message"]["content"] == cx.p.text(), "{body}");
    anyhow::ensure!(body["choices"][0]["finish_reason"] == "stop", "{body}");
    let u = cx.billed_once(before).await?;
    anyhow::ensure!(u.stream_outcome == StreamOutcome::Completed && !u.streamed, "{u:?}");
    cx.check_billed(&u, "chat")?;
    if let Upstream::OpenAi(f) = &cx.up {
        let sent = f.requests().pop().ok_or_else(|| anyhow::anyhow!("nothing sent"))?;
        let want = match cx.p.auth {
            Auth::Bearer => (Some(format!("Bearer {UPSTREAM_SECRET}")), None),
            Auth::ApiKeyHeader => (None, Some(UPSTREAM_SECRET.to_owned())),
            Auth::None => (None, None),
        };
        let got = (sent.authorization().map(str::to_owned), sent.header("api-key").map(str::to_owned));
        anyhow::ensure!(got == want, "upstream auth {got:?}");
    }
    Ok(Outcome::Supported)
}

async fn streaming(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let chunks = cx.stream(&cx.chat(true)).await?;
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    anyhow::ensure!(text == cx.p.text(), "streamed {text:?}");
    anyhow::ensure!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"), "{chunks:?}");
    anyhow::ensure!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"), "no finish: {chunks:?}");
    let u = cx.billed_once(before).await?;
    anyhow::ensure!(u.streamed && u.stream_outcome == StreamOutcome::Completed, "{u:?}");
    cx.check_billed(&u, "stream")?;
    Ok(Outcome::Supported)
}

/// The tool definitions as they reached the upstream, by name, in the vendor's shape.
fn upstream_tool_names(cx: &Ctx, sent: &Value) -> Vec<String> {
    let list = match cx.p.vendor {
        Vendor::OpenAi => sent["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| t["function"]["name"].clone())
            .collect::<Vec<_>>(),
        Vendor::Anthropic => {
            sent["tools"].as_array().cloned().unwrap_or_default().iter().map(|t| t["name"].clone()).collect()
        }
        Vendor::Gemini => sent["tools"][0]["functionDeclarations"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|t| t["name"].clone())
            .collect(),
    };
    list.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect()
}

/// The calls of a non-stream answer as (id, name, parsed arguments).
fn calls_of(body: &Value) -> anyhow::Result<Vec<(String, String, Value)>> {
    anyhow::ensure!(body["choices"][0]["finish_reason"] == "tool_calls", "{body}");
    body["choices"][0]["message"]["tool_calls"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            anyhow::ensure!(c["type"] == "function", "{c}");
            let args: Value = serde_json::from_str(c["function"]["arguments"].as_str().unwrap_or("not a string"))?;
            Ok((
                c["id"].as_str().unwrap_or("").to_owned(),
                c["function"]["name"].as_str().unwrap_or("").to_owned(),
                args,
            ))
        })
        .collect()
}

async fn tools(cx: &Ctx) -> CaseResult {
    let mut req = cx.with_tools(false);
    req["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    let body = cx.answer(&req).await?;
    let calls = calls_of(&body)?;
    anyhow::ensure!(calls.len() == 1, "a forced tool gets one call: {body}");
    anyhow::ensure!(calls[0].1 == "get_weather" && calls[0].2 == json!({"location": "City 0"}), "{calls:?}");
    anyhow::ensure!(!calls[0].0.is_empty(), "no call id: {body}");
    let sent = cx.up.last_body()?;
    anyhow::ensure!(upstream_tool_names(cx, &sent) == ["get_weather", "get_time"], "tools sent: {sent}");
    Ok(Outcome::Supported)
}

async fn parallel_tools(cx: &Ctx) -> CaseResult {
    let body = cx.answer(&cx.with_tools(false)).await?;
    let calls = calls_of(&body)?;
    anyhow::ensure!(calls.len() == 2, "{body}");
    anyhow::ensure!(calls[0].0 != calls[1].0, "the same id twice: {body}");
    anyhow::ensure!(calls[0].1 == "get_weather" && calls[1].1 == "get_time", "{calls:?}");
    anyhow::ensure!(calls[1].2 == json!({"location": "City 1"}), "{calls:?}");
    Ok(Outcome::Supported)
}

async fn streamed_tool_args(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let chunks = cx.stream(&cx.with_tools(true)).await?;
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = usize::try_from(tc["index"].as_u64().ok_or_else(|| anyhow::anyhow!("no index: {tc}"))?)?;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            if let Some(id) = tc["id"].as_str() {
                calls[i].0 = id.to_owned();
            }
            if let Some(name) = tc["function"]["name"].as_str() {
                calls[i].1.push_str(name);
            }
            calls[i].2.push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    anyhow::ensure!(calls.len() == 2, "{chunks:?}");
    for (i, (id, name, args)) in calls.iter().enumerate() {
        anyhow::ensure!(!id.is_empty() && name == ["get_weather", "get_time"][i], "{calls:?}");
        let args: Value = serde_json::from_str(args)?;
        anyhow::ensure!(args == json!({"location": format!("City {i}")}), "{args}");
    }
    anyhow::ensure!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{chunks:?}");
    let u = cx.billed_once(before).await?;
    anyhow::ensure!(u.stream_outcome == StreamOutcome::Completed, "{u:?}");
    Ok(Outcome::Supported)
}

async fn vision(cx: &Ctx) -> CaseResult {
    let openai = json!({"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{IMAGE_B64}")}});
    let anthropic =
        json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE_B64}});
    let gemini = json!({"inlineData": {"mimeType": "image/png", "data": IMAGE_B64}});
    // The same image sent by each client protocol reaches the upstream in the vendor's shape.
    for surface in SURFACES {
        let text = json!({"type": "text", "text": "What is this?"});
        let body = match surface {
            Surface::OpenAi => {
                json!({"model": cx.p.model, "messages": [{"role": "user", "content": [text, openai.clone()]}]})
            }
            Surface::Anthropic => json!({"model": cx.p.model, "max_tokens": 256,
                "messages": [{"role": "user", "content": [text, anthropic.clone()]}]}),
            Surface::Gemini => {
                json!({"contents": [{"role": "user", "parts": [{"text": "What is this?"}, gemini.clone()]}]})
            }
        };
        let resp = cx.send(surface, &body, false).await?;
        anyhow::ensure!(resp.status() == 200, "{surface:?} client: {} {}", resp.status(), resp.text().await?);
        let sent = cx.up.last_body()?;
        let (got, want) = match cx.p.vendor {
            Vendor::OpenAi => (&sent["messages"][0]["content"][1], &openai),
            Vendor::Anthropic => (&sent["messages"][0]["content"][1], &anthropic),
            Vendor::Gemini => (&sent["contents"][0]["parts"][1], &gemini),
        };
        anyhow::ensure!(got == want, "{surface:?} client: the image reached the upstream as {got}");
    }
    let body = cx
        .answer(&json!({"model": cx.p.model, "messages": [{"role": "user",
        "content": [{"type": "text", "text": "What is this?"}, openai]}]}))
        .await?;
    anyhow::ensure!(body["choices"][0]["message"]["content"] == cx.p.text(), "{body}");
    Ok(Outcome::Supported)
}

async fn json_mode(cx: &Ctx) -> CaseResult {
    let mut req = cx.chat(false);
    req["response_format"] = json!({"type": "json_object"});
    let body = cx.answer(&req).await?;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap_or_default().to_owned();
    let sent = cx.up.last_body()?;
    match cx.p.vendor {
        // The OpenAI fake answers text whatever it is asked: the field reaching it is the point.
        Vendor::OpenAi => anyhow::ensure!(sent["response_format"] == json!({"type": "json_object"}), "{sent}"),
        Vendor::Anthropic => {
            let forced = json!({"type": "tool", "name": sent["tools"][0]["name"]});
            anyhow::ensure!(sent["tool_choice"] == forced && sent["tools"][0]["name"].is_string(), "{sent}");
            anyhow::ensure!(serde_json::from_str::<Value>(&content)?.is_object(), "{content}");
        }
        Vendor::Gemini => {
            anyhow::ensure!(sent["generationConfig"]["responseMimeType"] == "application/json", "{sent}");
            anyhow::ensure!(serde_json::from_str::<Value>(&content)?.is_object(), "{content}");
        }
    }
    anyhow::ensure!(body["choices"][0]["finish_reason"] == "stop", "{body}");
    // Gemini's own JSON mode, from a Gemini client, reaches the upstream the same way.
    let req = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "generationConfig": {"responseMimeType": "application/json"}});
    let resp = cx.send(Surface::Gemini, &req, false).await?;
    anyhow::ensure!(resp.status() == 200, "Gemini client: {} {}", resp.status(), resp.text().await?);
    let v: Value = resp.json().await?;
    let sent = cx.up.last_body()?;
    let text: String = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p["text"].as_str())
        .collect();
    match cx.p.vendor {
        Vendor::OpenAi => anyhow::ensure!(sent["response_format"] == json!({"type": "json_object"}), "{sent}"),
        Vendor::Anthropic => {
            anyhow::ensure!(sent["tool_choice"]["type"] == "tool", "{sent}");
            anyhow::ensure!(serde_json::from_str::<Value>(&text)?.is_object(), "Gemini client: {v}");
        }
        Vendor::Gemini => {
            anyhow::ensure!(sent["generationConfig"]["responseMimeType"] == "application/json", "{sent}");
            anyhow::ensure!(serde_json::from_str::<Value>(&text)?.is_object(), "Gemini client: {v}");
        }
    }
    Ok(Outcome::Supported)
}

fn reasoning_request(cx: &Ctx) -> Value {
    let mut req = cx.chat(false);
    req["reasoning_effort"] = json!("low");
    req
}

async fn reasoning(cx: &Ctx) -> CaseResult {
    let body = cx.answer(&reasoning_request(cx)).await?;
    let sent = cx.up.last_body()?;
    let (text, sent_ok) = match cx.p.vendor {
        Vendor::OpenAi => (FAKE_REASONING, sent["reasoning_effort"] == "low"),
        Vendor::Anthropic => {
            ("Let me think about it.", sent["thinking"] == json!({"type": "enabled", "budget_tokens": 1024}))
        }
        Vendor::Gemini => (
            FAKE_THOUGHT,
            sent["generationConfig"]["thinkingConfig"] == json!({"thinkingBudget": 1024, "includeThoughts": true}),
        ),
    };
    anyhow::ensure!(sent_ok, "reasoning_effort reached the upstream as {sent}");
    if cx.p.reasoning_text {
        let got = &body["choices"][0]["message"]["reasoning_content"];
        anyhow::ensure!(got == text, "reasoning_content {got}: {body}");
    }
    anyhow::ensure!(body["choices"][0]["message"]["content"] == cx.p.text(), "{body}");
    Ok(Outcome::Supported)
}

async fn reasoning_tokens(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let body = cx.answer(&reasoning_request(cx)).await?;
    let u = cx.billed_once(before).await?;
    let (_, _, _, output, reasoning) = cx.p.billed();
    if !cx.p.supports(Feature::ReasoningTokens) {
        // Thinking, if any, is inside the output count; the vendor gives no separate one to bill.
        anyhow::ensure!((u.output_tokens, u.reasoning_tokens) == (output, 0), "{u:?}");
        return Ok(Outcome::NotSupported);
    }
    match cx.p.vendor {
        Vendor::OpenAi => {
            anyhow::ensure!((u.output_tokens, u.reasoning_tokens) == (output, reasoning), "{u:?}");
            let shown = &body["usage"]["completion_tokens_details"]["reasoning_tokens"];
            anyhow::ensure!(*shown == json!(reasoning), "client saw {shown}");
        }
        // Thoughts are billed beside the answer: output = candidates + thoughts.
        Vendor::Gemini => {
            let want = (output + DEFAULT_THOUGHTS_TOKENS, DEFAULT_THOUGHTS_TOKENS);
            anyhow::ensure!((u.output_tokens, u.reasoning_tokens) == want, "{u:?}");
        }
        Vendor::Anthropic => anyhow::bail!("Anthropic reports no thinking count, yet {u:?}"),
    }
    Ok(Outcome::Supported)
}

async fn cached_tokens(cx: &Ctx) -> CaseResult {
    let (input, cached, write, ..) = cx.p.billed();
    for stream in [false, true] {
        let before = cx.usage_count().await?;
        let mut req = cx.chat(stream);
        req["stream_options"] = json!({"include_usage": true});
        if !stream {
            req.as_object_mut().map(|o| o.remove("stream_options"));
        }
        let usage = if stream {
            let chunks = cx.stream(&req).await?;
            // Moonshot's usage stays where the vendor puts it, inside the last choice.
            chunks.iter().rev().find_map(|c| {
                c.get("usage").or_else(|| c.pointer("/choices/0/usage")).filter(|u| u.is_object()).cloned()
            })
        } else {
            cx.answer(&req).await?.get("usage").cloned()
        };
        let usage = usage.ok_or_else(|| anyhow::anyhow!("stream={stream}: the client saw no usage"))?;
        let u = cx.billed_once(before).await?;
        cx.check_billed(&u, if stream { "stream" } else { "chat" })?;
        // The client sees the vendor's prompt total once: cached tokens inside it, never added twice.
        let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
        let shown_cached = usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .or_else(|| usage["prompt_cache_hit_tokens"].as_u64())
            .or_else(|| usage["cached_tokens"].as_u64())
            .unwrap_or(0);
        anyhow::ensure!(
            (prompt, shown_cached) == (input + cached + write, cached),
            "stream={stream}: client usage {usage}"
        );
        anyhow::ensure!(u.raw_usage.is_some(), "stream={stream}: raw usage missing");
    }
    Ok(Outcome::Supported)
}

async fn embeddings(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let sent_before = cx.up.requests().len();
    let req = json!({"model": cx.p.embedding_model(), "input": ["a", "b"]});
    let (status, body) = error_of(cx.app.post("/v1/embeddings", &req).await?).await?;
    if status == 400 && body["error"]["code"] == "unsupported_parameter" {
        anyhow::ensure!(cx.up.requests().len() == sent_before, "a refused call reached the upstream");
        return Ok(Outcome::NotSupported);
    }
    anyhow::ensure!(status == 200 && body["data"].as_array().map(Vec::len) == Some(2), "{status}: {body}");
    let (path, _) = cx.up.requests().pop().unwrap_or_default();
    let u = cx.billed_once(before).await?;
    anyhow::ensure!((u.endpoint.as_str(), u.output_tokens) == ("embeddings", 0), "{u:?}");
    match cx.p.vendor {
        Vendor::OpenAi => {
            anyhow::ensure!(path.ends_with("/embeddings"), "sent to {path}");
            anyhow::ensure!(u.input_tokens == 25 && u.usage_source == UsageSource::Upstream, "{u:?}");
        }
        // Gemini reports no usage for embeddings: the input is estimated.
        Vendor::Gemini => anyhow::ensure!(path.contains(":batchEmbedContents") && u.input_tokens > 0, "{path} {u:?}"),
        Vendor::Anthropic => anyhow::bail!("Anthropic has no embeddings API, yet {path} answered"),
    }
    Ok(Outcome::Supported)
}

async fn anthropic_client(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    for stream in [false, true] {
        let body = json!({"model": cx.p.model, "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": "Say hello"}]});
        let resp = cx.send(Surface::Anthropic, &body, false).await?;
        anyhow::ensure!(resp.status() == 200, "stream={stream}: {} {}", resp.status(), resp.text().await?);
        let text = resp.text().await?;
        if stream {
            let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
            anyhow::ensure!(names.first() == Some(&"message_start") && names.last() == Some(&"message_stop"), "{text}");
            let streamed: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .filter_map(|d| serde_json::from_str::<Value>(d).ok())
                .filter_map(|v| v["delta"]["text"].as_str().map(str::to_owned))
                .collect();
            anyhow::ensure!(streamed == cx.p.text(), "{text}");
        } else {
            let v: Value = serde_json::from_str(&text)?;
            // A thinking block (reasoning vendors) comes before the text.
            let text: String = v["content"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|b| b["type"] == "text")
                .filter_map(|b| b["text"].as_str())
                .collect();
            anyhow::ensure!(v["type"] == "message" && text == cx.p.text(), "{v}");
            // Anthropic's counts are disjoint: cache reads and writes are not in `input_tokens`.
            let (input, cached, write, output, _) = cx.p.billed();
            let want = json!({"input_tokens": input, "output_tokens": output,
                "cache_read_input_tokens": cached, "cache_creation_input_tokens": write});
            let got: Value =
                ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
                    .iter()
                    .map(|k| ((*k).to_owned(), v["usage"][k].clone()))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
            anyhow::ensure!(got == want, "the client saw usage {}", v["usage"]);
        }
    }
    let usage = cx.app.wait_usage(before + 2).await?;
    anyhow::ensure!(usage.len() == before + 2, "billed {} of 2", usage.len() - before);
    for (_, u) in &usage[before..] {
        cx.check_billed(u, "anthropic client")?;
    }
    // Tools in Anthropic's shape come back as `tool_use` blocks with parsed input.
    let tool = |name: &str| {
        json!({"name": name, "input_schema": {"type": "object",
            "properties": {"location": {"type": "string"}}, "required": ["location"]}})
    };
    let body = json!({"model": cx.p.model, "max_tokens": 256, "tools": [tool("get_weather"), tool("get_time")],
        "messages": [{"role": "user", "content": TOOLS_TEXT}]});
    let resp = cx.send(Surface::Anthropic, &body, false).await?;
    anyhow::ensure!(resp.status() == 200, "tools: {} {}", resp.status(), resp.text().await?);
    let v: Value = resp.json().await?;
    let calls: Vec<(Value, Value)> = v["content"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["type"] == "tool_use")
        .map(|b| (b["name"].clone(), b["input"].clone()))
        .collect();
    let want =
        vec![(json!("get_weather"), json!({"location": "City 0"})), (json!("get_time"), json!({"location": "City 1"}))];
    anyhow::ensure!(calls == want && v["stop_reason"] == "tool_use", "tools: {v}");
    // Streamed: each block's `input_json_delta` pieces assemble to the same input.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let resp = cx.send(Surface::Anthropic, &streamed, false).await?;
    let text = resp.text().await?;
    // Block index → (tool name, input JSON so far).
    let mut blocks: std::collections::BTreeMap<u64, (Value, String)> = Default::default();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        let e: Value = serde_json::from_str(data)?;
        let i = e["index"].as_u64().unwrap_or(u64::MAX);
        if e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use" {
            blocks.insert(i, (e["content_block"]["name"].clone(), String::new()));
        }
        if e["delta"]["type"] == "input_json_delta" {
            let block = blocks.get_mut(&i).ok_or_else(|| anyhow::anyhow!("a delta for no tool block: {text}"))?;
            block.1.push_str(e["delta"]["partial_json"].as_str().unwrap_or(""));
        }
    }
    let streamed_calls: Vec<(Value, Value)> = blocks
        .into_values()
        .map(|(name, json)| Ok((name, serde_json::from_str(&json)?)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(streamed_calls == want, "streamed tools: {text}");
    Ok(Outcome::Supported)
}

async fn gemini_client(cx: &Ctx) -> CaseResult {
    let before = cx.usage_count().await?;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]});
    for (action, stream) in [("generateContent", false), ("streamGenerateContent", true)] {
        let resp = cx.send(Surface::Gemini, &body, stream).await?;
        anyhow::ensure!(resp.status() == 200, "{action}: {} {}", resp.status(), resp.text().await?);
        let text = resp.text().await?.replace("\r\n", "\n");
        let chunks: Vec<Value> = if action == "generateContent" {
            let v: Value = serde_json::from_str(&text)?;
            // Gemini's prompt count includes the cached part; thoughts are beside the answer.
            let (input, cached, write, output, _) = cx.p.billed();
            let u = &v["usageMetadata"];
            let got = (
                u["promptTokenCount"].as_u64(),
                u["cachedContentTokenCount"].as_u64().unwrap_or(0),
                u["candidatesTokenCount"].as_u64().unwrap_or(0) + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
            );
            anyhow::ensure!(got == (Some(input + cached + write), cached, output), "the client saw usage {u}");
            vec![v]
        } else {
            text.split("\n\n")
                .filter_map(|b| b.trim().strip_prefix("data: "))
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?
        };
        let answer: String = chunks
            .iter()
            .flat_map(|c| {
                c.pointer("/candidates/0/content/parts").and_then(Value::as_array).cloned().unwrap_or_default()
            })
            .filter(|p| p.get("thought").is_none())
            .filter_map(|p| p["text"].as_str().map(str::to_owned))
            .collect();
        anyhow::ensure!(answer == cx.p.text(), "{action}: {text}");
    }
    let usage = cx.app.wait_usage(before + 2).await?;
    anyhow::ensure!(usage.len() == before + 2, "billed {} of 2", usage.len() - before);
    for (_, u) in &usage[before..] {
        cx.check_billed(u, "gemini client")?;
    }
    // Function declarations come back as `functionCall` parts with their args.
    let declare = |name: &str| {
        json!({"name": name, "parameters": {"type": "OBJECT",
            "properties": {"location": {"type": "STRING"}}, "required": ["location"]}})
    };
    let body = json!({"contents": [{"role": "user", "parts": [{"text": TOOLS_TEXT}]}],
        "tools": [{"functionDeclarations": [declare("get_weather"), declare("get_time")]}]});
    let resp = cx.send(Surface::Gemini, &body, false).await?;
    anyhow::ensure!(resp.status() == 200, "tools: {} {}", resp.status(), resp.text().await?);
    let v: Value = resp.json().await?;
    let calls: Vec<(Value, Value)> = v
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("functionCall"))
        .map(|c| (c["name"].clone(), c["args"].clone()))
        .collect();
    let want =
        vec![(json!("get_weather"), json!({"location": "City 0"})), (json!("get_time"), json!({"location": "City 1"}))];
    anyhow::ensure!(calls == want, "tools: {v}");
    // Streamed: Gemini sends each call whole, so streamed arguments arrive assembled.
    let resp = cx.send(Surface::Gemini, &body, true).await?;
    let text = resp.text().await?.replace("\r\n", "\n");
    let mut streamed_calls = Vec::new();
    for data in text.split("\n\n").filter_map(|b| b.trim().strip_prefix("data: ")) {
        let c: Value = serde_json::from_str(data)?;
        for p in c.pointer("/candidates/0/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(call) = p.get("functionCall") {
                streamed_calls.push((call["name"].clone(), call["args"].clone()));
            }
        }
    }
    anyhow::ensure!(streamed_calls == want, "streamed tools: {text}");
    Ok(Outcome::Supported)
}

/// The three client protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Surface {
    OpenAi,
    Anthropic,
    Gemini,
}

const SURFACES: [Surface; 3] = [Surface::OpenAi, Surface::Anthropic, Surface::Gemini];

impl Ctx {
    /// Sends a body in a client protocol's shape (`stream` picks Gemini's action; the OpenAI and
    /// Anthropic bodies carry their own `stream`).
    async fn send(&self, surface: Surface, body: &Value, stream: bool) -> anyhow::Result<reqwest::Response> {
        let http = &self.app.http;
        Ok(match surface {
            Surface::OpenAi => self.post(body).await?,
            Surface::Anthropic => {
                http.post(self.app.url("/v1/messages"))
                    .header("x-api-key", &self.app.key)
                    .header("anthropic-version", "2023-06-01")
                    .json(body)
                    .send()
                    .await?
            }
            Surface::Gemini => {
                let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
                http.post(self.app.url(&format!("/v1beta/models/{}:{action}", self.p.model)))
                    .header("x-goog-api-key", &self.app.key)
                    .json(body)
                    .send()
                    .await?
            }
        })
    }

    /// "Say hello" through a client protocol.
    async fn say_hello(&self, surface: Surface, stream: bool) -> anyhow::Result<reqwest::Response> {
        let body = match surface {
            Surface::OpenAi => self.chat(stream),
            Surface::Anthropic => json!({"model": self.p.model, "max_tokens": 256, "stream": stream,
                "messages": [{"role": "user", "content": "Say hello"}]}),
            Surface::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}]}),
        };
        self.send(surface, &body, stream).await
    }
}

/// Checks an error answer on every client protocol, streamed and not: the status, the class in
/// the protocol's own error shape, `Retry-After`, and that the upstream key stays hidden.
async fn refused_everywhere(cx: &Ctx, want: u16, code: &str, retry_after: Option<u32>) -> anyhow::Result<()> {
    // Anthropic's error types for our classes.
    let anthropic_kind = match code {
        "upstream_overloaded" => "overloaded_error",
        "upstream_timeout" => "timeout_error",
        _ => "api_error",
    };
    for surface in SURFACES {
        for stream in [false, true] {
            // The previous failure took the key out of rotation (disabled, resting, breaker open).
            cx.app.enable_key(&format!("ch_conf_{}", cx.p.name)).await?;
            let resp = cx.say_hello(surface, stream).await?;
            let got_retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let (got, body) = error_of(resp).await?;
            let class_ok = match surface {
                Surface::OpenAi => body["error"]["code"] == code,
                Surface::Anthropic => body["type"] == "error" && body["error"]["type"] == anthropic_kind,
                Surface::Gemini => body["error"]["code"] == want && body["error"]["status"].is_string(),
            };
            let what = format!("{surface:?} client, stream={stream}");
            anyhow::ensure!(got == want && class_ok, "{what}: {got} {body}");
            anyhow::ensure!(got_retry == retry_after.map(|r| r.to_string()), "{what}: Retry-After {got_retry:?}");
            anyhow::ensure!(!body.to_string().contains(UPSTREAM_SECRET), "{what}: the upstream key leaked: {body}");
            // A 5xx carries a generic message: the upstream's own text stays in the log.
            for upstream_text in ["fake upstream status", "Resource has been exhausted", "An internal error has"] {
                anyhow::ensure!(
                    !body.to_string().contains(upstream_text),
                    "{what}: the upstream's message leaked: {body}"
                );
            }
        }
    }
    Ok(())
}

async fn failing_upstream(cx: &Ctx, status: u16, retry_after: Option<u32>, want: u16, code: &str) -> CaseResult {
    cx.up.set_scenario(Scenario::FailStatus { status, retry_after });
    refused_everywhere(cx, want, code, retry_after).await?;
    Ok(Outcome::Supported)
}

async fn timeout(cx: &Ctx) -> CaseResult {
    cx.up.set_scenario(Scenario::Hang);
    let before = cx.usage_count().await?;
    refused_everywhere(cx, 504, "upstream_timeout", None).await?;
    anyhow::ensure!(cx.usage_count().await? == before, "a call that produced nothing was billed");
    Ok(Outcome::Supported)
}

/// Streams on every client protocol from an upstream that fails mid-stream: each stream ends
/// with one in-band error in its protocol's shape, with no normal end after it, and is billed
/// with outcome `upstream_error`. Returns the OpenAI client's error payload.
async fn cut_streams(cx: &Ctx) -> anyhow::Result<Value> {
    let before = cx.usage_count().await?;
    let mut openai_error = Value::Null;
    for surface in SURFACES {
        let resp = cx.say_hello(surface, true).await?;
        anyhow::ensure!(resp.status() == 200, "{surface:?} client: status {}", resp.status());
        let text = resp.text().await?.replace("\r\n", "\n");
        let events: Vec<(&str, Value)> = text
            .split("\n\n")
            .filter(|b| !b.trim().is_empty())
            .map(|b| {
                let name = b.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("");
                let data = b.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or("null");
                (name, serde_json::from_str(data).unwrap_or_else(|_| json!(data)))
            })
            .collect();
        let (last_name, last) = events.last().cloned().unwrap_or_default();
        anyhow::ensure!(events.len() >= 2, "{surface:?} client: no content before the error: {text}");
        let ok = match surface {
            Surface::OpenAi => {
                openai_error = last.clone();
                last["error"]["message"].is_string()
                    && last["error"]["code"].is_string()
                    && !events.iter().any(|(_, v)| v == "[DONE]")
            }
            Surface::Anthropic => {
                last_name == "error" && last["type"] == "error" && !events.iter().any(|(n, _)| *n == "message_stop")
            }
            Surface::Gemini => {
                last["error"]["status"].is_string()
                    && !events.iter().any(|(_, v)| v.pointer("/candidates/0/finishReason").is_some())
            }
        };
        anyhow::ensure!(ok, "{surface:?} client: no single in-band error at the end: {text}");
    }
    let usage = cx.app.wait_usage(before + SURFACES.len()).await?;
    anyhow::ensure!(usage.len() == before + SURFACES.len(), "billed {} of 3", usage.len() - before);
    for (_, u) in &usage[before..] {
        anyhow::ensure!(u.stream_outcome == StreamOutcome::UpstreamError, "{u:?}");
    }
    Ok(openai_error)
}

async fn mid_stream_error(cx: &Ctx) -> CaseResult {
    cx.up.set_scenario(cx.p.mid_stream_error.clone());
    let err = cut_streams(cx).await?;
    anyhow::ensure!(err["error"]["type"] == "upstream_error", "{err}");
    Ok(Outcome::Supported)
}

async fn malformed_chunk(cx: &Ctx) -> CaseResult {
    cx.up.set_scenario(Scenario::InvalidJsonAfterChunks(1));
    let err = cut_streams(cx).await?;
    anyhow::ensure!(err["error"]["code"] == "upstream_protocol_error", "{err}");
    Ok(Outcome::Supported)
}

/// A provider's name and each feature's outcome, failures kept with their message.
type Row = (&'static str, Vec<(Feature, Result<Outcome, String>)>);

/// One provider's row.
async fn run_provider(p: Provider) -> Row {
    let name = p.name;
    let cx = match Ctx::start(p).await {
        Ok(cx) => cx,
        // A provider that cannot even start fails every case with the reason.
        Err(e) => return (name, FEATURES.iter().map(|f| (*f, Err(format!("setup: {e:#}")))).collect()),
    };
    let mut row = Vec::new();
    for f in FEATURES {
        let r = run(&cx, *f).await.map_err(|e| format!("{e:#}"));
        let r = match r {
            Ok(Outcome::Supported) if !cx.p.supports(*f) => {
                Err("declared unsupported, but it now works: take it out of the provider's `lacks`".to_owned())
            }
            Ok(Outcome::NotSupported) if cx.p.supports(*f) => {
                Err("answered as unsupported, but the provider does not declare it in `lacks`".to_owned())
            }
            other => other,
        };
        row.push((*f, r));
    }
    (name, row)
}

fn cell(r: &Result<Outcome, String>) -> &'static str {
    match r {
        Ok(Outcome::Supported) => "✓",
        Ok(Outcome::NotSupported) => "—",
        Err(_) => "✗",
    }
}

/// The README block, markers excluded.
fn render(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| provider |");
    for f in FEATURES {
        let _ = write!(out, " {} |", f.header());
    }
    out.push_str("\n|---|");
    for _ in FEATURES {
        out.push_str(":-:|");
    }
    out.push('\n');
    for (name, row) in rows {
        let _ = write!(out, "| `{name}` |");
        for (_, r) in row {
            let _ = write!(out, " {} |", cell(r));
        }
        out.push('\n');
    }
    out
}

const BEGIN: &str = "<!-- conformance:begin -->";
const END: &str = "<!-- conformance:end -->";

#[tokio::test]
async fn every_provider_passes_the_conformance_suite_and_the_readme_table_is_its_rendering() -> anyhow::Result<()> {
    let rows = futures::future::join_all(providers().into_iter().map(run_provider)).await;
    let table = render(&rows);
    let failures: Vec<String> = rows
        .iter()
        .flat_map(|(name, row)| {
            row.iter().filter_map(move |(f, r)| r.as_ref().err().map(|e| format!("{name} × {}: {e}", f.header())))
        })
        .collect();
    assert!(failures.is_empty(), "{} conformance failures:\n{}\n\n{table}", failures.len(), failures.join("\n"));

    let path = format!("{}/../README.md", env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(&path)?;
    let (head, rest) = readme.split_once(BEGIN).ok_or_else(|| anyhow::anyhow!("README has no {BEGIN}"))?;
    let (current, tail) = rest.split_once(END).ok_or_else(|| anyhow::anyhow!("README has no {END}"))?;
    if current.trim() == table.trim() {
        return Ok(());
    }
    if std::env::var("LLMR_UPDATE_README").is_ok_and(|v| v == "1") {
        std::fs::write(&path, format!("{head}{BEGIN}\n{table}{END}{tail}"))?;
        return Ok(());
    }
    anyhow::bail!(
        "README.md's providers × features table differs from what the suite found; rerun with \
         LLMR_UPDATE_README=1 to rewrite it, or paste this between the markers:\n\n{table}"
    )
}
