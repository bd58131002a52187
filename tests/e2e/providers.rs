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
    run(add(&["--name", "claude", "--provider", "anthropic", "--models", "claude-sonnet-4-5"]))?;
    run(add(&["--name", "gem", "--provider", "gemini", "--models", "gemini-2.5-flash"]))?;
    let list = env.cli(&["channels", "list"])?;
    for url in [
        "https://api.deepseek.com",
        "https://open.bigmodel.cn/api/paas/v4",
        "http://localhost:11434/v1",
        "https://api.anthropic.com/v1",
        "https://generativelanguage.googleapis.com/v1beta",
    ] {
        assert!(list.contains(url), "{url} missing from:\n{list}");
    }
    assert!(!list.contains("sk-vendor-test"), "{list}");
    let fails = |a: Vec<String>| env.cli_fails(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let err = env.cli_fails(&["channels", "add", "--name", "g2", "--provider", "gemini", "--models", "m"])?;
    assert!(err.contains("--api-key") && err.contains("x-goog-api-key"), "{err}");
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

#[tokio::test]
async fn channels_update_changes_only_the_fields_given_and_keeps_the_sealed_key() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    env.cli(&["channels", "add", "--name", "ds", "--provider", "deepseek", "--api-key", "sk-old", "--models", "a"])?;
    let out = env.cli(&["channels", "update", "ds", "--models", "a,b", "--priority", "-2", "--weight", "3"])?;
    assert!(out.contains("updated"), "{out}");
    let list = env.cli(&["channels", "list"])?;
    let row: Vec<&str> = list.lines().next().unwrap_or_default().split('\t').collect();
    assert_eq!(row[1..5], ["ds", "deepseek", "https://api.deepseek.com", "a,b"], "{list}");
    assert!(row[5].starts_with("ukey_") && row[5].ends_with(":active"), "the key column: {list}");
    let id = row[0].to_owned();
    env.cli(&["channels", "update", &id, "--name", "deep", "--base-url", "https://proxy.example/v1/"])?;
    let list = env.cli(&["channels", "list"])?;
    assert!(list.contains("\tdeep\tdeepseek\thttps://proxy.example/v1\ta,b"), "{list}");

    // A rotated key is sealed like `channels add` seals it; neither key is stored in plain text.
    env.cli(&["channels", "update", "deep", "--api-key", "sk-rotated-canary"])?;
    let mut hay = String::new();
    for f in std::fs::read_dir(env.data.path())? {
        let f = f?.path();
        if f.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("events.db")) {
            hay.push_str(&String::from_utf8_lossy(&std::fs::read(&f)?));
        }
    }
    assert!(!hay.contains("sk-rotated-canary") && !hay.contains("sk-old"), "a key stored in plain text");
    assert!(env.cli(&["channels", "list"])?.contains("\tdeep\tdeepseek\thttps://proxy.example/v1\ta,b"));

    let err = env.cli_fails(&["channels", "update", "deep"])?;
    assert!(err.contains("nothing to change"), "{err}");
    let err = env.cli_fails(&["channels", "update", "nope", "--weight", "2"])?;
    assert!(err.contains("no channel"), "{err}");
    let err = env.cli_fails(&["channels", "update", "deep", "--api-version", "2024-10-21"])?;
    assert!(err.contains("api-version"), "{err}");
    Ok(())
}

#[tokio::test]
async fn prices_set_with_a_channel_overrides_the_model_price_there_and_the_override_ends_with_it() -> anyhow::Result<()>
{
    let env = Env::new(Backend::Embedded).await?;
    env.cli(&["channels", "add", "--name", "ds", "--provider", "deepseek", "--api-key", "k", "--models", "m"])?;
    let id = env.cli(&["channels", "list"])?.split('\t').next().unwrap_or_default().to_owned();
    env.cli(&["prices", "set", "--model", "m", "--input", "1", "--output", "2"])?;
    let out = env.cli(&["prices", "set", "--model", "m", "--channel", "ds", "--input", "0.5", "--output", "1"])?;
    assert!(out.contains("on channel ds"), "{out}");
    let err =
        env.cli_fails(&["prices", "set", "--model", "m", "--channel", "nope", "--input", "1", "--output", "1"])?;
    assert!(err.contains("no channel"), "{err}");

    let rows = |list: String| -> Vec<String> {
        list.lines()
            .filter(|l| l.starts_with("m\t"))
            .map(|l| {
                let c: Vec<&str> = l.split('\t').collect();
                format!("{} {} {}", c[2], c[5], c[8])
            })
            .collect()
    };
    let list = env.cli(&["prices", "list"])?;
    assert!(list.lines().next().is_some_and(|h| h.ends_with("\tchannel")), "{list}");
    assert_eq!(rows(list), ["1.000000000 2.000000000 -".to_owned(), format!("0.500000000 1.000000000 {id}")]);

    env.cli(&["channels", "remove", "ds"])?;
    assert_eq!(rows(env.cli(&["prices", "list"])?), ["1.000000000 2.000000000 -"]);
    Ok(())
}
