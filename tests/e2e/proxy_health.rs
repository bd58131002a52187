//! Proxy health probes through the real binary on both backends: the worker in `serve` probes
//! each proxy of a pool against a loopback target, disables a stopped proxy after the threshold
//! (calls go on through the other node; the keys behind a dead pool are never marked), enables it
//! once it is back, never undoes an admin's disable; `/api/health/proxies` lists state, last
//! result and availability, `POST …/check` probes now (one per proxy at a time), the open
//! `GET /api/health` counts proxies; and a restarted worker continues a proxy's failure streak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde_json::{Value, json};
use testkit::proxy::{Kind, TestProxy};

use crate::helpers::{Backend, Env, MODEL};

const OWNER_PASSWORD: &str = "owner-password-proxy-77";

/// A probe target on loopback answering 204 at `/generate_204`, after `delay` milliseconds.
async fn target_server() -> anyhow::Result<(String, Arc<AtomicU64>)> {
    let delay = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route(
        "/generate_204",
        axum::routing::get({
            let delay = delay.clone();
            move || {
                let ms = delay.load(Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/generate_204"), delay))
}

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

/// Every proxy's health view, by name.
async fn proxies(env: &Env, base: &str, token: &str) -> anyhow::Result<Vec<Value>> {
    let (status, list) = call(env, "GET", &format!("{base}/api/health/proxies"), token).await?;
    ensure!(status == 200, "{status} {list}");
    Ok(list["data"].as_array().cloned().unwrap_or_default())
}

/// Waits until `pred` holds for the health view of the proxy named `name`; returns it.
async fn wait_proxy(
    env: &Env,
    base: &str,
    token: &str,
    name: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = proxies(env, base, token).await?;
        let v = all.iter().find(|p| p["name"] == name).cloned().unwrap_or_default();
        if pred(&v) {
            return Ok(v);
        }
        ensure!(Instant::now() < deadline, "{name} never became {what}: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn serve_env(target: &str, interval: &'static str) -> Vec<(&'static str, String)> {
    vec![
        ("LLM_ROUTER_ADMIN_PASSWORD", OWNER_PASSWORD.to_owned()),
        ("HEALTH_CHECK_ENABLED", "true".to_owned()),
        ("HEALTH_CHECK_INTERVAL", interval.to_owned()),
        ("HEALTH_CHECK_TIMEOUT", "2".to_owned()),
        ("HEALTH_CHECK_RETRY_COUNT", "0".to_owned()),
        ("HEALTH_CHECK_FAILURE_THRESHOLD", "2".to_owned()),
        ("HEALTH_CHECK_PROXY_TARGET", target.to_owned()),
        ("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS", "127.0.0.0/8".to_owned()),
    ]
}

async fn proxy_probes(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let (target, delay) = target_server().await?;
    let a = TestProxy::start(Kind::Socks5, None).await?;
    let b = TestProxy::start(Kind::Http, None).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.cli(&["proxies", "add", "--pool", "eu", "--url", &a.url(), "--name", "eu-a"])?;
    env.cli(&["proxies", "add", "--pool", "eu", "--url", &b.url(), "--name", "eu-b"])?;
    env.cli(&["channels", "update", "fake", "--proxy-pool", "eu"])?;
    let vars = serve_env(&target, "1");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = env.serve_with_env(&vars).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", OWNER_PASSWORD).await?;
    env.wait_for_model(&serve, &key, MODEL).await?;

    // Both proxies reach the target: healthy, with a latency.
    let healthy = |v: &Value| v["health"] == "healthy";
    let va = wait_proxy(&env, &base, &owner, "eu-a", "healthy", healthy).await?;
    wait_proxy(&env, &base, &owner, "eu-b", "healthy", healthy).await?;
    ensure!(va["url"] == a.url() && va["pool"] == "eu" && va["state"] == "active", "{va}");
    ensure!(va["last_check"]["latency_ms"].as_f64().is_some_and(|l| l > 0.0), "{va}");
    let a_id = va["id"].as_str().context("id")?.to_owned();
    ensure!(a.count("/generate_204") >= 1, "the probe did not go through the proxy");

    // A stopped proxy: disabled by probes after the threshold; calls go through the other node.
    a.stop();
    // The state comes from the control stream, the streak from the health projection: both.
    let down = wait_proxy(&env, &base, &owner, "eu-a", "disabled", |v| {
        v["state"] == "disabled" && v["failed_probes_in_a_row"].as_i64() >= Some(2)
    })
    .await?;
    ensure!(down["manual"] == false && down["health"] == "down", "{down}");
    ensure!(down["state_reason"].as_str().is_some_and(|r| r.starts_with("health_check_")), "{down}");
    ensure!(down["last_check"]["outcome"] == "proxy_failed", "{down}");
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(listed.lines().any(|l| l.contains("eu-a") && l.contains("\tdisabled\t")), "{listed}");
    let carried = b.count("/v1/chat/completions");
    for _ in 0..3 {
        let (status, body) = env.chat(&serve, &key, false).await?;
        ensure!(status == 200, "{status} {body}");
    }
    ensure!(b.count("/v1/chat/completions") == carried + 3, "the other node carries the calls");

    // The whole pool dead: the key behind it is probed and never marked.
    b.stop();
    wait_proxy(&env, &base, &owner, "eu-b", "disabled", |v| v["state"] == "disabled").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, keys) = call(&env, "GET", &format!("{base}/api/health/api-keys"), &owner).await?;
    ensure!(status == 200, "{status} {keys}");
    let k = &keys["data"][0];
    ensure!(k["state"] == "active" && k["last_check"]["outcome"] == "proxy_failed", "a dead proxy blamed a key: {k}");
    let list = env.cli(&["channels", "keys", "list", "fake"])?;
    ensure!(list.lines().nth(1).is_some_and(|l| l.contains("\tactive\t")), "{list}");

    // Back: enabled by the next probe that gets through; calls flow again.
    a.restart().await?;
    b.restart().await?;
    for name in ["eu-a", "eu-b"] {
        let back = wait_proxy(&env, &base, &owner, name, "back", |v| v["state"] == "active").await?;
        ensure!(back["state_reason"] == "recovered", "{back}");
    }
    let (status, body) = env.chat(&serve, &key, false).await?;
    ensure!(status == 200, "{status} {body}");

    // An admin's disable stands whatever probes see, until an admin enables it.
    env.cli(&["proxies", "disable", "eu-b"])?;
    let manual = wait_proxy(&env, &base, &owner, "eu-b", "disabled by hand", |v| v["manual"] == true).await?;
    ensure!(manual["state"] == "disabled" && manual["state_reason"] == "admin", "{manual}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = wait_proxy(&env, &base, &owner, "eu-b", "still disabled", |_| true).await?;
    ensure!(still["state"] == "disabled" && still["manual"] == true, "a probe undid an admin: {still}");
    let again = env.cli_fails(&["proxies", "disable", "eu-b"])?;
    ensure!(again.contains("disabled already"), "{again}");
    env.cli(&["proxies", "enable", "eu-b"])?;
    wait_proxy(&env, &base, &owner, "eu-b", "enabled", |v| v["state"] == "active" && v["manual"] == false).await?;

    // The history holds the proxy's probes; the open summary counts proxies (counts only).
    let (status, hist) =
        call(&env, "GET", &format!("{base}/api/health/history?resource={a_id}&limit=200"), &owner).await?;
    ensure!(status == 200, "{status} {hist}");
    let outcomes: Vec<&str> =
        hist["data"].as_array().into_iter().flatten().filter_map(|r| r["outcome"].as_str()).collect();
    ensure!(outcomes.contains(&"ok") && outcomes.contains(&"proxy_failed"), "{outcomes:?}");
    let text = env.http.get(format!("{base}/api/health")).send().await?.text().await?;
    let summary: Value = serde_json::from_str(&text)?;
    let counts = &summary["proxies"];
    let total: i64 = ["healthy", "degraded", "down", "unknown"].iter().filter_map(|k| counts[*k].as_i64()).sum();
    ensure!(total == 2, "{summary}");
    ensure!(!text.contains("px_") && !text.contains("127.0.0.1"), "{text}");

    // Check now: the worker's probe, on demand; unknown ids are 404.
    let (status, checked) = call(&env, "POST", &format!("{base}/api/health/proxies/{a_id}/check"), &owner).await?;
    ensure!(status == 200 && checked["ok"] == true && checked["on_demand"] == true, "{status} {checked}");
    ensure!(checked["outcome"] == "ok" && checked["resource"] == a_id.as_str(), "{checked}");
    for path in ["px_nope", "not-a-proxy"] {
        let (status, _) = call(&env, "POST", &format!("{base}/api/health/proxies/{path}/check"), &owner).await?;
        ensure!(status == 404, "{path}: {status}");
    }

    // Roles and tenants: as for the keys' health; a tenant-scoped user sees no proxy.
    let mut tokens = std::collections::BTreeMap::new();
    for (name, role, tenant) in
        [("viewer", "viewer", None), ("billing", "billing", None), ("acme-admin", "admin", Some("acme"))]
    {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let r = env.http.post(format!("{base}/api/users")).bearer_auth(&owner).json(&body).send().await?;
        ensure!(r.status() == 201, "create {name}: {}", r.status());
        let created: Value = r.json().await?;
        let password = created["password"].as_str().context("password")?.to_owned();
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), &password).await?);
    }
    let check = format!("/api/health/proxies/{a_id}/check");
    for (who, method, path, want) in [
        ("viewer", "GET", "/api/health/proxies", 200),
        ("viewer", "POST", check.as_str(), 403),
        ("billing", "GET", "/api/health/proxies", 403),
        ("billing", "POST", check.as_str(), 403),
        ("acme-admin", "POST", check.as_str(), 404),
    ] {
        let (status, body) = call(&env, method, &format!("{base}{path}"), &tokens[who]).await?;
        ensure!(status == want, "{who} {method} {path}: {status} {body}, want {want}");
    }
    let (_, scoped) = call(&env, "GET", &format!("{base}/api/health/proxies"), &tokens["acme-admin"]).await?;
    ensure!(scoped["data"].as_array().is_some_and(Vec::is_empty), "{scoped}");
    let r = env.http.get(format!("{base}/api/health/proxies")).send().await?;
    ensure!(r.status() == 401, "no session: {}", r.status());
    let (status, page) = call(&env, "GET", &format!("{base}/api/health/proxies?limit=1"), &owner).await?;
    let cursor = page["next_cursor"].as_str().context("a second page")?;
    let (_, rest) = call(&env, "GET", &format!("{base}/api/health/proxies?limit=1&after={cursor}"), &owner).await?;
    ensure!(status == 200 && page["data"][0]["id"].as_str() < rest["data"][0]["id"].as_str(), "{page} {rest}");
    ensure!(rest["next_cursor"].is_null(), "{rest}");

    // One check per proxy at a time: while the target is slow, a second check is refused. (Last:
    // the slow target fails the scheduled probes too.)
    delay.store(3_000, Ordering::SeqCst);
    let url = format!("{base}{check}");
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
    ensure!(slow.await?? == 200, "the slow check answers once its timeout passes");
    ensure!(started.elapsed() < Duration::from_secs(10), "bounded by the health-check timeout");
    Ok(())
}

#[tokio::test]
async fn a_stopped_proxy_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays_embedded() -> anyhow::Result<()>
{
    proxy_probes(Backend::Embedded).await
}

#[tokio::test]
async fn a_stopped_proxy_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays_cluster() -> anyhow::Result<()>
{
    proxy_probes(Backend::Cluster).await
}

/// The streak survives a restart: a proxy that failed one probe before the worker stopped is
/// disabled by the first failed probe after it starts again (threshold 2), long before a worker
/// counting from zero would (its second round is an interval later).
async fn a_restarted_worker_continues_the_streak(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let (target, _) = target_server().await?;
    let a = TestProxy::start(Kind::Socks5, None).await?;
    env.cli(&["proxies", "add", "--pool", "eu", "--url", &a.url(), "--name", "eu-a"])?;
    // A long interval: the worker probes once at start, then after 6 s.
    let vars = serve_env(&target, "6");
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let serve = env.serve_with_env(&vars).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", OWNER_PASSWORD).await?;
    wait_proxy(&env, &base, &owner, "eu-a", "healthy", |v| v["health"] == "healthy").await?;
    a.stop();
    let one = wait_proxy(&env, &base, &owner, "eu-a", "failed once", |v| v["failed_probes_in_a_row"] == 1).await?;
    ensure!(one["state"] == "active", "{one}");
    drop(serve);
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(listed.lines().any(|l| l.contains("eu-a") && l.contains("\tactive\t")), "{listed}");

    let serve = env.serve_with_env(&vars).await?;
    let started = Instant::now();
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", OWNER_PASSWORD).await?;
    let down = wait_proxy(&env, &base, &owner, "eu-a", "disabled", |v| v["state"] == "disabled").await?;
    ensure!(
        started.elapsed() < Duration::from_secs(4),
        "disabled after {:?}: the streak started from zero\n{down}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_restarted_worker_continues_a_proxys_failure_streak_embedded() -> anyhow::Result<()> {
    a_restarted_worker_continues_the_streak(Backend::Embedded).await
}

#[tokio::test]
async fn a_restarted_worker_continues_a_proxys_failure_streak_cluster() -> anyhow::Result<()> {
    a_restarted_worker_continues_the_streak(Backend::Cluster).await
}
