//! Load benchmark. Starts a fake OpenAI upstream on loopback and the real `llm-router serve`
//! binary as a child process (events recorded: embedded log by default, JetStream with
//! `--nats-url`), then measures, against a direct call to the fake:
//! requests/s, added p50/p99 latency, added time-to-first-byte for streams, the gateway's CPU per
//! request (from /proc, so only the gateway process counts) and its peak RSS with 256 requests in
//! flight. Usage: `cargo run --release -p bench -- [--requests N] [--concurrency C] [--nats-url URL]`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use testkit::fake_openai::FakeOpenAi;

const MODEL: &str = "gpt-4o-mini";

struct Args {
    requests: usize,
    concurrency: usize,
    streams: usize,
    in_flight: usize,
    nats_url: Option<String>,
    database_url: Option<String>,
    /// `serve` (gateway + projections in one process) or `gateway` (the hot path alone; needs
    /// `--nats-url`).
    mode: String,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        requests: 20_000,
        concurrency: 32,
        streams: 300,
        in_flight: 256,
        nats_url: None,
        database_url: None,
        mode: "serve".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => a.requests = val()?.parse()?,
            "--concurrency" => a.concurrency = val()?.parse()?,
            "--streams" => a.streams = val()?.parse()?,
            "--in-flight" => a.in_flight = val()?.parse()?,
            "--nats-url" => a.nats_url = Some(val()?),
            "--database-url" => a.database_url = Some(val()?),
            "--mode" => a.mode = val()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.mode != "serve" && a.mode != "gateway" {
        bail!("--mode must be serve or gateway");
    }
    if a.mode == "gateway" && a.nats_url.is_none() {
        bail!("--mode gateway needs --nats-url");
    }
    Ok(a)
}

/// The gateway under test, as a child process.
struct Router {
    child: Child,
    base: String,
    key: String,
    data: tempfile::TempDir,
    exe: PathBuf,
    extra: Vec<String>,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Router {
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.exe)
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .args(&self.extra)
            .env("RUST_LOG", "warn")
            .output()?;
        if !out.status.success() {
            bail!("llm-router {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// (user+system CPU seconds, peak RSS bytes) of the gateway process.
    fn cpu_and_peak_rss(&self) -> anyhow::Result<(f64, u64)> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // Fields 14 and 15 of /proc/PID/stat (utime, stime), counted after the `comm` field.
        let ticks: f64 = fields.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
            + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let hz = 100.0; // USER_HZ is 100 on Linux.
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm_kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok((ticks / hz, hwm_kb * 1024))
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn router_exe() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let exe = me.parent().map(|d| d.join("llm-router")).context("no exe dir")?;
    if !exe.exists() {
        bail!("{} not found: build it first (cargo build --release --bin llm-router)", exe.display());
    }
    Ok(exe)
}

async fn start_router(args: &Args, fake: &FakeOpenAi) -> anyhow::Result<Router> {
    let data = tempfile::tempdir()?;
    let port = free_port()?;
    let mut extra = Vec::new();
    if let Some(u) = &args.nats_url {
        extra.extend(["--nats-url".to_owned(), u.clone()]);
    }
    if let Some(u) = &args.database_url {
        extra.extend(["--database-url".to_owned(), u.clone()]);
    }
    let exe = router_exe()?;
    let log = std::fs::File::create(data.path().join("serve.log"))?;
    let mut child = Command::new(&exe)
        .args([args.mode.as_str(), "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data.path())
        .args(&extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let key = if args.mode == "serve" {
        tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(stdout).lines();
            for line in lines.by_ref() {
                let line = line?;
                if line.starts_with("sk-") {
                    // Keep reading what `serve` prints after the key (the owner's password).
                    std::thread::spawn(move || lines.for_each(drop));
                    return Ok(line);
                }
            }
            bail!("serve printed no key")
        })
        .await??
    } else {
        String::new()
    };
    let mut router = Router { child, base: format!("http://127.0.0.1:{port}"), key, data, exe, extra };
    if router.key.is_empty() {
        let tenant = format!("bench-{port}");
        router.cli(&["tenants", "create", &tenant])?;
        let out = router.cli(&["keys", "create", "--tenant", &tenant])?;
        router.key = out.lines().last().unwrap_or_default().to_owned();
    }
    router.cli(&[
        "channels",
        "add",
        "--name",
        "fake",
        "--provider",
        "openai",
        "--base-url",
        &fake.base_url(),
        "--api-key",
        "sk-upstream",
        "--models",
        MODEL,
    ])?;
    router.cli(&["prices", "set", "--model", MODEL, "--input", "0.15", "--output", "0.60"])?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = client.get(format!("{}/v1/models", router.base)).bearer_auth(&router.key).send().await;
        if let Ok(r) = r
            && r.status().is_success()
            && r.text().await.unwrap_or_default().contains(MODEL)
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("gateway did not come up; see {}", Path::new(&router.data.path()).join("serve.log").display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(router)
}

fn chat_body(stream: bool) -> bytes::Bytes {
    let body = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello in five words."}],
        "max_tokens": 32,
        "stream": stream,
    });
    bytes::Bytes::from(body.to_string())
}

/// Sends `n` non-streaming requests over `c` workers; returns per-request latencies and wall time.
async fn load(url: &str, key: &str, n: usize, c: usize) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(c).tcp_nodelay(true).build()?;
    let body = chat_body(false);
    let start = Instant::now();
    let per = n / c;
    let tasks: Vec<_> = (0..c)
        .map(|_| {
            let (client, body, url, key) = (client.clone(), body.clone(), url.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await?;
                    if !r.status().is_success() {
                        bail!("status {}", r.status());
                    }
                    r.bytes().await?;
                    lat.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok((all, start.elapsed()))
}

/// Time to the first body byte of `n` sequential streamed requests.
async fn ttfb(url: &str, key: &str, n: usize, headers: &[(&str, &str)]) -> anyhow::Result<Vec<Duration>> {
    let client = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let body = chat_body(true);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let mut req = client.post(url).bearer_auth(key).header("content-type", "application/json").body(body.clone());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await?;
        let mut s = r.bytes_stream();
        let first = s.next().await;
        out.push(t.elapsed());
        first.context("empty stream")??;
        while let Some(c) = s.next().await {
            c?;
        }
    }
    Ok(out)
}

/// Holds `n` slow streams open at once (the fake must be set to slow chunks); returns how many
/// completed.
async fn in_flight(url: &str, key: &str, n: usize) -> anyhow::Result<usize> {
    let client = reqwest::Client::builder().pool_max_idle_per_host(n).build()?;
    let body = chat_body(true);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, body, url, key) = (client.clone(), body.clone(), url.to_owned(), key.to_owned());
            tokio::spawn(async move {
                let r = client
                    .post(&url)
                    .bearer_auth(&key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                r.bytes().await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await?.is_ok() {
            ok += 1;
        }
    }
    Ok(ok)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[expect(clippy::print_stdout, reason = "the benchmark's report is its output")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let fake = FakeOpenAi::start().await?;
    fake.set_recording(false);
    let router = start_router(&args, &fake).await?;
    let direct_url = format!("{}/chat/completions", fake.base_url());
    let gw_url = format!("{}/v1/chat/completions", router.base);

    // Warm both paths (connection pools, lazy statics, page cache).
    load(&direct_url, "sk-upstream", 2_000, args.concurrency).await?;
    load(&gw_url, &router.key, 2_000, args.concurrency).await?;

    let (mut direct, direct_wall) = load(&direct_url, "sk-upstream", args.requests, args.concurrency).await?;
    let (cpu0, _) = router.cpu_and_peak_rss()?;
    let (mut via, via_wall) = load(&gw_url, &router.key, args.requests, args.concurrency).await?;
    let (cpu1, _) = router.cpu_and_peak_rss()?;
    let n = via.len() as f64;
    let cpu_per_req_us = (cpu1 - cpu0) * 1e6 / n;

    let mut t_direct = ttfb(&direct_url, "sk-upstream", args.streams, &[]).await?;
    let mut t_via = ttfb(&gw_url, &router.key, args.streams, &[]).await?;

    fake.set_scenario(testkit::fake_openai::Scenario::SlowChunks(Duration::from_millis(250)));
    let completed = in_flight(&gw_url, &router.key, args.in_flight).await?;
    let (_, peak_rss) = router.cpu_and_peak_rss()?;

    let backend = if args.nats_url.is_some() { "jetstream" } else { "embedded" };
    println!(
        "## `llm-router {}`, {backend} log, {} requests, concurrency {}",
        args.mode, args.requests, args.concurrency
    );
    println!();
    println!("| metric | direct to fake | through gateway | added |");
    println!("|---|---|---|---|");
    println!(
        "| throughput (req/s) | {:.0} | {:.0} | |",
        direct.len() as f64 / direct_wall.as_secs_f64(),
        n / via_wall.as_secs_f64()
    );
    let (d50, v50) = (pct(&mut direct, 0.50), pct(&mut via, 0.50));
    let (d99, v99) = (pct(&mut direct, 0.99), pct(&mut via, 0.99));
    println!("| latency p50 (µs) | {:.0} | {:.0} | {:.0} |", us(d50), us(v50), us(v50) - us(d50));
    println!("| latency p99 (µs) | {:.0} | {:.0} | {:.0} |", us(d99), us(v99), us(v99) - us(d99));
    let (s50, g50) = (pct(&mut t_direct, 0.50), pct(&mut t_via, 0.50));
    let (s99, g99) = (pct(&mut t_direct, 0.99), pct(&mut t_via, 0.99));
    println!("| stream TTFB p50 (µs) | {:.0} | {:.0} | {:.0} |", us(s50), us(g50), us(g50) - us(s50));
    println!("| stream TTFB p99 (µs) | {:.0} | {:.0} | {:.0} |", us(s99), us(g99), us(g99) - us(s99));
    println!("| gateway CPU per non-streaming request (µs) | | {cpu_per_req_us:.1} | |");
    println!(
        "| gateway peak RSS with {} streams in flight (MiB) | | {:.1} | ({completed} completed) |",
        args.in_flight,
        peak_rss as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
