//! `/api/health/*`: the health of every upstream key (its state from the admin API's live view,
//! its last probe, last known balance and availability from the `health` projection, its
//! channel's spend from the ledger where the vendor tells no balance), the probe history, and
//! `POST …/check`, which runs the health worker's own probe now. Upstream keys belong to
//! channels, so visibility follows `/api/channels`: a tenant-scoped user sees its tenant's
//! channels' keys alone (none today: channels are global). Never the key itself, only its
//! fingerprint.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use projections::read::{Availability, ChannelSpend, CheckFilter, LatestCheck, ProbeCounts};
use schemas::control::{Channel, UpstreamKey};
use schemas::{Role, UpstreamKeyState};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{AdminState, Caller};
use crate::query::{DEFAULT_LIMIT, MAX_LIMIT, StrictQuery, rfc3339};

/// Checks running at once across all keys: like the worker's probes, they must not crowd the
/// upstreams.
const MAX_CONCURRENT_CHECKS: usize = workers::health::MAX_CONCURRENT_PROBES;

/// Days of spend shown for a key whose vendor tells no balance.
const SPEND_DAYS: i64 = 30;

/// The longest `resource` filter accepted.
const MAX_RESOURCE: usize = 64;

/// The admin checks of keys: the prober, the keys being checked, and the slots.
/// Keys and proxies share the slots and the set of resources being checked (their ids differ).
pub(crate) struct Checks {
    pub(crate) prober: workers::health::Prober,
    pub(crate) in_flight: Arc<Mutex<HashSet<String>>>,
    pub(crate) slots: Arc<Semaphore>,
}

impl Checks {
    pub(crate) fn new(prober: workers::health::Prober) -> Checks {
        Checks {
            prober,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
            slots: Arc::new(Semaphore::new(MAX_CONCURRENT_CHECKS)),
        }
    }
}

/// Removes a key (or proxy) from the resources being checked when its check ends, however it
/// ends.
pub(crate) struct InFlight {
    pub(crate) set: Arc<Mutex<HashSet<String>>>,
    pub(crate) key_id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut set) = self.set.lock() {
            set.remove(&self.key_id);
        }
    }
}

pub(crate) fn admin(state: &WebState) -> Result<&AdminState, ApiError> {
    state.admin().ok_or_else(|| ApiError::not_found("route"))
}

pub(crate) fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// A key's health as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    Healthy,
    Degraded,
    Down,
    Unknown,
}

impl Health {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// The health of `key` given its last probe: `down` when out of rotation (disabled or an open
/// breaker), `degraded` when its last probe failed, it is cooling down, or its last known
/// balance is under its threshold (`low_balance`), `unknown` before its first probe, else
/// `healthy`.
pub(crate) fn classify(key: &UpstreamKey, latest: Option<&LatestCheck>) -> (Health, Option<String>) {
    match key.state {
        UpstreamKeyState::Disabled | UpstreamKeyState::Open => {
            return (Health::Down, Some(key.reason.clone().unwrap_or_else(|| key.state.as_str().to_owned())));
        }
        UpstreamKeyState::CoolingDown => return (Health::Degraded, Some("cooling_down".to_owned())),
        UpstreamKeyState::Active => {}
    }
    let Some(latest) = latest else { return (Health::Unknown, None) };
    if latest.outcome != "ok" {
        return (Health::Degraded, Some("last_probe_failed".to_owned()));
    }
    if let (Some(low), Some(b)) = (key.low_balance_nanos, &latest.balance)
        && b.nanos < low
    {
        return (Health::Degraded, Some("low_balance".to_owned()));
    }
    (Health::Healthy, None)
}

/// Counts of upstream keys by health, for `GET /api/health` (no ids, no tenants).
pub(crate) async fn summary(state: &WebState) -> Option<serde_json::Value> {
    let admin = state.admin()?;
    let latest = projections::read::all_latest_checks(state.store()).await.ok()?;
    let latest: std::collections::HashMap<&str, &LatestCheck> =
        latest.iter().map(|l| (l.resource_id.as_str(), l)).collect();
    let snapshot = admin.live.snapshot();
    let mut counts = [0u64; 4];
    for ch in snapshot.channels() {
        for k in &ch.keys {
            let (h, _) = classify(k, latest.get(k.key_id.as_str()).copied());
            counts[h as usize] += 1;
        }
    }
    Some(serde_json::json!({
        "healthy": counts[Health::Healthy as usize],
        "degraded": counts[Health::Degraded as usize],
        "down": counts[Health::Down as usize],
        "unknown": counts[Health::Unknown as usize],
    }))
}

/// The last probe of a key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastCheckView {
    /// RFC 3339.
    pub at: String,
    /// `ok` or a failure class (`key_invalid`, `rate_limited`, …).
    pub outcome: String,
    /// Latency of its last try, in milliseconds.
    pub latency_ms: f64,
    /// Our reason, when not plainly ok.
    pub reason: Option<String>,
    /// Run by an admin's check rather than the schedule.
    pub on_demand: bool,
}

/// A balance read from the vendor.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BalanceView {
    /// Decimal amount (`110.000000000`).
    pub amount: String,
    /// The amount in nanos of `currency`.
    pub nanos: i64,
    /// ISO 4217.
    pub currency: String,
    /// When it was read, RFC 3339.
    pub at: String,
}

/// The share of probes that answered over a period, with the counts it comes from.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PeriodView {
    /// 0.0 to 1.0; absent without probes.
    pub availability: Option<f64>,
    /// Probes that answered.
    pub ok: i64,
    /// Probes that failed.
    pub failed: i64,
    /// Mean probe latency in milliseconds; absent without probes.
    pub mean_latency_ms: Option<f64>,
}

impl From<ProbeCounts> for PeriodView {
    fn from(c: ProbeCounts) -> Self {
        let n = c.ok + c.failed;
        PeriodView {
            availability: c.availability(),
            ok: c.ok,
            failed: c.failed,
            mean_latency_ms: (n > 0).then(|| c.latency_us_sum as f64 / n as f64 / 1000.0),
        }
    }
}

/// Availability over the last 24 hours, 7 days and 30 days (whole hours, the current one
/// included), from the hourly rollup.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AvailabilityView {
    /// The last 24 hours.
    pub last_24h: PeriodView,
    /// The last 7 days.
    pub last_7d: PeriodView,
    /// The last 30 days.
    pub last_30d: PeriodView,
}

/// Spend in one currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SpendView {
    /// ISO 4217.
    pub currency: String,
    /// Billed requests.
    pub requests: i64,
    /// Nanos of `currency`.
    pub cost_nanos: i64,
    /// Decimal amount.
    pub cost: String,
}

/// The health of one upstream key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyHealthView {
    /// `ukey_…`
    pub id: String,
    /// Its channel (`ch_…`).
    pub channel_id: String,
    /// The channel's name.
    pub channel_name: String,
    /// The channel's provider.
    pub provider: String,
    /// `sha256:…` of the key (never the key).
    pub fingerprint: String,
    /// Rotation state: `active`, `disabled`, `cooling_down` or `open`.
    pub state: String,
    /// Why it is in that state (`admin`, a failure class, `recovered`).
    pub state_reason: Option<String>,
    /// Disabled by an admin (probes never enable it).
    pub manual: bool,
    /// `healthy`, `degraded`, `down`, or `unknown` before its first probe.
    pub health: String,
    /// Why not healthy: `low_balance`, `last_probe_failed`, `cooling_down`, or the state's reason.
    pub health_reason: Option<String>,
    /// Its last probe.
    pub last_check: Option<LastCheckView>,
    /// The last balance its vendor reported; `null` when unknown or not told.
    pub balance: Option<BalanceView>,
    /// `vendor` (read by probes) or `unsupported` (the vendor tells no balance to an API key).
    pub balance_source: String,
    /// The balance under which it is reported `degraded` (decimal, the vendor's currency).
    pub low_balance_threshold: Option<String>,
    /// Where the vendor tells no balance: the spend of the key's channel over the last 30 days
    /// from our own ledger, per currency (usage is recorded per channel, not per upstream key).
    pub spend_30d_channel: Option<Vec<SpendView>>,
    /// Availability from probes.
    pub availability: AvailabilityView,
}

/// A page of upstream keys' health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyHealthList {
    /// In key id order.
    pub data: Vec<KeyHealthView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn amount(nanos: i64) -> String {
    schemas::format_nanos(nanos)
}

fn vendor_balance(provider: &str) -> bool {
    matches!(adapters::balance::support(provider), adapters::balance::Support::Reads(_))
}

/// The views of `keys` (each with its channel), reading the projections in a few queries.
async fn views(state: &WebState, keys: &[(&Channel, &UpstreamKey)]) -> Result<Vec<KeyHealthView>, ApiError> {
    let admin = admin(state)?;
    let ids: Vec<String> = keys.iter().map(|(_, k)| k.key_id.clone()).collect();
    let now = now_us();
    let latest = projections::read::latest_checks(state.store(), &ids).await?;
    let availability = projections::read::availability(state.store(), &ids, now).await?;
    let mut unsupported: Vec<String> =
        keys.iter().filter(|(c, _)| !vendor_balance(&c.provider)).map(|(c, _)| c.channel_id.clone()).collect();
    unsupported.sort();
    unsupported.dedup();
    let today = projections::utc_day(now);
    let first = projections::utc_day(now - (SPEND_DAYS - 1) * 86_400_000_000);
    let spend = projections::read::channel_spend(state.store(), &unsupported, &first, &today).await?;
    let mut out = Vec::with_capacity(keys.len());
    for (ch, k) in keys {
        let view = control::key_views(ch, Some(&admin.cfg.master)).into_iter().find(|v| v.key_id == k.key_id);
        let l = latest.get(&k.key_id);
        let (health, health_reason) = classify(k, l);
        let a: Availability = availability.get(&k.key_id).copied().unwrap_or_default();
        let supported = vendor_balance(&ch.provider);
        let spend_view = |s: &Vec<ChannelSpend>| -> Vec<SpendView> {
            s.iter()
                .map(|s| SpendView {
                    currency: s.currency.clone(),
                    requests: s.requests,
                    cost_nanos: s.cost_nanos,
                    cost: amount(s.cost_nanos),
                })
                .collect()
        };
        out.push(KeyHealthView {
            id: k.key_id.clone(),
            channel_id: ch.channel_id.clone(),
            channel_name: ch.name.clone(),
            provider: ch.provider.clone(),
            fingerprint: view.map(|v| v.fingerprint).unwrap_or_else(|| "-".to_owned()),
            state: k.state.as_str().to_owned(),
            state_reason: k.reason.clone(),
            manual: k.manual,
            health: health.as_str().to_owned(),
            health_reason,
            last_check: l.map(|l| LastCheckView {
                at: rfc3339(l.checked_at_us),
                outcome: l.outcome.clone(),
                latency_ms: l.latency_us as f64 / 1000.0,
                reason: l.reason.clone(),
                on_demand: l.on_demand,
            }),
            balance: l.and_then(|l| l.balance.as_ref()).filter(|_| supported).map(|b| BalanceView {
                amount: amount(b.nanos),
                nanos: b.nanos,
                currency: b.currency.clone(),
                at: rfc3339(b.at_us),
            }),
            balance_source: if supported { "vendor" } else { "unsupported" }.to_owned(),
            low_balance_threshold: k.low_balance_nanos.map(amount),
            spend_30d_channel: (!supported).then(|| spend.get(&ch.channel_id).map(spend_view).unwrap_or_default()),
            availability: AvailabilityView { last_24h: a.day.into(), last_7d: a.week.into(), last_30d: a.month.into() },
        });
    }
    Ok(out)
}

/// The health of every upstream key the caller sees, in key id order.
#[utoipa::path(get, path = "/api/health/api-keys", tag = "health", operation_id = "list_key_health",
    params(crate::query::Page),
    responses((status = 200, body = KeyHealthList), (status = 400), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<crate::query::Page>,
) -> Result<Json<KeyHealthList>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = page.limit() as usize;
    let after = page.after.unwrap_or_default();
    let snapshot = admin.live.snapshot();
    let mut keys: Vec<(&Channel, &UpstreamKey)> = snapshot
        .channels()
        .filter(|ch| caller.sees(&ch.tenant))
        .flat_map(|ch| ch.keys.iter().map(move |k| (ch, k)))
        .filter(|(_, k)| k.key_id > after)
        .collect();
    keys.sort_by(|a, b| a.1.key_id.cmp(&b.1.key_id));
    let more = keys.len() > limit;
    keys.truncate(limit);
    let next_cursor = if more { keys.last().map(|(_, k)| k.key_id.clone()) } else { None };
    let data = views(&state, &keys).await?;
    Ok(Json(KeyHealthList { data, next_cursor }))
}

fn key_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::not_found("upstream key"))?;
    if !id.starts_with("ukey_") || id.len() > MAX_RESOURCE {
        return Err(ApiError::not_found("upstream key"));
    }
    Ok(id)
}

/// The channel and key `id` as the caller may see them.
fn find<'a>(
    snapshot: &'a crate::live::Snapshot,
    caller: &Caller,
    id: &str,
) -> Result<(&'a Channel, &'a UpstreamKey), ApiError> {
    snapshot
        .channels()
        .filter(|ch| caller.sees(&ch.tenant))
        .find_map(|ch| ch.keys.iter().find(|k| k.key_id == id).map(|k| (ch, k)))
        .ok_or_else(|| ApiError::not_found("upstream key"))
}

/// The health of one upstream key.
#[utoipa::path(get, path = "/api/health/api-keys/{id}", tag = "health", operation_id = "get_key_health",
    params(("id" = String, Path, description = "ukey_…")),
    responses((status = 200, body = KeyHealthView), (status = 401), (status = 403), (status = 404)))]
pub async fn get_one(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<KeyHealthView>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let id = key_id(id)?;
    let snapshot = admin.live.snapshot();
    let found = find(&snapshot, &caller, &id)?;
    let mut views = views(&state, &[found]).await?;
    views.pop().map(Json).ok_or_else(|| ApiError::not_found("upstream key"))
}

/// `GET /api/health/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this resource (`ukey_…`).
    pub resource: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// One probe result.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckView {
    /// The probed resource (`ukey_…`).
    pub resource: String,
    /// Its channel.
    pub channel_id: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// `ok` or a failure class.
    pub outcome: String,
    /// Latency of its last try, in milliseconds.
    pub latency_ms: f64,
    /// Tries made.
    pub attempts: i64,
    /// The balance it read.
    pub balance: Option<BalanceView>,
    /// Our reason.
    pub reason: Option<String>,
    /// Run by an admin's check.
    pub on_demand: bool,
}

/// A page of probe results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckPage {
    /// Newest first.
    pub data: Vec<CheckView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|_| ApiError::bad_request("invalid_parameter", format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

fn parse_cursor(c: &str) -> Result<(i64, i64), ApiError> {
    let bad = || ApiError::bad_request("invalid_parameter", "after: not a cursor this API gave");
    if c.len() > 128 {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, seq) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?))
}

/// The probe history (scheduled and on-demand), newest first; kept for the request-log window.
#[utoipa::path(get, path = "/api/health/history", tag = "health", operation_id = "list_health_history",
    params(HistoryQuery),
    responses((status = 200, body = CheckPage), (status = 400), (status = 401), (status = 403)))]
pub async fn history(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<HistoryQuery>,
) -> Result<Json<CheckPage>, ApiError> {
    admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    if q.resource.as_ref().is_some_and(|r| r.is_empty() || r.len() > MAX_RESOURCE) {
        return Err(ApiError::bad_request("invalid_parameter", format!("resource: 1 to {MAX_RESOURCE} bytes")));
    }
    // A tenant-scoped caller reads the results of its tenant's channels alone.
    let filter = CheckFilter {
        resource_id: q.resource,
        tenant: caller.user.tenant.clone(),
        from_us: time("from", q.from.as_deref())?,
        to_us: time("to", q.to.as_deref())?,
    };
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows = projections::read::check_history_page(state.store(), &filter, after, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|r| URL_SAFE_NO_PAD.encode(format!("{}:{}", r.checked_at_us, r.seq))) } else { None };
    let data = rows
        .into_iter()
        .map(|r| CheckView {
            resource: r.resource_id,
            channel_id: r.channel_id,
            at: rfc3339(r.checked_at_us),
            outcome: r.outcome,
            latency_ms: r.latency_us as f64 / 1000.0,
            attempts: r.attempts,
            balance: r.balance.map(|(nanos, currency)| BalanceView {
                amount: amount(nanos),
                nanos,
                currency,
                at: rfc3339(r.checked_at_us),
            }),
            reason: r.reason,
            on_demand: r.on_demand,
        })
        .collect();
    Ok(Json(CheckPage { data, next_cursor }))
}

/// The result of an admin's check.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    /// The probe's result (also in the history once folded).
    #[serde(flatten)]
    pub check: CheckView,
    /// Whether the key answered.
    pub ok: bool,
    /// The key was disabled by probes and is back in rotation.
    pub enabled_again: bool,
}

/// Probes an upstream key now with the health worker's code (one try of a model listing, then
/// the balance where the vendor tells it) and records the result as a `health.checked`. One
/// check per key at a time (409 while one runs); bounded by the health-check timeout.
#[utoipa::path(post, path = "/api/health/api-keys/{id}/check", tag = "health", operation_id = "check_key_health",
    params(("id" = String, Path, description = "ukey_…")),
    responses((status = 200, body = CheckResult), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "A check of this key is running"),
        (status = 503, description = "Too many checks at once, or the log is unavailable")))]
pub async fn check(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<CheckResult>, ApiError> {
    let admin_state = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let id = key_id(id)?;
    let snapshot = admin_state.live.snapshot();
    let (ch, key) = find(&snapshot, &caller, &id)?;
    let nodes = workers::health::nodes_in_rotation(snapshot.model(), ch, chrono::Utc::now().timestamp_micros());
    let (ch, key) = (ch.clone(), key.clone());
    let Some(checks) = &admin_state.checks else {
        return Err(ApiError::unavailable("checks_unavailable", "Health checks are not available on this server."));
    };
    let permit = checks.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("too_many_checks", "Too many health checks are running; try again shortly.")
    })?;
    {
        let mut set = checks.in_flight.lock().map_err(|_| ApiError::unavailable("checks_unavailable", "Try again."))?;
        if !set.insert(id.clone()) {
            return Err(ApiError::conflict("check_in_progress", "A check of this key is running."));
        }
    }
    let guard = InFlight { set: checks.in_flight.clone(), key_id: id };
    let prober = checks.prober.clone();
    let (log, instance) = (state.log().clone(), state.instance().to_owned());
    // The check runs in its own task: a client that leaves does not cut it between the probe and
    // its event, and the key stays "being checked" until it ends.
    let task = tokio::spawn(async move {
        let _guard = guard;
        let _permit = permit;
        prober.check(&log, &instance, &ch, &key, &nodes).await
    });
    let checked = match task.await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "A health check's result was not stored.");
            return Err(ApiError::unavailable("log_unavailable", "The check's result could not be stored."));
        }
        Err(_) => return Err(ApiError::unavailable("checks_unavailable", "The check did not finish.")),
    };
    let e = checked.event;
    Ok(Json(CheckResult {
        ok: checked.result.failure.is_none(),
        enabled_again: checked.state_change.is_some(),
        check: CheckView {
            resource: e.resource_id,
            channel_id: e.channel_id,
            at: rfc3339(e.slot_us),
            outcome: e.outcome,
            latency_ms: e.latency_us as f64 / 1000.0,
            attempts: i64::from(e.attempts),
            balance: e.balance.map(|b| BalanceView {
                amount: amount(b.nanos),
                nanos: b.nanos,
                currency: b.currency,
                at: rfc3339(e.slot_us),
            }),
            reason: e.reason,
            on_demand: e.on_demand,
        },
    }))
}
