//! Anthropic both ways: OpenAI-shaped requests served by an Anthropic channel (translated),
//! `/v1/messages` served by an Anthropic channel (pass-through) and by an OpenAI channel
//! (translated), `count_tokens`, Anthropic-shaped errors, upstream failures and billing from the
//! upstream's own usage object. Translations are compared as parsed JSON against fixtures in
//! `tests/fixtures/anthropic/`.

use std::time::Duration;

use futures::StreamExt;
use schemas::{
    AppliedPrice, ChannelAdded, ChannelUpdated, EventBody, GLOBAL_TENANT, PricePublished, StreamOutcome, UsageSource,
};
use serde_json::{Value, json};
use testkit::fake_anthropic::{AnthropicUsage, FakeAnthropic, Scenario};

use crate::helpers::{self, MODEL, TestApp, UPSTREAM_KEY, error_of, spawn, sse_payloads};

const CLAUDE: &str = "claude-sonnet-4-5";
const ANTHROPIC_KEY: &str = "sk-ant-upstream-secret";

struct Env {
    app: TestApp,
    claude: FakeAnthropic,
    price: AppliedPrice,
}

/// The usual test app plus an Anthropic channel serving [`CLAUDE`], priced with a cache-write rate.
async fn env() -> anyhow::Result<Env> {
    let app = spawn().await?;
    let claude = FakeAnthropic::start().await?;
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_claude".into(),
                name: "claude".into(),
                provider: "anthropic".into(),
                base_url: claude.base_url(),
                api_key: Some(app.master_key.seal(ANTHROPIC_KEY, "ch_claude")),
                models: vec![CLAUDE.into()],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    // Claude Sonnet 4.5 list prices per million tokens: $3 in, $15 out, $0.30 cache read, $3.75 write.
    let published = PricePublished {
        model: CLAUDE.into(),
        channel_id: None,
        currency: "USD".into(),
        input_per_mtok_nanos: 3_000_000_000,
        output_per_mtok_nanos: 15_000_000_000,
        cached_input_per_mtok_nanos: Some(300_000_000),
        cache_write_per_mtok_nanos: Some(3_750_000_000),
    };
    let ev = helpers::control(GLOBAL_TENANT, EventBody::PricePublished(published.clone()));
    app.log.append_acked(&ev).await?;
    let price = AppliedPrice::from((ev.id.to_string().as_str(), &published));
    // Wait until the gateway has folded in the channel and the price (a fixed sleep is flaky
    // when the machine is busy).
    let until = app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(Env { app, claude, price })
}

fn fixture(name: &str) -> anyhow::Result<Value> {
    helpers::fixture("anthropic", name)
}

impl Env {
    async fn messages(&self, body: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .app
            .http
            .post(self.app.url("/v1/messages"))
            .header("x-api-key", &self.app.key)
            .header("anthropic-version", "2023-06-01")
            .json(body)
            .send()
            .await?)
    }
}

/// An SSE body as (event name, data) pairs; OpenAI's `data:`-only events get the name "".
async fn events(resp: reqwest::Response) -> anyhow::Result<Vec<(String, Value)>> {
    let text = resp.text().await?;
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        let v = if data == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(&data)? };
        out.push((name, v));
    }
    Ok(out)
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

fn anthropic_chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "max_tokens": 256, "stream": stream,
        "messages": [{"role": "user", "content": "Say hello"}]})
}

#[tokio::test]
async fn an_openai_request_to_an_anthropic_channel_is_translated_and_billed_without_double_counting()
-> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.app.post("/v1/chat/completions", &chat(CLAUDE, false)).await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world!");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // OpenAI counts cache reads and writes inside prompt_tokens: 20 + 5 + 3.
    assert_eq!(body["usage"]["prompt_tokens"], 28);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
    assert_eq!(body["usage"]["completion_tokens"], 12);

    let sent = env.claude.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/messages");
    assert_eq!(sent[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(sent[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(sent[0].header("authorization"), None);
    assert_eq!(
        sent[0].body,
        json!({"model": CLAUDE, "max_tokens": 4096, "messages": [{"role": "user",
            "content": [{"type": "text", "text": "Say hello"}]}]})
    );

    let usage = env.app.usage().await?;
    assert_eq!(usage.len(), 1);
    let u = &usage[0].1;
    assert_eq!(
        (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens),
        (20, 5, 3, 12),
        "Anthropic's input_tokens already excludes cache reads and writes"
    );
    assert_eq!((u.provider.as_str(), u.channel_id.as_str()), ("anthropic", "ch_claude"));
    assert_eq!(u.usage_source, UsageSource::Upstream);
    assert_eq!(u.raw_usage.as_ref().map(|r| r["cache_creation_input_tokens"].clone()), Some(json!(3)));
    assert_eq!(u.cost_nanos, env.price.cost_nanos(20, 5, 3, 12));
    Ok(())
}

#[tokio::test]
async fn an_openai_request_with_system_image_parallel_tool_calls_and_results_translates_to_the_fixture()
-> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.app.post("/v1/chat/completions", &fixture("openai_request_tools_image.json")?).await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    // The fake answers a request with tools by calling two of them (parallel tool use).
    let calls = body["choices"][0]["message"]["tool_calls"].as_array().cloned().unwrap_or_default();
    assert_eq!(calls.len(), 2, "{body}");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(calls[1]["function"]["arguments"].as_str().unwrap_or(""))?,
        json!({"location": "City 1"})
    );
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(env.claude.requests()[0].body, fixture("openai_request_tools_image.to_anthropic.json")?);
    Ok(())
}

#[tokio::test]
async fn an_anthropic_answer_with_thinking_and_tool_use_translates_to_the_openai_fixture() -> anyhow::Result<()> {
    let env = env().await?;
    env.claude.set_canned_response(fixture("response_tool_use.json")?);
    let mut body: Value = env.app.post("/v1/chat/completions", &chat(CLAUDE, false)).await?.json().await?;
    assert!(body["created"].as_i64().is_some_and(|c| c > 1_700_000_000));
    if let Some(o) = body.as_object_mut() {
        o.remove("created");
    }
    assert_eq!(body, fixture("response_tool_use.to_openai.json")?);
    let u = &env.app.usage().await?[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens), (2095, 0, 2051, 503));
    Ok(())
}

#[tokio::test]
async fn a_streamed_openai_request_to_an_anthropic_channel_gets_openai_chunks_and_cumulative_usage_is_assigned()
-> anyhow::Result<()> {
    let env = env().await?;
    let mut req = chat(CLAUDE, true);
    req["stream_options"] = json!({"include_usage": true});
    let resp = env.app.post("/v1/chat/completions", &req).await?;
    assert_eq!(resp.status(), 200);
    let payloads = sse_payloads(resp).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p)).collect::<Result<_, _>>()?;
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello, world!");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let last = chunks.last().cloned().unwrap_or_default();
    assert_eq!(last["choices"], json!([]));
    // message_start said 1 output token, message_delta says 12 in total: 12, not 13.
    assert_eq!(last["usage"]["completion_tokens"], 12);
    assert_eq!(last["usage"]["prompt_tokens"], 28);
    assert_eq!(env.claude.requests()[0].body["stream"], true);
    let u = &env.app.usage().await?[0].1;
    assert!(u.streamed);
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens), (20, 5, 3, 12));
    assert_eq!(u.cost_nanos, env.price.cost_nanos(20, 5, 3, 12));

    // Without include_usage the client sees no usage chunk, and is still billed.
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &chat(CLAUDE, true)).await?).await?;
    assert!(payloads.iter().filter(|p| *p != "[DONE]").all(|p| !p.contains("\"usage\"")));
    assert_eq!(env.app.usage().await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn streamed_parallel_tool_calls_from_anthropic_arrive_as_openai_tool_call_deltas_by_index() -> anyhow::Result<()>
{
    let env = env().await?;
    let mut req = fixture("openai_request_tools_image.json")?;
    req["stream"] = json!(true);
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &req).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let mut args = [String::new(), String::new()];
    let mut ids = [String::new(), String::new()];
    let mut finish = None;
    for p in payloads.iter().filter(|p| *p != "[DONE]") {
        let c: Value = serde_json::from_str(p)?;
        for tc in c["choices"][0]["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let i = usize::try_from(tc["index"].as_u64().unwrap_or(9)).unwrap_or(9);
            if let Some(id) = tc["id"].as_str() {
                ids[i] = id.to_owned();
                assert_eq!(tc["function"]["name"], "get_weather");
            }
            args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
        if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_owned());
        }
    }
    assert_eq!(ids, ["toolu_fake0".to_owned(), "toolu_fake1".to_owned()]);
    assert_eq!(serde_json::from_str::<Value>(&args[0])?, json!({"location": "City 0"}));
    assert_eq!(serde_json::from_str::<Value>(&args[1])?, json!({"location": "City 1"}));
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    Ok(())
}

#[tokio::test]
async fn reasoning_effort_becomes_extended_thinking_and_thinking_comes_back_as_reasoning_content() -> anyhow::Result<()>
{
    let env = env().await?;
    let mut req = chat(CLAUDE, false);
    req["reasoning_effort"] = json!("low");
    let body: Value = env.app.post("/v1/chat/completions", &req).await?.json().await?;
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], "Let me think about it.");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world!");
    let sent = &env.claude.requests()[0].body;
    assert_eq!(sent["thinking"], json!({"type": "enabled", "budget_tokens": 1024}));
    assert!(sent["max_tokens"].as_u64().unwrap_or(0) > 1024);
    Ok(())
}

#[tokio::test]
async fn only_the_anthropic_beta_values_a_channel_allows_reach_the_shared_upstream() -> anyhow::Result<()> {
    let env = env().await?;
    let body = json!({"model": CLAUDE, "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]});
    let send = || async {
        let resp = env
            .app
            .http
            .post(env.app.url("/v1/messages"))
            .header("x-api-key", &env.app.key)
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "a-premium-beta-2025-01-01, prompt-caching-2024-07-31")
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(resp.status() == 200, "{}", resp.status());
        let sent = env.claude.requests();
        Ok(sent.last().and_then(|r| r.header("anthropic-beta").map(str::to_owned)))
    };
    // By default a channel allows no beta: the upstream account is shared by every tenant.
    assert_eq!(send().await?, None);
    let update = ChannelUpdated {
        channel_id: "ch_claude".into(),
        anthropic_beta: Some(vec!["prompt-caching-2024-07-31".into()]),
        ..ChannelUpdated::default()
    };
    env.app.log.append_acked(&helpers::control(GLOBAL_TENANT, EventBody::ChannelUpdated(update))).await?;
    let until = env.app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while env.app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(send().await?.as_deref(), Some("prompt-caching-2024-07-31"));
    Ok(())
}

#[tokio::test]
async fn a_request_that_cannot_be_translated_gets_a_400_that_does_not_echo_a_long_value() -> anyhow::Result<()> {
    // The typed parse before a translation quotes the offending value in its message; the
    // answer must stay bounded however long that value is.
    let env = env().await?;
    let long = "r".repeat(64 * 1024);
    for req in [
        json!({"model": CLAUDE, "messages": [{"role": long, "content": "hi"}]}),
        json!({"model": CLAUDE, "messages": [{"role": "user", "content": "hi"}], "stop": {"k": long}}),
    ] {
        let resp = env.app.post("/v1/chat/completions", &req).await?;
        assert_eq!(resp.status(), 400);
        let text = resp.text().await?;
        assert!(text.len() <= 2048, "a {}-byte error body", text.len());
        assert!(!text.contains(&"r".repeat(1024)), "the value is echoed");
    }
    assert!(env.claude.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn parameters_an_anthropic_channel_cannot_honour_are_refused_by_name() -> anyhow::Result<()> {
    let env = env().await?;
    for (field, value) in [("logprobs", json!(true)), ("n", json!(2)), ("frequency_penalty", json!(0.5))] {
        let mut req = chat(CLAUDE, false);
        req[field] = value;
        let (status, body) = error_of(env.app.post("/v1/chat/completions", &req).await?).await?;
        assert_eq!(status, 400, "{field}: {body}");
        assert_eq!(body["error"]["code"], "unsupported_parameter", "{field}");
        assert_eq!(body["error"]["param"], field, "{field}");
    }
    let mut json_and_tools = fixture("openai_request_tools_image.json")?;
    json_and_tools["response_format"] = json!({"type": "json_object"});
    let (status, body) = error_of(env.app.post("/v1/chat/completions", &json_and_tools).await?).await?;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("response_format")), "{body}");
    let (status, body) =
        error_of(env.app.post("/v1/embeddings", &json!({"model": CLAUDE, "input": "x"})).await?).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("unsupported_parameter")));
    assert!(env.claude.requests().is_empty());
    assert!(env.app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn messages_to_an_anthropic_channel_pass_through_and_are_billed_from_anthropic_usage() -> anyhow::Result<()> {
    let env = env().await?;
    let req = anthropic_chat(CLAUDE, false);
    let resp = env.messages(&req).await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello, world!");
    assert_eq!(body["usage"]["cache_read_input_tokens"], 5);
    let sent = env.claude.requests();
    assert_eq!(sent[0].body, req, "the client's body goes upstream unchanged");
    assert_eq!(sent[0].header("x-api-key"), Some(ANTHROPIC_KEY));
    let u = &env.app.usage().await?[0].1;
    assert_eq!(u.endpoint, "messages");
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens), (20, 5, 3, 12));
    assert_eq!(u.cost_nanos, env.price.cost_nanos(20, 5, 3, 12));

    // A Bearer key works as well as x-api-key, and metadata.user_id is the billed user.
    let mut req = anthropic_chat(CLAUDE, false);
    req["metadata"] = json!({"user_id": "end-user-7"});
    let resp = env.app.post("/v1/messages", &req).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(env.app.usage().await?[1].1.user.as_deref(), Some("end-user-7"));
    Ok(())
}

#[tokio::test]
async fn streamed_messages_pass_through_with_the_full_event_sequence_and_bill_the_cumulative_usage()
-> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.messages(&anthropic_chat(CLAUDE, true)).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("text/event-stream"));
    let evs = events(resp).await?;
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(evs.iter().all(|(n, v)| v["type"] == n.as_str()));
    let usage = env.app.usage().await?;
    assert_eq!(usage.len(), 1);
    let u = &usage[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens), (20, 5, 3, 12));
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    Ok(())
}

#[tokio::test]
async fn messages_to_an_openai_channel_are_translated_both_ways() -> anyhow::Result<()> {
    let env = env().await?;
    let resp = env.messages(&fixture("messages_request_tool_result.json")?).await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(env.app.fake.requests()[0].body, fixture("messages_request_tool_result.to_openai.json")?);
    assert_eq!(env.app.fake.requests()[0].authorization(), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["content"], json!([{"type": "text", "text": "Hello, world!"}]));
    assert_eq!(body["stop_reason"], "end_turn");
    // OpenAI's 25 prompt tokens include 5 cached: Anthropic's shape reports them apart.
    assert_eq!(
        body["usage"],
        json!({"input_tokens": 20, "output_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5})
    );
    let u = &env.app.usage().await?[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (20, 5, 12));
    assert_eq!(u.provider, "openai");
    Ok(())
}

#[tokio::test]
async fn streamed_messages_from_an_openai_channel_get_anthropics_event_sequence() -> anyhow::Result<()> {
    let env = env().await?;
    let evs = events(env.messages(&anthropic_chat(MODEL, true)).await?).await?;
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let text: String = evs.iter().filter_map(|(_, v)| v["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello, world!");
    let delta = &evs[8].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["usage"]["output_tokens"], 12);
    assert_eq!(delta["usage"]["input_tokens"], 20);
    assert_eq!(delta["usage"]["cache_read_input_tokens"], 5);
    assert_eq!(env.app.fake.requests()[0].body["stream_options"], json!({"include_usage": true}));
    let u = &env.app.usage().await?[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens, u.streamed), (20, 5, 12, true));
    Ok(())
}

#[tokio::test]
async fn messages_errors_are_in_anthropics_shape() -> anyhow::Result<()> {
    let env = env().await?;
    let url = env.app.url("/v1/messages");
    let http = &env.app.http;
    let body = anthropic_chat(CLAUDE, false).to_string();
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        ("no key", http.post(&url).body(body.clone()), 401, "authentication_error"),
        (
            "bad x-api-key",
            http.post(&url).header("x-api-key", "sk-nope").body(body.clone()),
            401,
            "authentication_error",
        ),
        (
            "unknown model",
            http.post(&url).header("x-api-key", &env.app.key).body(anthropic_chat("claude-nope", false).to_string()),
            404,
            "not_found_error",
        ),
        (
            "bad json",
            http.post(&url).header("x-api-key", &env.app.key).body("{\"model\":"),
            400,
            "invalid_request_error",
        ),
        (
            "too large",
            http.post(&url).header("x-api-key", &env.app.key).body(format!(
                r#"{{"model":"{CLAUDE}","max_tokens":1,"messages":[{{"role":"user","content":"{}"}}]}}"#,
                "a".repeat(2 << 20)
            )),
            413,
            "request_too_large",
        ),
        (
            "unknown path",
            http.post(format!("{url}/batches")).header("x-api-key", &env.app.key).body(body.clone()),
            404,
            "not_found_error",
        ),
    ];
    for (name, req, status, kind) in cases {
        let (got, body) = error_of(req.send().await?).await?;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["type"], "error", "{name}: {body}");
        assert_eq!(body["error"]["type"], kind, "{name}: {body}");
        assert!(body["error"]["message"].is_string(), "{name}: {body}");
    }
    assert!(env.claude.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn count_tokens_is_an_estimate_that_grows_with_the_prompt() -> anyhow::Result<()> {
    let env = env().await?;
    let count = |text: &str| {
        let body = json!({"model": CLAUDE, "system": "Be brief.", "messages": [{"role": "user", "content": text}]});
        let req =
            env.app.http.post(env.app.url("/v1/messages/count_tokens")).header("x-api-key", &env.app.key).json(&body);
        async move {
            let v: Value = req.send().await?.json().await?;
            anyhow::Ok(v["input_tokens"].as_u64().unwrap_or(0))
        }
    };
    let short = count("Hello").await?;
    let long = count(&"Hello world. ".repeat(50)).await?;
    assert!(short > 0 && long > short + 50, "{short} {long}");
    assert!(env.claude.requests().is_empty());
    assert!(env.app.usage().await?.is_empty(), "counting is not billed");
    Ok(())
}

#[tokio::test]
async fn anthropic_upstream_failures_map_to_stable_classes_in_both_protocols_never_401() -> anyhow::Result<()> {
    let env = env().await?;
    for (scenario, status, openai_code, anthropic_kind) in [
        (Scenario::FailStatus { status: 401, retry_after: None }, 502, "upstream_error", "api_error"),
        (Scenario::FailStatus { status: 429, retry_after: Some(7) }, 503, "upstream_overloaded", "overloaded_error"),
        (Scenario::FailStatus { status: 529, retry_after: None }, 503, "upstream_overloaded", "overloaded_error"),
        (Scenario::FailStatus { status: 500, retry_after: None }, 502, "upstream_error", "api_error"),
        (Scenario::Hang, 504, "upstream_timeout", "timeout_error"),
    ] {
        env.claude.set_scenario(scenario.clone());
        // A 401 disables the key and a 429 rests it: each request here starts with it in rotation.
        env.app.enable_key("ch_claude").await?;
        let resp = env.app.post("/v1/chat/completions", &chat(CLAUDE, false)).await?;
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (got, body) = error_of(resp).await?;
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(openai_code)), "{scenario:?}: {body}");
        if scenario == (Scenario::FailStatus { status: 429, retry_after: Some(7) }) {
            assert_eq!(retry_after.as_deref(), Some("7"));
        }
        env.app.enable_key("ch_claude").await?;
        let (got, body) = error_of(env.messages(&anthropic_chat(CLAUDE, true)).await?).await?;
        assert_eq!((got, body["error"]["type"].as_str()), (status, Some(anthropic_kind)), "{scenario:?}: {body}");
        assert!(!body.to_string().contains(ANTHROPIC_KEY) && !body.to_string().contains("127.0.0.1"));
    }
    env.claude.set_scenario(Scenario::FailStatus { status: 400, retry_after: None });
    env.app.enable_key("ch_claude").await?;
    let (got, body) = error_of(env.messages(&anthropic_chat(CLAUDE, false)).await?).await?;
    assert_eq!((got, body["error"]["type"].as_str()), (400, Some("invalid_request_error")));
    assert_eq!(body["error"]["message"], "fake upstream status 400");
    assert!(env.app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_mid_stream_anthropic_error_is_one_in_band_error_in_the_clients_protocol_and_is_billed() -> anyhow::Result<()>
{
    let env = env().await?;
    env.claude.set_scenario(Scenario::ErrorAfterChunks(2));
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &chat(CLAUDE, true)).await?).await?;
    assert!(!payloads.iter().any(|p| p == "[DONE]"));
    let err: Value = serde_json::from_str(payloads.last().map(String::as_str).unwrap_or("{}"))?;
    assert_eq!(err["error"]["code"], "upstream_overloaded");
    // The relay hands the class itself to the pipeline: the attempt is logged as overloaded.
    let logs = env.app.request_logs(1).await?;
    let classes: Vec<&str> = logs.iter().flat_map(|l| l.attempt_log.iter().map(|a| a.class.as_str())).collect();
    assert_eq!(classes, ["overloaded"]);

    let evs = events(env.messages(&anthropic_chat(CLAUDE, true)).await?).await?;
    let (name, last) = evs.last().cloned().unwrap_or_default();
    assert_eq!(name, "error");
    assert_eq!(last["type"], "error");
    // The fake fails with `overloaded_error`: the class survives, the upstream's text does not.
    assert_eq!(last["error"]["type"], "overloaded_error");
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"));

    env.claude.set_scenario(Scenario::CloseAfterChunks(1));
    let evs = events(env.messages(&anthropic_chat(CLAUDE, true)).await?).await?;
    assert_eq!(evs.last().map(|(n, _)| n.as_str()), Some("error"));

    let usage = env.app.usage().await?;
    assert_eq!(usage.len(), 3);
    assert!(usage.iter().all(|(_, u)| u.stream_outcome == StreamOutcome::UpstreamError));
    // message_start carried the input counts; they are billed even though the stream failed.
    assert!(usage.iter().all(|(_, u)| u.input_tokens == 20 && u.usage_source == UsageSource::Upstream));
    Ok(())
}

#[tokio::test]
async fn a_client_that_leaves_an_anthropic_stream_is_billed_as_client_disconnected() -> anyhow::Result<()> {
    let env = env().await?;
    env.claude.set_scenario(Scenario::SlowChunks(Duration::from_millis(80)));
    env.claude.set_pieces(&["a", "b", "c", "d", "e", "f"]);
    let resp = env.messages(&anthropic_chat(CLAUDE, true)).await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    assert!(matches!(body.next().await, Some(Ok(_))));
    drop(body);
    let usage = env.app.wait_usage(1).await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::ClientDisconnected);
    // Drained to message_delta: the final cumulative count.
    assert_eq!(usage[0].1.output_tokens, 12);
    Ok(())
}

#[tokio::test]
async fn an_anthropic_stream_without_usage_is_estimated() -> anyhow::Result<()> {
    let env = env().await?;
    env.claude.set_scenario(Scenario::NoUsage);
    env.claude.set_usage(AnthropicUsage::default());
    let evs = events(env.messages(&anthropic_chat(CLAUDE, true)).await?).await?;
    assert_eq!(evs.last().map(|(n, _)| n.as_str()), Some("message_stop"));
    let u = &env.app.usage().await?[0].1;
    assert_eq!(u.usage_source, UsageSource::Estimated);
    assert!(u.input_tokens > 0 && u.output_tokens > 0);
    Ok(())
}

#[tokio::test]
async fn messages_on_an_openai_channel_map_its_failures_to_anthropics_shape() -> anyhow::Result<()> {
    use testkit::fake_openai::Scenario as OpenAiScenario;
    let env = env().await?;
    for (scenario, status, kind) in [
        (OpenAiScenario::FailStatus { status: 401, retry_after: None }, 502, "api_error"),
        (OpenAiScenario::FailStatus { status: 429, retry_after: Some(3) }, 503, "overloaded_error"),
        (OpenAiScenario::FailStatus { status: 500, retry_after: None }, 502, "api_error"),
        (OpenAiScenario::FailStatus { status: 400, retry_after: None }, 400, "invalid_request_error"),
        (OpenAiScenario::Hang, 504, "timeout_error"),
    ] {
        env.app.fake.set_scenario(scenario.clone());
        env.app.enable_key("ch_fake").await?;
        let (got, body) = error_of(env.messages(&anthropic_chat(MODEL, false)).await?).await?;
        assert_eq!((got, body["error"]["type"].as_str()), (status, Some(kind)), "{scenario:?}: {body}");
        assert_eq!(body["type"], "error");
        assert!(!body.to_string().contains(UPSTREAM_KEY));
    }
    env.app.fake.set_scenario(OpenAiScenario::ErrorAfterChunks(2));
    env.app.enable_key("ch_fake").await?;
    let evs = events(env.messages(&anthropic_chat(MODEL, true)).await?).await?;
    assert_eq!(evs.last().map(|(n, _)| n.as_str()), Some("error"), "{evs:?}");
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"));
    let text: String = evs.iter().filter_map(|(_, v)| v["delta"]["text"].as_str()).collect();
    assert_eq!(text, "Hello,");
    let usage = env.app.usage().await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::UpstreamError);
    Ok(())
}

#[tokio::test]
async fn streamed_thinking_from_anthropic_arrives_as_reasoning_content_chunks() -> anyhow::Result<()> {
    let env = env().await?;
    let mut req = chat(CLAUDE, true);
    req["reasoning_effort"] = json!("medium");
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &req).await?).await?;
    let chunks: Vec<Value> =
        payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p)).collect::<Result<_, _>>()?;
    let reasoning: String =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!((reasoning.as_str(), text.as_str()), ("Let me think about it.", "Hello, world!"));
    assert_eq!(env.claude.requests()[0].body["thinking"]["budget_tokens"], 8192);
    Ok(())
}

#[tokio::test]
async fn json_mode_on_an_anthropic_channel_is_a_forced_tool_whose_input_comes_back_as_the_text() -> anyhow::Result<()> {
    let env = env().await?;
    let schema = json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]});
    let mut req = chat(CLAUDE, false);
    req["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "place", "schema": schema}});
    let body: Value = env.app.post("/v1/chat/completions", &req).await?.json().await?;
    let content = body["choices"][0]["message"]["content"].as_str().unwrap_or_default();
    assert_eq!(serde_json::from_str::<Value>(content)?, json!({"location": "City 0"}));
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert!(body["choices"][0]["message"].get("tool_calls").is_none(), "{body}");
    let sent = &env.claude.requests()[0].body;
    assert_eq!(sent["tools"][0]["input_schema"], schema);
    assert_eq!(sent["tool_choice"], json!({"type": "tool", "name": sent["tools"][0]["name"]}));

    req["stream"] = json!(true);
    req["response_format"] = json!({"type": "json_object"});
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &req).await?).await?;
    let chunks: Vec<Value> =
        payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p)).collect::<Result<_, _>>()?;
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(serde_json::from_str::<Value>(&text)?, json!({"location": "City 0"}));
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()));
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "stop"));
    Ok(())
}

fn jsonl(name: &str) -> anyhow::Result<Vec<Value>> {
    helpers::jsonl("anthropic", name)
}

fn snapshot(name: &str, actual: &[Value]) -> anyhow::Result<()> {
    helpers::snapshot("anthropic", name, actual)
}

#[tokio::test]
async fn a_recorded_anthropic_tool_use_stream_translates_to_the_openai_chunk_snapshot() -> anyhow::Result<()> {
    let env = env().await?;
    env.claude.set_canned_stream(jsonl("stream_tool_use.jsonl")?);
    let mut req = chat(CLAUDE, true);
    req["stream_options"] = json!({"include_usage": true});
    let payloads = sse_payloads(env.app.post("/v1/chat/completions", &req).await?).await?;
    let mut chunks = Vec::new();
    for p in &payloads {
        let mut v: Value = if p == "[DONE]" { json!("[DONE]") } else { serde_json::from_str(p)? };
        if let Some(o) = v.as_object_mut() {
            assert!(o.remove("created").is_some_and(|c| c.is_i64()), "{p}");
        }
        chunks.push(v);
    }
    snapshot("stream_tool_use.to_openai.jsonl", &chunks)?;
    let u = &env.app.usage().await?[0].1;
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (472, 128, 89));
    assert_eq!(u.model_served, "claude-opus-4-1-20250805");
    Ok(())
}

#[tokio::test]
async fn an_openai_text_stream_translates_to_the_anthropic_event_snapshot() -> anyhow::Result<()> {
    let env = env().await?;
    let evs = events(env.messages(&anthropic_chat(MODEL, true)).await?).await?;
    let evs: Vec<Value> = evs.into_iter().map(|(n, v)| json!({"event": n, "data": v})).collect();
    snapshot("openai_stream_text.to_anthropic.jsonl", &evs)
}

#[tokio::test]
async fn an_anthropic_sdk_lists_models_in_anthropics_shape_with_its_x_api_key() -> anyhow::Result<()> {
    let env = env().await?;
    let list = |key: &str| {
        env.app
            .http
            .get(env.app.url("/v1/models"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .send()
    };
    let body: Value = list(&env.app.key).await?.json().await?;
    let ids: Vec<&str> = body["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert!(ids.contains(&CLAUDE) && ids.contains(&MODEL), "{body}");
    assert_eq!(body["data"][0]["type"], "model");
    assert_eq!(body["has_more"], false);
    let (status, body) = error_of(list("sk-nope").await?).await?;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("authentication_error")));
    // Without anthropic-version it is OpenAI's surface: x-api-key is not a credential there.
    let resp = env.app.http.get(env.app.url("/v1/models")).header("x-api-key", &env.app.key).send().await?;
    assert_eq!(resp.status(), 401);
    // Retrieving one model is the same surface, decided once for authentication and the answer.
    let get = |key: &str, model: &str| {
        env.app
            .http
            .get(env.app.url(&format!("/v1/models/{model}")))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .send()
    };
    let body: Value = get(&env.app.key, CLAUDE).await?.json().await?;
    assert_eq!((body["type"].as_str(), body["id"].as_str()), (Some("model"), Some(CLAUDE)));
    let (status, body) = error_of(get("sk-nope", CLAUDE).await?).await?;
    assert_eq!((status, body["error"]["type"].as_str()), (401, Some("authentication_error")));
    let (status, body) = error_of(get(&env.app.key, "no-such-model").await?).await?;
    assert_eq!((status, body["type"].as_str()), (404, Some("error")));
    let resp = env
        .app
        .http
        .delete(env.app.url("/v1/models"))
        .header("x-api-key", &env.app.key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await?;
    let (status, body) = error_of(resp).await?;
    assert_eq!((status, body["type"].as_str()), (405, Some("error")));
    Ok(())
}

#[tokio::test]
async fn row6_an_anthropic_upstream_that_only_sends_ping_events_is_cut_at_the_idle_timeout_and_billed()
-> anyhow::Result<()> {
    // Anthropic → Anthropic pass-through: `ping` events every 50 ms after two text deltas must
    // not reset the idle timer (1 s in this suite).
    let env = env().await?;
    env.claude.set_scenario(Scenario::PingForeverAfterChunks(2));
    let started = std::time::Instant::now();
    let resp = env.messages(&anthropic_chat(CLAUDE, true)).await?;
    let evs = tokio::time::timeout(Duration::from_secs(10), events(resp)).await??;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let (last, body) = evs.last().cloned().unwrap_or_default();
    assert_eq!((last.as_str(), body["error"]["type"].as_str()), ("error", Some("timeout_error")), "{evs:?}");
    assert!(!evs.iter().any(|(n, _)| n == "message_stop"));
    let usage = env.app.wait_usage(1).await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::UpstreamError);
    assert!(usage[0].1.input_tokens > 0, "billed from message_start");
    Ok(())
}
