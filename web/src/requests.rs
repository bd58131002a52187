//! `GET /api/requests` (the request log: newest first, filtered, paged by an opaque cursor) and
//! `GET /api/dashboard/stats` (a period's requests, success rate, latency p50/p95, tokens and
//! cost), both from the `requests` projection (the stats' tokens and cost from the ledger's
//! quarter-hour rollup). A tenant-scoped caller reads only its tenant; naming another is 404.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use projections::read::{RequestFilter, StatusFilter};
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::query::{DEFAULT_LIMIT, MAX_LIMIT, StrictQuery, rfc3339};

/// The longest filter value accepted (ids, model names, error classes are far shorter).
const MAX_FILTER: usize = 256;
/// The longest period the stats cover.
const MAX_STATS_DAYS: i64 = 366;
/// Microseconds per quarter-hour slot.
const SLOT_US: i64 = 15 * 60 * 1_000_000;

/// The tenant a caller reads: its own when scoped (naming another is "not found").
fn scoped(caller: &Caller, asked: Option<String>) -> Result<Option<String>, ApiError> {
    match (&caller.user.tenant, asked) {
        (None, t) => Ok(t),
        (Some(mine), None) => Ok(Some(mine.clone())),
        (Some(mine), Some(t)) if *mine == t => Ok(Some(t)),
        (Some(_), Some(_)) => Err(ApiError::not_found("tenant")),
    }
}

fn bounded(name: &str, v: Option<String>) -> Result<Option<String>, ApiError> {
    match v {
        Some(v) if v.is_empty() || v.len() > MAX_FILTER => {
            Err(ApiError::bad_request("invalid_parameter", format!("{name}: 1 to {MAX_FILTER} bytes")))
        }
        v => Ok(v),
    }
}

fn time(name: &str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp_micros())
            .map_err(|_| ApiError::bad_request("invalid_parameter", format!("{name} must be an RFC 3339 time")))
    })
    .transpose()
}

/// `200`, … or a class `2xx`, `4xx`, `5xx`.
fn status(v: Option<&str>) -> Result<Option<StatusFilter>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    let bad =
        || ApiError::bad_request("invalid_parameter", "status must be a code (100-599) or a class (2xx, 4xx, 5xx)");
    if let Some(class) = v.strip_suffix("xx") {
        return match class.parse::<i64>() {
            Ok(c) if (1..=5).contains(&c) && class.len() == 1 => Ok(Some(StatusFilter::Class(c))),
            _ => Err(bad()),
        };
    }
    match v.parse::<i64>() {
        Ok(s) if (100..=599).contains(&s) && v.len() == 3 => Ok(Some(StatusFilter::Exact(s))),
        _ => Err(bad()),
    }
}

fn cursor_of(at_us: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{at_us}:{id}"))
}

fn parse_cursor(c: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("invalid_parameter", "after: not a cursor this API gave");
    if c.len() > 2 * MAX_FILTER {
        return Err(bad());
    }
    let raw = URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (at, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((at.parse().map_err(|_| bad())?, id.to_owned()))
}

/// `GET /api/requests` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequestQuery {
    /// Only this tenant (a tenant-scoped user's own always).
    pub tenant: Option<String>,
    /// Only this API key (`key_…`).
    pub key: Option<String>,
    /// Only this model (as the client asked for it).
    pub model: Option<String>,
    /// Only this channel (`ch_…`).
    pub channel: Option<String>,
    /// A status (`429`) or a class (`2xx`, `4xx`, `5xx`).
    pub status: Option<String>,
    /// Only this error class (`rate_limited`, `upstream_server_error`, …).
    pub error_class: Option<String>,
    /// At or after this time (RFC 3339).
    pub from: Option<String>,
    /// Before this time (RFC 3339).
    pub to: Option<String>,
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// One logged request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestView {
    /// The request id (`X-Request-Id`).
    pub id: String,
    /// When it was logged, RFC 3339.
    pub at: String,
    /// Its tenant.
    pub tenant: String,
    /// The API key, when authentication succeeded.
    pub key_id: Option<String>,
    /// `chat.completions`, …
    pub endpoint: String,
    /// The model asked for.
    pub model: Option<String>,
    /// The provider, when routed.
    pub provider: Option<String>,
    /// The channel, when routed.
    pub channel_id: Option<String>,
    /// The HTTP status sent to the client.
    pub status: i64,
    /// Total latency in microseconds.
    pub latency_us: i64,
    /// Time to the first upstream byte of a stream, in microseconds.
    pub ttft_us: Option<i64>,
    /// Upstream attempts.
    pub attempts: i64,
    /// The stable error class, when it failed.
    pub error_class: Option<String>,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// Each upstream attempt's class, in order (`ok`, `rate_limited`, …).
    pub attempt_classes: Vec<String>,
}

/// A page of the request log.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequestPage {
    /// Newest first (time, then id).
    pub data: Vec<RequestView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The request log.
#[utoipa::path(get, path = "/api/requests", tag = "requests", operation_id = "list_requests",
    params(RequestQuery),
    responses((status = 200, body = RequestPage), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<RequestQuery>,
) -> Result<Json<RequestPage>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let filter = RequestFilter {
        tenant: scoped(&caller, bounded("tenant", q.tenant)?)?,
        key_id: bounded("key", q.key)?,
        model: bounded("model", q.model)?,
        channel_id: bounded("channel", q.channel)?,
        status: status(q.status.as_deref())?,
        error_class: bounded("error_class", q.error_class)?,
        from_us: time("from", q.from.as_deref())?,
        to_us: time("to", q.to.as_deref())?,
    };
    let after = q.after.as_deref().map(parse_cursor).transpose()?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows = projections::read::request_log_page(
        state.store(),
        &filter,
        after.as_ref().map(|(at, id)| (*at, id.as_str())),
        limit + 1,
    )
    .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|r| cursor_of(r.occurred_at_us, &r.request_id)) } else { None };
    let data = rows
        .into_iter()
        .map(|r| RequestView {
            id: r.request_id,
            at: rfc3339(r.occurred_at_us),
            tenant: r.tenant,
            key_id: r.key_id,
            endpoint: r.endpoint,
            model: r.model,
            provider: r.provider,
            channel_id: r.channel_id,
            status: r.status,
            latency_us: r.latency_us,
            ttft_us: r.ttft_us,
            attempts: r.attempts,
            error_class: r.error_class,
            streamed: r.streamed,
            attempt_classes: r.attempt_classes,
        })
        .collect();
    Ok(Json(RequestPage { data, next_cursor }))
}

/// `GET /api/dashboard/stats` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// The tenant (a tenant-scoped user's own always; every tenant when omitted).
    pub tenant: Option<String>,
    /// Start (RFC 3339), rounded down to the quarter-hour; default `to` minus 24 hours.
    pub from: Option<String>,
    /// End (RFC 3339, exclusive), rounded up to the quarter-hour; default now.
    pub to: Option<String>,
}

/// Cost in one currency.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CostView {
    /// ISO 4217.
    pub currency: String,
    /// Decimal.
    pub cost: String,
    /// Exact, in nanos of the currency.
    pub cost_nanos: i64,
}

/// A period's statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardStats {
    /// The tenant, absent for every tenant.
    pub tenant: Option<String>,
    /// The period's start as covered (a quarter-hour boundary), RFC 3339.
    pub from: String,
    /// The period's end as covered (exclusive), RFC 3339.
    pub to: String,
    /// Requests logged.
    pub requests: i64,
    /// Requests answered with a status below 400.
    pub succeeded: i64,
    /// 4xx answers.
    pub client_errors: i64,
    /// 5xx answers.
    pub server_errors: i64,
    /// `succeeded / requests`, absent without requests.
    pub success_rate: Option<f64>,
    /// Median latency in microseconds: the upper bound of its histogram bucket (buckets are a
    /// factor 2^(1/4) wide, so it is at most 19% above the exact value, never below).
    pub latency_p50_us: Option<i64>,
    /// 95th percentile latency in microseconds, with the same precision.
    pub latency_p95_us: Option<i64>,
    /// Billed requests (the ledger).
    pub billed_requests: i64,
    /// Input tokens (uncached, cached and cache writes).
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost per currency.
    pub cost: Vec<CostView>,
}

/// Dashboard statistics for a period.
#[utoipa::path(get, path = "/api/dashboard/stats", tag = "requests", operation_id = "dashboard_stats",
    params(StatsQuery),
    responses((status = 200, body = DashboardStats), (status = 400), (status = 401), (status = 403), (status = 404)))]
pub async fn stats(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<StatsQuery>,
) -> Result<Json<DashboardStats>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer, Role::Billing])?;
    let tenant = scoped(&caller, bounded("tenant", q.tenant)?)?;
    let to = time("to", q.to.as_deref())?.unwrap_or_else(|| chrono::Utc::now().timestamp_micros());
    let from = time("from", q.from.as_deref())?.unwrap_or(to.saturating_sub(24 * 3600 * 1_000_000));
    if from >= to || to.saturating_sub(from) > MAX_STATS_DAYS * 24 * 3600 * 1_000_000 {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("from must be before to, at most {MAX_STATS_DAYS} days"),
        ));
    }
    let from_slot = projections::read::slot_of(from);
    let to_slot = projections::read::slot_of(to.saturating_sub(1)) + 1;
    let s = projections::read::request_stats(state.store(), tenant.as_deref(), from_slot, to_slot).await?;
    Ok(Json(DashboardStats {
        tenant,
        from: rfc3339(from_slot * SLOT_US),
        to: rfc3339(to_slot * SLOT_US),
        requests: s.requests,
        succeeded: s.succeeded,
        client_errors: s.client_errors,
        server_errors: s.server_errors,
        success_rate: (s.requests > 0).then(|| s.succeeded as f64 / s.requests as f64),
        latency_p50_us: s.latency_p50_us,
        latency_p95_us: s.latency_p95_us,
        billed_requests: s.billed_requests,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost: s
            .cost
            .into_iter()
            .map(|c| CostView {
                cost: schemas::format_nanos(c.cost_nanos),
                currency: c.currency,
                cost_nanos: c.cost_nanos,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_cursors_parse_strictly() {
        assert_eq!(status(Some("429")).ok().flatten(), Some(StatusFilter::Exact(429)));
        assert_eq!(status(Some("5xx")).ok().flatten(), Some(StatusFilter::Class(5)));
        for bad in ["6xx", "xx", "42", "4290", "abc", "+429", "44xx"] {
            assert!(status(Some(bad)).is_err(), "{bad}");
        }
        let c = cursor_of(1_795_132_800_000_000, "req-1:x");
        assert_eq!(parse_cursor(&c).ok(), Some((1_795_132_800_000_000, "req-1:x".to_owned())));
        assert!(parse_cursor("not a cursor").is_err());
    }
}
