//! The event envelope and the v1 event types. Events are past-tense facts; the envelope is
//! self-contained JSON. Breaking changes bump `v` and keep the old struct with an upcast on read.

use serde::de::Error as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::secret::Sealed;

/// Tenant token used for facts that belong to no tenant (prices, global channels).
pub const GLOBAL_TENANT: &str = "_global";

/// The JetStream streams (and, on the embedded backend, the `stream` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    /// Tenants, keys, channels, prices: kept forever.
    Control,
    /// `usage.recorded`: kept forever, the billing source of truth.
    Billing,
    /// `request.logged`: kept 90 days.
    Requests,
    /// Operational facts (`health.checked`): kept for a retention window like the request log.
    Ops,
}

impl Stream {
    /// Every stream, in a fixed order.
    pub const ALL: [Stream; 4] = [Stream::Control, Stream::Billing, Stream::Requests, Stream::Ops];

    /// The JetStream stream name.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Control => "LLMR_CONTROL",
            Stream::Billing => "LLMR_BILLING",
            Stream::Requests => "LLMR_REQUESTS",
            Stream::Ops => "LLMR_OPS",
        }
    }

    /// The subject filter that covers the whole stream.
    pub fn subjects(self) -> &'static str {
        match self {
            Stream::Control => "llmr.v1.control.>",
            Stream::Billing => "llmr.v1.usage.>",
            Stream::Requests => "llmr.v1.req.>",
            Stream::Ops => "llmr.v1.ops.>",
        }
    }

    /// Parses a stream name as returned by [`Stream::name`].
    pub fn from_name(name: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Where the token counts of a usage event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsageSource {
    /// Reported by the upstream.
    Upstream,
    /// Counted by our tokenizer because the upstream reported nothing.
    Estimated,
}

/// How the response to the client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamOutcome {
    /// The whole response reached the client.
    Completed,
    /// The client went away; the upstream was drained and billed.
    ClientDisconnected,
    /// The upstream failed part way; what it generated is billed.
    UpstreamError,
}

/// `tenant.created`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantCreated {
    /// The tenant's name (also the envelope's `tenant`).
    pub name: String,
}

/// `tenant.updated`: a tenant's profile; every present field replaces the old value. The name
/// (the slug) never changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUpdated {
    /// The tenant's name.
    pub name: String,
    /// A display name in any script (`华东分公司`), shown in reports and the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// The IANA time zone its reports use (`Asia/Shanghai`); absent = UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Cap on a request's output tokens (`max_tokens` and its synonyms) for every key of the
    /// tenant; `0` removes the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices (`n`, Gemini's `candidateCount`) for every key of the tenant;
    /// `0` removes the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u64>,
}

/// `api_key.issued`: only the hash and a display prefix, never the key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyIssued {
    /// Stable id (`key_…`).
    pub key_id: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The first characters of the key, for display.
    pub prefix: String,
    /// A label chosen by the admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Models the key may use; absent means every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// The key may read its whole tenant's usage (`/v1/usage?scope=tenant`); absent = its own only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tenant_usage: bool,
    /// Cap on a request's output tokens (`max_tokens` and its synonyms); absent = no key cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices (`n`, Gemini's `candidateCount`); absent = no key cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u64>,
    /// When the key stops working (µs since the epoch), judged against the clock at request time;
    /// absent = never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_us: Option<i64>,
}

/// `api_key.revoked`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRevoked {
    /// The key's id.
    pub key_id: String,
}

/// `channel.added`: an upstream endpoint with its (sealed) credential and the models it serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelAdded {
    /// Stable id (`ch_…`).
    pub channel_id: String,
    /// Unique display name.
    pub name: String,
    /// Provider preset name (`openai`, `deepseek`, `azure`, …); it picks the auth style and quirks.
    pub provider: String,
    /// Base URL, e.g. `https://api.openai.com/v1` (for Azure the resource endpoint,
    /// `https://{resource}.openai.azure.com`).
    pub base_url: String,
    /// The upstream API key, sealed with the master key, `channel_id` as context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Sealed>,
    /// Models this channel serves.
    pub models: Vec<String>,
    /// Higher is tried first.
    #[serde(default)]
    pub priority: i32,
    /// Share of traffic among channels of equal priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// The `api-version` query parameter some vendors require (Azure OpenAI); absent elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// The admin allowed plain `http://` to a public host (`--insecure-http`); absent = no.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_http: bool,
    /// `anthropic-beta` values clients may switch on through this channel (Anthropic channels);
    /// absent = none: the upstream account is shared, so a beta is the admin's choice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anthropic_beta: Vec<String>,
    /// The proxy pool every outbound call of the channel goes through; absent: direct.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_pool: Option<String>,
}

fn default_weight() -> u32 {
    1
}

/// `channel.updated`: every present field replaces the old value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelUpdated {
    /// The channel's id.
    pub channel_id: String,
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// New sealed credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Sealed>,
    /// New model list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// New priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// New weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Enabled or disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// New `api-version` (Azure OpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Whether plain `http://` to a public host is allowed for the new base URL
    /// (`--insecure-http`); set together with `base_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_http: Option<bool>,
    /// New `anthropic-beta` allow list (replaces the old one; empty = none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic_beta: Option<Vec<String>>,
    /// A new proxy pool for the channel; the empty string sends it direct again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_pool: Option<String>,
}

/// `channel.removed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRemoved {
    /// The channel's id.
    pub channel_id: String,
}

/// `price.published`: the price of a model from this event on. Amounts are nanos of `currency`
/// per one million tokens. Without `channel_id` it is the model's price on every channel; with
/// one it overrides that price on that channel alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricePublished {
    /// The model the price applies to.
    pub model: String,
    /// The channel (`ch_…`) this price overrides the model's price on; absent = every channel.
    /// Added after v1 without a version bump: older events lack it and mean every channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// ISO currency code (`USD`, `CNY`).
    pub currency: String,
    /// Uncached input tokens.
    pub input_per_mtok_nanos: i64,
    /// Output tokens (reasoning included).
    pub output_per_mtok_nanos: i64,
    /// Cached input tokens; absent means the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_mtok_nanos: Option<i64>,
    /// Cache-write input tokens; absent means the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_mtok_nanos: Option<i64>,
}

/// The price a usage event was charged at, carried in the event so projections never look it up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedPrice {
    /// Id of the `price.published` event in force.
    pub version: String,
    /// ISO currency code.
    pub currency: String,
    /// Nanos per 1M uncached input tokens.
    pub input_per_mtok_nanos: i64,
    /// Nanos per 1M cached input tokens.
    pub cached_input_per_mtok_nanos: i64,
    /// Nanos per 1M cache-write tokens.
    pub cache_write_per_mtok_nanos: i64,
    /// Nanos per 1M output tokens.
    pub output_per_mtok_nanos: i64,
}

impl AppliedPrice {
    /// Cost of the given token counts: one half-up rounding per line item, then summed.
    pub fn cost_nanos(&self, input: u64, cached: u64, cache_write: u64, output: u64) -> i64 {
        use crate::money::cost_nanos as line;
        line(input, self.input_per_mtok_nanos)
            .saturating_add(line(cached, self.cached_input_per_mtok_nanos))
            .saturating_add(line(cache_write, self.cache_write_per_mtok_nanos))
            .saturating_add(line(output, self.output_per_mtok_nanos))
    }
}

impl From<(&str, &PricePublished)> for AppliedPrice {
    fn from((version, p): (&str, &PricePublished)) -> Self {
        AppliedPrice {
            version: version.to_owned(),
            currency: p.currency.clone(),
            input_per_mtok_nanos: p.input_per_mtok_nanos,
            cached_input_per_mtok_nanos: p.cached_input_per_mtok_nanos.unwrap_or(p.input_per_mtok_nanos),
            cache_write_per_mtok_nanos: p.cache_write_per_mtok_nanos.unwrap_or(p.input_per_mtok_nanos),
            output_per_mtok_nanos: p.output_per_mtok_nanos,
        }
    }
}

/// `usage.recorded`: one per billable request. Token counts are disjoint: `input_tokens` excludes
/// cached and cache-write tokens; `output_tokens` includes `reasoning_tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecorded {
    /// The request id (= envelope `correlation_id`, returned as `x-request-id`).
    pub request_id: String,
    /// The virtual key's id.
    pub key_id: String,
    /// End user, when the client said (`user` field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `chat.completions`, `completions`, `embeddings`.
    pub endpoint: String,
    /// The model the client asked for.
    pub model_requested: String,
    /// The model the upstream says it served.
    pub model_served: String,
    /// Provider adapter name.
    pub provider: String,
    /// Channel id.
    pub channel_id: String,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Input tokens read from the provider's cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
    /// Input tokens written to the provider's cache.
    #[serde(default)]
    pub cache_write_tokens: u64,
    /// Output tokens, reasoning included.
    pub output_tokens: u64,
    /// Reasoning tokens (a part of `output_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// The upstream's usage object as it arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_usage: Option<serde_json::Value>,
    /// Upstream-reported or estimated.
    pub usage_source: UsageSource,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// How the response ended.
    pub stream_outcome: StreamOutcome,
    /// The price applied; absent when the model has no price (cost 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<AppliedPrice>,
    /// The charge, in nanos of `currency`.
    pub cost_nanos: i64,
    /// Currency of `cost_nanos`.
    pub currency: String,
}

/// `request.logged`: one per request, billable or not. No content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestLogged {
    /// The request id.
    pub request_id: String,
    /// The virtual key's id, when authentication succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// `chat.completions`, …
    pub endpoint: String,
    /// Model asked for, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Provider, when routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Channel, when routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// HTTP status sent to the client.
    pub status: u16,
    /// Total time in microseconds.
    pub latency_us: u64,
    /// Time to the first byte of the upstream body, for streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_us: Option<u64>,
    /// Upstream attempts made.
    pub attempts: u32,
    /// Stable error class, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_class: Option<String>,
    /// Whether the response was streamed.
    pub streamed: bool,
    /// Every upstream attempt, in order, at most [`MAX_LOGGED_ATTEMPTS`] (`attempts` keeps the
    /// full count). Absent in events written before it existed and when nothing was attempted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempt_log: Vec<AttemptRecord>,
}

/// Most attempts listed in one `request.logged`: the event must stay small whatever
/// `max_attempts` is set to.
pub const MAX_LOGGED_ATTEMPTS: usize = 16;

/// One upstream attempt of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The channel tried.
    pub channel_id: String,
    /// How the attempt ended, a stable snake_case class: `ok` when the upstream answered, else
    /// the failure class (also for a stream that failed after it started) (`key_invalid`, `quota_exhausted`, `rate_limited`, `first_byte_timeout`,
    /// `upstream_server_error`, `client_error`, …; README, "Error classes").
    pub class: String,
    /// The upstream's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Milliseconds until the upstream answered (headers, or a stream's first event) or failed.
    pub duration_ms: u64,
}

/// `auth.failures_counted`: failed authentications of one interval on one gateway, counted
/// instead of logged one by one (a flood of bad keys must not grow the log per request).
/// Never holds a whole key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthFailuresCounted {
    /// Start of the interval, microseconds since the Unix epoch.
    pub from_us: i64,
    /// End of the interval.
    pub to_us: i64,
    /// No key presented.
    #[serde(default)]
    pub missing: u64,
    /// A key header that is not text, not `Bearer`, empty or too long.
    #[serde(default)]
    pub malformed: u64,
    /// A well-formed key that does not exist.
    #[serde(default)]
    pub unknown: u64,
    /// A revoked key.
    #[serde(default)]
    pub revoked: u64,
    /// A key past its expiry.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub expired: u64,
    /// Requests refused with 429, unread, because their address had failed too often.
    #[serde(default)]
    pub throttled: u64,
    /// Distinct client addresses among the above (IPv6 by /64), counted up to 10,000.
    #[serde(default)]
    pub distinct_addresses: u64,
    /// A sample of presented keys' first characters (at most 8, never more than half a key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_prefixes: Vec<String>,
    /// A sample of the addresses that were throttled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub throttled_addresses: Vec<String>,
}

/// What an admin user may do. A user with a tenant sees and changes only that tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything, other owners included.
    Owner,
    /// Everything but owners.
    Admin,
    /// Reads only.
    Viewer,
    /// Reports and budgets only.
    Billing,
}

impl Role {
    /// Every role, most powerful first.
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Viewer, Role::Billing];

    /// The role's name, as in events and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Billing => "billing",
        }
    }

    /// Parses a name as returned by [`Role::as_str`].
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `user.created`: an admin user. Only an argon2id hash of the password, never the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    /// Stable id (`usr_…`).
    pub user_id: String,
    /// The login name, trimmed and lower-cased.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// The one tenant the user sees; absent = every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Argon2id PHC string of the password.
    pub password_hash: String,
}

impl std::fmt::Debug for UserCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserCreated")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// `user.updated`: every present field replaces the old value. A new password also ends every
/// session the user had.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserUpdated {
    /// The user's id.
    pub user_id: String,
    /// New role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// New argon2id password hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for UserUpdated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdated")
            .field("user_id", &self.user_id)
            .field("role", &self.role)
            .field("password_changed", &self.password_hash.is_some())
            .finish()
    }
}

/// `user.disabled`: the user can no longer log in and every token of theirs stops working.
/// Final: a disabled user is never enabled again (create a new one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDisabled {
    /// The user's id.
    pub user_id: String,
}

/// `user.sessions_revoked`: every token the user was issued before this event stops working
/// (logout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSessionsRevoked {
    /// The user's id.
    pub user_id: String,
}

/// `session_secret.generated`: the key that signs admin session tokens when `JWT_SECRET` is not
/// set, sealed with the master key, so every gateway of a cluster verifies the others' tokens.
/// The first one in the log wins.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSecretGenerated {
    /// The secret (base64 of 32 random bytes), sealed with context [`SESSION_SECRET_CONTEXT`].
    pub secret: Sealed,
}

/// The sealing context of [`SessionSecretGenerated::secret`].
pub const SESSION_SECRET_CONTEXT: &str = "session_secret";

/// `channel.key_added`: one more upstream API key for a channel; requests rotate across a
/// channel's usable keys. The channel's first key may also travel as `channel.added`'s `api_key`
/// (the form every channel had before keys had ids): that one is the key
/// [`legacy_key_id`]`(channel_id)`, sealed with the channel id as context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelKeyAdded {
    /// The channel's id.
    pub channel_id: String,
    /// `ukey_…`, unique within the channel.
    pub key_id: String,
    /// The key, sealed with the master key, [`key_seal_context`]`(channel_id, key_id)` as context.
    pub api_key: Sealed,
    /// A short digest of the key for listings ([`crate::secret::fingerprint`]); never the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// `channel.key_removed`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelKeyRemoved {
    /// The channel's id.
    pub channel_id: String,
    /// The key's id.
    pub key_id: String,
}

/// `channel.key_updated`: an upstream key's settings changed. Only what it carries changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelKeyUpdated {
    /// The channel's id.
    pub channel_id: String,
    /// The key's id.
    pub key_id: String,
    /// The balance under which the key is reported `degraded` (`low_balance`), in nanos of the
    /// currency its vendor reports the balance in; `Some(None)` clears it, absent leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "double_option")]
    pub low_balance_nanos: Option<Option<i64>>,
}

/// `Option<Option<T>>` on the wire: absent is `None`, `null` is `Some(None)`.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// The id of the key a channel got from `channel.added`'s (or `channel.updated`'s) `api_key`,
/// or of its keyless slot: derived from the channel id, so old events fold to the same id.
pub fn legacy_key_id(channel_id: &str) -> String {
    format!("ukey_{}", channel_id.strip_prefix("ch_").unwrap_or(channel_id))
}

/// The associated data a channel key is sealed with: the channel id for the legacy key, else
/// `channel_id/key_id`, so a sealed key cannot be moved to another channel or key id.
pub fn key_seal_context(channel_id: &str, key_id: &str) -> String {
    if key_id == legacy_key_id(channel_id) { channel_id.to_owned() } else { format!("{channel_id}/{key_id}") }
}

/// Where an upstream key stands, as every gateway applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKeyState {
    /// In rotation.
    Active,
    /// Out of rotation until enabled again: by an admin (`manual`), or found invalid or out of
    /// balance by live traffic (a probe that sees it usable again enables it).
    Disabled,
    /// Rate-limited by the vendor: out of rotation until `until_us`, then back without an event.
    CoolingDown,
    /// The circuit breaker opened: out of rotation until `until_us`, then one trial request
    /// (half-open); its success makes the key `active` again, its failure opens it longer.
    Open,
}

impl UpstreamKeyState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamKeyState::Active => "active",
            UpstreamKeyState::Disabled => "disabled",
            UpstreamKeyState::CoolingDown => "cooling_down",
            UpstreamKeyState::Open => "open",
        }
    }
}

/// `upstream_key.state_changed`: a key of a channel changed state. Appended by the gateway that
/// saw it happen (one event per change, never per request) or by an admin (`manual`); every
/// gateway folds it, so a cluster agrees without a shared cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamKeyStateChanged {
    /// The channel's id.
    pub channel_id: String,
    /// The key's id.
    pub key_id: String,
    /// The new state.
    pub state: UpstreamKeyState,
    /// End of a cool-down or of an open breaker, microseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_us: Option<i64>,
    /// Why: a failure class name (`key_invalid`, `rate_limited`, …), `recovered`, or `admin`.
    /// Never vendor text.
    pub reason: String,
    /// An admin's change: a manual disable is undone only by a manual enable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
    /// How many times in a row the breaker has opened (its cooldown grows with it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub opens: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// `health.checked`: one health probe of a resource (an upstream key `ukey_…` or an egress
/// proxy `px_…`; the id's prefix is the resource's kind). Small and bounded: a class, a latency, an optional balance, a short reason of our
/// own words, never vendor text. Its id is [`health_check_id`]`(resource_id, slot_us)`, so two
/// workers probing the same slot store it once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthChecked {
    /// What was probed: `ukey_…` (an upstream key) or `px_…` (an egress proxy).
    pub resource_id: String,
    /// The channel the key belongs to, for keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// Start of the probe slot (the interval the probe belongs to), microseconds since the epoch.
    pub slot_us: i64,
    /// `ok`, or the failure class of the last try (`key_invalid`, `rate_limited`, `first_byte_timeout`, …).
    pub outcome: String,
    /// Time of the last try, in microseconds.
    pub latency_us: u64,
    /// Tries made (1 + retries).
    #[serde(default = "one")]
    pub attempts: u32,
    /// The account balance, where the vendor tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub balance: Option<Balance>,
    /// A short reason in our words (at most [`MAX_HEALTH_REASON`] characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Run on an admin's request (`POST …/check`) rather than by the schedule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

fn one() -> u32 {
    1
}

/// Longest [`HealthChecked::reason`].
pub const MAX_HEALTH_REASON: usize = 200;

/// An account balance read from a vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Nanos of `currency` (negative when the account is overdrawn).
    pub nanos: i64,
    /// ISO currency code (`USD`, `CNY`).
    pub currency: String,
}

/// The deterministic id of the `health.checked` of `resource_id` in the slot starting at
/// `slot_us` (UUIDv5): re-derived by every worker, stored once.
pub fn health_check_id(resource_id: &str, slot_us: i64) -> Uuid {
    let ns = Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://llm-router.invalid/health-checked");
    Uuid::new_v5(&ns, format!("{resource_id}\n{slot_us}").as_bytes())
}

/// How a model's requests choose among the channels and keys serving it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteStrategy {
    /// Highest priority first, weighted-random within a priority (the default).
    #[default]
    Priority,
    /// The key with the lowest moving average of time to first byte first, with exploration.
    LeastLatency,
    /// The channel with the lowest price in force for the model first.
    LowestCost,
}

impl RouteStrategy {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteStrategy::Priority => "priority",
            RouteStrategy::LeastLatency => "least-latency",
            RouteStrategy::LowestCost => "lowest-cost",
        }
    }
}

/// `proxy.added`: an egress proxy node joins pool `pool`. The URL is stored without its
/// credentials; those travel sealed (context: the proxy id), like upstream keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyAdded {
    /// `px_…`
    pub proxy_id: String,
    /// The pool's name (channels name it with `--proxy-pool`).
    pub pool: String,
    /// Display name, unique among the live proxies.
    pub name: String,
    /// `scheme://host:port`, never with credentials.
    pub url: String,
    /// The URL's `user:password`, sealed; absent for a proxy without credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Sealed>,
    /// Where the proxy came from: absent for an admin, `pool_url` for the `PROXY_POOL_URL` sync
    /// (whose list is judged as outside input by the outbound address policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// The `origin` of proxies synced from `PROXY_POOL_URL`.
pub const PROXY_ORIGIN_POOL_URL: &str = "pool_url";

/// `proxy.removed`: the node leaves its pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyRemoved {
    /// `px_…`
    pub proxy_id: String,
}

/// The breaker state of an egress proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyState {
    /// In rotation.
    Active,
    /// Its breaker is open until `until_us`; then one call is let through (half-open).
    Open,
    /// Out of rotation until enabled again: by an admin (`manual`), or by health probes after
    /// failed probes in a row (then a probe that gets through enables it).
    Disabled,
}

impl ProxyState {
    /// The state's name in events and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyState::Active => "active",
            ProxyState::Open => "open",
            ProxyState::Disabled => "disabled",
        }
    }
}

/// `proxy.state_changed`: a proxy's breaker opened or closed, as one gateway saw it; every
/// gateway folds it, so a cluster agrees (the mirror of `upstream_key.state_changed`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStateChanged {
    /// `px_…`
    pub proxy_id: String,
    /// The new state.
    pub state: ProxyState,
    /// End of the open period (µs since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_us: Option<i64>,
    /// Why: a failure class name or `recovered`.
    pub reason: String,
    /// Consecutive openings.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub opens: u32,
    /// Set by an admin: a manual disable is undone only by an admin, never by probes or the
    /// breaker.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub manual: bool,
}

/// `route.set`: how requests for `model` are routed, replacing what was set before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteSet {
    /// The model (as clients name it).
    pub model: String,
    /// The strategy.
    #[serde(default)]
    pub strategy: RouteStrategy,
    /// Other models to try, in order, when every channel of `model` failed or its context
    /// window was exceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<String>,
}

/// `route.removed`: `model` is routed by the default again (priority, no fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRemoved {
    /// The model (as clients name it).
    pub model: String,
}

/// The typed body of an event: its `type` and `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventBody {
    /// `tenant.created`
    TenantCreated(TenantCreated),
    /// `api_key.issued`
    ApiKeyIssued(ApiKeyIssued),
    /// `api_key.revoked`
    ApiKeyRevoked(ApiKeyRevoked),
    /// `channel.added`
    ChannelAdded(ChannelAdded),
    /// `channel.updated`
    ChannelUpdated(ChannelUpdated),
    /// `channel.removed`
    ChannelRemoved(ChannelRemoved),
    /// `price.published`
    PricePublished(PricePublished),
    /// `usage.recorded`
    UsageRecorded(UsageRecorded),
    /// `request.logged`
    RequestLogged(RequestLogged),
    /// `auth.failures_counted`
    AuthFailuresCounted(AuthFailuresCounted),
    /// `user.created`
    UserCreated(UserCreated),
    /// `user.updated`
    UserUpdated(UserUpdated),
    /// `user.disabled`
    UserDisabled(UserDisabled),
    /// `user.sessions_revoked`
    UserSessionsRevoked(UserSessionsRevoked),
    /// `session_secret.generated`
    SessionSecretGenerated(SessionSecretGenerated),
    /// `tenant.updated`
    TenantUpdated(TenantUpdated),
    /// `channel.key_added`
    ChannelKeyAdded(ChannelKeyAdded),
    /// `channel.key_removed`
    ChannelKeyRemoved(ChannelKeyRemoved),
    /// `channel.key_updated`
    ChannelKeyUpdated(ChannelKeyUpdated),
    /// `upstream_key.state_changed`
    UpstreamKeyStateChanged(UpstreamKeyStateChanged),
    /// `route.set`
    RouteSet(RouteSet),
    /// `route.removed`
    RouteRemoved(RouteRemoved),
    /// `health.checked`
    HealthChecked(HealthChecked),
    /// `proxy.added`
    ProxyAdded(ProxyAdded),
    /// `proxy.removed`
    ProxyRemoved(ProxyRemoved),
    /// `proxy.state_changed`
    ProxyStateChanged(ProxyStateChanged),
}

impl EventBody {
    /// The event's `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventBody::TenantCreated(_) => "tenant.created",
            EventBody::ApiKeyIssued(_) => "api_key.issued",
            EventBody::ApiKeyRevoked(_) => "api_key.revoked",
            EventBody::ChannelAdded(_) => "channel.added",
            EventBody::ChannelUpdated(_) => "channel.updated",
            EventBody::ChannelRemoved(_) => "channel.removed",
            EventBody::PricePublished(_) => "price.published",
            EventBody::UsageRecorded(_) => "usage.recorded",
            EventBody::RequestLogged(_) => "request.logged",
            EventBody::AuthFailuresCounted(_) => "auth.failures_counted",
            EventBody::UserCreated(_) => "user.created",
            EventBody::UserUpdated(_) => "user.updated",
            EventBody::UserDisabled(_) => "user.disabled",
            EventBody::UserSessionsRevoked(_) => "user.sessions_revoked",
            EventBody::SessionSecretGenerated(_) => "session_secret.generated",
            EventBody::TenantUpdated(_) => "tenant.updated",
            EventBody::ChannelKeyAdded(_) => "channel.key_added",
            EventBody::ChannelKeyRemoved(_) => "channel.key_removed",
            EventBody::ChannelKeyUpdated(_) => "channel.key_updated",
            EventBody::UpstreamKeyStateChanged(_) => "upstream_key.state_changed",
            EventBody::RouteSet(_) => "route.set",
            EventBody::RouteRemoved(_) => "route.removed",
            EventBody::HealthChecked(_) => "health.checked",
            EventBody::ProxyAdded(_) => "proxy.added",
            EventBody::ProxyRemoved(_) => "proxy.removed",
            EventBody::ProxyStateChanged(_) => "proxy.state_changed",
        }
    }

    /// The current schema version of this type's `data`.
    pub fn version(&self) -> u32 {
        1
    }

    /// The stream the event belongs to.
    pub fn stream(&self) -> Stream {
        // No catch-all arm: a new event type must say which stream it belongs to.
        match self {
            EventBody::TenantCreated(_)
            | EventBody::ApiKeyIssued(_)
            | EventBody::ApiKeyRevoked(_)
            | EventBody::ChannelAdded(_)
            | EventBody::ChannelUpdated(_)
            | EventBody::ChannelRemoved(_)
            | EventBody::PricePublished(_) => Stream::Control,
            EventBody::UsageRecorded(_) => Stream::Billing,
            EventBody::RequestLogged(_) => Stream::Requests,
            EventBody::AuthFailuresCounted(_) => Stream::Requests,
            EventBody::UserCreated(_)
            | EventBody::UserUpdated(_)
            | EventBody::UserDisabled(_)
            | EventBody::UserSessionsRevoked(_)
            | EventBody::SessionSecretGenerated(_)
            | EventBody::TenantUpdated(_) => Stream::Control,
            EventBody::ChannelKeyAdded(_)
            | EventBody::ChannelKeyRemoved(_)
            | EventBody::ChannelKeyUpdated(_)
            | EventBody::UpstreamKeyStateChanged(_)
            | EventBody::RouteSet(_)
            | EventBody::RouteRemoved(_) => Stream::Control,
            EventBody::HealthChecked(_) => Stream::Ops,
            EventBody::ProxyAdded(_) | EventBody::ProxyRemoved(_) | EventBody::ProxyStateChanged(_) => Stream::Control,
        }
    }

    /// The entity token of a control subject.
    fn entity(&self) -> &'static str {
        match self {
            EventBody::TenantCreated(_) => "tenant",
            EventBody::ApiKeyIssued(_) | EventBody::ApiKeyRevoked(_) => "api_key",
            EventBody::ChannelAdded(_) | EventBody::ChannelUpdated(_) | EventBody::ChannelRemoved(_) => "channel",
            EventBody::PricePublished(_) => "price",
            EventBody::UsageRecorded(_) => "usage",
            EventBody::RequestLogged(_) => "request",
            EventBody::AuthFailuresCounted(_) => "auth",
            EventBody::UserCreated(_)
            | EventBody::UserUpdated(_)
            | EventBody::UserDisabled(_)
            | EventBody::UserSessionsRevoked(_) => "user",
            EventBody::SessionSecretGenerated(_) => "session_secret",
            EventBody::TenantUpdated(_) => "tenant",
            EventBody::ChannelKeyAdded(_) | EventBody::ChannelKeyRemoved(_) | EventBody::ChannelKeyUpdated(_) => {
                "channel"
            }
            EventBody::UpstreamKeyStateChanged(_) => "upstream_key",
            EventBody::RouteSet(_) | EventBody::RouteRemoved(_) => "route",
            EventBody::HealthChecked(_) => "health",
            EventBody::ProxyAdded(_) | EventBody::ProxyRemoved(_) | EventBody::ProxyStateChanged(_) => "proxy",
        }
    }
}

/// Why stored bytes are not an event we understand (a poison event).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or the envelope or `data` has the wrong shape.
    #[error("malformed event: {0}")]
    Json(#[from] serde_json::Error),
}

/// The envelope every event travels in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// UUIDv7 (UUIDv5 for facts two paths may re-derive); also the `Nats-Msg-Id`.
    pub id: Uuid,
    /// Microseconds since the Unix epoch at the producer.
    pub occurred_at_us: i64,
    /// The tenant (or [`GLOBAL_TENANT`]).
    pub tenant: String,
    /// The producing instance.
    pub source: String,
    /// Per-producer sequence number.
    pub producer_seq: u64,
    /// The request id for request facts.
    pub correlation_id: Option<String>,
    /// The event that caused this one.
    pub causation_id: Option<Uuid>,
    /// The admin who acted, for control events.
    pub actor: Option<String>,
    /// The client address the admin acted from, for changes made over HTTP (the audit trail).
    pub actor_addr: Option<String>,
    /// `type`, `v` and `data`.
    pub body: EventBody,
}

impl Envelope {
    /// A new event with a fresh UUIDv7 id.
    pub fn new(tenant: &str, source: &str, occurred_at_us: i64, body: EventBody) -> Self {
        Envelope {
            id: Uuid::now_v7(),
            occurred_at_us,
            tenant: tenant.to_owned(),
            source: source.to_owned(),
            producer_seq: 0,
            correlation_id: None,
            causation_id: None,
            actor: None,
            actor_addr: None,
            body,
        }
    }

    /// The NATS subject the event is published on.
    pub fn subject(&self) -> String {
        match self.body.stream() {
            Stream::Control => format!("llmr.v1.control.{}.{}", self.tenant, self.body.entity()),
            Stream::Billing => format!("llmr.v1.usage.{}", self.tenant),
            Stream::Requests => format!("llmr.v1.req.{}", self.tenant),
            Stream::Ops => format!("llmr.v1.ops.{}.{}", self.tenant, self.body.entity()),
        }
    }

    /// Serialises to the JSON stored in the log.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses stored JSON, upcasting old versions.
    pub fn from_json(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl Serialize for Envelope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Envelope", 12)?;
        st.serialize_field("id", &self.id)?;
        st.serialize_field("type", self.body.type_name())?;
        st.serialize_field("v", &self.body.version())?;
        st.serialize_field("occurred_at_us", &self.occurred_at_us)?;
        st.serialize_field("tenant", &self.tenant)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("producer_seq", &self.producer_seq)?;
        if let Some(c) = &self.correlation_id {
            st.serialize_field("correlation_id", c)?;
        }
        if let Some(c) = &self.causation_id {
            st.serialize_field("causation_id", c)?;
        }
        if let Some(a) = &self.actor {
            st.serialize_field("actor", a)?;
        }
        if let Some(a) = &self.actor_addr {
            st.serialize_field("actor_addr", a)?;
        }
        match &self.body {
            EventBody::TenantCreated(d) => st.serialize_field("data", d)?,
            EventBody::ApiKeyIssued(d) => st.serialize_field("data", d)?,
            EventBody::ApiKeyRevoked(d) => st.serialize_field("data", d)?,
            EventBody::ChannelAdded(d) => st.serialize_field("data", d)?,
            EventBody::ChannelUpdated(d) => st.serialize_field("data", d)?,
            EventBody::ChannelRemoved(d) => st.serialize_field("data", d)?,
            EventBody::PricePublished(d) => st.serialize_field("data", d)?,
            EventBody::UsageRecorded(d) => st.serialize_field("data", d)?,
            EventBody::RequestLogged(d) => st.serialize_field("data", d)?,
            EventBody::AuthFailuresCounted(d) => st.serialize_field("data", d)?,
            EventBody::UserCreated(d) => st.serialize_field("data", d)?,
            EventBody::UserUpdated(d) => st.serialize_field("data", d)?,
            EventBody::UserDisabled(d) => st.serialize_field("data", d)?,
            EventBody::UserSessionsRevoked(d) => st.serialize_field("data", d)?,
            EventBody::SessionSecretGenerated(d) => st.serialize_field("data", d)?,
            EventBody::TenantUpdated(d) => st.serialize_field("data", d)?,
            EventBody::ChannelKeyAdded(d) => st.serialize_field("data", d)?,
            EventBody::ChannelKeyRemoved(d) => st.serialize_field("data", d)?,
            EventBody::ChannelKeyUpdated(d) => st.serialize_field("data", d)?,
            EventBody::UpstreamKeyStateChanged(d) => st.serialize_field("data", d)?,
            EventBody::RouteSet(d) => st.serialize_field("data", d)?,
            EventBody::RouteRemoved(d) => st.serialize_field("data", d)?,
            EventBody::HealthChecked(d) => st.serialize_field("data", d)?,
            EventBody::ProxyAdded(d) => st.serialize_field("data", d)?,
            EventBody::ProxyRemoved(d) => st.serialize_field("data", d)?,
            EventBody::ProxyStateChanged(d) => st.serialize_field("data", d)?,
        }
        st.end()
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    id: Uuid,
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    v: u32,
    occurred_at_us: i64,
    tenant: String,
    source: String,
    #[serde(default)]
    producer_seq: u64,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    causation_id: Option<Uuid>,
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    actor_addr: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        let data = w.data.get();
        fn p<'a, T: Deserialize<'a>, E: serde::de::Error>(s: &'a str) -> Result<T, E> {
            serde_json::from_str(s).map_err(E::custom)
        }
        let body = match (w.kind.as_ref(), w.v) {
            ("tenant.created", 1) => EventBody::TenantCreated(p(data)?),
            ("api_key.issued", 1) => EventBody::ApiKeyIssued(p(data)?),
            ("api_key.revoked", 1) => EventBody::ApiKeyRevoked(p(data)?),
            ("channel.added", 1) => EventBody::ChannelAdded(p(data)?),
            ("channel.updated", 1) => EventBody::ChannelUpdated(p(data)?),
            ("channel.removed", 1) => EventBody::ChannelRemoved(p(data)?),
            ("price.published", 1) => EventBody::PricePublished(p(data)?),
            ("usage.recorded", 1) => EventBody::UsageRecorded(p(data)?),
            ("request.logged", 1) => EventBody::RequestLogged(p(data)?),
            ("auth.failures_counted", 1) => EventBody::AuthFailuresCounted(p(data)?),
            ("user.created", 1) => EventBody::UserCreated(p(data)?),
            ("user.updated", 1) => EventBody::UserUpdated(p(data)?),
            ("user.disabled", 1) => EventBody::UserDisabled(p(data)?),
            ("user.sessions_revoked", 1) => EventBody::UserSessionsRevoked(p(data)?),
            ("session_secret.generated", 1) => EventBody::SessionSecretGenerated(p(data)?),
            ("tenant.updated", 1) => EventBody::TenantUpdated(p(data)?),
            ("channel.key_added", 1) => EventBody::ChannelKeyAdded(p(data)?),
            ("channel.key_removed", 1) => EventBody::ChannelKeyRemoved(p(data)?),
            ("channel.key_updated", 1) => EventBody::ChannelKeyUpdated(p(data)?),
            ("upstream_key.state_changed", 1) => EventBody::UpstreamKeyStateChanged(p(data)?),
            ("route.set", 1) => EventBody::RouteSet(p(data)?),
            ("route.removed", 1) => EventBody::RouteRemoved(p(data)?),
            ("health.checked", 1) => EventBody::HealthChecked(p(data)?),
            ("proxy.added", 1) => EventBody::ProxyAdded(p(data)?),
            ("proxy.removed", 1) => EventBody::ProxyRemoved(p(data)?),
            ("proxy.state_changed", 1) => EventBody::ProxyStateChanged(p(data)?),
            (kind, v) => return Err(D::Error::custom(format!("unknown event type {kind:?} v{v}"))),
        };
        Ok(Envelope {
            id: w.id,
            occurred_at_us: w.occurred_at_us,
            tenant: w.tenant,
            source: w.source,
            producer_seq: w.producer_seq,
            correlation_id: w.correlation_id,
            causation_id: w.causation_id,
            actor: w.actor,
            actor_addr: w.actor_addr,
            body,
        })
    }
}
