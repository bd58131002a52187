//! Routing per model (README, "Routing strategies"): `lowest-cost` and `least-latency` order the
//! channels, a route's fallback models serve when the model's channels fail or its context window
//! is exceeded, a request pins or forbids providers with `X-Router-Provider` / `X-Router-Exclude`,
//! and retries stay within the request's and the gateway's budgets.

use std::time::Duration;

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, PricePublished, RouteSet, RouteStrategy, Stream};
use serde_json::json;
use testkit::fake_openai::{FakeOpenAi, Scenario};

use crate::helpers::{self, MODEL, TestApp, spawn, spawn_with};

async fn applied(app: &TestApp) -> anyhow::Result<()> {
    let until = app.log.last_seq(Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A channel `id` of `provider` on `fake` serving `models`.
async fn channel(app: &TestApp, id: &str, provider: &str, fake: &FakeOpenAi, models: &[&str]) -> anyhow::Result<()> {
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.into(),
                name: id.into(),
                provider: provider.into(),
                base_url: fake.base_url(),
                api_key: Some(app.master_key.seal(&format!("sk-{id}-key"), id)),
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    applied(app).await
}

async fn route(app: &TestApp, model: &str, strategy: RouteStrategy, fallback: &[&str]) -> anyhow::Result<()> {
    let body = EventBody::RouteSet(RouteSet {
        model: model.into(),
        strategy,
        fallback: fallback.iter().map(|m| (*m).to_owned()).collect(),
    });
    app.log.append_acked(&helpers::control(GLOBAL_TENANT, body)).await?;
    applied(app).await
}

async fn price(app: &TestApp, model: &str, channel_id: &str, input: i64) -> anyhow::Result<()> {
    let body = EventBody::PricePublished(PricePublished {
        model: model.into(),
        channel_id: Some(channel_id.into()),
        currency: "USD".into(),
        input_per_mtok_nanos: input,
        output_per_mtok_nanos: input * 4,
        cached_input_per_mtok_nanos: None,
        cache_write_per_mtok_nanos: None,
    });
    app.log.append_acked(&helpers::control(GLOBAL_TENANT, body)).await?;
    applied(app).await
}

async fn ask_as(app: &TestApp, model: &str, headers: &[(&str, &str)]) -> anyhow::Result<u16> {
    let mut req = app.http.post(app.url("/v1/chat/completions")).bearer_auth(&app.key).json(&json!({
        "model": model, "messages": [{"role": "user", "content": "Say hello"}]
    }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let _ = resp.bytes().await?;
    Ok(status)
}

#[tokio::test]
async fn lowest_cost_sends_requests_to_the_cheapest_channel_and_fails_over_to_the_next() -> anyhow::Result<()> {
    let app = spawn().await?;
    let cheap = FakeOpenAi::start().await?;
    channel(&app, "ch_cheap", "openai", &cheap, &[MODEL]).await?;
    price(&app, MODEL, "ch_fake", 900_000_000).await?;
    price(&app, MODEL, "ch_cheap", 100_000_000).await?;
    route(&app, MODEL, RouteStrategy::LowestCost, &[]).await?;
    for _ in 0..8 {
        assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    }
    assert_eq!((cheap.requests().len(), app.fake.requests().len()), (8, 0));
    // Billed at the serving channel's price.
    let usage = app.wait_usage(8).await?;
    assert!(usage.iter().all(|(_, u)| u.channel_id == "ch_cheap"));
    cheap.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    assert_eq!(app.fake.requests().len(), 1, "the dearer channel serves when the cheap one fails");
    Ok(())
}

#[tokio::test]
async fn least_latency_prefers_the_key_with_the_fastest_first_byte_and_still_explores() -> anyhow::Result<()> {
    let app = spawn().await?;
    let fast = FakeOpenAi::start().await?;
    channel(&app, "ch_fast", "openai", &fast, &[MODEL]).await?;
    // The default channel answers after 4 × 60 ms.
    app.fake.set_scenario(Scenario::SlowChunks(Duration::from_millis(60)));
    route(&app, MODEL, RouteStrategy::LeastLatency, &[]).await?;
    for _ in 0..40 {
        assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    }
    let (fast_n, slow_n) = (fast.requests().len(), app.fake.requests().len());
    assert_eq!(fast_n + slow_n, 40);
    assert!(slow_n >= 1, "the slow key was never measured");
    assert!(fast_n >= 30, "fast {fast_n}, slow {slow_n}");
    Ok(())
}

#[tokio::test]
async fn a_routes_fallback_model_serves_when_the_models_channels_fail_or_its_window_is_exceeded() -> anyhow::Result<()>
{
    let app = spawn().await?;
    let big = FakeOpenAi::start().await?;
    channel(&app, "ch_big", "openai", &big, &["gpt-big-window"]).await?;
    route(&app, MODEL, RouteStrategy::Priority, &["no-such-model", "gpt-big-window"]).await?;

    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    let sent = big.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["model"], "gpt-big-window", "the request is rewritten for the fallback model");
    let usage = app.wait_usage(1).await?;
    assert_eq!((usage[0].1.model_requested.as_str(), usage[0].1.channel_id.as_str()), (MODEL, "ch_big"));

    // A prompt too long for the model goes to the fallback, not back to the client.
    app.fake.set_scenario(Scenario::ErrorBody {
        status: 400,
        body: json!({"error": {"message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        .to_string(),
    });
    app.enable_key("ch_fake").await?;
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    assert_eq!(big.requests().len(), 2);
    // Without a route, the same failure is the client's 400.
    route(&app, MODEL, RouteStrategy::Priority, &[]).await?;
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 400);
    let logs = app.request_logs(3).await?;
    assert!(logs.iter().all(|l| l.model.as_deref() == Some(MODEL)), "logged under the model the client asked for");
    Ok(())
}

#[tokio::test]
async fn a_request_pins_or_forbids_providers_with_x_router_headers() -> anyhow::Result<()> {
    let app = spawn().await?;
    let deepseek = FakeOpenAi::start().await?;
    channel(&app, "ch_deepseek", "deepseek", &deepseek, &[MODEL]).await?;
    for _ in 0..4 {
        assert_eq!(ask_as(&app, MODEL, &[("x-router-provider", "deepseek")]).await?, 200);
    }
    assert_eq!((deepseek.requests().len(), app.fake.requests().len()), (4, 0));
    for _ in 0..4 {
        assert_eq!(ask_as(&app, MODEL, &[("x-router-exclude", "DeepSeek")]).await?, 200);
    }
    assert_eq!((deepseek.requests().len(), app.fake.requests().len()), (4, 4));
    assert_eq!(ask_as(&app, MODEL, &[("x-router-provider", "anthropic")]).await?, 404);
    assert_eq!(ask_as(&app, MODEL, &[("x-router-provider", "openai"), ("x-router-exclude", "openai")]).await?, 404);
    let long = "x".repeat(10_000);
    assert_eq!(ask_as(&app, MODEL, &[("x-router-provider", long.as_str())]).await?, 404);
    Ok(())
}

#[tokio::test]
async fn retries_stay_within_the_gateways_budget() -> anyhow::Result<()> {
    // No retry budget at all: a failure is answered without trying the other channel.
    let app = spawn_with(|c| {
        c.retry_budget_ratio = 0.0;
        c.retry_budget_min = 0;
    })
    .await?;
    let other = FakeOpenAi::start().await?;
    channel(&app, "ch_other", "openai", &other, &[MODEL]).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    other.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    for _ in 0..4 {
        assert_eq!(ask_as(&app, MODEL, &[]).await?, 502);
    }
    assert_eq!(app.fake.requests().len() + other.requests().len(), 4, "one attempt per request");

    // A budget of 50 % plus one: 10 failing requests make at most 6 retries.
    let app = spawn_with(|c| {
        c.retry_budget_ratio = 0.5;
        c.retry_budget_min = 1;
        c.breaker.failures = 64;
    })
    .await?;
    let other = FakeOpenAi::start().await?;
    channel(&app, "ch_other", "openai", &other, &[MODEL]).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    other.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    for _ in 0..10 {
        assert_eq!(ask_as(&app, MODEL, &[]).await?, 502);
    }
    let upstream = app.fake.requests().len() + other.requests().len();
    assert!((10..=16).contains(&upstream), "{upstream} upstream calls for 10 requests");
    Ok(())
}

#[tokio::test]
async fn no_retry_starts_once_the_requests_time_budget_is_spent() -> anyhow::Result<()> {
    // A spent budget (0) lets the first attempt run and no other.
    let app = spawn_with(|c| c.retry_time_budget = Duration::ZERO).await?;
    let other = FakeOpenAi::start().await?;
    channel(&app, "ch_other", "openai", &other, &[MODEL]).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    other.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    for _ in 0..3 {
        assert_eq!(ask_as(&app, MODEL, &[]).await?, 502);
    }
    assert_eq!(app.fake.requests().len() + other.requests().len(), 3);
    // With time left, the other channel is tried.
    let app = spawn().await?;
    let other = FakeOpenAi::start().await?;
    channel(&app, "ch_other", "openai", &other, &[MODEL]).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    Ok(())
}

/// FAULTS.md row 2: a 429 on the first channel tried moves the call to the next channel, and the
/// client sees a 200 (the first channel's key rests; the next request goes straight to the second).
#[tokio::test]
async fn row2_a_429_on_the_first_channel_moves_the_call_to_the_second_and_the_client_sees_200() -> anyhow::Result<()> {
    let app = spawn().await?;
    let cheap = FakeOpenAi::start().await?;
    channel(&app, "ch_cheap", "openai", &cheap, &[MODEL]).await?;
    price(&app, MODEL, "ch_fake", 900_000_000).await?;
    price(&app, MODEL, "ch_cheap", 100_000_000).await?;
    route(&app, MODEL, RouteStrategy::LowestCost, &[]).await?;
    cheap.set_scenario(Scenario::FailStatus { status: 429, retry_after: Some(30) });
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    assert_eq!((cheap.requests().len(), app.fake.requests().len()), (1, 1), "tried the cheap channel, then the other");
    let usage = app.wait_usage(1).await?;
    assert!(usage.iter().all(|(_, u)| u.channel_id == "ch_fake"), "billed at the serving channel");
    // The rate-limited channel's key rests: the next call does not try it again.
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    assert_eq!((cheap.requests().len(), app.fake.requests().len()), (1, 2));
    Ok(())
}

/// `route.removed`: the model's fallback stops serving from the next request on (the default
/// route has no fallback), and setting a route again brings it back.
#[tokio::test]
async fn a_removed_route_stops_applying_on_the_next_request() -> anyhow::Result<()> {
    let app = spawn().await?;
    let big = FakeOpenAi::start().await?;
    channel(&app, "ch_big", "openai", &big, &["gpt-big-window"]).await?;
    route(&app, MODEL, RouteStrategy::Priority, &["gpt-big-window"]).await?;
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200, "the fallback serves while the route holds");
    assert_eq!(big.requests().len(), 1);

    let body = EventBody::RouteRemoved(schemas::RouteRemoved { model: MODEL.into() });
    app.log.append_acked(&helpers::control(GLOBAL_TENANT, body)).await?;
    applied(&app).await?;
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 502, "no fallback once the route is removed");
    assert_eq!(big.requests().len(), 1, "the removed route's fallback was still used");

    route(&app, MODEL, RouteStrategy::Priority, &["gpt-big-window"]).await?;
    assert_eq!(ask_as(&app, MODEL, &[]).await?, 200);
    assert_eq!(big.requests().len(), 2);
    Ok(())
}
