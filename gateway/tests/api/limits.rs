//! Request limits through the real HTTP interface (FAULTS rows 19, 20, 22, 42): oversized
//! identifier fields, out-of-range parameters and too many messages are refused with a 400 that
//! names the field in each client protocol's shape, never echo the value, never reach the
//! upstream, and never put the value into an event — on the embedded log and on JetStream.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use futures::StreamExt;
use gateway::{Gateway, GatewayConfig};
use nats::{EventLog, JetStreamOptions};
use schemas::secret::MasterKey;
use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, Stream, TenantCreated};
use serde_json::{Value, json};
use testkit::fake_openai::FakeOpenAi;
use testkit::nats_server::NatsServer;

use crate::helpers::{self, MODEL, TENANT, TestApp, error_of, spawn, spawn_with};

const MIB: usize = 1024 * 1024;

fn chat() -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hello"}]})
}

/// A body limit large enough for the multi-MiB fields of FAULTS row 42.
async fn spawn_big_bodies() -> anyhow::Result<TestApp> {
    spawn_with(|c| c.body_limit_bytes = 32 * MIB).await
}

/// Asserts an OpenAI-shaped 400 naming `param` with `code`, short and without `canary`.
async fn assert_refused(resp: reqwest::Response, param: &str, code: &str, canary: &str) -> anyhow::Result<()> {
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    ensure!(status == 400, "status {status}: {}", &text[..text.len().min(300)]);
    ensure!(text.len() < 1024, "the error body is {} bytes", text.len());
    ensure!(!text.contains(canary), "the error echoes the value: {text}");
    let body: Value = serde_json::from_str(&text)?;
    ensure!(body["error"]["type"] == "invalid_request_error", "{body}");
    ensure!(body["error"]["param"] == param, "param {} instead of {param}", body["error"]["param"]);
    ensure!(body["error"]["code"] == code, "code {} instead of {code}", body["error"]["code"]);
    Ok(())
}

/// No stored event holds `canary`.
async fn assert_no_event_contains(app: &TestApp, canary: &str) -> anyhow::Result<()> {
    for raw in app.raw_events().await? {
        ensure!(!raw.contains(canary), "an event holds the value ({} bytes)", raw.len());
    }
    Ok(())
}

#[tokio::test]
async fn chat_completion_with_a_2_mib_model_name_is_refused_with_param_model() -> anyhow::Result<()> {
    let app = spawn_big_bodies().await?;
    let model = "m".repeat(2 * MIB);
    let resp = app.post("/v1/chat/completions", &json!({"model": model, "messages": []})).await?;
    assert_refused(resp, "model", "string_above_max_length", "mmmmmmmm").await?;
    ensure!(app.fake.requests().is_empty(), "the upstream was called");
    let logs = app.request_logs(1).await?;
    ensure!(logs.len() == 1 && logs[0].status == 400 && logs[0].model.is_none(), "{logs:?}");
    ensure!(logs[0].error_class.as_deref() == Some("string_above_max_length"));
    assert_no_event_contains(&app, "mmmmmmmm").await
}

#[tokio::test]
async fn chat_completion_with_an_8_mib_user_is_refused_with_param_user() -> anyhow::Result<()> {
    let app = spawn_big_bodies().await?;
    let mut body = chat();
    body["user"] = json!("u".repeat(8 * MIB));
    let resp = app.post("/v1/chat/completions", &body).await?;
    assert_refused(resp, "user", "string_above_max_length", "uuuuuuuu").await?;
    ensure!(app.fake.requests().is_empty());
    assert_no_event_contains(&app, "uuuuuuuu").await
}

#[tokio::test]
async fn identifier_limits_hold_on_completions_and_embeddings_and_a_user_of_256_bytes_passes() -> anyhow::Result<()> {
    let app = spawn().await?;
    let long = "z".repeat(257);
    let cases = [
        ("/v1/completions", json!({"model": long, "prompt": "hi"}), "model"),
        ("/v1/embeddings", json!({"model": long, "input": "hi"}), "model"),
        ("/v1/completions", json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "user": long}), "user"),
        ("/v1/embeddings", json!({"model": "text-embedding-3-small", "input": "hi", "user": long}), "user"),
    ];
    for (path, body, param) in cases {
        let resp = app.post(path, &body).await?;
        assert_refused(resp, param, "string_above_max_length", &long).await.with_context(|| path.to_owned())?;
    }
    ensure!(app.fake.requests().is_empty());
    let mut body = chat();
    body["user"] = json!("u".repeat(256));
    ensure!(app.post("/v1/chat/completions", &body).await?.status() == 200);
    let usage = app.wait_usage(1).await?;
    ensure!(usage.len() == 1 && usage[0].1.user.as_deref().map(str::len) == Some(256));
    Ok(())
}

#[tokio::test]
async fn oversized_openai_metadata_is_refused_naming_the_field() -> anyhow::Result<()> {
    let app = spawn().await?;
    let mut body = chat();
    body["metadata"] = json!({"note": "v".repeat(600)});
    assert_refused(app.post("/v1/chat/completions", &body).await?, "metadata.note", "string_above_max_length", "vvvv")
        .await?;
    let many: serde_json::Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    body["metadata"] = Value::Object(many);
    assert_refused(app.post("/v1/chat/completions", &body).await?, "metadata", "object_above_max_properties", "@@")
        .await?;
    ensure!(app.fake.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn messages_with_an_oversized_model_or_user_id_are_refused_in_anthropics_shape() -> anyhow::Result<()> {
    let app = spawn_big_bodies().await?;
    let base = json!({"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]});
    let mut long_model = base.clone();
    long_model["model"] = json!("m".repeat(2 * MIB));
    let mut long_user = base.clone();
    long_user["metadata"] = json!({"user_id": "u".repeat(8 * MIB)});
    for (body, param) in [(long_model, "'model'"), (long_user, "'metadata.user_id'")] {
        let resp = app.http.post(app.url("/v1/messages")).header("x-api-key", &app.key).json(&body).send().await?;
        ensure!(resp.status() == 400);
        let text = resp.text().await?;
        ensure!(text.len() < 1024 && !text.contains("mmmm") && !text.contains("uuuu"), "{text}");
        let v: Value = serde_json::from_str(&text)?;
        ensure!(v["type"] == "error" && v["error"]["type"] == "invalid_request_error", "{v}");
        ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains(param)), "{v}");
    }
    ensure!(app.fake.requests().is_empty());
    assert_no_event_contains(&app, "mmmmmmmm").await?;
    assert_no_event_contains(&app, "uuuuuuuu").await
}

#[tokio::test]
async fn generate_content_with_an_oversized_model_in_the_path_is_refused_in_geminis_shape() -> anyhow::Result<()> {
    let app = spawn().await?;
    let model = "g".repeat(4096);
    for action in ["generateContent", "streamGenerateContent", "countTokens"] {
        let resp = app
            .http
            .post(app.url(&format!("/v1beta/models/{model}:{action}")))
            .header("x-goog-api-key", &app.key)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
            .send()
            .await?;
        ensure!(resp.status() == 400, "{action}: {}", resp.status());
        let text = resp.text().await?;
        ensure!(!text.contains("gggggggg"), "{action} echoes the model: {text}");
        let v: Value = serde_json::from_str(&text)?;
        ensure!(v["error"]["status"] == "INVALID_ARGUMENT" && v["error"]["code"] == 400, "{v}");
        ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains("'model'")), "{v}");
    }
    ensure!(app.fake.requests().is_empty());
    assert_no_event_contains(&app, "gggggggg").await
}

#[tokio::test]
async fn a_404_for_an_unknown_long_model_does_not_echo_it() -> anyhow::Result<()> {
    let app = spawn().await?;
    let model = "q".repeat(16 * 1024);
    let resp = app.http.get(app.url(&format!("/v1/models/{model}"))).bearer_auth(&app.key).send().await?;
    ensure!(resp.status() == 404);
    let text = resp.text().await?;
    ensure!(text.len() < 1024, "the 404 is {} bytes", text.len());
    let (status, body) = error_of(app.post("/v1/chat/completions", &json!({"model": "no-such-model"})).await?).await?;
    ensure!(status == 404 && body["error"]["message"].as_str().is_some_and(|m| m.contains("`no-such-model`")));
    Ok(())
}

#[tokio::test]
async fn n_of_1000_is_refused_naming_n() -> anyhow::Result<()> {
    let app = spawn().await?;
    let mut body = chat();
    body["n"] = json!(1000);
    assert_refused(app.post("/v1/chat/completions", &body).await?, "n", "integer_above_max_value", "@@").await?;
    ensure!(app.fake.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn out_of_range_parameters_are_refused_naming_them_on_every_protocol() -> anyhow::Result<()> {
    let app = spawn().await?;
    let openai = [
        ("/v1/chat/completions", "n", json!(-1), "integer_below_min_value"),
        ("/v1/chat/completions", "n", json!(0), "integer_below_min_value"),
        ("/v1/chat/completions", "max_tokens", json!(1e308), "invalid_type"),
        ("/v1/chat/completions", "max_tokens", json!(99_999_999_999u64), "integer_above_max_value"),
        ("/v1/chat/completions", "max_tokens", json!(-1), "integer_below_min_value"),
        ("/v1/chat/completions", "max_completion_tokens", json!("100"), "invalid_type"),
        ("/v1/chat/completions", "temperature", json!(2.5), "decimal_above_max_value"),
        ("/v1/chat/completions", "top_p", json!(-0.1), "decimal_below_min_value"),
        ("/v1/chat/completions", "presence_penalty", json!(-3), "decimal_below_min_value"),
        ("/v1/chat/completions", "frequency_penalty", json!(3), "decimal_above_max_value"),
        ("/v1/chat/completions", "top_logprobs", json!(21), "integer_above_max_value"),
        ("/v1/completions", "n", json!(129), "integer_above_max_value"),
        ("/v1/completions", "best_of", json!(50), "integer_above_max_value"),
        ("/v1/completions", "max_tokens", json!(1e308), "invalid_type"),
    ];
    for (path, param, value, code) in openai {
        let mut body =
            if path == "/v1/completions" { json!({"model": "gpt-3.5-turbo-instruct", "prompt": "hi"}) } else { chat() };
        body[param] = value;
        let resp = app.post(path, &body).await?;
        assert_refused(resp, param, code, "@@").await.with_context(|| format!("{path} {param}"))?;
    }

    let anthropic =
        [("max_tokens", json!(1e308)), ("max_tokens", json!(0)), ("temperature", json!(1.5)), ("top_k", json!(-1))];
    for (param, value) in anthropic {
        let mut body = json!({"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
        body[param] = value;
        let resp = app.http.post(app.url("/v1/messages")).header("x-api-key", &app.key).json(&body).send().await?;
        let (status, v) = error_of(resp).await?;
        ensure!(status == 400 && v["error"]["type"] == "invalid_request_error", "{param}: {v}");
        ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains(&format!("'{param}'"))), "{v}");
    }

    let gemini = [
        ("candidateCount", json!(1000)),
        ("maxOutputTokens", json!(99_999_999_999u64)),
        ("maxOutputTokens", json!(-1)),
        ("temperature", json!(5)),
        ("topP", json!(2)),
    ];
    for (field, value) in gemini {
        let body =
            json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {field: value}});
        let resp = app
            .http
            .post(app.url(&format!("/v1beta/models/{MODEL}:generateContent")))
            .header("x-goog-api-key", &app.key)
            .json(&body)
            .send()
            .await?;
        let (status, v) = error_of(resp).await?;
        ensure!(status == 400 && v["error"]["status"] == "INVALID_ARGUMENT", "{field}: {v}");
        let named = format!("'generationConfig.{field}'");
        ensure!(v["error"]["message"].as_str().is_some_and(|m| m.contains(&named)), "{v}");
    }
    ensure!(app.fake.requests().is_empty(), "a refused request reached the upstream");

    // In range, everything passes through untouched.
    let mut body = chat();
    for (k, v) in [("n", json!(1)), ("max_tokens", json!(100)), ("temperature", json!(2)), ("top_p", json!(1))] {
        body[k] = v;
    }
    ensure!(app.post("/v1/chat/completions", &body).await?.status() == 200);
    ensure!(app.fake.requests().first().map(|r| r.body.clone()) == Some(body));
    Ok(())
}

#[tokio::test]
async fn a_configured_max_output_tokens_cap_is_enforced() -> anyhow::Result<()> {
    let app = spawn_with(|c| c.limits.max_output_tokens = 1000).await?;
    let mut body = chat();
    body["max_completion_tokens"] = json!(1001);
    let resp = app.post("/v1/chat/completions", &body).await?;
    assert_refused(resp, "max_completion_tokens", "integer_above_max_value", "@@").await?;
    body["max_completion_tokens"] = json!(1000);
    ensure!(app.post("/v1/chat/completions", &body).await?.status() == 200);
    Ok(())
}

#[tokio::test]
async fn fifty_thousand_messages_are_refused_naming_messages() -> anyhow::Result<()> {
    let app = spawn_with(|c| c.body_limit_bytes = 8 * MIB).await?;
    let messages: Vec<Value> = (0..50_000).map(|_| json!({"role": "user", "content": "a"})).collect();
    let resp = app.post("/v1/chat/completions", &json!({"model": MODEL, "messages": messages})).await?;
    assert_refused(resp, "messages", "array_above_max_length", "@@").await?;
    let contents: Vec<Value> = (0..50_000).map(|_| json!({"role": "user", "parts": [{"text": "a"}]})).collect();
    let resp = app
        .http
        .post(app.url(&format!("/v1beta/models/{MODEL}:generateContent")))
        .header("x-goog-api-key", &app.key)
        .json(&json!({"contents": contents}))
        .send()
        .await?;
    let (status, v) = error_of(resp).await?;
    ensure!(status == 400 && v["error"]["message"].as_str().is_some_and(|m| m.contains("'contents'")), "{v}");
    ensure!(app.fake.requests().is_empty());
    // 10,000 (the default cap) are fine.
    let messages: Vec<Value> = (0..10_000).map(|_| json!({"role": "user", "content": "a"})).collect();
    ensure!(app.post("/v1/chat/completions", &json!({"model": MODEL, "messages": messages})).await?.status() == 200);
    Ok(())
}

/// The gateway on the JetStream backend against a real `nats-server` child.
struct JsApp {
    addr: SocketAddr,
    key: String,
    log: EventLog,
    http: reqwest::Client,
    _fake: FakeOpenAi,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

async fn spawn_jetstream() -> anyhow::Result<JsApp> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let opts = JetStreamOptions { ack_timeout: Duration::from_secs(2), ..Default::default() };
    let log = EventLog::connect_jetstream(&nats.url(), dir.path(), opts).await?;
    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    log.append_acked(&helpers::control(TENANT, EventBody::TenantCreated(TenantCreated { name: TENANT.into() })))
        .await?;
    let issued = helpers::issue_key(&log, None).await?;
    log.append_acked(&helpers::control(
        GLOBAL_TENANT,
        EventBody::ChannelAdded(ChannelAdded {
            channel_id: "ch_fake".into(),
            name: "fake".into(),
            provider: "openai".into(),
            base_url: fake.base_url(),
            api_key: Some(master.seal(helpers::UPSTREAM_KEY, "ch_fake")),
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
    log.flush(Duration::from_secs(10)).await?;
    let mut cfg = GatewayConfig::new(master, "gw-limits");
    cfg.body_limit_bytes = 32 * MIB;
    let gateway = Gateway::start(log.clone(), cfg).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = gateway.router();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(JsApp { addr, key: issued.plaintext, log, http: reqwest::Client::new(), _fake: fake, _nats: nats, _dir: dir })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_jetstream_a_request_with_a_huge_field_is_refused_while_billable_requests_keep_being_billed()
-> anyhow::Result<()> {
    let app = spawn_jetstream().await?;
    let url = format!("http://{}/v1/chat/completions", app.addr);
    let huge_model = json!({"model": "m".repeat(2 * MIB), "messages": [{"role": "user", "content": "hi"}]});
    let mut huge_user = chat();
    huge_user["user"] = json!("u".repeat(8 * MIB));
    let mut answered = 0;
    for round in 0..4 {
        for body in [chat(), huge_model.clone(), chat(), huge_user.clone()] {
            let resp = app.http.post(&url).bearer_auth(&app.key).json(&body).send().await?;
            let status = resp.status().as_u16();
            if body == chat() {
                ensure!(status == 200, "round {round}: a normal request got {status}");
                answered += 1;
            } else {
                ensure!(status == 400, "round {round}: a huge field got {status}");
            }
        }
    }
    app.log.flush(Duration::from_secs(20)).await.context("the spool did not drain")?;
    let last = app.log.last_seq(Stream::Billing).await?;
    ensure!(last == answered, "{last} usage events for {answered} answered requests");
    let mut tail = app.log.tail(Stream::Billing, 0);
    for _ in 0..answered {
        let ev = tokio::time::timeout(Duration::from_secs(10), tail.next()).await?.context("tail ended")??;
        ensure!(ev.payload.len() < 16 * 1024, "a usage event of {} bytes", ev.payload.len());
    }
    let health = app.log.health().await;
    ensure!(health.reachable && health.spool_depth == 0 && health.poison_events == 0, "{health:?}");
    Ok(())
}
