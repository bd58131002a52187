//! Probes of egress proxies: a request through the proxy to the configured target (for an
//! `https://` target that is a CONNECT or SOCKS5 tunnel and a TLS handshake with the target),
//! its latency, and what the result does to the proxy's state. A proxy's result never touches
//! the upstream keys behind it. No key probes here (`health`).

use std::time::Duration;

use nats::EventLog;
use schemas::control::Proxy;
use schemas::{Envelope, EventBody, HealthChecked, ProxyState, ProxyStateChanged};

use super::{HealthConfig, Prober, RETRY_PAUSE, now_us};

/// What one probe of a proxy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyOutcome {
    /// The target answered through the proxy.
    Ok,
    /// The proxy could not be reached, or its handshake failed.
    ProxyFailed,
    /// The proxy refused our login (407, or a SOCKS5 login refused).
    LoginRefused,
    /// The proxy answered that it could not reach the target.
    TargetUnreachable,
    /// No answer within the timeout.
    Timeout,
    /// No client through the proxy could be built (its credentials did not open, or the address
    /// policy refuses its host).
    Unusable,
}

impl ProxyOutcome {
    /// `ok` or the failure's name in `health.checked`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyOutcome::Ok => "ok",
            ProxyOutcome::ProxyFailed => "proxy_failed",
            ProxyOutcome::LoginRefused => "proxy_login_refused",
            ProxyOutcome::TargetUnreachable => "target_unreachable",
            ProxyOutcome::Timeout => "timeout",
            ProxyOutcome::Unusable => "proxy_unusable",
        }
    }

    fn reason(self) -> Option<&'static str> {
        match self {
            ProxyOutcome::Ok => None,
            ProxyOutcome::ProxyFailed => Some("the proxy could not be reached or its handshake failed"),
            ProxyOutcome::LoginRefused => Some("the proxy refused the login"),
            ProxyOutcome::TargetUnreachable => Some("the proxy could not reach the probe target"),
            ProxyOutcome::Timeout => Some("no answer through the proxy within the timeout"),
            ProxyOutcome::Unusable => Some("no client through the proxy (credentials or address policy)"),
        }
    }
}

/// The result of one probe of one proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyProbe {
    /// What it found (of the last try).
    pub outcome: ProxyOutcome,
    /// Time of the last try, up to the target's answer.
    pub latency: Duration,
    /// Tries made.
    pub attempts: u32,
}

impl ProxyProbe {
    /// The `health.checked` of this result for proxy `proxy_id`.
    pub fn event(&self, proxy_id: &str, slot_us: i64, on_demand: bool) -> HealthChecked {
        HealthChecked {
            resource_id: proxy_id.to_owned(),
            channel_id: None,
            slot_us,
            outcome: self.outcome.as_str().to_owned(),
            latency_us: u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            attempts: self.attempts,
            balance: None,
            reason: self.outcome.reason().map(str::to_owned),
            on_demand,
        }
    }
}

/// What a probe result does to proxy `p`'s state: `Some(event)` when it changes. `failures` is
/// the count of failed scheduled probes in a row including this one. A proxy an admin disabled
/// is never touched; a proxy disabled by probes is enabled by the first probe that gets through;
/// an open breaker is left to the gateways' half-open trial.
pub fn proxy_state_change(
    p: &Proxy,
    outcome: ProxyOutcome,
    failures: u32,
    threshold: u32,
) -> Option<ProxyStateChanged> {
    if p.manual {
        return None;
    }
    let change = |state, reason: String| ProxyStateChanged {
        proxy_id: p.proxy_id.clone(),
        state,
        until_us: None,
        reason,
        opens: 0,
        manual: false,
    };
    match outcome {
        ProxyOutcome::Ok if p.state == ProxyState::Disabled => Some(change(ProxyState::Active, "recovered".into())),
        ProxyOutcome::Ok => None,
        _ if p.state == ProxyState::Disabled || failures < threshold => None,
        f => Some(change(ProxyState::Disabled, format!("health_check_{}", f.as_str()))),
    }
}

/// What an admin's check of a proxy found and did.
#[derive(Debug, Clone)]
pub struct ProxyChecked {
    /// The probe's result.
    pub result: ProxyProbe,
    /// The `health.checked` appended for it.
    pub event: HealthChecked,
    /// The state change appended after it (a proxy disabled by probes that answered).
    pub state_change: Option<ProxyStateChanged>,
}

impl Prober {
    /// The target proxies are probed against, when proxy probes are on.
    pub fn proxy_target(&self) -> Option<&str> {
        self.cfg.proxy_target.as_deref()
    }

    /// Whether the address policy lets probes reach the target (a name is looked up now): the
    /// proxy may resolve it itself, so this is the only place it is judged. The target is set by
    /// the operator, but probes are sent by the router on its own, so it is judged like an alert
    /// destination: private and loopback networks only inside the allow list.
    async fn target_allowed(&self, target: &str) -> bool {
        match self.egress.check_url_resolving(target, egress::Trust::Alert, true, &self.dns).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, "Health checks: the proxy probe target is refused by the address policy; proxies are not probed.");
                false
            }
        }
    }

    /// One probe of proxy `p`: up to `1 + retry_count` tries of a GET of the target through it,
    /// each within the timeout. Any answer of the target counts, except the proxy's own refusal
    /// (407) and, where the proxy forwards a plain-http target, its gateway errors (502-504).
    /// `None` when the target is refused by the address policy (that is no proxy's failure).
    pub async fn probe_proxy(&self, p: &Proxy) -> Option<ProxyProbe> {
        let target = self.cfg.proxy_target.clone()?;
        if !self.target_allowed(&target).await {
            return None;
        }
        let Some(client) = self.proxy_client(p) else {
            return Some(ProxyProbe { outcome: ProxyOutcome::Unusable, latency: Duration::ZERO, attempts: 0 });
        };
        let forwarded =
            (p.url.starts_with("http://") || p.url.starts_with("https://")) && target.starts_with("http://");
        let mut attempts = 0;
        loop {
            attempts += 1;
            let started = tokio::time::Instant::now();
            let sent = tokio::time::timeout(self.cfg.timeout, client.get(&target).send()).await;
            let latency = started.elapsed();
            let outcome = match sent {
                Err(_) => ProxyOutcome::Timeout,
                Ok(Ok(resp)) => match resp.status().as_u16() {
                    407 => ProxyOutcome::LoginRefused,
                    502..=504 if forwarded => ProxyOutcome::TargetUnreachable,
                    _ => ProxyOutcome::Ok,
                },
                Ok(Err(e)) => classify(&e, forwarded),
            };
            if outcome == ProxyOutcome::Ok || attempts > self.cfg.retry_count {
                return Some(ProxyProbe { outcome, latency, attempts });
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// An admin's check of proxy `p` now: one try (an admin is waiting), within
    /// [`Prober::check_bound`]. Its `health.checked` is `on_demand` with the envelope's own id, so
    /// it neither replaces nor is dropped as a duplicate of the scheduled probe of the slot; a
    /// proxy disabled by probes that answers is enabled; a failure changes no state (only the
    /// schedule counts failures in a row). `Ok(None)` when proxy probes are off or the target is
    /// refused by the address policy.
    pub async fn check_proxy(
        &self,
        log: &EventLog,
        instance: &str,
        p: &Proxy,
    ) -> Result<Option<ProxyChecked>, nats::LogError> {
        let single = Prober { cfg: HealthConfig { retry_count: 0, ..self.cfg.clone() }, ..self.clone() };
        let result = match tokio::time::timeout(self.check_bound(), single.probe_proxy(p)).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(None),
            Err(_) => ProxyProbe { outcome: ProxyOutcome::Timeout, latency: self.check_bound(), attempts: 1 },
        };
        let now = now_us();
        let event = result.event(&p.proxy_id, now, true);
        let env = Envelope::new(schemas::GLOBAL_TENANT, instance, now, EventBody::HealthChecked(event.clone()));
        log.append(&env).await?;
        let state_change = match result.outcome {
            ProxyOutcome::Ok => proxy_state_change(p, result.outcome, 0, self.cfg.failure_threshold),
            _ => None,
        };
        if let Some(change) = &state_change {
            tracing::info!(proxy_id = %p.proxy_id, "An admin's health check enabled a proxy again.");
            let body = EventBody::ProxyStateChanged(change.clone());
            let mut next = Envelope::new(schemas::GLOBAL_TENANT, instance, now_us(), body);
            next.causation_id = Some(env.id);
            log.append(&next).await?;
        }
        Ok(Some(ProxyChecked { result, event, state_change }))
    }
}

/// What a failed request through a proxy says about it.
fn classify(e: &reqwest::Error, forwarded: bool) -> ProxyOutcome {
    if e.is_timeout() {
        return ProxyOutcome::Timeout;
    }
    let text = error_chain(e);
    if text.contains("authentication") || text.contains("407") {
        return ProxyOutcome::LoginRefused;
    }
    match adapters::http::proxy_fault(e) {
        Some(adapters::http::ProxyFault::UpstreamUnreachable) => ProxyOutcome::TargetUnreachable,
        Some(adapters::http::ProxyFault::Down) => ProxyOutcome::ProxyFailed,
        // A forwarded plain-http request connects to the proxy alone.
        None if forwarded || e.is_connect() => ProxyOutcome::ProxyFailed,
        None => ProxyOutcome::TargetUnreachable,
    }
}

/// The lower-cased messages of an error's chain (they name no URL: the client never puts the
/// proxy's login in them, and they are not logged).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut next = Some(e);
    while let Some(e) = next {
        out.push_str(&e.to_string().to_ascii_lowercase());
        out.push('\n');
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy(state: ProxyState, manual: bool) -> Proxy {
        Proxy {
            proxy_id: "px_1".into(),
            pool: "eu".into(),
            name: "eu-1".into(),
            url: "socks5://127.0.0.1:1".into(),
            credentials: None,
            from_pool_url: false,
            state,
            until_us: None,
            reason: None,
            opens: 0,
            manual,
            added_at_us: 0,
        }
    }

    #[test]
    fn a_proxy_is_disabled_at_the_threshold_and_enabled_when_a_probe_gets_through() {
        let active = proxy(ProxyState::Active, false);
        assert_eq!(proxy_state_change(&active, ProxyOutcome::ProxyFailed, 2, 3), None);
        let off = proxy_state_change(&active, ProxyOutcome::ProxyFailed, 3, 3).map(|c| (c.state, c.reason, c.manual));
        assert_eq!(off, Some((ProxyState::Disabled, "health_check_proxy_failed".to_owned(), false)));
        let disabled = proxy(ProxyState::Disabled, false);
        assert_eq!(proxy_state_change(&disabled, ProxyOutcome::Timeout, 9, 3), None, "no second disable");
        let back = proxy_state_change(&disabled, ProxyOutcome::Ok, 0, 3).map(|c| (c.state, c.reason));
        assert_eq!(back, Some((ProxyState::Active, "recovered".to_owned())));
        assert_eq!(proxy_state_change(&active, ProxyOutcome::Ok, 0, 3), None);
        // An open breaker is the gateways' to close.
        assert_eq!(proxy_state_change(&proxy(ProxyState::Open, false), ProxyOutcome::Ok, 0, 3), None);
    }

    #[test]
    fn a_proxy_an_admin_disabled_is_never_enabled_by_a_probe() {
        let manual = proxy(ProxyState::Disabled, true);
        assert_eq!(proxy_state_change(&manual, ProxyOutcome::Ok, 0, 3), None);
        assert_eq!(proxy_state_change(&manual, ProxyOutcome::ProxyFailed, 5, 3), None);
    }

    #[test]
    fn a_proxy_probe_event_names_the_proxy_and_no_channel() {
        let r = ProxyProbe { outcome: ProxyOutcome::ProxyFailed, latency: Duration::from_millis(3), attempts: 2 };
        let ev = r.event("px_1", 60, false);
        assert_eq!((ev.resource_id.as_str(), ev.channel_id, ev.outcome.as_str()), ("px_1", None, "proxy_failed"));
        assert!(ev.reason.is_some_and(|r| r.len() <= schemas::MAX_HEALTH_REASON));
        assert_eq!((ev.latency_us, ev.attempts), (3_000, 2));
    }
}
