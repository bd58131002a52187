//! Spawns the gateway on 127.0.0.1:0 with a fake OpenAI upstream on loopback, and reads back the
//! events it appended. The event log is the embedded one in a temp dir, or JetStream on a
//! `nats-server` child of this test when `LLMR_TEST_LOG=jetstream` (the test command runs the
//! suite both ways: one suite, two backends). Control events are appended with `append_acked`,
//! so that they are in the log itself, not only in the JetStream spool, when the test goes on.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use gateway::{Gateway, GatewayConfig};
use nats::EventLog;
use schemas::secret::MasterKey;
use schemas::{
    ApiKeyIssued, AppliedPrice, ChannelAdded, Envelope, EventBody, GLOBAL_TENANT, PricePublished, RequestLogged,
    Stream, TenantCreated, UsageRecorded,
};
use testkit::fake_openai::FakeOpenAi;

pub const TENANT: &str = "acme";
pub const MODEL: &str = "gpt-4o-mini";
pub const UPSTREAM_KEY: &str = "sk-upstream-test-secret";

pub struct TestApp {
    pub addr: SocketAddr,
    pub log: EventLog,
    pub fake: FakeOpenAi,
    pub key: String,
    pub key_id: String,
    pub price: AppliedPrice,
    pub http: reqwest::Client,
    pub gateway: Gateway,
    pub master_key: MasterKey,
    _nats: Option<testkit::nats_server::NatsServer>,
    _dir: tempfile::TempDir,
}

/// The event log every test of this suite runs on, chosen by `LLMR_TEST_LOG` (`embedded`, the
/// default, or `jetstream`).
pub async fn open_log(dir: &std::path::Path) -> anyhow::Result<(EventLog, Option<testkit::nats_server::NatsServer>)> {
    match std::env::var("LLMR_TEST_LOG").as_deref() {
        Ok("jetstream") => {
            let nats = testkit::nats_server::NatsServer::start_new()?;
            let opts = nats::JetStreamOptions {
                ack_timeout: Duration::from_secs(1),
                max_retry_backoff: Duration::from_millis(200),
                require_nats_at_start: true,
                ..Default::default()
            };
            let log =
                EventLog::connect_jetstream(&nats.url(), dir, opts).await.context("Failed to connect JetStream")?;
            Ok((log, Some(nats)))
        }
        Ok("embedded") | Err(_) => Ok((EventLog::open_embedded(dir).await?, None)),
        Ok(other) => anyhow::bail!("LLMR_TEST_LOG={other:?}: expected `embedded` or `jetstream`"),
    }
}

pub fn control(tenant: &str, body: EventBody) -> Envelope {
    Envelope::new(tenant, "test", 0, body)
}

pub struct Issued {
    pub plaintext: String,
    pub key_id: String,
}

pub async fn issue_key(log: &EventLog, models: Option<Vec<String>>) -> anyhow::Result<Issued> {
    issue_key_with(log, |k| k.models = models).await
}

/// Issues a key of [`TENANT`] with the fields `tweak` sets (caps, expiry, models).
pub async fn issue_key_with(log: &EventLog, tweak: impl FnOnce(&mut ApiKeyIssued)) -> anyhow::Result<Issued> {
    let k = schemas::keys::generate();
    let key_id = format!("key_{}", uuid::Uuid::now_v7().simple());
    let mut issued = ApiKeyIssued { key_id: key_id.clone(), hash: k.hash, prefix: k.prefix, ..Default::default() };
    tweak(&mut issued);
    log.append_acked(&control(TENANT, EventBody::ApiKeyIssued(issued))).await?;
    Ok(Issued { plaintext: k.plaintext, key_id })
}

pub async fn spawn() -> anyhow::Result<TestApp> {
    spawn_with(|_| {}).await
}

pub async fn spawn_with(tweak: impl FnOnce(&mut GatewayConfig)) -> anyhow::Result<TestApp> {
    spawn_served(tweak, gateway::server::ServerConfig::default()).await
}

/// Like [`spawn_with`], with the HTTP server's limits given.
pub async fn spawn_served(
    tweak: impl FnOnce(&mut GatewayConfig),
    server: gateway::server::ServerConfig,
) -> anyhow::Result<TestApp> {
    let dir = tempfile::tempdir()?;
    let (log, nats) = open_log(dir.path()).await?;
    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    log.append_acked(&control(TENANT, EventBody::TenantCreated(TenantCreated { name: TENANT.into() }))).await?;
    let issued = issue_key(&log, None).await?;
    log.append_acked(&control(
        GLOBAL_TENANT,
        EventBody::ChannelAdded(ChannelAdded {
            channel_id: "ch_fake".into(),
            name: "fake".into(),
            provider: "openai".into(),
            base_url: fake.base_url(),
            api_key: Some(master.seal(UPSTREAM_KEY, "ch_fake")),
            models: vec![MODEL.into(), "text-embedding-3-small".into(), "gpt-3.5-turbo-instruct".into()],
            priority: 0,
            weight: 1,
            api_version: None,
            insecure_http: false,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }),
    ))
    .await?;
    let published = PricePublished {
        model: MODEL.into(),
        channel_id: None,
        currency: "USD".into(),
        input_per_mtok_nanos: 150_000_000,
        output_per_mtok_nanos: 600_000_000,
        cached_input_per_mtok_nanos: Some(75_000_000),
        cache_write_per_mtok_nanos: None,
    };
    let price_event = control(GLOBAL_TENANT, EventBody::PricePublished(published.clone()));
    log.append_acked(&price_event).await?;
    let price = AppliedPrice::from((price_event.id.to_string().as_str(), &published));

    let mut cfg = GatewayConfig::new(master.clone(), "gw-test");
    cfg.first_byte_timeout = Duration::from_secs(1);
    cfg.idle_timeout = Duration::from_secs(1);
    cfg.drain_timeout = Duration::from_secs(5);
    cfg.body_limit_bytes = 1024 * 1024;
    tweak(&mut cfg);
    let gateway = Gateway::start(log.clone(), cfg).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = gateway.router().fallback(gateway::unknown_route);
    // The binary's server loop (timeouts, connection cap, client addresses, TCP_NODELAY).
    tokio::spawn(gateway::server::serve(listener, router, server, std::future::pending()));
    Ok(TestApp {
        addr,
        log,
        fake,
        key: issued.plaintext,
        key_id: issued.key_id,
        price,
        http: reqwest::Client::new(),
        gateway,
        master_key: master,
        _nats: nats,
        _dir: dir,
    })
}

impl TestApp {
    /// The directory of the embedded log, for a second writer (as the admin CLI is one).
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// A second writer on this test's log, as the admin CLI is: the same embedded file, or another
    /// connection (with a spool of its own) to the same NATS. Its appends do not wake the
    /// gateway's tail.
    pub async fn other_writer(&self, spool_dir: &std::path::Path) -> anyhow::Result<EventLog> {
        Ok(match &self._nats {
            Some(nats) => {
                let opts = nats::JetStreamOptions { require_nats_at_start: true, ..Default::default() };
                EventLog::connect_jetstream(&nats.url(), spool_dir, opts).await?
            }
            None => EventLog::open_embedded(self.data_dir()).await?,
        })
    }

    /// An admin's enable of `channel_id`'s only key (the one `channel.added` carried), applied
    /// before it returns: for tests that walk one channel through failures which take its key
    /// out of rotation (an invalid key, a 429) and want the next failure to reach the upstream.
    pub async fn enable_key(&self, channel_id: &str) -> anyhow::Result<()> {
        let body = EventBody::UpstreamKeyStateChanged(schemas::UpstreamKeyStateChanged {
            channel_id: channel_id.into(),
            key_id: schemas::legacy_key_id(channel_id),
            state: schemas::UpstreamKeyState::Active,
            until_us: None,
            reason: "admin".into(),
            manual: true,
            opens: 0,
        });
        // The previous request's own state change is appended without waiting; if it lands after
        // this enable it wins. So: enable, then check that nothing landed after it, else again.
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.settled().await?;
            self.log.append_acked(&control(GLOBAL_TENANT, body.clone())).await?;
            let until = self.log.last_seq(Stream::Control).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while self.gateway.control_seq() < until {
                anyhow::ensure!(tokio::time::Instant::now() < deadline, "control state not caught up");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.settled().await?;
            if self.log.last_seq(Stream::Control).await? == until {
                return Ok(());
            }
        }
        anyhow::bail!("the key of {channel_id} kept changing state")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<reqwest::Response> {
        Ok(self.http.post(self.url(path)).bearer_auth(&self.key).json(body).send().await?)
    }

    /// Waits until every spooled event reached the log (JetStream; at once on the embedded log),
    /// so that what the gateway made durable before answering can be read back.
    pub async fn settled(&self) -> anyhow::Result<()> {
        // `append_nowait` events (key state changes) wait in the spool's queue before they count
        // in its depth; the flush passes that queue first.
        self.log.flush(Duration::from_secs(10)).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.log.health().await.spool_depth > 0 {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the spool did not drain");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn events(&self, stream: Stream) -> anyhow::Result<Vec<Envelope>> {
        self.settled().await?;
        let last = self.log.last_seq(stream).await?;
        let mut out = Vec::new();
        if last == 0 {
            return Ok(out);
        }
        let mut tail = self.log.tail(stream, 0);
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(5), tail.next()).await.context("tail stalled")? {
            let ev = ev?;
            out.push(ev.decode()?);
            if ev.seq >= last {
                break;
            }
        }
        Ok(out)
    }

    /// The stored JSON of every event in every stream.
    pub async fn raw_events(&self) -> anyhow::Result<Vec<String>> {
        self.settled().await?;
        let mut out = Vec::new();
        for stream in Stream::ALL {
            let last = self.log.last_seq(stream).await?;
            if last == 0 {
                continue;
            }
            let mut tail = self.log.tail(stream, 0);
            while let Some(ev) =
                tokio::time::timeout(Duration::from_secs(5), tail.next()).await.context("tail stalled")?
            {
                let ev = ev?;
                out.push(String::from_utf8_lossy(&ev.payload).into_owned());
                if ev.seq >= last {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Every `auth.failures_counted` appended so far.
    pub async fn failure_reports(&self) -> anyhow::Result<Vec<schemas::AuthFailuresCounted>> {
        Ok(self
            .raw_events()
            .await?
            .iter()
            .filter_map(|raw| schemas::Envelope::from_json(raw.as_bytes()).ok())
            .filter_map(|e| match e.body {
                schemas::EventBody::AuthFailuresCounted(r) => Some(r),
                _ => None,
            })
            .collect())
    }

    /// Every `usage.recorded` so far, with its envelope.
    pub async fn usage(&self) -> anyhow::Result<Vec<(Envelope, UsageRecorded)>> {
        Ok(self
            .events(Stream::Billing)
            .await?
            .into_iter()
            .filter_map(|e| match &e.body {
                EventBody::UsageRecorded(u) => Some((e.clone(), u.clone())),
                _ => None,
            })
            .collect())
    }

    /// Waits until `n` usage events exist (for billing that finishes after the response).
    pub async fn wait_usage(&self, n: usize) -> anyhow::Result<Vec<(Envelope, UsageRecorded)>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let u = self.usage().await?;
            if u.len() >= n || tokio::time::Instant::now() > deadline {
                return Ok(u);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every `request.logged` so far (waits briefly: they are appended without waiting).
    pub async fn request_logs(&self, at_least: usize) -> anyhow::Result<Vec<RequestLogged>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let logs: Vec<RequestLogged> = self
                .events(Stream::Requests)
                .await?
                .into_iter()
                .filter_map(|e| match e.body {
                    EventBody::RequestLogged(r) => Some(r),
                    _ => None,
                })
                .collect();
            if logs.len() >= at_least || tokio::time::Instant::now() > deadline {
                return Ok(logs);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads an SSE response body into its `data:` payloads.
pub async fn sse_payloads(resp: reqwest::Response) -> anyhow::Result<Vec<String>> {
    let text = resp.text().await?;
    Ok(text.split("\n\n").filter_map(|e| e.trim().strip_prefix("data: ").map(str::to_owned)).collect())
}

pub async fn error_of(resp: reqwest::Response) -> anyhow::Result<(u16, serde_json::Value)> {
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await?;
    Ok((status, body))
}

/// A recorded fixture, `tests/fixtures/{vendor}/{name}`.
pub fn fixture(vendor: &str, name: &str) -> anyhow::Result<serde_json::Value> {
    let path = format!("{}/tests/fixtures/{vendor}/{name}", env!("CARGO_MANIFEST_DIR"));
    Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?)
}

/// A recorded stream fixture: one JSON value per line.
pub fn jsonl(vendor: &str, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let path = format!("{}/tests/fixtures/{vendor}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Ok(serde_json::from_str(l)?))
        .collect()
}

/// Compares a translation with its reviewed snapshot (one JSON value per line);
/// `UPDATE_FIXTURES=1` rewrites the snapshot instead (review the diff before committing it).
pub fn snapshot(vendor: &str, name: &str, actual: &[serde_json::Value]) -> anyhow::Result<()> {
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        let path = format!("{}/tests/fixtures/{vendor}/{name}", env!("CARGO_MANIFEST_DIR"));
        let lines: Vec<String> = actual.iter().map(serde_json::Value::to_string).collect();
        std::fs::write(path, lines.join("\n") + "\n")?;
        return Ok(());
    }
    let expected = jsonl(vendor, name)?;
    assert_eq!(actual, expected.as_slice(), "the translation differs from {vendor}/{name}");
    Ok(())
}
