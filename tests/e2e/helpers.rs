//! Runs the real `llm-router` binary: `serve` as a child process on a free port, admin commands
//! as separate processes, against a fake OpenAI upstream on loopback. Two backends: embedded
//! (SQLite log + SQLite read models) and cluster (a nats-server child + a fresh Postgres database).

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use testkit::fake_openai::FakeOpenAi;
use testkit::nats_server::NatsServer;
use testkit::postgres::TestDb;

/// Which event log and read store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `data/events.db` + `data/read.db`.
    Embedded,
    /// NATS JetStream + Postgres.
    Cluster,
}

/// A test's world: data directory, services, the fake upstream.
pub struct Env {
    pub data: tempfile::TempDir,
    pub nats: Option<NatsServer>,
    pub db: Option<TestDb>,
    pub fake: FakeOpenAi,
    pub http: reqwest::Client,
}

/// A running `llm-router serve`.
pub struct Serve {
    child: Child,
    pub base: String,
    /// Lines the process printed on stdout.
    pub stdout: Arc<Mutex<Vec<String>>>,
    stderr: PathBuf,
}

impl Drop for Serve {
    /// Stops the process, then sweeps its log for every secret the test handed out (FAULTS row
    /// 40 over the whole suite: every `serve`, `gateway` and `worker` of every test is checked).
    #[expect(clippy::panic, reason = "a leaked secret fails the test whose process leaked it")]
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            return;
        }
        let log = self.log();
        let secrets = SECRETS.lock().map(|s| s.clone()).unwrap_or_default();
        if let Some(leaked) = secrets.iter().find(|s| log.contains(s.as_str())) {
            let shown: String = leaked.chars().take(12).collect();
            panic!("a secret ({shown}…) reached the log of {}", self.stderr.display());
        }
    }
}

/// The upstream key of [`Env::add_fake_channel`]'s channel.
pub const UPSTREAM_KEY: &str = "sk-upstream-canary-123";

/// Secrets no process log may hold: the fake channel's upstream key, every key the CLI printed
/// and every password or signing secret given to a process.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn remember_secret(secret: &str) {
    if secret.len() >= 8
        && let Ok(mut s) = SECRETS.lock()
        && !s.iter().any(|k| k == secret)
    {
        s.push(secret.to_owned());
    }
}

impl Serve {
    /// The key printed on first start.
    pub fn first_key(&self) -> Option<String> {
        self.stdout.lock().ok()?.iter().find(|l| l.starts_with("sk-")).cloned()
    }

    /// The process id (to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process logged, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops the process with SIGTERM and waits for it.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("serve did not stop on SIGTERM")
    }
}

pub const MODEL: &str = "gpt-4o-mini";
pub const EMBED_MODEL: &str = "text-embedding-3-small";

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Env {
    /// A fresh world on `backend`, with a fake upstream.
    pub async fn new(backend: Backend) -> anyhow::Result<Env> {
        let (nats, db) = match backend {
            Backend::Embedded => (None, None),
            Backend::Cluster => (Some(NatsServer::start_new()?), Some(testkit::postgres::fresh_database().await?)),
        };
        Ok(Env {
            data: tempfile::tempdir()?,
            nats,
            db,
            fake: FakeOpenAi::start().await?,
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        })
    }

    /// The binary with this world's backend flags.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_llm-router"));
        // By environment, so that a test may give one process another directory with `--data-dir`.
        c.env("LLM_ROUTER_DATA_DIR", self.data.path()).env("RUST_LOG", "info").env_remove("OPENAI_API_KEY");
        // Health probes would add requests to the fake upstream; a test that wants them sets this again.
        c.env("HEALTH_CHECK_ENABLED", "false");
        if let Some(n) = &self.nats {
            c.arg("--nats-url").arg(n.url());
        }
        if let Some(db) = &self.db {
            c.arg("--database-url").arg(db.url());
        }
        c
    }

    /// Runs an admin command; returns stdout, fails with stderr.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command().args(args).output()?;
        if !out.status.success() {
            bail!("llm-router {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let out = String::from_utf8(out.stdout)?;
        // A key or a generated password is printed alone on the last line.
        if let Some(last) =
            out.lines().last().filter(|l| l.starts_with("sk-") || args.starts_with(&["users", "create"]))
        {
            remember_secret(last.trim());
        }
        Ok(out)
    }

    /// Runs an admin command that must fail; returns stderr.
    pub fn cli_fails(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.command().args(args).output()?;
        if out.status.success() {
            bail!("llm-router {args:?} succeeded but should have failed");
        }
        Ok(String::from_utf8(out.stderr)?)
    }

    /// Starts `serve` and waits until `/api/health` answers 200.
    pub async fn serve(&self) -> anyhow::Result<Serve> {
        self.serve_with(&[], &[]).await
    }

    /// Starts `serve` with extra environment variables.
    pub async fn serve_with_env(&self, vars: &[(&str, &str)]) -> anyhow::Result<Serve> {
        self.serve_with(vars, &[]).await
    }

    /// Starts `serve` with extra environment variables and global arguments (e.g. `--config`).
    pub async fn serve_with(&self, vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Serve> {
        self.http_service("serve", vars, args).await
    }

    /// Starts `llm-router worker` (no HTTP) with its own data directory; killed when dropped.
    pub fn worker(&self, data_dir: &std::path::Path) -> anyhow::Result<Serve> {
        let stderr = self.data.path().join(format!("worker-{}.log", free_port()?));
        let child = self
            .command()
            .arg("--data-dir")
            .arg(data_dir)
            .arg("worker")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        Ok(Serve { child, base: String::new(), stdout: Arc::new(Mutex::new(Vec::new())), stderr })
    }

    /// Starts an HTTP subcommand (`serve` or `gateway`) and waits until `/api/health` answers 200.
    pub async fn http_service(&self, sub: &str, vars: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Serve> {
        self.http_service_on(free_port()?, sub, vars, args).await
    }

    /// Like [`Env::http_service`], on a given port (a process restarted where its clients expect it).
    pub async fn http_service_on(
        &self,
        port: u16,
        sub: &str,
        vars: &[(&str, &str)],
        args: &[&str],
    ) -> anyhow::Result<Serve> {
        remember_secret(UPSTREAM_KEY);
        for (name, value) in vars {
            if name.contains("PASSWORD") || name.contains("SECRET") {
                remember_secret(value);
            }
        }
        let stderr = self.data.path().join(format!("serve-{port}.log"));
        let mut child = self
            .command()
            .args(args)
            .args([sub, "--listen", &format!("127.0.0.1:{port}")])
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let serve = Serve { child, base: format!("http://127.0.0.1:{port}"), stdout, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.http.get(format!("{}/api/health", serve.base)).send().await
                && r.status().is_success()
            {
                return Ok(serve);
            }
            if Instant::now() > deadline {
                bail!("{sub} did not become healthy:\n{}", serve.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The read-model store `serve` writes (Postgres database or `read.db`).
    pub async fn store(&self) -> anyhow::Result<projections::ReadStore> {
        let url = match &self.db {
            Some(db) => db.url().to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.data.path().join("read.db").display()),
        };
        Ok(projections::ReadStore::connect(&url).await?)
    }

    /// Waits until the ledger holds a row for `request_id`; returns every row it has.
    pub async fn ledger_rows(&self, request_id: &str) -> anyhow::Result<Vec<projections::read::LedgerRow>> {
        let store = self.store().await?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = projections::read::ledger_rows_for_request(&store, request_id).await?;
            if !rows.is_empty() || Instant::now() > deadline {
                store.close().await;
                return Ok(rows);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Adds a channel to the fake upstream serving the test models, and their prices.
    pub fn add_fake_channel(&self) -> anyhow::Result<()> {
        self.cli(&[
            "channels",
            "add",
            "--name",
            "fake",
            "--provider",
            "openai",
            "--base-url",
            &self.fake.base_url(),
            "--api-key",
            UPSTREAM_KEY,
            "--models",
            &format!("{MODEL},{EMBED_MODEL}"),
        ])?;
        self.cli(&["prices", "set", "--model", MODEL, "--input", "0.15", "--cached", "0.075", "--output", "0.60"])?;
        Ok(())
    }

    /// Creates a tenant and a key; returns the key.
    pub fn tenant_key(&self, tenant: &str) -> anyhow::Result<String> {
        self.cli(&["tenants", "create", tenant])?;
        let out = self.cli(&["keys", "create", "--tenant", tenant, "--name", "test"])?;
        out.lines().last().map(str::to_owned).filter(|k| k.starts_with("sk-")).context("no key on the last line")
    }

    /// Waits until `key` can list `model` (the gateway followed the control stream).
    pub async fn wait_for_model(&self, serve: &Serve, key: &str, model: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = self.http.get(format!("{}/v1/models", serve.base)).bearer_auth(key).send().await?;
            if r.status().is_success() && r.text().await?.contains(model) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("model {model} never became visible:\n{}", serve.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A non-streaming chat completion; returns (status, body).
    pub async fn chat(&self, serve: &Serve, key: &str, stream: bool) -> anyhow::Result<(u16, String)> {
        let body =
            serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream});
        let r =
            self.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(key).json(&body).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    /// Waits until `/v1/usage` for `key` reports `requests` requests; returns the body.
    pub async fn wait_for_usage(&self, serve: &Serve, key: &str, requests: i64) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.http.get(format!("{}/v1/usage", serve.base)).bearer_auth(key).send().await?;
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            let seen: i64 = body["data"].as_array().into_iter().flatten().filter_map(|d| d["requests"].as_i64()).sum();
            if status.is_success() && seen == requests {
                return Ok(body);
            }
            if Instant::now() > deadline {
                bail!("usage never reached {requests} requests (last: {status} {body}):\n{}", serve.log());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs one of the official-SDK scripts in `tests/sdk/` with `vars`; fails with its output and
/// the router's log unless it exits 0.
pub async fn run_sdk_script(script: &str, vars: &[(&str, &str)], serve: &Serve) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::new("python3");
    cmd.arg(format!("{}/tests/sdk/{script}", env!("CARGO_MANIFEST_DIR")));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{script} failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        serve.log()
    );
    Ok(())
}
