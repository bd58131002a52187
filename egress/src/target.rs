//! Checking a URL before it is saved: scheme, credentials, its host normalised, literal addresses
//! judged at once and names (in the resolving variant) judged by what they resolve to now.

use std::net::IpAddr;

use crate::{Dns, Policy, Reach, Refused, Trust, normalise};

/// A URL's host after WHATWG parsing: numeric IPv4 forms are already dotted quads here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A literal address (normalised: IPv4-in-IPv6 forms are IPv4).
    Ip(IpAddr),
    /// A name, lower-cased and IDNA-encoded.
    Name(String),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// A URL that passed the check.
#[derive(Debug, Clone)]
pub struct Target {
    /// The parsed URL.
    pub url: url::Url,
    /// Its host.
    pub host: Host,
    /// What the host is: for a literal address, its kind; for a name, the least public kind among
    /// the addresses it resolved to, or `None` when it was not resolved.
    pub reach: Option<Reach>,
    /// The addresses a name resolved to (empty for a literal or an unresolved name).
    pub resolved: Vec<IpAddr>,
}

impl Target {
    /// Whether the URL reaches a private network or this host (callers warn about it).
    pub fn is_internal(&self) -> bool {
        matches!(self.reach, Some(Reach::Private | Reach::Loopback))
    }
}

/// Why a URL was refused. Messages name the host, never the whole URL (it may carry secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// Not parseable.
    #[error("not a valid URL ({0})")]
    Invalid(url::ParseError),
    /// Neither http nor https.
    #[error("must start with http:// or https://")]
    Scheme,
    /// `user:password@` in the URL.
    #[error("must not carry credentials")]
    Credentials,
    /// No host at all.
    #[error("has no host")]
    NoHost,
    /// A literal address that is refused.
    #[error("{0}")]
    Address(Refused),
    /// A name that resolved to a refused address.
    #[error("{host} resolves to {refused}")]
    Resolved {
        /// The name.
        host: String,
        /// The first refused address.
        refused: Refused,
    },
    /// Plain `http://` to a public host (or a name that could not be resolved to tell), without
    /// the insecure-http flag: the credential would cross the internet in clear text.
    #[error(
        "plain http:// to {host}, which {}, would send the upstream key unencrypted; use https://",
        if *unresolved { "could not be resolved to show it is on a private network" } else { "is a public address" }
    )]
    InsecureHttp {
        /// The host.
        host: String,
        /// The name did not resolve, so it could not be shown to be private.
        unresolved: bool,
    },
}

impl Policy {
    /// Checks `url` without any lookup: scheme, no credentials, and a literal host against the
    /// policy for `trust`. A name passes here with `reach: None`; the connect-time resolver (or
    /// [`Policy::check_url_resolving`]) judges it. Plain http to a public literal address needs
    /// `insecure_http`.
    pub fn check_url(&self, url: &str, trust: Trust, insecure_http: bool) -> Result<Target, UrlRefused> {
        let url = url::Url::parse(url.trim()).map_err(UrlRefused::Invalid)?;
        let http = match url.scheme() {
            "http" => true,
            "https" => false,
            _ => return Err(UrlRefused::Scheme),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefused::Credentials);
        }
        let host = match url.host() {
            None => return Err(UrlRefused::NoHost),
            Some(url::Host::Ipv4(v4)) => Host::Ip(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Host::Ip(normalise(IpAddr::V6(v6))),
            Some(url::Host::Domain(d)) => Host::Name(d.trim_end_matches('.').to_owned()),
        };
        let reach = match &host {
            Host::Ip(ip) => Some(self.check_ip(*ip, trust).map_err(UrlRefused::Address)?),
            Host::Name(_) => None,
        };
        if http && !insecure_http && reach == Some(Reach::Public) {
            return Err(UrlRefused::InsecureHttp { host: host.to_string(), unresolved: false });
        }
        Ok(Target { url, host, reach, resolved: Vec::new() })
    }

    /// [`Policy::check_url`], and for a name a lookup through `dns` now: every address must be
    /// allowed, and plain http needs every address to be private or loopback (or
    /// `insecure_http`). A name that does not resolve passes over https (the connect-time
    /// resolver checks it when it does) but not over plain http.
    pub async fn check_url_resolving(
        &self,
        url: &str,
        trust: Trust,
        insecure_http: bool,
        dns: &Dns,
    ) -> Result<Target, UrlRefused> {
        let mut target = self.check_url(url, trust, insecure_http)?;
        let Host::Name(name) = &target.host else { return Ok(target) };
        let http = target.url.scheme() == "http";
        let addrs = dns.lookup(name).await.unwrap_or_default();
        if addrs.is_empty() {
            if http && !insecure_http {
                return Err(UrlRefused::InsecureHttp { host: name.clone(), unresolved: true });
            }
            return Ok(target);
        }
        let mut least: Option<Reach> = None;
        for ip in &addrs {
            let reach =
                self.check_ip(*ip, trust).map_err(|refused| UrlRefused::Resolved { host: name.clone(), refused })?;
            least = Some(least.map_or(reach, |l| l.min(reach)));
        }
        if http && !insecure_http && addrs.iter().any(|ip| self.check_ip(*ip, trust) == Ok(Reach::Public)) {
            return Err(UrlRefused::InsecureHttp { host: name.clone(), unresolved: false });
        }
        target.reach = least;
        target.resolved = addrs;
        Ok(target)
    }
}
