//! OpenAI-compatible vendor presets over real HTTP against the fake upstream: Azure deployment
//! URLs and `api-key`, OpenRouter comments and in-band errors after HTTP 200, DeepSeek reasoning
//! and cache fields, Moonshot usage inside a choice, vLLM without a key, and billing at a
//! built-in CNY price.

use std::time::{Duration, Instant};

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, StreamOutcome, UsageRecorded, UsageSource};
use serde_json::{Value, json};
use testkit::fake_openai::{FAKE_REASONING, Scenario};

use crate::helpers::{TestApp, control, error_of, spawn, sse_payloads};

/// Adds a channel of `provider` serving `model` and waits until the gateway routes to it.
async fn add_channel(
    app: &TestApp,
    provider: &str,
    base_url: String,
    model: &str,
    key: Option<&str>,
    api_version: Option<&str>,
) -> anyhow::Result<()> {
    let id = format!("ch_{provider}");
    app.log
        .append_acked(&control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.clone(),
                name: provider.into(),
                provider: provider.into(),
                base_url,
                api_key: key.map(|k| app.master_key.seal(k, &id)),
                models: vec![model.into()],
                priority: 0,
                weight: 1,
                api_version: api_version.map(str::to_owned),
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = app.http.get(app.url("/v1/models")).bearer_auth(&app.key).send().await?;
        if r.text().await?.contains(model) {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "channel for {model} never became visible");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

fn only_usage(usage: Vec<(schemas::Envelope, UsageRecorded)>) -> anyhow::Result<UsageRecorded> {
    match usage.as_slice() {
        [(_, u)] => Ok(u.clone()),
        other => anyhow::bail!("expected one usage event, got {}", other.len()),
    }
}

#[tokio::test]
async fn an_azure_channel_calls_the_deployment_url_with_api_key_and_api_version() -> anyhow::Result<()> {
    let app = spawn().await?;
    let endpoint = app.fake.azure_endpoint();
    add_channel(&app, "azure", endpoint, "gpt-4o-eastus", Some("azure-secret-key"), Some("2024-10-21")).await?;
    let resp = app.post("/v1/chat/completions", &chat("gpt-4o-eastus", false)).await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat("gpt-4o-eastus", true)).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"), "{payloads:?}");
    let seen = app.fake.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.path, "/openai/deployments/gpt-4o-eastus/chat/completions");
        assert_eq!(r.query.as_deref(), Some("api-version=2024-10-21"));
        assert_eq!(r.header("api-key"), Some("azure-secret-key"));
        assert_eq!(r.authorization(), None, "the key must not also go out as a bearer token");
    }
    // Both calls were billed from the upstream's usage.
    let usage = app.wait_usage(2).await?;
    assert!(usage.iter().all(|(_, u)| u.provider == "azure" && u.usage_source == UsageSource::Upstream));
    Ok(())
}

#[tokio::test]
async fn openrouter_comments_are_skipped_and_an_error_after_200_is_one_in_band_error_event() -> anyhow::Result<()> {
    let app = spawn().await?;
    add_channel(&app, "openrouter", app.fake.base_url(), "openai/gpt-4o", Some("sk-or-test"), None).await?;
    app.fake.set_scenario(Scenario::OpenRouterProcessing);
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat("openai/gpt-4o", true)).await?).await?;
    assert!(payloads.iter().all(|p| !p.contains("OPENROUTER")), "{payloads:?}");
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(app.fake.requests()[0].body["stream_options"], json!({"include_usage": true}));

    app.fake.set_scenario(Scenario::OpenRouterErrorAfterChunks(2));
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat("openai/gpt-4o", true)).await?).await?;
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    assert!(!payloads.iter().any(|p| p == "[DONE]"), "the upstream's [DONE] after its error is not relayed");
    let err: Value = serde_json::from_str(&payloads[2])?;
    assert_eq!(err["error"]["type"], "upstream_error");
    let usage = app.wait_usage(2).await?;
    assert_eq!(usage[1].1.stream_outcome, StreamOutcome::UpstreamError);

    app.fake.set_scenario(Scenario::ErrorBody200);
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat("openai/gpt-4o", false)).await?).await?;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error");
    // Nothing was generated, so nothing more is billed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.usage().await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn deepseek_reasoning_passes_through_and_its_cache_hits_are_billed_as_cached_input() -> anyhow::Result<()> {
    let app = spawn().await?;
    add_channel(&app, "deepseek", app.fake.base_url(), "deepseek-reasoner", Some("sk-ds"), None).await?;
    app.fake.set_scenario(Scenario::DeepSeek);
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat("deepseek-reasoner", true)).await?).await?;
    let first: Value = serde_json::from_str(&payloads[0])?;
    assert_eq!(first["choices"][0]["delta"]["reasoning_content"], FAKE_REASONING);
    assert!(!payloads.iter().any(|p| p.contains("prompt_cache_hit_tokens")), "injected usage chunk leaked");
    let resp = app.post("/v1/chat/completions", &chat("deepseek-reasoner", false)).await?;
    let body: Value = resp.json().await?;
    assert_eq!(body["choices"][0]["message"]["reasoning_content"], FAKE_REASONING);
    // The fake reports 25 prompt tokens, 5 of them cache hits, and 12 completion tokens of which
    // 2 are reasoning — with DeepSeek's field names and no `prompt_tokens_details`.
    for (_, u) in app.wait_usage(2).await? {
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens),
            (20, 5, 12, 2),
            "{u:?}"
        );
        assert_eq!(u.usage_source, UsageSource::Upstream);
        assert!(u.raw_usage.as_ref().is_some_and(|r| r["prompt_cache_hit_tokens"] == 5));
    }
    Ok(())
}

#[tokio::test]
async fn moonshot_gets_the_clients_body_and_its_usage_inside_a_choice_is_read() -> anyhow::Result<()> {
    let app = spawn().await?;
    add_channel(&app, "moonshot", app.fake.base_url(), "kimi-k2-0905-preview", Some("sk-ms"), None).await?;
    app.fake.set_scenario(Scenario::MoonshotUsageInChoice);
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat("kimi-k2-0905-preview", true)).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let sent = &app.fake.requests()[0].body;
    assert!(sent.get("stream_options").is_none(), "stream_options was injected: {sent}");
    let u = only_usage(app.wait_usage(1).await?)?;
    assert_eq!(u.usage_source, UsageSource::Upstream);
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (20, 5, 12));
    // A client that asks for usage itself gets it in the vendor's place; the field is not sent.
    let mut asked = chat("kimi-k2-0905-preview", true);
    asked["stream_options"] = json!({"include_usage": true});
    let payloads = sse_payloads(app.post("/v1/chat/completions", &asked).await?).await?;
    assert!(payloads.iter().any(|p| p.contains("\"usage\"")), "{payloads:?}");
    let sent = &app.fake.requests()[1].body;
    assert!(sent.get("stream_options").is_none() && sent["stream"] == true, "{sent}");
    assert_eq!(app.wait_usage(2).await?.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_vllm_channel_without_a_key_sends_no_authorization_and_its_error_shape_is_in_band() -> anyhow::Result<()> {
    let app = spawn().await?;
    add_channel(&app, "vllm", app.fake.base_url(), "Qwen/Qwen2.5-7B-Instruct", None, None).await?;
    app.fake.set_scenario(Scenario::VllmErrorAfterChunks(1));
    let payloads =
        sse_payloads(app.post("/v1/chat/completions", &chat("Qwen/Qwen2.5-7B-Instruct", true)).await?).await?;
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    let err: Value = serde_json::from_str(&payloads[1])?;
    assert_eq!(err["error"]["type"], "upstream_error");
    assert_eq!(app.fake.requests()[0].authorization(), None);
    assert_eq!(only_usage(app.wait_usage(1).await?)?.stream_outcome, StreamOutcome::UpstreamError);
    Ok(())
}

#[tokio::test]
async fn a_call_at_a_builtin_price_carries_that_price_and_its_cny_currency() -> anyhow::Result<()> {
    let app = spawn().await?;
    let table = gateway::prices::builtin()?;
    for row in table.pending(&Default::default(), |_| None) {
        app.log.append_acked(&table.envelope(row, "gw-test", 1)).await?;
    }
    add_channel(&app, "deepseek", app.fake.base_url(), "deepseek-chat", Some("sk-ds"), None).await?;
    let resp = app.post("/v1/chat/completions", &chat("deepseek-chat", false)).await?;
    assert_eq!(resp.status(), 200);
    let u = only_usage(app.wait_usage(1).await?)?;
    let price = u.price.as_ref().ok_or_else(|| anyhow::anyhow!("no price applied"))?;
    assert_eq!(price.version, table.event_id("deepseek-chat").to_string());
    assert_eq!((price.currency.as_str(), u.currency.as_str()), ("CNY", "CNY"));
    // 20 uncached × 2 + 5 cached × 0.2 + 12 output × 3 CNY per million tokens, in nanos.
    assert_eq!(u.cost_nanos, 20 * 2_000 + 5 * 200 + 12 * 3_000);
    Ok(())
}
