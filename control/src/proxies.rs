//! Egress proxies as admin operations: add one to a pool, remove it, and the checks a proxy URL
//! goes through. A URL's credentials (`user:password@`) are split off and sealed under the
//! proxy's id, like upstream keys; the event, listings, logs and errors carry only
//! `scheme://host:port` (or its masked form `scheme://***@host:port`).

use schemas::secret::MasterKey;
use schemas::{EventBody, GLOBAL_TENANT, ProxyAdded, ProxyRemoved, ProxyState, ProxyStateChanged};

use crate::{Admin, AdminError, load};

/// The schemes a proxy may speak: HTTP CONNECT (plain or TLS to the proxy) and SOCKS5 (names
/// resolved here, through the checking resolver, or by the proxy with `socks5h`).
pub const PROXY_SCHEMES: [&str; 4] = ["http", "https", "socks5", "socks5h"];

/// The longest pool or proxy name.
const MAX_NAME: usize = 64;

/// The most proxies in one pool: a pool is tried node by node before a call fails, and the
/// sync from `PROXY_POOL_URL` must not grow the control log without end.
pub const MAX_PROXIES_PER_POOL: usize = 256;

/// A proxy URL taken apart: the credential-free `scheme://host:port`, the credentials, and the
/// host for the address policy.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// `scheme://host:port`.
    pub url: String,
    /// `user:password` as written in the URL (percent-encoded), if any.
    pub credentials: Option<String>,
}

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyUrl")
            .field("url", &self.url)
            .field("credentials", &self.credentials.as_ref().map(|_| "***"))
            .finish()
    }
}

/// Parses a proxy URL: one of [`PROXY_SCHEMES`], a host, and nothing after the port. Errors
/// never quote the URL (it may carry a password).
pub fn parse_proxy_url(text: &str) -> Result<ProxyUrl, AdminError> {
    let bad = |why: &str| AdminError::BadProxyUrl(why.to_owned());
    let url = url::Url::parse(text.trim()).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    if !PROXY_SCHEMES.contains(&url.scheme()) {
        return Err(bad("the scheme must be http, https, socks5 or socks5h"));
    }
    let host = match url.host() {
        None => return Err(bad("it has no host")),
        Some(url::Host::Ipv6(v6)) => format!("[{v6}]"),
        // `socks5://` is not a scheme the URL standard knows, so its host comes back as written.
        Some(url::Host::Domain(d)) => d.to_ascii_lowercase(),
        Some(h) => h.to_string(),
    };
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("it must end after the port (no path, query or fragment)"));
    }
    let port = url.port_or_known_default().unwrap_or(match url.scheme() {
        "socks5" | "socks5h" => 1080,
        _ => 80,
    });
    let credentials = match (url.username(), url.password()) {
        ("", None) => None,
        (user, Some(pass)) => Some(format!("{user}:{pass}")),
        (user, None) => Some(user.to_owned()),
    };
    Ok(ProxyUrl { url: format!("{}://{host}:{port}", url.scheme()), credentials })
}

/// The URL the HTTP client is given: `url` with `credentials` put back in.
pub fn proxy_url_with_credentials(url: &str, credentials: Option<&str>) -> String {
    match (credentials, url.split_once("://")) {
        (Some(c), Some((scheme, rest))) => format!("{scheme}://{c}@{rest}"),
        _ => url.to_owned(),
    }
}

/// A pool or proxy name: 1-64 letters, digits, `-`, `_` or `.`.
pub fn checked_proxy_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        return Err(AdminError::BadProxyName(name.chars().take(MAX_NAME).collect()));
    }
    Ok(name.to_owned())
}

/// What `proxies add` needs.
pub struct NewProxy {
    /// The pool.
    pub pool: String,
    /// The URL, credentials included (sealed before it leaves the operation).
    pub url: String,
    /// Display name; `None` takes the pool's name and a number.
    pub name: Option<String>,
}

impl Admin {
    /// The outbound address policy's verdict on a proxy's host: for an admin's proxy as for a
    /// channel base URL (private and loopback allowed, with a warning); for one synced from
    /// `PROXY_POOL_URL`, as outside input (only inside `allow_private_networks`).
    pub(crate) async fn proxy_target(&self, url: &str, from_pool_url: bool) -> Result<(), AdminError> {
        let trust = if from_pool_url { egress::Trust::Alert } else { egress::Trust::Admin };
        // The policy judges http(s) URLs; the host and port are what matter here.
        let (_, rest) = url.split_once("://").unwrap_or(("", url));
        match self.egress.check_url_resolving(&format!("http://{rest}"), trust, true, &self.dns).await {
            Ok(target) => {
                if target.is_internal() {
                    tracing::warn!(host = %target.host, "Proxy reaches a private network or this host; allowed by the address policy.");
                }
                Ok(())
            }
            Err(e) => Err(AdminError::UrlRefused(e.to_string())),
        }
    }

    /// `proxies add --pool P --url U [--name N]`: checks the URL (scheme, address policy),
    /// seals its credentials under a new id and appends `proxy.added`. Returns the id and name.
    pub async fn add_proxy(&self, master: &MasterKey, p: NewProxy) -> Result<(String, String), AdminError> {
        let pool = checked_proxy_name(&p.pool)?;
        let parsed = parse_proxy_url(&p.url)?;
        self.proxy_target(&parsed.url, false).await?;
        let model = load(&self.log).await?;
        let in_pool = model.pool(&pool);
        if in_pool.len() >= MAX_PROXIES_PER_POOL {
            return Err(AdminError::TooManyProxies(MAX_PROXIES_PER_POOL));
        }
        if let Some(same) = in_pool.iter().find(|x| x.url == parsed.url) {
            return Err(AdminError::DuplicateProxy(same.name.clone()));
        }
        let name = match p.name {
            Some(n) => checked_proxy_name(&n)?,
            None => (1..)
                .map(|i| format!("{pool}-{i}"))
                .find(|n| model.find_proxy(n).is_none())
                .unwrap_or_else(|| pool.clone()),
        };
        if model.proxies.values().any(|x| x.name == name) {
            return Err(AdminError::ProxyNameTaken(name));
        }
        let proxy_id = format!("px_{}", uuid::Uuid::now_v7().simple());
        let body = EventBody::ProxyAdded(ProxyAdded {
            proxy_id: proxy_id.clone(),
            pool,
            name: name.clone(),
            url: parsed.url,
            credentials: parsed.credentials.map(|c| master.seal(&c, &proxy_id)),
            origin: None,
        });
        self.append(&self.event(GLOBAL_TENANT, body)).await?;
        Ok((proxy_id, name))
    }

    /// `proxies remove NAME_OR_ID`. Returns the id.
    pub async fn remove_proxy(&self, needle: &str) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let p = model.find_proxy(needle).ok_or_else(|| AdminError::NoProxy(needle.to_owned()))?;
        let proxy_id = p.proxy_id.clone();
        let body = EventBody::ProxyRemoved(ProxyRemoved { proxy_id: proxy_id.clone() });
        self.append(&self.event(GLOBAL_TENANT, body)).await?;
        Ok(proxy_id)
    }
}

impl Admin {
    /// `proxies disable|enable NAME_OR_ID`: an admin's state change. A disabled proxy stays out of
    /// rotation whatever probes or live traffic see, until an admin enables it; enabling also
    /// clears a disable by probes or an open breaker. Returns the id.
    pub async fn set_proxy_enabled(&self, needle: &str, enabled: bool) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let p = model.find_proxy(needle).ok_or_else(|| AdminError::NoProxy(needle.to_owned()))?;
        let state = if enabled { ProxyState::Active } else { ProxyState::Disabled };
        if p.state == state && (enabled || p.manual) {
            return Err(AdminError::ProxyStateUnchanged(p.proxy_id.clone(), state.as_str()));
        }
        let proxy_id = p.proxy_id.clone();
        let body = EventBody::ProxyStateChanged(ProxyStateChanged {
            proxy_id: proxy_id.clone(),
            state,
            until_us: None,
            reason: "admin".to_owned(),
            opens: 0,
            manual: true,
        });
        self.append(&self.event(GLOBAL_TENANT, body)).await?;
        Ok(proxy_id)
    }
}

/// What one sync of a pool from `PROXY_POOL_URL` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolSync {
    /// Proxies added.
    pub added: usize,
    /// Proxies removed (no longer listed).
    pub removed: usize,
    /// Entries left out: not a proxy URL, refused by the address policy, or past the pool's size.
    pub skipped: usize,
}

/// The longest entry of a proxy list taken.
const MAX_LIST_ENTRY: usize = 2048;

/// The entries of a proxy list: a JSON array of URL strings (or of objects with a `url`), else
/// one URL per line (blank lines and `#` comments skipped). At most [`MAX_PROXIES_PER_POOL`]
/// entries of at most 2 KiB each are taken; the rest is dropped.
pub fn parse_proxy_list(body: &str) -> Vec<String> {
    let entries: Vec<String> = match serde_json::from_str::<Vec<serde_json::Value>>(body.trim()) {
        Ok(items) => items
            .into_iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Object(o) => o.get("url").and_then(|u| u.as_str()).map(str::to_owned),
                _ => None,
            })
            .collect(),
        Err(_) => {
            body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_owned).collect()
        }
    };
    entries.into_iter().filter(|e| e.len() <= MAX_LIST_ENTRY).take(MAX_PROXIES_PER_POOL).collect()
}

impl Admin {
    /// Makes the proxies of `pool` that came from `PROXY_POOL_URL` the ones `entries` lists:
    /// each listed URL not yet in the pool is added (`proxy.added` with origin `pool_url`, its
    /// host judged as outside input by the address policy), each synced proxy no longer listed is
    /// removed. Proxies an admin added are left alone. Bad entries are counted, never quoted.
    pub async fn sync_pool(&self, master: &MasterKey, pool: &str, entries: &[String]) -> Result<PoolSync, AdminError> {
        let pool = checked_proxy_name(pool)?;
        let mut report = PoolSync::default();
        let mut wanted: Vec<ProxyUrl> = Vec::new();
        for entry in entries {
            match parse_proxy_url(entry) {
                Ok(p) if !wanted.iter().any(|w| w.url == p.url) => wanted.push(p),
                Ok(_) => {}
                Err(_) => report.skipped += 1,
            }
        }
        let model = load(&self.log).await?;
        let live = model.pool(&pool);
        for p in live.iter().filter(|p| p.from_pool_url && !wanted.iter().any(|w| w.url == p.url)) {
            let body = EventBody::ProxyRemoved(ProxyRemoved { proxy_id: p.proxy_id.clone() });
            self.append(&self.event(GLOBAL_TENANT, body)).await?;
            report.removed += 1;
        }
        let mut count = live.len() - report.removed;
        let mut names: Vec<String> = model.proxies.values().map(|p| p.name.clone()).collect();
        for w in wanted {
            if live.iter().any(|p| p.url == w.url) {
                continue;
            }
            if count >= MAX_PROXIES_PER_POOL || self.proxy_target(&w.url, true).await.is_err() {
                report.skipped += 1;
                continue;
            }
            let proxy_id = format!("px_{}", uuid::Uuid::now_v7().simple());
            let name = (1..)
                .map(|i| format!("{pool}-url-{i}"))
                .find(|n| !names.contains(n))
                .unwrap_or_else(|| proxy_id.clone());
            names.push(name.clone());
            let body = EventBody::ProxyAdded(ProxyAdded {
                proxy_id: proxy_id.clone(),
                pool: pool.clone(),
                name,
                url: w.url,
                credentials: w.credentials.map(|c| master.seal(&c, &proxy_id)),
                origin: Some(schemas::PROXY_ORIGIN_POOL_URL.to_owned()),
            });
            self.append(&self.event(GLOBAL_TENANT, body)).await?;
            report.added += 1;
            count += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_off_and_never_shown() -> Result<(), AdminError> {
        let p = parse_proxy_url("socks5h://alice:s3cr%40t@Proxy.Example:1080")?;
        assert_eq!(p.url, "socks5h://proxy.example:1080");
        assert_eq!(p.credentials.as_deref(), Some("alice:s3cr%40t"));
        assert!(!format!("{p:?}").contains("s3cr"));
        assert_eq!(
            proxy_url_with_credentials(&p.url, p.credentials.as_deref()),
            "socks5h://alice:s3cr%40t@proxy.example:1080"
        );
        assert_eq!(parse_proxy_url("http://10.0.0.1")?.url, "http://10.0.0.1:80");
        assert_eq!(parse_proxy_url("socks5://[::1]")?.url, "socks5://[::1]:1080");
        Ok(())
    }

    #[test]
    fn a_list_is_a_json_array_or_lines_and_is_bounded() {
        let json = r#"["socks5://a:1", {"url": "http://b:2"}, 7]"#;
        assert_eq!(parse_proxy_list(json), ["socks5://a:1", "http://b:2"]);
        let lines = "# pool\nsocks5://a:1\n\n  http://u:p@b:2  \n";
        assert_eq!(parse_proxy_list(lines), ["socks5://a:1", "http://u:p@b:2"]);
        let many: String = (0..1000).map(|i| format!("socks5://h{i}:1\n")).collect();
        assert_eq!(parse_proxy_list(&many).len(), MAX_PROXIES_PER_POOL);
        assert!(parse_proxy_list(&format!("http://{}:1", "a".repeat(5000))).is_empty());
    }

    #[test]
    fn other_schemes_paths_and_bad_names_are_refused_without_echoing_the_url() {
        for bad in ["ftp://a:1", "http://u:hunter2@a:1/path", "socks4://a:1", "http://a:1/?q=1", "not a url"] {
            let e = parse_proxy_url(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!e.is_empty() && !e.contains("hunter2"), "{bad}: {e}");
        }
        assert!(checked_proxy_name("eu-west_1.a").is_ok());
        assert!(checked_proxy_name("").is_err() && checked_proxy_name("a b").is_err());
        assert!(checked_proxy_name(&"x".repeat(65)).is_err());
    }
}
