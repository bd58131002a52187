//! Fault-catalogue rows driven over HTTP against fake upstreams, each test named after its row
//! of `FAULTS.md`: an invalid 200 (row 8), name resolution and TLS verification failures (row 12),
//! configuration fields smuggled into bodies (row 21), bytes that are not UTF-8 from an
//! upstream (row 18), control bytes in the key header (row 23), deep nesting (row 19), the
//! connection released after a timeout (row 5) and the drain caps after a client leaves (row 10).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT};
use serde_json::{Value, json};
use testkit::fake_openai::{FakeOpenAi, Scenario};
use testkit::tls::SelfSignedTls;

use crate::helpers::{MODEL, TestApp, UPSTREAM_KEY, control, error_of, spawn, spawn_with};

/// A model only the channel under test serves.
const ONLY_HERE: &str = "gpt-fault-test";
const CHANNEL_KEY: &str = "sk-fault-channel-secret";

async fn add_channel(app: &TestApp, id: &str, base_url: String) -> anyhow::Result<()> {
    app.log
        .append_acked(&control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.into(),
                name: id.into(),
                provider: "openai".into(),
                base_url,
                api_key: Some(app.master_key.seal(CHANNEL_KEY, id)),
                models: vec![ONLY_HERE.into()],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// A 502 `upstream_error` that names neither the upstream's address nor a key.
fn assert_generic_502(status: u16, body: &Value, hidden: &[&str]) {
    assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_error")), "{body}");
    let text = body.to_string();
    for h in hidden.iter().chain([CHANNEL_KEY, UPSTREAM_KEY].iter()) {
        assert!(!text.contains(h), "{h} in {text}");
    }
}

#[tokio::test]
async fn row8_a_200_with_truncated_json_or_html_is_502_and_the_upstream_body_never_reaches_the_client()
-> anyhow::Result<()> {
    let app = spawn().await?;
    for (scenario, leaked) in [(Scenario::TruncatedJson200, "chatcmpl-fake"), (Scenario::Html200, "Bad gateway page")] {
        app.fake.set_scenario(scenario.clone());
        let resp = app.post("/v1/chat/completions", &chat(MODEL)).await?;
        let status = resp.status().as_u16();
        let raw = resp.text().await?;
        let body: Value = serde_json::from_str(&raw)?;
        assert_eq!((status, body["error"]["code"].as_str()), (502, Some("upstream_invalid_response")), "{raw}");
        assert!(!raw.contains(leaked), "{scenario:?}: the upstream body reached the client: {raw}");
    }
    assert!(app.usage().await?.is_empty(), "an unreadable answer is not billed");
    let logs = app.request_logs(2).await?;
    assert!(
        logs.iter().all(|l| l.attempt_log.last().map(|a| a.class.as_str()) == Some("invalid_response")),
        "{logs:?}"
    );
    Ok(())
}

#[tokio::test]
async fn row12_an_upstream_whose_name_does_not_resolve_is_502_quickly_without_host_or_key() -> anyhow::Result<()> {
    // Names are answered by a table: `nowhere.test` does not exist, as a name would not in DNS.
    let app = spawn_with(|cfg| {
        cfg.dns = egress::Dns::from_fn(|host| match host {
            "known.test" => Ok(vec![IpAddr::from([127, 0, 0, 1])]),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")),
        });
    })
    .await?;
    add_channel(&app, "ch_nowhere", "http://nowhere.test:9/v1".into()).await?;
    let started = Instant::now();
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(ONLY_HERE)).await?).await?;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_generic_502(status, &body, &["nowhere.test"]);
    let logs = app.request_logs(1).await?;
    assert_eq!(logs[0].attempt_log[0].class, "connection_failed", "{logs:?}");
    Ok(())
}

#[tokio::test]
async fn row12_an_upstream_with_a_self_signed_certificate_is_502_and_no_handshake_completes() -> anyhow::Result<()> {
    let app = spawn().await?;
    let tls = SelfSignedTls::start().await?;
    add_channel(&app, "ch_self_signed", tls.base_url()).await?;
    let started = Instant::now();
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(ONLY_HERE)).await?).await?;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_generic_502(status, &body, &["127.0.0.1", "certificate"]);
    assert!(tls.accepted() >= 1, "the gateway never connected: the test proves nothing");
    assert_eq!(tls.handshakes(), 0, "a certificate no authority vouches for was accepted");
    let logs = app.request_logs(1).await?;
    assert_eq!(logs[0].attempt_log[0].class, "connection_failed", "{logs:?}");
    assert!(app.usage().await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn row21_config_fields_are_refused_at_the_top_level_and_nested_ones_never_redirect_the_call_or_its_key()
-> anyhow::Result<()> {
    let app = spawn().await?;
    // Where a router that honoured the fields would send the call, with the attacker's key.
    let attacker = FakeOpenAi::start().await?;
    let evil = attacker.base_url();
    let evil_key = "sk-attacker-key";
    let fields = ["api_base", "base_url", "api_key", "proxy", "proxies", "http_proxy", "https_proxy"];
    let wrappers = ["extra_body", "extra_headers"];
    for field in fields.iter().chain(wrappers.iter()) {
        let value = match *field {
            "api_key" => json!(evil_key),
            "extra_body" => json!({"api_base": evil, "api_key": evil_key}),
            "extra_headers" => json!({"Authorization": format!("Bearer {evil_key}")}),
            _ => json!(evil),
        };
        let mut openai = chat(MODEL);
        openai[*field] = value.clone();
        let anthropic = json!({"model": MODEL, "max_tokens": 16, *field: value.clone(),
            "messages": [{"role": "user", "content": "hi"}]});
        let gemini = json!({*field: value, "contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        let sent = [
            app.post("/v1/chat/completions", &openai).await?,
            app.http
                .post(app.url("/v1/messages"))
                .header("x-api-key", &app.key)
                .header("anthropic-version", "2023-06-01")
                .json(&anthropic)
                .send()
                .await?,
            app.http
                .post(app.url(&format!("/v1beta/models/{MODEL}:generateContent")))
                .header("x-goog-api-key", &app.key)
                .json(&gemini)
                .send()
                .await?,
        ];
        for (surface, resp) in ["openai", "anthropic", "gemini"].into_iter().zip(sent) {
            let (status, body) = error_of(resp).await?;
            assert_eq!(status, 400, "{field} on {surface}: {body}");
            assert!(body.to_string().contains(field), "{field} on {surface} is not named: {body}");
        }
    }
    assert!(app.fake.requests().is_empty(), "a refused request was forwarded");

    // Nested inside objects that carry client data, the same names are data: the call goes to
    // the channel's own URL with the channel's key, whatever they say; so do client headers that
    // look like credentials or upstream addresses.
    let nested = json!({"api_base": evil, "base_url": evil, "api_key": evil_key,
        "headers": {"Authorization": format!("Bearer {evil_key}"), "x-api-key": evil_key}, "proxy": evil});
    let mut openai = chat(MODEL);
    openai["metadata"] = json!({"api_base": evil, "api_key": evil_key});
    openai["messages"][0]["content"] = json!(format!("{nested}"));
    openai["tools"] = json!([{"type": "function", "function": {"name": "f", "parameters":
        {"type": "object", "properties": {"config": {"type": "object", "default": nested}}}}}]);
    let resp = app
        .http
        .post(app.url("/v1/chat/completions"))
        .bearer_auth(&app.key)
        .header("x-api-key", evil_key)
        .header("api-key", evil_key)
        .header("x-api-base", &evil)
        .header("x-base-url", &evil)
        .json(&openai)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let anthropic = json!({"model": MODEL, "max_tokens": 16, "metadata": {"user_id": "u1"},
        "messages": [{"role": "user", "content": format!("{nested}")}]});
    let resp = app
        .http
        .post(app.url("/v1/messages"))
        .header("x-api-key", &app.key)
        .header("anthropic-version", "2023-06-01")
        .json(&anthropic)
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert!(attacker.requests().is_empty(), "a nested field redirected the call");
    let seen = app.fake.requests();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.authorization(), Some(format!("Bearer {UPSTREAM_KEY}").as_str()));
        for (name, value) in &r.headers {
            let v = value.to_str().unwrap_or_default();
            assert!(!v.contains(evil_key) && !v.contains(&evil), "client header {name} reached the upstream");
        }
    }
    Ok(())
}

#[tokio::test]
async fn row18_bytes_that_are_not_utf8_from_the_upstream_are_an_error_in_every_protocol_never_a_panic()
-> anyhow::Result<()> {
    use crate::failures::{SURFACES, ask};
    let app = spawn().await?;
    app.fake.set_scenario(Scenario::InvalidUtf8AfterChunks(2));
    for surface in SURFACES {
        // A JSON answer: 502, with none of the upstream's bytes.
        let (status, body, raw) = ask(&app, surface, false).await?;
        assert_eq!(status, 502, "{surface:?}: {raw}");
        assert!(!raw.contains("Hello"), "{surface:?}: {body}");
        // A stream: what came before goes out, then one in-band error.
        let (status, _, raw) = ask(&app, surface, true).await?;
        assert_eq!(status, 200, "{surface:?}");
        let raw = raw.replace("\r\n", "\n");
        let last = raw.trim_end().rsplit("\n\n").next().unwrap_or_default();
        assert!(last.contains("error"), "{surface:?}: the stream does not end in an error: {raw}");
        assert!(raw.contains("Hello"), "{surface:?}: the chunks before the bad one were delivered");
        assert!(!raw.contains('\u{fffd}'), "{surface:?}: the bad bytes were passed on");
        assert!(!raw.contains("[DONE]") && !raw.contains("message_stop"), "{surface:?}");
    }
    // The gateway is unharmed: the next call is served.
    app.fake.set_scenario(Scenario::Normal);
    assert_eq!(app.post("/v1/chat/completions", &chat(MODEL)).await?.status(), 200);
    // Streams that started are billed; the unreadable JSON answers are not.
    assert_eq!(app.wait_usage(4).await?.len(), 3 + 1);
    Ok(())
}

/// Sends one raw HTTP/1.1 request with `header: value` (any bytes) and returns the status and
/// body of the answer.
async fn raw_request(app: &TestApp, path: &str, header: &str, value: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let body = br#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut req =
        format!("POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\n", app.addr).into_bytes();
    req.extend_from_slice(format!("{header}: Bearer sk-").as_bytes());
    req.extend_from_slice(value);
    req.extend_from_slice(format!("\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    let mut conn = tokio::net::TcpStream::connect(app.addr).await?;
    conn.write_all(&req).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.as_bytes().to_vec()).unwrap_or_default();
    Ok((status, body))
}

/// FAULTS.md row 23: a NUL or another control byte in `Authorization` or `x-api-key` is refused
/// by the HTTP parser with 400 before any handler runs, and bytes that are not text (obs-text)
/// get 401 `invalid_api_key` in the protocol's shape; never a 5xx, never the raw value echoed.
#[tokio::test]
async fn row23_control_bytes_in_authorization_are_refused_never_a_500() -> anyhow::Result<()> {
    let app = spawn().await?;
    for header in ["authorization", "x-api-key"] {
        for bad in [&b"ab\x00cd"[..], b"ab\x01cd", b"ab\x1bcd", b"ab\x7fcd"] {
            for path in ["/v1/chat/completions", "/v1/messages"] {
                let (status, body) = raw_request(&app, path, header, bad).await?;
                assert_eq!(status, 400, "{header} {bad:?} {path}: {}", String::from_utf8_lossy(&body));
            }
        }
        for path in ["/v1/chat/completions", "/v1/messages"] {
            let (status, body) = raw_request(&app, path, header, b"ab\xff\xfecd").await?;
            assert_eq!(status, 401, "{header} obs-text {path}: {}", String::from_utf8_lossy(&body));
            let v: Value = serde_json::from_slice(&body)?;
            if path == "/v1/messages" {
                assert_eq!(
                    (v["type"].as_str(), v["error"]["type"].as_str()),
                    (Some("error"), Some("authentication_error"))
                );
            } else {
                assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
            }
            assert!(!body.windows(2).any(|w| w == b"\xff\xfe"), "the raw value is echoed");
        }
    }
    assert!(app.fake.requests().is_empty(), "no upstream call");
    Ok(())
}

/// FAULTS.md row 19 over HTTP: 100,000 nested `[` as a whole body, and as the value of a field,
/// get 400 `invalid_json` quickly on every protocol, with no upstream call and no stack overflow.
#[tokio::test]
async fn row19_deeply_nested_json_over_http_is_a_quick_400() -> anyhow::Result<()> {
    let app = spawn().await?;
    let deep = "[".repeat(100_000);
    let in_field = format!(r#"{{"model":"{MODEL}","max_tokens":8,"messages":{deep}"#);
    let gemini = format!("/v1beta/models/{MODEL}:generateContent");
    for path in ["/v1/chat/completions", "/v1/messages", "/v1/embeddings", gemini.as_str()] {
        for body in [deep.clone(), in_field.clone()] {
            let started = Instant::now();
            let resp = app
                .http
                .post(app.url(path))
                .bearer_auth(&app.key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = resp.status().as_u16();
            let text = resp.text().await?;
            assert_eq!(status, 400, "{path}: {text}");
            assert!(text.len() < 2048, "{path}: the body is not echoed ({} bytes)", text.len());
            assert!(started.elapsed() < Duration::from_secs(5), "{path}: took {:?}", started.elapsed());
        }
    }
    // The gateway still serves.
    let ok = app
        .post("/v1/chat/completions", &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(app.fake.requests().len(), 1, "only the last request reached the upstream");
    Ok(())
}

/// A raw upstream on loopback: each connection's request is read, then `answer` runs on the
/// socket; the time each connection was found closed (a read of 0 or a failed write) is sent.
async fn raw_upstream<F, Fut>(answer: F) -> anyhow::Result<(String, tokio::sync::mpsc::UnboundedReceiver<Instant>)>
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}/v1", listener.local_addr()?);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = std::sync::Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                answer(conn).await;
                let _ = tx.send(Instant::now());
            });
        }
    });
    Ok((base, rx))
}

/// FAULTS.md row 5: an upstream that never answers gets 504 after `first_byte_timeout`, and its
/// connection is closed then (the slot and task are released), not kept until the upstream gives up.
#[tokio::test]
async fn row5_after_an_upstream_that_never_answers_times_out_its_connection_is_closed() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt as _;
    let app = spawn_with(|cfg| cfg.first_byte_timeout = Duration::from_millis(500)).await?;
    let (base, mut closed) = raw_upstream(|mut conn| async move {
        // Never answers; waits for the gateway to hang up (at most a minute).
        let mut buf = [0u8; 1024];
        let _ = tokio::time::timeout(Duration::from_secs(60), async {
            while !matches!(conn.read(&mut buf).await, Ok(0) | Err(_)) {}
        })
        .await;
    })
    .await?;
    add_channel(&app, "ch_silent", base).await?;
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(ONLY_HERE)).await?).await?;
    assert_eq!((status, body["error"]["code"].as_str()), (504, Some("upstream_timeout")), "{body}");
    let answered = Instant::now();
    let at = tokio::time::timeout(Duration::from_secs(5), closed.recv()).await?.context("the upstream task ended")?;
    assert!(
        at.saturating_duration_since(answered) < Duration::from_secs(3),
        "closed {:?} after the 504",
        at - answered
    );
    Ok(())
}

/// A chunk of an endless OpenAI stream.
const ENDLESS_CHUNK: &[u8] = b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello \"},\"finish_reason\":null}]}\n\n";

/// Streams [`ENDLESS_CHUNK`] every `every` until a write fails.
async fn stream_forever(mut conn: tokio::net::TcpStream, every: Duration) {
    use tokio::io::AsyncWriteExt as _;
    let head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
    if conn.write_all(head).await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if conn.write_all(ENDLESS_CHUNK).await.is_err() || conn.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// Starts a stream, reads its first bytes and leaves; returns when the client left.
async fn leave_a_stream(app: &TestApp) -> anyhow::Result<Instant> {
    let mut body = chat(ONLY_HERE);
    body["stream"] = json!(true);
    let mut resp = app.post("/v1/chat/completions", &body).await?;
    assert_eq!(resp.status(), 200);
    let first = resp.chunk().await?;
    assert!(first.is_some_and(|c| !c.is_empty()), "no first chunk");
    drop(resp);
    Ok(Instant::now())
}

/// FAULTS.md row 10: after a client leaves a stream, the upstream is drained at most
/// `drain_timeout` (here 300 ms, with an upstream that never ends) and at most `drain_max_bytes`
/// (here 4 KiB, with a fast upstream and a long timeout): its connection is closed by then.
#[tokio::test]
async fn row10_after_a_client_leaves_the_upstream_is_drained_at_most_the_drain_caps() -> anyhow::Result<()> {
    // The time cap: a slow endless stream.
    let app = spawn_with(|cfg| {
        cfg.drain_timeout = Duration::from_millis(300);
        cfg.drain_max_bytes = 1 << 30;
    })
    .await?;
    let (base, mut closed) = raw_upstream(|conn| stream_forever(conn, Duration::from_millis(20))).await?;
    add_channel(&app, "ch_endless", base).await?;
    let left = leave_a_stream(&app).await?;
    let at = tokio::time::timeout(Duration::from_secs(10), closed.recv()).await?.context("the upstream task ended")?;
    let after = at.saturating_duration_since(left);
    assert!(after < Duration::from_secs(3), "the upstream was drained for {after:?} with a 300 ms cap");

    // The byte cap: a fast endless stream, a drain time far longer than the test.
    let app = spawn_with(|cfg| {
        cfg.drain_timeout = Duration::from_secs(60);
        cfg.drain_max_bytes = 4096;
    })
    .await?;
    let (base, mut closed) = raw_upstream(|conn| stream_forever(conn, Duration::from_millis(1))).await?;
    add_channel(&app, "ch_endless", base).await?;
    let left = leave_a_stream(&app).await?;
    let at = tokio::time::timeout(Duration::from_secs(20), closed.recv()).await?.context("the upstream task ended")?;
    let after = at.saturating_duration_since(left);
    assert!(after < Duration::from_secs(10), "the upstream was drained for {after:?} with a 4 KiB cap and 60 s");
    Ok(())
}
