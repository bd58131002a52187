//! `GET /api/reports/usage`: a tenant's usage and cost by day, ISO week, month, model or key, in
//! the tenant's time zone, from the rollups (the CLI's `reports usage`, byte for byte), as JSON
//! or RFC 4180 CSV (`format=csv` or
//! `Accept: text/csv`, `bom=true` for Excel), with `as_of` — the billing sequence the report
//! reflects — in the body and the `X-As-Of-Seq` header; `as_of=N` asks for the report as it was
//! at N (the same bytes after a rebuild).

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use schemas::Role;
use serde::Deserialize;

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::query::StrictQuery;

/// Query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UsageReportQuery {
    /// The tenant (a tenant-scoped user's own by default).
    pub tenant: Option<String>,
    /// First local day (the tenant's time zone), `YYYY-MM-DD`, inclusive.
    pub from: String,
    /// Last local day, `YYYY-MM-DD`, inclusive.
    pub to: String,
    /// `day` (default), `week` (ISO, `2026-W48`), `month`, `key` (each by model too), or
    /// `model`.
    pub group_by: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Prefix CSV with a UTF-8 byte order mark (Excel).
    pub bom: Option<bool>,
    /// The billing sequence to report as of (default: the latest).
    pub as_of: Option<u64>,
}

/// The most days one report may span.
const MAX_DAYS: i64 = 366 * 5;

/// The usage report.
#[utoipa::path(get, path = "/api/reports/usage", tag = "reports", operation_id = "usage_report",
    params(UsageReportQuery),
    responses((status = 200, description = "JSON or CSV"), (status = 400), (status = 404), (status = 409)))]
pub async fn usage(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<UsageReportQuery>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer, Role::Billing])?;
    let tenant = match (&caller.user.tenant, q.tenant) {
        (Some(mine), None) => mine.clone(),
        (Some(mine), Some(t)) if *mine == t => t,
        (Some(_), Some(_)) => return Err(ApiError::not_found("tenant")),
        (None, Some(t)) => t,
        (None, None) => return Err(ApiError::bad_request("invalid_parameter", "tenant is required")),
    };
    let Some(record) = projections::read::tenants_page(state.store(), Some(&tenant), None, 1)
        .await?
        .into_iter()
        .find(|t| t.name == tenant)
    else {
        return Err(ApiError::not_found("tenant"));
    };
    // The control model validates zones when a tenant is created; an unknown one here means a
    // newer zone database wrote it, and the report says so rather than guessing UTC.
    let zone: chrono_tz::Tz = match record.time_zone.as_deref() {
        None => chrono_tz::UTC,
        Some(z) => z.parse().map_err(|_| {
            ApiError::conflict("unknown_time_zone", format!("The tenant's time zone {z:?} is not known here."))
        })?,
    };
    let day = |name: &str, v: &str| {
        projections::Day::parse(v).map_err(|e| ApiError::bad_request("invalid_parameter", format!("{name} {e}")))
    };
    let (from, to) = (day("from", &q.from)?, day("to", &q.to)?);
    let span = chrono::NaiveDate::parse_from_str(&q.to, "%Y-%m-%d")
        .ok()
        .zip(chrono::NaiveDate::parse_from_str(&q.from, "%Y-%m-%d").ok())
        .map(|(t, f)| (t - f).num_days());
    if !span.is_some_and(|d| (0..=MAX_DAYS).contains(&d)) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("from must not be after to, at most {MAX_DAYS} days"),
        ));
    }
    let group_by = match q.group_by.as_deref() {
        None => projections::read::GroupBy::Day,
        Some(g) => projections::read::GroupBy::parse(g).ok_or_else(|| {
            ApiError::bad_request("invalid_parameter", "group_by must be `day`, `week`, `month`, `model` or `key`")
        })?,
    };
    let wants_csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None => headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv")),
        Some(_) => return Err(ApiError::bad_request("invalid_parameter", "format must be `json` or `csv`")),
    };
    let (Ok(from), Ok(to)) = (
        chrono::NaiveDate::parse_from_str(&from.to_string(), "%Y-%m-%d"),
        chrono::NaiveDate::parse_from_str(&to.to_string(), "%Y-%m-%d"),
    ) else {
        return Err(ApiError::bad_request("invalid_parameter", "from and to must be `YYYY-MM-DD`"));
    };
    let report =
        match projections::read::report_in_zone(state.store(), &tenant, zone, group_by, from, to, q.as_of).await {
            Err(projections::ProjectionError::NotCaughtUp { .. }) => {
                return Err(ApiError::conflict("not_caught_up", "The ledger has not reached that sequence yet."));
            }
            other => other?,
        };
    Ok(respond(&report, wants_csv, q.bom == Some(true)))
}

/// Writes the report in the format asked for, with its `as_of` header.
fn respond(report: &projections::read::Report, wants_csv: bool, bom: bool) -> Response {
    let (mut body, content_type) =
        if wants_csv { (report.to_csv(), "text/csv; charset=utf-8") } else { (report.to_json(), "application/json") };
    if wants_csv && bom {
        body.splice(0..0, [0xEF, 0xBB, 0xBF]);
    }
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&report.as_of_seq.to_string()) {
        res.headers_mut().insert("x-as-of-seq", v);
    }
    res
}

/// Query of the billing report.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct BillingReportQuery {
    /// One tenant (a tenant-scoped user's own by default); every tenant when omitted.
    pub tenant: Option<String>,
    /// First local day (each tenant's own zone), `YYYY-MM-DD`, inclusive.
    pub from: String,
    /// Last local day, `YYYY-MM-DD`, inclusive.
    pub to: String,
    /// `day`, `week` (ISO) or `month` (default).
    pub period: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
    /// Prefix CSV with a UTF-8 byte order mark (Excel).
    pub bom: Option<bool>,
    /// The billing sequence to report as of (default: the latest).
    pub as_of: Option<u64>,
    /// Without `tenant`: tenants per page, by name (default 50, at most 200).
    pub limit: Option<u32>,
    /// Without `tenant`: the `next_cursor` of the previous page (a tenant name).
    pub after: Option<String>,
}

/// The billing report: per tenant and period, requests, tokens by kind and cost (decimal and
/// nanos) per currency, in each tenant's time zone; for finance, so viewers get 403. Without
/// `tenant`, a page of tenants by name (`limit`, `after`): the next page's cursor is
/// `next_cursor` in JSON and the `X-Next-Cursor` header in both formats; each page is one
/// snapshot with its own `as_of_seq`, and a tenant's rows are never split across pages.
#[utoipa::path(get, path = "/api/reports/billing", tag = "reports", operation_id = "billing_report",
    params(BillingReportQuery),
    responses((status = 200, description = "JSON or CSV"), (status = 400), (status = 403), (status = 404), (status = 409)))]
pub async fn billing(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    StrictQuery(q): StrictQuery<BillingReportQuery>,
) -> Result<Response, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Billing])?;
    let only = match (&caller.user.tenant, q.tenant) {
        (Some(mine), None) => Some(mine.clone()),
        (Some(mine), Some(t)) if *mine == t => Some(t),
        (Some(_), Some(_)) => return Err(ApiError::not_found("tenant")),
        (None, t) => t,
    };
    let period = match q.period.as_deref() {
        None | Some("month") => projections::read::GroupBy::Month,
        Some("week") => projections::read::GroupBy::Week,
        Some("day") => projections::read::GroupBy::Day,
        Some(_) => return Err(ApiError::bad_request("invalid_parameter", "period must be `day`, `week` or `month`")),
    };
    let day = |name: &str, v: &str| {
        chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d")
            .map_err(|_| ApiError::bad_request("invalid_parameter", format!("{name} must be a date, YYYY-MM-DD")))
    };
    let (from, to) = (day("from", &q.from)?, day("to", &q.to)?);
    if !(0..=MAX_DAYS).contains(&(to - from).num_days()) {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!("from must not be after to, at most {MAX_DAYS} days"),
        ));
    }
    let wants_csv = match q.format.as_deref() {
        Some("csv") => true,
        Some("json") => false,
        None => headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv")),
        Some(_) => return Err(ApiError::bad_request("invalid_parameter", "format must be `json` or `csv`")),
    };
    // Every tenant is a page of tenants by name: one more than the page is read to tell whether
    // another page follows.
    let limit = crate::query::Page { limit: q.limit, after: None }.limit();
    let after = if only.is_some() { None } else { q.after.as_deref() };
    let mut records = projections::read::tenants_page(state.store(), only.as_deref(), after, limit + 1).await?;
    let next_cursor = if only.is_none() && records.len() > limit as usize {
        records.truncate(limit as usize);
        records.last().map(|t| t.name.clone())
    } else {
        None
    };
    if only.is_some() && records.is_empty() {
        return Err(ApiError::not_found("tenant"));
    }
    let mut tenants = Vec::with_capacity(records.len());
    for t in records {
        let zone: chrono_tz::Tz = match t.time_zone.as_deref() {
            None => chrono_tz::UTC,
            Some(z) => z.parse().map_err(|_| {
                ApiError::conflict("unknown_time_zone", format!("The time zone {z:?} of {} is not known here.", t.name))
            })?,
        };
        tenants.push((t, zone));
    }
    let mut report = match projections::read::billing_report(state.store(), &tenants, period, from, to, q.as_of).await {
        Err(projections::ProjectionError::NotCaughtUp { .. }) => {
            return Err(ApiError::conflict("not_caught_up", "The ledger has not reached that sequence yet."));
        }
        other => other?,
    };
    report.next_cursor = next_cursor;
    let (mut body, content_type) =
        if wants_csv { (report.to_csv(), "text/csv; charset=utf-8") } else { (report.to_json(), "application/json") };
    if wants_csv && q.bom == Some(true) {
        body.splice(0..0, [0xEF, 0xBB, 0xBF]);
    }
    let mut res = body.into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&report.as_of_seq.to_string()) {
        res.headers_mut().insert("x-as-of-seq", v);
    }
    if let Some(v) = report.next_cursor.as_deref().and_then(|c| HeaderValue::from_str(c).ok()) {
        res.headers_mut().insert("x-next-cursor", v);
    }
    Ok(res)
}
