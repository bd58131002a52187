//! One typed configuration tree: defaults → `llm-router.toml` → environment → command-line flags.
//! Unknown settings in the file are rejected with a message naming them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

/// Settings read from the config file; every field optional so the file may name only a few.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Where the embedded log, read models, spool and master key file live.
    pub data_dir: Option<PathBuf>,
    /// Address the HTTP server listens on.
    pub listen: Option<String>,
    /// NATS server URL; when set the event log is JetStream.
    pub nats_url: Option<String>,
    /// Postgres URL; when set the read models live in Postgres.
    pub database_url: Option<String>,
    /// Largest accepted request body, in bytes.
    pub body_limit_bytes: Option<usize>,
    /// Upstream timeouts.
    #[serde(default)]
    pub upstream: UpstreamFile,
    /// JetStream settings.
    #[serde(default)]
    pub jetstream: JetStreamFile,
    /// HTTP server limits.
    #[serde(default)]
    pub server: ServerFile,
    /// The failed-authentication throttle.
    #[serde(default)]
    pub auth: AuthFile,
    /// How long logs are kept.
    #[serde(default)]
    pub retention: RetentionFile,
    /// Request limits.
    #[serde(default)]
    pub limits: LimitsFile,
    /// Security settings.
    #[serde(default)]
    pub security: SecurityFile,
    /// Upstream keys' circuit breaker and rate-limit rests.
    #[serde(default)]
    pub breaker: BreakerFile,
    /// Health checks of upstream keys.
    #[serde(default)]
    pub health: HealthFile,
    /// The `PROXY_POOL_URL` sync.
    #[serde(default)]
    pub proxy_pool: ProxyPoolFile,
}

/// `[proxy_pool]` in the config file (`PROXY_POOL_*` in the environment override each key).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPoolFile {
    /// Whether a pool is synced from `url`.
    pub enabled: Option<bool>,
    /// The http(s) URL of the proxy list.
    pub url: Option<String>,
    /// The pool the listed proxies join.
    pub name: Option<String>,
    /// Seconds between two fetches.
    pub interval: Option<u64>,
}

/// `[health]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    /// Whether keys are probed.
    pub enabled: Option<bool>,
    /// Seconds between two probes of a key.
    pub interval: Option<u64>,
    /// Seconds one try of a probe may take.
    pub timeout: Option<u64>,
    /// Retries inside one probe.
    pub retry_count: Option<u32>,
    /// Failed probes in a row that disable a key or a proxy.
    pub failure_threshold: Option<u32>,
    /// The URL proxies are probed against (`off` turns proxy probes off).
    pub proxy_target: Option<String>,
}

/// `[breaker]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerFile {
    /// Failures among a key's last `window` requests that open its breaker.
    pub failures: Option<u32>,
    /// How many of a key's last requests are counted (1 to 64).
    pub window: Option<u32>,
    /// How long the breaker stays open the first time (doubling while it reopens).
    pub cooldown_ms: Option<u64>,
    /// The longest it stays open.
    pub max_cooldown_ms: Option<u64>,
    /// How long a rate-limited key rests when the vendor sent no `Retry-After`.
    pub rate_limit_cooldown_ms: Option<u64>,
}

/// `[limits]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// Largest `max_tokens` (and `max_completion_tokens`, `maxOutputTokens`) accepted.
    pub max_output_tokens: Option<u64>,
    /// Most `messages` (Gemini: `contents`) in one request.
    pub max_messages: Option<u64>,
}

/// `[server]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    /// Time a client has to send its request headers.
    pub header_read_timeout_ms: Option<u64>,
    /// A connection with no traffic for this long is closed once its request (if any) is done.
    pub idle_timeout_ms: Option<u64>,
    /// Time a client has to send its whole request body.
    pub body_read_timeout_ms: Option<u64>,
    /// Open client connections at most.
    pub max_connections: Option<usize>,
}

/// `[auth]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Failed authentications per client address and window before 429.
    pub failure_limit: Option<u32>,
    /// The window, in seconds.
    pub failure_window_secs: Option<u64>,
}

/// `[retention]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Days the request log (`LLMR_REQUESTS`) is kept.
    pub request_log_days: Option<u64>,
}

/// `[security]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    /// CIDRs (or addresses) that tenant-set URLs and alert destinations may reach although they
    /// are private or loopback.
    pub allow_private_networks: Option<Vec<String>>,
}

/// The smallest `max_answer_bytes` accepted: 64 KiB (a chat answer of a few thousand tokens).
const MIN_ANSWER_BYTES: usize = 64 * 1024;
/// The largest `max_answer_bytes` accepted: 1 GiB, beyond which one answer could take the
/// process's memory.
const MAX_ANSWER_BYTES: usize = 1024 * 1024 * 1024;

/// `[upstream]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    /// TCP/TLS connect timeout.
    pub connect_timeout_ms: Option<u64>,
    /// Time allowed until the upstream's first byte.
    pub first_byte_timeout_ms: Option<u64>,
    /// Time allowed between two stream chunks.
    pub idle_timeout_ms: Option<u64>,
    /// Upstream attempts per request (the first included), each on another channel.
    pub max_attempts: Option<u32>,
    /// How long an upstream is still read after its client left, to learn the usage.
    pub drain_timeout_ms: Option<u64>,
    /// How many upstream bytes are read at most after the client left.
    pub drain_max_bytes: Option<usize>,
    /// No retry starts once a request is this old.
    pub retry_time_budget_ms: Option<u64>,
    /// Retries a gateway may make, as a share of its requests (per 10 s).
    pub retry_budget_ratio: Option<f64>,
    /// Retries a gateway may make per 10 s whatever its traffic.
    pub retry_budget_min: Option<u64>,
    /// Longest time from a request's arrival until its upstream answer or stream is complete.
    pub max_stream_duration_ms: Option<u64>,
    /// Largest non-stream upstream answer read.
    pub max_answer_bytes: Option<usize>,
}

/// `[jetstream]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JetStreamFile {
    /// Stream replicas (3 in production clusters).
    pub replicas: Option<usize>,
    /// Unpublished events the spool may hold before billable requests get 503.
    pub max_spool: Option<u64>,
}

/// Overrides given on the command line.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Data directory (embedded log, read models, spool, master key file).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// NATS URL: use JetStream as the event log.
    #[arg(long, global = true)]
    pub nats_url: Option<String>,
    /// Postgres URL: keep read models in Postgres.
    #[arg(long, global = true)]
    pub database_url: Option<String>,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Listen address.
    pub listen: SocketAddr,
    /// NATS URL, for the JetStream backend.
    pub nats_url: Option<String>,
    /// Read-model database URL (Postgres), else SQLite under `data_dir`.
    pub database_url: Option<String>,
    /// Request body limit.
    pub body_limit_bytes: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream first-byte timeout.
    pub first_byte_timeout: Duration,
    /// Upstream idle timeout between chunks.
    pub idle_timeout: Duration,
    /// Upstream attempts per request.
    pub max_attempts: u32,
    /// Draining after a client left: time.
    pub drain_timeout: Duration,
    /// Draining after a client left: bytes.
    pub drain_max_bytes: usize,
    /// Longest time until an upstream answer or stream is complete.
    pub max_stream_duration: Duration,
    /// Largest non-stream upstream answer.
    pub max_answer_bytes: usize,
    /// JetStream replicas.
    pub replicas: usize,
    /// Spool capacity.
    pub max_spool: u64,
    /// HTTP server limits (the connection cap before it is fitted to the file limit).
    pub server: gateway::server::ServerConfig,
    /// Failed authentications per client address and window before 429.
    pub auth_failure_limit: u32,
    /// The window of `auth_failure_limit`.
    pub auth_failure_window: Duration,
    /// How long request logs are kept (billing and control events are kept forever).
    pub request_log_retention: Duration,
    /// Request limits.
    pub limits: gateway::limits::Limits,
    /// The outbound address policy, with `allow_private_networks`.
    pub egress: egress::Policy,
    /// Upstream keys' circuit breaker and rate-limit rests.
    pub breaker: gateway::health::BreakerConfig,
    /// No retry starts once a request is this old.
    pub retry_time_budget: Duration,
    /// Retries as a share of requests.
    pub retry_budget_ratio: f64,
    /// Retries per window whatever the traffic.
    pub retry_budget_min: u64,
    /// Health checks of upstream keys.
    pub health: workers::health::HealthConfig,
    /// The `PROXY_POOL_URL` sync, when `PROXY_POOL_ENABLED`.
    pub proxy_pool: Option<crate::proxy_pool::PoolSyncConfig>,
}

impl Config {
    /// Resolves the configuration. `file` is the `--config` path; without it `./llm-router.toml`
    /// is read when present.
    pub fn load(file: Option<&Path>, flags: &Overrides, listen_flag: Option<&str>) -> anyhow::Result<Config> {
        let file_cfg = match file {
            Some(p) => read_file(p)?,
            None if Path::new("llm-router.toml").exists() => read_file(Path::new("llm-router.toml"))?,
            None => FileConfig::default(),
        };
        Self::resolve(file_cfg, &|k| std::env::var(k).ok().filter(|v| !v.is_empty()), flags, listen_flag)
    }

    fn resolve(
        f: FileConfig,
        env: &dyn Fn(&str) -> Option<String>,
        flags: &Overrides,
        listen_flag: Option<&str>,
    ) -> anyhow::Result<Config> {
        let data_dir = flags
            .data_dir
            .clone()
            .or_else(|| env("LLM_ROUTER_DATA_DIR").map(PathBuf::from))
            .or(f.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let listen = match (listen_flag, env("LLM_ROUTER_LISTEN"), env("SERVER_PORT"), f.listen) {
            (Some(l), _, _, _) => l.to_owned(),
            (None, Some(l), _, _) => l,
            (None, None, Some(port), _) => format!("0.0.0.0:{port}"),
            (None, None, None, Some(l)) => l,
            (None, None, None, None) => "0.0.0.0:8080".to_owned(),
        };
        let listen: SocketAddr =
            listen.parse().with_context(|| format!("listen: {listen:?} is not an address such as 0.0.0.0:8080"))?;
        let num = |name: &str, v: Option<String>| -> anyhow::Result<Option<u64>> {
            v.map(|s| s.parse::<u64>().with_context(|| format!("{name}: {s:?} is not a whole number"))).transpose()
        };
        let body_limit_bytes = num("LLM_ROUTER_BODY_LIMIT_BYTES", env("LLM_ROUTER_BODY_LIMIT_BYTES"))?
            .map(|v| v as usize)
            .or(f.body_limit_bytes)
            .unwrap_or(gateway::DEFAULT_BODY_LIMIT_BYTES);
        anyhow::ensure!(body_limit_bytes >= 1024, "body_limit_bytes: must be at least 1024");
        let allow_private = match env("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS") {
            Some(list) => egress::Policy::parse_networks(list.split(','))
                .map_err(|e| anyhow::anyhow!("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS: {e}"))?,
            None => {
                egress::Policy::parse_networks(f.security.allow_private_networks.iter().flatten().map(String::as_str))
                    .map_err(|e| anyhow::anyhow!("[security] allow_private_networks: {e}"))?
            }
        };
        let ms = |env_name: &str, file: Option<u64>, default: u64| -> anyhow::Result<Duration> {
            Ok(Duration::from_millis(num(env_name, env(env_name))?.or(file).unwrap_or(default)))
        };
        let server = {
            let d = gateway::server::ServerConfig::default();
            let s = &f.server;
            let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
            gateway::server::ServerConfig {
                header_read_timeout: ms(
                    "LLM_ROUTER_HEADER_READ_TIMEOUT_MS",
                    s.header_read_timeout_ms,
                    millis(d.header_read_timeout),
                )?,
                idle_timeout: ms("LLM_ROUTER_KEEP_ALIVE_TIMEOUT_MS", s.idle_timeout_ms, millis(d.idle_timeout))?,
                body_read_timeout: ms(
                    "LLM_ROUTER_BODY_READ_TIMEOUT_MS",
                    s.body_read_timeout_ms,
                    millis(d.body_read_timeout),
                )?,
                max_connections: num("LLM_ROUTER_MAX_CONNECTIONS", env("LLM_ROUTER_MAX_CONNECTIONS"))?
                    .map(|v| v as usize)
                    .or(s.max_connections)
                    .unwrap_or(d.max_connections),
            }
        };
        for (name, d) in [
            ("header_read_timeout_ms", server.header_read_timeout),
            ("idle_timeout_ms", server.idle_timeout),
            ("body_read_timeout_ms", server.body_read_timeout),
        ] {
            anyhow::ensure!(!d.is_zero(), "[server] {name}: must be more than 0");
        }
        anyhow::ensure!(server.max_connections >= 1, "[server] max_connections: must be at least 1");
        let auth_failure_limit = num("LLM_ROUTER_AUTH_FAILURE_LIMIT", env("LLM_ROUTER_AUTH_FAILURE_LIMIT"))?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
            .or(f.auth.failure_limit)
            .unwrap_or(gateway::GatewayConfig::DEFAULT_AUTH_FAILURE_LIMIT);
        anyhow::ensure!(auth_failure_limit >= 1, "[auth] failure_limit: must be at least 1");
        let auth_failure_window = Duration::from_secs(
            num("LLM_ROUTER_AUTH_FAILURE_WINDOW_SECS", env("LLM_ROUTER_AUTH_FAILURE_WINDOW_SECS"))?
                .or(f.auth.failure_window_secs)
                .unwrap_or(gateway::GatewayConfig::DEFAULT_AUTH_FAILURE_WINDOW.as_secs()),
        );
        anyhow::ensure!(!auth_failure_window.is_zero(), "[auth] failure_window_secs: must be more than 0");
        let request_log_days =
            num("LLM_ROUTER_REQUEST_LOG_RETENTION_DAYS", env("LLM_ROUTER_REQUEST_LOG_RETENTION_DAYS"))?
                .or(f.retention.request_log_days)
                .unwrap_or(nats::DEFAULT_REQUESTS_MAX_AGE.as_secs() / (24 * 3600));
        anyhow::ensure!(request_log_days >= 1, "[retention] request_log_days: must be at least 1");
        let max_output_tokens = num("LLM_ROUTER_MAX_OUTPUT_TOKENS", env("LLM_ROUTER_MAX_OUTPUT_TOKENS"))?
            .or(f.limits.max_output_tokens)
            .unwrap_or(gateway::limits::DEFAULT_MAX_OUTPUT_TOKENS);
        anyhow::ensure!(max_output_tokens >= 1, "max_output_tokens: must be at least 1");
        let max_messages = num("LLM_ROUTER_MAX_MESSAGES", env("LLM_ROUTER_MAX_MESSAGES"))?
            .or(f.limits.max_messages)
            .map_or(gateway::limits::DEFAULT_MAX_MESSAGES, |n| usize::try_from(n).unwrap_or(usize::MAX));
        anyhow::ensure!(max_messages >= 1, "max_messages: must be at least 1");
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let max_attempts = num("LLM_ROUTER_MAX_ATTEMPTS", env("LLM_ROUTER_MAX_ATTEMPTS"))?
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
            .or(f.upstream.max_attempts)
            .unwrap_or(gateway::config::DEFAULT_MAX_ATTEMPTS);
        anyhow::ensure!(
            (1..=gateway::config::MAX_ATTEMPTS_LIMIT).contains(&max_attempts),
            "[upstream] max_attempts: must be 1 to {}",
            gateway::config::MAX_ATTEMPTS_LIMIT
        );
        let drain_max_bytes = num("LLM_ROUTER_DRAIN_MAX_BYTES", env("LLM_ROUTER_DRAIN_MAX_BYTES"))?
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
            .or(f.upstream.drain_max_bytes)
            .unwrap_or(gateway::config::DEFAULT_DRAIN_MAX_BYTES);
        let breaker = {
            let d = gateway::health::BreakerConfig::default();
            let b = &f.breaker;
            let count = |name: &str, file: Option<u32>, default: u32| -> anyhow::Result<u32> {
                Ok(num(name, env(name))?.map_or(file.unwrap_or(default), |v| u32::try_from(v).unwrap_or(u32::MAX)))
            };
            let breaker = gateway::health::BreakerConfig {
                failures: count("LLM_ROUTER_BREAKER_FAILURES", b.failures, d.failures)?,
                window: count("LLM_ROUTER_BREAKER_WINDOW", b.window, d.window)?,
                cooldown: ms("LLM_ROUTER_BREAKER_COOLDOWN_MS", b.cooldown_ms, millis(d.cooldown))?,
                max_cooldown: ms("LLM_ROUTER_BREAKER_MAX_COOLDOWN_MS", b.max_cooldown_ms, millis(d.max_cooldown))?,
                rate_limit_cooldown: ms(
                    "LLM_ROUTER_RATE_LIMIT_COOLDOWN_MS",
                    b.rate_limit_cooldown_ms,
                    millis(d.rate_limit_cooldown),
                )?,
                max_rate_limit_cooldown: d.max_rate_limit_cooldown,
            };
            anyhow::ensure!(
                (1..=gateway::health::MAX_BREAKER_WINDOW).contains(&breaker.window),
                "[breaker] window: must be 1 to {}",
                gateway::health::MAX_BREAKER_WINDOW
            );
            anyhow::ensure!(
                (1..=breaker.window).contains(&breaker.failures),
                "[breaker] failures: must be 1 to the window ({})",
                breaker.window
            );
            anyhow::ensure!(!breaker.cooldown.is_zero(), "[breaker] cooldown_ms: must be more than 0");
            breaker
        };
        let retry_budget_ratio = match env("LLM_ROUTER_RETRY_BUDGET_RATIO") {
            Some(v) => {
                v.parse::<f64>().with_context(|| format!("LLM_ROUTER_RETRY_BUDGET_RATIO: {v:?} is not a number"))?
            }
            None => f.upstream.retry_budget_ratio.unwrap_or(gateway::health::DEFAULT_RETRY_BUDGET_RATIO),
        };
        anyhow::ensure!((0.0..=1.0).contains(&retry_budget_ratio), "[upstream] retry_budget_ratio: must be 0 to 1");
        let retry_budget_min = num("LLM_ROUTER_RETRY_BUDGET_MIN", env("LLM_ROUTER_RETRY_BUDGET_MIN"))?
            .or(f.upstream.retry_budget_min)
            .unwrap_or(gateway::health::DEFAULT_RETRY_BUDGET_MIN);
        let retry_time_budget = ms(
            "LLM_ROUTER_RETRY_TIME_BUDGET_MS",
            f.upstream.retry_time_budget_ms,
            millis(gateway::config::DEFAULT_RETRY_TIME_BUDGET),
        )?;
        let max_stream_duration = ms(
            "LLM_ROUTER_MAX_STREAM_DURATION_MS",
            f.upstream.max_stream_duration_ms,
            millis(gateway::config::DEFAULT_MAX_STREAM_DURATION),
        )?;
        anyhow::ensure!(
            max_stream_duration >= Duration::from_secs(1),
            "[upstream] max_stream_duration_ms: must be at least 1000"
        );
        let max_answer_bytes = num("LLM_ROUTER_MAX_ANSWER_BYTES", env("LLM_ROUTER_MAX_ANSWER_BYTES"))?
            .map(|v| usize::try_from(v).unwrap_or(usize::MAX))
            .or(f.upstream.max_answer_bytes)
            .unwrap_or(gateway::config::DEFAULT_MAX_ANSWER_BYTES);
        anyhow::ensure!(
            (MIN_ANSWER_BYTES..=MAX_ANSWER_BYTES).contains(&max_answer_bytes),
            "[upstream] max_answer_bytes: must be {MIN_ANSWER_BYTES} to {MAX_ANSWER_BYTES}"
        );
        let health = {
            let d = workers::health::HealthConfig::default();
            let h = &f.health;
            let enabled = match env("HEALTH_CHECK_ENABLED") {
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    _ => anyhow::bail!("HEALTH_CHECK_ENABLED: {v:?} is not true or false"),
                },
                None => h.enabled.unwrap_or(d.enabled),
            };
            let secs = |name: &str, file: Option<u64>, default: Duration| -> anyhow::Result<Duration> {
                Ok(num(name, env(name))?.or(file).map_or(default, Duration::from_secs))
            };
            let count = |name: &str, file: Option<u32>, default: u32| -> anyhow::Result<u32> {
                Ok(num(name, env(name))?.map_or(file.unwrap_or(default), |v| u32::try_from(v).unwrap_or(u32::MAX)))
            };
            let health = workers::health::HealthConfig {
                enabled,
                interval: secs("HEALTH_CHECK_INTERVAL", h.interval, d.interval)?,
                timeout: secs("HEALTH_CHECK_TIMEOUT", h.timeout, d.timeout)?,
                retry_count: count("HEALTH_CHECK_RETRY_COUNT", h.retry_count, d.retry_count)?,
                failure_threshold: count("HEALTH_CHECK_FAILURE_THRESHOLD", h.failure_threshold, d.failure_threshold)?,
                proxy_target: match env("HEALTH_CHECK_PROXY_TARGET").or_else(|| h.proxy_target.clone()) {
                    None => d.proxy_target.clone(),
                    Some(t) if t.trim().is_empty() || t.trim().eq_ignore_ascii_case("off") => None,
                    Some(t) => Some(t.trim().to_owned()),
                },
            };
            if let Some(target) = &health.proxy_target {
                // Judged like an alert destination: the router sends probes on its own.
                let policy = egress::Policy::new(allow_private.clone());
                if let Err(e) = policy.check_url(target, egress::Trust::Alert, true) {
                    anyhow::bail!("[health] proxy_target (HEALTH_CHECK_PROXY_TARGET): {e}");
                }
            }
            anyhow::ensure!(!health.interval.is_zero(), "[health] interval: must be at least 1");
            anyhow::ensure!(!health.timeout.is_zero(), "[health] timeout: must be at least 1");
            anyhow::ensure!(health.retry_count <= 10, "[health] retry_count: must be 0 to 10");
            anyhow::ensure!(
                (1..=1000).contains(&health.failure_threshold),
                "[health] failure_threshold: must be 1 to 1000"
            );
            health
        };
        let jetstream_defaults = nats::JetStreamOptions::default();
        Ok(Config {
            data_dir,
            listen,
            nats_url: flags.nats_url.clone().or_else(|| env("NATS_URL")).or(f.nats_url),
            database_url: flags.database_url.clone().or_else(|| env("DATABASE_URL")).or(f.database_url),
            body_limit_bytes,
            connect_timeout: ms(
                "LLM_ROUTER_CONNECT_TIMEOUT_MS",
                f.upstream.connect_timeout_ms,
                millis(gateway::config::DEFAULT_CONNECT_TIMEOUT),
            )?,
            first_byte_timeout: ms(
                "LLM_ROUTER_FIRST_BYTE_TIMEOUT_MS",
                f.upstream.first_byte_timeout_ms,
                millis(gateway::config::DEFAULT_FIRST_BYTE_TIMEOUT),
            )?,
            idle_timeout: ms(
                "LLM_ROUTER_IDLE_TIMEOUT_MS",
                f.upstream.idle_timeout_ms,
                millis(gateway::config::DEFAULT_IDLE_TIMEOUT),
            )?,
            max_attempts,
            drain_timeout: ms(
                "LLM_ROUTER_DRAIN_TIMEOUT_MS",
                f.upstream.drain_timeout_ms,
                millis(gateway::config::DEFAULT_DRAIN_TIMEOUT),
            )?,
            drain_max_bytes,
            max_stream_duration,
            max_answer_bytes,
            replicas: f.jetstream.replicas.unwrap_or(jetstream_defaults.replicas),
            max_spool: f.jetstream.max_spool.unwrap_or(jetstream_defaults.max_spool),
            server,
            auth_failure_limit,
            auth_failure_window,
            request_log_retention: Duration::from_secs(request_log_days.saturating_mul(24 * 3600)),
            limits: gateway::limits::Limits { max_output_tokens, max_messages, max_n: gateway::limits::MAX_N },
            egress: egress::Policy::new(allow_private),
            breaker,
            retry_time_budget,
            retry_budget_ratio,
            retry_budget_min,
            health,
            proxy_pool: crate::proxy_pool::PoolSyncConfig::resolve(&f.proxy_pool, env)?,
        })
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn an_unknown_setting_is_rejected_by_name() {
        let err = toml::from_str::<FileConfig>("listen = \"0.0.0.0:1\"\nlisten_port = 3").err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("listen_port"), "{msg}");
        let nested = toml::from_str::<FileConfig>("[upstream]\nconnect_timeout = 3").err();
        assert!(nested.map(|e| e.to_string()).unwrap_or_default().contains("connect_timeout"));
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str("listen = \"127.0.0.1:1\"\ndata_dir = \"/f\"")?;
        let env = |k: &str| match k {
            "SERVER_PORT" => Some("9000".to_owned()),
            "LLM_ROUTER_DATA_DIR" => Some("/e".to_owned()),
            _ => None,
        };
        let c = Config::resolve(file, &env, &Overrides::default(), None)?;
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.data_dir, PathBuf::from("/e"));
        let flags = Overrides { data_dir: Some("/x".into()), ..Default::default() };
        let c = Config::resolve(FileConfig::default(), &env, &flags, Some("127.0.0.1:7"))?;
        assert_eq!(c.listen.port(), 7);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        Ok(())
    }

    #[test]
    fn defaults_are_the_embedded_single_node() -> anyhow::Result<()> {
        let c = Config::resolve(FileConfig::default(), &no_env, &Overrides::default(), None)?;
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.nats_url.is_none() && c.database_url.is_none());
        assert_eq!(c.body_limit_bytes, 32 * 1024 * 1024);
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.auth_failure_limit, 20);
        assert_eq!(c.request_log_retention, Duration::from_secs(90 * 24 * 3600));
        Ok(())
    }

    #[test]
    fn server_limits_throttle_and_retention_come_from_the_file_and_environment() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str(
            "[server]\nheader_read_timeout_ms = 500\nmax_connections = 8\n[auth]\nfailure_limit = 3\n\
             [retention]\nrequest_log_days = 7",
        )?;
        let env = |k: &str| (k == "LLM_ROUTER_BODY_READ_TIMEOUT_MS").then(|| "1500".to_owned());
        let c = Config::resolve(file, &env, &Overrides::default(), None)?;
        assert_eq!(c.server.header_read_timeout, Duration::from_millis(500));
        assert_eq!(c.server.body_read_timeout, Duration::from_millis(1500));
        assert_eq!(c.server.max_connections, 8);
        assert_eq!(c.auth_failure_limit, 3);
        assert_eq!(c.request_log_retention, Duration::from_secs(7 * 24 * 3600));
        let zero: FileConfig = toml::from_str("[retention]\nrequest_log_days = 0")?;
        let err = Config::resolve(zero, &no_env, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("request_log_days"));
        Ok(())
    }

    #[test]
    fn request_limits_come_from_the_file_and_the_environment_overrides_them() -> anyhow::Result<()> {
        let c = Config::resolve(FileConfig::default(), &no_env, &Overrides::default(), None)?;
        assert_eq!(c.limits, gateway::limits::Limits::default());
        let file: FileConfig = toml::from_str("[limits]\nmax_output_tokens = 4096\nmax_messages = 500")?;
        let env = |k: &str| (k == "LLM_ROUTER_MAX_MESSAGES").then(|| "700".to_owned());
        let c = Config::resolve(file, &env, &Overrides::default(), None)?;
        assert_eq!((c.limits.max_output_tokens, c.limits.max_messages), (4096, 700));
        let zero = |k: &str| (k == "LLM_ROUTER_MAX_OUTPUT_TOKENS").then(|| "0".to_owned());
        let err = Config::resolve(FileConfig::default(), &zero, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("max_output_tokens"));
        Ok(())
    }

    #[test]
    fn allow_private_networks_comes_from_the_file_or_the_environment_and_a_bad_entry_is_named() -> anyhow::Result<()> {
        let file =
            || toml::from_str::<FileConfig>("[security]\nallow_private_networks = [\"10.1.0.0/16\", \"fd00::/8\"]");
        let c = Config::resolve(file()?, &no_env, &Overrides::default(), None)?;
        let nets: Vec<String> = c.egress.allow_private().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["10.1.0.0/16", "fd00::/8"]);
        let env = |k: &str| (k == "LLM_ROUTER_ALLOW_PRIVATE_NETWORKS").then(|| "192.168.7.0/24, 127.0.0.1".to_owned());
        let c = Config::resolve(file()?, &env, &Overrides::default(), None)?;
        let nets: Vec<String> = c.egress.allow_private().iter().map(ToString::to_string).collect();
        assert_eq!(nets, ["192.168.7.0/24", "127.0.0.1/32"], "the environment replaces the file");
        let bad = |k: &str| (k == "LLM_ROUTER_ALLOW_PRIVATE_NETWORKS").then(|| "10.0.0.0/8,intranet".to_owned());
        let err = Config::resolve(FileConfig::default(), &bad, &Overrides::default(), None).err();
        let msg = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("LLM_ROUTER_ALLOW_PRIVATE_NETWORKS") && msg.contains("intranet"), "{msg}");
        let bad_file = toml::from_str::<FileConfig>("[security]\nallow_private_networks = [\"10.0.0.0/40\"]")?;
        let err = Config::resolve(bad_file, &no_env, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("allow_private_networks"));
        Ok(())
    }

    #[test]
    fn the_binarys_defaults_are_the_gateways_own() -> anyhow::Result<()> {
        // One definition of each default: a gateway built from an empty configuration behaves
        // exactly like `GatewayConfig::new`.
        let c = Config::resolve(FileConfig::default(), &no_env, &Overrides::default(), None)?;
        let g = gateway::GatewayConfig::new(schemas::secret::MasterKey::generate(), "t");
        assert_eq!(c.connect_timeout, g.connect_timeout);
        assert_eq!(c.first_byte_timeout, g.first_byte_timeout);
        assert_eq!(c.idle_timeout, g.idle_timeout);
        assert_eq!(c.drain_timeout, g.drain_timeout);
        assert_eq!(c.drain_max_bytes, g.drain_max_bytes);
        assert_eq!(c.max_stream_duration, g.max_stream_duration);
        assert_eq!(c.max_answer_bytes, g.max_answer_bytes);
        assert_eq!(c.max_attempts, g.max_attempts);
        assert_eq!(c.body_limit_bytes, g.body_limit_bytes);
        assert_eq!(c.limits, g.limits);
        assert_eq!(c.auth_failure_limit, g.auth_failure_limit);
        assert_eq!(c.auth_failure_window, g.auth_failure_window);
        assert_eq!(c.breaker, g.breaker);
        assert_eq!(c.retry_time_budget, g.retry_time_budget);
        assert_eq!((c.retry_budget_ratio, c.retry_budget_min), (g.retry_budget_ratio, g.retry_budget_min));
        Ok(())
    }

    #[test]
    fn the_stream_duration_and_answer_size_caps_are_configurable_and_checked() -> anyhow::Result<()> {
        let file: FileConfig =
            toml::from_str("[upstream]\nmax_stream_duration_ms = 90000\nmax_answer_bytes = 1048576")?;
        let c = Config::resolve(file, &no_env, &Overrides::default(), None)?;
        assert_eq!((c.max_stream_duration, c.max_answer_bytes), (Duration::from_secs(90), 1 << 20));
        let env = |k: &str| (k == "LLM_ROUTER_MAX_STREAM_DURATION_MS").then(|| "5000".to_owned());
        let c = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None)?;
        assert_eq!(c.max_stream_duration, Duration::from_secs(5));
        for (k, v, name) in [
            ("LLM_ROUTER_MAX_STREAM_DURATION_MS", "0", "max_stream_duration_ms"),
            ("LLM_ROUTER_MAX_ANSWER_BYTES", "10", "max_answer_bytes"),
            ("LLM_ROUTER_MAX_ANSWER_BYTES", "4294967296", "max_answer_bytes"),
        ] {
            let env = |key: &str| (key == k).then(|| v.to_owned());
            let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
            assert!(err.map(|e| e.to_string()).unwrap_or_default().contains(name), "{k}={v}");
        }
        Ok(())
    }

    #[test]
    fn attempts_and_drain_limits_are_configurable_and_checked() -> anyhow::Result<()> {
        let file: FileConfig =
            toml::from_str("[upstream]\nmax_attempts = 5\ndrain_timeout_ms = 1000\ndrain_max_bytes = 4096")?;
        let c = Config::resolve(file, &no_env, &Overrides::default(), None)?;
        assert_eq!((c.max_attempts, c.drain_timeout, c.drain_max_bytes), (5, Duration::from_secs(1), 4096));
        let env = |k: &str| (k == "LLM_ROUTER_MAX_ATTEMPTS").then(|| "0".to_owned());
        let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("max_attempts"));
        Ok(())
    }

    #[test]
    fn the_breaker_is_configurable_and_checked() -> anyhow::Result<()> {
        let file: FileConfig = toml::from_str("[breaker]\nfailures = 3\nwindow = 10\ncooldown_ms = 5000")?;
        let env = |k: &str| (k == "LLM_ROUTER_RATE_LIMIT_COOLDOWN_MS").then(|| "2500".to_owned());
        let c = Config::resolve(file, &env, &Overrides::default(), None)?;
        assert_eq!((c.breaker.failures, c.breaker.window), (3, 10));
        assert_eq!(
            (c.breaker.cooldown, c.breaker.rate_limit_cooldown),
            (Duration::from_secs(5), Duration::from_millis(2500))
        );
        for (key, value) in [("LLM_ROUTER_BREAKER_WINDOW", "65"), ("LLM_ROUTER_BREAKER_FAILURES", "21")] {
            let env = |k: &str| (k == key).then(|| value.to_owned());
            let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
            assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("[breaker]"), "{key}={value}");
        }
        Ok(())
    }

    #[test]
    fn health_settings_have_the_seed_defaults_and_come_from_the_file_and_the_environment() -> anyhow::Result<()> {
        let c = Config::resolve(FileConfig::default(), &no_env, &Overrides::default(), None)?;
        assert_eq!(c.health, workers::health::HealthConfig::default());
        assert!(c.health.enabled);
        assert_eq!(c.health.interval, Duration::from_secs(60));
        assert_eq!(c.health.timeout, Duration::from_secs(10));
        assert_eq!((c.health.retry_count, c.health.failure_threshold), (3, 3));
        let file: FileConfig = toml::from_str(
            "[health]\nenabled = false\ninterval = 30\ntimeout = 5\nretry_count = 1\nfailure_threshold = 2\n\
             proxy_target = \"https://probe.example/204\"",
        )?;
        let env = |k: &str| match k {
            "HEALTH_CHECK_ENABLED" => Some("true".to_owned()),
            "HEALTH_CHECK_INTERVAL" => Some("15".to_owned()),
            _ => None,
        };
        let c = Config::resolve(file, &env, &Overrides::default(), None)?;
        assert!(c.health.enabled, "the environment overrides the file");
        assert_eq!(c.health.interval, Duration::from_secs(15));
        assert_eq!(c.health.timeout, Duration::from_secs(5));
        assert_eq!((c.health.retry_count, c.health.failure_threshold), (1, 2));
        assert_eq!(c.health.proxy_target.as_deref(), Some("https://probe.example/204"));
        let off = |k: &str| (k == "HEALTH_CHECK_PROXY_TARGET").then(|| "off".to_owned());
        assert_eq!(
            Config::resolve(FileConfig::default(), &off, &Overrides::default(), None)?.health.proxy_target,
            None
        );
        for (key, value) in [
            ("HEALTH_CHECK_ENABLED", "maybe"),
            ("HEALTH_CHECK_INTERVAL", "0"),
            ("HEALTH_CHECK_FAILURE_THRESHOLD", "0"),
            // Loopback outside the allow list, and not a web URL.
            ("HEALTH_CHECK_PROXY_TARGET", "http://127.0.0.1:9/"),
            ("HEALTH_CHECK_PROXY_TARGET", "ftp://probe.example/"),
        ] {
            let env = |k: &str| (k == key).then(|| value.to_owned());
            let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains("HEALTH_CHECK") || msg.contains("[health]"), "{key}={value}: {msg}");
        }
        Ok(())
    }

    #[test]
    fn the_proxy_pool_sync_comes_from_the_file_and_the_environment_overrides_it() -> anyhow::Result<()> {
        let c = Config::resolve(FileConfig::default(), &no_env, &Overrides::default(), None)?;
        assert_eq!(c.proxy_pool, None, "off by default");
        let file = || {
            toml::from_str::<FileConfig>(
                "[proxy_pool]\nenabled = true\nurl = \"https://lists.example/p.txt\"\nname = \"eu\"\ninterval = 60",
            )
        };
        let c = Config::resolve(file()?, &no_env, &Overrides::default(), None)?;
        let sync = c.proxy_pool.context("on from the file")?;
        assert_eq!(
            (sync.url.as_str(), sync.pool.as_str(), sync.interval),
            ("https://lists.example/p.txt", "eu", Duration::from_secs(60))
        );
        let env = |k: &str| match k {
            "PROXY_POOL_NAME" => Some("us".to_owned()),
            "PROXY_POOL_INTERVAL" => Some("30".to_owned()),
            _ => None,
        };
        let sync = Config::resolve(file()?, &env, &Overrides::default(), None)?.proxy_pool.context("on")?;
        assert_eq!((sync.pool.as_str(), sync.interval), ("us", Duration::from_secs(30)));
        let off = |k: &str| (k == "PROXY_POOL_ENABLED").then(|| "false".to_owned());
        assert_eq!(Config::resolve(file()?, &off, &Overrides::default(), None)?.proxy_pool, None);
        for (toml, name) in [
            ("[proxy_pool]\nenabled = true", "[proxy_pool] url"),
            ("[proxy_pool]\nenabled = true\nurl = \"ftp://x\"", "[proxy_pool] url"),
            ("[proxy_pool]\nenabled = true\nurl = \"https://x\"\ninterval = 0", "[proxy_pool] interval"),
            ("[proxy_pool]\nenabled = true\nurl = \"https://x\"\nname = \"a b\"", "[proxy_pool] name"),
        ] {
            let err = Config::resolve(toml::from_str(toml)?, &no_env, &Overrides::default(), None).err();
            let msg = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(msg.contains(name), "{toml}: {msg}");
        }
        let unknown = toml::from_str::<FileConfig>("[proxy_pool]\nlist_url = \"x\"").err();
        assert!(unknown.map(|e| e.to_string()).unwrap_or_default().contains("list_url"));
        Ok(())
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let env = |k: &str| (k == "LLM_ROUTER_BODY_LIMIT_BYTES").then(|| "lots".to_owned());
        let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("LLM_ROUTER_BODY_LIMIT_BYTES"));
    }
}
