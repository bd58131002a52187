//! `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&scope=key|tenant`: the caller's tokens and cost
//! by day and model, from the ledger. Defaults: the last 30 days, the calling key only.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use projections::Day;

use crate::{WebError, WebState};

/// Query parameters.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    scope: Option<String>,
}

#[derive(Serialize)]
struct UsageLine {
    #[serde(flatten)]
    day: projections::read::UsageDay,
    /// `cost_nanos` as a decimal in the currency.
    cost: String,
}

#[derive(Serialize)]
struct UsageResponse {
    object: &'static str,
    tenant: String,
    key_id: Option<String>,
    from: String,
    to: String,
    data: Vec<UsageLine>,
}

/// The window when the query names no `from`: today and the 29 days before it.
const DEFAULT_DAYS: u64 = 30;

fn day_param(name: &'static str, v: Option<&str>, default: Day) -> Result<Day, WebError> {
    match v {
        None => Ok(default),
        Some(v) => Day::parse(v).map_err(|e| WebError::BadParam { message: format!("{name} {e}"), param: name }),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer "))?.trim();
    (!token.is_empty() && token.len() <= 256).then_some(token)
}

/// Handler.
pub async fn usage(
    State(state): State<WebState>,
    headers: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> Result<Json<serde_json::Value>, WebError> {
    let key = bearer(&headers).ok_or(WebError::InvalidKey)?;
    let record = projections::read::key_by_hash(state.store(), &schemas::keys::hash(key))
        .await?
        .filter(|k| !k.revoked)
        .ok_or(WebError::InvalidKey)?;
    let today = Day::of_us(chrono::Utc::now().timestamp_micros());
    let to = day_param("to", q.to.as_deref(), today)?;
    let from = day_param("from", q.from.as_deref(), today.minus_days(DEFAULT_DAYS - 1))?.to_string();
    let to = to.to_string();
    let key_scope = match q.scope.as_deref() {
        None | Some("key") => Some(record.key_id.as_str()),
        // A key reads its whole tenant's usage only when it was granted that (`keys create
        // --tenant-usage`): a key limited to some models must not see what the others spend.
        Some("tenant") if record.tenant_usage => None,
        Some("tenant") => return Err(WebError::ScopeNotGranted),
        Some(_) => {
            return Err(WebError::BadParam { message: "scope must be `key` or `tenant`".to_owned(), param: "scope" });
        }
    };
    let rows = projections::read::usage_by_day(state.store(), &record.tenant, key_scope, &from, &to).await?;
    let data = rows.into_iter().map(|day| UsageLine { cost: schemas::format_nanos(day.cost_nanos), day }).collect();
    let body = UsageResponse {
        object: "usage",
        tenant: record.tenant.clone(),
        key_id: key_scope.map(str::to_owned),
        from,
        to,
        data,
    };
    Ok(Json(serde_json::to_value(body).unwrap_or_default()))
}
