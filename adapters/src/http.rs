//! The upstream HTTP client: one per process, shared by every adapter call, and one per egress
//! proxy node. Built here so every side that calls upstreams (the gateway, health probes)
//! connects out under the same rules.

use std::time::Duration;

/// The HTTP client for upstream calls. `egress` and `dns` are the outbound address policy and the
/// name lookup every upstream host name is checked through, at connect time.
pub fn client(connect_timeout: Duration, egress: egress::Policy, dns: egress::Dns) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        // Upstream redirects are not followed: a channel's URL is the only place we send its key.
        .redirect(reqwest::redirect::Policy::none())
        // No proxy from `HTTP(S)_PROXY`: a proxy resolves names itself, which would take every
        // upstream name past the checking resolver below. Egress proxies are set explicitly.
        .no_proxy()
        // Every name is checked against the outbound address policy at connect time, each time
        // it is resolved, so a DNS answer that changes after a channel was saved is caught.
        // Literal addresses skip the resolver; [`crate::dispatch`] checks those.
        .dns_resolver(egress::CheckingResolver::new(egress, egress::Trust::Admin, dns))
        .build()
}

/// The HTTP client that sends every request through the proxy at `proxy_url` (credentials
/// included: reqwest sends them to the proxy only, as `Proxy-Authorization` or the SOCKS5
/// login). The rest is [`client`]'s: no redirects, and the checking resolver, which here judges
/// the proxy's host when connecting to it, and the upstream's host too for `socks5://` (names
/// resolved here). `trust` is who set the proxy ([`egress::Trust::Alert`] for a list synced from
/// outside). A proxy that resolves names itself (`socks5h://`, HTTP CONNECT) sees the upstream's
/// name, never an address chosen here; upstream base URLs are set by admins.
/// The error never holds the URL.
pub fn proxied_client(
    connect_timeout: Duration,
    egress: egress::Policy,
    trust: egress::Trust,
    dns: egress::Dns,
    proxy_url: &str,
) -> Result<reqwest::Client, String> {
    let proxy = reqwest::Proxy::all(proxy_url).map_err(|e| e.without_url().to_string())?;
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .proxy(proxy)
        .dns_resolver(egress::CheckingResolver::new(egress, trust, dns))
        .build()
        .map_err(|e| e.without_url().to_string())
}

/// What a failed request's error says about the proxy it went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyFault {
    /// The proxy could not be reached, or its handshake failed (refused, closed, bad login).
    Down,
    /// The proxy answered that it could not reach the upstream (CONNECT not 2xx, a SOCKS5
    /// reply such as "connection refused"): the upstream's failure, not the proxy's.
    UpstreamUnreachable,
}

/// SOCKS5 replies that report the upstream, not the proxy.
const SOCKS_UPSTREAM_REPLIES: [&str; 6] = [
    "general server failure",
    "connection not allowed",
    "network unreachable",
    "host unreachable",
    "connection refused",
    "ttl expired",
];

/// Reads a request error's chain for a proxy's part in it; `None` when no proxy handshake is in
/// the chain (a direct connection, or a plain-http request forwarded by an HTTP proxy, where the
/// only connection made is the one to the proxy).
pub fn proxy_fault(error: &(dyn std::error::Error + 'static)) -> Option<ProxyFault> {
    let mut fault = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if text.contains("tunnel error: unsuccessful") {
            return Some(ProxyFault::UpstreamUnreachable);
        }
        if let Some(reply) = text.strip_prefix("SOCKS error: ")
            && SOCKS_UPSTREAM_REPLIES.contains(&reply)
        {
            return Some(ProxyFault::UpstreamUnreachable);
        }
        if text.contains("tunnel error") || text.contains("SOCKS error") || text.contains("socks proxy") {
            fault = Some(ProxyFault::Down);
        }
        next = e.source();
    }
    fault
}
