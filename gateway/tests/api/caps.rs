//! Per-key and per-tenant request caps and key expiry through the real HTTP interface (FAULTS
//! rows 22 and 24): `max_tokens` (and its synonyms) and `n` above the smallest of the gateway's,
//! the tenant's and the key's cap are refused with a 400 in the client's protocol naming the
//! parameter and the cap, before any upstream call; an expired key gets the 401 of an invalid
//! key. Runs on the embedded log and on JetStream (`LLMR_TEST_LOG`).

use std::time::Duration;

use anyhow::ensure;
use schemas::{EventBody, TenantUpdated};
use serde_json::{Value, json};

use crate::helpers::{self, MODEL, TENANT, TestApp, error_of, spawn};

/// Sends one request of each protocol with output tokens `out` and choices `n` using `key`;
/// returns the three statuses and bodies.
async fn three_protocols(app: &TestApp, key: &str, out: u64, n: u64) -> anyhow::Result<Vec<(u16, Value)>> {
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": out, "n": n});
    let openai = app.http.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&chat).send().await?;
    let msg = json!({"model": MODEL, "max_tokens": out, "messages": [{"role": "user", "content": "hi"}]});
    let anthropic = app.http.post(app.url("/v1/messages")).header("x-api-key", key).json(&msg).send().await?;
    let generate = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": out, "candidateCount": n}});
    let gemini = app
        .http
        .post(app.url(&format!("/v1beta/models/{MODEL}:generateContent")))
        .header("x-goog-api-key", key)
        .json(&generate)
        .send()
        .await?;
    let mut out = Vec::new();
    for r in [openai, anthropic, gemini] {
        let status = r.status().as_u16();
        let text = r.text().await?;
        out.push((status, serde_json::from_str(&text).unwrap_or(Value::Null)));
    }
    Ok(out)
}

/// Each protocol's refusal names `param` (per protocol) and the cap.
fn refused(answers: &[(u16, Value)], params: [&str; 3], cap: u64) -> anyhow::Result<()> {
    for ((status, body), param) in answers.iter().zip(params) {
        ensure!(*status == 400, "{param}: status {status}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        ensure!(message.contains(&format!("'{param}'")), "{param} is not named: {body}");
        ensure!(message.contains(&format!("<= {cap}")), "the cap {cap} is not named: {body}");
    }
    if let [openai, anthropic, gemini] = answers {
        ensure!(openai.1["error"]["param"] == params[0], "{}", openai.1);
        ensure!(anthropic.1["type"] == "error", "{}", anthropic.1);
        ensure!(gemini.1["error"]["status"] == "INVALID_ARGUMENT", "{}", gemini.1);
    }
    Ok(())
}

/// The status of an OpenAI chat request with `n` choices.
async fn chat_n(app: &TestApp, key: &str, n: u64) -> anyhow::Result<u16> {
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": n});
    Ok(app.http.post(app.url("/v1/chat/completions")).bearer_auth(key).json(&chat).send().await?.status().as_u16())
}

fn passed(answers: &[(u16, Value)]) -> anyhow::Result<()> {
    for (status, body) in answers {
        ensure!(*status == 200, "status {status}: {body}");
    }
    Ok(())
}

const OUT_PARAMS: [&str; 3] = ["max_tokens", "max_tokens", "generationConfig.maxOutputTokens"];

#[tokio::test]
async fn row22_a_key_cap_refuses_over_cap_requests_on_every_protocol_and_passes_at_the_cap() -> anyhow::Result<()> {
    let app = spawn().await?;
    let k = helpers::issue_key_with(&app.log, |k| {
        k.max_output_tokens = Some(500);
        k.max_n = Some(2);
    })
    .await?;
    refused(&three_protocols(&app, &k.plaintext, 501, 1).await?, OUT_PARAMS, 500)?;
    let over_n = three_protocols(&app, &k.plaintext, 10, 3).await?;
    // Anthropic has no `n`; OpenAI's and Gemini's are refused.
    refused(&[over_n[0].clone()], ["n", "", ""], 2)?;
    refused(&[over_n[2].clone()], ["generationConfig.candidateCount", "", ""], 2)?;
    ensure!(over_n[1].0 == 200, "{:?}", over_n[1]);
    ensure!(app.fake.requests().len() == 1, "a refused request reached the upstream");
    // At the cap everything passes (Gemini's `candidateCount` above 1 is refused by this
    // provider for its own reason, so `n` at the cap is tried on OpenAI's protocol).
    passed(&three_protocols(&app, &k.plaintext, 500, 1).await?)?;
    ensure!(chat_n(&app, &k.plaintext, 2).await? == 200);
    ensure!(app.fake.requests().len() == 5, "{} upstream calls", app.fake.requests().len());
    // The suite's own key, without caps, still has the gateway's limits only.
    passed(&three_protocols(&app, &app.key, 5000, 1).await?)?;
    ensure!(chat_n(&app, &app.key, 4).await? == 200);
    Ok(())
}

#[tokio::test]
async fn row22_a_tenant_cap_applies_to_its_keys_and_the_smallest_cap_wins() -> anyhow::Result<()> {
    let app = spawn().await?;
    let cap = |out, n| TenantUpdated {
        name: TENANT.into(),
        max_output_tokens: Some(out),
        max_n: Some(n),
        ..Default::default()
    };
    app.log.append_acked(&helpers::control(TENANT, EventBody::TenantUpdated(cap(300, 3)))).await?;
    // A key issued after the tenant's cap: its first request makes the gateway catch up with both.
    let plain = helpers::issue_key_with(&app.log, |_| {}).await?;
    let tighter = helpers::issue_key_with(&app.log, |k| k.max_output_tokens = Some(100)).await?;
    let looser = helpers::issue_key_with(&app.log, |k| k.max_output_tokens = Some(10_000)).await?;
    refused(&three_protocols(&app, &plain.plaintext, 301, 1).await?, OUT_PARAMS, 300)?;
    refused(&three_protocols(&app, &tighter.plaintext, 101, 1).await?, OUT_PARAMS, 100)?;
    refused(&three_protocols(&app, &looser.plaintext, 301, 1).await?, OUT_PARAMS, 300)?;
    let over_n = three_protocols(&app, &plain.plaintext, 10, 4).await?;
    refused(&[over_n[0].clone()], ["n", "", ""], 3)?;
    refused(&[over_n[2].clone()], ["generationConfig.candidateCount", "", ""], 3)?;
    // Anthropic has no `n`: that one passes.
    ensure!(app.fake.requests().len() == 1, "a refused request reached the upstream");
    passed(&three_protocols(&app, &plain.plaintext, 300, 1).await?)?;
    ensure!(chat_n(&app, &plain.plaintext, 3).await? == 200);
    passed(&three_protocols(&app, &tighter.plaintext, 100, 1).await?)?;
    // The gateway's own limit stays the ceiling above every cap.
    let resp = app
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2_000_000}),
        )
        .await?;
    ensure!(resp.status() == 400);
    // Removing the tenant's cap (0) lifts it for its keys, existing entries included.
    app.log.append_acked(&helpers::control(TENANT, EventBody::TenantUpdated(cap(0, 0)))).await?;
    let later = helpers::issue_key_with(&app.log, |_| {}).await?;
    passed(&three_protocols(&app, &later.plaintext, 5000, 1).await?)?;
    passed(&three_protocols(&app, &plain.plaintext, 5000, 1).await?)?;
    ensure!(chat_n(&app, &plain.plaintext, 4).await? == 200);
    // A request without max_tokens passes: the cap bounds what is asked for, as the global one does.
    let resp = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&tighter.plaintext)
        .json(&json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    Ok(())
}

#[tokio::test]
async fn row24_an_expiring_key_works_before_and_gets_401_after_without_an_upstream_call() -> anyhow::Result<()> {
    let app = helpers::spawn_with(|c| c.auth_failure_report_interval = Duration::from_millis(100)).await?;
    let expires_at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let k = helpers::issue_key_with(&app.log, |k| k.expires_at_us = Some(expires_at.timestamp_micros())).await?;
    passed(&three_protocols(&app, &k.plaintext, 10, 1).await?)?;
    let calls = app.fake.requests().len();
    let wait = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(100);
    tokio::time::sleep(wait).await;
    let answers = three_protocols(&app, &k.plaintext, 10, 1).await?;
    for (status, body) in &answers {
        ensure!(*status == 401, "status {status}: {body}");
    }
    ensure!(app.fake.requests().len() == calls, "an expired key reached the upstream");
    // The same shape as an unknown key: nothing tells the two apart.
    let unknown = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth("sk-this-key-does-not-exist-0123456789")
        .json(&json!({"model": MODEL, "messages": []}))
        .send()
        .await?;
    let (status, unknown) = error_of(unknown).await?;
    ensure!(status == 401 && unknown == answers[0].1, "{unknown} vs {}", answers[0].1);
    // Counted apart from unknown keys in the aggregate failure reports (never one event each).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let reports = app.failure_reports().await?;
        let (expired, unknown) = reports.iter().fold((0, 0), |(e, u), r| (e + r.expired, u + r.unknown));
        if expired == 3 && unknown == 1 {
            break;
        }
        ensure!(std::time::Instant::now() < deadline, "expired {expired}, unknown {unknown} counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Billed only for the three requests before the expiry.
    app.settled().await?;
    let usage = app.usage().await?;
    let billed = usage.iter().filter(|(_, u)| u.key_id == k.key_id).count();
    ensure!(billed == 3, "{billed} usage events for the expiring key");
    Ok(())
}
