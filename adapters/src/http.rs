//! The upstream HTTP client: one per process, shared by every adapter call. Built here so every
//! side that calls upstreams (the gateway, health probes) connects out under the same rules.

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
