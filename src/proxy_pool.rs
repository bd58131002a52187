//! The `PROXY_POOL_URL` sync: with `PROXY_POOL_ENABLED`, a task fetches a list of proxies (one
//! URL per line, or a JSON array) every `PROXY_POOL_INTERVAL` seconds and makes the synced
//! members of pool `PROXY_POOL_NAME` match it through `control::Admin::sync_pool` (`proxy.added`
//! and `proxy.removed` events, so every gateway follows). The fetch goes out under the outbound
//! address policy like every other connection; the list is bounded in size and entries.
//!
//! One process of a cluster syncs: every `serve` and `worker` with the sync enabled runs the
//! task, but a round runs only while the task holds the read store's `proxy_pool_sync` lease
//! (`projections::Lease`: a Postgres advisory lock on its own session, freed when that process
//! dies; in-process on SQLite, where one process owns the store). The others wait and take over
//! at their next round once it is free.

use std::time::Duration;

use anyhow::Context as _;

/// The sync's settings: `[proxy_pool]` in the config file, each key overridden by its
/// `PROXY_POOL_*` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSyncConfig {
    /// Where the list is.
    pub url: String,
    /// The pool its proxies join.
    pub pool: String,
    /// Time between two fetches.
    pub interval: Duration,
}

/// The pool synced proxies join when `PROXY_POOL_NAME` is not set.
pub const DEFAULT_POOL: &str = "default";
/// Five minutes between fetches: a provider's list changes in minutes, and each change is a
/// control event every gateway applies.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(300);
/// The largest list read (256 proxies of a long URL each fit many times over).
const MAX_LIST_BYTES: usize = 1024 * 1024;
/// One fetch may take this long.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

impl PoolSyncConfig {
    /// From `PROXY_POOL_ENABLED`, `PROXY_POOL_URL`, `PROXY_POOL_NAME` and `PROXY_POOL_INTERVAL`
    /// as `env` gives them, else `[proxy_pool] enabled|url|name|interval` of `file`; `None` when
    /// the sync is off. An error names the setting the bad value came from.
    pub fn resolve(
        file: &crate::config::ProxyPoolFile,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<PoolSyncConfig>> {
        let enabled = match env("PROXY_POOL_ENABLED").map(|v| v.to_ascii_lowercase()) {
            None => file.enabled.unwrap_or(false),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => anyhow::bail!("PROXY_POOL_ENABLED: {v:?} is not true or false"),
        };
        if !enabled {
            return Ok(None);
        }
        // Each value with the name of the setting it came from.
        let pick = |var: &'static str, key: &'static str, from_file: Option<String>| {
            env(var).map(|v| (var, v)).or_else(|| from_file.map(|v| (key, v)))
        };
        let (url_from, url) = pick("PROXY_POOL_URL", "[proxy_pool] url", file.url.clone())
            .filter(|(_, u)| !u.trim().is_empty())
            .context("PROXY_POOL_URL ([proxy_pool] url): required when the sync is enabled")?;
        let url = url.trim().to_owned();
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "{url_from}: must be an http:// or https:// URL"
        );
        let pool = match pick("PROXY_POOL_NAME", "[proxy_pool] name", file.name.clone()) {
            None => DEFAULT_POOL.to_owned(),
            Some((from, name)) => control::checked_proxy_name(&name).map_err(|e| anyhow::anyhow!("{from}: {e}"))?,
        };
        let interval = match pick("PROXY_POOL_INTERVAL", "[proxy_pool] interval", file.interval.map(|i| i.to_string()))
        {
            None => DEFAULT_INTERVAL,
            Some((from, v)) => match v.trim().parse::<u64>() {
                Ok(s) if s > 0 => Duration::from_secs(s),
                _ => anyhow::bail!("{from}: {v:?} is not a number of seconds (at least 1)"),
            },
        };
        Ok(Some(PoolSyncConfig { url, pool, interval }))
    }
}

/// Fetches the list once: the URL's literal host judged by the policy (names by the client's
/// resolver), at most [`MAX_LIST_BYTES`] read. Errors never hold the URL (it may carry a token).
async fn fetch(http: &reqwest::Client, egress: &egress::Policy, url: &str) -> anyhow::Result<String> {
    if let Err(e @ (egress::UrlRefused::Address(_) | egress::UrlRefused::Disguised { .. })) =
        egress.check_url(url, egress::Trust::Admin, true)
    {
        anyhow::bail!("refused by the outbound address policy: {e}");
    }
    let mut resp = tokio::time::timeout(FETCH_TIMEOUT, http.get(url).send())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))?
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status().as_u16());
    let mut body = Vec::new();
    let deadline = tokio::time::Instant::now() + FETCH_TIMEOUT;
    while let Some(chunk) = tokio::time::timeout_at(deadline, resp.chunk())
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))?
        .map_err(|e| anyhow::anyhow!("{}", e.without_url()))?
    {
        anyhow::ensure!(body.len() + chunk.len() <= MAX_LIST_BYTES, "the list is over {MAX_LIST_BYTES} bytes");
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Syncs the pool every interval until `stop` turns true, in rounds this process runs only while
/// it holds the `proxy_pool_sync` lease of `store` (taken, or checked still held, at the start of
/// each round). A failed fetch changes nothing (the pool keeps its proxies) and is logged
/// without the URL.
pub async fn run(
    cfg: PoolSyncConfig,
    admin: control::Admin,
    master: schemas::secret::MasterKey,
    http: reqwest::Client,
    egress: egress::Policy,
    store: projections::ReadStore,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut lease: Option<projections::Lease> = None;
    loop {
        if let Some(held) = lease.as_mut()
            && !held.still_held().await
        {
            tracing::warn!(pool = %cfg.pool, "Proxy pool sync lease lost with its database session; retrying.");
            lease = None;
        }
        if lease.is_none() {
            match projections::Lease::try_take(&store, projections::LeaseTask::ProxyPoolSync).await {
                Ok(Some(taken)) => {
                    tracing::info!(pool = %cfg.pool, "Proxy pool sync lease taken; this process syncs the pool.");
                    lease = Some(taken);
                }
                Ok(None) => tracing::debug!(pool = %cfg.pool, "Another process holds the proxy pool sync lease."),
                Err(e) => tracing::warn!(error = %e, "Proxy pool sync lease not taken: the read store failed."),
            }
        }
        if lease.is_some() {
            sync_once(&cfg, &admin, &master, &http, &egress).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(cfg.interval) => {}
            _ = stop.wait_for(|v| *v) => break,
        }
    }
    if let Some(held) = lease {
        held.release().await;
    }
}

async fn sync_once(
    cfg: &PoolSyncConfig,
    admin: &control::Admin,
    master: &schemas::secret::MasterKey,
    http: &reqwest::Client,
    egress: &egress::Policy,
) {
    match fetch(http, egress, &cfg.url).await {
        Ok(body) => {
            let entries = control::parse_proxy_list(&body);
            match admin.sync_pool(master, &cfg.pool, &entries).await {
                Ok(r) if r.added + r.removed + r.skipped > 0 => {
                    tracing::info!(pool = %cfg.pool, added = r.added, removed = r.removed, skipped = r.skipped,
                        "Proxy pool synced from PROXY_POOL_URL.");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(pool = %cfg.pool, error = %e, "Proxy pool sync failed."),
            }
        }
        Err(e) => tracing::warn!(pool = %cfg.pool, error = %e, "Proxy list not fetched from PROXY_POOL_URL."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sync_is_off_by_default_and_its_settings_name_themselves() -> anyhow::Result<()> {
        assert_eq!(PoolSyncConfig::resolve(&crate::config::ProxyPoolFile::default(), |_| None)?, None);
        let on = |extra: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                [("PROXY_POOL_ENABLED", "true"), ("PROXY_POOL_URL", "https://lists.example/p.txt")]
                    .iter()
                    .chain(extra)
                    .rev()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let c = PoolSyncConfig::resolve(&crate::config::ProxyPoolFile::default(), on(&[]))?.context("on")?;
        assert_eq!((c.pool.as_str(), c.interval), (DEFAULT_POOL, DEFAULT_INTERVAL));
        let c = PoolSyncConfig::resolve(
            &crate::config::ProxyPoolFile::default(),
            on(&[("PROXY_POOL_NAME", "eu"), ("PROXY_POOL_INTERVAL", "60")]),
        )?
        .context("on")?;
        assert_eq!((c.pool.as_str(), c.interval), ("eu", Duration::from_secs(60)));
        for (bad, name) in [
            (&[("PROXY_POOL_URL", "")][..], "PROXY_POOL_URL"),
            (&[("PROXY_POOL_URL", "ftp://x")][..], "PROXY_POOL_URL"),
            (&[("PROXY_POOL_INTERVAL", "0")][..], "PROXY_POOL_INTERVAL"),
            (&[("PROXY_POOL_ENABLED", "maybe")][..], "PROXY_POOL_ENABLED"),
        ] {
            let e = PoolSyncConfig::resolve(&crate::config::ProxyPoolFile::default(), on(bad))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(name), "{bad:?}: {e}");
        }
        Ok(())
    }
}
