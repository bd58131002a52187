//! Composition: opens the log and read store the configuration names, and runs `serve`,
//! `gateway`, `worker`, rebuilds and reports on them.

use std::time::Duration;

use anyhow::Context as _;
use nats::{EventLog, JetStreamOptions};

use crate::config::Config;

/// Logs go to stderr (stdout carries command output such as a new key); `RUST_LOG` filters.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,async_nats=warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Command output, one line on stdout. A closed stdout (a reader that went away, as in
/// `llm-router serve | head -2`) is logged, never fatal: `serve` prints its first-start key and
/// password and must keep serving whoever reads them.
pub fn say(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        tracing::warn!("Standard output is closed; a line of command output was not shown.");
    }
}

/// Opens the event log for an admin command: JetStream when a NATS URL is configured (and then
/// NATS must answer now: an admin command has no spool to wait in), else the embedded log.
pub async fn open_log(cfg: &Config) -> anyhow::Result<EventLog> {
    open_log_with(cfg, true).await
}

/// Opens the event log for a long-running process, which may start while NATS is down and
/// spools until it is back.
async fn open_service_log(cfg: &Config) -> anyhow::Result<EventLog> {
    open_log_with(cfg, false).await
}

async fn open_log_with(cfg: &Config, require_nats_at_start: bool) -> anyhow::Result<EventLog> {
    match &cfg.nats_url {
        Some(url) => {
            let opts = JetStreamOptions {
                replicas: cfg.replicas,
                max_spool: cfg.max_spool,
                require_nats_at_start,
                requests_max_age: cfg.request_log_retention,
                ..Default::default()
            };
            // A spool belongs to one process: the long-running one drains its own, and admin
            // commands (which only append with a direct acknowledgement) get a separate one.
            let spool_dir = if require_nats_at_start { cfg.data_dir.join("admin-spool") } else { cfg.data_dir.clone() };
            EventLog::connect_jetstream(url, &spool_dir, opts).await.context("Failed to connect to NATS JetStream")
        }
        None => EventLog::open_embedded(&cfg.data_dir).await.context("Failed to open the embedded event log"),
    }
}

/// A channel created on start from a vendor's usual environment variables, as a new user of that
/// vendor's SDK would expect.
struct DefaultChannel {
    /// The API key variable.
    key_var: &'static str,
    /// The base URL variable, in the vendor SDK's own convention.
    url_var: &'static str,
    /// Turns that convention into the channel's base URL.
    normalise_url: fn(&str) -> String,
    provider: &'static str,
    base_url: &'static str,
}

fn as_is(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

/// Anthropic's SDKs take the host without `/v1`; channels keep the version in the base URL.
fn with_v1(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") { url.to_owned() } else { format!("{url}/v1") }
}

const DEFAULT_CHANNELS: &[DefaultChannel] = &[
    DefaultChannel {
        key_var: "OPENAI_API_KEY",
        url_var: "OPENAI_BASE_URL",
        normalise_url: as_is,
        provider: "openai",
        base_url: "https://api.openai.com/v1",
    },
    DefaultChannel {
        key_var: "ANTHROPIC_API_KEY",
        url_var: "ANTHROPIC_BASE_URL",
        normalise_url: with_v1,
        provider: "anthropic",
        base_url: "https://api.anthropic.com/v1",
    },
    DefaultChannel {
        key_var: "GEMINI_API_KEY",
        url_var: "GOOGLE_GEMINI_BASE_URL",
        normalise_url: as_is,
        provider: "gemini",
        base_url: "https://generativelanguage.googleapis.com/v1beta",
    },
    // The `google-genai` SDK reads either name; the first one set wins (one `gemini` channel).
    DefaultChannel {
        key_var: "GOOGLE_API_KEY",
        url_var: "GOOGLE_GEMINI_BASE_URL",
        normalise_url: as_is,
        provider: "gemini",
        base_url: "https://generativelanguage.googleapis.com/v1beta",
    },
];

/// First start with an empty log: a `default` tenant and one key, printed once. On every start, a
/// default channel serving every model for each vendor whose API key is in the environment and
/// that has no channel yet ([`DEFAULT_CHANNELS`]).
async fn bootstrap(cfg: &Config, log: &EventLog) -> anyhow::Result<()> {
    let view = control::load(log).await?;
    let admin = crate::admin::admin(log);
    if view.tenants.is_empty() && view.keys.is_empty() {
        admin.create_tenant("default").await?;
        // The operator's own key: it may read the whole tenant's usage.
        let key = admin.issue_key("default", Some("first".to_owned()), None, true).await?;
        say("First start: created tenant `default` with this API key (shown once, keep it):");
        say(&key.key);
        if cfg.listen.ip().is_unspecified() {
            say(&format!(
                "Listening on {} accepts connections on every network interface; use --listen 127.0.0.1:{} to keep it local.",
                cfg.listen,
                cfg.listen.port()
            ));
        }
    }
    if view.users.is_empty() {
        first_owner(&admin).await?;
    }
    let mut created: Vec<&str> = Vec::new();
    for default in DEFAULT_CHANNELS {
        let Some(api_key) = std::env::var(default.key_var).ok().filter(|k| !k.is_empty()) else {
            continue;
        };
        if created.contains(&default.provider) || view.channels.values().any(|c| c.provider == default.provider) {
            continue;
        }
        let base_url = std::env::var(default.url_var)
            .ok()
            .filter(|u| !u.is_empty())
            .map(|u| (default.normalise_url)(&u))
            .unwrap_or_else(|| default.base_url.to_owned());
        let master = crate::master_key::load(&cfg.data_dir)?;
        let channel = control::NewChannel {
            name: default.provider.to_owned(),
            provider: default.provider.to_owned(),
            base_url: Some(base_url),
            api_version: None,
            api_keys: vec![api_key],
            models: vec!["*".to_owned()],
            priority: 0,
            weight: 1,
            insecure_http: false,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        };
        let id = admin
            .add_channel(&master, channel)
            .await
            .with_context(|| format!("The default {} channel from {}", default.provider, default.url_var))?
            .channel_id;
        created.push(default.provider);
        tracing::info!(channel = %id, provider = default.provider, var = default.key_var, "Default channel created from the environment.");
    }
    Ok(())
}

/// The login a log without users gets on start.
const FIRST_OWNER: &str = "admin@localhost";

/// A log without admin users (a first start, or an upgrade from before users existed) gets the
/// owner [`FIRST_OWNER`], with the password in `LLM_ROUTER_ADMIN_PASSWORD` or a generated one
/// printed once.
async fn first_owner(admin: &control::Admin) -> anyhow::Result<()> {
    let password = std::env::var("LLM_ROUTER_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let given = password.is_some();
    let new = control::NewUser { email: FIRST_OWNER.to_owned(), role: schemas::Role::Owner, tenant: None, password };
    let user = admin.create_user(new).await.context("The first admin user (LLM_ROUTER_ADMIN_PASSWORD)")?;
    match user.generated_password {
        Some(p) => {
            say(&format!("Admin API: created owner {FIRST_OWNER} with this password (shown once, keep it):"));
            say(&p);
        }
        None if given => {
            say(&format!("Admin API: created owner {FIRST_OWNER} with the password in LLM_ROUTER_ADMIN_PASSWORD."))
        }
        None => {}
    }
    Ok(())
}

/// Publishes the built-in price rows the log lacks (`admin::publish_builtin_prices`). Failing
/// only delays built-in prices to the next start, so it is logged rather than fatal.
async fn builtin_prices(log: &EventLog, instance: &str) {
    match crate::admin::publish_builtin_prices(log, instance).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(prices = n, "Built-in prices published."),
        Err(e) => tracing::warn!(error = %e, "Built-in prices not published; retried on the next start."),
    }
}

/// How long shutdown waits for the spool to drain.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// Opens the read store: Postgres when a database URL is configured, else `data_dir/read.db`.
pub async fn open_store(cfg: &Config) -> anyhow::Result<projections::ReadStore> {
    let url = match &cfg.database_url {
        Some(u) => u.clone(),
        None => {
            nats::create_private_dir(&cfg.data_dir)
                .with_context(|| format!("Failed to create {}", cfg.data_dir.display()))?;
            format!("sqlite://{}?mode=rwc", cfg.data_dir.join("read.db").display())
        }
    };
    let store = projections::ReadStore::connect(&url).await.context("Failed to open the read-model database")?;
    if cfg.database_url.is_none() {
        // It holds key hashes, tenants and usage: owner only, like the event log.
        let path = cfg.data_dir.join("read.db");
        nats::make_private(&path).with_context(|| format!("Failed to restrict {}", path.display()))?;
    }
    Ok(store)
}

/// How often the embedded log drops request logs older than the retention window.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// On the embedded log, drops request logs past `cfg.request_log_retention` now and every hour
/// (JetStream does it itself with the stream's `max_age`). Billing and control events stay.
fn spawn_retention(cfg: &Config, log: &EventLog) -> Option<tokio::task::JoinHandle<()>> {
    if log.backend() != "embedded" {
        return None;
    }
    let (log, window) = (log.clone(), cfg.request_log_retention);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        loop {
            tick.tick().await;
            match log.enforce_request_retention(window).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(dropped = n, "Request logs past the retention window dropped."),
                Err(e) => tracing::warn!(error = %e, "Request-log retention failed; retried in an hour."),
            }
        }
    }))
}

/// This process's name in events (`source`) and health output.
fn instance_name() -> String {
    std::env::var("LLM_ROUTER_INSTANCE").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
        let host = if host.is_empty() { "node".to_owned() } else { host };
        format!("{host}-{}", std::process::id())
    })
}

fn gateway_config(cfg: &Config, instance: &str) -> anyhow::Result<gateway::GatewayConfig> {
    let mut g = gateway::GatewayConfig::new(crate::master_key::load(&cfg.data_dir)?, instance);
    g.body_limit_bytes = cfg.body_limit_bytes;
    g.connect_timeout = cfg.connect_timeout;
    g.first_byte_timeout = cfg.first_byte_timeout;
    g.idle_timeout = cfg.idle_timeout;
    g.max_attempts = cfg.max_attempts;
    g.breaker = cfg.breaker;
    g.retry_time_budget = cfg.retry_time_budget;
    g.retry_budget_ratio = cfg.retry_budget_ratio;
    g.retry_budget_min = cfg.retry_budget_min;
    g.drain_timeout = cfg.drain_timeout;
    g.drain_max_bytes = cfg.drain_max_bytes;
    g.max_stream_duration = cfg.max_stream_duration;
    g.max_answer_bytes = cfg.max_answer_bytes;
    g.limits = cfg.limits;
    g.auth_failure_limit = cfg.auth_failure_limit;
    g.auth_failure_window = cfg.auth_failure_window;
    g.egress = cfg.egress.clone();
    Ok(g)
}

async fn listen_and_serve(cfg: &Config, app: axum::Router) -> anyhow::Result<()> {
    let fd_limit = gateway::server::raise_open_files_limit();
    let mut server = cfg.server.clone();
    server.max_connections = gateway::server::connection_cap(server.max_connections, fd_limit);
    if server.max_connections < cfg.server.max_connections {
        tracing::warn!(
            configured = cfg.server.max_connections,
            max_connections = server.max_connections,
            open_files_limit = ?fd_limit,
            "Connection cap lowered to fit the open files limit."
        );
    }
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, max_connections = server.max_connections, "Listening.");
    if addr.ip().is_unspecified() {
        tracing::info!(%addr, "Listening on every network interface (set `listen` to 127.0.0.1:PORT to keep it local).");
    }
    gateway::server::serve(listener, app, server, shutdown_signal()).await.context("HTTP server failed")
}

/// The shortest `JWT_SECRET` accepted: HS256 wants a key of at least its hash's size.
const MIN_JWT_SECRET: usize = 32;

/// The read routes with the admin API: sessions signed with `JWT_SECRET`, or with the secret in
/// the control log (generated and sealed on the first start without one); sessions last
/// `LLM_ROUTER_SESSION_TTL` seconds (default 12 h); writes return once `gw` applied them.
async fn web_state(
    cfg: &Config,
    store: &projections::ReadStore,
    log: &EventLog,
    instance: &str,
    gw: &gateway::Gateway,
) -> anyhow::Result<web::WebState> {
    let master = crate::master_key::load(&cfg.data_dir)?;
    let jwt_secret = std::env::var("JWT_SECRET").ok().filter(|s| !s.is_empty());
    if let Some(s) = &jwt_secret {
        anyhow::ensure!(s.len() >= MIN_JWT_SECRET, "JWT_SECRET must be at least {MIN_JWT_SECRET} bytes long");
    }
    let admin = control::Admin::new(log.clone(), instance, instance, crate::admin::providers());
    if jwt_secret.is_none()
        && let Err(e) = admin.ensure_session_secret(&master).await
    {
        tracing::warn!(error = %e, "No session secret yet (the log is unreachable); admin logins wait for a later start.");
    }
    let mut api = web::AdminConfig::new(admin, master);
    api.jwt_secret = jwt_secret;
    if let Some(ttl) = std::env::var("LLM_ROUTER_SESSION_TTL").ok().filter(|s| !s.is_empty()) {
        let secs: u64 = ttl.parse().context("LLM_ROUTER_SESSION_TTL must be a number of seconds")?;
        anyhow::ensure!(secs > 0, "LLM_ROUTER_SESSION_TTL must be at least 1 second");
        api.session_ttl = Duration::from_secs(secs);
    }
    api.gateway_applied = Some(gw.control_applied());
    // Admins' on-demand checks use the health worker's prober and settings, whether or not the
    // scheduled probes run in this process.
    let checks_master = crate::master_key::load(&cfg.data_dir)?;
    api.health_checks = Some(
        workers::health::Prober::connect(cfg.connect_timeout, cfg.egress.clone(), cfg.health.clone(), checks_master)
            .context("Failed to build the health checks' HTTP client")?,
    );
    Ok(web::WebState::with_admin(store.clone(), log.clone(), instance, api).await)
}

/// Runs the projections, and the health checks when enabled, until the returned sender says stop.
fn spawn_workers(
    cfg: &Config,
    store: &projections::ReadStore,
    log: &EventLog,
    instance: &str,
) -> anyhow::Result<(tokio::sync::watch::Sender<bool>, tokio::task::JoinHandle<()>)> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let health = if cfg.health.enabled {
        let master = crate::master_key::load(&cfg.data_dir)?;
        let prober =
            workers::health::Prober::connect(cfg.connect_timeout, cfg.egress.clone(), cfg.health.clone(), master)
                .context("Failed to build the health checks' HTTP client")?;
        let task = workers::health::run(prober, log.clone(), Some(store.clone()), instance.to_owned(), stopped.clone());
        Some(tokio::spawn(task))
    } else {
        None
    };
    let pool_sync = match &cfg.proxy_pool {
        Some(sync) => {
            let master = crate::master_key::load(&cfg.data_dir)?;
            let http = adapters::http::client(cfg.connect_timeout, cfg.egress.clone(), egress::Dns::system())
                .context("Failed to build the proxy list's HTTP client")?;
            let admin = crate::admin::admin(log)
                .acting_as("proxy_pool_sync", None)
                .with_egress(cfg.egress.clone(), egress::Dns::system());
            let task = crate::proxy_pool::run(
                sync.clone(),
                admin,
                master,
                http,
                cfg.egress.clone(),
                store.clone(),
                stopped.clone(),
            );
            Some(tokio::spawn(task))
        }
        None => None,
    };
    let projections =
        tokio::spawn(workers::run_projections(store.clone(), log.clone(), stopped, cfg.request_log_retention));
    let task = tokio::spawn(async move {
        let _ = projections.await;
        for h in [health, pool_sync].into_iter().flatten() {
            let _ = h.await;
        }
    });
    Ok((stop, task))
}

async fn drain(log: &EventLog) {
    if let Err(e) = log.flush(SHUTDOWN_FLUSH).await {
        tracing::warn!(error = %e, "Spool not fully drained at shutdown; it is published on the next start.");
    }
}

/// `serve`: gateway, projections and read routes in one process.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let log = open_service_log(&cfg).await?;
    if let Err(e) = bootstrap(&cfg, &log).await {
        // With NATS down at start the gateway still comes up (spooling, health 503); the
        // first-start key is created on a later start instead.
        anyhow::ensure!(cfg.nats_url.is_some(), e);
        tracing::warn!(error = %e, "First-start setup skipped: the event log is not reachable.");
    }
    let store = open_store(&cfg).await?;
    let instance = instance_name();
    builtin_prices(&log, &instance).await;
    let (stop, workers) = spawn_workers(&cfg, &store, &log, &instance)?;
    let retention = spawn_retention(&cfg, &log);
    let gw = gateway::Gateway::start(log.clone(), gateway_config(&cfg, &instance)?).await?;
    let web = web_state(&cfg, &store, &log, &instance, &gw).await?;
    let views = [Some(gw.control_applied()), web.control_applied()].into_iter().flatten().collect();
    crate::applied::listen(&cfg.data_dir, views).await;
    let app = gw.router().merge(web::router(web)).fallback(gateway::unknown_route);
    let served = listen_and_serve(&cfg, app).await;
    if let Some(r) = retention {
        r.abort();
    }
    let _ = stop.send(true);
    let _ = workers.await;
    drain(&log).await;
    store.close().await;
    served
}

/// `gateway`: the hot path, plus the read routes when a database is configured.
pub async fn gateway(cfg: Config) -> anyhow::Result<()> {
    let log = open_service_log(&cfg).await?;
    let instance = instance_name();
    builtin_prices(&log, &instance).await;
    let gw = gateway::Gateway::start(log.clone(), gateway_config(&cfg, &instance)?).await?;
    let mut app = gw.router();
    let mut views = vec![gw.control_applied()];
    let store = match &cfg.database_url {
        Some(_) => Some(open_store(&cfg).await?),
        None => None,
    };
    if let Some(store) = &store {
        let web = web_state(&cfg, store, &log, &instance, &gw).await?;
        views.extend(web.control_applied());
        app = app.merge(web::router(web));
    } else {
        // Without a read store the gateway still answers health checks: the log and whether the
        // in-memory control state is following it.
        let (log, gw) = (log.clone(), gw.clone());
        app = app.route(
            "/api/health",
            axum::routing::get(move || {
                let (log, gw) = (log.clone(), gw.clone());
                async move {
                    let health = log.health().await;
                    let ok = health.reachable && gw.is_ready();
                    let body = serde_json::json!({
                        "status": if ok { "ok" } else { "degraded" },
                        "log": health,
                        "control_seq": gw.control_seq(),
                        "control_following": gw.is_ready(),
                    });
                    let status =
                        if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
                    (status, axum::Json(body))
                }
            }),
        );
    }
    crate::applied::listen(&cfg.data_dir, views).await;
    let app = app.fallback(gateway::unknown_route);
    let retention = spawn_retention(&cfg, &log);
    let served = listen_and_serve(&cfg, app).await;
    if let Some(r) = retention {
        r.abort();
    }
    drain(&log).await;
    served
}

/// `worker`: the projections alone.
pub async fn worker(cfg: Config) -> anyhow::Result<()> {
    let log = open_service_log(&cfg).await?;
    let store = open_store(&cfg).await?;
    let (stop, workers) = spawn_workers(&cfg, &store, &log, &instance_name())?;
    tracing::info!("Workers running.");
    shutdown_signal().await;
    let _ = stop.send(true);
    let _ = workers.await;
    store.close().await;
    Ok(())
}

/// `projections rebuild NAME`, with a progress bar on a terminal.
pub async fn rebuild(cfg: Config, name: &str) -> anyhow::Result<()> {
    let projection: projections::Projection = name.parse()?;
    let log = open_log(&cfg).await?;
    let store = open_store(&cfg).await?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40.cyan/blue}] {pos}/{len} events ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("Rebuilding {name}"));
    let outcome = projections::rebuild(&store, &log, projection, |done, target| {
        bar.set_length(target);
        bar.set_position(done.min(target));
    })
    .await;
    bar.finish_and_clear();
    let outcome = outcome?;
    say(&format!(
        "Rebuilt {name} up to sequence {} as generation {} (replaced generation {}).",
        outcome.target_seq, outcome.generation, outcome.replaced
    ));
    store.close().await;
    Ok(())
}

/// `reports usage`: written to stdout as CSV or JSON, byte-for-byte deterministic.
/// How `reports usage` renders its report.
pub struct ReportOptions {
    /// `csv` or `json`.
    pub format: String,
    /// `day`, `week`, `month`, `model` or `key`.
    pub group_by: String,
    /// Prefix CSV with a UTF-8 byte order mark.
    pub bom: bool,
    /// The billing sequence to report as of.
    pub as_of: Option<u64>,
}

/// `reports billing`: every tenant (or one), each in its own zone, in one snapshot.
pub async fn report_billing(
    cfg: Config,
    tenant: Option<&str>,
    from: &str,
    to: &str,
    opts: &ReportOptions,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let parse = |flag: &str, day: &str| {
        chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| anyhow::anyhow!("{flag} {day}: {e}"))
    };
    let (from, to) = (parse("--from", from)?, parse("--to", to)?);
    anyhow::ensure!(from <= to, "--from must not be after --to");
    let period = match opts.group_by.as_str() {
        "day" => projections::read::GroupBy::Day,
        "week" => projections::read::GroupBy::Week,
        _ => projections::read::GroupBy::Month,
    };
    let store = open_store(&cfg).await?;
    let mut tenants = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = projections::read::tenants_page(&store, tenant, after.as_deref(), 500).await?;
        after = page.last().map(|t| t.name.clone());
        for t in page {
            let zone: chrono_tz::Tz = match t.time_zone.as_deref() {
                None => chrono_tz::UTC,
                Some(z) => {
                    z.parse().map_err(|_| anyhow::anyhow!("the time zone {z:?} of {} is not known here", t.name))?
                }
            };
            tenants.push((t, zone));
        }
        if after.is_none() || tenant.is_some() {
            break;
        }
    }
    if let Some(t) = tenant {
        anyhow::ensure!(!tenants.is_empty(), "no tenant {t}");
    }
    let report = projections::read::billing_report(&store, &tenants, period, from, to, opts.as_of).await?;
    let mut bytes = if opts.format == "json" { report.to_json() } else { report.to_csv() };
    if opts.format != "json" && opts.bom {
        bytes.splice(0..0, [0xEF, 0xBB, 0xBF]);
    }
    std::io::stdout().write_all(&bytes)?;
    store.close().await;
    Ok(())
}

pub async fn report_usage(cfg: Config, tenant: &str, from: &str, to: &str, opts: &ReportOptions) -> anyhow::Result<()> {
    use std::io::Write as _;
    let tenant = schemas::TenantId::parse(tenant)?;
    let mut days = Vec::new();
    for (flag, day) in [("--from", from), ("--to", to)] {
        projections::Day::parse(day).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
        days.push(chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|e| anyhow::anyhow!("{flag} {e}"))?);
    }
    let (from, to) = (days[0], days[1]);
    anyhow::ensure!(from <= to, "--from must not be after --to");
    let group_by = projections::read::GroupBy::parse(&opts.group_by)
        .ok_or_else(|| anyhow::anyhow!("--group-by must be day, week, month, model or key"))?;
    let store = open_store(&cfg).await?;
    let record = projections::read::tenants_page(&store, Some(tenant.as_str()), None, 1)
        .await?
        .into_iter()
        .find(|t| t.name == tenant.as_str())
        .ok_or_else(|| anyhow::anyhow!("no tenant {tenant}"))?;
    let zone: chrono_tz::Tz = match record.time_zone.as_deref() {
        None => chrono_tz::UTC,
        Some(z) => z.parse().map_err(|_| anyhow::anyhow!("the tenant's time zone {z:?} is not known here"))?,
    };
    let report =
        projections::read::report_in_zone(&store, tenant.as_str(), zone, group_by, from, to, opts.as_of).await?;
    let mut bytes = if opts.format == "json" { report.to_json() } else { report.to_csv() };
    if opts.format != "json" && opts.bom {
        bytes.splice(0..0, [0xEF, 0xBB, 0xBF]);
    }
    std::io::stdout().write_all(&bytes)?;
    store.close().await;
    Ok(())
}
