//! Health checks of upstream keys and egress proxies: a worker beside the projections, never on
//! the hot path. Proxy probes live in `proxy`.

mod proxy;

use std::time::Duration;

pub use proxy::{ProxyChecked, ProxyOutcome, ProxyProbe, proxy_state_change};

/// The default target of proxy probes: a small, always-on page that answers 204.
pub const DEFAULT_PROXY_TARGET: &str = "https://www.gstatic.com/generate_204";

/// `[health]`: the probe schedule and when a failing key or proxy is taken out of rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    /// Whether the worker probes at all (`HEALTH_CHECK_ENABLED`).
    pub enabled: bool,
    /// Time between two probes of a resource (`HEALTH_CHECK_INTERVAL`, seconds).
    pub interval: Duration,
    /// Time one try of a probe may take (`HEALTH_CHECK_TIMEOUT`, seconds).
    pub timeout: Duration,
    /// Retries inside one probe after a failed try (`HEALTH_CHECK_RETRY_COUNT`).
    pub retry_count: u32,
    /// Failed probes in a row that disable a key or a proxy (`HEALTH_CHECK_FAILURE_THRESHOLD`).
    pub failure_threshold: u32,
    /// The URL proxies are probed against (`HEALTH_CHECK_PROXY_TARGET`); `None` turns proxy
    /// probes off.
    pub proxy_target: Option<String>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            enabled: true,
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            retry_count: 3,
            failure_threshold: 3,
            proxy_target: Some(DEFAULT_PROXY_TARGET.to_owned()),
        }
    }
}

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use adapters::{Channel, FailureClass};
use futures::StreamExt as _;
use nats::EventLog;
use schemas::control::{ControlModel, Proxy, UpstreamKey};
use schemas::secret::MasterKey;
use schemas::{
    Envelope, EventBody, HealthChecked, ProxyState, Stream, UpstreamKeyState, UpstreamKeyStateChanged, health_check_id,
};
use tokio::sync::watch;

/// Keys probed at once: probes are background work and must not crowd the upstreams.
pub const MAX_CONCURRENT_PROBES: usize = 8;

/// Pause between two tries of one probe.
pub(crate) const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The result of one probe of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    /// `None` when the key answered; else the failure class of the last try.
    pub failure: Option<FailureClass>,
    /// Time of the last try.
    pub latency: Duration,
    /// Tries made.
    pub attempts: u32,
    /// The balance, where the vendor tells it.
    pub balance: Option<schemas::Balance>,
    /// Why the balance is missing although the vendor exposes one (a failure class name).
    pub balance_failure: Option<&'static str>,
}

impl ProbeResult {
    /// `ok` or the failure class name.
    pub fn outcome(&self) -> &'static str {
        self.failure.map_or("ok", FailureClass::as_str)
    }

    /// The `health.checked` of this result for `key` of `channel_id`.
    pub fn event(&self, channel_id: &str, key_id: &str, slot_us: i64, on_demand: bool) -> HealthChecked {
        let reason = match (self.failure, self.balance_failure) {
            (Some(f), _) if is_key_class(f) => Some(format!("the key is refused: {}", f.as_str())),
            (Some(f), _) => Some(format!("transient failure: {}", f.as_str())),
            (None, Some(b)) => Some(format!("balance not read: {b}")),
            (None, None) => None,
        };
        HealthChecked {
            resource_id: key_id.to_owned(),
            channel_id: Some(channel_id.to_owned()),
            slot_us,
            outcome: self.outcome().to_owned(),
            latency_us: u64::try_from(self.latency.as_micros()).unwrap_or(u64::MAX),
            attempts: self.attempts,
            balance: self.balance.clone(),
            reason: reason.map(|r| r.chars().take(schemas::MAX_HEALTH_REASON).collect()),
            on_demand,
        }
    }
}

/// A failure that says the key itself is unusable (no retry helps).
pub fn is_key_class(f: FailureClass) -> bool {
    matches!(f, FailureClass::KeyInvalid | FailureClass::QuotaExhausted | FailureClass::PermissionDenied)
}

/// Probes upstream keys with the adapters' own code: a model listing (never a billable call),
/// then the balance where the vendor exposes one.
#[derive(Clone)]
pub struct Prober {
    http: reqwest::Client,
    cfg: HealthConfig,
    master: Arc<MasterKey>,
    /// For the clients through proxy nodes: the connect timeout and the address policy.
    connect_timeout: Duration,
    egress: egress::Policy,
    /// The resolver that judges the proxy probe target's name.
    dns: egress::Dns,
    /// A client per proxy node, built on first use (a node's URL never changes).
    proxied: Arc<std::sync::Mutex<HashMap<String, reqwest::Client>>>,
}

/// How a probe's request leaves: direct, or through a proxy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Direct,
    /// A tunnel (CONNECT or SOCKS5) to the upstream.
    Tunnel,
    /// An HTTP proxy forwarding a plain-http request: the only connection made is the proxy's.
    Forwarding,
}

impl Via {
    /// Whether a failed request says the node failed rather than the upstream (the gateway's
    /// rule, `call::egress`): the proxy could not be reached or refused the handshake, the
    /// connection timed out, or, where the node forwards, a failed connection or its own 407.
    fn node_failed(self, e: &adapters::AttemptError) -> bool {
        let forwarded = self == Via::Forwarding;
        match e.class {
            _ if self == Via::Direct => false,
            FailureClass::ProxyFailed | FailureClass::Timeout(adapters::TimeoutPhase::Connect) => true,
            FailureClass::ConnectionFailed => forwarded,
            _ => forwarded && e.status == Some(407),
        }
    }
}

/// The most proxy nodes one probe tries before it reports the pool as failing.
const MAX_NODES_PER_PROBE: usize = 3;

/// The default connect timeout of clients through proxy nodes.
const DEFAULT_PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Prober {
    /// A prober calling out through `http` (built by [`adapters::http::client`]).
    pub fn new(http: reqwest::Client, cfg: HealthConfig, master: MasterKey) -> Prober {
        Prober {
            http,
            cfg,
            master: Arc::new(master),
            connect_timeout: DEFAULT_PROXY_CONNECT_TIMEOUT,
            egress: egress::Policy::default(),
            dns: egress::Dns::system(),
            proxied: Arc::default(),
        }
    }

    /// A prober with its own upstream HTTP client, under the outbound address policy `egress`.
    pub fn connect(
        connect_timeout: Duration,
        egress: egress::Policy,
        cfg: HealthConfig,
        master: MasterKey,
    ) -> reqwest::Result<Prober> {
        let http = adapters::http::client(connect_timeout, egress.clone(), egress::Dns::system())?;
        Ok(Prober { connect_timeout, egress, ..Prober::new(http, cfg, master) })
    }

    /// The clients a probe of a channel goes out through: the direct one, or one per node of
    /// its pool in rotation (`nodes`, at most [`MAX_NODES_PER_PROBE`]); empty when the channel
    /// has a pool and no node of it can be used (its calls never go direct).
    fn clients(&self, c: &schemas::control::Channel, nodes: &[Proxy]) -> Vec<(reqwest::Client, Via)> {
        if c.proxy_pool.is_none() {
            return vec![(self.http.clone(), Via::Direct)];
        }
        let plain = c.base_url.starts_with("http://");
        nodes
            .iter()
            .take(MAX_NODES_PER_PROBE)
            .filter_map(|p| {
                let forwards = plain && (p.url.starts_with("http://") || p.url.starts_with("https://"));
                self.proxy_client(p).map(|client| (client, if forwards { Via::Forwarding } else { Via::Tunnel }))
            })
            .collect()
    }

    /// The client through proxy `p` (built on first use): `None` when its credentials do not
    /// open or the address policy refuses its host.
    fn proxy_client(&self, p: &Proxy) -> Option<reqwest::Client> {
        let mut cache = self.proxied.lock().ok()?;
        if let Some(client) = cache.get(&p.proxy_id) {
            return Some(client.clone());
        }
        let url = match &p.credentials {
            None => p.url.clone(),
            Some(sealed) => match (self.master.open(sealed, &p.proxy_id), p.url.split_once("://")) {
                (Ok(login), Some((scheme, rest))) => format!("{scheme}://{login}@{rest}"),
                _ => return None,
            },
        };
        let trust = if p.from_pool_url { egress::Trust::Alert } else { egress::Trust::Admin };
        let (_, host) = p.url.split_once("://").unwrap_or(("", &p.url));
        if self.egress.check_url(&format!("http://{host}"), trust, true).is_err() {
            return None;
        }
        match adapters::http::proxied_client(self.connect_timeout, self.egress.clone(), trust, self.dns.clone(), &url) {
            Ok(client) => {
                cache.insert(p.proxy_id.clone(), client.clone());
                Some(client)
            }
            Err(why) => {
                tracing::warn!(proxy_id = %p.proxy_id, why, "Health checks: proxy unusable.");
                None
            }
        }
    }

    /// The settings.
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// The channel `c` as the adapters call it with `key`'s credential; `None` when the key does
    /// not open.
    fn open(&self, c: &schemas::control::Channel, key: &UpstreamKey) -> Option<Channel> {
        let base = Channel::open(c, &self.master);
        let api_key = match &key.sealed {
            None => None,
            Some(s) => Some(Arc::from(self.master.open(s, &key.seal_context(&c.channel_id)).ok()?)),
        };
        Some(Channel { api_key, key_unusable: false, enabled: true, ..base })
    }

    /// One probe of `key` of channel `c`, through a node of the channel's pool (`nodes`: the
    /// pool's nodes in rotation) when it has one: up to `1 + retry_count` tries of a model
    /// listing, each within the timeout (a key-class failure is not retried; a node that fails
    /// before the upstream answers gives way to the next), then the balance.
    pub async fn probe(&self, c: &schemas::control::Channel, key: &UpstreamKey, nodes: &[Proxy]) -> ProbeResult {
        let clients = self.clients(c, nodes);
        if clients.is_empty() {
            return ProbeResult {
                failure: Some(FailureClass::ProxyFailed),
                latency: Duration::ZERO,
                attempts: 0,
                balance: None,
                balance_failure: None,
            };
        }
        let Some(channel) = self.open(c, key) else {
            return ProbeResult {
                failure: Some(FailureClass::KeyInvalid),
                latency: Duration::ZERO,
                attempts: 0,
                balance: None,
                balance_failure: None,
            };
        };
        let mut attempts = 0;
        let mut http = &clients[0].0;
        let (failure, latency) = loop {
            attempts += 1;
            let started = tokio::time::Instant::now();
            let deadline = started + self.cfg.timeout;
            let mut failure = None;
            for (client, via) in &clients {
                http = client;
                let listed = tokio::time::timeout_at(
                    deadline,
                    adapters::models::list(client, &channel, deadline, self.cfg.timeout),
                )
                .await;
                failure = match listed {
                    Ok(Ok(_)) => None,
                    // The node failed, not the key: the next node is tried.
                    Ok(Err(e)) if via.node_failed(&e) => Some(FailureClass::ProxyFailed),
                    Ok(Err(e)) => Some(e.class),
                    Err(_) => Some(FailureClass::Timeout(adapters::TimeoutPhase::Idle)),
                };
                if failure != Some(FailureClass::ProxyFailed) {
                    break;
                }
            }
            let latency = started.elapsed();
            match failure {
                Some(f) if !is_key_class(f) && attempts <= self.cfg.retry_count => {
                    tokio::time::sleep(RETRY_PAUSE).await
                }
                _ => break (failure, latency),
            }
        };
        let (mut balance, mut balance_failure) = (None, None);
        if failure.is_none() {
            let deadline = tokio::time::Instant::now() + self.cfg.timeout;
            match tokio::time::timeout_at(deadline, adapters::balance::read(http, &channel, deadline, self.cfg.timeout))
                .await
            {
                Ok(Ok(b)) => balance = b,
                Ok(Err(e)) => balance_failure = Some(e.class.as_str()),
                Err(_) => balance_failure = Some("timeout"),
            }
        }
        ProbeResult { failure, latency, attempts, balance, balance_failure }
    }
}

/// What an admin's check of a key found and did.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The probe's result.
    pub result: ProbeResult,
    /// The `health.checked` appended for it.
    pub event: HealthChecked,
    /// The state change appended after it (an automatically disabled key that answered).
    pub state_change: Option<UpstreamKeyStateChanged>,
}

impl Prober {
    /// The longest a [`Prober::check`] takes: one try of the model listing and one balance
    /// read, each within the timeout, and a second of slack for appending.
    pub fn check_bound(&self) -> Duration {
        self.cfg.timeout.saturating_mul(2).saturating_add(Duration::from_secs(1))
    }

    /// An admin's check of `key` of channel `c` now: the scheduled probe's code with a single
    /// try (an admin is waiting; the schedule does the retries), within [`Prober::check_bound`].
    /// Its `health.checked` is `on_demand` and keeps the envelope's own id (a UUIDv7) rather
    /// than the slot's UUIDv5, so it neither replaces nor is dropped as a duplicate of the
    /// scheduled probe of the same slot; its `slot_us` is the time of the check. A key the
    /// schedule disabled that answers is enabled as the schedule would; a failure changes no
    /// state (only the schedule counts failures in a row). It goes through `nodes` (the channel's
    /// pool nodes in rotation, [`nodes_in_rotation`]) as the schedule does. Returns once both are
    /// appended.
    pub async fn check(
        &self,
        log: &EventLog,
        instance: &str,
        c: &schemas::control::Channel,
        key: &UpstreamKey,
        nodes: &[Proxy],
    ) -> Result<Checked, nats::LogError> {
        let single = Prober { cfg: HealthConfig { retry_count: 0, ..self.cfg.clone() }, ..self.clone() };
        let result = match tokio::time::timeout(self.check_bound(), single.probe(c, key, nodes)).await {
            Ok(r) => r,
            Err(_) => ProbeResult {
                failure: Some(FailureClass::Timeout(adapters::TimeoutPhase::Idle)),
                latency: self.check_bound(),
                attempts: 1,
                balance: None,
                balance_failure: None,
            },
        };
        let now = now_us();
        let event = result.event(&c.channel_id, &key.key_id, now, true);
        let env = Envelope::new(&c.tenant, instance, now, EventBody::HealthChecked(event.clone()));
        log.append(&env).await?;
        let state_change = match result.failure {
            None => state_change(&c.channel_id, key, &result, 0, self.cfg.failure_threshold),
            Some(_) => None,
        };
        if let Some(change) = &state_change {
            tracing::info!(channel_id = %c.channel_id, key_id = %key.key_id, state = change.state.as_str(),
                "An admin's health check enabled an upstream key again.");
            let mut next =
                Envelope::new(&c.tenant, instance, now_us(), EventBody::UpstreamKeyStateChanged(change.clone()));
            next.causation_id = Some(env.id);
            log.append(&next).await?;
        }
        Ok(Checked { result, event, state_change })
    }
}

/// The start of the probe slot `now_us` falls in.
pub fn slot_of(now_us: i64, interval: Duration) -> i64 {
    let step = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX).max(1);
    now_us - now_us.rem_euclid(step)
}

pub(crate) fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a probe result does to a key's state: `Some(event)` when it changes. `failures` is the
/// count of failed probes in a row including this one. A manual disable is never touched.
pub fn state_change(
    channel_id: &str,
    key: &UpstreamKey,
    result: &ProbeResult,
    failures: u32,
    threshold: u32,
) -> Option<UpstreamKeyStateChanged> {
    if key.manual {
        return None;
    }
    let change = |state, reason: String| UpstreamKeyStateChanged {
        channel_id: channel_id.to_owned(),
        key_id: key.key_id.clone(),
        state,
        until_us: None,
        reason,
        manual: false,
        opens: 0,
    };
    match result.failure {
        // The proxies failed, not the key: it says nothing about the key.
        Some(FailureClass::ProxyFailed) => None,
        None if key.state == UpstreamKeyState::Disabled => Some(change(UpstreamKeyState::Active, "recovered".into())),
        None => None,
        Some(_) if key.state == UpstreamKeyState::Disabled || failures < threshold => None,
        Some(f) if is_key_class(f) => Some(change(UpstreamKeyState::Disabled, f.as_str().to_owned())),
        Some(f) => Some(change(UpstreamKeyState::Disabled, format!("health_check_transient_{}", f.as_str()))),
    }
}

/// The nodes of `c`'s proxy pool that the control log keeps in rotation at `now` (an open
/// breaker whose period is over is in: the probe is its trial), in the order they were added.
pub fn nodes_in_rotation(m: &ControlModel, c: &schemas::control::Channel, now: i64) -> Vec<Proxy> {
    let Some(pool) = &c.proxy_pool else { return Vec::new() };
    m.pool(pool)
        .into_iter()
        .filter(|p| p.state == ProxyState::Active || p.until_us.is_some_and(|u| u <= now))
        .cloned()
        .collect()
}

/// Follows the control stream into `model`.
async fn follow_control(log: EventLog, model: Arc<RwLock<ControlModel>>, mut shutdown: watch::Receiver<bool>) {
    let mut tail = log.tail(Stream::Control, 0);
    loop {
        let next = tokio::select! {
            next = tail.next() => next,
            _ = shutdown.wait_for(|v| *v) => None,
        };
        match next {
            Some(Ok(ev)) => {
                if let Ok(env) = ev.decode()
                    && let Ok(mut m) = model.write()
                {
                    m.apply(ev.seq, &env);
                }
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "Health checks: control stream failed; following again.");
                tokio::time::sleep(Duration::from_secs(1)).await;
                let after = model.read().map(|m| m.seq).unwrap_or(0);
                tail = log.tail(Stream::Control, after);
            }
            None => return,
        }
    }
}

/// How long a starting worker waits for the `health` projection to fold the probes already in
/// the log, so the streaks it takes up are the latest ones.
const STREAKS_CATCH_UP: Duration = Duration::from_secs(10);

/// The streaks of failed probes in a row as the `health` projection keeps them (so a restarted
/// worker continues the count), once it has folded the ops stream as far as it reached at start
/// (or after [`STREAKS_CATCH_UP`]). Empty when the read store does not answer.
pub async fn streaks(store: &projections::ReadStore, log: &EventLog) -> HashMap<String, u32> {
    let deadline = tokio::time::Instant::now() + STREAKS_CATCH_UP;
    let last = log.last_seq(Stream::Ops).await.unwrap_or(0);
    loop {
        let applied = projections::read::checkpoints(store)
            .await
            .ok()
            .and_then(|c| c.into_iter().find(|c| c.projection == projections::Projection::Health.name()))
            .map_or(0, |c| c.seq);
        if applied >= last || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    match projections::read::failure_streaks(store).await {
        Ok(s) => s.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "Health checks: failure streaks not read; counting from zero.");
            HashMap::new()
        }
    }
}

/// Appends `body` after the `health.checked` with id `cause`, logging a failure.
async fn append_change(log: &EventLog, tenant: &str, instance: &str, body: EventBody, cause: uuid::Uuid) {
    let mut env = Envelope::new(tenant, instance, now_us(), body);
    env.causation_id = Some(cause);
    if let Err(e) = log.append(&env).await {
        tracing::warn!(error = %e, "Health check state change not stored.");
    }
}

/// Runs the health checks until `shutdown` turns true: every interval each proxy not disabled by
/// an admin, then each enabled or automatically disabled key of each enabled channel is probed
/// (at most [`MAX_CONCURRENT_PROBES`] at once); each result is a `health.checked`, and a key or
/// proxy that failed `failure_threshold` probes in a row is disabled (one that answers again is
/// enabled). The streaks start from the `health` projection in `store` ([`streaks`]).
pub async fn run(
    prober: Prober,
    log: EventLog,
    store: Option<projections::ReadStore>,
    instance: String,
    shutdown: watch::Receiver<bool>,
) {
    if !prober.cfg.enabled {
        return;
    }
    let model = Arc::new(RwLock::new(ControlModel::default()));
    tokio::spawn(follow_control(log.clone(), model.clone(), shutdown.clone()));
    let mut failures: HashMap<String, u32> = match &store {
        Some(store) => streaks(store, &log).await,
        None => HashMap::new(),
    };
    let mut stop = shutdown.clone();
    // The first round waits a little, so the control stream has been read.
    let mut next = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let stopped = tokio::select! {
            _ = tokio::time::sleep_until(next) => false,
            _ = stop.wait_for(|v| *v) => true,
        };
        if stopped {
            return;
        }
        next = tokio::time::Instant::now() + prober.cfg.interval;
        let slot_us = slot_of(now_us(), prober.cfg.interval);
        probe_proxies(&prober, &log, &instance, &model, &mut failures, slot_us).await;
        probe_keys(&prober, &log, &instance, &model, &mut failures, slot_us).await;
    }
}

/// One round of proxy probes.
async fn probe_proxies(
    prober: &Prober,
    log: &EventLog,
    instance: &str,
    model: &RwLock<ControlModel>,
    failures: &mut HashMap<String, u32>,
    slot_us: i64,
) {
    if prober.cfg.proxy_target.is_none() {
        return;
    }
    let proxies: Vec<Proxy> = match model.read() {
        Ok(m) => m.proxies.values().filter(|p| !p.manual).cloned().collect(),
        Err(_) => Vec::new(),
    };
    let results: Vec<_> = futures::stream::iter(proxies)
        .map(|p| async move {
            let r = prober.probe_proxy(&p).await;
            (p, r)
        })
        .buffer_unordered(MAX_CONCURRENT_PROBES)
        .collect()
        .await;
    for (p, r) in results {
        // The target is refused by the address policy: no proxy's failure.
        let Some(r) = r else { continue };
        let count = failures.entry(p.proxy_id.clone()).or_insert(0);
        *count = if r.outcome == ProxyOutcome::Ok { 0 } else { count.saturating_add(1) };
        let mut env = Envelope::new(
            schemas::GLOBAL_TENANT,
            instance,
            now_us(),
            EventBody::HealthChecked(r.event(&p.proxy_id, slot_us, false)),
        );
        env.id = health_check_id(&p.proxy_id, slot_us);
        if let Err(e) = log.append(&env).await {
            tracing::warn!(error = %e, proxy_id = %p.proxy_id, "Health check result not stored.");
        }
        if let Some(change) = proxy_state_change(&p, r.outcome, *count, prober.cfg.failure_threshold) {
            tracing::warn!(proxy_id = %p.proxy_id, proxy = %p.masked_url(), state = change.state.as_str(),
                reason = %change.reason, "Health checks changed a proxy's state.");
            let body = EventBody::ProxyStateChanged(change);
            append_change(log, schemas::GLOBAL_TENANT, instance, body, env.id).await;
        }
    }
}

/// One round of key probes.
async fn probe_keys(
    prober: &Prober,
    log: &EventLog,
    instance: &str,
    model: &RwLock<ControlModel>,
    failures: &mut HashMap<String, u32>,
    slot_us: i64,
) {
    let now = now_us();
    let targets: Vec<(schemas::control::Channel, UpstreamKey, Vec<Proxy>)> = match model.read() {
        Ok(m) => m
            .channels
            .values()
            .filter(|c| c.enabled)
            .flat_map(|c| {
                let nodes = nodes_in_rotation(&m, c, now);
                c.keys.iter().filter(|k| !k.manual).map(move |k| (c.clone(), k.clone(), nodes.clone()))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let results: Vec<_> = futures::stream::iter(targets)
        .map(|(c, k, nodes)| async move {
            let r = prober.probe(&c, &k, &nodes).await;
            (c, k, r)
        })
        .buffer_unordered(MAX_CONCURRENT_PROBES)
        .collect()
        .await;
    for (c, k, r) in results {
        let count = failures.entry(k.key_id.clone()).or_insert(0);
        *count = match r.failure {
            // Not the key's failure: its count stays where it was.
            Some(FailureClass::ProxyFailed) => *count,
            Some(_) => count.saturating_add(1),
            None => 0,
        };
        let checked = r.event(&c.channel_id, &k.key_id, slot_us, false);
        let mut env = Envelope::new(&c.tenant, instance, now_us(), EventBody::HealthChecked(checked));
        env.id = health_check_id(&k.key_id, slot_us);
        if let Err(e) = log.append(&env).await {
            tracing::warn!(error = %e, key_id = %k.key_id, "Health check result not stored.");
        }
        if let Some(change) = state_change(&c.channel_id, &k, &r, *count, prober.cfg.failure_threshold) {
            tracing::info!(channel_id = %c.channel_id, key_id = %k.key_id, state = change.state.as_str(),
                reason = %change.reason, "Health checks changed an upstream key's state.");
            append_change(log, &c.tenant, instance, EventBody::UpstreamKeyStateChanged(change), env.id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: UpstreamKeyState, manual: bool) -> UpstreamKey {
        UpstreamKey {
            key_id: "ukey_1".into(),
            sealed: None,
            fingerprint: None,
            state,
            until_us: None,
            reason: None,
            manual,
            opens: 0,
            added_at_us: 0,
            low_balance_nanos: None,
        }
    }

    fn result(failure: Option<FailureClass>) -> ProbeResult {
        ProbeResult { failure, latency: Duration::from_millis(5), attempts: 1, balance: None, balance_failure: None }
    }

    #[test]
    fn a_key_is_disabled_at_the_threshold_and_enabled_when_it_answers_again() {
        let active = key(UpstreamKeyState::Active, false);
        let invalid = result(Some(FailureClass::KeyInvalid));
        assert_eq!(state_change("ch_1", &active, &invalid, 2, 3), None);
        let off = state_change("ch_1", &active, &invalid, 3, 3).map(|c| (c.state, c.reason, c.manual));
        assert_eq!(off, Some((UpstreamKeyState::Disabled, "key_invalid".to_owned(), false)));
        let slow = result(Some(FailureClass::Timeout(adapters::TimeoutPhase::FirstByte)));
        let reason = state_change("ch_1", &active, &slow, 3, 3).map(|c| c.reason).unwrap_or_default();
        assert!(reason.contains("transient"), "{reason}");
        let disabled = key(UpstreamKeyState::Disabled, false);
        assert_eq!(state_change("ch_1", &disabled, &invalid, 9, 3), None, "no second disable");
        let back = state_change("ch_1", &disabled, &result(None), 0, 3).map(|c| c.state);
        assert_eq!(back, Some(UpstreamKeyState::Active));
        assert_eq!(state_change("ch_1", &active, &result(None), 0, 3), None);
    }

    #[test]
    fn a_manual_disable_is_never_undone_by_a_probe() {
        let manual = key(UpstreamKeyState::Disabled, true);
        assert_eq!(state_change("ch_1", &manual, &result(None), 0, 3), None);
        assert_eq!(state_change("ch_1", &manual, &result(Some(FailureClass::KeyInvalid)), 5, 3), None);
    }

    #[test]
    fn a_probe_slot_is_the_interval_the_time_falls_in_and_its_event_is_small() {
        let i = Duration::from_secs(60);
        assert_eq!(slot_of(125_000_000, i), 120_000_000);
        assert_eq!(slot_of(120_000_000, i), 120_000_000);
        let ev = result(Some(FailureClass::KeyInvalid)).event("ch_1", "ukey_1", 120_000_000, false);
        assert_eq!((ev.outcome.as_str(), ev.resource_id.as_str()), ("key_invalid", "ukey_1"));
        assert!(ev.reason.is_some_and(|r| r.len() <= schemas::MAX_HEALTH_REASON));
        assert_eq!(result(None).event("ch_1", "ukey_1", 0, false).reason, None);
    }
}
