//! The read API over the projections, used by `web` and the CLI. Every query reads the active
//! generation of its projection in a single statement, so it answers from the old version during
//! a rebuild and from the new one after the swap, never from a mix.

mod billing;
mod health;
mod report;
mod requests;

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Row};

use crate::{Projection, ProjectionError, ReadStore};

pub use billing::{BillingReport, BillingRow, billing_report};
pub use health::{
    Availability, ChannelSpend, CheckFilter, CheckRecord, KnownBalance, LatestCheck, ProbeCounts, all_latest_checks,
    availability, channel_spend, check_history_page, failure_streaks, latest_checks,
};
pub use report::{
    GroupBy, Report, UsageTotal, grouped_usage_report, report_in_zone, slot_of, usage_report, usage_report_as_of,
};
pub use requests::{
    BUCKETS_PER_DOUBLING, CurrencyCost, MAX_BUCKET, RequestFilter, RequestRecord, RequestStats, StatusFilter,
    bucket_upper_us, latency_bucket, percentile, request_log_page, request_stats,
};

/// One day of one model's usage (tenant-wide or for one key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageDay {
    /// UTC date, `YYYY-MM-DD`.
    pub day: String,
    /// The model the client asked for.
    pub model: String,
    /// Currency of `cost_nanos`.
    pub currency: String,
    /// Billable requests.
    pub requests: i64,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Cached input tokens.
    pub cached_input_tokens: i64,
    /// Cache-write input tokens.
    pub cache_write_tokens: i64,
    /// Output tokens (reasoning included).
    pub output_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Charge in nanos of `currency`.
    pub cost_nanos: i64,
}

/// What authentication needs about a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyRecord {
    /// The key's id.
    pub key_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Display prefix.
    pub prefix: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Whether it may read its whole tenant's usage.
    pub tenant_usage: bool,
}

/// An API key as the admin pages show it (no hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    /// The key's id.
    pub key_id: String,
    /// Its tenant.
    pub tenant: String,
    /// Display prefix.
    pub prefix: String,
    /// Admin label.
    pub name: Option<String>,
    /// Allowed models; `None` means all.
    pub models: Option<Vec<String>>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was issued (µs since the epoch).
    pub created_at_us: i64,
    /// When it was revoked.
    pub revoked_at_us: Option<i64>,
    /// Cap on a request's output tokens; `None` = no key cap.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices; `None` = no key cap.
    pub max_n: Option<u64>,
    /// When it stops working (µs since the epoch); `None` = never.
    pub expires_at_us: Option<i64>,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRecord {
    /// Its name.
    pub name: String,
    /// When it was created (µs since the epoch).
    pub created_at_us: i64,
    /// Display name in any script.
    pub display_name: Option<String>,
    /// IANA time zone of its reports; `None` = UTC.
    pub time_zone: Option<String>,
    /// Cap on a request's output tokens for its keys; `None` = none.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices for its keys; `None` = none.
    pub max_n: Option<u64>,
}

/// An admin user as the read model has it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    /// `usr_…`
    pub user_id: String,
    /// Login name.
    pub email: String,
    /// `owner`, `admin`, `viewer` or `billing`.
    pub role: String,
    /// The one tenant the user sees; `None` = every tenant.
    pub tenant: Option<String>,
    /// When it was created (µs since the epoch).
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
    /// When it was disabled.
    pub disabled_at_us: Option<i64>,
}

/// One audit entry: a control change, who made it and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// The control stream sequence (the cursor).
    pub seq: i64,
    /// The event id.
    pub event_id: String,
    /// `api_key.issued`, `user.disabled`, …
    pub event_type: String,
    /// The id of the key, channel, user, tenant or model changed.
    pub entity_id: Option<String>,
    /// The tenant (or `_global`).
    pub tenant: String,
    /// Who: a user id for changes over HTTP, the OS user for the CLI.
    pub actor: Option<String>,
    /// The client address of a change made over HTTP.
    pub actor_addr: Option<String>,
    /// The producing instance (`cli`, a gateway's name).
    pub source: String,
    /// When (µs since the epoch).
    pub occurred_at_us: i64,
}

/// Up to `limit` audit entries before sequence `before` (`None` = the newest), newest first;
/// with `tenant`, only that tenant's.
pub async fn audit(
    store: &ReadStore,
    tenant: Option<&str>,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<AuditRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT seq, event_id, event_type, entity_id, tenant, actor, actor_addr, source, occurred_at_us FROM audit \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND ($1 = 0 OR tenant = $2) AND seq < $3 ORDER BY seq DESC LIMIT $4",
    )
    .bind(i64::from(tenant.is_some()))
    .bind(tenant.unwrap_or_default())
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditRecord {
                seq: r.try_get("seq")?,
                event_id: r.try_get("event_id")?,
                event_type: r.try_get("event_type")?,
                entity_id: r.try_get("entity_id")?,
                tenant: r.try_get("tenant")?,
                actor: r.try_get("actor")?,
                actor_addr: r.try_get("actor_addr")?,
                source: r.try_get("source")?,
                occurred_at_us: r.try_get("occurred_at_us")?,
            })
        })
        .collect()
}

/// An upstream channel (its credential is not in the read model).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelRecord {
    /// Stable id.
    pub channel_id: String,
    /// Tenant that added it (or the global tenant).
    pub tenant: String,
    /// Display name.
    pub name: String,
    /// Provider adapter.
    pub provider: String,
    /// Base URL.
    pub base_url: String,
    /// Models served.
    pub models: Vec<String>,
    /// Higher is tried first.
    pub priority: i64,
    /// Share among equal priorities.
    pub weight: i64,
    /// Enabled by the admin.
    pub enabled: bool,
    /// Removed (kept for history).
    pub removed: bool,
    /// When it was added.
    pub created_at_us: i64,
    /// When it last changed.
    pub updated_at_us: i64,
    /// The proxy pool its calls go through; `None`: direct.
    pub proxy_pool: Option<String>,
}

/// A live egress proxy as listed: its URL masked, never its credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyRecord {
    /// `px_…`
    pub proxy_id: String,
    /// Its pool.
    pub pool: String,
    /// Display name.
    pub name: String,
    /// `scheme://***@host:port` with credentials, else `scheme://host:port`.
    pub url: String,
    /// Synced from `PROXY_POOL_URL`.
    pub from_pool_url: bool,
    /// `active` or `open`.
    pub state: String,
    /// End of an open breaker (µs).
    pub until_us: Option<i64>,
    /// Why it is in its state.
    pub reason: Option<String>,
    /// Consecutive openings.
    pub opens: i64,
    /// When it was added.
    pub added_at_us: i64,
}

/// The live proxies, by pool, then id.
pub async fn proxies(store: &ReadStore) -> Result<Vec<ProxyRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT proxy_id, pool, name, masked_url, from_pool_url, state, until_us, reason, opens, added_at_us \
         FROM proxies \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND removed = 0 ORDER BY pool, proxy_id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ProxyRecord {
                proxy_id: r.try_get("proxy_id")?,
                pool: r.try_get("pool")?,
                name: r.try_get("name")?,
                url: r.try_get("masked_url")?,
                from_pool_url: flag(r, "from_pool_url")?,
                state: r.try_get("state")?,
                until_us: r.try_get("until_us")?,
                reason: r.try_get("reason")?,
                opens: r.try_get("opens")?,
                added_at_us: r.try_get("added_at_us")?,
            })
        })
        .collect()
}

/// A published price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceRecord {
    /// The model.
    pub model: String,
    /// The channel this price overrides the model's price on; `None` = every channel.
    pub channel_id: Option<String>,
    /// Id of the `price.published` event (the version usage events refer to).
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
    /// When it was published.
    pub published_at_us: i64,
}

/// How far a projection has read its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Checkpoint {
    /// Projection name.
    pub projection: String,
    /// Stream name.
    pub stream: String,
    /// Last sequence applied.
    pub seq: u64,
}

/// An event a projection skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoisonRecord {
    /// Stream name.
    pub stream: String,
    /// Its sequence.
    pub seq: u64,
    /// Its id, when it could be decoded.
    pub event_id: Option<String>,
    /// Why it was skipped.
    pub reason: String,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Request id.
    pub request_id: String,
    /// The `usage.recorded` event's id.
    pub event_id: String,
    /// Tenant.
    pub tenant: String,
    /// Key id.
    pub key_id: String,
    /// End user, when given.
    pub user: Option<String>,
    /// UTC day.
    pub day: String,
    /// Event time.
    pub occurred_at_us: i64,
    /// Endpoint.
    pub endpoint: String,
    /// Model asked for.
    pub model_requested: String,
    /// Model served.
    pub model_served: String,
    /// Provider.
    pub provider: String,
    /// Channel.
    pub channel_id: String,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Cached input tokens.
    pub cached_input_tokens: i64,
    /// Cache-write tokens.
    pub cache_write_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// `upstream` or `estimated`.
    pub usage_source: String,
    /// `completed`, `client_disconnected` or `upstream_error`.
    pub stream_outcome: String,
    /// Whether it was streamed.
    pub streamed: bool,
    /// Price version applied.
    pub price_version: Option<String>,
    /// Currency.
    pub currency: String,
    /// Charge in nanos.
    pub cost_nanos: i64,
}

fn usage_day(r: &AnyRow) -> Result<UsageDay, sqlx::Error> {
    Ok(UsageDay {
        day: r.try_get("day")?,
        model: r.try_get("model")?,
        currency: r.try_get("currency")?,
        requests: r.try_get("requests")?,
        input_tokens: r.try_get("input_tokens")?,
        cached_input_tokens: r.try_get("cached_input_tokens")?,
        cache_write_tokens: r.try_get("cache_write_tokens")?,
        output_tokens: r.try_get("output_tokens")?,
        reasoning_tokens: r.try_get("reasoning_tokens")?,
        cost_nanos: r.try_get("cost_nanos")?,
    })
}

fn flag(r: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    Ok(r.try_get::<i64, _>(col)? != 0)
}

fn json_list(text: &str) -> Result<Vec<String>, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Daily usage of `tenant` (or of one of its keys) from `from_day` to `to_day` inclusive
/// (`YYYY-MM-DD`), ordered by day, model, currency.
pub async fn usage_by_day(
    store: &ReadStore,
    tenant: &str,
    key_id: Option<&str>,
    from_day: &str,
    to_day: &str,
) -> Result<Vec<UsageDay>, ProjectionError> {
    fetch_usage(store.pool(), tenant, key_id, from_day, to_day).await
}

pub(crate) async fn fetch_usage<'c, E: Executor<'c, Database = Any>>(
    exec: E,
    tenant: &str,
    key_id: Option<&str>,
    from_day: &str,
    to_day: &str,
) -> Result<Vec<UsageDay>, ProjectionError> {
    let rows = match key_id {
        None => {
            sqlx::query(
                "SELECT day, model, currency, requests, input_tokens, cached_input_tokens, cache_write_tokens, \
                 output_tokens, reasoning_tokens, cost_nanos FROM usage_daily \
                 WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
                 AND tenant = $1 AND day >= $2 AND day <= $3 ORDER BY day, model, currency",
            )
            .bind(tenant)
            .bind(from_day)
            .bind(to_day)
            .fetch_all(exec)
            .await?
        }
        Some(key_id) => {
            sqlx::query(
                "SELECT day, model, currency, requests, input_tokens, cached_input_tokens, cache_write_tokens, \
                 output_tokens, reasoning_tokens, cost_nanos FROM usage_daily_key \
                 WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
                 AND tenant = $1 AND key_id = $2 AND day >= $3 AND day <= $4 ORDER BY day, model, currency",
            )
            .bind(tenant)
            .bind(key_id)
            .bind(from_day)
            .bind(to_day)
            .fetch_all(exec)
            .await?
        }
    };
    Ok(rows.iter().map(usage_day).collect::<Result<_, _>>()?)
}

/// The key with this hex SHA-256 hash, revoked or not.
pub async fn key_by_hash(store: &ReadStore, hash: &str) -> Result<Option<KeyRecord>, ProjectionError> {
    let row = sqlx::query(
        "SELECT key_id, tenant, prefix, revoked, tenant_usage FROM api_keys \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND hash = $1",
    )
    .bind(hash)
    .fetch_optional(store.pool())
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(KeyRecord {
        key_id: r.try_get("key_id")?,
        tenant: r.try_get("tenant")?,
        prefix: r.try_get("prefix")?,
        revoked: flag(&r, "revoked")?,
        tenant_usage: flag(&r, "tenant_usage")?,
    }))
}

/// Where each projection's active generation stands, for lag monitoring.
pub async fn checkpoints(store: &ReadStore) -> Result<Vec<Checkpoint>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT c.projection, c.stream, c.seq FROM projection_checkpoint c JOIN projection_generation g \
         ON g.projection = c.projection AND g.active_generation = c.generation ORDER BY c.projection",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Checkpoint {
                projection: r.try_get("projection")?,
                stream: r.try_get("stream")?,
                seq: to_u64(r.try_get("seq")?),
            })
        })
        .collect()
}

/// Every tenant, by name.
pub async fn tenants(store: &ReadStore) -> Result<Vec<TenantRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT name, created_at_us, display_name, time_zone, max_output_tokens, max_n FROM tenants \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         ORDER BY name",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(tenant_record).collect()
}

fn tenant_record(r: &AnyRow) -> Result<TenantRecord, ProjectionError> {
    Ok(TenantRecord {
        name: r.try_get("name")?,
        created_at_us: r.try_get("created_at_us")?,
        display_name: r.try_get("display_name")?,
        time_zone: r.try_get("time_zone")?,
        max_output_tokens: cap(r, "max_output_tokens")?,
        max_n: cap(r, "max_n")?,
    })
}

/// API keys of one tenant, or of all, ordered by tenant and key id.
pub async fn api_keys(store: &ReadStore, tenant: Option<&str>) -> Result<Vec<ApiKeyRecord>, ProjectionError> {
    let rows = match tenant {
        Some(tenant) => sqlx::query(
            "SELECT key_id, tenant, prefix, name, models, revoked, created_at_us, revoked_at_us, max_output_tokens, \
         max_n, expires_at_us FROM api_keys \
                 WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
                 AND tenant = $1 ORDER BY tenant, key_id",
        )
        .bind(tenant)
        .fetch_all(store.pool())
        .await?,
        None => sqlx::query(
            "SELECT key_id, tenant, prefix, name, models, revoked, created_at_us, revoked_at_us, max_output_tokens, \
         max_n, expires_at_us FROM api_keys \
                 WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
                 ORDER BY tenant, key_id",
        )
        .fetch_all(store.pool())
        .await?,
    };
    rows.iter().map(api_key_record).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

/// Up to `limit` users after the id `after` (exclusive; `None` = from the start), in id order
/// (ids are time-ordered, so this is creation order). With `tenant`, only users scoped to it.
pub async fn users(
    store: &ReadStore,
    tenant: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<UserRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT user_id, email, role, tenant, created_at_us, updated_at_us, disabled_at_us FROM users \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND ($1 = 0 OR tenant = $2) AND user_id > $3 ORDER BY user_id LIMIT $4",
    )
    .bind(i64::from(tenant.is_some()))
    .bind(tenant.unwrap_or_default())
    .bind(after.unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(UserRecord {
                user_id: r.try_get("user_id")?,
                email: r.try_get("email")?,
                role: r.try_get("role")?,
                tenant: r.try_get("tenant")?,
                created_at_us: r.try_get("created_at_us")?,
                updated_at_us: r.try_get("updated_at_us")?,
                disabled_at_us: r.try_get("disabled_at_us")?,
            })
        })
        .collect()
}

/// Up to `limit` API keys after the id `after`, in id (creation) order; with `tenant`, only its.
pub async fn api_keys_page(
    store: &ReadStore,
    tenant: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<ApiKeyRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT key_id, tenant, prefix, name, models, revoked, created_at_us, revoked_at_us, max_output_tokens, \
         max_n, expires_at_us FROM api_keys \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND ($1 = 0 OR tenant = $2) AND key_id > $3 ORDER BY key_id LIMIT $4",
    )
    .bind(i64::from(tenant.is_some()))
    .bind(tenant.unwrap_or_default())
    .bind(after.unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(api_key_record).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

/// The API key with this id.
pub async fn api_key(store: &ReadStore, key_id: &str) -> Result<Option<ApiKeyRecord>, ProjectionError> {
    let row = sqlx::query(
        "SELECT key_id, tenant, prefix, name, models, revoked, created_at_us, revoked_at_us, max_output_tokens, \
         max_n, expires_at_us FROM api_keys \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND key_id = $1",
    )
    .bind(key_id)
    .fetch_optional(store.pool())
    .await?;
    Ok(row.as_ref().map(api_key_record).transpose()?)
}

fn api_key_record(r: &AnyRow) -> Result<ApiKeyRecord, sqlx::Error> {
    let models: Option<String> = r.try_get("models")?;
    Ok(ApiKeyRecord {
        key_id: r.try_get("key_id")?,
        tenant: r.try_get("tenant")?,
        prefix: r.try_get("prefix")?,
        name: r.try_get("name")?,
        models: models.as_deref().map(json_list).transpose()?,
        revoked: flag(r, "revoked")?,
        created_at_us: r.try_get("created_at_us")?,
        revoked_at_us: r.try_get("revoked_at_us")?,
        max_output_tokens: cap(r, "max_output_tokens")?,
        max_n: cap(r, "max_n")?,
        expires_at_us: r.try_get("expires_at_us")?,
    })
}

/// A nullable cap column.
fn cap(r: &AnyRow, column: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(column)?.and_then(|v| u64::try_from(v).ok()))
}

/// Up to `limit` tenants after the name `after`, by name; with `only`, that tenant alone.
pub async fn tenants_page(
    store: &ReadStore,
    only: Option<&str>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<TenantRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT name, created_at_us, display_name, time_zone, max_output_tokens, max_n FROM tenants \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND ($1 = 0 OR name = $2) AND name > $3 ORDER BY name LIMIT $4",
    )
    .bind(i64::from(only.is_some()))
    .bind(only.unwrap_or_default())
    .bind(after.unwrap_or_default())
    .bind(i64::from(limit))
    .fetch_all(store.pool())
    .await?;
    rows.iter().map(tenant_record).collect()
}

/// Every channel, removed ones included, by id.
pub async fn channels(store: &ReadStore) -> Result<Vec<ChannelRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT channel_id, tenant, name, provider, base_url, models, priority, weight, enabled, removed, \
         created_at_us, updated_at_us, proxy_pool FROM channels \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         ORDER BY channel_id",
    )
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let models: String = r.try_get("models")?;
            Ok(ChannelRecord {
                channel_id: r.try_get("channel_id")?,
                tenant: r.try_get("tenant")?,
                name: r.try_get("name")?,
                provider: r.try_get("provider")?,
                base_url: r.try_get("base_url")?,
                models: json_list(&models)?,
                priority: r.try_get("priority")?,
                weight: r.try_get("weight")?,
                enabled: flag(r, "enabled")?,
                removed: flag(r, "removed")?,
                created_at_us: r.try_get("created_at_us")?,
                updated_at_us: r.try_get("updated_at_us")?,
                proxy_pool: r.try_get("proxy_pool")?,
            })
        })
        .collect()
}

fn price(r: &AnyRow) -> Result<PriceRecord, sqlx::Error> {
    Ok(PriceRecord {
        model: r.try_get("model")?,
        channel_id: Some(r.try_get::<String, _>("channel_id")?).filter(|c| !c.is_empty()),
        version: r.try_get("version")?,
        currency: r.try_get("currency")?,
        input_per_mtok_nanos: r.try_get("input_per_mtok_nanos")?,
        cached_input_per_mtok_nanos: r.try_get("cached_input_per_mtok_nanos")?,
        cache_write_per_mtok_nanos: r.try_get("cache_write_per_mtok_nanos")?,
        output_per_mtok_nanos: r.try_get("output_per_mtok_nanos")?,
        published_at_us: r.try_get("published_at_us")?,
    })
}

/// The prices in force (the last one published for each model, and for each model and channel
/// with an override), by model, the model-wide price before the channel overrides. Overrides of
/// a removed channel are not in force.
pub async fn latest_prices(store: &ReadStore) -> Result<Vec<PriceRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT model, channel_id, version, currency, input_per_mtok_nanos, cached_input_per_mtok_nanos, \
         cache_write_per_mtok_nanos, output_per_mtok_nanos, published_at_us FROM prices p \
         WHERE p.generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND p.retired = 0 \
         AND p.seq = (SELECT MAX(q.seq) FROM prices q WHERE q.generation = p.generation AND q.model = p.model \
         AND q.channel_id = p.channel_id AND q.retired = 0) \
         ORDER BY model, channel_id",
    )
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(price).collect::<Result<_, _>>()?)
}

/// Every price published for `model`, model-wide and per channel, oldest first.
pub async fn price_history(store: &ReadStore, model: &str) -> Result<Vec<PriceRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT model, channel_id, version, currency, input_per_mtok_nanos, cached_input_per_mtok_nanos, \
         cache_write_per_mtok_nanos, output_per_mtok_nanos, published_at_us FROM prices \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'control') \
         AND model = $1 ORDER BY seq",
    )
    .bind(model)
    .fetch_all(store.pool())
    .await?;
    Ok(rows.iter().map(price).collect::<Result<_, _>>()?)
}

/// Events `projection` skipped, by sequence.
pub async fn poison_events(store: &ReadStore, projection: Projection) -> Result<Vec<PoisonRecord>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT stream, seq, event_id, reason FROM poison_event WHERE projection = $1 \
         AND generation = (SELECT active_generation FROM projection_generation WHERE projection = $1) ORDER BY seq",
    )
    .bind(projection.name())
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PoisonRecord {
                stream: r.try_get("stream")?,
                seq: to_u64(r.try_get("seq")?),
                event_id: r.try_get("event_id")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect()
}

/// The ledger rows of one request (at most one; a list so tests can see duplicates).
pub async fn ledger_rows_for_request(store: &ReadStore, request_id: &str) -> Result<Vec<LedgerRow>, ProjectionError> {
    let rows = sqlx::query(
        "SELECT request_id, event_id, tenant, key_id, end_user, day, occurred_at_us, endpoint, model_requested, \
         model_served, provider, channel_id, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, \
         reasoning_tokens, usage_source, stream_outcome, streamed, price_version, currency, cost_nanos FROM ledger \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
         AND request_id = $1 ORDER BY event_id",
    )
    .bind(request_id)
    .fetch_all(store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(LedgerRow {
                request_id: r.try_get("request_id")?,
                event_id: r.try_get("event_id")?,
                tenant: r.try_get("tenant")?,
                key_id: r.try_get("key_id")?,
                user: r.try_get("end_user")?,
                day: r.try_get("day")?,
                occurred_at_us: r.try_get("occurred_at_us")?,
                endpoint: r.try_get("endpoint")?,
                model_requested: r.try_get("model_requested")?,
                model_served: r.try_get("model_served")?,
                provider: r.try_get("provider")?,
                channel_id: r.try_get("channel_id")?,
                input_tokens: r.try_get("input_tokens")?,
                cached_input_tokens: r.try_get("cached_input_tokens")?,
                cache_write_tokens: r.try_get("cache_write_tokens")?,
                output_tokens: r.try_get("output_tokens")?,
                reasoning_tokens: r.try_get("reasoning_tokens")?,
                usage_source: r.try_get("usage_source")?,
                stream_outcome: r.try_get("stream_outcome")?,
                streamed: flag(r, "streamed")?,
                price_version: r.try_get("price_version")?,
                currency: r.try_get("currency")?,
                cost_nanos: r.try_get("cost_nanos")?,
            })
        })
        .collect()
}

/// Number of ledger rows of `tenant` in the active generation.
pub async fn ledger_row_count(store: &ReadStore, tenant: &str) -> Result<i64, ProjectionError> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM ledger \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
         AND tenant = $1",
    )
    .bind(tenant)
    .fetch_one(store.pool())
    .await?
    .try_get("n")?)
}

/// The active generation of `projection` (changes when a rebuild swaps).
pub async fn active_generation(store: &ReadStore, projection: Projection) -> Result<i64, ProjectionError> {
    crate::runner::active_generation(store, projection).await
}
