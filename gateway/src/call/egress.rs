//! How an attempt leaves the gateway: direct, or through a node of the channel's proxy pool.
//! Through a pool, nodes are tried in the pool's order (the key's last node, then by latency)
//! until one gets an answer from the upstream; a node that fails before the upstream was reached
//! counts against its own breaker (never the key's) and the next node is tried, all before any
//! byte reached the client. When every node failed, the attempt fails as `proxy_failed`, which
//! the policy does not hold against the key. A channel whose pool has no node in rotation never
//! goes direct.

use adapters::{AttemptError, FailureClass, TimeoutPhase};

use super::{Call, vendor};
use crate::ctx::AppState;
use crate::health::{Admission, Transition, Verdict};
use crate::proxy::ProxyNode;
use crate::state::{Channel, Lane};

/// The most nodes one attempt tries: a few dead proxies cost a few fast refusals, not one per
/// node of a large pool (their breakers take them out soon).
const MAX_NODES_PER_ATTEMPT: usize = 4;

/// Sends one attempt on `lane`, direct or through its channel's pool.
pub async fn send(
    app: &AppState,
    call: &Call,
    lane: &Lane,
    route: vendor::Route,
    deadline: tokio::time::Instant,
) -> Result<reqwest::Response, AttemptError> {
    let channel = &lane.channel;
    let Some(pool_name) = channel.proxy_pool.as_deref() else {
        return vendor::send(app, call, channel, route, &app.http, deadline).await;
    };
    // The pool as it is now (not as the request arrived): a node opened a moment ago is out.
    let control = app.snapshot();
    let Some(pool) = control.pools.get(pool_name) else {
        tracing::warn!(channel_id = %channel.id, pool = pool_name, "The channel's proxy pool has no proxy; the call is not sent.");
        return Err(AttemptError::new(FailureClass::ProxyFailed));
    };
    if !upstream_name_allowed(app, channel, deadline).await {
        return Err(AttemptError::new(FailureClass::ConnectionFailed));
    }
    let nodes = pool.order(&lane.key.id, crate::health::now_us());
    if nodes.is_empty() {
        tracing::warn!(channel_id = %channel.id, pool = pool_name, "No proxy of the channel's pool is in rotation.");
    }
    for node in nodes.iter().take(MAX_NODES_PER_ATTEMPT) {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let admission = node.shared.health.admit(&node.status, crate::health::now_us());
        if admission == Admission::No {
            continue;
        }
        let client = match node.client(&app.cfg) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(proxy_id = %node.id, proxy = %node.masked, why, "Proxy unusable.");
                judged(app, node, admission, Verdict::Breaker, None);
                continue;
            }
        };
        let started = tokio::time::Instant::now();
        match vendor::send(app, call, channel, route, &client, deadline).await {
            Err(e) if node_failed(node, channel, &e) => {
                tracing::warn!(proxy_id = %node.id, proxy = %node.masked, class = e.class.as_str(),
                    "Proxy failed before the upstream answered; trying the next proxy of the pool.");
                judged(app, node, admission, Verdict::Breaker, None);
            }
            Err(e) if forwarded(node, channel) && e.status == Some(502) => {
                // A forwarding proxy that could not reach the upstream answers 502 itself. Over
                // plain http nothing tells its 502 from one the upstream sent, so neither the key
                // nor the node is blamed: the attempt is `proxy_failed` and the next channel is
                // tried. (A node that answers nothing but 502 keeps its place in the pool; its
                // probes, which reach a target of their own, tell whether it is the node.)
                tracing::warn!(proxy_id = %node.id, proxy = %node.masked,
                    "Forwarding proxy answered 502: it could not reach the upstream.");
                judged(app, node, admission, Verdict::Neutral, None);
                return Err(AttemptError::status(FailureClass::ProxyFailed, 502));
            }
            Err(e) => {
                // The proxy carried the attempt; what failed was the upstream.
                let verdict = if e.status.is_some() { Verdict::Success } else { Verdict::Neutral };
                judged(app, node, admission, verdict, None);
                return Err(e);
            }
            Ok(resp) => {
                judged(app, node, admission, Verdict::Success, Some(started.elapsed()));
                pool.stick(&lane.key.id, node);
                return Ok(resp);
            }
        }
    }
    Err(AttemptError::new(FailureClass::ProxyFailed))
}

/// Whether the upstream's name may be handed to a proxy. A proxy that resolves names itself
/// (HTTP CONNECT and forwarding, `socks5h://`) is given the name, never an address, so the
/// client's checking resolver would not see it: the name is looked up here first, with the
/// resolver and address policy of direct calls, and the attempt is refused (as a failed
/// connection, before any proxy is contacted) when any address it resolves to is forbidden — a
/// name rebound to a metadata or otherwise forbidden address fails as it would direct. A name
/// that does not resolve here (or not before the attempt's deadline) goes to the proxy, whose
/// network may know it; literal addresses were judged when the channel was built. What the
/// proxy's own lookup returns afterwards is the proxy's network's answer, outside this check.
async fn upstream_name_allowed(app: &AppState, channel: &Channel, deadline: tokio::time::Instant) -> bool {
    let Ok(url) = reqwest::Url::parse(&channel.base_url) else { return true };
    let Some(name) = url.host_str().filter(|h| !h.starts_with('[') && h.parse::<std::net::IpAddr>().is_err()) else {
        return true;
    };
    let Ok(Ok(addrs)) = tokio::time::timeout_at(deadline, app.cfg.dns.lookup(name)).await else { return true };
    match addrs.iter().find_map(|ip| app.cfg.egress.check_ip(*ip, egress::Trust::Admin).err()) {
        None => true,
        Some(refused) => {
            tracing::warn!(channel_id = %channel.id, host = name, %refused,
                "Upstream name refused by the address policy before it was handed to a proxy.");
            false
        }
    }
}

/// Whether a failed attempt through `node` is the node's failure: the proxy could not be
/// reached or refused the handshake, or the connection timed out (it covers the handshake); a
/// failed connection or a 407 too when the node forwards plain http (the only connection made
/// is the proxy's, and the proxy answers for itself).
fn node_failed(node: &ProxyNode, channel: &Channel, e: &AttemptError) -> bool {
    let forwarded = forwarded(node, channel);
    match e.class {
        FailureClass::ProxyFailed | FailureClass::Timeout(TimeoutPhase::Connect) => true,
        FailureClass::ConnectionFailed => forwarded,
        // A forwarding proxy refusing our login answers in HTTP itself (407).
        _ => forwarded && e.status == Some(407),
    }
}

/// Whether `node` forwards the channel's calls as plain-http requests (an HTTP proxy and an
/// `http://` upstream) rather than tunnelling them: then the proxy's own answers (407, 502) reach
/// us as HTTP responses.
fn forwarded(node: &ProxyNode, channel: &Channel) -> bool {
    node.forwards_http && channel.base_url.starts_with("http://")
}

/// Records an attempt's outcome on `node`'s breaker and, when that changed its state, publishes
/// `proxy.state_changed` (not waited for; every gateway applies it from the log, this one acts
/// on it at once).
fn judged(app: &AppState, node: &ProxyNode, admission: Admission, verdict: Verdict, ttfb: Option<std::time::Duration>) {
    let health = &node.shared.health;
    if let Some(ttfb) = ttfb {
        health.note_ttfb(ttfb);
    }
    let now = crate::health::now_us();
    let Some(Transition { state, until_us, opens, .. }) =
        health.outcome(&node.status, admission, verdict, &app.cfg.breaker, now)
    else {
        return;
    };
    let (state, reason) = match state {
        schemas::UpstreamKeyState::Active => (schemas::ProxyState::Active, "recovered"),
        _ => (schemas::ProxyState::Open, FailureClass::ProxyFailed.as_str()),
    };
    tracing::warn!(proxy_id = %node.id, proxy = %node.masked, state = state.as_str(), until_us, "Proxy changed state.");
    let body = schemas::EventBody::ProxyStateChanged(schemas::ProxyStateChanged {
        proxy_id: node.id.clone(),
        state,
        until_us,
        reason: reason.to_owned(),
        opens,
        manual: false,
    });
    app.log.append_nowait(&app.event(schemas::GLOBAL_TENANT, body));
}
