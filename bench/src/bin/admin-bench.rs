//! Admin API scale benchmark: starts the real `llm-router serve` on a fresh data directory
//! (embedded log, SQLite read store), seeds its read store by direct SQL inserts into the
//! read-model tables (100 tenants, `--keys` API keys, `--rows` ledger rows with their rollups and
//! as many request-log rows with theirs, over 30 days; every rollup tier filled as the
//! projections fold it, the all-tenant `*` rows included; one tenant, t043, in Asia/Kolkata), then times each list and report
//! endpoint over HTTP on loopback. Seeding bypasses the event log on purpose: folding a million
//! events first would measure the projections, not the endpoints.
//!
//! `cargo build --release --bin llm-router --bin admin-bench && ./target/release/admin-bench`

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

const PASSWORD: &str = "bench-owner-password";
const TENANTS: i64 = 100;
const DAY_US: i64 = 86_400_000_000;
/// 2026-11-01T00:00:00Z.
const START_US: i64 = 1_793_491_200_000_000;

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn arg(name: &str, default: i64) -> anyhow::Result<i64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("a value")?.parse().context("a number"),
        None => Ok(default),
    }
}

fn seed(db: &Path, keys: i64, rows: i64) -> anyhow::Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(60))?;
    let series =
        |n: i64| format!("WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < {}) ", n - 1);
    let tenant = "printf('t%03d', i % 100)";
    let sql = [
        format!(
            "{}INSERT INTO tenants (generation, name, created_at_us, time_zone) SELECT 1, printf('t%03d', i), {START_US}, \
             CASE WHEN i = 43 THEN 'Asia/Kolkata' END FROM s",
            series(TENANTS)
        ),
        format!(
            "{}INSERT INTO api_keys (generation, key_id, tenant, hash, prefix, name, models, revoked, created_at_us) \
             SELECT 1, printf('key_%07d', i), {tenant}, printf('hash%07d', i), 'sk-bench', 'bench', NULL, 0, {START_US} + i FROM s",
            series(keys)
        ),
        format!(
            "{}INSERT INTO ledger (generation, request_id, event_id, seq, tenant, key_id, end_user, day, occurred_at_us, \
             endpoint, model_requested, model_served, provider, channel_id, input_tokens, cached_input_tokens, \
             cache_write_tokens, output_tokens, reasoning_tokens, usage_source, stream_outcome, streamed, price_version, \
             currency, cost_nanos) SELECT 1, printf('req_%08d', i), printf('ev%08d', i), i + 1, \
             printf('t%03d', (i % {keys}) % 100), printf('key_%07d', i % {keys}), NULL, \
             strftime('%Y-%m-%d', ({START_US} + i * (30 * {DAY_US} / {rows})) / 1000000, 'unixepoch'), \
             {START_US} + i * (30 * {DAY_US} / {rows}), 'chat.completions', CASE i % 3 WHEN 0 THEN 'gpt-4o' WHEN 1 THEN 'gpt-4o-mini' ELSE 'claude-sonnet' END, \
             'm', 'openai', 'ch_1', 100 + i % 900, 0, 0, 50 + i % 400, 0, 'upstream', 'completed', 0, 'p1', 'USD', 1000 + i % 5000 FROM s",
            series(rows)
        ),
        "INSERT INTO usage_daily SELECT generation, tenant, day, model_requested, currency, COUNT(*), SUM(input_tokens), \
         SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos) \
         FROM ledger GROUP BY generation, tenant, day, model_requested, currency"
            .to_owned(),
        "INSERT INTO usage_daily_key SELECT generation, tenant, key_id, day, model_requested, currency, COUNT(*), \
         SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), \
         SUM(cost_nanos) FROM ledger GROUP BY generation, tenant, key_id, day, model_requested, currency"
            .to_owned(),
        "INSERT INTO usage_slot_key SELECT generation, tenant, occurred_at_us / 900000000, key_id, model_requested, currency, \
         COUNT(*), SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), \
         SUM(reasoning_tokens), SUM(cost_nanos) FROM ledger \
         GROUP BY generation, tenant, occurred_at_us / 900000000, key_id, model_requested, currency"
            .to_owned(),
        // The coarser tiers (migration 0011), as the projection folds them: per tenant and for
        // every tenant (`*`), by month per key, by day for requests.
        "INSERT INTO usage_slot SELECT generation, tenant, slot, model, currency, SUM(requests), SUM(input_tokens), \
         SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos) \
         FROM usage_slot_key GROUP BY generation, tenant, slot, model, currency"
            .to_owned(),
        "INSERT INTO usage_slot SELECT generation, '*', slot, model, currency, SUM(requests), SUM(input_tokens), \
         SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos) \
         FROM usage_slot_key GROUP BY generation, slot, model, currency"
            .to_owned(),
        "INSERT INTO usage_daily SELECT generation, '*', day, model, currency, SUM(requests), SUM(input_tokens), \
         SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos) \
         FROM usage_daily WHERE tenant <> '*' GROUP BY generation, day, model, currency"
            .to_owned(),
        "INSERT INTO usage_month_key SELECT generation, tenant, substr(day, 1, 7), key_id, model, currency, \
         SUM(requests), SUM(input_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), \
         SUM(reasoning_tokens), SUM(cost_nanos) FROM usage_daily_key \
         GROUP BY generation, tenant, substr(day, 1, 7), key_id, model, currency"
            .to_owned(),
        "INSERT INTO request_log (generation, request_id, seq, occurred_at_us, tenant, key_id, endpoint, model, provider, \
         channel_id, status, status_class, latency_us, ttft_us, attempts, error_class, streamed, attempt_classes) \
         SELECT generation, request_id, seq, occurred_at_us, tenant, key_id, endpoint, model_requested, provider, channel_id, \
         CASE WHEN seq % 50 = 0 THEN 502 WHEN seq % 20 = 0 THEN 429 ELSE 200 END, \
         CASE WHEN seq % 50 = 0 THEN 5 WHEN seq % 20 = 0 THEN 4 ELSE 2 END, 20000 + seq % 3000000, NULL, 1, \
         CASE WHEN seq % 50 = 0 THEN 'upstream_server_error' WHEN seq % 20 = 0 THEN 'rate_limited' END, 0, 'ok' FROM ledger"
            .to_owned(),
        "INSERT INTO request_slot SELECT generation, tenant, occurred_at_us / 900000000, COUNT(*), \
         SUM(status < 400), SUM(status_class = 4), SUM(status_class = 5) FROM request_log \
         GROUP BY generation, tenant, occurred_at_us / 900000000"
            .to_owned(),
        "INSERT INTO request_slot_latency SELECT generation, tenant, occurred_at_us / 900000000, 60 + seq % 30, COUNT(*) \
         FROM request_log GROUP BY generation, tenant, occurred_at_us / 900000000, 60 + seq % 30"
            .to_owned(),
        "INSERT INTO request_slot SELECT generation, '*', slot, SUM(requests), SUM(succeeded), SUM(client_errors), \
         SUM(server_errors) FROM request_slot WHERE tenant <> '*' GROUP BY generation, slot"
            .to_owned(),
        "INSERT INTO request_slot_latency SELECT generation, '*', slot, bucket, SUM(requests) FROM request_slot_latency \
         WHERE tenant <> '*' GROUP BY generation, slot, bucket"
            .to_owned(),
        "INSERT INTO request_day SELECT generation, tenant, slot / 96, SUM(requests), SUM(succeeded), \
         SUM(client_errors), SUM(server_errors) FROM request_slot GROUP BY generation, tenant, slot / 96"
            .to_owned(),
        "INSERT INTO request_day_latency SELECT generation, tenant, slot / 96, bucket, SUM(requests) \
         FROM request_slot_latency GROUP BY generation, tenant, slot / 96, bucket"
            .to_owned(),
        "ANALYZE".to_owned(),
    ];
    for s in sql {
        let t = Instant::now();
        conn.execute_batch(&s)?;
        tracing_line(&format!("seeded in {:.1} s: {}", t.elapsed().as_secs_f64(), &s[..s.len().min(70)]));
    }
    Ok(())
}

fn tracing_line(s: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{s}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let keys = arg("--keys", 100_000)?;
    let rows = arg("--rows", 1_000_000)?;
    let runs = arg("--runs", 20)?.max(1) as usize;
    let exe = std::env::current_exe()?.parent().map(|d| d.join("llm-router")).context("no exe dir")?;
    if !exe.exists() {
        bail!("{} not found: build it first", exe.display());
    }
    let data = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let base = format!("http://127.0.0.1:{port}");
    let _serve = Serve(
        Command::new(&exe)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data.path())
            .env("LLM_ROUTER_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.path().join("serve.log"))?)
            .spawn()?,
    );
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http.get(format!("{base}/api/health")).send().await.is_ok_and(|r| r.status().is_success()) {
        if Instant::now() > deadline {
            bail!("serve did not come up; see {}", data.path().join("serve.log").display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seed(&data.path().join("read.db"), keys, rows)?;
    let login: serde_json::Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": PASSWORD}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("no token")?.to_owned();
    let deep_key = format!("key_{:07}", keys / 2);
    let endpoints = [
        "/api/tenants?limit=200".to_owned(),
        "/api/api-keys?limit=200".to_owned(),
        format!("/api/api-keys?limit=200&after={deep_key}"),
        "/api/api-keys?tenant=t042&limit=200".to_owned(),
        "/api/requests?limit=200".to_owned(),
        "/api/requests?tenant=t042&limit=200".to_owned(),
        format!("/api/requests?key={deep_key}&limit=200"),
        "/api/requests?tenant=t042&status=5xx&limit=200".to_owned(),
        "/api/requests?tenant=t042&model=gpt-4o&from=2026-11-10T00:00:00Z&to=2026-11-12T00:00:00Z&limit=200".to_owned(),
        "/api/dashboard/stats?tenant=t042&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z".to_owned(),
        "/api/dashboard/stats?from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z".to_owned(),
        "/api/reports/usage?tenant=t042&from=2026-11-01&to=2026-11-30".to_owned(),
        "/api/reports/usage?tenant=t042&from=2026-11-01&to=2026-11-30&group_by=key".to_owned(),
        "/api/reports/billing?tenant=t042&from=2026-11-01&to=2026-11-30".to_owned(),
        // t043 keeps Asia/Kolkata (+5:30): its local days cut every UTC day.
        "/api/reports/usage?tenant=t043&from=2026-11-01&to=2026-11-30".to_owned(),
        "/api/reports/usage?tenant=t043&from=2026-11-01&to=2026-11-30&group_by=key".to_owned(),
        "/api/reports/billing?tenant=t043&from=2026-11-01&to=2026-11-30".to_owned(),
        "/api/reports/billing?from=2026-11-01&to=2026-11-30&limit=200".to_owned(),
        "/api/audit?limit=200".to_owned(),
        "/api/users?limit=200".to_owned(),
        "/api/channels?limit=200".to_owned(),
        "/api/health/api-keys?limit=200".to_owned(),
        "/api/health".to_owned(),
    ];
    let mut out = String::from("| endpoint | p50 ms | max ms |\n|---|---|---|\n");
    for path in &endpoints {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            let r = http.get(format!("{base}{path}")).bearer_auth(&token).send().await?;
            let status = r.status();
            let _ = r.bytes().await?;
            times.push(t.elapsed());
            if !status.is_success() {
                bail!("{path}: {status}");
            }
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        out.push_str(&format!(
            "| `{path}` | {:.1} | {:.1} |\n",
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        ));
    }
    tracing_line(&format!("{keys} keys, {rows} ledger rows, {rows} request-log rows, {runs} runs each\n{out}"));
    Ok(())
}
