//! The official `anthropic` Python SDK against the real binary: `/v1/messages` (plain, streaming,
//! tools, tool results), `count_tokens` and Anthropic-shaped errors, served (a) by a fake
//! Anthropic upstream added with `channels add --provider anthropic` (pass-through) and (b) by
//! the fake OpenAI upstream (translated both ways); and the unchanged official `openai` SDK check
//! against an Anthropic channel. Billing is read back from `/v1/usage`.

use testkit::fake_anthropic::FakeAnthropic;

use crate::helpers::{Backend, Env, MODEL, Serve, run_sdk_script};

const CLAUDE: &str = "claude-sonnet-4-5";

async fn run_sdk(serve: &Serve, key: &str, model: &str, calls_tools: bool) -> anyhow::Result<()> {
    let vars = [
        ("ANTHROPIC_BASE_URL", serve.base.as_str()),
        ("ANTHROPIC_API_KEY", key),
        ("LLMR_MODEL", model),
        ("LLMR_UPSTREAM_CALLS_TOOLS", if calls_tools { "1" } else { "0" }),
    ];
    run_sdk_script("anthropic_sdk.py", &vars, serve).await
}

#[tokio::test]
async fn the_official_anthropic_sdk_works_against_an_anthropic_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let claude = FakeAnthropic::start().await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    env.cli(&[
        "channels",
        "add",
        "--name",
        "claude",
        "--provider",
        "anthropic",
        "--base-url",
        &claude.base_url(),
        "--api-key",
        "sk-ant-upstream-canary",
        "--models",
        CLAUDE,
    ])?;
    env.wait_for_model(&serve, &key, CLAUDE).await?;
    run_sdk(&serve, &key, CLAUDE, true).await?;
    let sent = claude.requests();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|r| r.header("x-api-key") == Some("sk-ant-upstream-canary")
        && r.header("anthropic-version") == Some("2023-06-01")
        && r.header("authorization").is_none()));
    // Six billed calls: create, stream helper, raw stream, tools, streamed tools, tool result.
    // count_tokens and the two refused calls are not billed.
    let usage = env.wait_for_usage(&serve, &key, 6).await?;
    let row = &usage["data"][0];
    // The fake reports 20 uncached, 5 cache-read, 3 cache-write input and 12 output tokens per call.
    assert_eq!(row["input_tokens"], 6 * 20, "{usage}");
    assert_eq!(row["cached_input_tokens"], 6 * 5, "{usage}");
    assert_eq!(row["output_tokens"], 6 * 12, "{usage}");
    Ok(())
}

#[tokio::test]
async fn the_official_anthropic_sdk_works_against_an_openai_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    env.add_fake_channel()?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    run_sdk(&serve, &key, MODEL, false).await?;
    // Five billed calls: create, stream helper, raw stream, tools, tool result (the fake OpenAI
    // answers text, so there is no streamed tool call).
    let usage = env.wait_for_usage(&serve, &key, 5).await?;
    let row = &usage["data"][0];
    // OpenAI's 25 prompt tokens include 5 cached ones: billed as 20 + 5, never 25 + 5.
    assert_eq!(row["input_tokens"], 5 * 20, "{usage}");
    assert_eq!(row["cached_input_tokens"], 5 * 5, "{usage}");
    Ok(())
}

#[tokio::test]
async fn the_official_openai_sdk_works_against_an_anthropic_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let claude = FakeAnthropic::start().await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    // Embeddings stay on the OpenAI fake; chat goes to the Anthropic channel, translated.
    env.add_fake_channel()?;
    env.cli(&[
        "channels",
        "add",
        "--name",
        "claude",
        "--provider",
        "anthropic",
        "--base-url",
        &claude.base_url(),
        "--api-key",
        "sk-ant-upstream-canary",
        "--models",
        CLAUDE,
    ])?;
    env.wait_for_model(&serve, &key, CLAUDE).await?;
    let base = format!("{}/v1", serve.base);
    let vars = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", key.as_str()),
        ("LLMR_MODEL", CLAUDE),
        ("LLMR_EMBED_MODEL", crate::helpers::EMBED_MODEL),
        ("LLMR_UPSTREAM_CALLS_TOOLS", "1"),
    ];
    run_sdk_script("openai_sdk.py", &vars, &serve).await?;
    // Three chat calls and three tool calls (plain, streamed, results) on Claude, one embedding call.
    env.wait_for_usage(&serve, &key, 7).await?;
    assert_eq!(claude.requests().len(), 6);
    Ok(())
}
