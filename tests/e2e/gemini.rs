//! The official `google-genai` Python SDK against the real binary: generate, stream, chat,
//! function calling with function responses, countTokens and Gemini-shaped errors, served (a) by
//! a fake Gemini upstream added with `channels add --provider gemini` (pass-through) and (b) by
//! the fake OpenAI upstream (translated both ways, on the cluster backend); and the official
//! `anthropic` SDK against a Gemini channel. Billing is read back from `/v1/usage`.

use testkit::fake_gemini::FakeGemini;

use crate::helpers::{Backend, Env, MODEL, Serve, run_sdk_script};

const GEMINI: &str = "gemini-2.5-flash";

async fn add_gemini_channel(env: &Env, serve: &Serve, key: &str, gemini: &FakeGemini) -> anyhow::Result<()> {
    env.cli(&[
        "channels",
        "add",
        "--name",
        "gemini",
        "--provider",
        "gemini",
        "--base-url",
        &gemini.base_url(),
        "--api-key",
        "AIza-upstream-canary",
        "--models",
        GEMINI,
    ])?;
    env.wait_for_model(serve, key, GEMINI).await
}

async fn genai(serve: &Serve, key: &str, model: &str, calls_tools: bool) -> anyhow::Result<()> {
    let tools = if calls_tools { "1" } else { "0" };
    let vars = [
        ("LLMR_BASE_URL", serve.base.as_str()),
        ("LLMR_API_KEY", key),
        ("LLMR_MODEL", model),
        ("LLMR_UPSTREAM_CALLS_TOOLS", tools),
    ];
    run_sdk_script("gemini_sdk.py", &vars, serve).await
}

#[tokio::test]
async fn the_official_google_genai_sdk_works_against_a_gemini_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let gemini = FakeGemini::start().await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    add_gemini_channel(&env, &serve, &key, &gemini).await?;
    genai(&serve, &key, GEMINI, true).await?;
    let sent = gemini.requests();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|r| r.header("x-goog-api-key") == Some("AIza-upstream-canary")
        && r.header("authorization").is_none()
        && r.query_param("key").is_none()));
    // Six billed calls: generate, stream, two chat turns, tools, function response.
    let usage = env.wait_for_usage(&serve, &key, 6).await?;
    let row = &usage["data"][0];
    // The fake reports 20 prompt tokens of which 5 cached, and 12 candidate tokens, per call.
    assert_eq!(row["input_tokens"], 6 * 15, "{usage}");
    assert_eq!(row["cached_input_tokens"], 6 * 5, "{usage}");
    assert_eq!(row["output_tokens"], 6 * 12, "{usage}");
    Ok(())
}

#[tokio::test]
async fn the_official_google_genai_sdk_works_against_an_openai_channel_on_the_cluster_backend() -> anyhow::Result<()> {
    let env = Env::new(Backend::Cluster).await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    env.add_fake_channel()?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    genai(&serve, &key, MODEL, false).await?;
    let usage = env.wait_for_usage(&serve, &key, 6).await?;
    // OpenAI's 25 prompt tokens include 5 cached ones: billed as 20 + 5.
    assert_eq!(usage["data"][0]["input_tokens"], 6 * 20, "{usage}");
    assert_eq!(usage["data"][0]["cached_input_tokens"], 6 * 5, "{usage}");
    Ok(())
}

#[tokio::test]
async fn the_official_anthropic_sdk_works_against_a_gemini_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let gemini = FakeGemini::start().await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    add_gemini_channel(&env, &serve, &key, &gemini).await?;
    let vars = [
        ("ANTHROPIC_BASE_URL", serve.base.as_str()),
        ("ANTHROPIC_API_KEY", key.as_str()),
        ("LLMR_MODEL", GEMINI),
        ("LLMR_UPSTREAM_CALLS_TOOLS", "1"),
    ];
    run_sdk_script("anthropic_sdk.py", &vars, &serve).await?;
    // Create, stream helper, raw stream, tools, streamed tools, tool result.
    let usage = env.wait_for_usage(&serve, &key, 6).await?;
    assert_eq!(usage["data"][0]["input_tokens"], 6 * 15, "{usage}");
    let sent = gemini.requests();
    assert!(sent.iter().any(|r| r.body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"));
    Ok(())
}

#[tokio::test]
async fn a_gemini_api_key_in_the_environment_creates_one_default_gemini_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let gemini = FakeGemini::start().await?;
    let base = gemini.base_url();
    // Both names the google-genai SDK reads are set: one channel, keyed by GEMINI_API_KEY.
    let vars = [
        ("GEMINI_API_KEY", "AIza-env-upstream"),
        ("GOOGLE_API_KEY", "AIza-other"),
        ("GOOGLE_GEMINI_BASE_URL", base.as_str()),
    ];
    let serve = env.serve_with_env(&vars).await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("no first key:\n{}", serve.log()))?;
    let url = format!("{}/v1beta/models/{GEMINI}:generateContent", serve.base);
    let body = serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = reqwest::Client::new().post(&url).header("x-goog-api-key", &key).json(&body).send().await?;
        if r.status() == 200 {
            break;
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "default gemini channel never served: {}", r.status());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let seen = gemini.requests();
    assert_eq!(seen.last().and_then(|r| r.header("x-goog-api-key")), Some("AIza-env-upstream"));
    let listed = env.cli(&["channels", "list"])?;
    assert_eq!(listed.lines().filter(|l| l.contains("gemini")).count(), 1, "{listed}");
    Ok(())
}

#[tokio::test]
async fn the_official_openai_sdk_works_against_a_gemini_channel_tools_included() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let gemini = FakeGemini::start().await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    // Embeddings stay on the OpenAI fake; chat goes to the Gemini channel, translated.
    env.add_fake_channel()?;
    add_gemini_channel(&env, &serve, &key, &gemini).await?;
    let base = format!("{}/v1", serve.base);
    let vars = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", key.as_str()),
        ("LLMR_MODEL", GEMINI),
        ("LLMR_EMBED_MODEL", crate::helpers::EMBED_MODEL),
        ("LLMR_UPSTREAM_CALLS_TOOLS", "1"),
    ];
    run_sdk_script("openai_sdk.py", &vars, &serve).await?;
    // Three chat calls, three tool calls (plain, streamed, results) on Gemini, one embedding call.
    env.wait_for_usage(&serve, &key, 7).await?;
    let sent = gemini.requests();
    assert_eq!(sent.len(), 6);
    let last = &sent[5].body;
    assert_eq!(last["toolConfig"]["functionCallingConfig"]["mode"], "NONE");
    assert!(last["contents"][2]["parts"][0]["functionResponse"]["name"] == "get_weather", "{last}");
    Ok(())
}
