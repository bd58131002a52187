//! Provider presets through the real binary: `channels add --provider` fills in the vendor's base
//! URL, and `serve` publishes the built-in price table so a DeepSeek call is billed in CNY.

use std::time::Duration;

use crate::helpers::{Backend, Env};

#[tokio::test]
async fn channels_add_knows_each_presets_base_url_and_refuses_what_a_preset_cannot_use() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let add = |extra: &[&str]| {
        let mut args = vec!["channels", "add", "--api-key", "sk-vendor-test"];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<String>>()
    };
    let run = |a: Vec<String>| env.cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    run(add(&["--name", "ds", "--provider", "deepseek", "--models", "deepseek-chat,deepseek-reasoner"]))?;
    run(add(&["--name", "glm", "--provider", "zhipu", "--models", "glm-4-plus"]))?;
    run(add(&["--name", "local", "--provider", "ollama", "--models", "llama3.2"]))?;
    let list = env.cli(&["channels", "list"])?;
    for url in ["https://api.deepseek.com", "https://open.bigmodel.cn/api/paas/v4", "http://localhost:11434/v1"] {
        assert!(list.contains(url), "{url} missing from:\n{list}");
    }
    assert!(!list.contains("sk-vendor-test"), "{list}");
    let fails = |a: Vec<String>| env.cli_fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = fails(add(&["--name", "az", "--provider", "azure", "--models", "gpt-4o"]))?;
    assert!(err.contains("--base-url"), "{err}");
    let err = fails(add(&["--name", "x", "--provider", "deepseek", "--api-version", "2024-10-21", "--models", "m"]))?;
    assert!(err.contains("api-version"), "{err}");
    run(add(&[
        "--name",
        "az",
        "--provider",
        "azure",
        "--base-url",
        "https://example-resource.openai.azure.com",
        "--models",
        "gpt-4o",
    ]))?;
    Ok(())
}

#[tokio::test]
async fn serve_publishes_builtin_prices_and_a_deepseek_call_is_billed_in_cny() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    let base = env.fake.base_url();
    env.cli(&[
        "channels",
        "add",
        "--name",
        "ds",
        "--provider",
        "deepseek",
        "--base-url",
        &base,
        "--api-key",
        "sk-ds",
        "--models",
        "deepseek-chat",
    ])?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, "deepseek-chat").await?;
    let body = serde_json::json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "hi"}]});
    let resp = env
        .http
        .post(format!("{}/v1/chat/completions", serve.base))
        .bearer_auth(&key)
        .json(&body)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let rows = env.ledger_rows(&request_id).await?;
    let [row] = rows.as_slice() else { anyhow::bail!("expected one ledger row, got {rows:?}") };
    // The fake reports 25 prompt tokens (5 cached) and 12 completion tokens; DeepSeek's built-in
    // price is 2 / 0.2 / 3 CNY per million (input / cached / output).
    assert_eq!(row.currency, "CNY");
    assert_eq!(row.cost_nanos, 20 * 2_000 + 5 * 200 + 12 * 3_000);
    assert!(row.price_version.is_some());
    let line = |list: &str| list.lines().find(|l| l.starts_with("deepseek-chat\t")).map(str::to_owned);
    let listed = line(&env.cli(&["prices", "list"])?);
    assert_eq!(
        listed.as_deref().map(|l| l.split('\t').take(7).collect::<Vec<_>>().join(" ")).as_deref(),
        Some("deepseek-chat CNY 2.000000000 0.200000000 - 3.000000000 builtin")
    );
    // An admin's price replaces it, and a second start neither republishes the same rows (same
    // ids) nor overwrites the admin's price.
    env.cli(&["prices", "set", "--model", "deepseek-chat", "--currency", "CNY", "--input", "1", "--output", "2"])?;
    serve.stop()?;
    let again = env.serve().await?;
    assert!(!again.log().contains("Built-in prices published"), "{}", again.log());
    let listed = line(&env.cli(&["prices", "list"])?).unwrap_or_default();
    assert!(listed.starts_with("deepseek-chat\tCNY\t1.000000000\t") && !listed.contains("builtin"), "{listed}");
    Ok(())
}
