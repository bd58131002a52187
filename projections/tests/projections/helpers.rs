//! Test harness: an event log plus a read store on SQLite or on a fresh Postgres database, event
//! builders, and a reference fold of usage events computed without the projection code. The log
//! is the embedded one in a temp dir, or JetStream on a `nats-server` child when
//! `LLMR_TEST_LOG=jetstream` (the test command runs the suite both ways). Events are appended
//! acked, so they are in the log itself when a test goes on.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nats::EventLog;
use projections::read::{self, UsageDay};
use projections::{Projection, ReadStore, RunOptions};
use schemas::{
    ApiKeyIssued, AppliedPrice, Envelope, EventBody, Stream, StreamOutcome, TenantCreated, UsageRecorded, UsageSource,
};
use sqlx::Connection;
use testkit::postgres::TestDb;

/// 2026-11-20T00:00:00Z in microseconds.
pub const BASE_US: i64 = 1_795_132_800_000_000;
pub const DAY_US: i64 = 86_400_000_000;

/// The read-store backends every log-touching test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const BACKENDS: [Backend; 2] = [Backend::Sqlite, Backend::Postgres];

/// One test's log and read store.
pub struct Harness {
    pub backend: Backend,
    pub log: EventLog,
    pub store: ReadStore,
    pub store_url: String,
    dir: tempfile::TempDir,
    _pg: Option<TestDb>,
    _nats: Option<testkit::nats_server::NatsServer>,
}

impl Harness {
    pub async fn new(backend: Backend) -> anyhow::Result<Self> {
        init_tracing();
        let dir = tempfile::tempdir().context("Failed to create a temp dir")?;
        let (log, nats) = match std::env::var("LLMR_TEST_LOG").as_deref() {
            Ok("jetstream") => {
                let nats = testkit::nats_server::NatsServer::start_new()?;
                let opts = nats::JetStreamOptions { require_nats_at_start: true, ..Default::default() };
                let log = EventLog::connect_jetstream(&nats.url(), dir.path(), opts)
                    .await
                    .context("Failed to connect the JetStream log")?;
                (log, Some(nats))
            }
            Ok("embedded") | Err(_) => {
                (EventLog::open_embedded(dir.path()).await.context("Failed to open the embedded log")?, None)
            }
            Ok(other) => bail!("LLMR_TEST_LOG={other:?}: expected `embedded` or `jetstream`"),
        };
        let (store_url, pg) = match backend {
            Backend::Sqlite => (format!("sqlite://{}/read.db?mode=rwc", dir.path().display()), None),
            Backend::Postgres => {
                let db = testkit::postgres::fresh_database().await?;
                (db.url().to_owned(), Some(db))
            }
        };
        let store = ReadStore::connect(&store_url).await.context("Failed to connect the read store")?;
        Ok(Harness { backend, log, store, store_url, dir, _pg: pg, _nats: nats })
    }

    pub async fn append_all(&self, events: &[Envelope]) -> anyhow::Result<()> {
        for e in events {
            self.log.append_acked(e).await?;
        }
        Ok(())
    }

    fn events_db(&self) -> anyhow::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(self.dir.path().join("events.db"))?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }

    /// Whether [`Harness::append_raw`] can write to this log (the embedded one only: JetStream
    /// has no way around the envelope for a client of the `nats` crate).
    pub fn raw_writes(&self) -> bool {
        matches!(self.log, EventLog::Embedded(_))
    }

    /// Writes a row into the embedded log under a log id of our choosing, bypassing the
    /// envelope: the way to store a poison payload, or the same event under a second log id
    /// (what a publish retried after the duplicate window looks like).
    pub fn append_raw(&self, stream: Stream, log_id: &str, payload: &[u8]) -> anyhow::Result<()> {
        ensure!(self.raw_writes(), "raw rows can only be written to the embedded log");
        self.events_db()?.execute(
            "INSERT INTO events (id, stream, subject, payload) VALUES (?1, ?2, 'llmr.v1.test', ?3)",
            rusqlite::params![log_id, stream.name(), payload],
        )?;
        Ok(())
    }

    /// How many events of `stream` have a sequence up to `seq`.
    pub async fn events_up_to(&self, stream: Stream, seq: u64) -> anyhow::Result<i64> {
        use futures::StreamExt as _;
        let mut n = 0;
        if seq == 0 {
            return Ok(0);
        }
        let mut tail = self.log.tail(stream, 0);
        while let Some(ev) = tokio::time::timeout(Duration::from_secs(10), tail.next()).await.context("tail stalled")? {
            let ev = ev?;
            if ev.seq > seq {
                break;
            }
            n += 1;
            if ev.seq == seq {
                break;
            }
        }
        Ok(n)
    }

    /// Runs one statement on a connection of its own (fault injection).
    pub async fn execute_sql(&self, sql: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::AnyConnection::connect(&self.store_url).await?;
        sqlx::raw_sql(sql).execute(&mut conn).await?;
        conn.close().await?;
        Ok(())
    }

    pub async fn checkpoint(&self, projection: Projection) -> anyhow::Result<u64> {
        Ok(read::checkpoints(&self.store)
            .await?
            .into_iter()
            .find(|c| c.projection == projection.name())
            .map(|c| c.seq)
            .unwrap_or(0))
    }

    /// Runs `projection` until it has applied the last event of its stream, then stops it.
    pub async fn catch_up(&self, projection: Projection) -> anyhow::Result<()> {
        self.catch_up_with(projection, RunOptions::default()).await
    }

    pub async fn catch_up_with(&self, projection: Projection, opts: RunOptions) -> anyhow::Result<()> {
        let target = self.log.last_seq(projection.stream()).await?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (store, log) = (self.store.clone(), self.log.clone());
        let task = tokio::spawn(async move {
            projections::run_with(
                &store,
                &log,
                projection,
                async move {
                    let _ = stopped.await;
                },
                opts,
            )
            .await
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.checkpoint(projection).await? < target {
            if task.is_finished() {
                task.await??;
                bail!("the runner stopped before catching up");
            }
            if tokio::time::Instant::now() > deadline {
                task.abort();
                bail!("the runner did not reach seq {target} in time on {:?}", self.backend);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = stop.send(());
        task.await??;
        Ok(())
    }
}

/// A deterministic generator so failures reproduce.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

pub fn tenant_created(name: &str) -> Envelope {
    Envelope::new(name, "test", BASE_US, EventBody::TenantCreated(TenantCreated { name: name.into() }))
}

pub fn key_issued(tenant: &str, key_id: &str, hash: &str, at: i64) -> Envelope {
    Envelope::new(
        tenant,
        "test",
        at,
        EventBody::ApiKeyIssued(ApiKeyIssued {
            key_id: key_id.into(),
            hash: hash.into(),
            prefix: format!("sk-{}", &hash[..4.min(hash.len())]),
            name: Some(format!("{key_id} label")),
            models: None,
            tenant_usage: false,
            ..Default::default()
        }),
    )
}

pub fn price(currency: &str, input: i64, output: i64) -> AppliedPrice {
    AppliedPrice {
        version: format!("price-{currency}-{input}-{output}"),
        currency: currency.into(),
        input_per_mtok_nanos: input,
        cached_input_per_mtok_nanos: input / 10,
        cache_write_per_mtok_nanos: input + input / 4,
        output_per_mtok_nanos: output,
    }
}

/// A `usage.recorded` with the given counts, charged at `price`.
#[expect(clippy::too_many_arguments, reason = "a test builder; names at the call sites say enough")]
pub fn usage(
    tenant: &str,
    key_id: &str,
    request_id: &str,
    model: &str,
    at: i64,
    (input, cached, cache_write, output, reasoning): (u64, u64, u64, u64, u64),
    price: &AppliedPrice,
    streamed: bool,
) -> Envelope {
    let cost = price.cost_nanos(input, cached, cache_write, output);
    let mut e = Envelope::new(
        tenant,
        "test",
        at,
        EventBody::UsageRecorded(UsageRecorded {
            request_id: request_id.into(),
            key_id: key_id.into(),
            user: Some("u1".into()),
            endpoint: "chat.completions".into(),
            model_requested: model.into(),
            model_served: format!("{model}-2026"),
            provider: "openai".into(),
            channel_id: "ch_1".into(),
            input_tokens: input,
            cached_input_tokens: cached,
            cache_write_tokens: cache_write,
            output_tokens: output,
            reasoning_tokens: reasoning,
            raw_usage: None,
            usage_source: UsageSource::Upstream,
            streamed,
            stream_outcome: if streamed { StreamOutcome::ClientDisconnected } else { StreamOutcome::Completed },
            price: Some(price.clone()),
            cost_nanos: cost,
            currency: price.currency.clone(),
        }),
    );
    e.correlation_id = Some(request_id.into());
    e
}

/// `n` varied usage events of `tenant` over three days, three models, two keys, two currencies.
pub fn usage_events(tenant: &str, n: usize, seed: u64, request_prefix: &str) -> Vec<Envelope> {
    let mut rng = Rng::new(seed);
    let models = ["gpt-4o", "claude-sonnet", "deepseek-chat"];
    let prices = [price("USD", 2_500_000_000, 10_000_000_000), price("CNY", 1_000_000_000, 2_000_000_000)];
    (0..n)
        .map(|i| {
            let model = models[rng.below(3) as usize];
            let price = &prices[usize::from(model == "deepseek-chat")];
            let key = if rng.below(2) == 0 { "key_a" } else { "key_b" };
            let at = BASE_US + (rng.below(3) as i64) * DAY_US + rng.below(DAY_US as u64) as i64;
            let output = rng.below(4000);
            let counts = (rng.below(5000), rng.below(800), rng.below(50), output, rng.below(output + 1));
            usage(tenant, key, &format!("{request_prefix}{i}"), model, at, counts, price, rng.below(2) == 0)
        })
        .collect()
}

/// The expected daily rollup of `events` for `tenant` (and optionally one key), folded here
/// independently of the projection's SQL.
pub fn reference_usage(events: &[Envelope], tenant: &str, key_id: Option<&str>) -> Vec<UsageDay> {
    let mut days: BTreeMap<(String, String, String), UsageDay> = BTreeMap::new();
    for e in events {
        let EventBody::UsageRecorded(u) = &e.body else { continue };
        if e.tenant != tenant || key_id.is_some_and(|k| k != u.key_id) {
            continue;
        }
        let day = reference_day(e.occurred_at_us);
        let entry = days.entry((day.clone(), u.model_requested.clone(), u.currency.clone())).or_insert(UsageDay {
            day,
            model: u.model_requested.clone(),
            currency: u.currency.clone(),
            requests: 0,
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            cost_nanos: 0,
        });
        entry.requests += 1;
        entry.input_tokens += u.input_tokens as i64;
        entry.cached_input_tokens += u.cached_input_tokens as i64;
        entry.cache_write_tokens += u.cache_write_tokens as i64;
        entry.output_tokens += u.output_tokens as i64;
        entry.reasoning_tokens += u.reasoning_tokens as i64;
        entry.cost_nanos += u.cost_nanos;
    }
    days.into_values().collect()
}

/// Day of a timestamp counted from [`BASE_US`] (the test events stay within November 2026).
fn reference_day(at: i64) -> String {
    let offset = (at - BASE_US).div_euclid(DAY_US);
    format!("2026-11-{:02}", 20 + offset)
}

pub const FROM: &str = "2026-11-01";
pub const TO: &str = "2026-11-30";

impl Harness {
    /// Waits (without running anything) until the ledger of `acme` has `rows` rows.
    pub async fn catch_up_wait(&self, rows: i64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let n = read::ledger_row_count(&self.store, "acme").await?;
            if n == rows {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{:?}: {n} ledger rows, expected {rows}", self.backend);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Logs go to a sink unless `TEST_LOG=1`.
fn init_tracing() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt().with_env_filter("info,sqlx=warn").with_test_writer().try_init();
    }
}
