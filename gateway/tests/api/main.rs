//! The gateway over real HTTP on loopback, against a fake OpenAI upstream and an embedded event
//! log in a temp dir. Assertions are on the responses and on the events appended.

mod anthropic;
mod caps;
mod conformance;
mod egress;
mod failures;
mod faults;
mod flood;
mod gemini;
mod helpers;
mod keys;
mod limits;
mod providers;
mod proxies;
mod routes;
mod stream_bounds;
mod tokens;

use std::time::{Duration, Instant};

use futures::StreamExt;
use helpers::{MODEL, TENANT, UPSTREAM_KEY, error_of, spawn, spawn_with, sse_payloads};
use schemas::{ApiKeyRevoked, EventBody, StreamOutcome, UsageSource};
use serde_json::{Value, json};
use testkit::fake_openai::{FakeUsage, Scenario};

fn chat(stream: bool) -> Value {
    json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Say hello"}]})
}

#[tokio::test]
async fn chat_completion_is_billed_once_with_the_upstream_counts_and_price() -> anyhow::Result<()> {
    let app = spawn().await?;
    let resp = app.post("/v1/chat/completions", &chat(false)).await?;
    assert_eq!(resp.status(), 200);
    let request_id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body: Value = resp.json().await?;
    assert_eq!(body["choices"][0]["message"]["content"], "Hello, world!");
    assert_eq!(body["usage"]["prompt_tokens"], 25);

    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    let (env, u) = &usage[0];
    assert_eq!(env.tenant, TENANT);
    assert_eq!(env.correlation_id, request_id);
    assert_eq!(Some(u.request_id.clone()), request_id);
    assert_eq!(u.key_id, app.key_id);
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens, u.reasoning_tokens), (20, 5, 12, 2));
    assert_eq!(u.usage_source, UsageSource::Upstream);
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    assert!(!u.streamed);
    assert_eq!(u.price.as_ref(), Some(&app.price));
    // 20 × 0.15 + 5 × 0.075 + 12 × 0.60 USD per million tokens.
    assert_eq!(u.cost_nanos, 3_000 + 375 + 7_200);
    assert_eq!(u.cost_nanos, app.price.cost_nanos(20, 5, 0, 12));
    assert_eq!(u.raw_usage.as_ref().map(|r| r["prompt_tokens"].clone()), Some(json!(25)));

    let forwarded = app.fake.requests();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].authorization(), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
    assert_eq!(forwarded[0].body, chat(false));

    let logs = app.request_logs(1).await?;
    assert_eq!(logs.len(), 1);
    assert_eq!((logs[0].status, logs[0].attempts), (200, 1));
    Ok(())
}

#[tokio::test]
async fn streamed_chat_completion_is_billed_once_and_hides_the_usage_chunk_it_injected() -> anyhow::Result<()> {
    let app = spawn().await?;
    let resp = app.post("/v1/chat/completions", &chat(true)).await?;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let payloads = sse_payloads(resp).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        payloads.iter().filter(|p| *p != "[DONE]").map(|p| serde_json::from_str(p)).collect::<Result<_, _>>()?;
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.get("usage").is_none() && c["choices"].as_array().is_some_and(|a| !a.is_empty())));

    let forwarded = app.fake.requests();
    assert_eq!(forwarded[0].body["stream_options"], json!({"include_usage": true}));
    assert_eq!(forwarded[0].body["messages"], chat(true)["messages"]);

    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    let u = &usage[0].1;
    assert!(u.streamed);
    assert_eq!(u.stream_outcome, StreamOutcome::Completed);
    assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (20, 5, 12));
    assert_eq!(u.cost_nanos, app.price.cost_nanos(20, 5, 0, 12));
    Ok(())
}

#[tokio::test]
async fn streamed_chat_keeps_the_usage_chunk_when_the_client_asked_for_it() -> anyhow::Result<()> {
    let app = spawn().await?;
    let mut req = chat(true);
    req["stream_options"] = json!({"include_usage": true});
    let payloads = sse_payloads(app.post("/v1/chat/completions", &req).await?).await?;
    let n = payloads.len();
    assert!(n >= 2);
    assert_eq!(payloads[n - 1], "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&payloads[n - 2])?;
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 12);
    // The client's own body went upstream unchanged.
    assert_eq!(app.fake.requests()[0].body, req);
    assert_eq!(app.usage().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn stream_with_comments_and_crlf_is_relayed_and_billed() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::CommentsAndCrlf);
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(payloads.len(), 6);
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.usage_source, UsageSource::Upstream);
    Ok(())
}

#[tokio::test]
async fn bad_inputs_get_their_documented_error_and_are_never_billed() -> anyhow::Result<()> {
    let app = spawn().await?;
    let limited = helpers::issue_key(&app.log, Some(vec!["text-embedding-3-small".into()])).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let big = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"{}"}}]}}"#, "a".repeat(2 << 20));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str, Option<&str>)> = vec![
        ("truncated json", raw(&app, "{\"model\": "), 400, "invalid_json", Some("model")),
        ("not json", raw(&app, "hello"), 400, "invalid_json", None),
        ("not an object", raw(&app, "[1,2]"), 400, "invalid_json", None),
        ("wrong type", raw(&app, r#"{"model": 7, "messages": []}"#), 400, "invalid_json", Some("model")),
        (
            "bad json inside a field",
            raw(&app, r#"{"model":"gpt-4o-mini","messages":[{"role":}]}"#),
            400,
            "invalid_json",
            Some("messages"),
        ),
        ("duplicate key", raw(&app, r#"{"model":"a","model":"b"}"#), 400, "invalid_json", Some("model")),
        ("missing model", raw(&app, r#"{"messages":[]}"#), 400, "missing_required_parameter", Some("model")),
        (
            "invalid utf-8",
            app.http.post(app.url("/v1/chat/completions")).bearer_auth(&app.key).body(b"{\"model\":\"\xff\"}".to_vec()),
            400,
            "invalid_json",
            None,
        ),
        (
            "api_base",
            raw(&app, r#"{"model":"gpt-4o-mini","api_base":"http://169.254.169.254","messages":[]}"#),
            400,
            "unsupported_parameter",
            Some("api_base"),
        ),
        (
            "api_key",
            raw(&app, r#"{"model":"gpt-4o-mini","api_key":"sk-other","messages":[]}"#),
            400,
            "unsupported_parameter",
            Some("api_key"),
        ),
        (
            "unknown model",
            raw(&app, r#"{"model":"no-such-model","messages":[]}"#),
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            "model not allowed for the key",
            app.http
                .post(app.url("/v1/chat/completions"))
                .bearer_auth(&limited.plaintext)
                .body(chat(false).to_string()),
            404,
            "model_not_found",
            Some("model"),
        ),
        ("too large", raw(&app, big.clone()), 413, "request_too_large", None),
        (
            "too large, chunked",
            app.http.post(app.url("/v1/chat/completions")).bearer_auth(&app.key).body(reqwest::Body::wrap_stream(
                futures::stream::iter(
                    big.clone()
                        .into_bytes()
                        .chunks(64 * 1024)
                        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
                        .collect::<Vec<_>>(),
                ),
            )),
            413,
            "request_too_large",
            None,
        ),
        (
            "no key",
            app.http.post(app.url("/v1/chat/completions")).body(chat(false).to_string()),
            401,
            "invalid_api_key",
            None,
        ),
        (
            "unknown key",
            app.http.post(app.url("/v1/chat/completions")).bearer_auth("sk-nope").body(chat(false).to_string()),
            401,
            "invalid_api_key",
            None,
        ),
        (
            "sql-ish key",
            app.http
                .post(app.url("/v1/chat/completions"))
                .header("authorization", "Bearer ' OR '1'='1")
                .body(chat(false).to_string()),
            401,
            "invalid_api_key",
            None,
        ),
        (
            "10 KB key",
            app.http
                .post(app.url("/v1/chat/completions"))
                .header("authorization", format!("Bearer sk-{}", "x".repeat(10_000)))
                .body(chat(false).to_string()),
            401,
            "invalid_api_key",
            None,
        ),
    ];
    let n = cases.len();
    // Failed authentications are counted into one aggregate event, not logged one by one.
    let auth_failures = cases.iter().filter(|c| c.2 == 401).count();
    for (name, req, status, code, param) in cases {
        let resp = req.send().await?;
        assert!(resp.headers().contains_key("x-request-id"), "{name}: no x-request-id");
        let (got, body) = error_of(resp).await?;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert_eq!(body["error"]["param"].as_str(), param, "{name}: {body}");
        assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string(), "{name}: {body}");
        assert!(!body.to_string().contains("sk-"), "{name}: key echoed: {body}");
    }
    assert!(app.fake.requests().is_empty(), "a bad request reached the upstream");
    assert!(app.usage().await?.is_empty());
    let logs = app.request_logs(n - auth_failures).await?;
    assert_eq!(logs.len(), n - auth_failures);
    assert!(logs.iter().all(|l| l.error_class.is_some()));
    Ok(())
}

fn raw(app: &helpers::TestApp, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
    app.http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(body)
}

#[tokio::test]
async fn a_revoked_key_is_refused_within_one_second() -> anyhow::Result<()> {
    let app = spawn().await?;
    assert_eq!(app.post("/v1/chat/completions", &chat(false)).await?.status(), 200);
    app.log
        .append_acked(&helpers::control(TENANT, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: app.key_id.clone() })))
        .await?;
    let revoked_at = Instant::now();
    loop {
        let resp = app.post("/v1/chat/completions", &chat(false)).await?;
        if resp.status() == 401 {
            let (_, body) = error_of(resp).await?;
            assert_eq!(body["error"]["code"], "invalid_api_key");
            break;
        }
        assert!(revoked_at.elapsed() < Duration::from_secs(1), "revoked key still accepted after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    Ok(())
}

#[tokio::test]
async fn a_key_issued_by_another_writer_works_on_its_first_request_twenty_times_in_a_row() -> anyhow::Result<()> {
    let app = spawn().await?;
    // A second writer on the same log, as the admin CLI is: its appends do not wake the
    // gateway's tail, which would see them only at its next poll.
    let spool = tempfile::tempdir()?;
    let other = app.other_writer(spool.path()).await?;
    for i in 0..20 {
        let issued = helpers::issue_key(&other, None).await?;
        let resp = app.http.get(app.url("/v1/models")).bearer_auth(&issued.plaintext).send().await?;
        assert_eq!(resp.status(), 200, "key {i} refused on its first request");
    }
    let unknown = app.http.get(app.url("/v1/models")).bearer_auth("sk-never-issued").send().await?;
    assert_eq!(unknown.status(), 401);
    Ok(())
}

#[tokio::test]
async fn a_flood_of_unknown_keys_reads_the_log_end_a_bounded_number_of_times() -> anyhow::Result<()> {
    // The per-address throttle would answer most of these 429 before any lookup; lift it so
    // every request reaches the key table.
    let app = helpers::spawn_with(|c| c.auth_failure_limit = 10_000).await?;
    let started = Instant::now();
    let requests = (0..200).map(|i| {
        let (http, url) = (app.http.clone(), app.url("/v1/models"));
        async move { http.get(url).bearer_auth(format!("sk-unknown-{i}")).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures::future::join_all(requests).await;
    assert!(statuses.iter().all(|s| matches!(s, Ok(401))), "{statuses:?}");
    // Coalesced and rate-limited: 200 concurrent unknown keys share a handful of reads, one per
    // 25 ms at most, so they are all answered well within a second.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(app.gateway.control_catch_ups() <= 2 + started.elapsed().as_millis() as u64 / 25);
    Ok(())
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_is_still_billed_as_client_disconnected() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::SlowChunks(Duration::from_millis(100)));
    app.fake.set_pieces(&["a", "b", "c", "d", "e", "f", "g", "h"]);
    let resp = app.post("/v1/chat/completions", &chat(true)).await?;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await;
    assert!(matches!(first, Some(Ok(_))));
    drop(body);
    let usage = app.wait_usage(1).await?;
    assert_eq!(usage.len(), 1);
    let u = &usage[0].1;
    assert_eq!(u.stream_outcome, StreamOutcome::ClientDisconnected);
    // The upstream was drained to its usage chunk.
    assert_eq!(u.usage_source, UsageSource::Upstream);
    assert_eq!(u.output_tokens, 12);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.usage().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_client_that_disconnects_during_a_non_stream_call_is_still_billed() -> anyhow::Result<()> {
    let app = spawn_with(|c| c.idle_timeout = Duration::from_secs(5)).await?;
    app.fake.set_scenario(Scenario::SlowChunks(Duration::from_millis(100)));
    let http = app.http.clone();
    let url = app.url("/v1/chat/completions");
    let key = app.key.clone();
    let task = tokio::spawn(async move {
        let _ = http.post(url).bearer_auth(key).json(&json!({"model": MODEL, "messages": []})).send().await;
    });
    // The fake answers after 4 × 100 ms; the client gives up long before.
    tokio::time::sleep(Duration::from_millis(100)).await;
    task.abort();
    assert!(app.usage().await?.is_empty());
    let usage = app.wait_usage(1).await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::Completed);
    Ok(())
}

#[tokio::test]
async fn missing_usage_is_estimated_with_the_tokenizer() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::NoUsage);
    let resp = app.post("/v1/chat/completions", &chat(false)).await?;
    assert_eq!(resp.status(), 200);
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    let u = &usage[0].1;
    assert_eq!(u.usage_source, UsageSource::Estimated);
    assert!(u.input_tokens > 0 && u.output_tokens > 0, "{u:?}");
    assert!(u.raw_usage.is_none());
    assert_eq!(u.cost_nanos, app.price.cost_nanos(u.input_tokens, 0, 0, u.output_tokens));

    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[1].1.usage_source, UsageSource::Estimated);
    assert!(usage[1].1.output_tokens > 0);
    Ok(())
}

#[tokio::test]
async fn an_explicit_zero_usage_stays_zero() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_usage(FakeUsage { prompt_tokens: 0, completion_tokens: 0, cached_tokens: 0, reasoning_tokens: 0 });
    assert_eq!(app.post("/v1/chat/completions", &chat(false)).await?.status(), 200);
    let u = &app.usage().await?[0].1;
    assert_eq!((u.input_tokens, u.output_tokens, u.cost_nanos), (0, 0, 0));
    assert_eq!(u.usage_source, UsageSource::Upstream);
    Ok(())
}

#[tokio::test]
async fn an_upstream_error_mid_stream_is_one_error_event_without_done_and_billed_as_upstream_error()
-> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::ErrorAfterChunks(2));
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    assert!(!payloads.iter().any(|p| p == "[DONE]"));
    let err: Value = serde_json::from_str(&payloads[2])?;
    assert_eq!(err["error"]["type"], "upstream_error");
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::UpstreamError);
    assert_eq!(usage[0].1.usage_source, UsageSource::Estimated);
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_drops_the_connection_mid_stream_gets_an_error_event() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::CloseAfterChunks(2));
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    let err: Value = serde_json::from_str(&payloads[2])?;
    assert!(err["error"]["code"].is_string());
    assert_eq!(app.usage().await?[0].1.stream_outcome, StreamOutcome::UpstreamError);
    Ok(())
}

#[tokio::test]
async fn invalid_json_from_the_upstream_mid_stream_is_an_in_band_protocol_error() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::InvalidJsonAfterChunks(1));
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    let err: Value = serde_json::from_str(&payloads[1])?;
    assert_eq!(err["error"]["code"], "upstream_protocol_error");
    assert_eq!(app.usage().await?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_never_answers_gets_504_after_the_first_byte_timeout() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::Hang);
    let started = Instant::now();
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(false)).await?).await?;
    assert_eq!(status, 504);
    assert_eq!(body["error"]["code"], "upstream_timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    let (status, _) = error_of(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(status, 504);
    assert!(app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn upstream_failures_before_headers_map_to_gateway_errors_never_401() -> anyhow::Result<()> {
    let app = spawn().await?;
    for (scenario, status, code) in [
        (Scenario::FailStatus { status: 500, retry_after: None }, 502, "upstream_error"),
        (Scenario::FailStatus { status: 401, retry_after: None }, 502, "upstream_error"),
        (Scenario::FailStatus { status: 429, retry_after: Some(7) }, 503, "upstream_overloaded"),
        (Scenario::Html200, 502, "upstream_invalid_response"),
    ] {
        app.fake.set_scenario(scenario.clone());
        // A 401 disables the key and a 429 rests it: each case starts with it in rotation.
        app.enable_key("ch_fake").await?;
        let resp = app.post("/v1/chat/completions", &chat(false)).await?;
        let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (got, body) = error_of(resp).await?;
        assert_eq!(got, status, "{scenario:?}: {body}");
        assert_eq!(body["error"]["code"], code, "{scenario:?}");
        assert!(!body.to_string().contains("127.0.0.1") && !body.to_string().contains(UPSTREAM_KEY));
        if status == 503 {
            assert_eq!(retry_after.as_deref(), Some("7"));
        }
    }
    app.fake.set_scenario(Scenario::FailStatus { status: 400, retry_after: None });
    app.enable_key("ch_fake").await?;
    let (got, body) = error_of(app.post("/v1/chat/completions", &chat(false)).await?).await?;
    assert_eq!(got, 400);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_dead_upstream_is_a_quick_502_without_the_url() -> anyhow::Result<()> {
    let app = spawn().await?;
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let dead_addr = dead.local_addr()?;
    drop(dead);
    app.log
        .append_acked(&helpers::control(
            schemas::GLOBAL_TENANT,
            EventBody::ChannelUpdated(schemas::ChannelUpdated {
                channel_id: "ch_fake".into(),
                base_url: Some(format!("http://user:pass@{dead_addr}/v1")),
                ..Default::default()
            }),
        ))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(false)).await?).await?;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(!body.to_string().contains("pass") && !body.to_string().contains(&dead_addr.to_string()));
    Ok(())
}

#[tokio::test]
async fn embeddings_and_completions_are_proxied_and_billed() -> anyhow::Result<()> {
    let app = spawn().await?;
    let resp = app.post("/v1/embeddings", &json!({"model": "text-embedding-3-small", "input": ["a", "b"]})).await?;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await?;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    let resp = app.post("/v1/completions", &json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say hi"})).await?;
    assert_eq!(resp.status(), 200);
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0].1.endpoint, "embeddings");
    assert_eq!((usage[0].1.input_tokens, usage[0].1.output_tokens), (25, 0));
    assert_eq!(usage[1].1.endpoint, "completions");
    // No price for these models: cost 0, in USD, no price attached.
    assert_eq!((usage[1].1.cost_nanos, usage[1].1.currency.as_str(), usage[1].1.price.is_none()), (0, "USD", true));
    Ok(())
}

#[tokio::test]
async fn models_lists_what_the_key_may_use() -> anyhow::Result<()> {
    let app = spawn().await?;
    let body: Value = app.http.get(app.url("/v1/models")).bearer_auth(&app.key).send().await?.json().await?;
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"].as_array().into_iter().flatten().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, vec!["gpt-3.5-turbo-instruct", MODEL, "text-embedding-3-small"]);
    let limited = helpers::issue_key(&app.log, Some(vec![MODEL.into(), "not-served".into()])).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body: Value = app.http.get(app.url("/v1/models")).bearer_auth(&limited.plaintext).send().await?.json().await?;
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert!(app.gateway.control_seq() > 0 && app.gateway.is_ready());
    // Non-billable reads append no event (a client polling the list must not grow the log).
    assert!(app.request_logs(0).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_failing_channel_is_skipped_before_the_first_byte_and_the_call_is_billed_once() -> anyhow::Result<()> {
    let app = spawn().await?;
    let primary = testkit::fake_openai::FakeOpenAi::start().await?;
    let master_key = app.master_key.clone();
    app.log
        .append_acked(&helpers::control(
            schemas::GLOBAL_TENANT,
            EventBody::ChannelAdded(schemas::ChannelAdded {
                channel_id: "ch_primary".into(),
                name: "primary".into(),
                provider: "openai".into(),
                base_url: primary.base_url(),
                api_key: Some(master_key.seal("sk-primary", "ch_primary")),
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
    tokio::time::sleep(Duration::from_millis(300)).await;

    primary.set_scenario(Scenario::FailStatus { status: 503, retry_after: None });
    assert_eq!(app.post("/v1/chat/completions", &chat(false)).await?.status(), 200);
    // Closing after the headers but before the first event is still "before the first byte".
    primary.set_scenario(Scenario::CloseAfterChunks(0));
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));

    assert_eq!(primary.requests().len(), 2);
    assert_eq!(primary.requests()[0].authorization(), Some("Bearer sk-primary"));
    assert_eq!(app.fake.requests().len(), 2);
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|(_, u)| u.channel_id == "ch_fake"));
    let logs = app.request_logs(2).await?;
    assert!(logs.iter().all(|l| l.attempts == 2 && l.channel_id.as_deref() == Some("ch_fake")), "{logs:?}");
    Ok(())
}

#[tokio::test]
async fn an_upstream_that_stalls_mid_stream_gets_an_idle_timeout_error_event_and_is_billed() -> anyhow::Result<()> {
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::StallAfterChunks(2));
    let started = Instant::now();
    let payloads = sse_payloads(app.post("/v1/chat/completions", &chat(true)).await?).await?;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(payloads.len(), 3, "{payloads:?}");
    let err: Value = serde_json::from_str(&payloads[2])?;
    assert_eq!(err["error"]["code"], "upstream_timeout");
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].1.stream_outcome, StreamOutcome::UpstreamError);
    Ok(())
}

#[tokio::test]
async fn the_gateway_starts_on_an_empty_log_and_picks_up_keys_live() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (log, _nats) = helpers::open_log(dir.path()).await?;
    let gw = gateway::Gateway::start(
        log.clone(),
        gateway::GatewayConfig::new(schemas::secret::MasterKey::generate(), "gw-empty"),
    )
    .await?;
    assert_eq!(gw.control_seq(), 0);
    assert!(gw.is_ready());
    helpers::issue_key(&log, None).await?;
    let deadline = Instant::now() + Duration::from_secs(1);
    while gw.control_seq() == 0 {
        assert!(Instant::now() < deadline, "key not seen within 1 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_requests_are_each_billed_exactly_once_and_no_event_holds_a_secret_or_prompt() -> anyhow::Result<()>
{
    let app = spawn().await?;
    let canary = "prompt-canary-7f3e";
    let mut tasks = Vec::new();
    for i in 0..20 {
        let req = json!({"model": MODEL, "stream": i % 2 == 0, "messages": [{"role": "user", "content": canary}]});
        let (http, url, key) = (app.http.clone(), app.url("/v1/chat/completions"), app.key.clone());
        tasks.push(tokio::spawn(async move {
            let resp = http.post(url).bearer_auth(key).json(&req).send().await?;
            let id = resp.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
            let status = resp.status().as_u16();
            let _ = resp.bytes().await?;
            anyhow::Ok((status, id))
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (status, id) = t.await??;
        assert_eq!(status, 200);
        ids.push(id.unwrap_or_default());
    }
    let usage = app.usage().await?;
    assert_eq!(usage.len(), 20);
    let mut billed: Vec<String> = usage.iter().map(|(_, u)| u.request_id.clone()).collect();
    billed.sort();
    ids.sort();
    assert_eq!(billed, ids);
    for raw in app.raw_events().await? {
        for secret in [UPSTREAM_KEY, app.key.as_str(), canary] {
            assert!(!raw.contains(secret), "an event contains a secret or the prompt: {raw}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_serving_channels_price_override_is_charged_and_other_channels_overrides_are_not() -> anyhow::Result<()> {
    use schemas::{AppliedPrice, GLOBAL_TENANT, PricePublished};
    let app = spawn().await?;
    let publish = |channel: &str, currency: &str, input: i64| PricePublished {
        model: MODEL.into(),
        channel_id: Some(channel.into()),
        currency: currency.into(),
        input_per_mtok_nanos: input,
        output_per_mtok_nanos: 2 * input,
        cached_input_per_mtok_nanos: None,
        cache_write_per_mtok_nanos: None,
    };
    let other = publish("ch_other", "USD", 9_000_000_000);
    app.log.append_acked(&helpers::control(GLOBAL_TENANT, EventBody::PricePublished(other))).await?;
    let mine = publish("ch_fake", "CNY", 1_000_000_000);
    let ev = helpers::control(GLOBAL_TENANT, EventBody::PricePublished(mine.clone()));
    app.log.append_acked(&ev).await?;
    let until = app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let resp = app.post("/v1/chat/completions", &chat(false)).await?;
    assert_eq!(resp.status(), 200);
    let u = app.wait_usage(1).await?[0].1.clone();
    let want = AppliedPrice::from((ev.id.to_string().as_str(), &mine));
    assert_eq!(u.price.as_ref(), Some(&want));
    assert_eq!(u.currency, "CNY");
    assert_eq!(
        u.cost_nanos,
        want.cost_nanos(u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens)
    );
    Ok(())
}
