//! Admin operations on the control stream — create a tenant, issue and revoke keys, add, update
//! and remove channels, set prices, manage admin users — as a library the CLI uses now and the HTTP admin API next.
//! Each operation reads the control model from the log, checks its input against it, and
//! appends one control event (waiting for the log's own acknowledgement). Errors are typed.
//! No HTTP, no printing, no provider code here: the provider catalog is given by the caller.

mod error;
mod proxies;
mod users;

use futures::StreamExt as _;
use nats::EventLog;
use schemas::control::{ControlModel, Key};
use schemas::secret::MasterKey;
use schemas::{
    ApiKeyIssued, ApiKeyRevoked, ChannelAdded, ChannelKeyAdded, ChannelKeyRemoved, ChannelKeyUpdated, ChannelRemoved,
    ChannelUpdated, Envelope, EventBody, GLOBAL_TENANT, PricePublished, RouteRemoved, RouteSet, RouteStrategy, Stream,
    TenantCreated, TenantId, UpstreamKeyState, UpstreamKeyStateChanged,
};

pub use crate::error::AdminError;
pub use crate::proxies::{
    MAX_PROXIES_PER_POOL, NewProxy, PROXY_SCHEMES, PoolSync, ProxyUrl, checked_proxy_name, parse_proxy_list,
    parse_proxy_url, proxy_url_with_credentials,
};
pub use crate::users::{CreatedUser, NewUser, UserChanges, find_user, normalise_email};

/// Reads the control stream up to its current end and folds it into the control model.
/// Undecodable events are skipped, as every other consumer skips them.
pub async fn load(log: &EventLog) -> Result<ControlModel, AdminError> {
    Ok(load_at(log).await?.0)
}

/// [`load`], with the control stream's sequence the model reflects: what a conditional append
/// ([`EventLog::append_if_last`]) expects to still be the stream's last.
pub async fn load_at(log: &EventLog) -> Result<(ControlModel, u64), AdminError> {
    let end = log.last_seq(Stream::Control).await.map_err(AdminError::log("read the control stream"))?;
    let mut model = ControlModel::default();
    if end == 0 {
        return Ok((model, end));
    }
    let mut tail = log.tail(Stream::Control, 0);
    while let Some(ev) = tail.next().await {
        let ev = ev.map_err(AdminError::log("read the control stream"))?;
        if let Ok(env) = ev.decode() {
            model.apply(ev.seq, &env);
        }
        if ev.seq >= end {
            break;
        }
    }
    Ok((model, end))
}

/// Finds a key by id, display prefix, or the whole key. An ambiguous prefix is an error.
pub fn find_key<'a>(model: &'a ControlModel, needle: &str) -> Result<&'a Key, AdminError> {
    if let Some(k) = model.keys.get(needle) {
        return Ok(k);
    }
    if let Some(k) = model.key_by_hash(&schemas::keys::hash(needle)) {
        return Ok(k);
    }
    let matches: Vec<&Key> =
        model.keys.values().filter(|k| needle.starts_with(&k.prefix) || k.prefix.starts_with(needle)).collect();
    match matches.as_slice() {
        [one] if needle.len() >= 6 => Ok(one),
        [] | [_] => Err(AdminError::NoKey(schemas::keys::display_prefix(needle))),
        _ => Err(AdminError::AmbiguousKey { count: matches.len(), needle: schemas::keys::display_prefix(needle) }),
    }
}

/// What the admin side knows of a provider: whether it has a default base URL, needs an
/// `api-version` or requires a key. The gateway's preset table is the source; the caller builds
/// the catalog so this crate does not import the gateway.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The `--provider` name.
    pub name: &'static str,
    /// The vendor's documented base URL, if it has one.
    pub default_base_url: Option<&'static str>,
    /// `Some(default)` when channels of this provider need an `api-version` (Azure).
    pub default_api_version: Option<&'static str>,
    /// `Some(header)` when the vendor refuses every call without a key (named in the error).
    pub key_required: Option<&'static str>,
}

/// The admin operations, acting as one admin on one log.
#[derive(Clone)]
pub struct Admin {
    log: EventLog,
    actor: String,
    actor_addr: Option<String>,
    source: String,
    providers: Vec<Provider>,
    egress: egress::Policy,
    dns: egress::Dns,
}

/// A key just issued: its id and the plaintext, shown once.
pub struct IssuedKey {
    /// `key_…`
    pub key_id: String,
    /// The plaintext key.
    pub key: String,
    /// Display prefix.
    pub prefix: String,
}

/// What `channels add` needs.
pub struct NewChannel {
    /// Unique name.
    pub name: String,
    /// Provider preset.
    pub provider: String,
    /// Base URL; `None` takes the provider's default.
    pub base_url: Option<String>,
    /// `api-version` (Azure); `None` takes the provider's default.
    pub api_version: Option<String>,
    /// Upstream API keys, at most [`MAX_KEYS_PER_CHANNEL`], each sealed before it leaves the
    /// operation; requests rotate across them. Empty for a keyless provider.
    pub api_keys: Vec<String>,
    /// Models served.
    pub models: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// Weight.
    pub weight: u32,
    /// Allow plain `http://` to a public host (`--insecure-http`).
    pub insecure_http: bool,
    /// `anthropic-beta` values clients may switch on through the channel (`--anthropic-beta`).
    pub anthropic_beta: Vec<String>,
    /// The proxy pool its calls go through (`--proxy-pool`); `None`: direct.
    pub proxy_pool: Option<String>,
}

/// A channel [`Admin::add_channel`] added.
#[derive(Debug, Clone)]
pub struct AddedChannel {
    /// `ch_…`
    pub channel_id: String,
    /// The keys after the first (`channel.key_added`): id and fingerprint, never the key.
    pub more_keys: Vec<(String, String)>,
}

/// What `channels update` changes; `None` keeps the current value.
#[derive(Default)]
pub struct ChannelChanges {
    /// New unique name.
    pub name: Option<String>,
    /// New base URL.
    pub base_url: Option<String>,
    /// New upstream API key (sealed before it leaves the operation).
    pub api_key: Option<String>,
    /// New model list.
    pub models: Option<Vec<String>>,
    /// New priority.
    pub priority: Option<i32>,
    /// New weight.
    pub weight: Option<u32>,
    /// New `api-version` (Azure).
    pub api_version: Option<String>,
    /// Allow plain `http://` to a public host for the new base URL (`--insecure-http`).
    pub insecure_http: bool,
    /// New `anthropic-beta` allow list (`--anthropic-beta`; an empty list clears it).
    pub anthropic_beta: Option<Vec<String>>,
    /// Enable or disable the whole channel (a disabled channel serves nothing).
    pub enabled: Option<bool>,
    /// A new proxy pool (`--proxy-pool`); the empty string sends the channel direct again.
    pub proxy_pool: Option<String>,
}

/// A tenant's profile: display name, time zone and request caps.
#[derive(Debug, Clone, Default)]
pub struct TenantProfile {
    /// Any script, 1-128 characters, no control characters (trimmed).
    pub display_name: Option<String>,
    /// An IANA zone name (`Asia/Shanghai`).
    pub time_zone: Option<String>,
    /// Cap on every request's output tokens for the tenant's keys; `0` removes it.
    pub max_output_tokens: Option<u64>,
    /// Cap on every request's choices (`n`) for the tenant's keys; `0` removes it.
    pub max_n: Option<u64>,
}

/// The largest output-token cap a key or tenant may be given (the gateway's own default limit).
pub const MAX_OUTPUT_TOKENS_CAP: u64 = 1_000_000;
/// The largest choices cap a key or tenant may be given (the gateway's own limit on `n`).
pub const MAX_N_CAP: u64 = 128;

/// A key's caps and expiry, checked by [`Admin::create_key_with`].
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyLimits {
    /// Cap on a request's output tokens, `1..=`[`MAX_OUTPUT_TOKENS_CAP`].
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices, `1..=`[`MAX_N_CAP`].
    pub max_n: Option<u64>,
    /// When the key stops working, µs since the epoch; must be in the future.
    pub expires_at_us: Option<i64>,
}

impl KeyLimits {
    fn checked(self, now_us: i64) -> Result<KeyLimits, AdminError> {
        cap(self.max_output_tokens, "max_output_tokens", MAX_OUTPUT_TOKENS_CAP, false)?;
        cap(self.max_n, "max_n", MAX_N_CAP, false)?;
        if self.expires_at_us.is_some_and(|at| at <= now_us) {
            return Err(AdminError::ExpiryPast);
        }
        Ok(self)
    }
}

/// A cap in `1..=max` (or `0` where `zero_clears`).
fn cap(value: Option<u64>, name: &'static str, max: u64, zero_clears: bool) -> Result<(), AdminError> {
    match value {
        Some(0) if zero_clears => Ok(()),
        Some(v) if v == 0 || v > max => Err(AdminError::BadCap(name, max)),
        _ => Ok(()),
    }
}

/// A key's lifetime such as `30d`, `12h`, `90m`, `45s` or `2w`, as µs.
pub fn parse_lifetime(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(unit_at);
    let n: i64 = n.parse().ok().filter(|n| *n > 0)?;
    let secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1_000_000)
}

/// The longest display name, in characters.
const MAX_DISPLAY_NAME: usize = 128;

impl TenantProfile {
    fn is_empty(&self) -> bool {
        self.display_name.is_none()
            && self.time_zone.is_none()
            && self.max_output_tokens.is_none()
            && self.max_n.is_none()
    }

    fn into_event(self, tenant: &TenantId) -> EventBody {
        EventBody::TenantUpdated(schemas::TenantUpdated {
            name: tenant.to_string(),
            display_name: self.display_name,
            time_zone: self.time_zone,
            max_output_tokens: self.max_output_tokens,
            max_n: self.max_n,
        })
    }

    /// The profile with its display name trimmed and its zone canonical; a cap of `0` removes the
    /// cap where `zero_clears` (an update) and is refused otherwise (a new tenant).
    fn checked(self, zero_clears: bool) -> Result<TenantProfile, AdminError> {
        let display_name = match self.display_name.map(|d| d.trim().to_owned()) {
            Some(d) if d.is_empty() || d.chars().count() > MAX_DISPLAY_NAME || d.chars().any(char::is_control) => {
                return Err(AdminError::BadDisplayName);
            }
            d => d,
        };
        let time_zone = match self.time_zone.map(|z| z.trim().to_owned()) {
            Some(z) => match z.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz.name().to_owned()),
                Err(_) => return Err(AdminError::BadTimeZone(z.chars().take(64).collect())),
            },
            None => None,
        };
        cap(self.max_output_tokens, "max_output_tokens", MAX_OUTPUT_TOKENS_CAP, zero_clears)?;
        cap(self.max_n, "max_n", MAX_N_CAP, zero_clears)?;
        Ok(TenantProfile { display_name, time_zone, max_output_tokens: self.max_output_tokens, max_n: self.max_n })
    }
}

/// The most upstream keys one channel may hold.
pub const MAX_KEYS_PER_CHANNEL: usize = 64;

/// One upstream key of a channel as listings show it: its id and fingerprint, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    /// `ukey_…`
    pub key_id: String,
    /// `sha256:…` of the key; `-` for a keyless channel's slot.
    pub fingerprint: String,
    /// `active`, `disabled`, `cooling_down`, `open`.
    pub state: &'static str,
    /// Why, when not active.
    pub reason: Option<String>,
    /// End of a cool-down or open breaker (µs since the epoch).
    pub until_us: Option<i64>,
    /// Disabled by an admin.
    pub manual: bool,
    /// The balance under which it is reported `degraded` (nanos).
    pub low_balance_nanos: Option<i64>,
}

/// The keys of `channel`, opened with `master` only to fingerprint the ones whose event carried
/// no fingerprint (a key from `channel.added`).
pub fn key_views(channel: &schemas::control::Channel, master: Option<&MasterKey>) -> Vec<KeyView> {
    channel
        .keys
        .iter()
        .map(|k| {
            let fingerprint = match (&k.fingerprint, &k.sealed, master) {
                (Some(f), _, _) => f.clone(),
                (None, None, _) => "-".to_owned(),
                (None, Some(sealed), Some(m)) => m
                    .open(sealed, &k.seal_context(&channel.channel_id))
                    .map_or_else(|_| "unopenable".to_owned(), |p| schemas::secret::fingerprint(&p)),
                (None, Some(_), None) => "sealed".to_owned(),
            };
            KeyView {
                key_id: k.key_id.clone(),
                fingerprint,
                state: k.state.as_str(),
                reason: k.reason.clone(),
                until_us: k.until_us,
                manual: k.manual,
                low_balance_nanos: k.low_balance_nanos,
            }
        })
        .collect()
}

/// The most fallback models one route may list.
pub const MAX_FALLBACKS: usize = 8;

/// `pool` when it holds at least one live proxy: a channel sent through an empty pool would
/// have no way out, so naming one is refused rather than taken for a typo's silent outage. (A
/// pool that empties later — its last proxy removed, or dropped from `PROXY_POOL_URL` — keeps
/// its channels; their calls fail with `proxy_failed` until it holds a proxy again.)
fn known_pool(model: &ControlModel, pool: &str) -> Result<String, AdminError> {
    if model.pool(pool).is_empty() {
        return Err(AdminError::UnknownPool(pool.to_owned()));
    }
    Ok(pool.to_owned())
}

/// Parses a route strategy's name.
pub fn parse_strategy(name: &str) -> Result<RouteStrategy, AdminError> {
    match name.trim() {
        "priority" => Ok(RouteStrategy::Priority),
        "least-latency" => Ok(RouteStrategy::LeastLatency),
        "lowest-cost" => Ok(RouteStrategy::LowestCost),
        other => Err(AdminError::UnknownStrategy(other.chars().take(64).collect())),
    }
}

/// What `prices set` publishes: decimal amounts per one million tokens.
pub struct NewPrice<'a> {
    /// Model name.
    pub model: &'a str,
    /// A live channel's name or id: the price then overrides the model's price there alone.
    pub channel: Option<&'a str>,
    /// ISO currency.
    pub currency: &'a str,
    /// Uncached input.
    pub input: &'a str,
    /// Output.
    pub output: &'a str,
    /// Cached input (default: the input price).
    pub cached: Option<&'a str>,
    /// Cache-write input (default: the input price).
    pub cache_write: Option<&'a str>,
}

/// Now, in µs since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Trims a base URL and checks it is a plain http(s) URL without credentials.
fn checked_base_url(url: &str) -> Result<String, AdminError> {
    let url = url.trim().trim_end_matches('/').to_owned();
    if !((url.starts_with("http://") || url.starts_with("https://")) && url.len() > "https://".len()) {
        return Err(AdminError::BadBaseUrl(url));
    }
    if url.contains('@') {
        return Err(AdminError::CredentialsInUrl);
    }
    Ok(url)
}

/// The most `anthropic-beta` values a channel may allow, and the longest one: Anthropic's beta
/// names are short dated tokens (`prompt-caching-2024-07-31`).
const MAX_BETAS: usize = 32;
const MAX_BETA_LEN: usize = 64;

/// Trimmed, de-duplicated `anthropic-beta` names of letters, digits and `-`.
fn checked_betas(betas: Vec<String>) -> Result<Vec<String>, AdminError> {
    let mut out: Vec<String> = Vec::new();
    for b in betas.iter().map(|b| b.trim()).filter(|b| !b.is_empty()) {
        let ok = b.len() <= MAX_BETA_LEN && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-');
        if !ok {
            return Err(AdminError::BadBeta(b.chars().take(MAX_BETA_LEN).collect()));
        }
        if !out.iter().any(|o| o == b) {
            out.push(b.to_owned());
        }
    }
    if out.len() > MAX_BETAS {
        return Err(AdminError::BadBeta(format!("more than {MAX_BETAS} values")));
    }
    Ok(out)
}

/// Trimmed model names, at least one.
fn checked_models(models: Vec<String>) -> Result<Vec<String>, AdminError> {
    let models: Vec<String> = models.into_iter().map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
    if models.is_empty() {
        return Err(AdminError::NoModels);
    }
    Ok(models)
}

impl Admin {
    /// Operations on `log` by `actor` (recorded on every event: the audit trail), appended with
    /// `source` as the producing instance, for channels of the given `providers`.
    pub fn new(log: EventLog, actor: &str, source: &str, providers: Vec<Provider>) -> Admin {
        Admin {
            log,
            actor: actor.to_owned(),
            actor_addr: None,
            source: source.to_owned(),
            providers,
            egress: egress::Policy::default(),
            dns: egress::Dns::system(),
        }
    }

    /// Checks channel base URLs against `policy`, looking names up with `dns` (the default: the
    /// built-in policy and the system resolver).
    pub fn with_egress(mut self, policy: egress::Policy, dns: egress::Dns) -> Admin {
        self.egress = policy;
        self.dns = dns;
        self
    }

    /// The same operations acting as `actor` from client address `addr` (an HTTP caller):
    /// both are recorded on every event.
    pub fn acting_as(&self, actor: &str, addr: Option<String>) -> Admin {
        Admin { actor: actor.to_owned(), actor_addr: addr, ..self.clone() }
    }

    /// The log the operations append to.
    pub fn log(&self) -> &EventLog {
        &self.log
    }

    /// A control event by this admin.
    pub fn event(&self, tenant: &str, body: EventBody) -> Envelope {
        let mut env = Envelope::new(tenant, &self.source, now_us(), body);
        env.actor = Some(self.actor.clone());
        env.actor_addr = self.actor_addr.clone();
        env
    }

    async fn append(&self, env: &Envelope) -> Result<(), AdminError> {
        let what = env.body.type_name();
        self.log.append_acked(env).await.map_err(|source| AdminError::Append { what, source })
    }

    /// Appends `env` only if the control stream still ends at `seen` (the sequence its checks
    /// were made at): `Ok(false)` when another control event came first, and nothing was
    /// appended.
    async fn append_if_unchanged(&self, env: &Envelope, seen: u64) -> Result<bool, AdminError> {
        let what = env.body.type_name();
        match self.log.append_if_last(env, seen).await {
            Ok(()) => Ok(true),
            Err(nats::LogError::Conflict(_)) => Ok(false),
            Err(source) => Err(AdminError::Append { what, source }),
        }
    }

    /// The validation step every channel base URL goes through: its shape, then the outbound
    /// address policy for a URL an admin sets (`egress::Trust::Admin`): no forbidden address,
    /// literal or resolved now (metadata, link-local, unspecified, …), and plain http only to
    /// private or loopback hosts unless `insecure_http`. A private or loopback host is allowed,
    /// with a warning naming the channel (never its key).
    async fn base_url(&self, url: &str, insecure_http: bool, channel: &str) -> Result<String, AdminError> {
        let url = checked_base_url(url)?;
        match self.egress.check_url_resolving(&url, egress::Trust::Admin, insecure_http, &self.dns).await {
            Ok(target) => {
                if target.is_internal() {
                    tracing::warn!(channel, host = %target.host, "Channel base URL reaches a private network or this host; allowed because an admin set it.");
                }
                Ok(url)
            }
            Err(e @ egress::UrlRefused::InsecureHttp { .. }) => {
                Err(AdminError::UrlRefused(format!("{e} (or give --insecure-http to allow it)")))
            }
            Err(e) => Err(AdminError::UrlRefused(e.to_string())),
        }
    }

    /// `tenants create NAME`.
    pub async fn create_tenant(&self, name: &str) -> Result<(), AdminError> {
        self.create_tenant_with(name, TenantProfile::default()).await
    }

    /// `tenants create NAME [--display-name TEXT] [--time-zone ZONE]`: `tenant.created`, then a
    /// `tenant.updated` with the profile when one is given (checked before anything is appended).
    pub async fn create_tenant_with(&self, name: &str, profile: TenantProfile) -> Result<(), AdminError> {
        let tenant = TenantId::parse(name)?;
        let profile = profile.checked(false)?;
        let model = load(&self.log).await?;
        if model.tenants.contains_key(tenant.as_str()) {
            return Err(AdminError::TenantExists(tenant.to_string()));
        }
        let env = self.event(tenant.as_str(), EventBody::TenantCreated(TenantCreated { name: tenant.to_string() }));
        self.append(&env).await?;
        if !profile.is_empty() {
            self.append(&self.event(tenant.as_str(), profile.into_event(&tenant))).await?;
        }
        Ok(())
    }

    /// `tenants update NAME [--display-name TEXT] [--time-zone ZONE] [--max-output-tokens N]
    /// [--max-n N]`: one `tenant.updated` with the fields given (a cap of `0` removes it).
    pub async fn update_tenant(&self, name: &str, profile: TenantProfile) -> Result<(), AdminError> {
        let tenant = TenantId::parse(name)?;
        let profile = profile.checked(true)?;
        if profile.is_empty() {
            return Err(AdminError::NoTenantChange);
        }
        let model = load(&self.log).await?;
        if !model.tenants.contains_key(tenant.as_str()) {
            return Err(AdminError::NoTenant(tenant.to_string()));
        }
        self.append(&self.event(tenant.as_str(), profile.into_event(&tenant))).await
    }

    /// `keys create --tenant T [--max-output-tokens N] [--max-n N] [--expires-in D | --expires-at T]`.
    pub async fn create_key_with(
        &self,
        tenant: &str,
        name: Option<String>,
        models: Option<Vec<String>>,
        tenant_usage: bool,
        limits: KeyLimits,
    ) -> Result<IssuedKey, AdminError> {
        let tenant = TenantId::parse(tenant)?;
        let limits = limits.checked(now_us())?;
        let model = load(&self.log).await?;
        if !model.tenants.contains_key(tenant.as_str()) {
            return Err(AdminError::NoTenant(tenant.to_string()));
        }
        self.issue_key_with(tenant.as_str(), name, models, tenant_usage, limits).await
    }

    /// `keys create --tenant T`: the tenant must exist.
    pub async fn create_key(
        &self,
        tenant: &str,
        name: Option<String>,
        models: Option<Vec<String>>,
        tenant_usage: bool,
    ) -> Result<IssuedKey, AdminError> {
        let tenant = TenantId::parse(tenant)?;
        let model = load(&self.log).await?;
        if !model.tenants.contains_key(tenant.as_str()) {
            return Err(AdminError::NoTenant(tenant.to_string()));
        }
        self.issue_key_with(tenant.as_str(), name, models, tenant_usage, KeyLimits::default()).await
    }

    /// Appends `api_key.issued` for a fresh key of `tenant`, without checking the tenant.
    pub async fn issue_key(
        &self,
        tenant: &str,
        name: Option<String>,
        models: Option<Vec<String>>,
        tenant_usage: bool,
    ) -> Result<IssuedKey, AdminError> {
        self.issue_key_with(tenant, name, models, tenant_usage, KeyLimits::default()).await
    }

    async fn issue_key_with(
        &self,
        tenant: &str,
        name: Option<String>,
        models: Option<Vec<String>>,
        tenant_usage: bool,
        limits: KeyLimits,
    ) -> Result<IssuedKey, AdminError> {
        let key = schemas::keys::generate();
        let key_id = format!("key_{}", uuid::Uuid::now_v7().simple());
        let env = self.event(
            tenant,
            EventBody::ApiKeyIssued(ApiKeyIssued {
                key_id: key_id.clone(),
                hash: key.hash,
                prefix: key.prefix.clone(),
                name,
                models,
                tenant_usage,
                max_output_tokens: limits.max_output_tokens,
                max_n: limits.max_n,
                expires_at_us: limits.expires_at_us,
            }),
        );
        self.append(&env).await?;
        Ok(IssuedKey { key_id, key: key.plaintext, prefix: key.prefix })
    }

    /// `keys revoke KEY_ID_OR_PREFIX` (the whole key works too). Returns the revoked key's id.
    pub async fn revoke_key(&self, needle: &str) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let key = find_key(&model, needle)?;
        if key.revoked() {
            return Err(AdminError::AlreadyRevoked(key.key_id.clone()));
        }
        let env = self.event(&key.tenant, EventBody::ApiKeyRevoked(ApiKeyRevoked { key_id: key.key_id.clone() }));
        self.append(&env).await?;
        Ok(key.key_id.clone())
    }

    fn provider(&self, name: &str) -> Result<&Provider, AdminError> {
        self.providers.iter().find(|p| p.name == name).ok_or_else(|| AdminError::UnknownProvider {
            provider: name.to_owned(),
            known: self.providers.iter().map(|p| p.name).collect::<Vec<_>>().join(", "),
        })
    }

    /// `channels add`. Returns the channel id.
    /// `channels add`: one `channel.added` holding the first key, then one `channel.key_added` per
    /// further key. Every key is checked (count, repeats) before anything is appended. Returns the
    /// channel id and the further keys' ids and fingerprints.
    pub async fn add_channel(&self, master: &MasterKey, c: NewChannel) -> Result<AddedChannel, AdminError> {
        let provider = self.provider(&c.provider)?;
        let Some(url) = c.base_url.filter(|u| !u.trim().is_empty()).or(provider.default_base_url.map(str::to_owned))
        else {
            return Err(AdminError::NoDefaultBaseUrl(c.provider));
        };
        let url = self.base_url(&url, c.insecure_http, &c.name).await?;
        let api_version = match (provider.default_api_version, c.api_version.filter(|v| !v.trim().is_empty())) {
            (Some(default), v) => Some(v.map_or_else(|| default.to_owned(), |v| v.trim().to_owned())),
            (None, Some(_)) => return Err(AdminError::ApiVersionNotApplicable),
            (None, None) => None,
        };
        let models = checked_models(c.models)?;
        if c.weight == 0 {
            return Err(AdminError::ZeroWeight);
        }
        let keys: Vec<String> = c.api_keys.iter().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect();
        if keys.len() > MAX_KEYS_PER_CHANNEL {
            return Err(AdminError::TooManyApiKeys(MAX_KEYS_PER_CHANNEL));
        }
        if keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k)) {
            return Err(AdminError::RepeatedApiKey);
        }
        let mut keys = keys.into_iter();
        let api_key = keys.next();
        if let (Some(header), None) = (provider.key_required, &api_key) {
            return Err(AdminError::KeyRequired { provider: c.provider, header });
        }
        let proxy_pool = c.proxy_pool.as_deref().map(checked_proxy_name).transpose()?;
        let model = load(&self.log).await?;
        if model.channels.values().any(|ch| ch.name == c.name) {
            return Err(AdminError::ChannelNameTaken(c.name));
        }
        if let Some(pool) = &proxy_pool {
            known_pool(&model, pool)?;
        }
        let channel_id = format!("ch_{}", uuid::Uuid::now_v7().simple());
        let sealed = api_key.map(|k| master.seal(&k, &channel_id));
        let env = self.event(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: channel_id.clone(),
                name: c.name,
                provider: c.provider,
                base_url: url,
                api_key: sealed,
                models,
                priority: c.priority,
                weight: c.weight,
                api_version,
                insecure_http: c.insecure_http,
                anthropic_beta: checked_betas(c.anthropic_beta)?,
                proxy_pool,
            }),
        );
        self.append(&env).await?;
        let mut more_keys = Vec::new();
        for key in keys {
            let key_id = format!("ukey_{}", uuid::Uuid::now_v7().simple());
            let fingerprint = schemas::secret::fingerprint(&key);
            let body = EventBody::ChannelKeyAdded(ChannelKeyAdded {
                channel_id: channel_id.clone(),
                key_id: key_id.clone(),
                api_key: master.seal(&key, &schemas::key_seal_context(&channel_id, &key_id)),
                fingerprint: Some(fingerprint.clone()),
            });
            self.append(&self.event(GLOBAL_TENANT, body)).await?;
            more_keys.push((key_id, fingerprint));
        }
        Ok(AddedChannel { channel_id, more_keys })
    }

    /// `channels update NAME_OR_ID`: appends one `channel.updated` carrying only the fields
    /// given, so everything else (the sealed key included) keeps its value. Returns the id.
    pub async fn update_channel(
        &self,
        master: &MasterKey,
        needle: &str,
        c: ChannelChanges,
    ) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        let name = c.name.map(|n| n.trim().to_owned());
        if let Some(n) = &name {
            if n.is_empty() {
                return Err(AdminError::EmptyName);
            }
            if model.channels.values().any(|o| o.name == *n && o.channel_id != channel_id) {
                return Err(AdminError::ChannelNameTaken(n.clone()));
            }
        }
        let api_version = c.api_version.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let takes_version = self.providers.iter().any(|p| p.name == ch.provider && p.default_api_version.is_some());
        if api_version.is_some() && !takes_version {
            return Err(AdminError::ApiVersionNotApplicable);
        }
        if c.weight == Some(0) {
            return Err(AdminError::ZeroWeight);
        }
        if c.insecure_http && c.base_url.is_none() {
            return Err(AdminError::InsecureHttpWithoutUrl);
        }
        let base_url = match c.base_url.as_deref() {
            Some(u) => Some(self.base_url(u, c.insecure_http, name.as_deref().unwrap_or(&ch.name)).await?),
            None => None,
        };
        let update = ChannelUpdated {
            channel_id: channel_id.clone(),
            name,
            insecure_http: base_url.is_some().then_some(c.insecure_http),
            anthropic_beta: c.anthropic_beta.map(checked_betas).transpose()?,
            base_url,
            api_key: c.api_key.filter(|k| !k.is_empty()).map(|k| master.seal(&k, &channel_id)),
            models: c.models.map(checked_models).transpose()?,
            priority: c.priority,
            weight: c.weight,
            enabled: c.enabled,
            api_version,
            proxy_pool: match c.proxy_pool.as_deref().map(str::trim) {
                None => None,
                Some("") => Some(String::new()),
                Some(p) => Some(known_pool(&model, &checked_proxy_name(p)?)?),
            },
        };
        if update == (ChannelUpdated { channel_id: channel_id.clone(), ..ChannelUpdated::default() }) {
            return Err(AdminError::NothingToChange);
        }
        self.append(&self.event(GLOBAL_TENANT, EventBody::ChannelUpdated(update))).await?;
        Ok(channel_id)
    }

    /// `channels remove NAME_OR_ID`. Returns the id.
    pub async fn remove_channel(&self, needle: &str) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        let env =
            self.event(GLOBAL_TENANT, EventBody::ChannelRemoved(ChannelRemoved { channel_id: channel_id.clone() }));
        self.append(&env).await?;
        Ok(channel_id)
    }

    /// `channels keys add CHANNEL --api-key K`: one more key for the channel, sealed under a new
    /// id. Refused for a key the channel has (compared after opening, never printed). Returns the
    /// channel id, the key id and the key's fingerprint.
    pub async fn add_key(
        &self,
        master: &MasterKey,
        needle: &str,
        api_key: &str,
    ) -> Result<(String, String, String), AdminError> {
        let api_key = api_key.trim();
        if api_key.is_empty() {
            return Err(AdminError::EmptyApiKey);
        }
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        if ch.keys.len() >= MAX_KEYS_PER_CHANNEL {
            return Err(AdminError::TooManyApiKeys(MAX_KEYS_PER_CHANNEL));
        }
        for k in &ch.keys {
            let Some(sealed) = &k.sealed else { continue };
            let known = master
                .open(sealed, &k.seal_context(&channel_id))
                .map_err(|_| AdminError::KeyUnopenable(channel_id.clone()))?;
            if known == api_key {
                return Err(AdminError::DuplicateApiKey(channel_id, k.key_id.clone()));
            }
        }
        let key_id = format!("ukey_{}", uuid::Uuid::now_v7().simple());
        let fingerprint = schemas::secret::fingerprint(api_key);
        let sealed = master.seal(api_key, &schemas::key_seal_context(&channel_id, &key_id));
        let body = EventBody::ChannelKeyAdded(ChannelKeyAdded {
            channel_id: channel_id.clone(),
            key_id: key_id.clone(),
            api_key: sealed,
            fingerprint: Some(fingerprint.clone()),
        });
        self.append(&self.event(&ch.tenant, body)).await?;
        Ok((channel_id, key_id, fingerprint))
    }

    /// `channels keys remove CHANNEL KEY_ID`. The channel's only key stays. Returns the channel id.
    pub async fn remove_key(&self, needle: &str, key_id: &str) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        if !ch.keys.iter().any(|k| k.key_id == key_id) {
            return Err(AdminError::NoUpstreamKey { channel: channel_id, key_id: key_id.to_owned() });
        }
        if ch.keys.iter().filter(|k| k.sealed.is_some()).count() <= 1 {
            return Err(AdminError::LastApiKey(key_id.to_owned()));
        }
        let body = EventBody::ChannelKeyRemoved(ChannelKeyRemoved {
            channel_id: channel_id.clone(),
            key_id: key_id.to_owned(),
        });
        self.append(&self.event(&ch.tenant, body)).await?;
        Ok(channel_id)
    }

    /// `channels keys disable|enable CHANNEL KEY_ID`: an admin's state change. A disabled key
    /// stays out of rotation whatever live traffic or probes see, until an admin enables it;
    /// enabling also clears an automatic disable, cool-down or open breaker. Returns the channel id.
    pub async fn set_key_enabled(&self, needle: &str, key_id: &str, enabled: bool) -> Result<String, AdminError> {
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        let Some(key) = ch.keys.iter().find(|k| k.key_id == key_id) else {
            return Err(AdminError::NoUpstreamKey { channel: channel_id, key_id: key_id.to_owned() });
        };
        let state = if enabled { UpstreamKeyState::Active } else { UpstreamKeyState::Disabled };
        if key.state == state && (enabled || key.manual) {
            return Err(AdminError::KeyStateUnchanged(key_id.to_owned(), state.as_str()));
        }
        let body = EventBody::UpstreamKeyStateChanged(UpstreamKeyStateChanged {
            channel_id: channel_id.clone(),
            key_id: key_id.to_owned(),
            state,
            until_us: None,
            reason: "admin".to_owned(),
            manual: true,
            opens: 0,
        });
        self.append(&self.event(&ch.tenant, body)).await?;
        Ok(channel_id)
    }

    /// `channels keys low-balance CHANNEL KEY_ID AMOUNT|off`: the balance (a decimal in the
    /// currency the key's vendor reports) under which the key is reported `degraded` with the
    /// reason `low_balance`; `None` clears it. Returns the channel id.
    pub async fn set_key_low_balance(
        &self,
        needle: &str,
        key_id: &str,
        amount: Option<&str>,
    ) -> Result<String, AdminError> {
        let nanos = amount
            .map(|a| {
                schemas::money::parse_per_mtok(a)
                    .map_err(|source| AdminError::BadAmount { flag: "low-balance", source })
            })
            .transpose()?;
        let model = load(&self.log).await?;
        let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
        let channel_id = ch.channel_id.clone();
        if !ch.keys.iter().any(|k| k.key_id == key_id) {
            return Err(AdminError::NoUpstreamKey { channel: channel_id, key_id: key_id.to_owned() });
        }
        let body = EventBody::ChannelKeyUpdated(ChannelKeyUpdated {
            channel_id: channel_id.clone(),
            key_id: key_id.to_owned(),
            low_balance_nanos: Some(nanos),
        });
        self.append(&self.event(&ch.tenant, body)).await?;
        Ok(channel_id)
    }

    /// `routes set --model M --strategy S --fallback m2,m3`: replaces the model's route. The
    /// fallback models are tried in order when every channel of `model` failed (or its context
    /// window was exceeded); they need not have channels yet.
    pub async fn set_route(&self, model: &str, strategy: &str, fallback: Vec<String>) -> Result<(), AdminError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(AdminError::EmptyModel);
        }
        let strategy = parse_strategy(strategy)?;
        let mut list: Vec<String> = Vec::new();
        for m in fallback.iter().map(|m| m.trim()).filter(|m| !m.is_empty()) {
            if m == model {
                return Err(AdminError::BadFallback(format!("{model} cannot be its own fallback")));
            }
            if !list.iter().any(|x| x == m) {
                list.push(m.to_owned());
            }
        }
        if list.len() > MAX_FALLBACKS {
            return Err(AdminError::BadFallback(format!("at most {MAX_FALLBACKS} models")));
        }
        let body = EventBody::RouteSet(RouteSet { model: model.to_owned(), strategy, fallback: list });
        self.append(&self.event(GLOBAL_TENANT, body)).await
    }

    /// `routes remove --model M`: the model is routed by the default again (priority, no
    /// fallback). Refused for a model without a route, so a typo does not pass for a removal.
    pub async fn remove_route(&self, model: &str) -> Result<(), AdminError> {
        let model = model.trim();
        if model.is_empty() {
            return Err(AdminError::EmptyModel);
        }
        if !load(&self.log).await?.routes.contains_key(model) {
            return Err(AdminError::NoRoute(model.to_owned()));
        }
        let body = EventBody::RouteRemoved(RouteRemoved { model: model.to_owned() });
        self.append(&self.event(GLOBAL_TENANT, body)).await
    }

    /// `prices set`. Returns the price version (the event id).
    pub async fn set_price(&self, p: NewPrice<'_>) -> Result<String, AdminError> {
        if p.model.trim().is_empty() {
            return Err(AdminError::EmptyModel);
        }
        let currency = p.currency.trim().to_ascii_uppercase();
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            return Err(AdminError::BadCurrency);
        }
        let parse = |flag: &'static str, v: &str| {
            schemas::parse_per_mtok(v).map_err(|source| AdminError::BadAmount { flag, source })
        };
        let input = parse("input", p.input)?;
        let output = parse("output", p.output)?;
        let cached = p.cached.map(|v| parse("cached", v)).transpose()?;
        let cache_write = p.cache_write.map(|v| parse("cache-write", v)).transpose()?;
        let channel_id = match p.channel {
            Some(needle) => {
                let model = load(&self.log).await?;
                let ch = model.find_channel(needle).ok_or_else(|| AdminError::NoChannel(needle.to_owned()))?;
                Some(ch.channel_id.clone())
            }
            None => None,
        };
        let env = self.event(
            GLOBAL_TENANT,
            EventBody::PricePublished(PricePublished {
                model: p.model.trim().to_owned(),
                channel_id,
                currency,
                input_per_mtok_nanos: input,
                output_per_mtok_nanos: output,
                cached_input_per_mtok_nanos: cached,
                cache_write_per_mtok_nanos: cache_write,
            }),
        );
        self.append(&env).await?;
        Ok(env.id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use schemas::Envelope;

    use super::*;

    fn model_with(keys: &[(&str, &str)]) -> ControlModel {
        let mut model = ControlModel::default();
        for (i, (id, plaintext)) in keys.iter().enumerate() {
            let body = EventBody::ApiKeyIssued(ApiKeyIssued {
                key_id: (*id).to_owned(),
                hash: schemas::keys::hash(plaintext),
                prefix: schemas::keys::display_prefix(plaintext),
                name: None,
                models: None,
                tenant_usage: false,
                ..Default::default()
            });
            model.apply(i as u64 + 1, &Envelope::new("t", "test", 1, body));
        }
        model
    }

    #[test]
    fn a_key_is_found_by_id_by_the_whole_key_and_by_an_unambiguous_prefix() {
        let model = model_with(&[("key_a", "sk-AAAAAAAAAAAA"), ("key_b", "sk-BBBBBBBBBBBB")]);
        assert_eq!(find_key(&model, "key_a").map(|k| k.key_id.as_str()).ok(), Some("key_a"));
        assert_eq!(find_key(&model, "sk-BBBBBBBBBBBB").map(|k| k.key_id.as_str()).ok(), Some("key_b"));
        assert_eq!(find_key(&model, "sk-AAAAAAA").map(|k| k.key_id.as_str()).ok(), Some("key_a"));
        assert!(matches!(find_key(&model, "sk-C"), Err(AdminError::NoKey(_))));
    }

    #[test]
    fn tenant_profiles_take_any_script_and_iana_zones_only() {
        let p = |d: Option<&str>, z: Option<&str>| {
            TenantProfile { display_name: d.map(str::to_owned), time_zone: z.map(str::to_owned), ..Default::default() }
                .checked(false)
        };
        let ok = p(Some(" 华东分公司 "), Some("Asia/Shanghai")).ok();
        assert_eq!(ok.as_ref().and_then(|t| t.display_name.as_deref()), Some("华东分公司"));
        assert_eq!(ok.as_ref().and_then(|t| t.time_zone.as_deref()), Some("Asia/Shanghai"));
        assert!(matches!(p(Some(""), None), Err(AdminError::BadDisplayName)));
        assert!(matches!(p(Some("a\u{0}b"), None), Err(AdminError::BadDisplayName)));
        assert!(matches!(p(Some(&"名".repeat(129)), None), Err(AdminError::BadDisplayName)));
        assert!(matches!(p(None, Some("Mars/Olympus")), Err(AdminError::BadTimeZone(_))));
        assert!(p(None, Some("UTC")).is_ok());
    }

    #[test]
    fn a_zero_cap_is_refused_on_a_new_tenant_and_removes_the_cap_on_an_update() {
        let zero = TenantProfile { max_n: Some(0), ..Default::default() };
        assert!(matches!(zero.clone().checked(false), Err(AdminError::BadCap("max_n", MAX_N_CAP))));
        assert_eq!(zero.checked(true).ok().and_then(|p| p.max_n), Some(0));
        let over = TenantProfile { max_output_tokens: Some(MAX_OUTPUT_TOKENS_CAP + 1), ..Default::default() };
        assert!(matches!(over.checked(true), Err(AdminError::BadCap("max_output_tokens", _))));
    }

    #[test]
    fn a_prefix_two_keys_share_is_refused_and_an_unknown_key_is_not_echoed_whole() {
        let model = model_with(&[("key_a", "sk-SAMEPREFIX1"), ("key_b", "sk-SAMEPREFIX2")]);
        assert!(matches!(find_key(&model, "sk-SAMEPR"), Err(AdminError::AmbiguousKey { count: 2, .. })));
        let secret = "sk-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ";
        let message = find_key(&model, secret).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.contains(secret), "{message}");
    }
}
