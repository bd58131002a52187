//! `GET /api/requests` and `GET /api/dashboard/stats` over HTTP against the real binary, on the
//! embedded log with SQLite and on JetStream with Postgres: filters, cursor paging without gaps
//! or repeats, tenant isolation both ways, the role table, and stats matching a computation
//! from the logged rows.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::{Value, json};

use crate::helpers::{Backend, Env, MODEL};

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

async fn get(env: &Env, url: &str, token: &str) -> anyhow::Result<(u16, Value)> {
    let r = env.http.get(url).bearer_auth(token).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or_default()))
}

/// Every row of `/api/requests?{q}`, `limit` at a time, following `next_cursor`.
async fn all_rows(env: &Env, base: &str, token: &str, q: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{base}/api/requests?limit={limit}&{q}");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let (status, page) = get(env, &url, token).await?;
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

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect()
}

async fn request_log_over_http(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    env.add_fake_channel()?;
    let acme = env.tenant_key("acme")?;
    let beta = env.tenant_key("beta")?;
    env.wait_for_model(&serve, &acme, MODEL).await?;
    env.wait_for_model(&serve, &beta, MODEL).await?;
    for _ in 0..4 {
        ensure!(env.chat(&serve, &acme, false).await?.0 == 200);
    }
    ensure!(env.chat(&serve, &acme, true).await?.0 == 200);
    ensure!(env.chat(&serve, &beta, false).await?.0 == 200);
    // A refused request is logged too (the model does not exist).
    let bad = json!({"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]});
    let r = env.http.post(format!("{base}/v1/chat/completions")).bearer_auth(&acme).json(&bad).send().await?;
    ensure!(r.status().is_client_error(), "{}", r.status());

    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let acme_rows = loop {
        let rows = all_rows(&env, &base, &owner, "tenant=acme", 200).await?;
        if rows.len() >= 6 {
            break rows;
        }
        if Instant::now() > deadline {
            bail!("the request log never showed acme's 6 requests: {rows:?}\n{}", serve.log());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ensure!(acme_rows.len() == 6 && acme_rows.iter().all(|r| r["tenant"] == "acme"), "{acme_rows:?}");
    ensure!(acme_rows.iter().filter(|r| r["streamed"] == true).count() == 1);
    let key_id = acme_rows[0]["key_id"].as_str().context("a key id")?.to_owned();
    // Newest first; paging by 2 gives the same rows, none twice.
    let paged = all_rows(&env, &base, &owner, "tenant=acme", 2).await?;
    ensure!(ids(&paged) == ids(&acme_rows), "paging: {:?} vs {:?}", ids(&paged), ids(&acme_rows));
    let times: Vec<&str> = acme_rows.iter().filter_map(|r| r["at"].as_str()).collect();
    ensure!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let ok: Vec<String> = ids(&acme_rows.iter().filter(|r| r["status"] == 200).cloned().collect::<Vec<_>>());
    let failed: Vec<String> =
        ids(&acme_rows.iter().filter(|r| r["status"].as_i64().is_some_and(|s| s >= 400)).cloned().collect::<Vec<_>>());
    ensure!(ok.len() == 5 && failed.len() == 1, "{acme_rows:?}");
    for (q, want) in [
        ("tenant=acme&status=2xx".to_owned(), ok.clone()),
        ("tenant=acme&status=200".to_owned(), ok.clone()),
        ("tenant=acme&status=4xx".to_owned(), failed.clone()),
        (format!("tenant=acme&model={MODEL}"), ok.clone()),
        (format!("key={key_id}"), ids(&acme_rows)),
        ("tenant=acme&status=5xx".to_owned(), vec![]),
    ] {
        let got = ids(&all_rows(&env, &base, &owner, &q, 50).await?);
        ensure!(got == want, "{q}: {got:?} want {want:?}");
    }
    let err_class = acme_rows.iter().find(|r| r["status"] != 200).and_then(|r| r["error_class"].as_str());
    if let Some(class) = err_class {
        let got = ids(&all_rows(&env, &base, &owner, &format!("tenant=acme&error_class={class}"), 50).await?);
        ensure!(got == failed, "error_class={class}: {got:?}");
    }
    let everyone = all_rows(&env, &base, &owner, "", 50).await?;
    ensure!(everyone.len() == 7, "{everyone:?}");
    let future = "2099-01-01T00:00:00Z";
    ensure!(all_rows(&env, &base, &owner, &format!("from={future}"), 50).await?.is_empty());
    ensure!(all_rows(&env, &base, &owner, &format!("to={future}"), 50).await?.len() == 7);
    for (q, want) in [("status=6xx", 400), ("colour=red", 400), ("after=garbage!", 400), ("from=yesterday", 400)] {
        let (status, body) = get(&env, &format!("{base}/api/requests?{q}"), &owner).await?;
        ensure!(status == want, "{q}: {status} {body}");
    }

    // Roles and tenants.
    let mut tokens = std::collections::BTreeMap::new();
    for (name, role, tenant) in [
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("acme-viewer", "viewer", Some("acme")),
        ("beta-admin", "admin", Some("beta")),
        ("beta-billing", "billing", Some("beta")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let r = env.http.post(format!("{base}/api/users")).bearer_auth(&owner).json(&body).send().await?;
        ensure!(r.status() == 201, "create {name}: {}", r.status());
        let created: Value = r.json().await?;
        let password = created["password"].as_str().context("a generated password")?;
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), password).await?);
    }
    for (who, path, want) in [
        ("viewer", "/api/requests", 200),
        ("billing", "/api/requests", 403),
        ("acme-viewer", "/api/requests", 200),
        ("acme-viewer", "/api/requests?tenant=beta", 404),
        ("beta-admin", "/api/requests?tenant=acme", 404),
        ("viewer", "/api/dashboard/stats", 200),
        ("billing", "/api/dashboard/stats", 200),
        ("beta-billing", "/api/dashboard/stats?tenant=acme", 404),
        ("acme-viewer", "/api/dashboard/stats?tenant=beta", 404),
    ] {
        let (status, body) = get(&env, &format!("{base}{path}"), &tokens[who]).await?;
        ensure!(status == want, "{who} {path}: {status} {body}");
    }
    let seen = all_rows(&env, &base, &tokens["acme-viewer"], "", 50).await?;
    ensure!(ids(&seen) == ids(&acme_rows), "a tenant's user sees its rows alone");
    let seen = all_rows(&env, &base, &tokens["beta-admin"], &format!("key={key_id}"), 50).await?;
    ensure!(seen.is_empty(), "another tenant's key filter shows nothing: {seen:?}");
    let seen = all_rows(&env, &base, &tokens["beta-admin"], "", 50).await?;
    ensure!(seen.len() == 1 && seen[0]["tenant"] == "beta", "{seen:?}");

    // Stats: counts and percentiles from the logged rows; tokens and cost from the ledger.
    env.wait_for_usage(&serve, &acme, 5).await?;
    let now = chrono::Utc::now();
    let (from, to) = ((now - chrono::Duration::hours(1)).to_rfc3339(), (now + chrono::Duration::hours(1)).to_rfc3339());
    let url = format!("{base}/api/dashboard/stats?tenant=acme&from={}&to={}", urlencode(&from), urlencode(&to));
    let (status, stats) = get(&env, &url, &owner).await?;
    ensure!(status == 200, "{status} {stats}");
    let mut lat: Vec<i64> = acme_rows.iter().filter_map(|r| r["latency_us"].as_i64()).collect();
    lat.sort_unstable();
    let pct = |q: usize| {
        let v = lat[(lat.len() * q).div_ceil(100) - 1];
        projections::read::bucket_upper_us(projections::read::latency_bucket(v))
    };
    ensure!(stats["requests"] == 6 && stats["succeeded"] == 5 && stats["client_errors"] == 1, "{stats}");
    ensure!(stats["latency_p50_us"] == pct(50) && stats["latency_p95_us"] == pct(95), "{stats} vs {lat:?}");
    ensure!(stats["success_rate"].as_f64().is_some_and(|r| (r - 5.0 / 6.0).abs() < 1e-9), "{stats}");
    ensure!(stats["billed_requests"] == 5 && stats["input_tokens"].as_i64().is_some_and(|t| t > 0), "{stats}");
    ensure!(stats["cost"][0]["cost_nanos"].as_i64().is_some_and(|c| c > 0), "{stats}");
    let (_, all) = get(&env, &format!("{base}/api/dashboard/stats"), &owner).await?;
    ensure!(all["requests"] == 7 && all["tenant"].is_null(), "{all}");
    let (_, own) = get(&env, &format!("{base}/api/dashboard/stats"), &tokens["beta-billing"]).await?;
    ensure!(own["requests"] == 1 && own["tenant"] == "beta", "{own}");
    let (status, _) =
        get(&env, &format!("{base}/api/dashboard/stats?from={}&to={}", urlencode(&to), urlencode(&from)), &owner)
            .await?;
    ensure!(status == 400, "from after to");
    Ok(())
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn the_request_log_and_dashboard_stats_over_http_embedded() -> anyhow::Result<()> {
    request_log_over_http(Backend::Embedded).await
}

#[tokio::test]
async fn the_request_log_and_dashboard_stats_over_http_cluster() -> anyhow::Result<()> {
    request_log_over_http(Backend::Cluster).await
}

/// The last enabled owner cannot be disabled or demoted, over HTTP (409 `last_owner`) or the
/// CLI (an error); with a second owner both work.
#[tokio::test]
async fn the_last_enabled_owner_cannot_be_disabled_or_demoted() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let (_, me) = get(&env, &format!("{base}/api/auth/me"), &owner).await?;
    let me_id = me["id"].as_str().or_else(|| me["user"]["id"].as_str()).context("my id")?.to_owned();
    let send = |method: &str, path: String, body: Option<Value>| {
        let mut r = env.http.request(method.parse().unwrap_or_default(), format!("{base}{path}")).bearer_auth(&owner);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let r = send("PATCH", format!("/api/users/{me_id}"), Some(json!({"role": "admin"}))).await?;
    ensure!(r.status() == 409, "demote: {}", r.status());
    let body: Value = r.json().await?;
    ensure!(body["error"]["code"] == "last_owner", "{body}");
    let r = send("DELETE", format!("/api/users/{me_id}"), None).await?;
    ensure!(r.status() == 409, "disable: {}", r.status());
    let err = env.cli_fails(&["users", "disable", "admin@localhost"])?;
    ensure!(err.contains("last enabled owner"), "{err}");
    // With a second owner, the first can go.
    let r = send("POST", "/api/users".into(), Some(json!({"email": "o2@x.example", "role": "owner"}))).await?;
    ensure!(r.status() == 201, "second owner: {}", r.status());
    let second: Value = r.json().await?;
    let second_id = second["id"].as_str().context("id")?.to_owned();
    env.cli(&["users", "disable", "admin@localhost"])?;
    let other = token(&env, &base, "o2@x.example", second["password"].as_str().context("password")?).await?;
    let r = env.http.delete(format!("{base}/api/users/{second_id}")).bearer_auth(&other).send().await?;
    ensure!(r.status() == 409, "the second is now the last: {}", r.status());
    Ok(())
}
