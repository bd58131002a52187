//! In-memory control state (keys, channels, prices) folded from `LLMR_CONTROL` through the one
//! control model (`schemas::control`, which holds the rules), and the task that keeps following
//! the stream. Readers take an `Arc` snapshot under a lock held for one pointer
//! clone; the follower builds the next snapshot off to the side and swaps it in.
//! No request handling and no upstream I/O here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use nats::EventLog;
use schemas::control::{Change, ControlModel, Outcome, tighter};
use schemas::secret::MasterKey;
use schemas::{AppliedPrice, Envelope, Stream};
use tokio::sync::{Notify, watch};

use crate::health::{KeyHealth, KeyStatus};
use crate::proxy::{Pool, ProxyNode};
pub use adapters::{ANY_MODEL, Channel};

/// A virtual key as the gateway knows it. Never holds the key itself.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// `key_…`.
    pub key_id: String,
    /// The tenant that owns the key.
    pub tenant: String,
    /// Models the key may use; `None` = all.
    pub models: Option<Vec<String>>,
    /// Revoked keys stay in the table so a late `issued` replay cannot resurrect them.
    pub revoked: bool,
    /// The tighter of the key's and its tenant's cap on output tokens; `None` = only the
    /// gateway's own limit applies.
    pub max_output_tokens: Option<u64>,
    /// The tighter of the key's and its tenant's cap on choices (`n`, `candidateCount`).
    pub max_n: Option<u64>,
    /// When the key stops working (µs since the epoch); `None` = never.
    pub expires_at_us: Option<i64>,
}

impl KeyEntry {
    /// Whether this key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Whether the key has expired at `now_us`.
    pub fn expired(&self, now_us: i64) -> bool {
        self.expires_at_us.is_some_and(|at| now_us >= at)
    }
}

/// The gateway's entry for key `k`, its caps the tighter of its own and its tenant's.
fn key_entry(model: &ControlModel, k: &schemas::control::Key) -> KeyEntry {
    let tenant = model.tenants.get(&k.tenant);
    KeyEntry {
        key_id: k.key_id.clone(),
        tenant: k.tenant.clone(),
        models: k.models.clone(),
        revoked: k.revoked(),
        max_output_tokens: tighter(k.max_output_tokens, tenant.and_then(|t| t.max_output_tokens)),
        max_n: tighter(k.max_n, tenant.and_then(|t| t.max_n)),
        expires_at_us: k.expires_at_us,
    }
}

/// One upstream key of a channel as the gateway routes with it: its id, the state the log gives
/// it, and this gateway's health counters (shared across snapshots).
#[derive(Debug)]
pub struct UpstreamKey {
    /// `ukey_…`
    pub id: String,
    /// Its state in the control log.
    pub status: KeyStatus,
    /// This gateway's counters and breaker.
    pub health: Arc<KeyHealth>,
}

impl UpstreamKey {
    /// Whether the key is out of rotation at `now_us` (a half-open key is in).
    pub fn blocked(&self, now_us: i64) -> bool {
        self.health.blocked(&self.status, now_us)
    }
}

/// A channel through one of its keys: what one attempt uses.
#[derive(Debug, Clone)]
pub struct Lane {
    /// The channel, carrying this key as its `api_key`.
    pub channel: Arc<Channel>,
    /// The key.
    pub key: Arc<UpstreamKey>,
}

/// A channel's lanes, one per key, and the rotation among them.
#[derive(Debug)]
pub struct ChannelLanes {
    /// The channel's entry (the same as in [`ControlState::channels`]), so a scan of the lanes
    /// needs no lookup by id.
    pub channel: Arc<Channel>,
    /// In the order the keys were added.
    pub lanes: Vec<Lane>,
    /// What routing reads of each lane's key, at the same index as in `lanes`, side by side so
    /// a scan of many keys touches little memory.
    pub keys: Vec<RouteKey>,
    /// Advanced once per request that considers the channel (shared across snapshots).
    pub rotation: Arc<AtomicUsize>,
    /// Whether the channel serves every tenant.
    pub global: bool,
    /// The channel's price overrides as route costs (input plus output price per million
    /// tokens, in nanos), by model: kept in step with [`ControlState::channel_prices`].
    pub override_costs: Vec<(String, i128)>,
}

/// One key of a channel as a routing scan reads it.
#[derive(Debug, Clone)]
pub struct RouteKey {
    /// The key opened (a key that did not is never routed to).
    pub usable: bool,
    /// Until when the control log keeps the key out ([`KeyStatus::blocked_until`]).
    pub log_until_us: i64,
    /// The key's counters and breaker (the lane's own).
    pub health: Arc<KeyHealth>,
}

impl RouteKey {
    /// Whether the key is out of rotation at `now_us` (as [`UpstreamKey::blocked`]).
    pub fn blocked(&self, now_us: i64) -> bool {
        self.health.blocked_after(self.log_until_us, now_us)
    }

    /// When the key is back at the earliest (as [`KeyHealth::back_at`]).
    pub fn back_at(&self) -> i64 {
        self.health.back_at_after(self.log_until_us)
    }
}

impl ChannelLanes {
    /// The route cost of the channel's own price for `model`, if it overrides the model's.
    pub fn override_cost(&self, model: &str) -> Option<i128> {
        self.override_costs.iter().find(|(m, _)| m == model).map(|(_, cost)| *cost)
    }
}

/// The cost `lowest-cost` orders channels by: input plus output price per million tokens.
pub fn route_cost(price: &AppliedPrice) -> i128 {
    i128::from(price.input_per_mtok_nanos) + i128::from(price.output_per_mtok_nanos)
}

fn override_costs(prices: Option<&HashMap<String, Arc<AppliedPrice>>>) -> Vec<(String, i128)> {
    prices.map(|by_model| by_model.iter().map(|(m, p)| (m.clone(), route_cost(p))).collect()).unwrap_or_default()
}

/// One immutable snapshot of the control state, derived from the [`ControlModel`] for the hot
/// path: keys by hash, channels with their opened credential, prices ready to charge.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    /// Keys by hex SHA-256, revoked ones included.
    pub keys: HashMap<String, Arc<KeyEntry>>,
    /// Channels by id (each with its first usable key).
    pub channels: HashMap<String, Arc<Channel>>,
    /// Each channel's keys, by channel id.
    pub lanes: HashMap<String, Arc<ChannelLanes>>,
    /// The model-wide price in force per model, its `version` being the `price.published` event
    /// id. Channel overrides are in `channel_prices`; charge through [`ControlState::price_for`].
    pub prices: HashMap<String, Arc<AppliedPrice>>,
    /// Routes by model (strategy and fallback list); absent: `priority`, no fallback.
    pub routes: HashMap<String, Arc<schemas::RouteSet>>,
    /// Per-channel overrides: channel id → model → price (the model's rules: see
    /// `schemas::control`).
    pub channel_prices: HashMap<String, HashMap<String, Arc<AppliedPrice>>>,
    /// Egress proxy pools by name (a pool without a live proxy is absent).
    pub pools: HashMap<String, Arc<Pool>>,
    /// The channels that list each model (those listing `*` are in `any_model` instead), kept
    /// with `lanes`: what a routing decision scans instead of every channel.
    pub by_model: HashMap<String, Vec<Serving>>,
    /// The channels that list `*`.
    pub any_model: Vec<Arc<ChannelLanes>>,
}

/// A channel listing a model, with the route cost of its own price for it.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The channel's lanes.
    pub lanes: Arc<ChannelLanes>,
    /// Its override's route cost for the model ([`ChannelLanes::override_cost`]).
    pub override_cost: Option<i128>,
}

impl ControlState {
    /// The price to charge for `model` served by channel `channel_id`: the channel's override if
    /// it has one, else the model's price on every channel, else `None` (the call costs 0).
    pub fn price_for(&self, channel_id: &str, model: &str) -> Option<Arc<AppliedPrice>> {
        self.channel_prices
            .get(channel_id)
            .and_then(|by_model| by_model.get(model))
            .or_else(|| self.prices.get(model))
            .cloned()
    }

    /// Brings the entity `change` names in line with `model` (which has just applied it).
    fn update(&mut self, model: &ControlModel, change: &Change, master_key: &MasterKey) {
        match change {
            Change::User(_) | Change::SessionSecret => {}
            Change::Proxy(id) => {
                if let Some(p) = model.proxies.get(id) {
                    self.update_pool(model, &p.pool, master_key);
                }
            }
            Change::ProxyRemoved(id) => {
                let pool =
                    self.pools.iter().find(|(_, p)| p.nodes.iter().any(|n| &n.id == id)).map(|(name, _)| name.clone());
                if let Some(pool) = pool {
                    self.update_pool(model, &pool, master_key);
                }
            }
            // The tenant's caps are folded into each of its keys' entries.
            Change::Tenant(name) => {
                for k in model.keys.values().filter(|k| &k.tenant == name) {
                    self.keys.insert(k.hash.clone(), Arc::new(key_entry(model, k)));
                }
            }
            Change::Key(id) => {
                if let Some(k) = model.keys.get(id) {
                    self.keys.insert(k.hash.clone(), Arc::new(key_entry(model, k)));
                }
            }
            Change::Channel(id) => match model.channels.get(id) {
                Some(c) => self.update_channel(c, master_key),
                None => {
                    self.channels.remove(id);
                    self.set_lanes(id, None);
                }
            },
            Change::ChannelRemoved(id) => {
                self.channels.remove(id);
                self.set_lanes(id, None);
                self.channel_prices.remove(id);
            }
            Change::Route(name) => match model.routes.get(name) {
                Some(r) => {
                    self.routes.insert(name.clone(), Arc::new(r.clone()));
                }
                None => {
                    self.routes.remove(name);
                }
            },
            Change::Price { model: name, channel_id } => {
                let price = match channel_id {
                    None => model.prices.get(name),
                    Some(ch) => model.channel_prices.get(ch).and_then(|m| m.get(name)),
                };
                let Some(price) = price.map(|p| Arc::new(p.applied())) else { return };
                match channel_id {
                    None => {
                        self.prices.insert(name.clone(), price);
                    }
                    Some(ch) => {
                        self.channel_prices.entry(ch.clone()).or_default().insert(name.clone(), price);
                        if let Some(of) = self.lanes.get(ch) {
                            let costs = override_costs(self.channel_prices.get(ch));
                            let next = ChannelLanes {
                                channel: of.channel.clone(),
                                global: of.global,
                                lanes: of.lanes.clone(),
                                keys: of.keys.clone(),
                                rotation: of.rotation.clone(),
                                override_costs: costs,
                            };
                            self.set_lanes(ch, Some(Arc::new(next)));
                        }
                    }
                }
            }
        }
    }
}

impl ControlState {
    /// Replaces (or with `None` removes) channel `id`'s lanes, and its place in `by_model` and
    /// `any_model` with them.
    fn set_lanes(&mut self, id: &str, next: Option<Arc<ChannelLanes>>) {
        let previous = match &next {
            Some(n) => self.lanes.insert(id.to_owned(), n.clone()),
            None => self.lanes.remove(id),
        };
        if let Some(p) = previous {
            if p.channel.models.iter().any(|m| m == ANY_MODEL) {
                self.any_model.retain(|l| l.channel.id != id);
            } else {
                for m in &p.channel.models {
                    if let Some(list) = self.by_model.get_mut(m) {
                        list.retain(|s| s.lanes.channel.id != id);
                        if list.is_empty() {
                            self.by_model.remove(m);
                        }
                    }
                }
            }
        }
        let Some(n) = next else { return };
        if n.channel.models.iter().any(|m| m == ANY_MODEL) {
            self.any_model.push(n);
            return;
        }
        for m in &n.channel.models {
            let list = self.by_model.entry(m.clone()).or_default();
            // A model listed twice is served once.
            if !list.last().is_some_and(|s| Arc::ptr_eq(&s.lanes, &n)) {
                list.push(Serving { lanes: n.clone(), override_cost: n.override_cost(m) });
            }
        }
    }

    /// Rebuilds pool `name` from the model; each node keeps its breaker and client, and the
    /// pool what it remembers of each key's node.
    fn update_pool(&mut self, model: &ControlModel, name: &str, master_key: &MasterKey) {
        let old = self.pools.get(name).cloned();
        let nodes: Vec<Arc<ProxyNode>> = model
            .pool(name)
            .into_iter()
            .map(|p| {
                let previous = old.as_ref().and_then(|o| o.nodes.iter().find(|n| n.id == p.proxy_id));
                Arc::new(ProxyNode::open(p, master_key, previous.map(|n| n.as_ref())))
            })
            .collect();
        if nodes.is_empty() {
            self.pools.remove(name);
        } else {
            self.pools.insert(name.to_owned(), Arc::new(Pool::new(nodes, old.as_deref())));
        }
    }

    /// Rebuilds a channel's entry and lanes from the model; each key keeps its health counters
    /// (and the channel its rotation) from the previous snapshot.
    fn update_channel(&mut self, c: &schemas::control::Channel, master_key: &MasterKey) {
        let id = &c.channel_id;
        let old = self.lanes.get(id).cloned();
        // The channel's settings as the adapters open them; its keys are opened per lane below.
        let base = Channel { api_key: None, key_unusable: false, ..Channel::open(c, master_key) };
        let mut lanes = Vec::with_capacity(c.keys.len());
        for k in &c.keys {
            let (api_key, key_unusable) = open_key(master_key, k.sealed.as_ref(), id, &k.seal_context(id));
            let status = KeyStatus { state: k.state, until_us: k.until_us, manual: k.manual, opens: k.opens };
            let previous = old.as_ref().and_then(|o| o.lanes.iter().find(|l| l.key.id == k.key_id));
            let health = match previous {
                Some(p) => {
                    if status.state == schemas::UpstreamKeyState::Active
                        && p.key.status.state != schemas::UpstreamKeyState::Active
                    {
                        p.key.health.reset();
                    }
                    p.key.health.clone()
                }
                None => Arc::new(KeyHealth::default()),
            };
            health.note_opens(status.opens);
            let channel = Arc::new(Channel { api_key, key_unusable, ..base.clone() });
            lanes.push(Lane { channel, key: Arc::new(UpstreamKey { id: k.key_id.clone(), status, health }) });
        }
        let entry = match lanes.iter().find(|l| !l.channel.key_unusable) {
            Some(l) => l.channel.clone(),
            None => Arc::new(Channel { key_unusable: true, ..base }),
        };
        self.channels.insert(id.clone(), entry.clone());
        let rotation = old.map(|o| o.rotation.clone()).unwrap_or_default();
        let keys = lanes
            .iter()
            .map(|l| RouteKey {
                usable: !l.channel.key_unusable,
                log_until_us: l.key.status.blocked_until(),
                health: l.key.health.clone(),
            })
            .collect();
        let override_costs = override_costs(self.channel_prices.get(id));
        self.set_lanes(
            id,
            Some(Arc::new(ChannelLanes {
                global: entry.tenant == schemas::GLOBAL_TENANT,
                channel: entry,
                lanes,
                keys,
                rotation,
                override_costs,
            })),
        );
    }
}

/// The control model and the hot-path snapshot derived from it, folded together.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    /// The model (the rules).
    pub model: ControlModel,
    /// The derived snapshot.
    pub state: ControlState,
}

impl Folder {
    /// Folds in the event at sequence `seq`; events at or below the last applied one are skipped.
    pub fn apply(&mut self, seq: u64, env: &Envelope, master_key: &MasterKey) {
        if seq != 0 && seq <= self.model.seq {
            return;
        }
        match self.model.apply(seq, env) {
            Outcome::Changed(change) => self.state.update(&self.model, &change, master_key),
            Outcome::Rejected(reason) => {
                tracing::warn!(seq, event = %env.id, reason, "Control event refused by the control model.");
            }
            Outcome::Unchanged | Outcome::NotControl => {}
        }
    }
}

fn open_key(
    master_key: &MasterKey,
    sealed: Option<&schemas::secret::Sealed>,
    channel_id: &str,
    context: &str,
) -> (Option<Arc<str>>, bool) {
    match sealed {
        None => (None, false),
        Some(s) => match master_key.open(s, context) {
            Ok(k) => (Some(Arc::from(k)), false),
            Err(e) => {
                tracing::warn!(channel_id, error = %e, "Channel key could not be opened; it is out of rotation.");
                (None, true)
            }
        },
    }
}

/// The shared, live control state.
pub struct Control {
    current: RwLock<Arc<ControlState>>,
    seq: AtomicU64,
    following: AtomicBool,
    applied: watch::Sender<u64>,
    log: EventLog,
    /// Wakes the follower to re-open its tail, which reads the log at once (an embedded tail
    /// otherwise sees another process's appends only at its next poll).
    nudge: Arc<Notify>,
    flight: tokio::sync::Mutex<Flight>,
    catch_ups: AtomicU64,
}

/// The last catch-up's look at the log's end.
#[derive(Default)]
struct Flight {
    started: Option<Instant>,
    target: u64,
}

/// At most one look at the log's end per this interval, however many unknown keys arrive: a
/// flood of bad keys costs at most 40 cheap reads a second, and a new key's first request waits
/// at most this long for its turn.
const CATCH_UP_EVERY: Duration = Duration::from_millis(25);
/// Bound on each step of a catch-up (reading the log's end, then waiting for the follower); past
/// it the request is answered from the state as it is.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(1);

impl Control {
    /// The current snapshot (one `Arc` clone under a read lock).
    pub fn snapshot(&self) -> Arc<ControlState> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The last `LLMR_CONTROL` sequence folded in.
    pub fn seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    /// Whether the follower task is still running.
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// The key whose hash is `hash` (revoked or not). A hash the state does not know makes the
    /// gateway catch up with the control log once before it answers `None`, so a key works on
    /// its first request after `api_key.issued` was stored, whichever process stored it. Known
    /// hashes never wait; see [`Control::catch_up`] for the bounds.
    pub async fn key(&self, hash: &str) -> Option<Arc<KeyEntry>> {
        if let Some(k) = self.snapshot().keys.get(hash) {
            return Some(k.clone());
        }
        self.catch_up().await;
        self.snapshot().keys.get(hash).cloned()
    }

    /// Waits until everything the log held when this call began is folded in. Coalesced: one
    /// caller reads the log's end while the others wait, and every caller that arrived before a
    /// read began takes its answer. Rate-limited to one read per [`CATCH_UP_EVERY`]. Each step is
    /// bounded by [`CATCH_UP_TIMEOUT`]; a log that cannot answer leaves the state as it is.
    pub async fn catch_up(&self) {
        let arrived = Instant::now();
        let target = {
            let mut flight = self.flight.lock().await;
            match flight.started {
                Some(started) if started >= arrived => flight.target,
                previous => {
                    if let Some(previous) = previous {
                        tokio::time::sleep_until((previous + CATCH_UP_EVERY).into()).await;
                    }
                    flight.started = Some(Instant::now());
                    self.catch_ups.fetch_add(1, Ordering::Relaxed);
                    flight.target =
                        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.log.last_seq(Stream::Control)).await {
                            Ok(Ok(seq)) => seq,
                            Ok(Err(e)) => {
                                tracing::warn!(error = %e, "Control catch-up could not read the log's end.");
                                0
                            }
                            Err(_) => 0,
                        };
                    if flight.target > self.seq() {
                        self.nudge.notify_one();
                    }
                    flight.target
                }
            }
        };
        if target <= self.seq() {
            return;
        }
        let mut applied = self.applied.subscribe();
        let _ = tokio::time::timeout(CATCH_UP_TIMEOUT, applied.wait_for(|s| *s >= target)).await;
    }

    /// How many times a catch-up has read the log's end.
    pub fn catch_ups(&self) -> u64 {
        self.catch_ups.load(Ordering::Relaxed)
    }

    /// A receiver of the last applied control sequence.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn publish(&self, next: ControlState, seq: u64) {
        let next = Arc::new(next);
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        self.seq.store(seq, Ordering::Release);
        self.applied.send_replace(seq);
    }

    /// Starts following `LLMR_CONTROL` from sequence 0 and returns once everything up to
    /// `until` is folded in (or the tail ends, which is an error).
    pub async fn start(log: &EventLog, master_key: MasterKey, until: u64) -> Result<Arc<Control>, nats::LogError> {
        let (applied, mut watcher) = watch::channel(0u64);
        let nudge = Arc::new(Notify::new());
        let control = Arc::new(Control {
            current: RwLock::new(Arc::new(ControlState::default())),
            seq: AtomicU64::new(0),
            following: AtomicBool::new(true),
            applied,
            log: log.clone(),
            nudge: nudge.clone(),
            flight: tokio::sync::Mutex::new(Flight::default()),
            catch_ups: AtomicU64::new(0),
        });
        tokio::spawn(follow(log.clone(), master_key, Arc::downgrade(&control), nudge));
        if until > 0 {
            watcher.wait_for(|s| *s >= until).await.map_err(|_| nats::LogError::Closed)?;
        }
        if !control.following() {
            return Err(nats::LogError::Closed);
        }
        Ok(control)
    }
}

/// How long to wait before re-opening a control tail that ended (a log error): short, because
/// while it is closed revocations are not seen.
const RETAIL_BACKOFF: Duration = Duration::from_millis(200);

/// Follows the control stream for as long as the gateway lives. Folds every ready event into a
/// private copy, then publishes one snapshot per batch (so a catch-up of N events costs one clone,
/// not N). A tail that ends (a log error) is re-opened after the last applied sequence; while it
/// is closed the gateway reports not ready, so health checks take it out of rotation. A nudge
/// (from [`Control::catch_up`]) re-opens the tail at once.
async fn follow(log: EventLog, master_key: MasterKey, control: Weak<Control>, nudge: Arc<Notify>) {
    let mut folder = Folder::default();
    loop {
        let mut tail = log.tail(Stream::Control, folder.model.seq);
        let nudged = loop {
            let first = tokio::select! {
                first = tail.next() => first,
                () = nudge.notified() => break true,
            };
            let Some(first) = first else { break false };
            let mut last_seq = None;
            let mut item = Some(first);
            while let Some(next) = item {
                match next {
                    Ok(ev) => {
                        match ev.decode() {
                            Ok(env) => folder.apply(ev.seq, &env, &master_key),
                            Err(e) => tracing::warn!(seq = ev.seq, error = %e, "Undecodable control event skipped."),
                        }
                        folder.model.seq = folder.model.seq.max(ev.seq);
                        last_seq = Some(ev.seq);
                    }
                    Err(e) => tracing::warn!(error = %e, "Control tail reported an error."),
                }
                item = tail.next().now_or_never().flatten();
            }
            let Some(control) = control.upgrade() else { return };
            if let Some(seq) = last_seq {
                control.publish(folder.state.clone(), seq);
                control.following.store(true, Ordering::Release);
            }
        };
        if nudged {
            continue;
        }
        let Some(control) = control.upgrade() else { return };
        tracing::error!(after = folder.model.seq, "Control stream tail ended; re-opening it.");
        control.following.store(false, Ordering::Release);
        drop(control);
        tokio::time::sleep(RETAIL_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use schemas::{ChannelAdded, ChannelRemoved, ChannelUpdated, EventBody, GLOBAL_TENANT, PricePublished};

    use super::*;

    fn event(body: EventBody) -> Envelope {
        Envelope::new(GLOBAL_TENANT, "test", 1, body)
    }

    fn price(model: &str, channel_id: Option<&str>, input: i64) -> Envelope {
        event(EventBody::PricePublished(PricePublished {
            model: model.into(),
            channel_id: channel_id.map(str::to_owned),
            currency: "USD".into(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: input * 4,
            cached_input_per_mtok_nanos: None,
            cache_write_per_mtok_nanos: None,
        }))
    }

    fn channel_added(id: &str) -> Envelope {
        event(EventBody::ChannelAdded(ChannelAdded {
            channel_id: id.into(),
            name: id.into(),
            provider: "openai".into(),
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            models: vec!["gpt-4o".into()],
            priority: 0,
            weight: 1,
            api_version: None,
            insecure_http: false,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }))
    }

    fn fold(events: &[Envelope]) -> ControlState {
        let master = MasterKey::generate();
        let mut folder = Folder::default();
        for (i, e) in events.iter().enumerate() {
            folder.apply(i as u64 + 1, e, &master);
        }
        folder.state
    }

    fn input(p: Option<Arc<AppliedPrice>>) -> Option<i64> {
        p.map(|p| p.input_per_mtok_nanos)
    }

    #[test]
    fn a_channel_override_wins_on_its_channel_only_and_the_model_price_applies_elsewhere() {
        let model_wide = price("gpt-4o", None, 100);
        let override_a = price("gpt-4o", Some("ch_a"), 70);
        let state = fold(&[channel_added("ch_a"), channel_added("ch_b"), model_wide.clone(), override_a.clone()]);
        let on_a = state.price_for("ch_a", "gpt-4o");
        assert_eq!(on_a.as_ref().map(|p| p.version.clone()), Some(override_a.id.to_string()));
        assert_eq!(input(on_a), Some(70));
        let on_b = state.price_for("ch_b", "gpt-4o");
        assert_eq!(on_b.as_ref().map(|p| p.version.clone()), Some(model_wide.id.to_string()));
        assert_eq!(input(on_b), Some(100));
        assert_eq!(input(state.prices.get("gpt-4o").cloned()), Some(100), "an override leaves the model price");
        assert_eq!(state.price_for("ch_a", "gpt-4o-mini"), None, "another model has no price");
    }

    #[test]
    fn an_override_without_a_model_price_applies_on_its_channel_and_nowhere_else() {
        let state = fold(&[channel_added("ch_a"), price("m", Some("ch_a"), 5)]);
        assert_eq!(input(state.price_for("ch_a", "m")), Some(5));
        assert_eq!(state.price_for("ch_b", "m"), None);
    }

    #[test]
    fn later_prices_replace_earlier_ones_per_channel_and_model_wide() {
        let state = fold(&[
            channel_added("ch_a"),
            price("m", Some("ch_a"), 5),
            price("m", None, 10),
            price("m", Some("ch_a"), 6),
            price("m", None, 11),
        ]);
        assert_eq!(input(state.price_for("ch_a", "m")), Some(6));
        assert_eq!(input(state.price_for("ch_b", "m")), Some(11));
    }

    #[test]
    fn a_channel_updated_or_added_again_keeps_its_overrides_and_a_removed_one_drops_them() {
        let update = event(EventBody::ChannelUpdated(ChannelUpdated {
            channel_id: "ch_a".into(),
            priority: Some(3),
            ..ChannelUpdated::default()
        }));
        let mut events = vec![channel_added("ch_a"), price("m", None, 10), price("m", Some("ch_a"), 5), update];
        events.push(channel_added("ch_a"));
        let state = fold(&events);
        assert_eq!(input(state.price_for("ch_a", "m")), Some(5));

        events.push(event(EventBody::ChannelRemoved(ChannelRemoved { channel_id: "ch_a".into() })));
        let state = fold(&events);
        assert!(state.channel_prices.is_empty(), "{:?}", state.channel_prices);
        assert_eq!(input(state.price_for("ch_a", "m")), Some(10), "only the model price is left");
    }

    #[test]
    fn a_channel_moved_to_a_refused_literal_host_is_marked_and_moved_back_is_cleared() {
        let to = |url: &str| {
            event(EventBody::ChannelUpdated(ChannelUpdated {
                channel_id: "ch_a".into(),
                base_url: Some(url.into()),
                ..ChannelUpdated::default()
            }))
        };
        let refused = |events: &[Envelope]| fold(events).channels.get("ch_a").and_then(|c| c.egress_refused.clone());
        assert_eq!(refused(&[channel_added("ch_a")]), None);
        let metadata = refused(&[channel_added("ch_a"), to("http://[::ffff:169.254.169.254]/v1")]);
        assert!(matches!(metadata, Some(egress::UrlRefused::Address(_))), "{metadata:?}");
        let disguised = refused(&[channel_added("ch_a"), to("http://0x7f.1:8000/v1")]);
        assert!(matches!(disguised, Some(egress::UrlRefused::Disguised { .. })), "{disguised:?}");
        let back = refused(&[channel_added("ch_a"), to("http://0.0.0.0:8000/v1"), to("http://127.0.0.1:8000/v1")]);
        assert_eq!(back, None, "a loopback channel set by an admin is allowed");
    }
}
