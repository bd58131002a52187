//! Egress proxy pools as this gateway sends through them: each node with its opened URL, its
//! state from the control log (`proxy.state_changed`), this gateway's breaker for it (the
//! upstream keys' [`KeyHealth`], reused: a window of outcomes, an open period that doubles while
//! failures repeat, one half-open trial), its HTTP client (built on first use), and the order in
//! which a call tries a pool's nodes: the node its upstream key went out through last, while that
//! one stays in rotation (a vendor sees one exit address per key), then the others by least
//! latency. No request handling here; the call pipeline sends (`call::egress`).

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex, OnceLock};

use schemas::secret::MasterKey;
use schemas::{ProxyState, UpstreamKeyState};

use crate::config::GatewayConfig;
use crate::health::{KeyHealth, KeyStatus};

/// What a node keeps across snapshots of the control state: its breaker and its client.
#[derive(Debug, Default)]
pub struct NodeShared {
    /// This gateway's counters and breaker for the node.
    pub health: KeyHealth,
    /// The client through the node, or why there is none (said once, when first built).
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// One egress proxy of a pool, ready to send through.
pub struct ProxyNode {
    /// `px_…`
    pub id: String,
    /// Display name.
    pub name: String,
    /// The URL as logs show it (`scheme://***@host:port`).
    pub masked: String,
    /// The URL with its credentials (memory only); `None` when they could not be opened.
    url: Option<Arc<str>>,
    /// Who set it: an admin, or the `PROXY_POOL_URL` list (judged as outside input).
    pub trust: egress::Trust,
    /// An HTTP proxy (`http://`, `https://`): plain-http requests are forwarded, not tunnelled,
    /// so a failed connection there is a failed connection to the proxy.
    pub forwards_http: bool,
    /// Its state in the control log.
    pub status: KeyStatus,
    /// Breaker and client, shared across snapshots.
    pub shared: Arc<NodeShared>,
}

impl std::fmt::Debug for ProxyNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyNode").field("id", &self.id).field("url", &self.masked).finish_non_exhaustive()
    }
}

impl ProxyNode {
    /// The node for proxy `p` of the control model, its credentials opened with `master`; it
    /// keeps `previous`'s breaker and client (the same id is the same URL: proxies never change).
    pub fn open(p: &schemas::control::Proxy, master: &MasterKey, previous: Option<&ProxyNode>) -> ProxyNode {
        let url = match &p.credentials {
            None => Some(Arc::from(p.url.as_str())),
            Some(sealed) => match master.open(sealed, &p.proxy_id) {
                Ok(c) => Some(Arc::from(with_credentials(&p.url, &c).as_str())),
                Err(e) => {
                    tracing::warn!(proxy_id = %p.proxy_id, error = %e, "Proxy credentials could not be opened; the proxy is out of rotation.");
                    None
                }
            },
        };
        let state = match p.state {
            ProxyState::Active => UpstreamKeyState::Active,
            ProxyState::Open => UpstreamKeyState::Open,
            // Out of rotation until a probe or an admin enables it.
            ProxyState::Disabled => UpstreamKeyState::Disabled,
        };
        let status = KeyStatus { state, until_us: p.until_us, manual: p.manual, opens: p.opens };
        let shared = match previous {
            Some(old) => {
                if state == UpstreamKeyState::Active && old.status.state != UpstreamKeyState::Active {
                    old.shared.health.reset();
                }
                old.shared.clone()
            }
            None => Arc::new(NodeShared::default()),
        };
        shared.health.note_opens(p.opens);
        ProxyNode {
            id: p.proxy_id.clone(),
            name: p.name.clone(),
            masked: p.masked_url(),
            url,
            trust: if p.from_pool_url { egress::Trust::Alert } else { egress::Trust::Admin },
            forwards_http: p.url.starts_with("http://") || p.url.starts_with("https://"),
            status,
            shared,
        }
    }

    /// Whether the node is out of rotation at `now_us` (a half-open node is in).
    pub fn blocked(&self, now_us: i64) -> bool {
        self.url.is_none() || self.shared.health.blocked(&self.status, now_us)
    }

    /// The client through this node, built on first use: the proxy's literal address judged by
    /// the outbound address policy first (names are judged by the client's resolver each time
    /// it connects). The error names the host at most, never the credentials.
    pub fn client(&self, cfg: &GatewayConfig) -> Result<reqwest::Client, String> {
        self.shared
            .client
            .get_or_init(|| {
                let url = self.url.as_deref().ok_or_else(|| "its credentials could not be opened".to_owned())?;
                // The policy judges http(s) URLs; the proxy's host and port are what matter.
                let (_, rest) = self.masked.split_once("://").unwrap_or(("", &self.masked));
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                if let Err(refused @ (egress::UrlRefused::Address(_) | egress::UrlRefused::Disguised { .. })) =
                    cfg.egress.check_url(&format!("http://{host}"), self.trust, true)
                {
                    return Err(refused.to_string());
                }
                adapters::http::proxied_client(
                    cfg.connect_timeout,
                    cfg.egress.clone(),
                    self.trust,
                    cfg.dns.clone(),
                    url,
                )
            })
            .clone()
    }
}

/// `scheme://credentials@rest` from `scheme://rest`.
fn with_credentials(url: &str, credentials: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => format!("{scheme}://{credentials}@{rest}"),
        None => url.to_owned(),
    }
}

/// The most upstream keys whose last node a pool remembers; past it the memory starts over
/// (keys then pick again by latency), so removed keys cannot grow it without end.
const MAX_STICKY_KEYS: usize = 65_536;

/// A pool: its live nodes and which node each upstream key went out through last.
#[derive(Debug, Default)]
pub struct Pool {
    /// In the order they were added.
    pub nodes: Vec<Arc<ProxyNode>>,
    /// Upstream key id → proxy id (shared across snapshots).
    sticky: Arc<Mutex<HashMap<String, String>>>,
}

impl Pool {
    /// The pool of `nodes`, remembering what `previous` remembered.
    pub fn new(nodes: Vec<Arc<ProxyNode>>, previous: Option<&Pool>) -> Pool {
        Pool { nodes, sticky: previous.map(|p| p.sticky.clone()).unwrap_or_default() }
    }

    /// The nodes in rotation at `now_us`, in the order a call for upstream key `key_id` tries
    /// them: the key's last node first, then by least latency (a node not yet measured first,
    /// so it gets measured), ties spread over the nodes by the key.
    pub fn order(&self, key_id: &str, now_us: i64) -> Vec<Arc<ProxyNode>> {
        let last = self.sticky.lock().ok().and_then(|m| m.get(key_id).cloned());
        let mut nodes: Vec<(bool, u64, u64, Arc<ProxyNode>)> = self
            .nodes
            .iter()
            .filter(|n| !n.blocked(now_us))
            .map(|n| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (key_id, &n.id).hash(&mut h);
                (last.as_deref() != Some(n.id.as_str()), n.shared.health.ttfb_us(), h.finish(), n.clone())
            })
            .collect();
        nodes.sort_by_key(|a| (a.0, a.1, a.2));
        nodes.into_iter().map(|(_, _, _, n)| n).collect()
    }

    /// Upstream key `key_id` went out through `node`: its next calls start there.
    pub fn stick(&self, key_id: &str, node: &ProxyNode) {
        let Ok(mut m) = self.sticky.lock() else { return };
        if m.get(key_id).is_some_and(|n| *n == node.id) {
            return;
        }
        if m.len() >= MAX_STICKY_KEYS {
            m.clear();
        }
        m.insert(key_id.to_owned(), node.id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn proxy(id: &str, state: ProxyState) -> schemas::control::Proxy {
        schemas::control::Proxy {
            proxy_id: id.into(),
            pool: "p".into(),
            name: id.into(),
            url: "socks5://127.0.0.1:1".into(),
            credentials: None,
            from_pool_url: false,
            state,
            until_us: (state == ProxyState::Open).then_some(i64::MAX),
            reason: None,
            opens: 0,
            manual: false,
            added_at_us: 0,
        }
    }

    #[test]
    fn a_key_stays_on_its_node_while_it_is_in_rotation_and_others_go_by_latency() {
        let master = MasterKey::generate();
        let nodes: Vec<Arc<ProxyNode>> = ["px_a", "px_b", "px_c"]
            .iter()
            .map(|id| Arc::new(ProxyNode::open(&proxy(id, ProxyState::Active), &master, None)))
            .collect();
        nodes[0].shared.health.note_ttfb(Duration::from_millis(90));
        nodes[1].shared.health.note_ttfb(Duration::from_millis(10));
        nodes[2].shared.health.note_ttfb(Duration::from_millis(50));
        let pool = Pool::new(nodes.clone(), None);
        let ids = |v: Vec<Arc<ProxyNode>>| v.iter().map(|n| n.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(pool.order("ukey_1", 0)), ["px_b", "px_c", "px_a"]);
        pool.stick("ukey_1", &nodes[0]);
        assert_eq!(ids(pool.order("ukey_1", 0)), ["px_a", "px_b", "px_c"], "the key's last node first");
        assert_eq!(ids(pool.order("ukey_2", 0))[0], "px_b", "another key goes by latency");
        // The key's node opens: it is left out, and a new snapshot keeps the memory.
        let open = Arc::new(ProxyNode::open(&proxy("px_a", ProxyState::Open), &master, Some(&nodes[0])));
        let pool = Pool::new(vec![open, nodes[1].clone(), nodes[2].clone()], Some(&pool));
        assert_eq!(ids(pool.order("ukey_1", 0)), ["px_b", "px_c"]);
        assert_eq!(pool.sticky.lock().map(|m| m.get("ukey_1").cloned()).ok().flatten().as_deref(), Some("px_a"));
        // Disabled (by probes or an admin): out of rotation with no end.
        let off = Arc::new(ProxyNode::open(&proxy("px_b", ProxyState::Disabled), &master, Some(&nodes[1])));
        assert!(off.blocked(i64::MAX - 1));
    }

    #[test]
    fn credentials_are_put_back_only_into_the_clients_url() {
        let master = MasterKey::generate();
        let mut p = proxy("px_a", ProxyState::Active);
        p.credentials = Some(master.seal("u:hunter2", "px_a"));
        let node = ProxyNode::open(&p, &master, None);
        assert_eq!(node.masked, "socks5://***@127.0.0.1:1");
        assert_eq!(node.url.as_deref(), Some("socks5://u:hunter2@127.0.0.1:1"));
        assert!(!format!("{node:?}").contains("hunter2"));
        // Sealed for another proxy: out of rotation, never sent without its login.
        p.credentials = Some(master.seal("u:hunter2", "px_other"));
        assert!(ProxyNode::open(&p, &master, None).blocked(0));
    }
}
