//! Vendor error text that carries secrets (FAULTS row 45) and failure classes on every client
//! protocol (rows 1, 2, 13): errors about our channel become a generic 502/503 and the next
//! channel is tried; errors the client caused keep a useful message with secrets scrubbed; every
//! attempt's class is in `request.logged`.

use std::time::Duration;

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT, RequestLogged};
use serde_json::{Value, json};
use testkit::fake_anthropic::FakeAnthropic;
use testkit::fake_gemini::FakeGemini;
use testkit::fake_openai::{FakeOpenAi, Scenario};

use crate::helpers::{self, MODEL, TestApp, UPSTREAM_KEY, spawn};

/// The three client protocols.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Surface {
    OpenAi,
    Anthropic,
    Gemini,
}

pub(crate) const SURFACES: [Surface; 3] = [Surface::OpenAi, Surface::Anthropic, Surface::Gemini];

/// "Say hello" in `surface`'s protocol; the status and the parsed body (`Null` for a stream).
pub(crate) async fn ask(app: &TestApp, surface: Surface, stream: bool) -> anyhow::Result<(u16, Value, String)> {
    let text = "Say hello";
    let resp = match surface {
        Surface::OpenAi => {
            app.post(
                "/v1/chat/completions",
                &json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]}),
            )
            .await?
        }
        Surface::Anthropic => {
            app.http
                .post(app.url("/v1/messages"))
                .header("x-api-key", &app.key)
                .header("anthropic-version", "2023-06-01")
                .json(&json!({"model": MODEL, "max_tokens": 64, "stream": stream,
                    "messages": [{"role": "user", "content": text}]}))
                .send()
                .await?
        }
        Surface::Gemini => {
            let action = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            app.http
                .post(app.url(&format!("/v1beta/models/{MODEL}:{action}")))
                .header("x-goog-api-key", &app.key)
                .json(&json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}))
                .send()
                .await?
        }
    };
    let status = resp.status().as_u16();
    let raw = resp.text().await?;
    Ok((status, serde_json::from_str(&raw).unwrap_or(Value::Null), raw))
}

/// The error message: `error.message` in all three protocols' shapes.
fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

async fn add_channel(app: &TestApp, id: &str, provider: &str, base_url: String, priority: i32) -> anyhow::Result<()> {
    app.log
        .append_acked(&helpers::control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.into(),
                name: id.into(),
                provider: provider.into(),
                base_url,
                api_key: Some(app.master_key.seal(&format!("sk-{id}-secret-key"), id)),
                models: vec![MODEL.into()],
                priority,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    let until = app.log.last_seq(schemas::Stream::Control).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.gateway.control_seq() < until {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn error_body(status: u16, body: Value) -> Scenario {
    Scenario::ErrorBody { status, body: body.to_string() }
}

/// `(channel, class, status)` of every attempt of a logged request.
fn attempts(log: &RequestLogged) -> Vec<(&str, &str, Option<u16>)> {
    log.attempt_log.iter().map(|a| (a.channel_id.as_str(), a.class.as_str(), a.status)).collect()
}

#[tokio::test]
async fn a_vendor_error_echoing_our_upstream_key_never_reaches_the_client_on_any_protocol() -> anyhow::Result<()> {
    let app = spawn().await?;
    let about_our_key = error_body(
        400,
        json!({"error": {"message": format!("Incorrect API key provided: {UPSTREAM_KEY}. You can find your API \
            key at https://platform.openai.com/account/api-keys."), "type": "invalid_request_error",
            "param": null, "code": "invalid_api_key"}}),
    );
    let about_the_request = error_body(
        400,
        json!({"error": {"message": format!("Invalid value for 'temperature' (request by {UPSTREAM_KEY}, \
            Authorization: Bearer {UPSTREAM_KEY})"), "type": "invalid_request_error", "param": "temperature",
            "code": "invalid_value"}}),
    );
    let mut asked = 0;
    for (scenario, want) in [(about_our_key, 502), (about_the_request, 400)] {
        app.fake.set_scenario(scenario);
        for surface in SURFACES {
            for stream in [false, true] {
                // The invalid key was disabled by the previous request: back in rotation for this one.
                app.enable_key("ch_fake").await?;
                let (status, body, raw) = ask(&app, surface, stream).await?;
                asked += 1;
                let what = format!("{surface:?} stream={stream}: {raw}");
                assert_eq!(status, want, "{what}");
                assert!(!raw.contains("sk-upstream") && !raw.contains("test-secret"), "the key leaked: {what}");
                if want == 502 {
                    assert!(!raw.contains("Incorrect API key"), "the vendor's words about our key: {what}");
                } else {
                    assert!(message(&body).contains("Invalid value for 'temperature'"), "{what}");
                    assert!(message(&body).contains("[redacted]"), "{what}");
                }
            }
        }
    }
    let logs = app.request_logs(asked).await?;
    let classes: Vec<&str> = logs.iter().flat_map(|l| l.attempt_log.iter().map(|a| a.class.as_str())).collect();
    assert_eq!(classes.iter().filter(|c| **c == "key_invalid").count(), 6, "{classes:?}");
    assert_eq!(classes.iter().filter(|c| **c == "client_error").count(), 6, "{classes:?}");
    let events = app.raw_events().await?;
    assert!(events.iter().all(|e| !e.contains(UPSTREAM_KEY)), "an event holds the upstream key");
    assert!(app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_402_naming_an_account_email_is_a_generic_502_and_the_next_channel_serves() -> anyhow::Result<()> {
    // Six 403s in a row below: the breaker (tested in `keys`) stays out of this test.
    let app = helpers::spawn_with(|c| c.breaker.failures = 64).await?;
    let primary = FakeOpenAi::start().await?;
    add_channel(&app, "ch_primary", "deepseek", primary.base_url(), 10).await?;
    primary.set_scenario(error_body(
        402,
        json!({"error": {"message": "Insufficient Balance: the account of owner@other-corp.example has no credit",
            "type": "unknown_error", "param": null, "code": "invalid_request_error"}}),
    ));
    for surface in SURFACES {
        for stream in [false, true] {
            let (status, _, raw) = ask(&app, surface, stream).await?;
            assert_eq!(status, 200, "{surface:?} stream={stream}: {raw}");
            assert!(!raw.contains("owner@"), "{surface:?} stream={stream}: {raw}");
        }
    }
    let usage = app.wait_usage(6).await?;
    assert_eq!(usage.len(), 6);
    assert!(usage.iter().all(|(_, u)| u.channel_id == "ch_fake"));
    // The first request found the key out of money and disabled it: the others go straight to
    // the other channel.
    let logs = app.request_logs(6).await?;
    for (i, log) in logs.iter().enumerate() {
        let expected: &[_] = if i == 0 {
            &[("ch_primary", "quota_exhausted", Some(402)), ("ch_fake", "ok", Some(200))]
        } else {
            &[("ch_fake", "ok", Some(200))]
        };
        assert_eq!(attempts(log), expected, "{log:?}");
    }

    // Both channels refuse us: the client gets a generic 502, never the account's names.
    app.fake.set_scenario(error_body(
        403,
        json!({"error": {"message": "Organization org-XyZ123abc (owner owner@other-corp.example) may not use \
            this model in your region", "type": "invalid_request_error",
            "code": "unsupported_country_region_territory"}}),
    ));
    for surface in SURFACES {
        for stream in [false, true] {
            let (status, _, raw) = ask(&app, surface, stream).await?;
            let what = format!("{surface:?} stream={stream}: {raw}");
            assert_eq!(status, 502, "{what}");
            assert!(!raw.contains("owner@") && !raw.contains("org-XyZ") && !raw.contains("region"), "{what}");
        }
    }
    let logs = app.request_logs(12).await?;
    let last = logs.last().ok_or_else(|| anyhow::anyhow!("no request.logged"))?;
    assert_eq!(attempts(last), [("ch_fake", "permission_denied", Some(403))], "the primary's key stays disabled");
    assert_eq!((last.status, last.error_class.as_deref()), (502, Some("upstream_error")));
    Ok(())
}

#[tokio::test]
async fn a_context_length_error_keeps_a_useful_scrubbed_message_on_every_protocol_and_is_not_retried()
-> anyhow::Result<()> {
    let app = spawn().await?;
    let primary = FakeOpenAi::start().await?;
    add_channel(&app, "ch_primary", "openai", primary.base_url(), 10).await?;
    primary.set_scenario(error_body(
        400,
        json!({"error": {"message": "This model's maximum context length is 128000 tokens. However, your messages \
            resulted in 130000 tokens (organization org-AbCdEf123456, contact admin@vendor-customer.example).",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
    ));
    for surface in SURFACES {
        for stream in [false, true] {
            let (status, body, raw) = ask(&app, surface, stream).await?;
            let what = format!("{surface:?} stream={stream}: {raw}");
            assert_eq!(status, 400, "{what}");
            assert!(message(&body).contains("maximum context length is 128000 tokens"), "{what}");
            assert!(!raw.contains("org-AbC") && !raw.contains("admin@"), "{what}");
            match surface {
                Surface::OpenAi => {
                    assert_eq!(body["error"]["code"], "context_length_exceeded", "{what}");
                    assert_eq!(body["error"]["param"], "messages", "{what}");
                }
                Surface::Anthropic => assert_eq!(body["error"]["type"], "invalid_request_error", "{what}"),
                Surface::Gemini => assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{what}"),
            }
        }
    }
    assert!(app.fake.requests().is_empty(), "a context-length error was retried on another channel");
    let logs = app.request_logs(6).await?;
    for log in &logs {
        assert_eq!(log.error_class.as_deref(), Some("context_window_exceeded"));
        assert_eq!(attempts(log), [("ch_primary", "context_window_exceeded", Some(400))]);
    }
    Ok(())
}

#[tokio::test]
async fn anthropic_and_gemini_account_errors_are_hidden_and_every_attempt_is_logged() -> anyhow::Result<()> {
    let app = spawn().await?;
    let claude = FakeAnthropic::start().await?;
    let gemini = FakeGemini::start().await?;
    add_channel(&app, "ch_claude", "anthropic", claude.base_url(), 10).await?;
    add_channel(&app, "ch_gemini", "gemini", gemini.base_url(), 5).await?;
    claude.set_scenario(error_body(
        400,
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "Your credit balance is too \
            low to access the Anthropic API. Account ops@acme-internal.example, key sk-ant-api03-AbCdEf123"}}),
    ));
    gemini.set_scenario(error_body(
        400,
        json!({"error": {"code": 400, "message": "API key not valid: AIzaSyTestKey1234567890abcdef",
            "status": "INVALID_ARGUMENT", "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]}}),
    ));
    for surface in SURFACES {
        let (status, _, raw) = ask(&app, surface, false).await?;
        assert_eq!(status, 200, "{surface:?}: {raw}");
    }
    app.fake.set_scenario(Scenario::FailStatus { status: 500, retry_after: None });
    for surface in SURFACES {
        let (status, _, raw) = ask(&app, surface, true).await?;
        let what = format!("{surface:?}: {raw}");
        assert_eq!(status, 502, "{what}");
        for leak in ["ops@", "sk-ant", "AIza", "credit balance", "API key not valid", "fake upstream status"] {
            assert!(!raw.contains(leak), "{leak} leaked: {what}");
        }
    }
    // The first request disabled both refused keys; the rest go straight to the last channel.
    let logs = app.request_logs(6).await?;
    let served = [("ch_claude", "quota_exhausted", Some(400)), ("ch_gemini", "key_invalid", Some(400))];
    assert_eq!(attempts(&logs[0]), [served[0], served[1], ("ch_fake", "ok", Some(200))], "{:?}", logs[0]);
    for log in &logs[1..3] {
        assert_eq!(attempts(log), [("ch_fake", "ok", Some(200))], "{log:?}");
    }
    for log in &logs[3..] {
        assert_eq!(attempts(log), [("ch_fake", "upstream_server_error", Some(500))], "{log:?}");
        assert!(log.attempt_log.iter().all(|a| a.duration_ms < 5_000));
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_that_fails_after_it_started_logs_its_attempt_with_the_mid_stream_class() -> anyhow::Result<()> {
    let app = spawn().await?;
    let cases = [
        (Scenario::ErrorAfterChunks(1), "upstream_server_error"),
        (Scenario::StallAfterChunks(1), "idle_timeout"),
        (Scenario::InvalidJsonAfterChunks(1), "invalid_response"),
        (Scenario::Normal, "ok"),
    ];
    for (n, (scenario, class)) in cases.into_iter().enumerate() {
        app.fake.set_scenario(scenario.clone());
        let (status, _, raw) = ask(&app, Surface::Anthropic, true).await?;
        assert_eq!(status, 200, "{scenario:?}: {raw}");
        let logs = app.request_logs(n + 1).await?;
        let last = logs.last().ok_or_else(|| anyhow::anyhow!("no request.logged"))?;
        assert_eq!(attempts(last), [("ch_fake", class, Some(200))], "{scenario:?}");
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_whose_first_event_is_an_error_goes_to_the_next_channel_on_every_protocol() -> anyhow::Result<()> {
    let app = spawn().await?;
    let primary = FakeOpenAi::start().await?;
    add_channel(&app, "ch_primary", "openai", primary.base_url(), 10).await?;
    primary.set_scenario(Scenario::ErrorAfterChunks(0));
    for surface in SURFACES {
        let (status, _, raw) = ask(&app, surface, true).await?;
        assert_eq!(status, 200, "{surface:?}: {raw}");
        assert!(raw.contains("Hello") && !raw.contains("server had an error"), "{surface:?}: {raw}");
    }
    assert_eq!(primary.requests().len(), 3);
    let usage = app.wait_usage(3).await?;
    assert!(usage.iter().all(|(_, u)| u.channel_id == "ch_fake"), "{usage:?}");
    for log in app.request_logs(3).await? {
        assert_eq!(attempts(&log), [("ch_primary", "upstream_server_error", None), ("ch_fake", "ok", Some(200))]);
        assert_eq!(log.error_class, None);
    }
    Ok(())
}
