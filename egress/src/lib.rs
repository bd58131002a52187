//! The outbound address policy: one answer, for every URL the router connects to (channel base
//! URLs today; proxy URLs, webhooks, bots and SMTP servers later), to "may we connect there?".
//!
//! Two checks use it. When a URL is saved, [`Policy::check_url`] (literal addresses) or
//! [`Policy::check_url_resolving`] (names, looked up once) refuse it with a message. At connect
//! time, [`CheckingResolver`] is the HTTP client's DNS resolver: it looks the name up and refuses
//! the connection if *any* address it got is disallowed, so a name that pointed at a public
//! address when it was saved and at 10.0.0.1 or 169.254.169.254 now (DNS rebinding) is still
//! caught. Checking the addresses we are about to connect to is what makes this hold; filtering
//! URLs by their text cannot, since the text does not change when the DNS answer does. The HTTP
//! client skips the resolver for literal IP hosts, so callers also check those right before
//! sending ([`Policy::check_url`] is cheap, or its verdict can be kept per URL).
//!
//! Every address is normalised first: the URL parser (WHATWG rules) turns decimal
//! (`2130706433`), octal (`0177.0.0.1`), hex (`0x7f.1`) and short (`127.1`) IPv4 forms into
//! dotted quads, and [`normalise`] turns IPv4 addresses written as IPv6 (`::ffff:a.b.c.d`,
//! `::a.b.c.d`, `64:ff9b::a.b.c.d`) into the IPv4 address they reach.
//!
//! This crate imports no workspace crate, so every part of the router can use it.

mod classify;
mod resolve;
mod target;

use std::net::IpAddr;

pub use classify::{Class, Forbidden, classify, normalise};
pub use ipnet::IpNet;
pub use resolve::{CheckingResolver, Dns, Lookup};
pub use target::{Host, Target, UrlRefused};

/// Who set a URL: it decides whether private and loopback networks may be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// An owner or admin (channel base URLs from the CLI): private and loopback networks are
    /// allowed, since a local Ollama or vLLM is normal; callers log a warning.
    Admin,
    /// A tenant-scoped user: private and loopback networks only inside the allow list.
    Tenant,
    /// An alert destination (webhook, chat bot, SMTP server): as [`Trust::Tenant`], whoever set
    /// it, because an alert is sent by the router on its own.
    Alert,
}

/// What an allowed address is, so callers can warn about non-public ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// A private network (see [`Class::Private`]).
    Private,
    /// This host.
    Loopback,
    /// The internet.
    Public,
}

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Never a destination.
    #[error("{addr} is {}", why.describe())]
    Forbidden {
        /// The normalised address.
        addr: IpAddr,
        /// Which kind.
        why: Forbidden,
    },
    /// Private or loopback, and whoever set the URL may not reach it.
    #[error(
        "{addr} is a {} address, which only URLs set by an admin or addresses inside \
         allow_private_networks may reach",
        if *reach == Reach::Loopback { "loopback" } else { "private-network" }
    )]
    NotAllowed {
        /// The normalised address.
        addr: IpAddr,
        /// Private or loopback.
        reach: Reach,
    },
}

/// A `[security] allow_private_networks` entry that is not a CIDR or an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a network such as 10.0.0.0/8 or an address such as 10.1.2.3")]
pub struct InvalidNetwork(pub String);

/// The policy: the fixed rules plus the private networks the operator opened to everyone.
/// `Default` opens none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    allow_private: Vec<IpNet>,
}

impl Policy {
    /// A policy where tenant URLs and alert destinations may also reach `allow_private`
    /// (private and loopback addresses inside them; forbidden addresses stay forbidden).
    pub fn new(allow_private: Vec<IpNet>) -> Policy {
        Policy { allow_private }
    }

    /// The networks opened by the operator.
    pub fn allow_private(&self) -> &[IpNet] {
        &self.allow_private
    }

    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`) or single addresses; blank entries are skipped.
    pub fn parse_networks<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Vec<IpNet>, InvalidNetwork> {
        items
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .map(|n| n.trunc())
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| InvalidNetwork(s.to_owned()))
            })
            .collect()
    }

    /// May a URL set with `trust` connect to `ip`? The answer for an allowed address says what it
    /// is; [`Trust::Admin`] answers do not depend on the allow list.
    pub fn check_ip(&self, ip: IpAddr, trust: Trust) -> Result<Reach, Refused> {
        let addr = normalise(ip);
        let reach = match classify(addr) {
            Class::Forbidden(why) => return Err(Refused::Forbidden { addr, why }),
            Class::Public => return Ok(Reach::Public),
            Class::Private => Reach::Private,
            Class::Loopback => Reach::Loopback,
        };
        match trust {
            Trust::Admin => Ok(reach),
            Trust::Tenant | Trust::Alert if self.allow_private.iter().any(|n| n.contains(&addr)) => Ok(reach),
            Trust::Tenant | Trust::Alert => Err(Refused::NotAllowed { addr, reach }),
        }
    }
}

#[cfg(test)]
mod tests;
