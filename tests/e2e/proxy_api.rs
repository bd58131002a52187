//! `/api/proxies` and a channel's `proxy_pool` over HTTP, through the real binary on both
//! backends: the same operations as `proxies add|remove|list` and `channels update
//! --proxy-pool`, with roles, tenant isolation, cursor pages, unknown fields named, the address
//! policy, masked URLs (the password in no answer, audit entry or log line), and calls that go
//! through the pool a channel names and direct again once it names none.

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};
use testkit::proxy::{Kind, TestProxy};

use crate::admin_api::{call, token};
use crate::helpers::{Backend, Env};

const PROXY_PASS: &str = "api-proxy-pass-canary-58";

async fn proxies_over_http_are_the_clis_and_channels_use_them(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let url = |p: &str| format!("{base}{p}");
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    env.cli(&["tenants", "create", "acme"])?;
    let mut tokens = std::collections::BTreeMap::new();
    tokens.insert("owner", owner.clone());
    for (name, role, tenant) in [
        ("admin", "admin", None),
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("acme-admin", "admin", Some("acme")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let (status, created) = call(&env, "POST", &url("/api/users"), &owner, Some(body)).await?;
        ensure!(status == 201, "create {name}: {status} {created}");
        let password = created["password"].as_str().context("password")?;
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), password).await?);
    }

    let proxy = TestProxy::start(Kind::Http, Some(("router", PROXY_PASS))).await?;
    let add = json!({"pool": "eu", "url": proxy.url_with_login(), "name": "eu-a"});
    let (status, px) = call(&env, "POST", &url("/api/proxies"), &tokens["admin"], Some(add.clone())).await?;
    ensure!(status == 201, "{status} {px}");
    let masked = format!("http://***@{}", proxy.addr());
    ensure!(
        px["url"] == masked.as_str()
            && px["pool"] == "eu"
            && px["name"] == "eu-a"
            && px["state"] == "active"
            && px["origin"] == "admin",
        "{px}"
    );
    ensure!(!px.to_string().contains(PROXY_PASS), "the answer holds the password: {px}");
    let id = px["id"].as_str().filter(|i| i.starts_with("px_")).context("id")?.to_owned();
    let listed = env.cli(&["proxies", "list"])?;
    ensure!(listed.contains(&format!("{id}\teu\teu-a\t{masked}")), "the CLI lists it: {listed}");

    let post = |body: Value| Some(body);
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("viewer", "GET", "/api/proxies".into(), None, 200),
        ("billing", "GET", "/api/proxies".into(), None, 403),
        ("viewer", "POST", "/api/proxies".into(), post(json!({"pool": "eu", "url": "socks5://127.0.0.1:9"})), 403),
        ("billing", "POST", "/api/proxies".into(), post(json!({"pool": "eu", "url": "socks5://127.0.0.1:9"})), 403),
        ("acme-admin", "POST", "/api/proxies".into(), post(json!({"pool": "eu", "url": "socks5://127.0.0.1:9"})), 403),
        ("viewer", "DELETE", format!("/api/proxies/{id}"), None, 403),
        ("acme-admin", "DELETE", format!("/api/proxies/{id}"), None, 404),
        ("owner", "DELETE", "/api/proxies/px_nope".into(), None, 404),
        ("owner", "DELETE", "/api/proxies/eu-a".into(), None, 404),
        ("owner", "GET", format!("/api/proxies/{id}"), None, 405),
        ("owner", "POST", "/api/proxies".into(), Some(add.clone()), 409),
        ("owner", "POST", "/api/proxies".into(), post(json!({"pool": "eu", "url": "ftp://127.0.0.1:21"})), 422),
        ("owner", "POST", "/api/proxies".into(), post(json!({"pool": "a b", "url": "socks5://127.0.0.1:9"})), 422),
        (
            "owner",
            "POST",
            "/api/proxies".into(),
            post(json!({"pool": "eu", "url": "socks5://u:hunter2@169.254.169.254:1080"})),
            422,
        ),
        (
            "owner",
            "POST",
            "/api/proxies".into(),
            post(json!({"pool": "eu", "url": "socks5://127.0.0.1:9", "colour": "red"})),
            422,
        ),
        ("owner", "GET", "/api/proxies?colour=red".into(), None, 400),
    ];
    for (who, method, path, body, want) in cases {
        let (status, answer) = call(&env, method, &url(&path), &tokens[who], body).await?;
        ensure!(status.as_u16() == want, "{who} {method} {path}: {status} {answer}, want {want}");
        let text = answer.to_string();
        ensure!(!text.contains("hunter2") && !text.contains(PROXY_PASS), "{who} {method} {path}: {text}");
        if path.contains("colour") || text.contains("colour") {
            ensure!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("colour")), "{answer}");
        }
    }
    let (_, acme) = call(&env, "GET", &url("/api/proxies"), &tokens["acme-admin"], None).await?;
    ensure!(acme["data"].as_array().is_some_and(Vec::is_empty), "a tenant user sees no proxy: {acme}");

    // Two more in another pool; pages of one cover all three once, in id order; `pool` filters.
    for port in [9, 10] {
        let body = json!({"pool": "us", "url": format!("socks5://127.0.0.1:{port}")});
        let (status, answer) = call(&env, "POST", &url("/api/proxies"), &owner, Some(body)).await?;
        ensure!(status == 201 && answer["name"].as_str().is_some_and(|n| n.starts_with("us-")), "{answer}");
    }
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let q = if after.is_empty() { "limit=1".to_owned() } else { format!("limit=1&after={after}") };
        let (_, page) = call(&env, "GET", &url(&format!("/api/proxies?{q}")), &tokens["viewer"], None).await?;
        seen.extend(page["data"].as_array().into_iter().flatten().filter_map(|p| p["id"].as_str().map(str::to_owned)));
        match page["next_cursor"].as_str() {
            Some(c) => after = c.to_owned(),
            None => break,
        }
    }
    ensure!(seen.len() == 3 && seen[0] == id && seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    let (_, us) = call(&env, "GET", &url("/api/proxies?pool=us"), &owner, None).await?;
    ensure!(us["data"].as_array().is_some_and(|d| d.len() == 2 && d.iter().all(|p| p["pool"] == "us")), "{us}");

    // A channel names a pool that holds a proxy (422 otherwise), its calls go through it, and
    // `null` sends it direct again.
    env.add_fake_channel()?;
    let key = env.tenant_key("chat")?;
    env.wait_for_model(&serve, &key, crate::helpers::MODEL).await?;
    let (_, channels) = call(&env, "GET", &url("/api/channels"), &owner, None).await?;
    let ch = channels["data"][0]["id"].as_str().context("channel id")?.to_owned();
    ensure!(channels["data"][0]["proxy_pool"].is_null(), "{channels}");
    let ch_url = url(&format!("/api/channels/{ch}"));
    let (status, answer) = call(&env, "PATCH", &ch_url, &owner, Some(json!({"proxy_pool": "nowhere"}))).await?;
    ensure!(status == 422 && answer["error"]["code"] == "unknown_pool", "{status} {answer}");
    ensure!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("nowhere")), "{answer}");
    let new = json!({"name": "pooled", "provider": "openai", "base_url": env.fake.base_url(), "api_key": "sk-x",
        "models": ["m"], "proxy_pool": "nowhere"});
    let (status, answer) = call(&env, "POST", &url("/api/channels"), &owner, Some(new)).await?;
    ensure!(status == 422 && answer["error"]["code"] == "unknown_pool", "{status} {answer}");
    let err = env.cli_fails(&["channels", "update", &ch, "--proxy-pool", "nowhere"])?;
    ensure!(err.contains("no proxy pool"), "the CLI refuses it alike: {err}");

    let (status, answer) = call(&env, "PATCH", &ch_url, &tokens["admin"], Some(json!({"proxy_pool": "eu"}))).await?;
    ensure!(status == 200 && answer["proxy_pool"] == "eu", "{status} {answer}");
    let (_, shown) = call(&env, "GET", &ch_url, &tokens["viewer"], None).await?;
    ensure!(shown["proxy_pool"] == "eu", "{shown}");
    let (status, body) = env.chat(&serve, &key, false).await?;
    ensure!(status == 200, "{status} {body}\n{}", serve.log());
    ensure!(proxy.count("POST ") == 1, "the pool's proxy did not carry the call");
    let (status, answer) = call(&env, "PATCH", &ch_url, &owner, Some(json!({"proxy_pool": null}))).await?;
    ensure!(status == 200 && answer["proxy_pool"].is_null(), "{status} {answer}");
    let (status, _) = env.chat(&serve, &key, false).await?;
    ensure!(status == 200 && proxy.count("POST ") == 1, "a channel without a pool goes direct: {status}");

    // Removal, as the CLI's; the pool is then unknown to new channels.
    let (status, _) = call(&env, "DELETE", &url(&format!("/api/proxies/{id}")), &tokens["admin"], None).await?;
    ensure!(status == 204, "remove: {status}");
    ensure!(call(&env, "DELETE", &url(&format!("/api/proxies/{id}")), &owner, None).await?.0 == 404, "twice");
    ensure!(!env.cli(&["proxies", "list"])?.contains(&id), "the CLI still lists it");
    let (status, _) = call(&env, "PATCH", &ch_url, &owner, Some(json!({"proxy_pool": "eu"}))).await?;
    ensure!(status == 422, "an emptied pool is unknown: {status}");

    let (_, audit) = call(&env, "GET", &url("/api/audit?limit=200"), &owner, None).await?;
    for action in ["proxy.added", "proxy.removed"] {
        let e = audit["data"].as_array().into_iter().flatten().find(|e| e["action"] == action).cloned();
        ensure!(e.is_some_and(|e| e["actor"].is_string() && e["actor_addr"] == "127.0.0.1"), "{action}: {audit}");
    }
    for text in [audit.to_string(), serve.log()] {
        ensure!(!text.contains(PROXY_PASS) && !text.contains("hunter2"), "a proxy password leaked");
    }
    Ok(())
}

#[tokio::test]
async fn proxies_over_http_are_the_clis_and_channels_use_them_embedded() -> anyhow::Result<()> {
    proxies_over_http_are_the_clis_and_channels_use_them(Backend::Embedded).await
}

#[tokio::test]
async fn proxies_over_http_are_the_clis_and_channels_use_them_cluster() -> anyhow::Result<()> {
    proxies_over_http_are_the_clis_and_channels_use_them(Backend::Cluster).await
}
