//! Gemini both ways: `generateContent` / `streamGenerateContent` served by a Gemini channel
//! (pass-through) and by OpenAI and Anthropic channels (translated), OpenAI and Anthropic clients
//! served by a Gemini channel (translated), Gemini-shaped errors and auth, and billing from
//! Gemini's `usageMetadata` (cached inside the prompt, thoughts beside the answer).

use std::time::Duration;

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, StreamOutcome, UsageSource};
use serde_json::{Value, json};
use testkit::fake_anthropic::FakeAnthropic;
use testkit::fake_gemini::{FakeGemini, GeminiUsage, Scenario};

use crate::helpers::{self, MODEL, TestApp, error_of, spawn};

const GEMINI: &str = "gemini-2.5-flash";
const CLAUDE: &str = "claude-sonnet-4-5";
const GEMINI_KEY: &str = "AIza-upstream-secret";

struct Env {
    app: TestApp,
    gemini: FakeGemini,
    claude: FakeAnthropic,
}

async fn add_channel(app: &TestApp, id: &str, provider: &str, base_url: String, model: &str) -> anyhow::Result<()> {
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.into(),
                name: id.into(),
                provider: provider.into(),
                base_url,
                api_key: Some(app.master_key.seal(GEMINI_KEY, id)),
                models: vec![model.into()],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    Ok(())
}

/// The usual test app (an OpenAI channel for [`MODEL`]) plus a Gemini channel for [`GEMINI`] and
/// an Anthropic channel for [`CLAUDE`].
async fn env() -> anyhow::Result<Env> {
    let app = spawn().await?;
    let gemini = FakeGemini::start().await?;
    let claude = FakeAnthropic::start().await?;
    add_channel(&app, "ch_gemini", "gemini", gemini.base_url(), GEMINI).await?;
    add_channel(&app, "ch_claude", "anthropic", claude.base_url(), CLAUDE).await?;
    let until = app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Env { app, gemini, claude })
}

fn contents(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

impl Env {
    async fn generate(&self, model: &str, action: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .app
            .http
            .post(self.app.url(&format!("/v1beta/models/{model}:{action}")))
            .header("x-goog-api-key", &self.app.key)
            .json(body)
            .send()
            .await?)
    }
}

/// The JSON payloads of a Gemini SSE body (CRLF or LF separated).
async fn gemini_chunks(resp: reqwest::Response) -> anyhow::Result<Vec<Value>> {
    let text = resp.text().await?.replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block.trim().strip_prefix("data: ").ok_or_else(|| anyhow::anyhow!("not an SSE event: {block}"))?;
        out.push(serde_json::from_str(data)?);
    }
    Ok(out)
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c.pointer("/candidates/0/content/parts").and_then(Value::as_array).cloned().unwrap_or_default())
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p.get("text").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_gemini_client_on_a_gemini_channel_passes_through_and_bills_cached_tokens_once() -> anyhow::Result<()> {
    let env = env().await?;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Say hello"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]});
    let resp = env.generate(GEMINI, "generateContent", &body).await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    assert_eq!(text_of(std::slice::from_ref(&v)), "Hello from Gemini.");
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 20);

    let sent = env.gemini.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, body, "the client's body goes upstream as it is");
    assert!(sent[0].path.ends_with(&format!("/models/{GEMINI}:generateContent")), "{}", sent[0].path);
    assert_eq!(sent[0].header("x-goog-api-key"), Some(GEMINI_KEY));

    let usage = env.app.wait_usage(1).await?;
    let u = &usage[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (15, 5, 12));
    assert_eq!((u.provider.as_str(), u.endpoint.as_str()), ("gemini", "generate_content"));
    assert_eq!(u.usage_source, UsageSource::Upstream);
    assert_eq!(u.raw_usage.as_ref().map(|r| r["promptTokenCount"].clone()), Some(json!(20)));
    Ok(())
}

#[tokio::test]
async fn a_gemini_stream_passes_through_ends_on_close_and_bills_thoughts_as_output() -> anyhow::Result<()> {
    let env = env().await?;
    env.gemini.set_usage(GeminiUsage { thoughts_token_count: 9, ..GeminiUsage::default() });
    let mut body = contents("Think, then say hello");
    body["generationConfig"] = json!({"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 512}});
    let resp = env
        .app
        .http
        .post(env.app.url(&format!("/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse&key={}", env.app.key)))
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let chunks = gemini_chunks(resp).await?;
    assert_eq!(text_of(&chunks), "Hello from Gemini.");
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0]["thought"], true);
    let last = chunks.last().cloned().unwrap_or_default();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(env.gemini.requests()[0].path.contains("alt=sse"));

    let u = env.app.wait_usage(1).await?[0].1.clone();
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    assert_eq!((u.input_tokens, u.cached_input_tokens), (15, 5));
    assert_eq!((u.output_tokens, u.reasoning_tokens), (12 + 9, 9), "thoughts are billed as output");
    let logs = env.app.request_logs(1).await?;
    let streamed = logs.iter().find(|l| l.streamed).ok_or_else(|| anyhow::anyhow!("no streamed request logged"))?;
    assert_eq!((streamed.status, streamed.error_class.as_deref()), (200, None));
    Ok(())
}

#[tokio::test]
async fn a_gemini_stream_without_alt_sse_is_one_json_array() -> anyhow::Result<()> {
    let env = env().await?;
    // Served by the OpenAI channel: translated chunks, framed as an array.
    let resp = env.generate(MODEL, "streamGenerateContent", &contents("hi")).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let chunks: Vec<Value> = resp.json().await?;
    assert_eq!(text_of(&chunks), "Hello, world!");
    let last = chunks.last().cloned().unwrap_or_default();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 25);
    Ok(())
}

#[tokio::test]
async fn a_gemini_client_on_openai_and_anthropic_channels_gets_gemini_answers() -> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.generate(MODEL, "generateContent", &contents("Say hello")).await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "Hello, world!");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");
    // OpenAI's 25 prompt tokens hold 5 cached ones: Gemini's shape counts them the same way.
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 25);
    assert_eq!(v["usageMetadata"]["cachedContentTokenCount"], 5);
    let sent = env.app.fake.requests();
    assert_eq!(sent[0].body["messages"], json!([{"role": "user", "content": "Say hello"}]));

    let resp = env.generate(CLAUDE, "streamGenerateContent?alt=sse", &contents("Say hello")).await?;
    assert_eq!(resp.status(), 200);
    let chunks = gemini_chunks(resp).await?;
    assert!(!text_of(&chunks).is_empty());
    let last = chunks.last().cloned().unwrap_or_default();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    // Anthropic: 20 uncached + 5 cache reads + 3 cache writes = 28 prompt tokens in Gemini terms.
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 28);
    assert_eq!(env.claude.requests()[0].body["max_tokens"], 4096);
    let usage = env.app.wait_usage(2).await?;
    assert_eq!(usage[1].1.provider, "anthropic");
    assert_eq!((usage[1].1.input_tokens, usage[1].1.cached_input_tokens, usage[1].1.cache_write_tokens), (20, 5, 3));
    Ok(())
}

#[tokio::test]
async fn an_openai_client_on_a_gemini_channel_gets_parallel_tool_calls_and_exact_usage() -> anyhow::Result<()> {
    let env = env().await?;
    let body = json!({"model": GEMINI, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather and time in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
        "max_tokens": 100, "temperature": 1.5, "stop": ["END"]});
    let resp = env.app.post("/v1/chat/completions", &body).await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(calls[1]["function"]["name"], "get_time");
    assert_ne!(calls[0]["id"], calls[1]["id"]);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(v["usage"]["prompt_tokens"], 20);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 5);

    let sent = &env.gemini.requests()[0].body;
    assert_eq!(sent["systemInstruction"], json!({"parts": [{"text": "Be brief."}]}));
    assert_eq!(sent["contents"][0]["parts"][1], json!({"inlineData": {"mimeType": "image/png", "data": "iVBO"}}));
    assert_eq!(sent["tools"][0]["functionDeclarations"][1]["name"], "get_time");
    assert_eq!(sent["generationConfig"], json!({"maxOutputTokens": 100, "temperature": 1.5, "stopSequences": ["END"]}));

    // The second turn: the tool results go back as function responses named after their calls.
    let mut next = body.clone();
    let messages = next["messages"].as_array_mut().map(std::mem::take).unwrap_or_default();
    let mut messages = messages;
    messages.push(v["choices"][0]["message"].clone());
    messages.push(json!({"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp\":21}"}));
    messages.push(json!({"role": "tool", "tool_call_id": calls[1]["id"], "content": "noon"}));
    next["messages"] = Value::Array(messages);
    let resp = env.app.post("/v1/chat/completions", &next).await?;
    assert_eq!(resp.status(), 200);
    let sent = &env.gemini.requests()[1].body;
    let turns = sent["contents"].as_array().cloned().unwrap_or_default();
    assert_eq!(turns[1]["role"], "model");
    assert_eq!(turns[2]["parts"][0]["functionResponse"]["name"], "get_weather");
    assert_eq!(turns[2]["parts"][0]["functionResponse"]["response"], json!({"temp": 21}));
    assert_eq!(turns[2]["parts"][1]["functionResponse"]["response"], json!({"result": "noon"}));

    let u = env.app.wait_usage(2).await?[0].1.clone();
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (15, 5, 12));
    Ok(())
}

#[tokio::test]
async fn an_anthropic_client_streams_from_a_gemini_channel_with_the_full_event_sequence() -> anyhow::Result<()> {
    let env = env().await?;
    let body = json!({"model": GEMINI, "max_tokens": 256, "stream": true,
        "messages": [{"role": "user", "content": "Say hello"}]});
    let resp = env
        .app
        .http
        .post(env.app.url("/v1/messages"))
        .header("x-api-key", &env.app.key)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let text = resp.text().await?;
    let names: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta") && names.contains(&"message_delta"));
    let delta = text
        .split("\n\n")
        .find(|b| b.starts_with("event: message_delta"))
        .and_then(|b| b.split_once("data: "))
        .map(|(_, d)| serde_json::from_str::<Value>(d))
        .transpose()?
        .unwrap_or_default();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(
        delta["usage"],
        json!({"input_tokens": 15, "output_tokens": 12,
        "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5})
    );
    Ok(())
}

#[tokio::test]
async fn a_prompt_gemini_blocks_is_a_content_filter_finish_and_logged_as_such() -> anyhow::Result<()> {
    let env = env().await?;
    env.gemini.set_canned_response(FakeGemini::blocked_prompt_response());
    let resp = env
        .app
        .post(
            "/v1/chat/completions",
            &json!({"model": GEMINI,
        "messages": [{"role": "user", "content": "something blocked"}]}),
        )
        .await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    let logs = env.app.request_logs(1).await?;
    assert_eq!(logs.last().and_then(|l| l.error_class.clone()).as_deref(), Some("content_filtered"));
    let u = env.app.wait_usage(1).await?[0].1.clone();
    assert_eq!(u.input_tokens, 8, "the blocked prompt is billed as Gemini reports it");
    Ok(())
}

#[tokio::test]
async fn gemini_errors_keep_gemini_shape_and_our_key_is_never_the_clients_fault() -> anyhow::Result<()> {
    let env = env().await?;
    // No key at all, and a wrong one.
    let resp = env
        .app
        .http
        .post(env.app.url(&format!("/v1beta/models/{GEMINI}:generateContent")))
        .json(&contents("hi"))
        .send()
        .await?;
    let (status, v) = error_of(resp).await?;
    assert_eq!((status, v["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    assert_eq!(v["error"]["code"], 401);
    let resp = env
        .app
        .http
        .post(env.app.url(&format!("/v1beta/models/{GEMINI}:generateContent?key=sk-wrong")))
        .json(&contents("hi"))
        .send()
        .await?;
    assert_eq!(resp.status(), 401);

    let (status, v) = error_of(env.generate(GEMINI, "generateContent", &json!({"contents": "hi"})).await?).await?;
    assert_eq!((status, v["error"]["status"].as_str()), (400, Some("INVALID_ARGUMENT")));
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("contents")), "{v}");
    let (status, _) = error_of(env.generate(GEMINI, "generateContent", &json!({})).await?).await?;
    assert_eq!(status, 400);
    let (status, v) = error_of(env.generate("no-such-model", "generateContent", &contents("hi")).await?).await?;
    assert_eq!((status, v["error"]["status"].as_str()), (404, Some("NOT_FOUND")));
    let (status, _) = error_of(env.generate(GEMINI, "embedContent", &contents("hi")).await?).await?;
    assert_eq!(status, 404);

    // The upstream refuses our key: a 502, never a 401 the client would blame on itself.
    env.gemini.set_scenario(Scenario::FailStatus { status: 401, retry_after: None });
    let (status, v) = error_of(env.generate(GEMINI, "generateContent", &contents("hi")).await?).await?;
    assert_eq!(status, 502);
    assert_eq!(v["error"]["status"], "INTERNAL");
    // Rate limited: the delay is passed on.
    env.gemini.set_scenario(Scenario::FailStatus { status: 429, retry_after: Some(7) });
    env.app.enable_key("ch_gemini").await?;
    let resp = env
        .app
        .post(
            "/v1/chat/completions",
            &json!({"model": GEMINI,
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("7"));
    let (_, v) = error_of(resp).await?;
    assert_eq!(v["error"]["code"], "upstream_overloaded");
    // A parameter Gemini cannot honour, asked by an OpenAI client.
    env.gemini.set_scenario(Scenario::Normal);
    env.app.enable_key("ch_gemini").await?;
    let (status, v) = error_of(
        env.app
            .post(
                "/v1/chat/completions",
                &json!({"model": GEMINI, "logprobs": true,
                "messages": [{"role": "user", "content": "hi"}]}),
            )
            .await?,
    )
    .await?;
    assert_eq!((status, v["error"]["param"].as_str()), (400, Some("logprobs")));
    assert_eq!(v["error"]["code"], "unsupported_parameter");
    Ok(())
}

#[tokio::test]
async fn gemini_mid_stream_failures_become_an_in_band_error_and_are_still_billed() -> anyhow::Result<()> {
    let env = env().await?;
    for (scenario, want) in [
        (Scenario::ErrorAfterChunks(1), "INTERNAL"),
        (Scenario::CloseAfterChunks(1), "INTERNAL"),
        (Scenario::InvalidJsonAfterChunks(1), "INTERNAL"),
    ] {
        env.gemini.set_scenario(scenario);
        let resp = env.generate(GEMINI, "streamGenerateContent?alt=sse", &contents("hi")).await?;
        assert_eq!(resp.status(), 200);
        let chunks = gemini_chunks(resp).await?;
        let last = chunks.last().cloned().unwrap_or_default();
        assert_eq!(last["error"]["status"], want, "{chunks:?}");
        assert!(chunks.iter().all(|c| c.pointer("/candidates/0/finishReason").is_none()));
    }
    // The same cut, seen by an OpenAI client of the Gemini channel.
    env.gemini.set_scenario(Scenario::CloseAfterChunks(1));
    let resp = env
        .app
        .post(
            "/v1/chat/completions",
            &json!({"model": GEMINI, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
    let payloads = helpers::sse_payloads(resp).await?;
    assert!(payloads.last().is_some_and(|p| p.contains("upstream_error")), "{payloads:?}");
    assert!(!payloads.iter().any(|p| p == "[DONE]"));
    let usage = env.app.wait_usage(4).await?;
    assert_eq!(usage.len(), 4);
    assert!(usage.iter().all(|(_, u)| u.stream_outcome == StreamOutcome::UpstreamError));
    Ok(())
}

#[tokio::test]
async fn count_tokens_and_model_listing_speak_gemini() -> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.generate(GEMINI, "countTokens", &contents("one two three four")).await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    assert!(v["totalTokens"].as_u64().is_some_and(|n| n >= 4), "{v}");
    let wrapped = json!({"generateContentRequest": contents("one two three four")});
    let w: Value = env.generate(GEMINI, "countTokens", &wrapped).await?.json().await?;
    assert_eq!(w["totalTokens"], v["totalTokens"]);

    let list: Value = env
        .app
        .http
        .get(env.app.url("/v1beta/models"))
        .header("x-goog-api-key", &env.app.key)
        .send()
        .await?
        .json()
        .await?;
    let names: Vec<&str> = list["models"].as_array().into_iter().flatten().filter_map(|m| m["name"].as_str()).collect();
    assert!(names.contains(&"models/gemini-2.5-flash"), "{names:?}");
    let one = env
        .app
        .http
        .get(env.app.url(&format!("/v1beta/models/{GEMINI}")))
        .header("x-goog-api-key", &env.app.key)
        .send()
        .await?;
    assert_eq!(one.status(), 200);
    // Gemini's `v1` paths, where the google-genai SDK goes when given a base URL.
    let v1 = env
        .app
        .http
        .post(env.app.url(&format!("/v1/models/{GEMINI}:countTokens")))
        .header("x-goog-api-key", &env.app.key)
        .json(&contents("one two"))
        .send()
        .await?;
    assert_eq!(v1.status(), 200);
    let counted: Value = v1.json().await?;
    assert!(counted["totalTokens"].as_u64().is_some_and(|n| n >= 2), "{counted}");
    let resp = env
        .app
        .http
        .post(env.app.url(&format!("/v1/models/{GEMINI}:generateContent")))
        .header("x-goog-api-key", &env.app.key)
        .json(&contents("hi"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let (status, v) =
        error_of(env.app.http.post(env.app.url("/v1/models/nope:generateContent")).json(&contents("hi")).send().await?)
            .await?;
    assert_eq!((status, v["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    // OpenAI's model retrieval on the same prefix.
    let one: Value = env
        .app
        .http
        .get(env.app.url(&format!("/v1/models/{MODEL}")))
        .bearer_auth(&env.app.key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!((one["id"].as_str(), one["object"].as_str()), (Some(MODEL), Some("model")));
    let missing = env.app.http.get(env.app.url("/v1/models/nope")).bearer_auth(&env.app.key).send().await?;
    assert_eq!(missing.status(), 404);
    assert_eq!(env.gemini.requests().len(), 1, "counting and listing never reach the upstream");
    Ok(())
}

/// Replaces the values that differ per run (generated call ids, `created`) with fixed markers.
fn normalise(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), x.as_str()) {
                    ("id" | "tool_call_id" | "tool_use_id", Some(s)) if s.starts_with("call_") => {
                        // `call_<random>_<n>`, then the thought signature it carries, if any.
                        let (id, signature) = s.split_once("__ts__").map_or((s, None), |(i, t)| (i, Some(t)));
                        let n = id.rsplit('_').next().unwrap_or_default();
                        let signature = signature.map(|t| format!("__ts__{t}")).unwrap_or_default();
                        *x = json!(format!("call_*_{n}{signature}"));
                    }
                    ("created", _) => *x = json!(0),
                    _ => normalise(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalise),
        _ => {}
    }
}

/// Gemini's documented function-calling request (system instruction, a call, its response, an
/// OpenAPI-style declaration) reaches OpenAI and Anthropic channels as their own requests.
#[tokio::test]
async fn a_recorded_gemini_request_translates_to_the_openai_and_anthropic_fixtures() -> anyhow::Result<()> {
    let env = env().await?;
    let req = helpers::fixture("gemini", "generate_content_request.json")?;
    assert_eq!(env.generate(MODEL, "generateContent", &req).await?.status(), 200);
    assert_eq!(env.generate(CLAUDE, "generateContent", &req).await?.status(), 200);
    let mut to_openai = env.app.fake.requests()[0].body.clone();
    let mut to_anthropic = env.claude.requests()[0].body.clone();
    normalise(&mut to_openai);
    normalise(&mut to_anthropic);
    helpers::snapshot("gemini", "generate_content_request.to_openai.jsonl", &[to_openai])?;
    helpers::snapshot("gemini", "generate_content_request.to_anthropic.jsonl", &[to_anthropic])
}

/// The OpenAI request with a system prompt, an image, parallel tool calls and their results
/// (shared with the Anthropic fixtures) reaches a Gemini channel as Gemini's request.
#[tokio::test]
async fn a_recorded_openai_request_translates_to_the_gemini_fixture() -> anyhow::Result<()> {
    let env = env().await?;
    let mut req = helpers::fixture("anthropic", "openai_request_tools_image.json")?;
    req["model"] = json!(GEMINI);
    assert_eq!(env.app.post("/v1/chat/completions", &req).await?.status(), 200);
    let sent = env.gemini.requests()[0].body.clone();
    helpers::snapshot("gemini", "openai_request_tools_image.to_gemini.jsonl", &[sent])
}

/// A recorded Gemini answer with a thought and two function calls, and its usage with cached and
/// thought tokens, as an OpenAI and an Anthropic client see it, and as billed.
#[tokio::test]
async fn a_recorded_gemini_answer_translates_to_the_openai_and_anthropic_fixtures() -> anyhow::Result<()> {
    let env = env().await?;
    env.gemini.set_canned_response(helpers::fixture("gemini", "response_function_call.json")?);
    let body = json!({"model": GEMINI, "messages": [{"role": "user", "content": "Weather in Paris and London?"}]});
    let mut openai: Value = env.app.post("/v1/chat/completions", &body).await?.json().await?;
    normalise(&mut openai);
    let mut anthropic: Value = env
        .app
        .http
        .post(env.app.url("/v1/messages"))
        .header("x-api-key", &env.app.key)
        .json(&json!({"model": GEMINI, "max_tokens": 100,
            "messages": [{"role": "user", "content": "Weather in Paris and London?"}]}))
        .send()
        .await?
        .json()
        .await?;
    normalise(&mut anthropic);
    helpers::snapshot("gemini", "response_function_call.to_openai.jsonl", &[openai])?;
    helpers::snapshot("gemini", "response_function_call.to_anthropic.jsonl", &[anthropic])?;
    let usage = env.app.wait_usage(2).await?;
    for (_, u) in &usage {
        // 212 prompt tokens of which 128 cached; output = 34 candidates + 55 thoughts.
        assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens), (84, 128, 89, 55));
        assert_eq!(u.model_served, "gemini-2.5-flash");
    }
    Ok(())
}

/// A recorded Gemini text stream (cumulative usage, thoughts counted only in the last chunk) as
/// an Anthropic client's event sequence and an OpenAI client's chunks.
#[tokio::test]
async fn a_recorded_gemini_stream_translates_to_the_anthropic_and_openai_snapshots() -> anyhow::Result<()> {
    let env = env().await?;
    env.gemini.set_canned_stream(helpers::jsonl("gemini", "stream_text.jsonl")?);
    let text = env
        .app
        .http
        .post(env.app.url("/v1/messages"))
        .header("x-api-key", &env.app.key)
        .json(&json!({"model": GEMINI, "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "Why is the sky blue?"}]}))
        .send()
        .await?
        .text()
        .await?;
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (head, data) = block.split_once("\ndata: ").ok_or_else(|| anyhow::anyhow!("bad event {block}"))?;
        events.push(json!({"event": head.trim_start_matches("event: "), "data": serde_json::from_str::<Value>(data)?}));
    }
    helpers::snapshot("gemini", "stream_text.to_anthropic.jsonl", &events)?;

    let req = json!({"model": GEMINI, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    let mut chunks = Vec::new();
    for p in helpers::sse_payloads(env.app.post("/v1/chat/completions", &req).await?).await? {
        let mut v: Value = if p == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(&p)? };
        normalise(&mut v);
        chunks.push(v);
    }
    helpers::snapshot("gemini", "stream_text.to_openai.jsonl", &chunks)?;
    let usage = env.app.wait_usage(2).await?;
    for (_, u) in &usage {
        assert_eq!((u.input_tokens, u.output_tokens, u.reasoning_tokens), (9, 28, 17));
        assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    }
    Ok(())
}

#[tokio::test]
async fn a_gemini_stream_that_stalls_after_its_finish_reason_is_complete_not_failed() -> anyhow::Result<()> {
    let env = env().await?;
    // Every chunk, the last with its finish reason, then silence instead of a close.
    env.gemini.set_scenario(Scenario::StallAfterChunks(100));
    let resp = env.generate(GEMINI, "streamGenerateContent?alt=sse", &contents("hi")).await?;
    let chunks = gemini_chunks(resp).await?;
    assert_eq!(text_of(&chunks), "Hello from Gemini.");
    let last = chunks.last().cloned().unwrap_or_default();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP", "{chunks:?}");
    let u = env.app.wait_usage(1).await?[0].1.clone();
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    assert_eq!(u.output_tokens, 12);
    Ok(())
}

#[tokio::test]
async fn openai_embeddings_on_a_gemini_channel_are_batch_embeddings_billed_by_estimate() -> anyhow::Result<()> {
    let env = env().await?;
    let resp = env
        .app
        .post("/v1/embeddings", &json!({"model": GEMINI, "input": ["hello world", "bye"], "dimensions": 4}))
        .await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["data"][0]["embedding"].as_array().map(Vec::len), Some(4));
    assert!(v["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0), "{v}");
    let sent = env.gemini.requests();
    assert!(sent[0].path.ends_with(&format!("/models/{GEMINI}:batchEmbedContents")), "{}", sent[0].path);
    assert_eq!(sent[0].body["requests"][0]["content"]["parts"][0]["text"], "hello world");
    assert_eq!(sent[0].body["requests"][0]["outputDimensionality"], 4);

    // What the openai SDK asks for by default: base64 of little-endian f32s.
    let b64: Value = env
        .app
        .post("/v1/embeddings", &json!({"model": GEMINI, "input": "hello world", "encoding_format": "base64"}))
        .await?
        .json()
        .await?;
    let text = b64["data"][0]["embedding"].as_str().unwrap_or_default();
    assert_eq!(text.len() % 4, 0, "{b64}");
    assert!(!text.is_empty());

    let u = env.app.wait_usage(2).await?[0].1.clone();
    assert_eq!((u.endpoint.as_str(), u.usage_source), ("embeddings", UsageSource::Estimated));
    assert_eq!(u.input_tokens, v["usage"]["prompt_tokens"].as_u64().unwrap_or_default());

    let (status, e) =
        error_of(env.app.post("/v1/embeddings", &json!({"model": GEMINI, "input": [[1, 2]]})).await?).await?;
    assert_eq!((status, e["error"]["param"].as_str()), (400, Some("input")));
    let (status, e) = error_of(env.app.post("/v1/embeddings", &json!({"model": CLAUDE, "input": "x"})).await?).await?;
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("unsupported_parameter")));
    Ok(())
}

#[tokio::test]
async fn channels_given_base_urls_without_the_version_segment_reach_the_vendor_endpoints() -> anyhow::Result<()> {
    // The Anthropic and Gemini SDKs (and New API) write base URLs without `/v1` / `/v1beta`; the
    // fakes serve only the versioned paths, so a missing segment would be a 404 here.
    let app = spawn().await?;
    let gemini = FakeGemini::start().await?;
    let claude = FakeAnthropic::start().await?;
    let openai = testkit::fake_openai::FakeOpenAi::start().await?;
    let host_only = |url: String, version: &str| url.trim_end_matches(version).to_owned() + "/";
    add_channel(&app, "ch_gemini_bare", "gemini", host_only(gemini.base_url(), "/v1beta"), GEMINI).await?;
    add_channel(&app, "ch_claude_bare", "anthropic", host_only(claude.base_url(), "/v1"), CLAUDE).await?;
    add_channel(&app, "ch_vllm_bare", "vllm", host_only(openai.base_url(), "/v1"), "local-llama").await?;
    let until = app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for model in [GEMINI, CLAUDE, "local-llama"] {
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        let resp = app.post("/v1/chat/completions", &body).await?;
        assert_eq!(resp.status(), 200, "{model}: {}", resp.text().await?);
    }
    let resp = app
        .http
        .post(app.url(&format!("/v1beta/models/{GEMINI}:generateContent")))
        .header("x-goog-api-key", &app.key)
        .json(&contents("hi"))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(gemini.requests().len(), 2);
    assert_eq!(claude.requests().len(), 1);
    Ok(())
}
