//! Fault-catalogue rows that need the real binary, each test named after its row of
//! `FAULTS.md`: large bodies and the process's memory (row 17), health while NATS is down
//! (row 33), Postgres going away under a running `serve` (row 34), a canary secret that must
//! never reach a log line (row 40) nor a bad key header's bytes (row 23), and the file limit and the connection cap's log line (row 44).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{Backend, Env, MODEL};

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix(" kB")?.trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

/// Sends a request head, then `body_len` bytes of body (`chunked` or with `Content-Length`) in
/// 1 MiB pieces, while reading the answer; returns the status line and how many body bytes went
/// out before the server answered or closed.
async fn upload(addr: &str, key: &str, body_len: usize, chunked: bool) -> anyhow::Result<(String, usize)> {
    let mut stream = TcpStream::connect(addr).await?;
    let framing = if chunked { "transfer-encoding: chunked".to_owned() } else { format!("content-length: {body_len}") };
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\n\
         content-type: application/json\r\n{framing}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let (mut rd, mut wr) = stream.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let flag = answered.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(60), rd.read(&mut buf)).await.ok()?.ok()?;
        flag.store(true, Ordering::SeqCst);
        Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned())
    });
    let piece = vec![b' '; 1 << 20];
    let mut sent = 0;
    while sent < body_len && !answered.load(Ordering::SeqCst) {
        let n = piece.len().min(body_len - sent);
        let ok = if chunked {
            let mut framed = format!("{n:x}\r\n").into_bytes();
            framed.extend_from_slice(&piece[..n]);
            framed.extend_from_slice(b"\r\n");
            wr.write_all(&framed).await.is_ok()
        } else {
            wr.write_all(&piece[..n]).await.is_ok()
        };
        if !ok {
            break;
        }
        sent += n;
    }
    let status = reader.await?.unwrap_or_default();
    Ok((status, sent))
}

#[tokio::test]
async fn row17_ten_and_hundred_megabyte_bodies_keep_the_gateways_memory_bounded() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    let pid = serve.pid();
    let baseline = proc_kib(pid, "VmRSS")?;
    let addr = serve.base.trim_start_matches("http://").to_owned();

    // 100 MB announced by Content-Length: refused on the head, before any of it is read.
    let (status, sent) = upload(&addr, &key, 100 << 20, false).await?;
    assert!(status.contains(" 413"), "{status}");
    assert!(sent < 40 << 20, "{sent} bytes went out before the 413");
    // 100 MB chunked (no length): read up to the 32 MiB limit, then 413.
    let (status, sent) = upload(&addr, &key, 100 << 20, true).await?;
    assert!(status.contains(" 413"), "{status}");
    assert!(sent < 64 << 20, "{sent} bytes went out before the 413");
    // 10 MB of valid JSON: served.
    let prompt = "word ".repeat(2 << 20);
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": prompt}]});
    let resp =
        env.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(&key).json(&body).send().await?;
    assert_eq!(resp.status(), 200, "{}", serve.log());
    let fake_saw = env.fake.requests().last().map(|r| r.body["messages"][0]["content"].as_str().map(str::len));
    assert_eq!(fake_saw, Some(Some(10 << 20)), "the whole 10 MB prompt reached the upstream");

    // The peak over all of it: far below one 100 MB body. A 10 MB request is held a few times
    // (the body, its parse, the upstream request) and the chunked upload up to the limit.
    let peak = proc_kib(pid, "VmHWM")?;
    let now = proc_kib(pid, "VmRSS")?;
    eprintln!("row17: RSS baseline {baseline} KiB, peak {peak} KiB, now {now} KiB");
    assert!(peak.saturating_sub(baseline) < 96 * 1024, "peak {peak} KiB from baseline {baseline} KiB");
    Ok(())
}

/// A TCP proxy in front of Postgres that can be cut: when down it closes every connection it
/// carries and every new one, as a Postgres server that went away does.
struct PgSwitch {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgSwitch {
    fn drop(&mut self) {
        self.task.abort();
        self.set(false);
    }
}

impl PgSwitch {
    async fn start(target: String) -> anyhow::Result<PgSwitch> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (u, c) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                if let Ok(mut list) = c.lock() {
                    list.retain(|h| !h.is_finished());
                    list.push(handle);
                }
            }
        });
        Ok(PgSwitch { port, up, conns, task })
    }

    fn set(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up && let Ok(mut list) = self.conns.lock() {
            for h in list.drain(..) {
                h.abort();
            }
        }
    }
}

#[tokio::test]
async fn row34_postgres_down_keeps_completions_working_reads_say_unavailable_and_projections_catch_up()
-> anyhow::Result<()> {
    let mut env = Env::new(Backend::Cluster).await?;
    // `serve` reaches the test database only through the switch.
    let db = env.db.take().context("no database")?;
    let (prefix, rest) = db.url().split_once('@').context("no host in the database URL")?;
    let (target, path) = rest.split_once('/').context("no database in the URL")?;
    let switch = PgSwitch::start(target.to_owned()).await?;
    let url = format!("{prefix}@127.0.0.1:{}/{path}", switch.port);
    let serve =
        env.serve_with_env(&[("DATABASE_URL", &url), ("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    env.wait_for_usage(&serve, &key, 1).await?;
    let browser = crate::dashboard::browser()?;
    let (jar, _) = crate::dashboard::logged_in(&browser, &serve.base, "admin@localhost", "owner-password-123").await?;
    let usage_seq = |health: &serde_json::Value| {
        health["projections"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "ledger")
            .map(|p| p["stream_seq"].as_u64())
    };
    let health: serde_json::Value = env.http.get(format!("{}/api/health", serve.base)).send().await?.json().await?;
    let seq_before = usage_seq(&health).flatten().context("no ledger projection in /api/health")?;

    switch.set(false);
    // Completions go on: billing is the event log's, not the database's.
    for stream in [false, true, false, true] {
        let (status, body) = env.chat(&serve, &key, stream).await?;
        assert_eq!(status, 200, "{body}\n{}", serve.log());
    }
    // Reads say the read store is unavailable, in the API's error shape; health says 503.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = env.http.get(format!("{}/v1/usage", serve.base)).bearer_auth(&key).send().await?;
        let status = r.status().as_u16();
        let body = r.text().await?;
        if status == 503 {
            assert!(body.contains("read_store_unavailable"), "{body}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "reads never said unavailable: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let health = env.http.get(format!("{}/api/health", serve.base)).send().await?;
    assert_eq!(health.status(), 503);
    // The usage stream grew past what the ledger had applied: the lag the projections must drain.
    let health: serde_json::Value = health.json().await?;
    assert_eq!(health["read_store"], "unavailable", "{health}");
    let seq_cut = usage_seq(&health).flatten().context("the stream's position is still known")?;
    assert!(seq_cut >= seq_before + 4, "usage stream {seq_before} → {seq_cut}");
    // The dashboard says so with a 503 page, not a page of zeros.
    let page = browser.get(format!("{}/", serve.base)).header("cookie", &jar).send().await?;
    assert_eq!(page.status(), 503);
    assert!(page.headers().contains_key("retry-after"));
    let html = page.text().await?;
    assert!(html.contains("store-unavailable") && html.contains("admin@localhost"), "{html}");

    // Back: the projections catch up with the five billed requests, and the lag drains to 0.
    switch.set(true);
    env.wait_for_usage(&serve, &key, 5).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = env.http.get(format!("{}/api/health", serve.base)).send().await?;
        let status = health.status();
        let health: serde_json::Value = health.json().await?;
        let lags: Vec<u64> =
            health["projections"].as_array().into_iter().flatten().filter_map(|p| p["lag"].as_u64()).collect();
        if status == 200 && !lags.is_empty() && lags.iter().all(|l| *l == 0) {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the lag never drained: {status} {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let page = browser.get(format!("{}/", serve.base)).header("cookie", &jar).send().await?;
    assert_eq!(page.status(), 200);
    drop(serve);
    drop(switch);
    drop(db);
    Ok(())
}

#[tokio::test]
async fn row40_a_canary_secret_in_keys_bodies_and_headers_never_reaches_a_log_line() -> anyhow::Result<()> {
    use testkit::fake_openai::Scenario;
    let canary = format!("canary{}", uuid::Uuid::new_v4().simple());
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("RUST_LOG", "debug")]).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    let base = &serve.base;
    let chat = |content: &str, stream: bool| json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": content}]});
    let secret_key = format!("sk-{canary}");
    let post = |path: &str| env.http.post(format!("{base}{path}"));

    // The canary as a key: unknown (401), in each place a key may be sent.
    for req in [
        post("/v1/chat/completions").bearer_auth(&secret_key).json(&chat("hi", false)),
        post("/v1/messages").header("x-api-key", &secret_key).json(&chat("hi", false)),
        post(&format!("/v1beta/models/{MODEL}:generateContent?key={secret_key}")).json(&json!({})),
        post("/v1/chat/completions").header("authorization", format!("Basic {canary}")).json(&chat("hi", false)),
    ] {
        assert_eq!(req.send().await?.status(), 401);
    }
    // In bodies: a prompt, a bad parameter, broken JSON, a refused field.
    let mut bad_param = chat("hi", false);
    bad_param["temperature"] = json!(canary);
    let mut refused = chat("hi", false);
    refused["api_key"] = json!(secret_key);
    for (body, want) in [(chat(&canary, false), 200), (chat(&canary, true), 200), (bad_param, 400), (refused, 400)] {
        let r = post("/v1/chat/completions").bearer_auth(&key).json(&body).send().await?;
        assert_eq!(r.status().as_u16(), want, "{body}");
    }
    let r = post("/v1/chat/completions")
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(format!("{{\"model\":\"{MODEL}\",\"messages\":[{{\"{canary}\"")) // broken JSON
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    // In headers the gateway does not use, and in ones it does.
    let r = post("/v1/chat/completions")
        .bearer_auth(&key)
        .header("x-canary", &canary)
        .header("anthropic-beta", &canary)
        .header("x-request-id", &canary)
        .json(&chat("hi", false))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    // Upstream failures whose text carries the canary (an upstream echoing what it was sent),
    // a stream cut mid-way, a refused upstream key.
    env.fake.set_scenario(Scenario::ErrorBody {
        status: 400,
        body: json!({"error": {"message": format!("Bad value {canary} for {secret_key}"),
            "type": "invalid_request_error"}})
        .to_string(),
    });
    let r = post("/v1/chat/completions").bearer_auth(&key).json(&chat(&canary, false)).send().await?;
    assert_eq!(r.status(), 400);
    env.fake.set_scenario(Scenario::ErrorBody {
        status: 401,
        body: json!({"error": {"message": format!("Incorrect API key provided: {secret_key}"),
            "code": "invalid_api_key"}})
        .to_string(),
    });
    let r = post("/v1/chat/completions").bearer_auth(&key).json(&chat(&canary, false)).send().await?;
    assert_eq!(r.status(), 502);
    env.fake.set_scenario(Scenario::CloseAfterChunks(1));
    let r = post("/v1/chat/completions").bearer_auth(&key).json(&chat(&canary, true)).send().await?;
    let _ = r.text().await;
    env.fake.set_scenario(Scenario::Normal);

    // Let the process write what it will, then read everything it printed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stdout = serve.stdout.lock().map(|l| l.join("\n")).unwrap_or_default();
    let log = serve.log();
    assert!(log.lines().count() > 20 && log.contains("DEBUG"), "the debug log was not captured:\n{log}");
    for (name, text) in [("stderr", &log), ("stdout", &stdout)] {
        let hits: Vec<&str> = text.lines().filter(|l| l.contains(&canary)).collect();
        assert!(hits.is_empty(), "the canary reached {name}:\n{}", hits.join("\n"));
    }
    // Nor the upstream key of the channel, in any form.
    assert!(!log.contains("sk-upstream-canary-123") && !stdout.contains("sk-upstream-canary-123"));
    Ok(())
}

#[tokio::test]
async fn row33_health_answers_503_while_nats_is_down_and_200_once_it_is_back() -> anyhow::Result<()> {
    let mut env = Env::new(Backend::Cluster).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;
    let health = |env: &Env| {
        let url = format!("{}/api/health", serve.base);
        let http = env.http.clone();
        async move {
            let r = http.get(url).send().await?;
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            anyhow::Ok((status, body))
        }
    };
    assert_eq!(health(&env).await?.0, 200);
    env.nats.as_mut().context("no nats")?.stop()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = health(&env).await?;
        if status == 503 {
            assert_eq!(body["log"]["reachable"], false, "{body}");
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "health stayed {status} with NATS down: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Completions are spooled meanwhile, and billed once NATS is back.
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    env.nats.as_mut().context("no nats")?.start()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = health(&env).await?;
        if status == 200 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "health stayed {status} after NATS came back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    env.wait_for_usage(&serve, &key, 1).await?;
    Ok(())
}

/// `(soft, hard)` of "Max open files" in `/proc/PID/limits` (`None`: unlimited).
fn open_files_limits(pid: &str) -> anyhow::Result<(Option<u64>, Option<u64>)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits.lines().find(|l| l.starts_with("Max open files")).context("no open files line")?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    let soft = fields.next().context("no soft limit")?;
    let hard = fields.next().context("no hard limit")?;
    Ok((soft.parse().ok(), hard.parse().ok()))
}

/// FAULTS.md row 44 on the real binary: the process raises its open-files soft limit to the hard
/// limit at start and logs it (this test process lowers its own soft limit first, with
/// `prlimit`, so the child inherits a lower one; nextest runs each test in its own process), and
/// with `LLM_ROUTER_MAX_CONNECTIONS=2` a third connection logs the cap's WARN line.
#[tokio::test]
async fn row44_the_file_limit_is_raised_at_start_and_the_connection_cap_is_logged() -> anyhow::Result<()> {
    let me = std::process::id().to_string();
    let lowered = std::process::Command::new("prlimit").args(["--pid", &me, "--nofile=512:"]).status()?;
    anyhow::ensure!(lowered.success(), "prlimit failed");
    let (parent_soft, parent_hard) = open_files_limits("self")?;
    anyhow::ensure!(parent_soft == Some(512) && parent_hard != Some(512), "{parent_soft:?} {parent_hard:?}");
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_MAX_CONNECTIONS", "2")]).await?;
    let (soft, hard) = open_files_limits(&serve.pid().to_string())?;
    assert_eq!(soft, hard, "the soft open-files limit is not raised to the hard one");
    assert_eq!(hard, parent_hard);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !serve.log().contains("Open files limit raised") {
        anyhow::ensure!(Instant::now() < deadline, "no log line for the raise:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Two idle connections take the two slots; the third waits and the cap is logged.
    let addr = serve.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve.log().contains("Connection limit reached") {
        anyhow::ensure!(Instant::now() < deadline, "no log line at the connection cap:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    Ok(())
}

/// FAULTS.md row 23 on the real binary with a debug log: a key header holding a canary next to a
/// NUL, a control byte or bytes that are not text gets 400 or 401, never a 5xx, and the canary
/// appears in no log line.
#[tokio::test]
async fn row23_the_raw_value_of_a_bad_key_header_is_never_logged() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("RUST_LOG", "debug")]).await?;
    let addr = serve.base.trim_start_matches("http://").to_owned();
    let canary = "CanaryAuth7f3c9d";
    let body = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}]}}"#);
    for header in ["authorization", "x-api-key"] {
        for bad in [&b"\x00"[..], b"\x01", b"\xff\xfe"] {
            let mut req = format!("POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\n{header}: Bearer sk-{canary}")
                .into_bytes();
            req.extend_from_slice(bad);
            req.extend_from_slice(
                format!("{canary}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                    .as_bytes(),
            );
            let mut conn = TcpStream::connect(&addr).await?;
            conn.write_all(&req).await?;
            let mut out = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out)).await??;
            let text = String::from_utf8_lossy(&out);
            let status: u16 = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            assert!(status == 400 || status == 401, "{header} {bad:?}: {text}");
            assert!(!text.contains(canary), "the value is echoed: {text}");
        }
    }
    // Give the log writer a moment, then sweep it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = serve.log();
    assert!(log.contains("DEBUG") || log.contains("debug"), "the debug log is on");
    assert!(!log.contains(canary), "the raw key header reached the log");
    Ok(())
}

/// `serve` whose stdout reader is gone (`serve | head -2` after two lines, a closed pipe) keeps
/// serving: printing the first-start key and the owner's password to a closed pipe is logged,
/// not fatal.
#[tokio::test]
async fn serve_keeps_serving_when_its_stdout_is_a_closed_pipe() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let port = crate::helpers::free_port()?;
    let stderr = env.data.path().join("serve-closed-stdout.log");
    let mut child = env
        .command()
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&stderr)?)
        .spawn()?;
    drop(child.stdout.take());
    let url = format!("http://127.0.0.1:{port}/api/health");
    let deadline = Instant::now() + Duration::from_secs(20);
    while env.http.get(&url).send().await.map(|r| r.status().as_u16()).unwrap_or(0) != 200 {
        anyhow::ensure!(Instant::now() < deadline && child.try_wait()?.is_none(), "serve never came up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A key made by the CLI works on it, and it is still alive after printing into the pipe.
    env.cli(&["tenants", "create", "acme"])?;
    let out = env.cli(&["keys", "create", "--tenant", "acme"])?;
    let key = out.lines().last().unwrap_or_default().to_owned();
    let r = env.http.get(format!("http://127.0.0.1:{port}/v1/models")).bearer_auth(&key).send().await?;
    let status = r.status().as_u16();
    let alive = child.try_wait()?.is_none();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    anyhow::ensure!(status == 200 && alive, "status {status}, alive {alive}: {log}");
    anyhow::ensure!(log.contains("Standard output is closed"), "{log}");
    Ok(())
}
