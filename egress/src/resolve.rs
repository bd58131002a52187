//! The connect-time check: a DNS resolver for the HTTP client that refuses a name when any
//! address it resolves to is disallowed, and the lookup behind it (the system resolver, or a
//! table in tests, which must never depend on /etc/hosts or the network).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use crate::{Policy, Refused, Trust};

/// The future a [`Lookup`] returns.
pub type Lookingup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses.
pub trait Lookup: Send + Sync {
    /// The addresses of `host` (port-less).
    fn lookup<'a>(&'a self, host: &'a str) -> Lookingup<'a>;
}

/// A shared [`Lookup`]: the system resolver by default.
#[derive(Clone)]
pub struct Dns(Arc<dyn Lookup>);

impl Dns {
    /// The operating system's resolver (`getaddrinfo` on the blocking pool), as the HTTP client
    /// uses by default.
    pub fn system() -> Dns {
        Dns(Arc::new(System))
    }

    /// A lookup answered by `f`, synchronously (tests: a table, or answers that change between
    /// calls to play DNS rebinding).
    pub fn from_fn(f: impl Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync + 'static) -> Dns {
        Dns(Arc::new(FnLookup(f)))
    }

    /// The addresses of `host`.
    pub async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.0.lookup(host).await
    }
}

impl Default for Dns {
    fn default() -> Dns {
        Dns::system()
    }
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

struct System;

impl Lookup for System {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookingup<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, 0)).await?.map(|a| a.ip()).collect()) })
    }
}

struct FnLookup<F>(F);

impl<F: Fn(&str) -> io::Result<Vec<IpAddr>> + Send + Sync> Lookup for FnLookup<F> {
    fn lookup<'a>(&'a self, host: &'a str) -> Lookingup<'a> {
        let answer = (self.0)(host);
        Box::pin(async move { answer })
    }
}

/// A name refused at connect time. Its text names the host and the address, nothing else.
#[derive(Debug, thiserror::Error)]
#[error("outbound address policy: {host} resolves to {refused}")]
pub struct ResolvedRefused {
    /// The name.
    pub host: String,
    /// Why.
    pub refused: Refused,
}

/// The HTTP client's resolver: looks the name up and hands the client the addresses only when
/// every one of them is allowed for `trust`. One client serves one trust level (the gateway's
/// upstream client: [`Trust::Admin`], as channels are set by admins).
#[derive(Debug, Clone)]
pub struct CheckingResolver {
    policy: Policy,
    trust: Trust,
    dns: Dns,
}

impl CheckingResolver {
    /// A resolver for `reqwest::ClientBuilder::dns_resolver`.
    pub fn new(policy: Policy, trust: Trust, dns: Dns) -> Arc<CheckingResolver> {
        Arc::new(CheckingResolver { policy, trust, dns })
    }

    /// Resolves `host` and checks every address (what [`reqwest::dns::Resolve`] runs).
    pub async fn resolve_checked(&self, host: &str) -> Result<Vec<IpAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs = self.dns.lookup(host).await?;
        if addrs.is_empty() {
            return Err(Box::new(io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))));
        }
        // Refuse if any address is disallowed, not just skip it: the client may fall back to the
        // others, and a name that mixes a public and an internal address is an attack or a mistake.
        for ip in &addrs {
            if let Err(refused) = self.policy.check_ip(*ip, self.trust) {
                tracing::warn!(host, %refused, "Outbound connection refused by the address policy.");
                return Err(Box::new(ResolvedRefused { host: host.to_owned(), refused }));
            }
        }
        Ok(addrs)
    }
}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let addrs = this.resolve_checked(name.as_str()).await?;
            // Port 0: the client puts the URL's (or the scheme's) port in.
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}
