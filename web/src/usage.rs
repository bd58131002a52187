//! `GET /v1/usage?from=YYYY-MM-DD&to=YYYY-MM-DD&scope=key|tenant`: the caller's tokens and cost
//! by day and model, from the ledger. Defaults: the last 30 days, the calling key only.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

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

const US_PER_DAY: i64 = 86_400_000_000;
const DEFAULT_DAYS: i64 = 30;

fn valid_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
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
    let now_us =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
    let to = q.to.unwrap_or_else(|| projections::utc_day(now_us));
    let from = q.from.unwrap_or_else(|| projections::utc_day(now_us - (DEFAULT_DAYS - 1) * US_PER_DAY));
    for (name, v) in [("from", &from), ("to", &to)] {
        if !valid_day(v) {
            return Err(WebError::BadParam {
                message: format!("{name} must be a date such as 2026-11-01"),
                param: name,
            });
        }
    }
    let key_scope = match q.scope.as_deref() {
        None | Some("key") => Some(record.key_id.as_str()),
        Some("tenant") => None,
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
