//! Floods and slow clients (FAULTS.md rows 23, 25, 43, 44): failed authentications are counted,
//! not logged one by one; an address that keeps failing gets 429; non-billable reads append no
//! event; the server's header, body and idle timeouts and its connection cap, over real sockets.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gateway::server::ServerConfig;
use schemas::AuthFailuresCounted;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{MODEL, TestApp, spawn, spawn_served, spawn_with};

/// A client whose connections come from `ip` (any 127.x address works on loopback).
fn client_from(ip: [u8; 4]) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder().local_address(IpAddr::from(ip)).build()?)
}

/// Waits until the reports add up to `failed` failures and `throttled` refusals.
async fn wait_reports(app: &TestApp, failed: u64, throttled: u64) -> anyhow::Result<Vec<AuthFailuresCounted>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reports = app.failure_reports().await?;
        let f: u64 = reports.iter().map(|r| r.missing + r.malformed + r.unknown + r.revoked).sum();
        let t: u64 = reports.iter().map(|r| r.throttled).sum();
        if (f >= failed && t >= throttled) || Instant::now() > deadline {
            return Ok(reports);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failed_authentications_append_no_event_each_but_one_count_per_interval() -> anyhow::Result<()> {
    let app = spawn_with(|c| {
        c.auth_failure_limit = 1000;
        c.auth_failure_report_interval = Duration::from_millis(200);
    })
    .await?;
    let bad_key = "sk-wrong-0123456789abcdefghijklmnopqrstuvwxyz";
    for _ in 0..10 {
        let resp = app.http.post(app.url("/v1/chat/completions")).bearer_auth(bad_key).send().await?;
        assert_eq!(resp.status(), 401);
        let resp = app.http.post(app.url("/v1/chat/completions")).send().await?;
        assert_eq!(resp.status(), 401);
        let resp = app.http.get(app.url("/v1/models")).header("authorization", "Basic abc").send().await?;
        assert_eq!(resp.status(), 401);
    }
    let reports = wait_reports(&app, 30, 0).await?;
    let sum = |f: fn(&AuthFailuresCounted) -> u64| reports.iter().map(f).sum::<u64>();
    assert_eq!((sum(|r| r.unknown), sum(|r| r.missing), sum(|r| r.malformed)), (10, 10, 10));
    assert!(reports.len() <= 3, "one event per interval, not per failure: {}", reports.len());
    assert_eq!(reports[0].distinct_addresses, 1);
    assert!(reports.iter().flat_map(|r| &r.key_prefixes).all(|p| p.len() <= 8 && bad_key.starts_with(p.as_str())));
    assert!(reports.iter().any(|r| !r.key_prefixes.is_empty()));
    assert!(app.request_logs(0).await?.is_empty(), "a failed authentication was logged as a request");
    assert!(app.raw_events().await?.iter().all(|e| !e.contains(bad_key)), "a whole key reached the log");
    Ok(())
}

#[tokio::test]
async fn an_address_that_keeps_failing_gets_429_with_retry_after_and_other_addresses_are_served() -> anyhow::Result<()>
{
    let app = spawn_with(|c| {
        c.auth_failure_limit = 5;
        c.auth_failure_report_interval = Duration::from_millis(200);
    })
    .await?;
    let attacker = client_from([127, 0, 0, 2])?;
    let neighbour = client_from([127, 0, 0, 3])?;
    let chat = json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..5 {
        let resp = attacker.post(app.url("/v1/chat/completions")).bearer_auth("sk-guess").json(&chat).send().await?;
        assert_eq!(resp.status(), 401);
    }
    let resp = attacker.post(app.url("/v1/chat/completions")).bearer_auth("sk-guess").json(&chat).send().await?;
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).unwrap_or("0").parse()?;
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(body["error"]["code"], "too_many_failed_authentications");
    // Throttled before the key is looked at: even a valid key from that address waits.
    let resp = attacker.post(app.url("/v1/chat/completions")).bearer_auth(&app.key).json(&chat).send().await?;
    assert_eq!(resp.status(), 429);
    // In the client protocol's own shape on the other surfaces.
    let resp = attacker.post(app.url("/v1/messages")).header("x-api-key", "sk-guess").json(&chat).send().await?;
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    let body: Value = resp.json().await?;
    assert_eq!((body["type"].as_str(), body["error"]["type"].as_str()), (Some("error"), Some("rate_limit_error")));
    let resp = attacker
        .post(app.url(&format!("/v1beta/models/{MODEL}:generateContent")))
        .header("x-goog-api-key", "sk-guess")
        .json(&json!({"contents": []}))
        .send()
        .await?;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], 429);

    // Another address is unaffected, for good and bad keys alike.
    let resp = neighbour.post(app.url("/v1/chat/completions")).bearer_auth(&app.key).json(&chat).send().await?;
    assert_eq!(resp.status(), 200);
    let resp = neighbour.post(app.url("/v1/chat/completions")).bearer_auth("sk-typo").json(&chat).send().await?;
    assert_eq!(resp.status(), 401);

    let reports = wait_reports(&app, 6, 4).await?;
    assert_eq!(reports.iter().map(|r| r.throttled).sum::<u64>(), 4);
    assert_eq!(reports.iter().map(|r| r.unknown).sum::<u64>(), 6);
    assert!(reports.iter().any(|r| r.throttled_addresses.contains(&"127.0.0.2".to_owned())));
    assert_eq!(app.fake.requests().len(), 1, "only the neighbour's call went upstream");
    Ok(())
}

#[tokio::test]
async fn authenticated_model_listing_and_lookup_append_no_event() -> anyhow::Result<()> {
    let app = spawn().await?;
    for path in ["/v1/models", &format!("/v1/models/{MODEL}"), "/v1beta/models", "/v1/models"] {
        let resp = app.http.get(app.url(path)).bearer_auth(&app.key).send().await?;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = app
        .post("/v1/chat/completions", &json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .await?;
    assert_eq!(resp.status(), 200);
    let logs = app.request_logs(1).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs_later = app.request_logs(1).await?;
    assert_eq!((logs.len(), logs_later.len()), (1, 1));
    assert_eq!(logs[0].endpoint, "chat.completions");
    Ok(())
}

#[tokio::test]
async fn a_wrong_method_gets_405_in_the_protocol_error_shape() -> anyhow::Result<()> {
    let app = spawn().await?;
    let resp = app.http.get(app.url("/v1/chat/completions")).bearer_auth(&app.key).send().await?;
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    assert!(body["error"]["param"].is_null() && body["error"]["message"].is_string());
    let resp = app.http.get(app.url("/v1/messages")).header("x-api-key", &app.key).send().await?;
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await?;
    assert_eq!(body["type"], "error");
    assert!(body["error"]["message"].is_string());
    let resp = app.http.delete(app.url("/v1beta/models")).header("x-goog-api-key", &app.key).send().await?;
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["code"], 405);
    assert!(body["error"]["status"].is_string());
    Ok(())
}

#[tokio::test]
async fn a_json_syntax_error_between_fields_names_no_parameter() -> anyhow::Result<()> {
    let app = spawn().await?;
    for body in [r#"{"model": "gpt-4o-mini","#, r#"{"model": "gpt-4o-mini" "messages": []}"#] {
        let resp = app
            .http
            .post(app.url("/v1/chat/completions"))
            .bearer_auth(&app.key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        assert_eq!(resp.status(), 400);
        let body: Value = resp.json().await?;
        assert_eq!(body["error"]["code"], "invalid_json");
        assert!(body["error"]["param"].is_null(), "{body}");
    }
    Ok(())
}

/// Reads until the server closes the connection (or `within` passes); returns what it sent.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> anyhow::Result<String> {
    let mut out = Vec::new();
    tokio::time::timeout(within, tcp.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn quick_server() -> ServerConfig {
    ServerConfig {
        header_read_timeout: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(800),
        body_read_timeout: Duration::from_millis(700),
        max_connections: 64,
    }
}

#[tokio::test]
async fn a_connection_that_sends_partial_headers_is_closed_after_the_header_timeout() -> anyhow::Result<()> {
    let app = spawn_served(|_| {}, quick_server()).await?;
    let mut tcp = TcpStream::connect(app.addr).await?;
    let started = Instant::now();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-").await?;
    read_until_closed(&mut tcp, Duration::from_secs(5)).await?;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(350) && waited < Duration::from_secs(3), "closed after {waited:?}");
    // The server itself is fine.
    let resp = app.http.get(app.url("/v1/models")).bearer_auth(&app.key).send().await?;
    assert_eq!(resp.status(), 200);
    Ok(())
}

#[tokio::test]
async fn a_body_dripping_slowly_is_cut_at_the_body_deadline() -> anyhow::Result<()> {
    let app = spawn_served(|_| {}, quick_server()).await?;
    let mut tcp = TcpStream::connect(app.addr).await?;
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
        app.key
    );
    let started = Instant::now();
    tcp.write_all(head.as_bytes()).await?;
    let (mut read, mut write) = tcp.into_split();
    let drip = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if write.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), read.read_to_end(&mut out)).await??;
    let waited = started.elapsed();
    drip.abort();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(waited >= Duration::from_millis(650) && waited < Duration::from_secs(3), "cut after {waited:?}");
    assert!(app.fake.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn with_the_connection_cap_reached_a_new_client_waits_until_idle_connections_are_closed() -> anyhow::Result<()> {
    let cfg = ServerConfig { max_connections: 8, ..quick_server() };
    let app = spawn_served(|_| {}, cfg).await?;
    let mut idle = Vec::new();
    for _ in 0..8 {
        idle.push(TcpStream::connect(app.addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        reqwest::Client::new().get(app.url("/v1/models")).bearer_auth(&app.key).send(),
    )
    .await??;
    let waited = started.elapsed();
    assert_eq!(resp.status(), 200);
    // Served only once the idle connections were closed by the server's timeouts.
    assert!(waited >= Duration::from_millis(300), "served after {waited:?} despite the cap");
    for mut tcp in idle {
        read_until_closed(&mut tcp, Duration::from_secs(3)).await?;
    }
    Ok(())
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_server() -> anyhow::Result<()> {
    let app = spawn_served(|_| {}, quick_server()).await?;
    let mut tcp = TcpStream::connect(app.addr).await?;
    let request = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", app.key);
    tcp.write_all(request.as_bytes()).await?;
    let mut first = vec![0u8; 4096];
    let n = tcp.read(&mut first).await?;
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    read_until_closed(&mut tcp, Duration::from_secs(5)).await?;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3), "closed after {waited:?}");
    Ok(())
}

#[tokio::test]
async fn a_stream_longer_than_every_server_timeout_with_pauses_longer_than_the_idle_timeout_is_never_cut()
-> anyhow::Result<()> {
    let server = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(400),
        body_read_timeout: Duration::from_millis(300),
        max_connections: 64,
    };
    let app = spawn_served(
        |c| {
            c.first_byte_timeout = Duration::from_secs(5);
            c.idle_timeout = Duration::from_secs(5);
        },
        server,
    )
    .await?;
    app.fake.set_scenario(testkit::fake_openai::Scenario::SlowChunks(Duration::from_millis(500)));
    let started = Instant::now();
    let resp = app
        .post(
            "/v1/chat/completions",
            &json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await?;
    assert_eq!(resp.status(), 200);
    let payloads = crate::helpers::sse_payloads(resp).await?;
    assert!(started.elapsed() > Duration::from_millis(1500), "the stream was not slow: {:?}", started.elapsed());
    assert_eq!(payloads.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(app.wait_usage(1).await?.len(), 1);
    Ok(())
}
