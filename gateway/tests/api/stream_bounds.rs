//! Bounds on what one upstream answer may hold (fault row 6): keep-alives are not progress, a
//! stream ends at the maximum stream duration with an in-band error in the client's protocol and
//! is billed for what was delivered, and a non-stream answer is read under a size cap and the
//! same duration.

use std::time::{Duration, Instant};

use schemas::{StreamOutcome, UsageSource};
use serde_json::{Value, json};
use testkit::fake_openai::Scenario;

use crate::failures::{SURFACES, Surface, ask};
use crate::helpers::{MODEL, error_of, spawn_with, sse_payloads};

/// The in-band error that ends a stream body, in each client protocol's shape: (code or type).
fn last_error(surface: Surface, raw: &str) -> Option<String> {
    let raw = &raw.replace("\r\n", "\n");
    let payloads: Vec<&str> =
        raw.split("\n\n").filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: "))).collect();
    let last: Value = serde_json::from_str(payloads.last()?).ok()?;
    match surface {
        Surface::OpenAi => last["error"]["code"].as_str().map(str::to_owned),
        // `event: error` with `{"type":"error","error":{"type":…}}`.
        Surface::Anthropic => {
            let named = raw.trim_end().rsplit("\n\n").next().is_some_and(|e| e.starts_with("event: error"));
            named.then(|| last["error"]["type"].as_str().map(str::to_owned)).flatten()
        }
        Surface::Gemini => last["error"]["status"].as_str().map(str::to_owned),
    }
}

#[tokio::test]
async fn row6_an_upstream_that_only_sends_keep_alives_is_cut_at_the_idle_timeout_and_billed() -> anyhow::Result<()> {
    // Idle timeout 1 s (the suite's); pings every 50 ms would have reset a per-byte timer forever.
    let app = spawn_with(|_| {}).await?;
    app.fake.set_scenario(Scenario::PingForeverAfterChunks(2));
    let started = Instant::now();
    let resp = app
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
    let payloads = tokio::time::timeout(Duration::from_secs(10), sse_payloads(resp)).await??;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "{took:?}");
    let err: Value = serde_json::from_str(payloads.last().map_or("", String::as_str))?;
    assert_eq!(err["error"]["code"], "upstream_timeout", "{payloads:?}");
    assert!(!payloads.iter().any(|p| p == "[DONE]"));
    let usage = app.wait_usage(1).await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::UpstreamError);
    assert!(usage[0].1.output_tokens > 0, "the two chunks delivered are billed");
    let logs = app.request_logs(1).await?;
    assert_eq!(logs[0].attempt_log.last().map(|a| a.class.as_str()), Some("idle_timeout"), "{logs:?}");
    Ok(())
}

#[tokio::test]
async fn row6_a_stream_past_the_maximum_duration_ends_in_band_in_every_protocol_and_is_billed() -> anyhow::Result<()> {
    // Content every 100 ms: the idle timer never fires, the duration cap (2 s) does.
    let app = spawn_with(|c| c.max_stream_duration = Duration::from_secs(2)).await?;
    app.fake.set_scenario(Scenario::StreamForever(Duration::from_millis(100)));
    for surface in SURFACES {
        let started = Instant::now();
        let (status, _, raw) = tokio::time::timeout(Duration::from_secs(10), ask(&app, surface, true)).await??;
        let took = started.elapsed();
        assert_eq!(status, 200, "{surface:?}");
        assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "{surface:?}: {took:?}");
        let want = match surface {
            Surface::OpenAi => "stream_too_long",
            Surface::Anthropic => "timeout_error",
            Surface::Gemini => "DEADLINE_EXCEEDED",
        };
        assert_eq!(last_error(surface, &raw).as_deref(), Some(want), "{surface:?}: {raw}");
        assert!(raw.contains("tick 3 "), "{surface:?}: content was delivered before the cut");
        assert!(!raw.contains("[DONE]") && !raw.contains("message_stop"), "{surface:?}");
    }
    let usage = app.wait_usage(3).await?;
    assert_eq!(usage.len(), 3);
    for (_, u) in &usage {
        assert_eq!(u.stream_outcome, StreamOutcome::UpstreamError);
        assert_eq!(u.usage_source, UsageSource::Estimated);
        // About 20 ticks of 3–4 tokens each were delivered before the cut.
        assert!(u.output_tokens >= 20, "{u:?}");
        assert!(u.cost_nanos > 0);
    }
    let logs = app.request_logs(3).await?;
    assert!(logs.iter().all(|l| l.attempt_log.last().map(|a| a.class.as_str()) == Some("stream_too_long")), "{logs:?}");
    // The upstream connections were dropped: the fake saw three requests and nothing keeps
    // streaming (a new request is served at once).
    app.fake.set_scenario(Scenario::Normal);
    let (status, _, _) = ask(&app, Surface::OpenAi, false).await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn row6_a_non_stream_answer_is_read_under_the_size_cap_and_the_duration_cap() -> anyhow::Result<()> {
    let app = spawn_with(|c| {
        c.max_answer_bytes = 64 * 1024;
        c.max_stream_duration = Duration::from_millis(1500);
    })
    .await?;
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    let big = "x".repeat(100 * 1024);
    app.fake.set_pieces(&[&big]);
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat).await?).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_invalid_response")), "{body}");
    // Under the cap, it is served.
    let small = "y".repeat(10 * 1024);
    app.fake.set_pieces(&[&small]);
    assert_eq!(app.post("/v1/chat/completions", &chat).await?.status(), 200);
    // A body dripping 16 bytes every 200 ms never trips the idle timeout (1 s) but is cut at the
    // duration cap: 504, not an endless wait.
    app.fake.set_pieces(&["Hello"]);
    app.fake.set_scenario(Scenario::DripBody(Duration::from_millis(200)));
    let started = Instant::now();
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat).await?).await?;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(4), "{took:?}");
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("upstream_timeout")), "{body}");
    // Nothing was billed for the answers that never reached the client.
    assert_eq!(app.usage().await?.len(), 1);
    Ok(())
}
