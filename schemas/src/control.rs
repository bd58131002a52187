//! The control model: one pure fold of `LLMR_CONTROL` events into tenants, keys, channels and
//! prices. The gateway's live state, the CLI and the SQL `control` projection all take their
//! rules from [`ControlModel::apply`]; nothing here does I/O or reads a clock.
//!
//! Rules, where the three earlier folds disagreed:
//! - **Tenants** are names; `tenant.created` for a known name changes nothing (the first
//!   creation time stays). A key or channel may name a tenant without a `tenant.created`.
//!   `tenant.updated` replaces the profile fields it carries (display name, time zone) of a
//!   known tenant; for an unknown one it changes nothing.
//! - **Keys: the first issuance wins.** An `api_key.issued` whose key id or hash is already
//!   known — live or revoked — is rejected and changes nothing: a re-issued id cannot swap in a
//!   new secret or revive a revoked key, and one secret can never belong to two keys (or two
//!   tenants).
//! - **Revocation is final.** Revoking a revoked key keeps the first revocation time; revoking an
//!   unknown key changes nothing.
//! - **`channel.added`** for a live id replaces every field (the channel is enabled again) and
//!   keeps the channel's price overrides and creation time; a removed id comes back as a new
//!   channel.
//! - **`channel.updated`** replaces exactly the fields it carries (name, base URL, sealed key,
//!   models, priority, weight, enabled, api-version) and keeps the rest; for an unknown or
//!   removed channel it changes nothing.
//! - **`channel.removed`** drops the channel and the price overrides published for it (they stay
//!   in the log, so ledger rows still name their version); an unknown channel changes nothing.
//! - **Prices:** the last `price.published` per model is the model-wide price; one with a
//!   `channel_id` is that channel's override for the model, in force whenever that channel id is
//!   live (it may precede the channel in the log). A price without a channel never touches an
//!   override. [`ControlModel::price_for`] answers the price to charge.
//! - **Users: the first creation wins.** A `user.created` whose id or email is known (disabled
//!   users included) is rejected. `user.updated` replaces the fields it carries; a new password
//!   also ends every earlier session. Disabling is final, and a disabled user takes no update.
//!   `user.sessions_revoked` ends every session issued before it (logout).
//! - **The session secret:** the first `session_secret.generated` wins; later ones change nothing,
//!   so gateways that generated one at the same time all end up with the same secret.
//!
//! - **Upstream keys.** A channel holds an ordered list of keys. `channel.added`'s `api_key` (and
//!   `channel.updated`'s, which replaces every key) is the key `legacy_key_id(channel_id)`; a
//!   channel without any key has one keyless slot under that id, so old single-key events fold
//!   exactly as before. `channel.key_added` appends a key (dropping the keyless slot) and is
//!   refused for an id the channel has; `channel.key_removed` drops one. `channel.added` again
//!   for a live id keeps the keys added to it since.
//! - **Key states** (`upstream_key.state_changed`): the last event wins, except that a key an
//!   admin disabled (`manual`) stays disabled until an admin enables it: automatic changes to it
//!   are refused. An automatic `active` for a key already active changes nothing.
//!
//! - **Routes** (`route.set`): the last one per model wins, whole (strategy and fallback list).
//!
//! - **Proxies** (`proxy.added`): the first addition of an id wins (a second one is refused), and
//!   so does the first live proxy of a name: a name is unique among live proxies. `proxy.removed`
//!   drops the proxy; an unknown id changes nothing. A channel names its pool
//!   (`channel.added`/`channel.updated` `proxy_pool`; an empty name sends it direct again); a
//!   pool is the set of live proxies naming it, so a pool without proxies leaves its channels
//!   with no way out (their calls fail, they never go direct).
//! - **Proxy states** (`proxy.state_changed`): the last event wins; an `active` for a proxy
//!   already active changes nothing; unknown proxies are left alone. A proxy an admin disabled
//!   (`manual`) stays disabled until an admin enables it, and a breaker opening does not replace
//!   a disable by probes (only a probe or an admin enables it).
//!
//! A new entity (users, budgets, rate limits, proxies, alert rules) is one map here, one
//! [`Change`] variant and its arm in `apply`; every consumer then gets it with the same rules.

use std::collections::{BTreeMap, HashMap, HashSet};

use uuid::Uuid;

use crate::AppliedPrice;
use crate::event::{
    ApiKeyIssued, ChannelAdded, ChannelKeyAdded, ChannelUpdated, Envelope, EventBody, PricePublished, ProxyAdded,
    ProxyState, ProxyStateChanged, Role, Stream, UpstreamKeyState, UpstreamKeyStateChanged, UserCreated, UserUpdated,
    legacy_key_id,
};
use crate::secret::Sealed;

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    /// The name (the tenant token of its events).
    pub name: String,
    /// When it was first created.
    pub created_at_us: i64,
    /// Display name in any script.
    pub display_name: Option<String>,
    /// IANA time zone of its reports; `None` = UTC.
    pub time_zone: Option<String>,
    /// Cap on a request's output tokens for every key of the tenant; `None` = none.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices for every key of the tenant; `None` = none.
    pub max_n: Option<u64>,
}

/// A virtual key: its hash and display prefix, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `key_…`
    pub key_id: String,
    /// The owning tenant.
    pub tenant: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// Display prefix.
    pub prefix: String,
    /// The admin's label.
    pub name: Option<String>,
    /// Models the key may use; `None` = every model.
    pub models: Option<Vec<String>>,
    /// The key may read its whole tenant's usage.
    pub tenant_usage: bool,
    /// When it was issued.
    pub created_at_us: i64,
    /// When it was first revoked.
    pub revoked_at_us: Option<i64>,
    /// Cap on a request's output tokens; `None` = no key cap.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices; `None` = no key cap.
    pub max_n: Option<u64>,
    /// When it stops working (µs); `None` = never. Judged at request time, no event marks it.
    pub expires_at_us: Option<i64>,
}

impl Key {
    /// Whether the key was revoked.
    pub fn revoked(&self) -> bool {
        self.revoked_at_us.is_some()
    }

    /// Whether this key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// Whether the key has expired at `now_us`.
    pub fn expired(&self, now_us: i64) -> bool {
        self.expires_at_us.is_some_and(|at| now_us >= at)
    }
}

/// The smaller of two optional caps (`None` = no cap).
pub fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A live upstream channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// `ch_…`
    pub channel_id: String,
    /// Owning tenant, or [`crate::GLOBAL_TENANT`].
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Provider preset name.
    pub provider: String,
    /// Base URL as published.
    pub base_url: String,
    /// The sealed upstream key as `channel.added`/`channel.updated` carried it (also in `keys`).
    pub api_key: Option<Sealed>,
    /// The channel's upstream keys in the order they were added (at least one slot: a keyless
    /// channel has one entry without a key).
    pub keys: Vec<UpstreamKey>,
    /// Models served.
    pub models: Vec<String>,
    /// Higher is tried first.
    pub priority: i32,
    /// Share among equal priorities.
    pub weight: u32,
    /// Disabled channels serve nothing.
    pub enabled: bool,
    /// `api-version` (Azure).
    pub api_version: Option<String>,
    /// `anthropic-beta` values clients may pass through (empty: none).
    pub anthropic_beta: Vec<String>,
    /// The proxy pool its outbound calls go through; `None`: direct.
    pub proxy_pool: Option<String>,
    /// When it was added.
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
}

/// One upstream key of a channel: sealed, with its state. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamKey {
    /// `ukey_…`
    pub key_id: String,
    /// The sealed key; `None` for a keyless channel's slot.
    pub sealed: Option<Sealed>,
    /// The key's fingerprint, when its event carried one.
    pub fingerprint: Option<String>,
    /// The state last applied.
    pub state: UpstreamKeyState,
    /// End of a cool-down or open breaker (µs since the epoch).
    pub until_us: Option<i64>,
    /// Why it is in its state (a failure class name, `recovered`, `admin`).
    pub reason: Option<String>,
    /// Set by an admin: automatic changes are refused while it is disabled.
    pub manual: bool,
    /// How many times in a row its breaker opened.
    pub opens: u32,
    /// When it was added.
    pub added_at_us: i64,
    /// The balance under which it is reported `degraded` (nanos of its vendor's currency).
    pub low_balance_nanos: Option<i64>,
}

impl UpstreamKey {
    fn new(key_id: String, sealed: Option<Sealed>, fingerprint: Option<String>, at: i64) -> UpstreamKey {
        UpstreamKey {
            key_id,
            sealed,
            fingerprint,
            state: UpstreamKeyState::Active,
            until_us: None,
            reason: None,
            manual: false,
            opens: 0,
            added_at_us: at,
            low_balance_nanos: None,
        }
    }

    /// The associated data this key was sealed with.
    pub fn seal_context(&self, channel_id: &str) -> String {
        crate::event::key_seal_context(channel_id, &self.key_id)
    }
}

/// The keys of a channel whose only key is `api_key` (or none).
fn legacy_keys(channel_id: &str, api_key: Option<&Sealed>, at: i64) -> Vec<UpstreamKey> {
    vec![UpstreamKey::new(legacy_key_id(channel_id), api_key.cloned(), None, at)]
}

/// An egress proxy node. Its credentials stay sealed; [`Proxy::masked_url`] is what is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    /// `px_…`
    pub proxy_id: String,
    /// Its pool.
    pub pool: String,
    /// Display name.
    pub name: String,
    /// `scheme://host:port`, without credentials.
    pub url: String,
    /// The sealed `user:password` of the URL, if it had one.
    pub credentials: Option<Sealed>,
    /// Synced from `PROXY_POOL_URL` rather than added by an admin.
    pub from_pool_url: bool,
    /// The breaker state last applied.
    pub state: ProxyState,
    /// End of an open breaker (µs since the epoch).
    pub until_us: Option<i64>,
    /// Why it is in its state.
    pub reason: Option<String>,
    /// Consecutive breaker openings.
    pub opens: u32,
    /// Disabled by an admin: only an admin enables it again.
    pub manual: bool,
    /// When it was added.
    pub added_at_us: i64,
}

impl Proxy {
    /// The URL as listings, logs and errors show it: credentials, when there are any, as `***`.
    pub fn masked_url(&self) -> String {
        masked_proxy_url(&self.url, self.credentials.is_some())
    }
}

/// `scheme://***@host:port` when `has_credentials`, else `url` as it is. `url` never holds
/// credentials (they are sealed apart), so nothing is parsed here.
pub fn masked_proxy_url(url: &str, has_credentials: bool) -> String {
    match (has_credentials, url.split_once("://")) {
        (true, Some((scheme, rest))) => format!("{scheme}://***@{rest}"),
        _ => url.to_owned(),
    }
}

/// A price as published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// The `price.published` event id: the price version usage events carry.
    pub version: String,
    /// Who published it (`builtin` for the shipped table).
    pub actor: Option<String>,
    /// When it was published.
    pub published_at_us: i64,
    /// The published amounts.
    pub published: PricePublished,
}

impl Price {
    /// The amounts as charged (absent cached or cache-write prices are the input price).
    pub fn applied(&self) -> AppliedPrice {
        AppliedPrice::from((self.version.as_str(), &self.published))
    }
}

/// An admin user. Holds the password's hash, never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// `usr_…`
    pub user_id: String,
    /// Login name, lower-case.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// The one tenant the user sees; `None` = every tenant.
    pub tenant: Option<String>,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// When it was created.
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
    /// When it was disabled.
    pub disabled_at_us: Option<i64>,
    /// Tokens issued before this instant are void (logout, password change).
    pub sessions_not_before_us: i64,
}

impl User {
    /// Whether the user was disabled.
    pub fn disabled(&self) -> bool {
        self.disabled_at_us.is_some()
    }

    /// Whether the user may see `tenant`'s objects.
    pub fn sees(&self, tenant: &str) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .field("disabled_at_us", &self.disabled_at_us)
            .finish_non_exhaustive()
    }
}

/// What one event changed; consumers update exactly that entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A tenant was created.
    Tenant(String),
    /// A key was issued or revoked (by key id).
    Key(String),
    /// A channel was added or updated (by id).
    Channel(String),
    /// A channel and its price overrides were dropped.
    ChannelRemoved(String),
    /// The route of a model was set or removed (then `routes` no longer holds it).
    Route(String),
    /// The price of `model` (on `channel_id` alone when set) was published.
    Price {
        /// The model.
        model: String,
        /// The channel it overrides the price on, if any.
        channel_id: Option<String>,
    },
    /// A user was created, updated, disabled or logged out (by id).
    User(String),
    /// The session-signing secret was set.
    SessionSecret,
    /// A proxy was added or changed state (by id).
    Proxy(String),
    /// A proxy was removed (by id).
    ProxyRemoved(String),
}

/// What [`ControlModel::apply`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The model changed.
    Changed(Change),
    /// A valid event with no effect by the rules (a second creation, a second revocation, an
    /// unknown entity).
    Unchanged,
    /// An event the rules refuse (a key id or hash issued twice); nothing changed.
    Rejected(String),
    /// Not a control event.
    NotControl,
}

/// The folded control state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlModel {
    /// Tenants by name.
    pub tenants: BTreeMap<String, Tenant>,
    /// Keys by id, revoked ones included.
    pub keys: BTreeMap<String, Key>,
    key_ids_by_hash: HashMap<String, String>,
    /// Live channels by id.
    pub channels: BTreeMap<String, Channel>,
    /// The model-wide price in force, by model.
    pub prices: BTreeMap<String, Price>,
    /// Price overrides: channel id → model → price.
    pub channel_prices: BTreeMap<String, BTreeMap<String, Price>>,
    /// Routes by model (models without one use the priority strategy and no fallback).
    pub routes: BTreeMap<String, crate::event::RouteSet>,
    /// The id of every `price.published`, so a built-in row is published once per version.
    pub price_ids: HashSet<Uuid>,
    /// Admin users by id, disabled ones included.
    pub users: BTreeMap<String, User>,
    user_ids_by_email: HashMap<String, String>,
    /// The sealed secret that signs session tokens, when one was generated.
    pub session_secret: Option<Sealed>,
    /// Live egress proxies by id.
    pub proxies: BTreeMap<String, Proxy>,
    /// The last stream sequence applied.
    pub seq: u64,
}

impl ControlModel {
    /// The key whose hash is `hash`.
    pub fn key_by_hash(&self, hash: &str) -> Option<&Key> {
        self.key_ids_by_hash.get(hash).and_then(|id| self.keys.get(id))
    }

    /// Puts a key in (for a consumer that loads part of the model from elsewhere, such as the
    /// SQL projection); keeps the hash index.
    pub fn insert_key(&mut self, key: Key) {
        self.key_ids_by_hash.insert(key.hash.clone(), key.key_id.clone());
        self.keys.insert(key.key_id.clone(), key);
    }

    /// The user whose email is `email` (lower-case), disabled or not.
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.user_ids_by_email.get(email).and_then(|id| self.users.get(id))
    }

    /// Puts a user in (for a consumer that loads part of the model from elsewhere); keeps the
    /// email index.
    pub fn insert_user(&mut self, user: User) {
        self.user_ids_by_email.insert(user.email.clone(), user.user_id.clone());
        self.users.insert(user.user_id.clone(), user);
    }

    /// The price to charge for `model` on channel `channel_id`: its override there, else the
    /// model-wide price, else none (the call costs 0).
    pub fn price_for(&self, channel_id: &str, model: &str) -> Option<&Price> {
        self.channel_prices.get(channel_id).and_then(|m| m.get(model)).or_else(|| self.prices.get(model))
    }

    /// Folds in the event at stream sequence `seq`.
    pub fn apply(&mut self, seq: u64, env: &Envelope) -> Outcome {
        if env.body.stream() != Stream::Control {
            return Outcome::NotControl;
        }
        self.seq = self.seq.max(seq);
        let at = env.occurred_at_us;
        match &env.body {
            EventBody::TenantCreated(t) => {
                if self.tenants.contains_key(&t.name) {
                    return Outcome::Unchanged;
                }
                let tenant = Tenant {
                    name: t.name.clone(),
                    created_at_us: at,
                    display_name: None,
                    time_zone: None,
                    max_output_tokens: None,
                    max_n: None,
                };
                self.tenants.insert(t.name.clone(), tenant);
                Outcome::Changed(Change::Tenant(t.name.clone()))
            }
            EventBody::TenantUpdated(u) => {
                let Some(t) = self.tenants.get_mut(&u.name) else { return Outcome::Unchanged };
                if let Some(d) = &u.display_name {
                    t.display_name = Some(d.clone());
                }
                if let Some(z) = &u.time_zone {
                    t.time_zone = Some(z.clone());
                }
                // A present cap replaces the old one; `0` removes it.
                if let Some(m) = u.max_output_tokens {
                    t.max_output_tokens = (m > 0).then_some(m);
                }
                if let Some(m) = u.max_n {
                    t.max_n = (m > 0).then_some(m);
                }
                Outcome::Changed(Change::Tenant(u.name.clone()))
            }
            EventBody::ApiKeyIssued(k) => self.issue(&env.tenant, at, k),
            EventBody::ApiKeyRevoked(r) => match self.keys.get_mut(&r.key_id) {
                Some(k) if k.revoked_at_us.is_none() => {
                    k.revoked_at_us = Some(at);
                    Outcome::Changed(Change::Key(r.key_id.clone()))
                }
                _ => Outcome::Unchanged,
            },
            EventBody::ChannelAdded(c) => self.add_channel(&env.tenant, at, c),
            EventBody::ChannelUpdated(u) => self.update_channel(at, u),
            EventBody::ChannelRemoved(r) => {
                if self.channels.remove(&r.channel_id).is_none() {
                    return Outcome::Unchanged;
                }
                self.channel_prices.remove(&r.channel_id);
                Outcome::Changed(Change::ChannelRemoved(r.channel_id.clone()))
            }
            EventBody::PricePublished(p) => {
                self.price_ids.insert(env.id);
                let price = Price {
                    version: env.id.to_string(),
                    actor: env.actor.clone(),
                    published_at_us: at,
                    published: p.clone(),
                };
                match &p.channel_id {
                    None => self.prices.insert(p.model.clone(), price),
                    Some(ch) => self.channel_prices.entry(ch.clone()).or_default().insert(p.model.clone(), price),
                };
                Outcome::Changed(Change::Price { model: p.model.clone(), channel_id: p.channel_id.clone() })
            }
            EventBody::UserCreated(u) => self.create_user(at, u),
            EventBody::UserUpdated(u) => self.update_user(at, u),
            EventBody::UserDisabled(d) => match self.users.get_mut(&d.user_id) {
                Some(u) if u.disabled_at_us.is_none() => {
                    u.disabled_at_us = Some(at);
                    u.updated_at_us = at;
                    Outcome::Changed(Change::User(d.user_id.clone()))
                }
                _ => Outcome::Unchanged,
            },
            EventBody::UserSessionsRevoked(r) => match self.users.get_mut(&r.user_id) {
                Some(u) if at > u.sessions_not_before_us => {
                    u.sessions_not_before_us = at;
                    Outcome::Changed(Change::User(r.user_id.clone()))
                }
                _ => Outcome::Unchanged,
            },
            EventBody::SessionSecretGenerated(g) => {
                if self.session_secret.is_some() {
                    return Outcome::Unchanged;
                }
                self.session_secret = Some(g.secret.clone());
                Outcome::Changed(Change::SessionSecret)
            }
            EventBody::ChannelKeyAdded(k) => self.add_key(at, k),
            EventBody::ChannelKeyRemoved(r) => {
                let Some(ch) = self.channels.get_mut(&r.channel_id) else { return Outcome::Unchanged };
                let before = ch.keys.len();
                ch.keys.retain(|k| k.key_id != r.key_id);
                if ch.keys.len() == before {
                    return Outcome::Unchanged;
                }
                if ch.keys.is_empty() {
                    ch.keys = legacy_keys(&ch.channel_id, None, at);
                }
                if r.key_id == legacy_key_id(&r.channel_id) {
                    ch.api_key = None;
                }
                ch.updated_at_us = at;
                Outcome::Changed(Change::Channel(r.channel_id.clone()))
            }
            EventBody::ChannelKeyUpdated(u) => {
                let Some(ch) = self.channels.get_mut(&u.channel_id) else { return Outcome::Unchanged };
                let Some(key) = ch.keys.iter_mut().find(|k| k.key_id == u.key_id) else { return Outcome::Unchanged };
                if let Some(low) = u.low_balance_nanos {
                    key.low_balance_nanos = low;
                }
                ch.updated_at_us = at;
                Outcome::Changed(Change::Channel(u.channel_id.clone()))
            }
            EventBody::UpstreamKeyStateChanged(c) => self.key_state(c),
            EventBody::RouteSet(r) => {
                self.routes.insert(r.model.clone(), r.clone());
                Outcome::Changed(Change::Route(r.model.clone()))
            }
            EventBody::RouteRemoved(r) => match self.routes.remove(&r.model) {
                Some(_) => Outcome::Changed(Change::Route(r.model.clone())),
                None => Outcome::Unchanged,
            },
            EventBody::ProxyAdded(p) => self.add_proxy(at, p),
            EventBody::ProxyRemoved(r) => match self.proxies.remove(&r.proxy_id) {
                Some(_) => Outcome::Changed(Change::ProxyRemoved(r.proxy_id.clone())),
                None => Outcome::Unchanged,
            },
            EventBody::ProxyStateChanged(c) => self.proxy_state(c),
            EventBody::UsageRecorded(_)
            | EventBody::RequestLogged(_)
            | EventBody::AuthFailuresCounted(_)
            | EventBody::HealthChecked(_) => Outcome::NotControl,
        }
    }

    fn add_proxy(&mut self, at: i64, p: &ProxyAdded) -> Outcome {
        if self.proxies.contains_key(&p.proxy_id) {
            return Outcome::Rejected(format!("proxy {} exists already", p.proxy_id));
        }
        if let Some(other) = self.proxies.values().find(|x| x.name == p.name) {
            return Outcome::Rejected(format!("proxy {} has the name of proxy {}", p.proxy_id, other.proxy_id));
        }
        self.proxies.insert(
            p.proxy_id.clone(),
            Proxy {
                proxy_id: p.proxy_id.clone(),
                pool: p.pool.clone(),
                name: p.name.clone(),
                url: p.url.clone(),
                credentials: p.credentials.clone(),
                from_pool_url: p.origin.as_deref() == Some(crate::event::PROXY_ORIGIN_POOL_URL),
                state: ProxyState::Active,
                until_us: None,
                reason: None,
                opens: 0,
                manual: false,
                added_at_us: at,
            },
        );
        Outcome::Changed(Change::Proxy(p.proxy_id.clone()))
    }

    fn proxy_state(&mut self, c: &ProxyStateChanged) -> Outcome {
        let Some(p) = self.proxies.get_mut(&c.proxy_id) else { return Outcome::Unchanged };
        if !c.manual && p.manual && p.state == ProxyState::Disabled {
            return Outcome::Unchanged;
        }
        if !c.manual && c.state == ProxyState::Active && p.state == ProxyState::Active {
            return Outcome::Unchanged;
        }
        // A breaker opening (live traffic) does not shorten a disable by probes.
        if !c.manual && c.state == ProxyState::Open && p.state == ProxyState::Disabled {
            return Outcome::Unchanged;
        }
        p.state = c.state;
        p.until_us = c.until_us;
        p.reason = Some(c.reason.clone());
        p.manual = c.manual && c.state == ProxyState::Disabled;
        p.opens = if c.state == ProxyState::Active { 0 } else { c.opens.max(p.opens) };
        Outcome::Changed(Change::Proxy(c.proxy_id.clone()))
    }

    /// The live proxies of `pool`, in the order they were added.
    pub fn pool(&self, pool: &str) -> Vec<&Proxy> {
        let mut nodes: Vec<&Proxy> = self.proxies.values().filter(|p| p.pool == pool).collect();
        nodes.sort_by(|a, b| (a.added_at_us, &a.proxy_id).cmp(&(b.added_at_us, &b.proxy_id)));
        nodes
    }

    /// A live proxy by id or by name.
    pub fn find_proxy(&self, needle: &str) -> Option<&Proxy> {
        self.proxies.get(needle).or_else(|| self.proxies.values().find(|p| p.name == needle))
    }

    fn create_user(&mut self, at: i64, u: &UserCreated) -> Outcome {
        if self.users.contains_key(&u.user_id) {
            return Outcome::Rejected(format!("user {} exists already", u.user_id));
        }
        if let Some(other) = self.user_ids_by_email.get(&u.email) {
            return Outcome::Rejected(format!("user {} has the email of user {other}", u.user_id));
        }
        self.insert_user(User {
            user_id: u.user_id.clone(),
            email: u.email.clone(),
            role: u.role,
            tenant: u.tenant.clone(),
            password_hash: u.password_hash.clone(),
            created_at_us: at,
            updated_at_us: at,
            disabled_at_us: None,
            sessions_not_before_us: 0,
        });
        Outcome::Changed(Change::User(u.user_id.clone()))
    }

    fn update_user(&mut self, at: i64, u: &UserUpdated) -> Outcome {
        let Some(user) = self.users.get_mut(&u.user_id).filter(|x| !x.disabled()) else {
            return Outcome::Unchanged;
        };
        if let Some(role) = u.role {
            user.role = role;
        }
        if let Some(h) = &u.password_hash {
            user.password_hash = h.clone();
            user.sessions_not_before_us = user.sessions_not_before_us.max(at);
        }
        user.updated_at_us = at;
        Outcome::Changed(Change::User(u.user_id.clone()))
    }

    fn issue(&mut self, tenant: &str, at: i64, k: &ApiKeyIssued) -> Outcome {
        if self.keys.contains_key(&k.key_id) {
            return Outcome::Rejected(format!("api key {} is issued already", k.key_id));
        }
        if let Some(other) = self.key_ids_by_hash.get(&k.hash) {
            return Outcome::Rejected(format!("api key {} has the hash of key {other}", k.key_id));
        }
        self.insert_key(Key {
            key_id: k.key_id.clone(),
            tenant: tenant.to_owned(),
            hash: k.hash.clone(),
            prefix: k.prefix.clone(),
            name: k.name.clone(),
            models: k.models.clone(),
            tenant_usage: k.tenant_usage,
            created_at_us: at,
            revoked_at_us: None,
            max_output_tokens: k.max_output_tokens,
            max_n: k.max_n,
            expires_at_us: k.expires_at_us,
        });
        Outcome::Changed(Change::Key(k.key_id.clone()))
    }

    fn add_key(&mut self, at: i64, k: &ChannelKeyAdded) -> Outcome {
        let Some(ch) = self.channels.get_mut(&k.channel_id) else { return Outcome::Unchanged };
        if ch.keys.iter().any(|x| x.key_id == k.key_id) {
            return Outcome::Rejected(format!("channel {} has a key {} already", k.channel_id, k.key_id));
        }
        ch.keys.retain(|x| x.sealed.is_some());
        ch.keys.push(UpstreamKey::new(k.key_id.clone(), Some(k.api_key.clone()), k.fingerprint.clone(), at));
        ch.updated_at_us = at;
        Outcome::Changed(Change::Channel(k.channel_id.clone()))
    }

    fn key_state(&mut self, c: &UpstreamKeyStateChanged) -> Outcome {
        let Some(ch) = self.channels.get_mut(&c.channel_id) else { return Outcome::Unchanged };
        let Some(key) = ch.keys.iter_mut().find(|k| k.key_id == c.key_id) else { return Outcome::Unchanged };
        if !c.manual && key.manual && key.state == UpstreamKeyState::Disabled {
            return Outcome::Unchanged;
        }
        if !c.manual && c.state == UpstreamKeyState::Active && key.state == UpstreamKeyState::Active {
            return Outcome::Unchanged;
        }
        key.state = c.state;
        key.until_us = c.until_us;
        key.reason = Some(c.reason.clone());
        key.manual = c.manual && c.state == UpstreamKeyState::Disabled;
        key.opens = if c.state == UpstreamKeyState::Active { 0 } else { c.opens.max(key.opens) };
        Outcome::Changed(Change::Channel(c.channel_id.clone()))
    }

    fn add_channel(&mut self, tenant: &str, at: i64, c: &ChannelAdded) -> Outcome {
        let created_at_us = self.channels.get(&c.channel_id).map_or(at, |old| old.created_at_us);
        // Keys added since the channel was first added survive a re-add; its legacy key is the
        // one this event carries.
        let legacy = legacy_key_id(&c.channel_id);
        let mut keys = legacy_keys(&c.channel_id, c.api_key.as_ref(), at);
        if let Some(old) = self.channels.get(&c.channel_id) {
            let added: Vec<UpstreamKey> = old.keys.iter().filter(|k| k.key_id != legacy).cloned().collect();
            if !added.is_empty() {
                if c.api_key.is_none() {
                    keys.clear();
                }
                keys.extend(added);
            }
        }
        self.channels.insert(
            c.channel_id.clone(),
            Channel {
                channel_id: c.channel_id.clone(),
                tenant: tenant.to_owned(),
                name: c.name.clone(),
                provider: c.provider.clone(),
                base_url: c.base_url.clone(),
                api_key: c.api_key.clone(),
                keys,
                models: c.models.clone(),
                priority: c.priority,
                weight: c.weight,
                enabled: true,
                api_version: c.api_version.clone(),
                anthropic_beta: c.anthropic_beta.clone(),
                proxy_pool: c.proxy_pool.clone().filter(|p| !p.is_empty()),
                created_at_us,
                updated_at_us: at,
            },
        );
        Outcome::Changed(Change::Channel(c.channel_id.clone()))
    }

    fn update_channel(&mut self, at: i64, u: &ChannelUpdated) -> Outcome {
        let Some(ch) = self.channels.get_mut(&u.channel_id) else {
            return Outcome::Unchanged;
        };
        if let Some(v) = &u.name {
            ch.name = v.clone();
        }
        if let Some(v) = &u.base_url {
            ch.base_url = v.clone();
        }
        if let Some(v) = &u.api_key {
            // A new credential replaces every key of the channel.
            ch.api_key = Some(v.clone());
            ch.keys = legacy_keys(&u.channel_id, Some(v), at);
        }
        if let Some(v) = &u.models {
            ch.models = v.clone();
        }
        if let Some(v) = u.priority {
            ch.priority = v;
        }
        if let Some(v) = u.weight {
            ch.weight = v;
        }
        if let Some(v) = u.enabled {
            ch.enabled = v;
        }
        if let Some(v) = &u.api_version {
            ch.api_version = Some(v.clone());
        }
        if let Some(v) = &u.anthropic_beta {
            ch.anthropic_beta = v.clone();
        }
        if let Some(v) = &u.proxy_pool {
            ch.proxy_pool = (!v.is_empty()).then(|| v.clone());
        }
        ch.updated_at_us = at;
        Outcome::Changed(Change::Channel(u.channel_id.clone()))
    }

    /// A live channel by id or by name.
    pub fn find_channel(&self, needle: &str) -> Option<&Channel> {
        self.channels.get(needle).or_else(|| self.channels.values().find(|c| c.name == needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{
        ApiKeyRevoked, ChannelKeyRemoved, ChannelRemoved, ProxyAdded, ProxyStateChanged, TenantCreated,
    };

    fn ev(tenant: &str, at: i64, body: EventBody) -> Envelope {
        Envelope::new(tenant, "test", at, body)
    }

    fn issued(id: &str, hash: &str) -> EventBody {
        EventBody::ApiKeyIssued(ApiKeyIssued {
            key_id: id.into(),
            hash: hash.into(),
            prefix: "sk-abc".into(),
            name: None,
            models: None,
            tenant_usage: false,
            ..Default::default()
        })
    }

    fn added(id: &str) -> EventBody {
        EventBody::ChannelAdded(ChannelAdded {
            channel_id: id.into(),
            name: id.into(),
            provider: "openai".into(),
            base_url: "http://a/v1".into(),
            api_key: None,
            models: vec!["m".into()],
            priority: 1,
            weight: 2,
            api_version: None,
            insecure_http: false,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        })
    }

    fn price(model: &str, channel: Option<&str>, input: i64) -> EventBody {
        EventBody::PricePublished(PricePublished {
            model: model.into(),
            channel_id: channel.map(str::to_owned),
            currency: "USD".into(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: input,
            cached_input_per_mtok_nanos: None,
            cache_write_per_mtok_nanos: None,
        })
    }

    fn fold(events: &[Envelope]) -> (ControlModel, Vec<Outcome>) {
        let mut m = ControlModel::default();
        let outcomes = events.iter().enumerate().map(|(i, e)| m.apply(i as u64 + 1, e)).collect();
        (m, outcomes)
    }

    #[test]
    fn a_reissued_key_id_is_rejected_and_the_first_secret_stays() {
        let (m, out) = fold(&[ev("t", 1, issued("key_a", "h1")), ev("t", 2, issued("key_a", "h2"))]);
        assert!(matches!(out[1], Outcome::Rejected(_)), "{out:?}");
        assert_eq!(m.keys["key_a"].hash, "h1");
        assert!(m.key_by_hash("h2").is_none());
    }

    #[test]
    fn a_revoked_key_cannot_be_revived_by_issuing_it_again() {
        let (m, out) = fold(&[
            ev("t", 1, issued("key_a", "h1")),
            ev("t", 2, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: "key_a".into() })),
            ev("t", 3, issued("key_a", "h1")),
            ev("t", 4, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: "key_a".into() })),
        ]);
        assert!(matches!(out[2], Outcome::Rejected(_)));
        assert_eq!(out[3], Outcome::Unchanged);
        assert_eq!(m.key_by_hash("h1").and_then(|k| k.revoked_at_us), Some(2), "the first revocation time stays");
    }

    #[test]
    fn a_second_key_with_a_known_hash_is_rejected_even_for_another_tenant() {
        let (m, out) = fold(&[ev("t", 1, issued("key_a", "h1")), ev("other", 2, issued("key_b", "h1"))]);
        assert!(matches!(out[1], Outcome::Rejected(_)));
        assert_eq!(m.key_by_hash("h1").map(|k| k.tenant.as_str()), Some("t"));
        assert!(!m.keys.contains_key("key_b"));
    }

    #[test]
    fn a_channel_update_replaces_only_the_fields_it_carries() {
        let update = EventBody::ChannelUpdated(ChannelUpdated {
            channel_id: "ch".into(),
            weight: Some(7),
            enabled: Some(false),
            ..ChannelUpdated::default()
        });
        let (m, _) = fold(&[ev("_global", 1, added("ch")), ev("_global", 5, update)]);
        let ch = &m.channels["ch"];
        assert_eq!((ch.priority, ch.weight, ch.enabled), (1, 7, false));
        assert_eq!((ch.created_at_us, ch.updated_at_us), (1, 5));
        assert_eq!(ch.base_url, "http://a/v1");
    }

    #[test]
    fn unknown_entities_are_left_alone() {
        let (m, out) = fold(&[
            ev("t", 1, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: "nope".into() })),
            ev("t", 2, EventBody::ChannelRemoved(ChannelRemoved { channel_id: "nope".into() })),
            ev(
                "t",
                3,
                EventBody::ChannelUpdated(ChannelUpdated { channel_id: "nope".into(), ..ChannelUpdated::default() }),
            ),
            ev("t", 4, EventBody::TenantCreated(TenantCreated { name: "t".into() })),
            ev("t", 5, EventBody::TenantCreated(TenantCreated { name: "t".into() })),
        ]);
        assert_eq!(out[..3], [Outcome::Unchanged, Outcome::Unchanged, Outcome::Unchanged]);
        assert_eq!(out[4], Outcome::Unchanged);
        assert_eq!(m.tenants["t"].created_at_us, 4);
        let mut m = m;
        let profile = |name: &str, tz: Option<&str>| {
            EventBody::TenantUpdated(crate::event::TenantUpdated {
                name: name.into(),
                display_name: Some("华东分公司".into()),
                time_zone: tz.map(str::to_owned),
                ..Default::default()
            })
        };
        assert_eq!(m.apply(6, &ev("t", 6, profile("nope", None))), Outcome::Unchanged);
        m.apply(7, &ev("t", 7, profile("t", Some("Asia/Shanghai"))));
        m.apply(8, &ev("t", 8, profile("t", None)));
        let t = &m.tenants["t"];
        assert_eq!((t.display_name.as_deref(), t.time_zone.as_deref()), (Some("华东分公司"), Some("Asia/Shanghai")));
        assert!(m.channels.is_empty() && m.keys.is_empty());
    }

    fn user(id: &str, email: &str) -> EventBody {
        EventBody::UserCreated(UserCreated {
            user_id: id.into(),
            email: email.into(),
            role: Role::Admin,
            tenant: None,
            password_hash: "h".into(),
        })
    }

    #[test]
    fn a_user_id_or_email_is_created_once_and_disabling_is_final() {
        use crate::event::{UserDisabled, UserSessionsRevoked};
        let disable = |id: &str| EventBody::UserDisabled(UserDisabled { user_id: id.into() });
        let promote = EventBody::UserUpdated(UserUpdated {
            user_id: "usr_a".into(),
            role: Some(Role::Owner),
            ..UserUpdated::default()
        });
        let (m, out) = fold(&[
            ev("_global", 1, user("usr_a", "a@x")),
            ev("_global", 2, user("usr_b", "a@x")),
            ev("_global", 3, user("usr_a", "other@x")),
            ev("_global", 4, EventBody::UserSessionsRevoked(UserSessionsRevoked { user_id: "usr_a".into() })),
            ev("_global", 5, disable("usr_a")),
            ev("_global", 6, disable("usr_a")),
            ev("_global", 7, promote),
        ]);
        assert!(matches!(out[1], Outcome::Rejected(_)) && matches!(out[2], Outcome::Rejected(_)), "{out:?}");
        assert_eq!(out[5..], [Outcome::Unchanged, Outcome::Unchanged]);
        let a = &m.users["usr_a"];
        assert_eq!((a.role, a.disabled_at_us, a.sessions_not_before_us), (Role::Admin, Some(5), 4));
        assert_eq!(m.user_by_email("a@x").map(|u| u.user_id.as_str()), Some("usr_a"));
        assert!(m.user_by_email("other@x").is_none() && !m.users.contains_key("usr_b"));
    }

    #[test]
    fn a_new_password_ends_earlier_sessions_and_the_first_session_secret_stays() {
        let change = EventBody::UserUpdated(UserUpdated {
            user_id: "usr_a".into(),
            password_hash: Some("h2".into()),
            ..UserUpdated::default()
        });
        let secret = |ct: &str| {
            EventBody::SessionSecretGenerated(crate::event::SessionSecretGenerated {
                secret: Sealed { alg: "x".into(), nonce: "n".into(), ct: ct.into() },
            })
        };
        let (m, out) = fold(&[
            ev("_global", 1, user("usr_a", "a@x")),
            ev("_global", 9, change),
            ev("_global", 10, secret("first")),
            ev("_global", 11, secret("second")),
        ]);
        assert_eq!((m.users["usr_a"].password_hash.as_str(), m.users["usr_a"].sessions_not_before_us), ("h2", 9));
        assert_eq!(out[3], Outcome::Unchanged);
        assert_eq!(m.session_secret.map(|s| s.ct), Some("first".to_owned()));
    }

    #[test]
    fn overrides_survive_a_readd_and_end_with_the_channel() {
        let events = [
            ev("_global", 1, added("ch")),
            ev("_global", 2, price("m", None, 10)),
            ev("_global", 3, price("m", Some("ch"), 5)),
            ev("_global", 4, added("ch")),
        ];
        let (m, _) = fold(&events);
        assert_eq!(m.price_for("ch", "m").map(|p| p.published.input_per_mtok_nanos), Some(5));
        assert_eq!(m.price_for("other", "m").map(|p| p.published.input_per_mtok_nanos), Some(10));
        assert_eq!(m.channels["ch"].created_at_us, 1);
        let mut m = m;
        m.apply(5, &ev("_global", 5, EventBody::ChannelRemoved(ChannelRemoved { channel_id: "ch".into() })));
        assert_eq!(m.price_for("ch", "m").map(|p| p.published.input_per_mtok_nanos), Some(10));
        assert!(m.channel_prices.is_empty());
        assert_eq!(m.seq, 5);
    }

    fn key_added(channel: &str, key: &str) -> EventBody {
        EventBody::ChannelKeyAdded(crate::event::ChannelKeyAdded {
            channel_id: channel.into(),
            key_id: key.into(),
            api_key: Sealed { alg: "x".into(), nonce: "n".into(), ct: key.into() },
            fingerprint: Some("sha256:000000000000".into()),
        })
    }

    fn key_state(key: &str, state: UpstreamKeyState, manual: bool) -> EventBody {
        EventBody::UpstreamKeyStateChanged(UpstreamKeyStateChanged {
            channel_id: "ch".into(),
            key_id: key.into(),
            state,
            until_us: None,
            reason: "test".into(),
            manual,
            opens: 0,
        })
    }

    #[test]
    fn a_key_update_sets_and_clears_its_low_balance_threshold() {
        let update = |low: Option<Option<i64>>, key: &str| {
            EventBody::ChannelKeyUpdated(crate::event::ChannelKeyUpdated {
                channel_id: "ch".into(),
                key_id: key.into(),
                low_balance_nanos: low,
            })
        };
        let (m, out) = fold(&[
            ev("_global", 1, added("ch")),
            ev("_global", 2, key_added("ch", "ukey_a")),
            ev("_global", 3, update(Some(Some(5_000_000_000)), "ukey_a")),
            ev("_global", 4, update(Some(Some(1)), "ukey_nope")),
        ]);
        assert_eq!(out[2], Outcome::Changed(Change::Channel("ch".into())));
        assert_eq!(out[3], Outcome::Unchanged, "an unknown key");
        assert_eq!(m.channels["ch"].keys[0].low_balance_nanos, Some(5_000_000_000));
        let mut m = m;
        m.apply(5, &ev("_global", 5, update(None, "ukey_a")));
        assert_eq!(m.channels["ch"].keys[0].low_balance_nanos, Some(5_000_000_000), "absent leaves it");
        m.apply(6, &ev("_global", 6, update(Some(None), "ukey_a")));
        assert_eq!(m.channels["ch"].keys[0].low_balance_nanos, None, "null clears it");
    }

    fn key_ids(m: &ControlModel) -> Vec<&str> {
        m.channels["ch"].keys.iter().map(|k| k.key_id.as_str()).collect()
    }

    #[test]
    fn an_old_single_key_channel_folds_to_one_legacy_key_and_added_keys_replace_a_keyless_slot() {
        let (m, _) = fold(&[ev("_global", 1, added("ch"))]);
        assert_eq!(key_ids(&m), ["ukey_ch"]);
        assert!(m.channels["ch"].keys[0].sealed.is_none(), "a keyless channel has one keyless slot");
        let (m, out) = fold(&[
            ev("_global", 1, added("ch")),
            ev("_global", 2, key_added("ch", "ukey_a")),
            ev("_global", 3, key_added("ch", "ukey_b")),
            ev("_global", 4, key_added("ch", "ukey_a")),
            ev("_global", 5, key_added("nope", "ukey_c")),
        ]);
        assert_eq!(key_ids(&m), ["ukey_a", "ukey_b"]);
        assert!(matches!(out[3], Outcome::Rejected(_)), "{out:?}");
        assert_eq!(out[4], Outcome::Unchanged);
        let mut m = m;
        let removed = |id: &str| {
            ev(
                "_global",
                6,
                EventBody::ChannelKeyRemoved(ChannelKeyRemoved { channel_id: "ch".into(), key_id: id.into() }),
            )
        };
        assert_eq!(m.apply(6, &removed("ukey_a")), Outcome::Changed(Change::Channel("ch".into())));
        assert_eq!(m.apply(7, &removed("ukey_a")), Outcome::Unchanged);
        assert_eq!(key_ids(&m), ["ukey_b"]);
        // A re-add keeps the added keys beside its own.
        let mut with_key = added("ch");
        if let EventBody::ChannelAdded(c) = &mut with_key {
            c.api_key = Some(Sealed { alg: "x".into(), nonce: "n".into(), ct: "legacy".into() });
        }
        m.apply(8, &ev("_global", 8, with_key));
        assert_eq!(key_ids(&m), ["ukey_ch", "ukey_b"]);
        // A new credential through `channel.updated` replaces every key.
        let update = EventBody::ChannelUpdated(ChannelUpdated {
            channel_id: "ch".into(),
            api_key: Some(Sealed { alg: "x".into(), nonce: "n".into(), ct: "new".into() }),
            ..ChannelUpdated::default()
        });
        m.apply(9, &ev("_global", 9, update));
        assert_eq!(key_ids(&m), ["ukey_ch"]);
    }

    #[test]
    fn a_manual_disable_is_undone_only_by_an_admin() {
        let (m, out) = fold(&[
            ev("_global", 1, added("ch")),
            ev("_global", 2, key_state("ukey_ch", UpstreamKeyState::Disabled, true)),
            ev("_global", 3, key_state("ukey_ch", UpstreamKeyState::Active, false)),
            ev("_global", 4, key_state("ukey_ch", UpstreamKeyState::Open, false)),
        ]);
        assert_eq!(out[2..], [Outcome::Unchanged, Outcome::Unchanged]);
        let key = &m.channels["ch"].keys[0];
        assert_eq!((key.state, key.manual), (UpstreamKeyState::Disabled, true));
        let mut m = m;
        m.apply(5, &ev("_global", 5, key_state("ukey_ch", UpstreamKeyState::Active, true)));
        m.apply(6, &ev("_global", 6, key_state("ukey_ch", UpstreamKeyState::Disabled, false)));
        let key = &m.channels["ch"].keys[0];
        assert_eq!((key.state, key.manual), (UpstreamKeyState::Disabled, false), "an automatic disable stands");
        assert_eq!(
            m.apply(7, &ev("_global", 7, key_state("ukey_x", UpstreamKeyState::Open, false))),
            Outcome::Unchanged,
            "an unknown key"
        );
    }

    fn proxy_added(id: &str, name: &str, pool: &str) -> EventBody {
        EventBody::ProxyAdded(ProxyAdded {
            proxy_id: id.into(),
            pool: pool.into(),
            name: name.into(),
            url: "socks5://10.0.0.9:1080".into(),
            credentials: Some(Sealed { alg: "x".into(), nonce: "n".into(), ct: "c".into() }),
            origin: None,
        })
    }

    fn proxy_state(id: &str, state: ProxyState, opens: u32) -> EventBody {
        EventBody::ProxyStateChanged(ProxyStateChanged {
            proxy_id: id.into(),
            state,
            until_us: Some(99),
            reason: "proxy_failed".into(),
            opens,
            manual: false,
        })
    }

    #[test]
    fn a_proxy_disabled_by_an_admin_is_enabled_only_by_an_admin() {
        let manual = |state| {
            EventBody::ProxyStateChanged(ProxyStateChanged {
                proxy_id: "px_a".into(),
                state,
                until_us: None,
                reason: "admin".into(),
                opens: 0,
                manual: true,
            })
        };
        let probe = |state| {
            EventBody::ProxyStateChanged(ProxyStateChanged {
                proxy_id: "px_a".into(),
                state,
                until_us: None,
                reason: "health_check".into(),
                opens: 0,
                manual: false,
            })
        };
        let (mut m, _) =
            fold(&[ev("_global", 1, proxy_added("px_a", "a", "eu")), ev("_global", 2, manual(ProxyState::Disabled))]);
        assert_eq!((m.proxies["px_a"].state, m.proxies["px_a"].manual), (ProxyState::Disabled, true));
        assert_eq!(m.apply(3, &ev("_global", 3, probe(ProxyState::Active))), Outcome::Unchanged);
        assert_eq!(m.apply(4, &ev("_global", 4, proxy_state("px_a", ProxyState::Open, 1))), Outcome::Unchanged);
        assert!(matches!(m.apply(5, &ev("_global", 5, manual(ProxyState::Active))), Outcome::Changed(_)));
        assert_eq!((m.proxies["px_a"].state, m.proxies["px_a"].manual), (ProxyState::Active, false));
        // Disabled by probes: a breaker opening does not replace it; a probe enables it.
        m.apply(6, &ev("_global", 6, probe(ProxyState::Disabled)));
        assert_eq!(m.apply(7, &ev("_global", 7, proxy_state("px_a", ProxyState::Open, 1))), Outcome::Unchanged);
        assert!(matches!(m.apply(8, &ev("_global", 8, probe(ProxyState::Active))), Outcome::Changed(_)));
        assert_eq!(m.proxies["px_a"].state, ProxyState::Active);
    }

    #[test]
    fn a_proxy_id_and_a_live_name_are_added_once_and_removal_frees_the_name() {
        let (m, out) = fold(&[
            ev("_global", 1, proxy_added("px_a", "a", "eu")),
            ev("_global", 2, proxy_added("px_a", "other", "eu")),
            ev("_global", 3, proxy_added("px_b", "a", "eu")),
            ev("_global", 4, proxy_added("px_c", "c", "eu")),
            ev("_global", 5, proxy_added("px_d", "d", "us")),
        ]);
        assert!(matches!(out[1], Outcome::Rejected(_)) && matches!(out[2], Outcome::Rejected(_)), "{out:?}");
        let eu: Vec<&str> = m.pool("eu").iter().map(|p| p.proxy_id.as_str()).collect();
        assert_eq!(eu, ["px_a", "px_c"]);
        assert_eq!(m.find_proxy("a").map(|p| p.masked_url()), Some("socks5://***@10.0.0.9:1080".to_owned()));
        let mut m = m;
        let removed = |id: &str| EventBody::ProxyRemoved(crate::event::ProxyRemoved { proxy_id: id.into() });
        assert_eq!(
            m.apply(6, &ev("_global", 6, removed("px_a"))),
            Outcome::Changed(Change::ProxyRemoved("px_a".into()))
        );
        assert_eq!(m.apply(7, &ev("_global", 7, removed("px_a"))), Outcome::Unchanged);
        assert!(matches!(m.apply(8, &ev("_global", 8, proxy_added("px_e", "a", "eu"))), Outcome::Changed(_)));
    }

    #[test]
    fn proxy_states_follow_the_last_event_and_a_channel_names_its_pool() {
        let (m, out) = fold(&[
            ev("_global", 1, proxy_added("px_a", "a", "eu")),
            ev("_global", 2, proxy_state("px_a", ProxyState::Active, 0)),
            ev("_global", 3, proxy_state("px_a", ProxyState::Open, 2)),
            ev("_global", 4, proxy_state("px_x", ProxyState::Open, 1)),
        ]);
        assert_eq!((out[1].clone(), out[3].clone()), (Outcome::Unchanged, Outcome::Unchanged));
        let p = &m.proxies["px_a"];
        assert_eq!((p.state, p.until_us, p.opens), (ProxyState::Open, Some(99), 2));
        let mut m = m;
        m.apply(5, &ev("_global", 5, proxy_state("px_a", ProxyState::Active, 0)));
        assert_eq!((m.proxies["px_a"].state, m.proxies["px_a"].opens), (ProxyState::Active, 0));
        let mut with_pool = added("ch");
        if let EventBody::ChannelAdded(c) = &mut with_pool {
            c.proxy_pool = Some("eu".into());
        }
        m.apply(6, &ev("_global", 6, with_pool));
        assert_eq!(m.channels["ch"].proxy_pool.as_deref(), Some("eu"));
        let direct = EventBody::ChannelUpdated(ChannelUpdated {
            channel_id: "ch".into(),
            proxy_pool: Some(String::new()),
            ..ChannelUpdated::default()
        });
        m.apply(7, &ev("_global", 7, direct));
        assert_eq!(m.channels["ch"].proxy_pool, None);
    }

    #[test]
    fn a_removed_route_is_gone_and_removing_it_again_changes_nothing() {
        let set = |model: &str| {
            EventBody::RouteSet(crate::event::RouteSet {
                model: model.into(),
                strategy: crate::event::RouteStrategy::LeastLatency,
                fallback: vec!["m2".into()],
            })
        };
        let removed = |model: &str| EventBody::RouteRemoved(crate::event::RouteRemoved { model: model.into() });
        let (mut m, _) = fold(&[ev("_global", 1, set("m")), ev("_global", 2, set("n"))]);
        assert_eq!(m.apply(3, &ev("_global", 3, removed("m"))), Outcome::Changed(Change::Route("m".into())));
        assert_eq!(m.routes.keys().collect::<Vec<_>>(), ["n"]);
        assert_eq!(m.apply(4, &ev("_global", 4, removed("m"))), Outcome::Unchanged);
        assert!(matches!(m.apply(5, &ev("_global", 5, set("m"))), Outcome::Changed(_)));
        assert_eq!(m.routes["m"].fallback, ["m2"]);
    }
}
