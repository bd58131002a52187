//! Channels that send through an egress proxy pool, against real proxies on loopback (the
//! testkit's HTTP CONNECT/forwarding proxy and SOCKS5 proxy): calls go through a node of the
//! pool, a dead node is ejected (`proxy.state_changed`) while calls go on through another with
//! no client error and no blame on the upstream key, a recovered node comes back, each upstream
//! key keeps one exit, and the proxies' logins never appear in an event.

use std::time::Duration;

use anyhow::ensure;
use schemas::{EventBody, GLOBAL_TENANT, ProxyAdded, Stream};
use serde_json::json;
use testkit::proxy::{Kind, TestProxy};

use crate::helpers::{MODEL, TestApp, control, spawn_with};

const LOGIN: (&str, &str) = ("router", "proxy-pass-canary-7f3a");

fn chat() -> serde_json::Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// Appends a control event and waits until the gateway applied it.
async fn apply(app: &TestApp, body: EventBody) -> anyhow::Result<()> {
    app.log.append_acked(&control(GLOBAL_TENANT, body)).await?;
    let until = app.log.last_seq(Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Adds `proxy` to `pool` as an admin would: the URL without its login, the login sealed.
async fn add_proxy(app: &TestApp, id: &str, pool: &str, proxy: &TestProxy) -> anyhow::Result<()> {
    add_proxy_at(app, id, pool, &proxy.url(), proxy.url_with_login() != proxy.url()).await
}

async fn add_proxy_at(app: &TestApp, id: &str, pool: &str, url: &str, login: bool) -> anyhow::Result<()> {
    let credentials = login.then(|| app.master_key.seal(&format!("{}:{}", LOGIN.0, LOGIN.1), id));
    apply(
        app,
        EventBody::ProxyAdded(ProxyAdded {
            proxy_id: id.into(),
            pool: pool.into(),
            name: id.into(),
            url: url.into(),
            credentials,
            origin: None,
        }),
    )
    .await
}

async fn use_pool(app: &TestApp, pool: &str) -> anyhow::Result<()> {
    apply(
        app,
        EventBody::ChannelUpdated(schemas::ChannelUpdated {
            channel_id: "ch_fake".into(),
            proxy_pool: Some(pool.into()),
            ..Default::default()
        }),
    )
    .await
}

async fn proxy_states(app: &TestApp) -> anyhow::Result<Vec<schemas::ProxyStateChanged>> {
    app.settled().await?;
    Ok(app
        .raw_events()
        .await?
        .iter()
        .filter_map(|raw| schemas::Envelope::from_json(raw.as_bytes()).ok())
        .filter_map(|e| match e.body {
            EventBody::ProxyStateChanged(c) => Some(c),
            _ => None,
        })
        .collect())
}

/// A breaker that opens at a proxy's first failure: a key leaves a failing node at once (it
/// sticks to the node that answered), so with one key a dead node sees one failure.
async fn spawn_fast_breaker() -> anyhow::Result<TestApp> {
    spawn_with(|cfg| {
        cfg.breaker.failures = 1;
        cfg.breaker.window = 4;
        cfg.breaker.cooldown = Duration::from_millis(300);
        cfg.breaker.max_cooldown = Duration::from_secs(1);
        cfg.connect_timeout = Duration::from_millis(500);
    })
    .await
}

#[tokio::test]
async fn calls_go_through_an_http_or_socks5_proxy_with_its_login_and_the_login_is_never_in_an_event()
-> anyhow::Result<()> {
    for kind in [Kind::Http, Kind::Socks5] {
        let app = spawn_fast_breaker().await?;
        let proxy = TestProxy::start(kind, Some(LOGIN)).await?;
        add_proxy(&app, "px_one", "eu", &proxy).await?;
        use_pool(&app, "eu").await?;
        for _ in 0..3 {
            let resp = app.post("/v1/chat/completions", &chat()).await?;
            ensure!(resp.status() == 200, "{kind:?}: {}", resp.status());
        }
        ensure!(proxy.connections() >= 1, "{kind:?}: the proxy saw no connection");
        // Origin form through a tunnel, absolute form (`POST http://…/v1/…`) when forwarded.
        let carried = proxy.count("/v1/chat/completions HTTP/1.1");
        ensure!(carried == 3, "{kind:?}: the proxy carried {carried} of 3 calls");
        let got = app.fake.requests_with_key(crate::helpers::UPSTREAM_KEY);
        ensure!(got == 3, "{kind:?}: the upstream got {got}");
        let events = app.raw_events().await?;
        ensure!(events.iter().any(|e| e.contains("\"px_one\"")), "the proxy event is in the log");
        ensure!(!events.iter().any(|e| e.contains(LOGIN.1)), "{kind:?}: the proxy's password is in an event");
        // A wrong login is the proxy's failure: the call fails without blaming the key.
        let wrong = TestProxy::start(kind, Some((LOGIN.0, "other-password"))).await?;
        add_proxy_at(&app, "px_wrong", "bad", &wrong.url(), true).await?;
        use_pool(&app, "bad").await?;
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        let (status, body) = crate::helpers::error_of(resp).await?;
        ensure!(status == 502, "{kind:?}: {status} {body}");
        ensure!(!body.to_string().contains(LOGIN.1) && !body.to_string().contains("127.0.0.1"), "{body}");
        let logs = app.request_logs(4).await?;
        let last = logs.last().and_then(|l| l.attempt_log.last()).map(|a| a.class.as_str());
        ensure!(last == Some("proxy_failed"), "{kind:?}: {logs:?}");
        ensure!(
            !app.raw_events().await?.iter().any(|e| e.contains("upstream_key.state_changed")),
            "{kind:?}: a proxy's failure was held against the upstream key"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_dead_proxy_is_ejected_calls_go_on_through_another_and_it_comes_back_when_it_recovers() -> anyhow::Result<()>
{
    let app = spawn_fast_breaker().await?;
    let a = TestProxy::start(Kind::Socks5, None).await?;
    let b = TestProxy::start(Kind::Socks5, None).await?;
    add_proxy(&app, "px_a", "pool", &a).await?;
    add_proxy(&app, "px_b", "pool", &b).await?;
    use_pool(&app, "pool").await?;
    let resp = app.post("/v1/chat/completions", &chat()).await?;
    ensure!(resp.status() == 200, "{}", resp.status());
    // The key's node: the one that carried the first call.
    let (first, other, first_id, other_id) =
        if a.count("POST /v1/chat") == 1 { (&a, &b, "px_a", "px_b") } else { (&b, &a, "px_b", "px_a") };
    ensure!(first.count("POST /v1/chat") == 1 && other.count("POST /v1/chat") == 0, "one node per call");

    first.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..6 {
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        ensure!(resp.status() == 200, "call {i} after the node died: {}", resp.status());
    }
    ensure!(other.count("POST /v1/chat") == 6, "the other node carried {}", other.count("POST /v1/chat"));
    let states = proxy_states(&app).await?;
    ensure!(
        states.iter().any(|s| s.proxy_id == first_id && s.state == schemas::ProxyState::Open),
        "the dead node was not ejected: {states:?}"
    );
    ensure!(!states.iter().any(|s| s.proxy_id == other_id), "{states:?}");
    ensure!(
        !app.raw_events().await?.iter().any(|e| e.contains("upstream_key.state_changed")),
        "the dead proxy was held against the upstream key"
    );

    // It recovers; once its open period is over, the next failure of the other node sends the
    // calls to it (its half-open trial succeeds and it is active again).
    first.restart().await?;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    other.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..4 {
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        ensure!(resp.status() == 200, "call {i} after the recovery: {}", resp.status());
    }
    ensure!(first.count("POST /v1/chat") == 5, "the recovered node carried {}", first.count("POST /v1/chat"));
    let states = proxy_states(&app).await?;
    ensure!(
        states
            .iter()
            .any(|s| s.proxy_id == first_id && s.state == schemas::ProxyState::Active && s.reason == "recovered"),
        "the recovered node was not put back: {states:?}"
    );
    Ok(())
}

#[tokio::test]
async fn each_upstream_key_goes_out_through_one_proxy() -> anyhow::Result<()> {
    let app = spawn_fast_breaker().await?;
    let keys = ["sk-upstream-sticky-one", "sk-upstream-sticky-two", "sk-upstream-sticky-three"];
    for (i, k) in keys.iter().enumerate() {
        let key_id = format!("ukey_sticky{i}");
        let sealed = app.master_key.seal(k, &schemas::key_seal_context("ch_fake", &key_id));
        apply(
            &app,
            EventBody::ChannelKeyAdded(schemas::ChannelKeyAdded {
                channel_id: "ch_fake".into(),
                key_id,
                api_key: sealed,
                fingerprint: None,
            }),
        )
        .await?;
    }
    let proxies = [
        TestProxy::start(Kind::Socks5, None).await?,
        TestProxy::start(Kind::Http, None).await?,
        TestProxy::start(Kind::Socks5, Some(LOGIN)).await?,
    ];
    for (i, p) in proxies.iter().enumerate() {
        add_proxy(&app, &format!("px_{i}"), "sticky", p).await?;
    }
    use_pool(&app, "sticky").await?;
    for _ in 0..12 {
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        ensure!(resp.status() == 200, "{}", resp.status());
    }
    for k in keys {
        let exits: Vec<usize> = (0..proxies.len()).filter(|i| proxies[*i].saw(k)).collect();
        ensure!(exits.len() == 1, "{k} went out through {exits:?}");
        ensure!(app.fake.requests_with_key(k) >= 2, "{k} was used {} times", app.fake.requests_with_key(k));
    }
    Ok(())
}

/// A plain-http upstream the forwarding proxy cannot reach: the proxy answers 502 itself. That is
/// `proxy_failed` — the upstream key is not blamed (no state change), nor is the node (it
/// carried the call; its breaker, which opens at one failure here, stays shut).
#[tokio::test]
async fn a_forwarding_proxys_502_is_proxy_failed_and_blames_neither_the_key_nor_the_node() -> anyhow::Result<()> {
    let app = spawn_fast_breaker().await?;
    let proxy = TestProxy::start(Kind::Http, None).await?;
    add_proxy(&app, "px_fwd", "fwd", &proxy).await?;
    use_pool(&app, "fwd").await?;
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    apply(
        &app,
        EventBody::ChannelUpdated(schemas::ChannelUpdated {
            channel_id: "ch_fake".into(),
            base_url: Some(format!("http://127.0.0.1:{dead}/v1")),
            ..Default::default()
        }),
    )
    .await?;
    for _ in 0..3 {
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        let (status, body) = crate::helpers::error_of(resp).await?;
        ensure!(status == 502, "{status} {body}");
    }
    ensure!(proxy.connections() >= 1, "the calls did not go through the proxy");
    let logs = app.request_logs(3).await?;
    let classes: Vec<&str> = logs.iter().filter_map(|l| l.attempt_log.last()).map(|a| a.class.as_str()).collect();
    ensure!(classes == ["proxy_failed"; 3], "{classes:?}");
    let events = app.raw_events().await?;
    ensure!(
        !events.iter().any(|e| e.contains("upstream_key.state_changed")),
        "the proxy's 502 was held against the upstream key"
    );
    ensure!(proxy_states(&app).await?.is_empty(), "the node that carried the calls was ejected");
    Ok(())
}

/// DNS rebinding through a proxy: the channel's host is a name the gateway's resolver answers
/// with a metadata address beside loopback, while the proxy (which resolves names itself for
/// forwarding and `socks5h://`) would reach the fake upstream under it. The name is looked up
/// and judged before it is handed to any proxy, so the call is refused and nothing reaches the
/// upstream; once the name resolves to loopback alone, the same proxies carry the call.
#[tokio::test]
async fn a_name_resolving_to_a_forbidden_address_is_refused_even_when_the_proxy_resolves_it() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let rebound = Arc::new(AtomicBool::new(true));
    let flag = rebound.clone();
    let app = spawn_with(move |cfg| {
        cfg.breaker.window = 32;
        cfg.breaker.failures = 32;
        cfg.dns = egress::Dns::from_fn(move |host| {
            let ip = |s: &str| s.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
            match host {
                "localhost" if flag.load(Ordering::SeqCst) => Ok(vec![ip("127.0.0.1"), ip("169.254.169.254")]),
                "localhost" => Ok(vec![ip("127.0.0.1")]),
                _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown test host")),
            }
        });
    })
    .await?;
    let port = app.fake.addr().port();
    apply(
        &app,
        EventBody::ChannelUpdated(schemas::ChannelUpdated {
            channel_id: "ch_fake".into(),
            base_url: Some(format!("http://localhost:{port}/v1")),
            ..Default::default()
        }),
    )
    .await?;
    let http = TestProxy::start(Kind::Http, None).await?;
    let socks = TestProxy::start(Kind::Socks5, None).await?;
    for (id, url) in [
        ("px_forward", http.url()),
        ("px_socks5h", format!("socks5h://{}", socks.addr())),
        ("px_socks5", format!("socks5://{}", socks.addr())),
    ] {
        add_proxy_at(&app, id, id, &url, false).await?;
        use_pool(&app, id).await?;
        rebound.store(true, Ordering::SeqCst);
        let before = app.fake.requests().len();
        let (status, body) = crate::helpers::error_of(app.post("/v1/chat/completions", &chat()).await?).await?;
        ensure!(status == 502 && body["error"]["code"] == "upstream_error", "{id}: {status} {body}");
        ensure!(!body.to_string().contains("localhost"), "{id}: the refusal names the host: {body}");
        ensure!(app.fake.requests().len() == before, "{id}: the rebound name reached the upstream");
        rebound.store(false, Ordering::SeqCst);
        let resp = app.post("/v1/chat/completions", &chat()).await?;
        ensure!(resp.status() == 200, "{id}: an allowed name through the proxy: {}", resp.status());
        ensure!(app.fake.requests().len() == before + 1, "{id}: the allowed call did not arrive");
    }
    ensure!(http.connections() >= 1 && socks.connections() >= 2, "the allowed calls went through the proxies");
    Ok(())
}
