//! End-to-end: the real binary, both backends, the admin CLI while `serve` runs, the official
//! OpenAI Python SDK, the ledger through `/v1/usage` and reports, rebuilds.

mod admin_api;
mod anthropic;
mod caps;
mod chaos;
mod dashboard;
mod egress;
mod faults;
mod gemini;
mod health;
mod health_api;
mod helpers;
mod keys;
mod providers;
mod proxies;
mod proxy_api;
mod proxy_health;
mod requests;

use std::time::{Duration, Instant};

use helpers::{Backend, EMBED_MODEL, Env, MODEL};

const ALL_TIME: [&str; 4] = ["--from", "2000-01-01", "--to", "2100-12-31"];

async fn first_start_key_works_with_the_official_openai_sdk(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("first start printed no key:\n{}", serve.log()))?;
    env.add_fake_channel()?;
    env.wait_for_model(&serve, &key, EMBED_MODEL).await?;
    let base = format!("{}/v1", serve.base);
    let vars = [
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", key.as_str()),
        ("LLMR_MODEL", MODEL),
        ("LLMR_EMBED_MODEL", EMBED_MODEL),
    ];
    helpers::run_sdk_script("openai_sdk.py", &vars, &serve).await?;
    // Three chat calls and one embedding call succeeded; the usage endpoint sees them.
    env.wait_for_usage(&serve, &key, 4).await?;
    serve.stop()?;
    let second = env.serve().await?;
    assert!(second.first_key().is_none(), "a second start printed another key");
    Ok(())
}

#[tokio::test]
async fn first_start_key_works_with_the_official_openai_sdk_embedded() -> anyhow::Result<()> {
    first_start_key_works_with_the_official_openai_sdk(Backend::Embedded).await
}

#[tokio::test]
async fn first_start_key_works_with_the_official_openai_sdk_cluster() -> anyhow::Result<()> {
    first_start_key_works_with_the_official_openai_sdk(Backend::Cluster).await
}

async fn revoked_key_is_refused_within_a_second(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    let prefix: String = key.chars().take(10).collect();
    env.cli(&["keys", "revoke", &prefix])?;
    let revoked_at = Instant::now();
    loop {
        let (status, body) = env.chat(&serve, &key, false).await?;
        if status == 401 {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(v["error"]["code"], "invalid_api_key");
            assert!(!body.contains(&key), "the error echoes the key");
            break;
        }
        anyhow::ensure!(revoked_at.elapsed() < Duration::from_secs(1), "revoked key still accepted after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test]
async fn revoked_key_is_refused_within_a_second_embedded() -> anyhow::Result<()> {
    revoked_key_is_refused_within_a_second(Backend::Embedded).await
}

#[tokio::test]
async fn revoked_key_is_refused_within_a_second_cluster() -> anyhow::Result<()> {
    revoked_key_is_refused_within_a_second(Backend::Cluster).await
}

async fn usage_report_is_byte_identical_after_a_rebuild(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    for i in 0..6 {
        let (status, body) = env.chat(&serve, &key, i % 2 == 0).await?;
        anyhow::ensure!(status == 200, "{status} {body}");
    }
    let usage = env.wait_for_usage(&serve, &key, 6).await?;
    // The fake reports 25 prompt tokens (5 of them cached) and 12 completion tokens per call:
    // 6 × (20 × 0.15 + 5 × 0.075 + 12 × 0.60) USD per million tokens, in nanos.
    let row = &usage["data"][0];
    assert_eq!(row["input_tokens"], 120);
    assert_eq!(row["cached_input_tokens"], 30);
    assert_eq!(row["output_tokens"], 72);
    assert_eq!(row["cost_nanos"], 6 * (20 * 150 + 5 * 75 + 12 * 600));
    let mut args = vec!["reports", "usage", "--tenant", "acme", "--format", "csv"];
    args.extend(ALL_TIME);
    let before_csv = env.cli(&args)?;
    assert!(before_csv.contains(MODEL), "{before_csv}");
    args[5] = "json";
    let before_json = env.cli(&args)?;
    env.cli(&["projections", "rebuild", "ledger"])?;
    env.cli(&["projections", "rebuild", "control"])?;
    let after_json = env.cli(&args)?;
    args[5] = "csv";
    let after_csv = env.cli(&args)?;
    assert_eq!(before_csv, after_csv, "CSV report changed after a rebuild");
    assert_eq!(before_json, after_json, "JSON report changed after a rebuild");
    // The running gateway and workers still serve after the swap.
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    env.wait_for_usage(&serve, &key, 7).await?;
    Ok(())
}

#[tokio::test]
async fn usage_report_is_byte_identical_after_a_rebuild_embedded() -> anyhow::Result<()> {
    usage_report_is_byte_identical_after_a_rebuild(Backend::Embedded).await
}

#[tokio::test]
async fn usage_report_is_byte_identical_after_a_rebuild_cluster() -> anyhow::Result<()> {
    usage_report_is_byte_identical_after_a_rebuild(Backend::Cluster).await
}

#[tokio::test]
async fn an_unknown_config_setting_is_rejected_by_name() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let path = env.data.path().join("llm-router.toml");
    std::fs::write(&path, "listen = \"127.0.0.1:0\"\nbody_limit = 5\n")?;
    let err = env.cli_fails(&["--config", path.to_str().unwrap_or_default(), "tenants", "list"])?;
    assert!(err.contains("body_limit"), "{err}");
    Ok(())
}

#[tokio::test]
async fn admin_commands_refuse_bad_input_with_a_clear_message() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    assert!(env.cli_fails(&["tenants", "create", "Bad.Name"])?.contains("invalid tenant name"));
    env.cli(&["tenants", "create", "acme"])?;
    assert!(env.cli_fails(&["tenants", "create", "acme"])?.contains("already exists"));
    assert!(env.cli_fails(&["keys", "create", "--tenant", "nobody"])?.contains("no tenant named nobody"));
    assert!(env.cli_fails(&["prices", "set", "--model", "m", "--input", "1e3", "--output", "1"])?.contains("--input"));
    let err = env.cli_fails(&[
        "channels",
        "add",
        "--name",
        "x",
        "--provider",
        "nope",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--models",
        "m",
    ])?;
    assert!(err.contains("unknown provider"), "{err}");
    let err = env.cli_fails(&["reports", "usage", "--tenant", "acme", "--from", "2026-99-99", "--to", "2026-12-01"])?;
    assert!(err.contains("--from must be a date"), "{err}");
    Ok(())
}

#[tokio::test]
async fn only_a_key_granted_it_reads_its_whole_tenants_usage() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    env.cli(&["tenants", "create", "acme"])?;
    let own = env.cli(&["keys", "create", "--tenant", "acme", "--models", MODEL])?;
    let own = own.lines().last().unwrap_or_default().to_owned();
    let all = env.cli(&["keys", "create", "--tenant", "acme", "--tenant-usage"])?;
    let all = all.lines().last().unwrap_or_default().to_owned();
    // `/v1/usage` reads keys from the read model, which follows the log within moments.
    for key in [&own, &all] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.http.get(format!("{}/v1/usage", serve.base)).bearer_auth(key).send().await?.status() == 401 {
            anyhow::ensure!(Instant::now() < deadline, "the key never reached the read model");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let tenant_scope =
        |key: &str| env.http.get(format!("{}/v1/usage?scope=tenant", serve.base)).bearer_auth(key).send();
    let refused = tenant_scope(&own).await?;
    assert_eq!(refused.status(), 403);
    let v: serde_json::Value = refused.json().await?;
    assert_eq!(v["error"]["code"], "scope_not_granted");
    let granted = tenant_scope(&all).await?;
    assert_eq!(granted.status(), 200);
    let v: serde_json::Value = granted.json().await?;
    assert_eq!(v["key_id"], serde_json::Value::Null, "tenant scope names no key");
    // Its own usage stays readable to every key.
    assert_eq!(env.http.get(format!("{}/v1/usage", serve.base)).bearer_auth(&own).send().await?.status(), 200);
    Ok(())
}

#[tokio::test]
async fn usage_queries_accept_only_real_dates() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    let key = env.tenant_key("acme")?;
    // `/v1/usage` reads keys from the read model, which follows the log within moments.
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.http.get(format!("{}/v1/usage", serve.base)).bearer_auth(&key).send().await?.status() == 401 {
        anyhow::ensure!(Instant::now() < deadline, "the key never reached the read model");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (query, param) in [("from=2026-99-99", "from"), ("to=2026-02-30", "to"), ("from=2026-1-01", "from")] {
        let resp = env.http.get(format!("{}/v1/usage?{query}", serve.base)).bearer_auth(&key).send().await?;
        assert_eq!(resp.status(), 400, "{query}");
        let v: serde_json::Value = resp.json().await?;
        assert_eq!(v["error"]["param"], param, "{query}");
    }
    let resp =
        env.http.get(format!("{}/v1/usage?from=2024-02-29&to=2026-11-30", serve.base)).bearer_auth(&key).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn upstream_keys_never_appear_in_the_log_or_the_output() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    assert_eq!(env.chat(&serve, &key, true).await?.0, 200);
    // The fake saw our channel key; nothing we stored or printed holds it, or the tenant's key.
    assert_eq!(
        env.fake.requests().last().and_then(|r| r.authorization().map(str::to_owned)).as_deref(),
        Some("Bearer sk-upstream-canary-123")
    );
    let mut hay = String::new();
    for f in std::fs::read_dir(env.data.path())? {
        let f = f?.path();
        if f.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("events.db") || n.starts_with("read.db"))
        {
            hay.push_str(&String::from_utf8_lossy(&std::fs::read(&f)?));
        }
    }
    assert!(!hay.contains("sk-upstream-canary-123"), "upstream key stored in plain text");
    assert!(!hay.contains(&key), "tenant key stored in plain text");
    let log = serve.log();
    assert!(!log.contains("sk-upstream-canary-123") && !log.contains(&key), "a key reached the log");
    Ok(())
}

#[tokio::test]
async fn nats_restart_under_load_bills_every_success_exactly_once() -> anyhow::Result<()> {
    let mut env = Env::new(Backend::Cluster).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;

    const REQUESTS: usize = 1000;
    const WORKERS: usize = 20;
    let url = format!("{}/v1/chat/completions", serve.base);
    let client = reqwest::Client::new();
    let load = tokio::spawn({
        let (client, url, key) = (client.clone(), url.clone(), key.clone());
        async move {
            let mut tasks = Vec::new();
            for w in 0..WORKERS {
                let (client, url, key) = (client.clone(), url.clone(), key.clone());
                tasks.push(tokio::spawn(async move {
                    let mut ok = Vec::new();
                    let mut failed = 0usize;
                    for i in 0..REQUESTS / WORKERS {
                        let body = serde_json::json!({"model": MODEL, "stream": (w + i) % 3 == 0,
                            "messages": [{"role": "user", "content": "hi"}]});
                        match client.post(&url).bearer_auth(&key).json(&body).send().await {
                            Ok(r) if r.status().is_success() => {
                                let id =
                                    r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
                                // A success is only a success once the whole body arrived.
                                if r.bytes().await.is_ok()
                                    && let Some(id) = id
                                {
                                    ok.push(id);
                                }
                            }
                            _ => failed += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                    (ok, failed)
                }));
            }
            let mut ok = Vec::new();
            let mut failed = 0;
            for t in tasks {
                let (o, f) = t.await?;
                ok.extend(o);
                failed += f;
            }
            Ok::<_, anyhow::Error>((ok, failed))
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let nats = env.nats.as_mut().ok_or_else(|| anyhow::anyhow!("no nats"))?;
    nats.stop()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.start()?;
    let (ok, failed) = load.await??;
    anyhow::ensure!(
        ok.len() > REQUESTS / 2,
        "only {} of {REQUESTS} succeeded ({failed} failed):\n{}",
        ok.len(),
        serve.log()
    );

    let db = env.db.as_ref().ok_or_else(|| anyhow::anyhow!("no db"))?;
    let store = projections::ReadStore::connect(db.url()).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = projections::read::ledger_row_count(&store, "acme").await?;
        if rows as usize >= ok.len() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "ledger stuck at {rows} rows of {}:\n{}", ok.len(), serve.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &ok {
        let rows = projections::read::ledger_rows_for_request(&store, id).await?;
        anyhow::ensure!(rows.len() == 1, "request {id} has {} ledger rows", rows.len());
    }
    // No request billed twice, and nothing billed that the client did not see succeed beyond
    // those whose response was cut by the outage.
    let total = projections::read::ledger_row_count(&store, "acme").await? as usize;
    anyhow::ensure!(
        total >= ok.len() && total <= ok.len() + failed,
        "ledger has {total} rows for {} successes",
        ok.len()
    );
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn openai_api_key_in_the_environment_creates_a_default_channel_for_every_model() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let base = env.fake.base_url();
    let serve = env.serve_with_env(&[("OPENAI_API_KEY", "sk-env-upstream"), ("OPENAI_BASE_URL", &base)]).await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("no first key:\n{}", serve.log()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let body = serde_json::json!({"model": "any-model-at-all", "messages": [{"role": "user", "content": "hi"}]});
        let r =
            env.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(&key).json(&body).send().await?;
        if r.status() == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "default channel never served: {}", r.text().await?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = env.fake.requests();
    assert_eq!(
        seen.last().and_then(|r| r.authorization().map(str::to_owned)).as_deref(),
        Some("Bearer sk-env-upstream")
    );
    let channels = env.cli(&["channels", "list"])?;
    assert!(channels.contains("openai") && !channels.contains("sk-env-upstream"), "{channels}");
    // A second start does not add a second channel.
    serve.stop()?;
    let again = env.serve_with_env(&[("OPENAI_API_KEY", "sk-env-upstream"), ("OPENAI_BASE_URL", &base)]).await?;
    assert_eq!(env.cli(&["channels", "list"])?.lines().count(), 1);
    drop(again);
    Ok(())
}

async fn bad_input_is_refused_and_never_billed(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    // A small limit, so the oversized body fits the socket buffers and the client reads the 413
    // instead of a reset (the gateway answers before reading the rest).
    let serve = env.serve_with_env(&[("LLM_ROUTER_BODY_LIMIT_BYTES", "4096")]).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    let url = format!("{}/v1/chat/completions", serve.base);
    // (case, Authorization key, body, expected status, expected error code)
    type Case<'a> = (&'a str, Option<String>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("malformed JSON", Some(key.clone()), b"{\"model\": ".to_vec(), 400, "invalid_json"),
        ("wrong type", Some(key.clone()), br#"{"model":"gpt-4o-mini","messages":"hi"}"#.to_vec(), 400, "invalid_json"),
        ("unknown model", Some(key.clone()), br#"{"model":"nope","messages":[]}"#.to_vec(), 404, "model_not_found"),
        ("no key", None, br#"{"model":"gpt-4o-mini","messages":[]}"#.to_vec(), 401, "invalid_api_key"),
        ("sql-ish key", Some("' OR '1'='1".to_owned()), br#"{"model":"gpt-4o-mini"}"#.to_vec(), 401, "invalid_api_key"),
        (
            "smuggled base_url",
            Some(key.clone()),
            br#"{"model":"gpt-4o-mini","messages":[],"base_url":"http://169.254.169.254"}"#.to_vec(),
            400,
            "unsupported_parameter",
        ),
        ("too large", Some(key.clone()), vec![b' '; 8 * 1024], 413, "request_too_large"),
    ];
    let before = env.fake.requests().len();
    for (name, auth, body, status, code) in cases {
        let mut req = env.http.post(&url).header("content-type", "application/json").body(body);
        if let Some(k) = auth {
            req = req.bearer_auth(k);
        }
        let r = req.send().await?;
        assert_eq!(r.status().as_u16(), status, "{name}");
        let v: serde_json::Value = r.json().await?;
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
    }
    assert_eq!(env.fake.requests().len(), before, "a refused request reached the upstream");
    // One good request afterwards: it is the only ledger row.
    let r =
        env.http.post(&url).bearer_auth(&key).json(&serde_json::json!({"model": MODEL, "messages": []})).send().await?;
    let id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert_eq!(r.status(), 200);
    assert_eq!(env.ledger_rows(&id).await?.len(), 1);
    let store = env.store().await?;
    assert_eq!(projections::read::ledger_row_count(&store, "acme").await?, 1);
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn bad_input_is_refused_and_never_billed_embedded() -> anyhow::Result<()> {
    bad_input_is_refused_and_never_billed(Backend::Embedded).await
}

#[tokio::test]
async fn bad_input_is_refused_and_never_billed_cluster() -> anyhow::Result<()> {
    bad_input_is_refused_and_never_billed(Backend::Cluster).await
}

async fn a_client_that_leaves_mid_stream_is_billed_as_client_disconnected(backend: Backend) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    // Enough chunks after the first that the gateway's writes notice the closed socket.
    env.fake.set_pieces(&["a", "b", "c", "d", "e", "f", "g", "h"]);
    env.fake.set_scenario(testkit::fake_openai::Scenario::SlowChunks(Duration::from_millis(100)));
    let r = env
        .http
        .post(format!("{}/v1/chat/completions", serve.base))
        .bearer_auth(&key)
        .json(&serde_json::json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    let id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut body = r.bytes_stream();
    let first = body.next().await;
    anyhow::ensure!(matches!(first, Some(Ok(_))), "no first chunk");
    drop(body);
    let rows = env.ledger_rows(&id).await?;
    anyhow::ensure!(rows.len() == 1, "expected one ledger row, got {}:\n{}", rows.len(), serve.log());
    assert_eq!(rows[0].stream_outcome, "client_disconnected");
    assert_eq!(rows[0].output_tokens, 12, "billed what the upstream generated");
    Ok(())
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_billed_as_client_disconnected_embedded() -> anyhow::Result<()> {
    a_client_that_leaves_mid_stream_is_billed_as_client_disconnected(Backend::Embedded).await
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_is_billed_as_client_disconnected_cluster() -> anyhow::Result<()> {
    a_client_that_leaves_mid_stream_is_billed_as_client_disconnected(Backend::Cluster).await
}

#[tokio::test]
async fn a_full_spool_refuses_billable_work_with_503_and_recovers_when_nats_returns() -> anyhow::Result<()> {
    let mut env = Env::new(Backend::Cluster).await?;
    let config = env.data.path().join("llm-router.toml");
    std::fs::write(&config, "[jetstream]\nmax_spool = 4\n")?;
    let config = config.to_str().unwrap_or_default().to_owned();
    let serve = env.serve_with(&[], &["--config", &config]).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    env.nats.as_mut().ok_or_else(|| anyhow::anyhow!("no nats"))?.stop()?;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, body) = env.chat(&serve, &key, false).await?;
        if status == 503 {
            let v: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(v["error"]["code"], "usage_not_recorded", "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses.first(), Some(&200), "spooling should absorb the first request: {statuses:?}");
    assert_eq!(statuses.last(), Some(&503), "a full spool must refuse billable work: {statuses:?}");
    let successes = statuses.iter().filter(|s| **s == 200).count() as i64;
    env.nats.as_mut().ok_or_else(|| anyhow::anyhow!("no nats"))?.start()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if env.chat(&serve, &key, false).await?.0 == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "never recovered:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every request that got a 200 is billed, and only those.
    env.wait_for_usage(&serve, &key, successes + 1).await?;
    Ok(())
}

#[tokio::test]
async fn the_cluster_shape_runs_gateways_and_a_worker_as_separate_processes() -> anyhow::Result<()> {
    let env = Env::new(Backend::Cluster).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    // Each process has its own data directory (a spool belongs to one process) and all share
    // the master key, as they would on separate machines.
    let master = std::fs::read_to_string(env.data.path().join("master.key"))?;
    let vars = [("LLM_ROUTER_MASTER_KEY", master.trim())];
    let (dir_w, dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
    let path = |d: &tempfile::TempDir| d.path().to_str().unwrap_or_default().to_owned();
    let _worker = env.worker(dir_w.path())?;
    let a = env.http_service("gateway", &vars, &["--data-dir", &path(&dir_a)]).await?;
    let b = env.http_service("gateway", &vars, &["--data-dir", &path(&dir_b)]).await?;
    for gw in [&a, &b] {
        env.wait_for_model(gw, &key, MODEL).await?;
        assert_eq!(env.chat(gw, &key, false).await?.0, 200);
        assert_eq!(env.chat(gw, &key, true).await?.0, 200);
    }
    // Either gateway reads the ledger the worker projects.
    env.wait_for_usage(&a, &key, 4).await?;
    env.wait_for_usage(&b, &key, 4).await?;
    // A key revoked through the CLI is refused by both gateways.
    env.cli(&["keys", "revoke", &key])?;
    let deadline = Instant::now() + Duration::from_secs(2);
    for gw in [&a, &b] {
        while env.chat(gw, &key, false).await?.0 != 401 {
            anyhow::ensure!(Instant::now() < deadline, "revoked key still accepted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

#[tokio::test]
async fn anthropic_api_key_in_the_environment_creates_a_default_anthropic_channel() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let fake = testkit::fake_anthropic::FakeAnthropic::start().await?;
    // The Anthropic SDK's convention: the host without `/v1`.
    let host = fake.base_url().trim_end_matches("/v1").to_owned();
    let serve =
        env.serve_with_env(&[("ANTHROPIC_API_KEY", "sk-ant-env-upstream"), ("ANTHROPIC_BASE_URL", &host)]).await?;
    let key = serve.first_key().ok_or_else(|| anyhow::anyhow!("no first key:\n{}", serve.log()))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = env.chat(&serve, &key, false).await?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "default anthropic channel never served: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = fake.requests();
    let last = seen.last().ok_or_else(|| anyhow::anyhow!("the fake Anthropic upstream saw nothing"))?;
    assert_eq!(last.header("x-api-key"), Some("sk-ant-env-upstream"));
    assert!(env.cli(&["channels", "list"])?.contains("anthropic"));
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn serve_keeps_its_data_owner_only_and_answers_a_wrong_method_in_the_protocol_shape() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;

    use anyhow::Context as _;
    let env = Env::new(Backend::Embedded).await?;
    let data = env.data.path().join("fresh");
    let data_arg = data.to_str().context("non-UTF-8 temp path")?.to_owned();
    let serve = env.serve_with(&[], &["--data-dir", &data_arg]).await?;
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    assert_eq!(mode(&data)?, 0o700);
    for file in ["events.db", "read.db", "master.key"] {
        assert_eq!(mode(&data.join(file))?, 0o600, "{file}");
    }
    let key = serve.first_key().context("no first-start key")?;
    let resp = env.http.get(format!("{}/v1/chat/completions", serve.base)).bearer_auth(&key).send().await?;
    assert_eq!(resp.status(), 405);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    // SIGTERM: the server loop stops accepting and the process exits.
    let log = serve.log();
    assert!(log.contains("Listening."), "{log}");
    serve.stop()?;
    Ok(())
}
/// Read-your-writes: what an admin command did is in force for the next request after it
/// returns — a new key (twenty in a row, each used at once), a channel update and a price.
async fn an_admin_change_is_in_force_for_the_next_request(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    env.cli(&["tenants", "create", "acme"])?;
    let mut key = String::new();
    for i in 0..20 {
        let out = env.cli(&["keys", "create", "--tenant", "acme"])?;
        key = out.lines().last().unwrap_or_default().to_owned();
        let (status, body) = env.chat(&serve, &key, false).await?;
        anyhow::ensure!(status == 200, "key {i} got {status} on its first request: {body}\n{}", serve.log());
    }
    env.cli(&["channels", "update", "fake", "--models", &format!("{MODEL},{EMBED_MODEL},brand-new-model")])?;
    let body = serde_json::json!({"model": "brand-new-model", "messages": [{"role": "user", "content": "hi"}]});
    let r = env.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(&key).json(&body).send().await?;
    anyhow::ensure!(r.status() == 200, "a model added by `channels update` got {}", r.status());

    let out = env.cli(&["prices", "set", "--model", MODEL, "--input", "9", "--output", "9"])?;
    let version = out.split("version ").nth(1).map(|v| v.trim_end_matches([')', '.', '\n']).to_owned());
    let body = serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let r = env.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(&key).json(&body).send().await?;
    anyhow::ensure!(r.status() == 200);
    let id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let rows = env.ledger_rows(&id).await?;
    anyhow::ensure!(rows.len() == 1 && rows[0].price_version == version, "charged {rows:?}, set {version:?}");
    Ok(())
}

#[tokio::test]
async fn an_admin_change_is_in_force_for_the_next_request_embedded() -> anyhow::Result<()> {
    an_admin_change_is_in_force_for_the_next_request(Backend::Embedded).await
}

#[tokio::test]
async fn an_admin_change_is_in_force_for_the_next_request_cluster() -> anyhow::Result<()> {
    an_admin_change_is_in_force_for_the_next_request(Backend::Cluster).await
}
