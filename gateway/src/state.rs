//! In-memory control state (keys, channels, prices) folded from `LLMR_CONTROL`, and the task that
//! keeps following the stream. Readers take an `Arc` snapshot under a lock held for one pointer
//! clone; the follower builds the next snapshot off to the side and swaps it in.
//! No request handling and no upstream I/O here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use nats::EventLog;
use schemas::secret::MasterKey;
use schemas::{AppliedPrice, Envelope, EventBody, GLOBAL_TENANT, Stream};
use tokio::sync::watch;

use crate::providers::openai::presets::{self, Preset};

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
}

impl KeyEntry {
    /// Whether this key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }
}

/// An upstream channel with its opened credential (memory only).
#[derive(Clone)]
pub struct Channel {
    /// `ch_…`.
    pub id: String,
    /// Owning tenant, or [`GLOBAL_TENANT`] for channels every tenant may use.
    pub tenant: String,
    /// Provider preset name.
    pub provider: String,
    /// The preset `provider` names: auth style, URL shape, quirks.
    pub preset: &'static Preset,
    /// `api-version` query parameter (Azure).
    pub api_version: Option<String>,
    /// Base URL without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// The opened upstream key; `None` when the channel has none or it could not be opened.
    pub api_key: Option<Arc<str>>,
    /// Whether the sealed key failed to open (the channel is then never used).
    pub key_unusable: bool,
    /// Models served; [`ANY_MODEL`] serves every model (the default OpenAI channel).
    pub models: Vec<String>,
    /// Higher first.
    pub priority: i32,
    /// Share among equal priority.
    pub weight: u32,
    /// Disabled channels are skipped.
    pub enabled: bool,
    /// Why the base URL's literal host is refused by the outbound address policy, if it is:
    /// every attempt on the channel then fails as a connection failure, without connecting.
    /// (Names are checked by the HTTP client's resolver at connect time.)
    pub egress_refused: Option<egress::UrlRefused>,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("id", &self.id).field("provider", &self.provider).finish_non_exhaustive()
    }
}

/// A channel model entry that matches every model. It is not listed by `/v1/models`, which
/// shows only the names channels declare.
pub const ANY_MODEL: &str = "*";

impl Channel {
    /// Whether a request of `tenant` for `model` may go to this channel.
    pub fn serves(&self, tenant: &str, model: &str) -> bool {
        self.enabled
            && !self.key_unusable
            && (self.tenant == GLOBAL_TENANT || self.tenant == tenant)
            && self.models.iter().any(|m| m == model || m == ANY_MODEL)
    }
}

/// One immutable snapshot of the control state.
#[derive(Debug, Clone, Default)]
pub struct ControlState {
    /// Keys by hex SHA-256.
    pub keys: HashMap<String, Arc<KeyEntry>>,
    key_hash_by_id: HashMap<String, String>,
    /// Channels by id.
    pub channels: HashMap<String, Arc<Channel>>,
    /// The model-wide price in force per model, its `version` being the `price.published` event
    /// id. Channel overrides are in `channel_prices`; charge through [`ControlState::price_for`].
    pub prices: HashMap<String, Arc<AppliedPrice>>,
    /// Per-channel overrides: channel id → model → price. Kept apart from `channels` so that
    /// re-adding or updating a channel keeps them (and a price may precede its channel in the
    /// log); `channel.removed` drops them.
    pub channel_prices: HashMap<String, HashMap<String, Arc<AppliedPrice>>>,
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

    /// Folds one control event in. Unknown or irrelevant events are ignored.
    pub fn apply(&mut self, env: &Envelope, master_key: &MasterKey) {
        match &env.body {
            EventBody::ApiKeyIssued(k) => {
                let revoked = self.keys.get(&k.hash).is_some_and(|e| e.revoked);
                self.key_hash_by_id.insert(k.key_id.clone(), k.hash.clone());
                self.keys.insert(
                    k.hash.clone(),
                    Arc::new(KeyEntry {
                        key_id: k.key_id.clone(),
                        tenant: env.tenant.clone(),
                        models: k.models.clone(),
                        revoked,
                    }),
                );
            }
            EventBody::ApiKeyRevoked(r) => {
                if let Some(hash) = self.key_hash_by_id.get(&r.key_id)
                    && let Some(entry) = self.keys.get_mut(hash)
                {
                    Arc::make_mut(entry).revoked = true;
                }
            }
            EventBody::ChannelAdded(c) => {
                let (api_key, key_unusable) = open_key(master_key, c.api_key.as_ref(), &c.channel_id);
                self.channels.insert(
                    c.channel_id.clone(),
                    Arc::new(Channel {
                        id: c.channel_id.clone(),
                        tenant: env.tenant.clone(),
                        provider: c.provider.clone(),
                        preset: presets::for_provider(&c.provider),
                        api_version: c.api_version.clone(),
                        base_url: presets::effective_base_url(&c.provider, &c.base_url),
                        api_key,
                        key_unusable,
                        models: c.models.clone(),
                        priority: c.priority,
                        weight: c.weight,
                        enabled: true,
                        egress_refused: egress_verdict(&c.channel_id, &c.base_url),
                    }),
                );
            }
            EventBody::ChannelUpdated(u) => {
                if let Some(ch) = self.channels.get_mut(&u.channel_id) {
                    let ch = Arc::make_mut(ch);
                    if let Some(b) = &u.base_url {
                        ch.base_url = presets::effective_base_url(&ch.provider, b);
                        ch.egress_refused = egress_verdict(&u.channel_id, &ch.base_url);
                    }
                    if let Some(sealed) = &u.api_key {
                        (ch.api_key, ch.key_unusable) = open_key(master_key, Some(sealed), &u.channel_id);
                    }
                    if let Some(m) = &u.models {
                        ch.models = m.clone();
                    }
                    if let Some(p) = u.priority {
                        ch.priority = p;
                    }
                    if let Some(w) = u.weight {
                        ch.weight = w;
                    }
                    if let Some(e) = u.enabled {
                        ch.enabled = e;
                    }
                    if let Some(v) = &u.api_version {
                        ch.api_version = Some(v.clone());
                    }
                }
            }
            EventBody::ChannelRemoved(r) => {
                self.channels.remove(&r.channel_id);
                self.channel_prices.remove(&r.channel_id);
            }
            EventBody::PricePublished(p) => {
                let version = env.id.to_string();
                let price = Arc::new(AppliedPrice::from((version.as_str(), p)));
                match &p.channel_id {
                    None => self.prices.insert(p.model.clone(), price),
                    Some(ch) => self.channel_prices.entry(ch.clone()).or_default().insert(p.model.clone(), price),
                };
            }
            EventBody::TenantCreated(_)
            | EventBody::UsageRecorded(_)
            | EventBody::RequestLogged(_)
            | EventBody::AuthFailuresCounted(_) => {}
        }
    }
}

/// The outbound policy's verdict on a channel's base URL, judged once per change rather than per
/// request. Channels are set by admins ([`egress::Trust::Admin`]), whose verdict does not depend
/// on the allow list, so no configuration is needed here; plain http was judged when the URL was
/// saved. A private or loopback host is allowed with a warning.
fn egress_verdict(channel_id: &str, base_url: &str) -> Option<egress::UrlRefused> {
    match egress::Policy::default().check_url(base_url, egress::Trust::Admin, true) {
        Ok(t) if t.is_internal() => {
            tracing::warn!(channel_id, host = %t.host, "Channel base URL points at a private network or this host; allowed because an admin set it.");
            None
        }
        Ok(_) => None,
        Err(refused @ (egress::UrlRefused::Address(_) | egress::UrlRefused::Disguised { .. })) => {
            tracing::warn!(channel_id, %refused, "Channel base URL is refused by the outbound address policy; its attempts will fail.");
            Some(refused)
        }
        // A URL that does not parse, or carries credentials, fails in the HTTP client as before
        // (the address is judged before the credentials, so these never hide a refused one).
        Err(_) => None,
    }
}

fn open_key(
    master_key: &MasterKey,
    sealed: Option<&schemas::secret::Sealed>,
    channel_id: &str,
) -> (Option<Arc<str>>, bool) {
    match sealed {
        None => (None, false),
        Some(s) => match master_key.open(s, channel_id) {
            Ok(k) => (Some(Arc::from(k)), false),
            Err(e) => {
                tracing::warn!(channel_id, error = %e, "Channel credential could not be opened; channel disabled.");
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
}

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
        let control = Arc::new(Control {
            current: RwLock::new(Arc::new(ControlState::default())),
            seq: AtomicU64::new(0),
            following: AtomicBool::new(true),
            applied,
        });
        tokio::spawn(follow(log.clone(), master_key, Arc::downgrade(&control)));
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
/// is closed the gateway reports not ready, so health checks take it out of rotation.
async fn follow(log: EventLog, master_key: MasterKey, control: Weak<Control>) {
    let mut state = ControlState::default();
    let mut applied_seq = 0u64;
    loop {
        let mut tail = log.tail(Stream::Control, applied_seq);
        while let Some(first) = tail.next().await {
            let mut last_seq = None;
            let mut item = Some(first);
            while let Some(next) = item {
                match next {
                    Ok(ev) => {
                        match ev.decode() {
                            Ok(env) => state.apply(&env, &master_key),
                            Err(e) => tracing::warn!(seq = ev.seq, error = %e, "Undecodable control event skipped."),
                        }
                        last_seq = Some(ev.seq);
                    }
                    Err(e) => tracing::warn!(error = %e, "Control tail reported an error."),
                }
                item = tail.next().now_or_never().flatten();
            }
            let Some(control) = control.upgrade() else { return };
            if let Some(seq) = last_seq {
                applied_seq = seq;
                control.publish(state.clone(), seq);
                control.following.store(true, Ordering::Release);
            }
        }
        let Some(control) = control.upgrade() else { return };
        tracing::error!(after = applied_seq, "Control stream tail ended; re-opening it.");
        control.following.store(false, Ordering::Release);
        drop(control);
        tokio::time::sleep(RETAIL_BACKOFF).await;
    }
}

#[cfg(test)]
mod tests {
    use schemas::{ChannelAdded, ChannelRemoved, ChannelUpdated, PricePublished};

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
        }))
    }

    fn fold(events: &[Envelope]) -> ControlState {
        let master = MasterKey::generate();
        let mut state = ControlState::default();
        for e in events {
            state.apply(e, &master);
        }
        state
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
