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
    /// A literal address written in another form than its plain one (decimal `2130706433`,
    /// octal, hex, short `127.1`, IPv4-mapped IPv6, …). Nobody needs that spelling except to slip
    /// past a filter, so it is refused whatever the address, and the message gives the plain form.
    #[error("{written:?} is the address {canonical} in disguise; write it as {canonical}")]
    Disguised {
        /// The host as written.
        written: String,
        /// The address it means.
        canonical: IpAddr,
    },
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

/// How long a save waits for a name to resolve before treating it as unresolved: a saving admin
/// should not hang on a dead DNS server, and the connect-time check still judges the name.
const SAVE_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Policy {
    /// Checks `url` without any lookup: scheme, no credentials, and a literal host against the
    /// policy for `trust`. A name passes here with `reach: None`; the connect-time resolver (or
    /// [`Policy::check_url_resolving`]) judges it. Plain http to a public literal address needs
    /// `insecure_http`.
    pub fn check_url(&self, url: &str, trust: Trust, insecure_http: bool) -> Result<Target, UrlRefused> {
        let raw = url.trim();
        let url = url::Url::parse(raw).map_err(UrlRefused::Invalid)?;
        let http = match url.scheme() {
            "http" => true,
            "https" => false,
            _ => return Err(UrlRefused::Scheme),
        };
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
        if let Host::Ip(canonical) = host {
            let written = written_host(raw).unwrap_or_default();
            let plain = match url.host() {
                Some(url::Host::Ipv4(v4)) => written == v4.to_string(),
                // An IPv6 literal is fine unless it is an IPv4 address in IPv6 clothing.
                _ => canonical.is_ipv6(),
            };
            if !plain {
                return Err(UrlRefused::Disguised { written: written.to_owned(), canonical });
            }
        }
        // After the address, so that a refused address is reported (and acted on) first.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlRefused::Credentials);
        }
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
        let addrs = match tokio::time::timeout(SAVE_LOOKUP_TIMEOUT, dns.lookup(name)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) | Err(_) => Vec::new(),
        };
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

/// The host exactly as written in `raw`: after `scheme://` and any `user@`, before the port, path,
/// query or fragment (without the brackets of an IPv6 literal). `None` for shapes the URL parser
/// accepts but this does not follow (no `//`, …): the caller then treats the spelling as unusual.
fn written_host(raw: &str) -> Option<&str> {
    let rest = raw.split_once("://")?.1;
    // WHATWG parsing also ends the authority at a backslash in http(s) URLs.
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host_port.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    Some(host_port.rsplit_once(':').map_or(host_port, |(h, _)| h))
}
