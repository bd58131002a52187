//! `/api/health/proxies*`: the health of every egress proxy (its state from the admin API's
//! live view, its last probe and availability from the `health` projection), and `POST …/check`,
//! which runs the health worker's own proxy probe now. Proxies are global, so a tenant-scoped
//! user sees none. Never a proxy's credentials, only its masked URL. Adding, removing and
//! listing proxies as such is not here.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::{Extension, Json};
use projections::read::{Availability, LatestCheck};
use schemas::control::Proxy;
use schemas::{GLOBAL_TENANT, ProxyState, Role};
use serde::Serialize;

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::health_keys::{AvailabilityView, CheckView, Health, InFlight, LastCheckView, admin, now_us};
use crate::query::{StrictQuery, rfc3339};

/// The longest proxy id accepted in a path.
const MAX_ID: usize = 64;

/// The health of `p` given its last probe: `down` when out of rotation (disabled or an open
/// breaker), `degraded` when its last probe failed, `unknown` before its first probe, else
/// `healthy`.
pub(crate) fn classify(p: &Proxy, latest: Option<&LatestCheck>) -> (Health, Option<String>) {
    if p.state != ProxyState::Active {
        return (Health::Down, Some(p.reason.clone().unwrap_or_else(|| p.state.as_str().to_owned())));
    }
    let Some(latest) = latest else { return (Health::Unknown, None) };
    if latest.outcome != "ok" {
        return (Health::Degraded, Some("last_probe_failed".to_owned()));
    }
    (Health::Healthy, None)
}

/// Counts of proxies by health, for `GET /api/health` (no ids, no URLs).
pub(crate) async fn summary(state: &WebState) -> Option<serde_json::Value> {
    let admin = state.admin()?;
    let snapshot = admin.live.snapshot();
    let ids: Vec<String> = snapshot.model().proxies.keys().cloned().collect();
    let latest = projections::read::latest_checks(state.store(), &ids).await.ok()?;
    let mut counts = [0u64; 4];
    for p in snapshot.model().proxies.values() {
        let (h, _) = classify(p, latest.get(&p.proxy_id));
        counts[h as usize] += 1;
    }
    Some(serde_json::json!({
        "healthy": counts[Health::Healthy as usize],
        "degraded": counts[Health::Degraded as usize],
        "down": counts[Health::Down as usize],
        "unknown": counts[Health::Unknown as usize],
    }))
}

/// The health of one egress proxy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyHealthView {
    /// `px_…`
    pub id: String,
    /// Its pool.
    pub pool: String,
    /// Its name.
    pub name: String,
    /// `scheme://host:port`, or `scheme://***@host:port` when it has credentials.
    pub url: String,
    /// Rotation state: `active`, `open` (breaker) or `disabled` (by probes or an admin).
    pub state: String,
    /// Why it is in that state (`admin`, `health_check_…`, `proxy_failed`, `recovered`).
    pub state_reason: Option<String>,
    /// Disabled by an admin (probes never enable it).
    pub manual: bool,
    /// `healthy`, `degraded`, `down`, or `unknown` before its first probe.
    pub health: String,
    /// Why not healthy: `last_probe_failed`, or the state's reason.
    pub health_reason: Option<String>,
    /// Failed scheduled probes in a row.
    pub failed_probes_in_a_row: i64,
    /// Its last probe.
    pub last_check: Option<LastCheckView>,
    /// Availability from probes.
    pub availability: AvailabilityView,
}

/// A page of proxies' health.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyHealthList {
    /// In proxy id order.
    pub data: Vec<ProxyHealthView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

async fn views(state: &WebState, proxies: &[&Proxy]) -> Result<Vec<ProxyHealthView>, ApiError> {
    let ids: Vec<String> = proxies.iter().map(|p| p.proxy_id.clone()).collect();
    let latest = projections::read::latest_checks(state.store(), &ids).await?;
    let availability = projections::read::availability(state.store(), &ids, now_us()).await?;
    Ok(proxies
        .iter()
        .map(|p| {
            let l = latest.get(&p.proxy_id);
            let (health, health_reason) = classify(p, l);
            let a: Availability = availability.get(&p.proxy_id).copied().unwrap_or_default();
            ProxyHealthView {
                id: p.proxy_id.clone(),
                pool: p.pool.clone(),
                name: p.name.clone(),
                url: p.masked_url(),
                state: p.state.as_str().to_owned(),
                state_reason: p.reason.clone(),
                manual: p.manual,
                health: health.as_str().to_owned(),
                health_reason,
                failed_probes_in_a_row: l.map_or(0, |l| l.failures),
                last_check: l.map(|l| LastCheckView {
                    at: rfc3339(l.checked_at_us),
                    outcome: l.outcome.clone(),
                    latency_ms: l.latency_us as f64 / 1000.0,
                    reason: l.reason.clone(),
                    on_demand: l.on_demand,
                }),
                availability: AvailabilityView {
                    last_24h: a.day.into(),
                    last_7d: a.week.into(),
                    last_30d: a.month.into(),
                },
            }
        })
        .collect())
}

/// The health of every egress proxy the caller sees, in proxy id order.
#[utoipa::path(get, path = "/api/health/proxies", tag = "health", operation_id = "list_proxy_health",
    params(crate::query::Page),
    responses((status = 200, body = ProxyHealthList), (status = 400), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<crate::query::Page>,
) -> Result<Json<ProxyHealthList>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = page.limit() as usize;
    let after = page.after.unwrap_or_default();
    let snapshot = admin.live.snapshot();
    let mut proxies: Vec<&Proxy> = if caller.sees(GLOBAL_TENANT) {
        snapshot.model().proxies.values().filter(|p| p.proxy_id > after).collect()
    } else {
        Vec::new()
    };
    proxies.sort_by(|a, b| a.proxy_id.cmp(&b.proxy_id));
    let more = proxies.len() > limit;
    proxies.truncate(limit);
    let next_cursor = if more { proxies.last().map(|p| p.proxy_id.clone()) } else { None };
    let data = views(&state, &proxies).await?;
    Ok(Json(ProxyHealthList { data, next_cursor }))
}

/// The result of an admin's check of a proxy.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyCheckResult {
    /// The probe's result (also in the history once folded).
    #[serde(flatten)]
    pub check: CheckView,
    /// Whether the target answered through the proxy.
    pub ok: bool,
    /// The proxy was disabled by probes and is back in rotation.
    pub enabled_again: bool,
}

/// Probes an egress proxy now with the health worker's code (one request to the probe target
/// through it) and records the result as a `health.checked`. One check per proxy at a time (409
/// while one runs); bounded by the health-check timeout.
#[utoipa::path(post, path = "/api/health/proxies/{id}/check", tag = "health", operation_id = "check_proxy_health",
    params(("id" = String, Path, description = "px_…")),
    responses((status = 200, body = ProxyCheckResult), (status = 401), (status = 403), (status = 404),
        (status = 409, description = "A check of this proxy is running"),
        (status = 503, description = "Too many checks at once, proxy probes are off, or the log is unavailable")))]
pub async fn check(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ProxyCheckResult>, ApiError> {
    let admin_state = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let Path(id) = id.map_err(|_| ApiError::not_found("proxy"))?;
    if !id.starts_with("px_") || id.len() > MAX_ID || !caller.sees(GLOBAL_TENANT) {
        return Err(ApiError::not_found("proxy"));
    }
    let proxy =
        admin_state.live.snapshot().model().proxies.get(&id).cloned().ok_or_else(|| ApiError::not_found("proxy"))?;
    let Some(checks) = &admin_state.checks else {
        return Err(ApiError::unavailable("checks_unavailable", "Health checks are not available on this server."));
    };
    if checks.prober.proxy_target().is_none() {
        return Err(ApiError::unavailable("proxy_probes_off", "Proxy probes are off (HEALTH_CHECK_PROXY_TARGET)."));
    }
    let permit = checks.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::unavailable("too_many_checks", "Too many health checks are running; try again shortly.")
    })?;
    {
        let mut set = checks.in_flight.lock().map_err(|_| ApiError::unavailable("checks_unavailable", "Try again."))?;
        if !set.insert(id.clone()) {
            return Err(ApiError::conflict("check_in_progress", "A check of this proxy is running."));
        }
    }
    let guard = InFlight { set: checks.in_flight.clone(), key_id: id };
    let prober = checks.prober.clone();
    let (log, instance) = (state.log().clone(), state.instance().to_owned());
    // Its own task: a client that leaves does not cut it between the probe and its event.
    let task = tokio::spawn(async move {
        let _guard = guard;
        let _permit = permit;
        prober.check_proxy(&log, &instance, &proxy).await
    });
    let checked = match task.await {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => {
            return Err(ApiError::unavailable(
                "proxy_probes_off",
                "The proxy probe target is refused by the outbound address policy.",
            ));
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "A health check's result was not stored.");
            return Err(ApiError::unavailable("log_unavailable", "The check's result could not be stored."));
        }
        Err(_) => return Err(ApiError::unavailable("checks_unavailable", "The check did not finish.")),
    };
    let e = checked.event;
    Ok(Json(ProxyCheckResult {
        ok: checked.result.outcome == workers::health::ProxyOutcome::Ok,
        enabled_again: checked.state_change.is_some(),
        check: CheckView {
            resource: e.resource_id,
            channel_id: None,
            at: rfc3339(e.slot_us),
            outcome: e.outcome,
            latency_ms: e.latency_us as f64 / 1000.0,
            attempts: i64::from(e.attempts),
            balance: None,
            reason: e.reason,
            on_demand: e.on_demand,
        },
    }))
}
