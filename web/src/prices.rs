//! `/api/prices`: the prices in force (model-wide and per-channel overrides) and `PUT` to publish
//! one — the same operation as `prices set`. Amounts are decimal strings per one million tokens,
//! as the CLI takes them; answers carry both the decimal and the exact nanos.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::json::StrictJson;
use crate::query::{Page, StrictQuery, rfc3339};

/// A price in force.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceView {
    /// The model.
    pub model: String,
    /// The channel it overrides the model's price on; absent: every channel.
    pub channel_id: Option<String>,
    /// The price version (the event id usage records name).
    pub version: String,
    /// ISO currency.
    pub currency: String,
    /// Per 1M uncached input tokens, decimal.
    pub input: String,
    /// Per 1M output tokens.
    pub output: String,
    /// Per 1M cached input tokens.
    pub cached: String,
    /// Per 1M cache-write tokens.
    pub cache_write: String,
    /// The same four amounts in nanos of the currency: input, output, cached, cache write.
    pub nanos: [i64; 4],
    /// RFC 3339.
    pub published_at: String,
}

/// A page of prices, by model then channel.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceList {
    /// The prices.
    pub data: Vec<PriceView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// The cursor of a price: its model and channel (the model-wide price sorts first).
fn cursor(p: &projections::read::PriceRecord) -> String {
    format!("{}\u{1f}{}", p.model, p.channel_id.as_deref().unwrap_or(""))
}

/// Lists the prices in force.
#[utoipa::path(get, path = "/api/prices", tag = "prices", operation_id = "list_prices", params(Page),
    responses((status = 200, body = PriceList), (status = 401)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<Page>,
) -> Result<Json<PriceList>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer, Role::Billing])?;
    // Prices in force are one per model and channel override: a small table, paged here.
    let mut all = projections::read::latest_prices(state.store()).await?;
    all.sort_by_key(cursor);
    let limit = page.limit() as usize;
    let after = page.after.unwrap_or_default();
    let mut rows: Vec<_> = all.into_iter().filter(|p| after.is_empty() || cursor(p) > after).take(limit + 1).collect();
    let more = rows.len() > limit;
    rows.truncate(limit);
    let next_cursor = if more { rows.last().map(cursor) } else { None };
    let data = rows
        .into_iter()
        .map(|p| PriceView {
            input: schemas::format_nanos(p.input_per_mtok_nanos),
            output: schemas::format_nanos(p.output_per_mtok_nanos),
            cached: schemas::format_nanos(p.cached_input_per_mtok_nanos),
            cache_write: schemas::format_nanos(p.cache_write_per_mtok_nanos),
            nanos: [
                p.input_per_mtok_nanos,
                p.output_per_mtok_nanos,
                p.cached_input_per_mtok_nanos,
                p.cache_write_per_mtok_nanos,
            ],
            published_at: rfc3339(p.published_at_us),
            model: p.model,
            channel_id: p.channel_id,
            version: p.version,
            currency: p.currency,
        })
        .collect();
    Ok(Json(PriceList { data, next_cursor }))
}

/// `PUT /api/prices` body: decimal amounts per one million tokens.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPrice {
    /// The model.
    pub model: String,
    /// A live channel's name or id: the price then overrides the model's price there alone.
    pub channel: Option<String>,
    /// ISO currency (default USD).
    pub currency: Option<String>,
    /// Uncached input, e.g. `"2.50"`.
    pub input: String,
    /// Output.
    pub output: String,
    /// Cached input (default: the input price).
    pub cached: Option<String>,
    /// Cache-write input (default: the input price).
    pub cache_write: Option<String>,
}

/// A price just published.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PriceSet {
    /// The price version (the event id).
    pub version: String,
}

/// The longest model name accepted.
const MAX_MODEL: usize = 256;

/// Publishes a price (owners and admins without a tenant: prices are shared).
#[utoipa::path(put, path = "/api/prices", tag = "prices", operation_id = "set_price", request_body = SetPrice,
    responses((status = 200, body = PriceSet), (status = 403), (status = 404), (status = 422)))]
pub async fn set(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<SetPrice>,
) -> Result<Response, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden("Prices are shared by every tenant; a tenant-scoped user cannot set them."));
    }
    if body.model.len() > MAX_MODEL {
        return Err(ApiError::unprocessable("invalid_value", format!("model: at most {MAX_MODEL} bytes")));
    }
    let price = control::NewPrice {
        model: &body.model,
        channel: body.channel.as_deref(),
        currency: body.currency.as_deref().unwrap_or("USD"),
        input: &body.input,
        output: &body.output,
        cached: body.cached.as_deref(),
        cache_write: body.cache_write.as_deref(),
    };
    let version = caller.admin(admin).set_price(price).await?;
    admin.settle(state.log(), state.store()).await;
    Ok((StatusCode::OK, Json(PriceSet { version })).into_response())
}
