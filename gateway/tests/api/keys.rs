//! Several upstream keys per channel and what each failure does to a key (README, "Upstream keys"
//! and "What each failure does"): requests rotate across a channel's keys; an invalid key is
//! disabled at once while clients see only successes; a 429 rests that key for exactly its
//! `Retry-After`; the breaker opens after its threshold, half-opens after its cooldown, and a
//! recovered key returns; an admin's disable survives automatic changes; two gateways on one
//! JetStream agree on a breaker opening within a second. Every state change is an
//! `upstream_key.state_changed` in the control log.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use gateway::{Gateway, GatewayConfig};
use nats::EventLog;
use schemas::secret::MasterKey;
use schemas::{
    ChannelAdded, ChannelKeyAdded, EventBody, GLOBAL_TENANT, Stream, TenantCreated, UpstreamKeyState,
    UpstreamKeyStateChanged,
};
use serde_json::json;
use testkit::fake_openai::{FakeOpenAi, Scenario};

use crate::helpers::{self, MODEL, TENANT, TestApp, UPSTREAM_KEY, spawn, spawn_with};

/// The id of the key `spawn` gives channel `ch_fake` (its `channel.added` key).
const FIRST: &str = "ukey_fake";
const SECOND: &str = "ukey_second";
const SECOND_KEY: &str = "sk-upstream-second-secret";

/// Appends `channel.key_added` for `plaintext` as `key_id` of `channel_id`, sealed as the admin
/// side seals it, and waits until the gateway applied it.
async fn add_key(
    log: &EventLog,
    master: &MasterKey,
    channel_id: &str,
    key_id: &str,
    plaintext: &str,
) -> anyhow::Result<()> {
    let sealed = master.seal(plaintext, &schemas::key_seal_context(channel_id, key_id));
    log.append_acked(&helpers::control(
        GLOBAL_TENANT,
        EventBody::ChannelKeyAdded(ChannelKeyAdded {
            channel_id: channel_id.into(),
            key_id: key_id.into(),
            api_key: sealed,
            fingerprint: Some(schemas::secret::fingerprint(plaintext)),
        }),
    ))
    .await?;
    Ok(())
}

async fn caught_up(app: &TestApp) -> anyhow::Result<()> {
    wait_applied(&app.log, &app.gateway).await
}

async fn wait_applied(log: &EventLog, gateway: &Gateway) -> anyhow::Result<()> {
    let until = log.last_seq(Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// `spawn_with`, plus a second key on `ch_fake`.
async fn two_keys(tweak: impl FnOnce(&mut GatewayConfig)) -> anyhow::Result<TestApp> {
    let app = spawn_with(tweak).await?;
    add_key(&app.log, &app.master_key, "ch_fake", SECOND, SECOND_KEY).await?;
    caught_up(&app).await?;
    Ok(app)
}

async fn ask(app: &TestApp) -> anyhow::Result<u16> {
    ask_at(&app.http, &app.url("/v1/chat/completions"), &app.key).await
}

async fn ask_at(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<u16> {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]});
    let resp = http.post(url).bearer_auth(key).json(&body).send().await?;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await?;
    Ok(status)
}

/// Every `upstream_key.state_changed` in the control log.
async fn key_events(log: &EventLog) -> anyhow::Result<Vec<(i64, UpstreamKeyStateChanged)>> {
    let last = log.last_seq(Stream::Control).await?;
    let mut out = Vec::new();
    let mut tail = log.tail(Stream::Control, 0);
    while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), tail.next()).await? {
        let ev = ev?;
        if let EventBody::UpstreamKeyStateChanged(c) = ev.decode()?.body {
            out.push((ev.decode()?.occurred_at_us, c));
        }
        if ev.seq >= last {
            break;
        }
    }
    Ok(out)
}

/// Waits until the log holds a state change of `key_id` to `state` and returns it.
async fn wait_event(
    log: &EventLog,
    key_id: &str,
    state: UpstreamKeyState,
    skip: usize,
) -> anyhow::Result<(i64, UpstreamKeyStateChanged)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<_> =
            key_events(log).await?.into_iter().filter(|(_, c)| c.key_id == key_id && c.state == state).collect();
        if let Some(e) = found.into_iter().nth(skip) {
            return Ok(e);
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no {state:?} event for {key_id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn requests_rotate_across_a_channels_keys_and_the_event_log_holds_no_key() -> anyhow::Result<()> {
    let app = two_keys(|_| {}).await?;
    for _ in 0..6 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 3);
    assert_eq!(app.fake.requests_with_key(SECOND_KEY), 3);
    for raw in app.raw_events().await? {
        assert!(!raw.contains(SECOND_KEY) && !raw.contains(UPSTREAM_KEY), "a key in the log: {raw}");
    }
    Ok(())
}

#[tokio::test]
async fn a_key_that_turns_invalid_is_disabled_at_once_and_clients_see_only_successes() -> anyhow::Result<()> {
    let app = two_keys(|_| {}).await?;
    app.fake.set_key_scenario(UPSTREAM_KEY, Some(Scenario::FailStatus { status: 401, retry_after: None }));
    for i in 0..12 {
        assert_eq!(ask(&app).await?, 200, "request {i}");
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 1, "the invalid key was tried once");
    assert_eq!(app.fake.requests_with_key(SECOND_KEY), 12);
    let (_, disabled) = wait_event(&app.log, FIRST, UpstreamKeyState::Disabled, 0).await?;
    assert_eq!((disabled.reason.as_str(), disabled.manual), ("key_invalid", false));
    let logs = app.request_logs(12).await?;
    let failed: Vec<_> = logs.iter().filter(|l| l.attempt_log.len() == 2).collect();
    assert_eq!(failed.len(), 1, "one request needed a second attempt");
    assert_eq!(failed[0].attempt_log[0].class, "key_invalid");
    assert_eq!(key_events(&app.log).await?.len(), 1, "one event, not one per request");

    // Another gateway process starting from the log keeps the key out too (the event folds).
    app.fake.clear_requests();
    let mut cfg = GatewayConfig::new(app.master_key.clone(), "gw-other");
    cfg.first_byte_timeout = Duration::from_secs(1);
    let other = Gateway::start(app.log.clone(), cfg).await?;
    let (url, _server) = serve(&other).await?;
    for _ in 0..4 {
        assert_eq!(ask_at(&app.http, &url, &app.key).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 0);
    Ok(())
}

#[tokio::test]
async fn a_channel_whose_only_key_turns_invalid_stops_receiving_requests_and_the_other_channel_serves()
-> anyhow::Result<()> {
    let app = spawn().await?;
    let other = FakeOpenAi::start().await?;
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_other".into(),
                name: "other".into(),
                provider: "openai".into(),
                base_url: other.base_url(),
                api_key: Some(app.master_key.seal("sk-other-channel-key", "ch_other")),
                models: vec![MODEL.into()],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    caught_up(&app).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 401, retry_after: None });
    for i in 0..10 {
        assert_eq!(ask(&app).await?, 200, "request {i}");
    }
    assert!(app.fake.requests().len() <= 1, "{} requests reached the invalid key", app.fake.requests().len());
    assert_eq!(other.requests().len(), 10);
    Ok(())
}

#[tokio::test]
async fn a_429_with_retry_after_2_keeps_that_key_out_for_2_s_and_no_longer() -> anyhow::Result<()> {
    let app = two_keys(|_| {}).await?;
    app.fake.set_key_scenario(UPSTREAM_KEY, Some(Scenario::FailStatus { status: 429, retry_after: Some(2) }));
    // The rotation reaches the first key within two requests; the client still gets an answer.
    for _ in 0..2 {
        assert_eq!(ask(&app).await?, 200);
    }
    let limited_at = Instant::now();
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 1);
    app.fake.set_key_scenario(UPSTREAM_KEY, None);
    let (at, rest) = wait_event(&app.log, FIRST, UpstreamKeyState::CoolingDown, 0).await?;
    assert_eq!(rest.reason, "rate_limited");
    let length = rest.until_us.unwrap_or_default() - at;
    assert!((1_990_000..=2_050_000).contains(&length), "rests {length} µs");
    // Out for the two seconds (margin for a loaded machine: checked until 1.5 s)…
    while limited_at.elapsed() < Duration::from_millis(1500) {
        assert_eq!(ask(&app).await?, 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 1, "the resting key got a request");
    // …and back right after them, without any other event.
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(limited_at.elapsed())).await;
    for _ in 0..2 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 2, "the key is back in rotation");
    assert_eq!(key_events(&app.log).await?.len(), 1);
    Ok(())
}

fn fast_breaker(cfg: &mut GatewayConfig) {
    cfg.breaker.failures = 3;
    cfg.breaker.window = 10;
    cfg.breaker.cooldown = Duration::from_secs(1);
}

#[tokio::test]
async fn the_breaker_opens_after_its_threshold_half_opens_after_its_cooldown_and_a_recovered_key_returns()
-> anyhow::Result<()> {
    let app = two_keys(fast_breaker).await?;
    app.fake.set_key_scenario(UPSTREAM_KEY, Some(Scenario::FailStatus { status: 500, retry_after: None }));
    // Every failure on the first key is answered by the second: clients see only successes.
    let mut asked = 0;
    while app.fake.requests_with_key(UPSTREAM_KEY) < 3 {
        assert_eq!(ask(&app).await?, 200);
        asked += 1;
        anyhow::ensure!(asked < 20, "the first key was not tried");
    }
    let (at, open) = wait_event(&app.log, FIRST, UpstreamKeyState::Open, 0).await?;
    assert_eq!((open.reason.as_str(), open.opens), ("breaker", 1));
    assert!((990_000..=1_100_000).contains(&(open.until_us.unwrap_or_default() - at)));
    let opened = Instant::now();
    for _ in 0..4 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 3, "an open breaker lets nothing through");

    // Half-open after the cooldown: one trial, which fails, reopens it for twice as long.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(opened.elapsed())).await;
    for _ in 0..2 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), 4, "one trial");
    let (at, reopened) = wait_event(&app.log, FIRST, UpstreamKeyState::Open, 1).await?;
    assert_eq!(reopened.opens, 2);
    assert!((1_990_000..=2_100_000).contains(&(reopened.until_us.unwrap_or_default() - at)));

    // The key recovers; after the longer cooldown its trial succeeds and it is back in rotation.
    app.fake.set_key_scenario(UPSTREAM_KEY, None);
    let reopened_at = Instant::now();
    tokio::time::sleep(Duration::from_millis(2300).saturating_sub(reopened_at.elapsed())).await;
    for _ in 0..2 {
        assert_eq!(ask(&app).await?, 200);
    }
    let (_, active) = wait_event(&app.log, FIRST, UpstreamKeyState::Active, 0).await?;
    assert_eq!(active.reason, "recovered");
    caught_up(&app).await?;
    let before = app.fake.requests_with_key(UPSTREAM_KEY);
    for _ in 0..4 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(UPSTREAM_KEY), before + 2, "back in the rotation");
    Ok(())
}

fn admin_state(key_id: &str, state: UpstreamKeyState, manual: bool) -> EventBody {
    EventBody::UpstreamKeyStateChanged(UpstreamKeyStateChanged {
        channel_id: "ch_fake".into(),
        key_id: key_id.into(),
        state,
        until_us: None,
        reason: if manual { "admin" } else { "recovered" }.into(),
        manual,
        opens: 0,
    })
}

#[tokio::test]
async fn a_manual_disable_survives_automatic_changes_until_an_admin_enables_the_key() -> anyhow::Result<()> {
    let app = two_keys(|_| {}).await?;
    app.log
        .append_acked(&helpers::control(GLOBAL_TENANT, admin_state(SECOND, UpstreamKeyState::Disabled, true)))
        .await?;
    // What a probe or another gateway would append when it sees the key work.
    app.log
        .append_acked(&helpers::control(GLOBAL_TENANT, admin_state(SECOND, UpstreamKeyState::Active, false)))
        .await?;
    caught_up(&app).await?;
    for _ in 0..4 {
        assert_eq!(ask(&app).await?, 200);
    }
    assert_eq!(app.fake.requests_with_key(SECOND_KEY), 0, "the disabled key got a request");
    // With its only other key invalid, the channel has nothing left: 503, and the admin's
    // disable still stands.
    app.fake.set_key_scenario(UPSTREAM_KEY, Some(Scenario::FailStatus { status: 401, retry_after: None }));
    assert_eq!(ask(&app).await?, 502);
    assert_eq!(ask(&app).await?, 503);
    assert_eq!(app.fake.requests_with_key(SECOND_KEY), 0);
    app.log.append_acked(&helpers::control(GLOBAL_TENANT, admin_state(SECOND, UpstreamKeyState::Active, true))).await?;
    caught_up(&app).await?;
    assert_eq!(ask(&app).await?, 200);
    assert_eq!(app.fake.requests_with_key(SECOND_KEY), 1);
    Ok(())
}

/// Serves `gateway` on a loopback port; the task ends with the returned handle.
async fn serve(gateway: &Gateway) -> anyhow::Result<(String, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = gateway.router().fallback(gateway::unknown_route);
    let task = tokio::spawn(gateway::server::serve(
        listener,
        router,
        gateway::server::ServerConfig::default(),
        std::future::pending(),
    ));
    Ok((format!("http://{addr}/v1/chat/completions"), task))
}

#[tokio::test]
async fn two_gateways_on_one_jetstream_agree_on_a_breaker_opening_within_a_second() -> anyhow::Result<()> {
    let nats = testkit::nats_server::NatsServer::start_new()?;
    let (dir_a, dir_b) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let opts = || nats::JetStreamOptions { require_nats_at_start: true, ..Default::default() };
    let log_a = EventLog::connect_jetstream(&nats.url(), dir_a.path(), opts()).await?;
    let log_b = EventLog::connect_jetstream(&nats.url(), dir_b.path(), opts()).await?;
    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    log_a
        .append_acked(&helpers::control(TENANT, EventBody::TenantCreated(TenantCreated { name: TENANT.into() })))
        .await?;
    let issued = helpers::issue_key(&log_a, None).await?;
    log_a
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_fake".into(),
                name: "fake".into(),
                provider: "openai".into(),
                base_url: fake.base_url(),
                api_key: Some(master.seal(UPSTREAM_KEY, "ch_fake")),
                models: vec![MODEL.into()],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    add_key(&log_a, &master, "ch_fake", SECOND, SECOND_KEY).await?;
    let config = |name: &str| {
        let mut cfg = GatewayConfig::new(master.clone(), name);
        cfg.first_byte_timeout = Duration::from_secs(1);
        fast_breaker(&mut cfg);
        cfg.breaker.cooldown = Duration::from_secs(60);
        cfg
    };
    let gw_a = Gateway::start(log_a.clone(), config("gw-a")).await?;
    let gw_b = Gateway::start(log_b.clone(), config("gw-b")).await?;
    let (url_a, _a) = serve(&gw_a).await?;
    let (url_b, _b) = serve(&gw_b).await?;
    let http = reqwest::Client::new();

    fake.set_key_scenario(UPSTREAM_KEY, Some(Scenario::FailStatus { status: 503, retry_after: None }));
    while fake.requests_with_key(UPSTREAM_KEY) < 3 {
        assert_eq!(ask_at(&http, &url_a, &issued.plaintext).await?, 200);
    }
    // The opening is in the log; from a second after it was appended, B sends the key nothing.
    let (at, open) = wait_event(&log_b, FIRST, UpstreamKeyState::Open, 0).await?;
    assert_eq!(open.opens, 1);
    let appended = Duration::from_micros(u64::try_from(chrono_now_us() - at).unwrap_or(0));
    tokio::time::sleep(Duration::from_secs(1).saturating_sub(appended)).await;
    let before = fake.requests_with_key(UPSTREAM_KEY);
    for _ in 0..6 {
        assert_eq!(ask_at(&http, &url_b, &issued.plaintext).await?, 200);
    }
    assert_eq!(fake.requests_with_key(UPSTREAM_KEY), before, "gateway B still sent requests to the open key");
    Ok(())
}

fn chrono_now_us() -> i64 {
    gateway::health::now_us()
}

#[tokio::test]
async fn when_every_key_rests_the_client_gets_503_with_the_time_left_and_no_upstream_call() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 429, retry_after: Some(30) });
    let resp = app
        .post("/v1/chat/completions", &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("30"));
    let resp = app
        .post("/v1/chat/completions", &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(resp.status(), 503);
    let left: u64 =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!((25..=30).contains(&left), "Retry-After {left}");
    let (_, body) = helpers::error_of(resp).await?;
    assert_eq!(body["error"]["code"], "no_healthy_upstream");
    assert_eq!(body["error"]["type"], "upstream_error");
    // The same in the Anthropic and Gemini shapes, with the same Retry-After.
    let anthropic = json!({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]});
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    for (path, body) in
        [("/v1/messages".to_owned(), anthropic), (format!("/v1beta/models/{MODEL}:generateContent"), gemini)]
    {
        let resp = app.post(&path, &body).await?;
        assert_eq!(resp.status(), 503, "{path}");
        let left: u64 =
            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((25..=30).contains(&left), "{path}: Retry-After {left}");
        let (_, body) = helpers::error_of(resp).await?;
        if path == "/v1/messages" {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], "overloaded_error", "{body}");
        } else {
            assert_eq!(body["error"]["code"], 503, "{body}");
            assert_eq!(body["error"]["status"], "UNAVAILABLE", "{body}");
        }
    }
    assert_eq!(app.fake.requests().len(), 1, "the resting key was called again");
    Ok(())
}

#[tokio::test]
async fn a_dead_upstream_opens_its_keys_breaker_and_is_no_longer_tried() -> anyhow::Result<()> {
    let app = spawn_with(|c| {
        c.breaker.failures = 2;
        c.breaker.window = 10;
    })
    .await?;
    // A port nothing listens on: every attempt is a refused connection.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?;
    let dead_url = format!("http://{}/v1", dead.local_addr()?);
    drop(dead);
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_dead".into(),
                name: "dead".into(),
                provider: "openai".into(),
                base_url: dead_url,
                api_key: Some(app.master_key.seal("sk-dead-channel-key", "ch_dead")),
                models: vec![MODEL.into()],
                priority: 10,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    caught_up(&app).await?;
    for _ in 0..6 {
        assert_eq!(ask(&app).await?, 200);
    }
    let (_, open) = wait_event(&app.log, "ukey_dead", UpstreamKeyState::Open, 0).await?;
    assert_eq!(open.reason, "breaker");
    let logs = app.request_logs(6).await?;
    let tried_dead = logs.iter().filter(|l| l.attempt_log.iter().any(|a| a.channel_id == "ch_dead")).count();
    assert_eq!(tried_dead, 2, "the dead channel was tried after its breaker opened");
    assert!(
        logs.iter()
            .flat_map(|l| &l.attempt_log)
            .filter(|a| a.channel_id == "ch_dead")
            .all(|a| a.class == "connection_failed")
    );
    Ok(())
}
