//! `/api/health/*` through the real binary on both backends: the health of each upstream key
//! after probes against a fake upstream that refuses a key and then takes it again (state,
//! history, availability), a check run now (one per key at a time), the counts in the open
//! `GET /api/health`, a low balance read from a fake DeepSeek balance endpoint, the channel's
//! spend where the vendor tells no balance, and the role and tenant table.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use testkit::fake_openai::Scenario;

use crate::helpers::{Backend, Env, MODEL};

const K1: &str = "sk-upstream-health-key-111";
const K2: &str = "sk-upstream-health-key-222";
const K3: &str = "sk-deepseek-health-key-333";

async fn token(env: &Env, base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let r = env
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    ensure!(r.status() == 200, "login of {email}: {}", r.status());
    let body: Value = r.json().await?;
    body["token"].as_str().map(str::to_owned).context("no token")
}

async fn call(env: &Env, method: &str, url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let r = env.http.request(method.parse()?, url).bearer_auth(token).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or_default()))
}

/// The health view of `key_id`.
async fn key_health(env: &Env, base: &str, token: &str, key_id: &str) -> anyhow::Result<Value> {
    let (status, body) = call(env, "GET", &format!("{base}/api/health/api-keys/{key_id}"), token).await?;
    ensure!(status == 200, "{key_id}: {status} {body}");
    Ok(body)
}

/// Waits until `pred` holds for the health view of `key_id`; returns it.
async fn wait_health(
    env: &Env,
    base: &str,
    token: &str,
    key_id: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = key_health(env, base, token, key_id).await?;
        if pred(&v) {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "{key_id} never became {what}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every row of `/api/health/history?{q}`, `limit` at a time.
async fn history(env: &Env, base: &str, token: &str, q: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/health/history?limit={limit}&{q}");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let (status, page) = call(env, "GET", &url, token).await?;
        ensure!(status == 200, "{url}: {status} {page}");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        ensure!(data.len() <= limit as usize);
        out.extend(data);
        match page["next_cursor"].as_str() {
            Some(c) => after = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

/// The `channels keys list` key ids of `channel`, in order.
fn key_ids(env: &Env, channel: &str) -> anyhow::Result<Vec<String>> {
    Ok(env
        .cli(&["channels", "keys", "list", channel])?
        .lines()
        .skip(1)
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect())
}

async fn health_api(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env
        .serve_with_env(&[
            ("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123"),
            ("HEALTH_CHECK_ENABLED", "true"),
            ("HEALTH_CHECK_INTERVAL", "1"),
            ("HEALTH_CHECK_TIMEOUT", "2"),
            ("HEALTH_CHECK_RETRY_COUNT", "0"),
            ("HEALTH_CHECK_FAILURE_THRESHOLD", "2"),
        ])
        .await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let fake = env.fake.base_url();
    env.fake.set_balance(Some("3.50"));
    let add = |name: &str, provider: &str, keys: &[&str]| {
        let mut args = vec!["channels", "add", "--name", name, "--provider", provider, "--base-url", &fake];
        for k in keys {
            args.extend(["--api-key", *k]);
        }
        args.extend(["--models", MODEL]);
        env.cli(&args).map(|_| ())
    };
    add("probed", "openai", &[K1, K2])?;
    add("ds", "deepseek", &[K3])?;
    env.cli(&["prices", "set", "--model", MODEL, "--input", "1", "--output", "2"])?;
    let probed = key_ids(&env, "probed")?;
    let ds = key_ids(&env, "ds")?;
    ensure!(probed.len() == 2 && ds.len() == 1, "{probed:?} {ds:?}");
    let (k1, k2, k3) = (probed[0].clone(), probed[1].clone(), ds[0].clone());
    let ch_probed = key_health(&env, &base, &owner, &k2).await?["channel_id"].as_str().unwrap_or_default().to_owned();

    // The upstream refuses K1: probes fail, the key goes down; then it answers again.
    env.fake.set_key_scenario(K1, Some(Scenario::FailStatus { status: 401, retry_after: None }));
    let down = wait_health(&env, &base, &owner, &k1, "down", |v| v["health"] == "down").await?;
    ensure!(down["state"] == "disabled" && !down["manual"].as_bool().unwrap_or(true), "{down}");
    env.fake.set_key_scenario(K1, None);
    let back = wait_health(&env, &base, &owner, &k1, "healthy", |v| v["health"] == "healthy").await?;
    ensure!(back["state"] == "active" && back["last_check"]["outcome"] == "ok", "{back}");
    let day = &back["availability"]["last_24h"];
    let (ok, failed) = (day["ok"].as_i64().unwrap_or(0), day["failed"].as_i64().unwrap_or(0));
    ensure!(ok >= 1 && failed >= 2, "{back}");
    let share = day["availability"].as_f64().unwrap_or(-1.0);
    ensure!((share - ok as f64 / (ok + failed) as f64).abs() < 1e-9, "{back}");
    ensure!(back["availability"]["last_30d"]["failed"].as_i64() >= Some(failed), "{back}");

    // The history of K1: its failures, then its recovery, newest first; pages of 2 give the
    // same rows as one page.
    let rows = history(&env, &base, &owner, &format!("resource={k1}"), 200).await?;
    ensure!(rows.iter().all(|r| r["resource"] == k1.as_str()), "only K1");
    let outcomes: Vec<&str> = rows.iter().filter_map(|r| r["outcome"].as_str()).collect();
    let first_ok = outcomes.iter().position(|o| *o == "ok").context("an ok probe")?;
    ensure!(outcomes[first_ok..].contains(&"key_invalid"), "a failure before the latest success: {outcomes:?}");
    // Before the newest row, the history no longer moves: pages of 2 give what one page gives.
    let fixed = format!("resource={k1}&to={}", rows[0]["at"].as_str().unwrap_or_default());
    let one = history(&env, &base, &owner, &fixed, 200).await?;
    let paged = history(&env, &base, &owner, &fixed, 2).await?;
    ensure!(
        one == paged && one.len() + 1 == rows.len(),
        "paging: {} rows, {} paged, {} in all",
        one.len(),
        paged.len(),
        rows.len()
    );
    let until = rows[rows.len() - 1]["at"].as_str().unwrap_or_default().to_owned();
    let before = history(&env, &base, &owner, &format!("resource={k1}&to={until}"), 50).await?;
    ensure!(before.is_empty(), "nothing before the first probe: {before:?}");

    // A low balance on the DeepSeek key: degraded, not disabled; a top-up makes it healthy.
    let v = wait_health(&env, &base, &owner, &k3, "probed with a balance", |v| v["balance"].is_object()).await?;
    ensure!(v["balance_source"] == "vendor" && v["balance"]["currency"] == "CNY", "{v}");
    ensure!(v["balance"]["nanos"] == 3_500_000_000i64 && v["health"] == "healthy", "no threshold yet: {v}");
    env.cli(&["channels", "keys", "low-balance", "ds", &k3, "5"])?;
    let low = wait_health(&env, &base, &owner, &k3, "low", |v| v["health"] == "degraded").await?;
    ensure!(low["health_reason"] == "low_balance" && low["state"] == "active", "{low}");
    ensure!(low["low_balance_threshold"] == "5.000000000", "{low}");
    // The same threshold over the admin API: set, refused when not a decimal, cleared, set again.
    let key_url = format!("{base}/api/channels/{}/keys/{k3}", low["channel_id"].as_str().unwrap_or_default());
    for (body, want) in [
        (json!({"low_balance_threshold": "2.5"}), 200),
        (json!({"low_balance_threshold": "-1"}), 422),
        (json!({"low_balance_threshold": 7}), 422),
        (json!({}), 422),
        (json!({"low_balance_threshold": null}), 200),
        (json!({"low_balance_threshold": "5"}), 200),
    ] {
        let r = env.http.patch(&key_url).bearer_auth(&owner).json(&body).send().await?;
        let status = r.status().as_u16();
        let answer: Value = r.json().await.unwrap_or_default();
        ensure!(status == want, "PATCH {body}: {status} {answer}");
        if status == 200 {
            let shown = answer["keys"].as_array().and_then(|ks| ks.iter().find(|k| k["id"] == k3.as_str()).cloned());
            let want_shown =
                body["low_balance_threshold"].as_str().map(|a| if a == "2.5" { "2.500000000" } else { "5.000000000" });
            ensure!(
                shown.as_ref().map(|k| k["low_balance_threshold"].as_str()) == Some(want_shown),
                "{body}: {answer}"
            );
        }
    }
    let again =
        wait_health(&env, &base, &owner, &k3, "low again", |v| v["low_balance_threshold"] == "5.000000000").await?;
    ensure!(again["health"] == "degraded" && again["health_reason"] == "low_balance", "{again}");
    env.fake.set_balance(Some("12.00"));
    wait_health(&env, &base, &owner, &k3, "topped up", |v| {
        v["health"] == "healthy" && v["balance"]["nanos"] == 12_000_000_000i64
    })
    .await?;

    // No balance from OpenAI: the channel's spend from the ledger instead.
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let spend = loop {
        let v = key_health(&env, &base, &owner, &k2).await?;
        ensure!(v["balance"].is_null() && v["balance_source"] == "unsupported", "{v}");
        let spend = v["spend_30d_channel"].as_array().cloned().context("spend_30d_channel")?;
        if spend.iter().any(|s| s["requests"].as_i64() >= Some(1)) {
            break spend;
        }
        if Instant::now() > deadline {
            anyhow::bail!("no spend shown: {v}");
        }
        let served: Vec<String> = env
            .fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions"))
            .filter_map(|r| r.authorization().map(str::to_owned))
            .collect();
        if !served.iter().any(|a| a.contains(K1) || a.contains(K2)) {
            ensure!(env.chat(&serve, &key, false).await?.0 == 200);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    ensure!(spend.iter().all(|s| s["currency"].is_string() && s["cost_nanos"].as_i64() > Some(0)), "{spend:?}");
    ensure!(key_health(&env, &base, &owner, &k3).await?["spend_30d_channel"].is_null());

    // Check now: the worker's probe, an on-demand event in the history.
    let (status, checked) = call(&env, "POST", &format!("{base}/api/health/api-keys/{k2}/check"), &owner).await?;
    ensure!(status == 200 && checked["ok"] == true && checked["on_demand"] == true, "{status} {checked}");
    ensure!(checked["outcome"] == "ok" && checked["resource"] == k2.as_str(), "{checked}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = history(&env, &base, &owner, &format!("resource={k2}"), 200).await?;
        if rows.iter().any(|r| r["on_demand"] == true) {
            break;
        }
        ensure!(Instant::now() < deadline, "the check is not in the history");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // One check per key at a time: while the upstream hangs, a second check of it is refused.
    env.fake.set_key_scenario(K2, Some(Scenario::Hang));
    let url = format!("{base}/api/health/api-keys/{k2}/check");
    let slow = {
        let (http, url, owner) = (env.http.clone(), url.clone(), owner.clone());
        tokio::spawn(async move { http.post(url).bearer_auth(owner).send().await.map(|r| r.status().as_u16()) })
    };
    let started = Instant::now();
    let second = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, body) = call(&env, "POST", &url, &owner).await?;
        if status != 200 || started.elapsed() > Duration::from_secs(10) {
            break (status, body);
        }
    };
    ensure!(second.0 == 409 && second.1["error"]["code"] == "check_in_progress", "{second:?}");
    let first = slow.await??;
    ensure!(first == 200, "the hanging check answers once its timeout passes: {first}");
    ensure!(started.elapsed() < Duration::from_secs(10), "bounded by the health-check timeout");
    env.fake.set_key_scenario(K2, None);

    // The open summary: counts only.
    let r = env.http.get(format!("{base}/api/health")).send().await?;
    let text = r.text().await?;
    let summary: Value = serde_json::from_str(&text)?;
    let counts = &summary["upstream_keys"];
    let total: i64 = ["healthy", "degraded", "down", "unknown"].iter().filter_map(|k| counts[*k].as_i64()).sum();
    ensure!(total == 3, "{summary}");
    ensure!(!text.contains("ukey_") && !text.contains("acme") && !text.contains("sk-"), "{text}");
    env.fake.set_key_scenario(K1, Some(Scenario::FailStatus { status: 401, retry_after: None }));
    wait_health(&env, &base, &owner, &k1, "down again", |v| v["health"] == "down").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s: Value = env.http.get(format!("{base}/api/health")).send().await?.json().await?;
        if s["upstream_keys"]["down"].as_i64() >= Some(1) {
            break;
        }
        ensure!(Instant::now() < deadline, "the summary never counted the down key: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The list: every key once, in id order; never a key itself.
    let (status, list) = call(&env, "GET", &format!("{base}/api/health/api-keys?limit=2"), &owner).await?;
    ensure!(status == 200 && list["data"].as_array().map(Vec::len) == Some(2), "{list}");
    let cursor = list["next_cursor"].as_str().context("a second page")?.to_owned();
    let (_, rest) = call(&env, "GET", &format!("{base}/api/health/api-keys?limit=2&after={cursor}"), &owner).await?;
    let mut all: Vec<String> = list["data"]
        .as_array()
        .into_iter()
        .chain(rest["data"].as_array())
        .flatten()
        .filter_map(|k| k["id"].as_str().map(str::to_owned))
        .collect();
    ensure!(all.len() == 3 && rest["next_cursor"].is_null(), "{all:?}");
    let mut sorted = all.clone();
    sorted.sort();
    ensure!(all == sorted);
    all.sort();
    let mut want = vec![k1.clone(), k2.clone(), k3.clone()];
    want.sort();
    ensure!(all == want);
    let text = list.to_string() + &rest.to_string();
    ensure!(!text.contains(K1) && !text.contains(K2) && !text.contains(K3), "keys never leave");
    ensure!(list["data"][0]["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:")), "{list}");

    // Roles and tenants: upstream keys are shared; a tenant-scoped user sees none of them.
    let mut tokens = std::collections::BTreeMap::new();
    for (name, role, tenant) in [
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("admin", "admin", None),
        ("acme-admin", "admin", Some("acme")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let r = env.http.post(format!("{base}/api/users")).bearer_auth(&owner).json(&body).send().await?;
        ensure!(r.status() == 201, "create {name}: {}", r.status());
        let created: Value = r.json().await?;
        let password = created["password"].as_str().context("password")?.to_owned();
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), &password).await?);
    }
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("viewer", "GET", "/api/health/api-keys".into(), 200),
        ("viewer", "GET", format!("/api/health/api-keys/{k2}"), 200),
        ("viewer", "GET", "/api/health/history".into(), 200),
        ("viewer", "POST", format!("/api/health/api-keys/{k2}/check"), 403),
        ("billing", "GET", "/api/health/api-keys".into(), 403),
        ("billing", "GET", "/api/health/history".into(), 403),
        ("billing", "POST", format!("/api/health/api-keys/{k2}/check"), 403),
        ("admin", "GET", format!("/api/health/api-keys/{k3}"), 200),
        ("admin", "POST", format!("/api/health/api-keys/{k3}/check"), 200),
        ("acme-admin", "GET", format!("/api/health/api-keys/{k2}"), 404),
        ("acme-admin", "POST", format!("/api/health/api-keys/{k2}/check"), 404),
        ("admin", "GET", "/api/health/api-keys/ukey_nope".into(), 404),
        ("admin", "GET", "/api/health/api-keys/not-a-key".into(), 404),
        ("admin", "GET", "/api/health/history?from=yesterday".into(), 400),
        ("admin", "GET", "/api/health/history?after=garbage!".into(), 400),
        ("admin", "GET", "/api/health/history?colour=red".into(), 400),
    ];
    for (who, method, path, want) in cases {
        let (status, body) = call(&env, method, &format!("{base}{path}"), &tokens[who]).await?;
        ensure!(status == want, "{who} {method} {path}: {status} {body}, want {want}");
    }
    for who in ["viewer", "acme-admin"] {
        let r = env
            .http
            .patch(format!("{base}/api/channels/{ch_probed}/keys/{k2}"))
            .bearer_auth(&tokens[who])
            .json(&json!({"low_balance_threshold": "1"}))
            .send()
            .await?;
        let want = if who == "viewer" { 403 } else { 404 };
        ensure!(r.status().as_u16() == want, "{who} PATCH a key: {}", r.status());
    }
    let (_, scoped) = call(&env, "GET", &format!("{base}/api/health/api-keys"), &tokens["acme-admin"]).await?;
    ensure!(scoped["data"].as_array().is_some_and(Vec::is_empty), "{scoped}");
    let (_, scoped) = call(&env, "GET", &format!("{base}/api/health/history"), &tokens["acme-admin"]).await?;
    ensure!(scoped["data"].as_array().is_some_and(Vec::is_empty), "{scoped}");
    let r = env.http.get(format!("{base}/api/health/api-keys")).send().await?;
    ensure!(r.status() == 401, "no session: {}", r.status());
    Ok(())
}

#[tokio::test]
async fn health_api_reports_probes_checks_balances_and_roles_embedded() -> anyhow::Result<()> {
    health_api(Backend::Embedded).await
}

#[tokio::test]
async fn health_api_reports_probes_checks_balances_and_roles_cluster() -> anyhow::Result<()> {
    health_api(Backend::Cluster).await
}
