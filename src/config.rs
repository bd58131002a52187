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
    /// Security settings.
    #[serde(default)]
    pub security: SecurityFile,
}

/// `[security]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityFile {
    /// CIDRs (or addresses) that tenant-set URLs and alert destinations may reach although they
    /// are private or loopback.
    pub allow_private_networks: Option<Vec<String>>,
}

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
    /// JetStream replicas.
    pub replicas: usize,
    /// Spool capacity.
    pub max_spool: u64,
    /// The outbound address policy, with `allow_private_networks`.
    pub egress: egress::Policy,
}

/// 32 MiB: large enough for vision requests with several base64 images.
const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

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
            .unwrap_or(DEFAULT_BODY_LIMIT);
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
        Ok(Config {
            data_dir,
            listen,
            nats_url: flags.nats_url.clone().or_else(|| env("NATS_URL")).or(f.nats_url),
            database_url: flags.database_url.clone().or_else(|| env("DATABASE_URL")).or(f.database_url),
            body_limit_bytes,
            connect_timeout: ms("LLM_ROUTER_CONNECT_TIMEOUT_MS", f.upstream.connect_timeout_ms, 5_000)?,
            first_byte_timeout: ms("LLM_ROUTER_FIRST_BYTE_TIMEOUT_MS", f.upstream.first_byte_timeout_ms, 120_000)?,
            idle_timeout: ms("LLM_ROUTER_IDLE_TIMEOUT_MS", f.upstream.idle_timeout_ms, 60_000)?,
            replicas: f.jetstream.replicas.unwrap_or(1),
            max_spool: f.jetstream.max_spool.unwrap_or(1_000_000),
            egress: egress::Policy::new(allow_private),
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
    fn a_bad_value_names_its_setting() {
        let env = |k: &str| (k == "LLM_ROUTER_BODY_LIMIT_BYTES").then(|| "lots".to_owned());
        let err = Config::resolve(FileConfig::default(), &env, &Overrides::default(), None).err();
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("LLM_ROUTER_BODY_LIMIT_BYTES"));
    }
}
