//! `/api/routes`: the routes in force, `PUT /api/routes/{model}` to replace one and `DELETE
//! /api/routes/{model}` to remove one (`route.removed`: the model is routed by the default
//! again) — the same operations as `routes set` and `routes remove`. Routes are shared by every
//! tenant.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::json::StrictJson;
use crate::query::{Page, StrictQuery};

/// A model's route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    /// The model, as clients name it.
    pub model: String,
    /// `priority`, `least-latency` or `lowest-cost`.
    pub strategy: String,
    /// Models tried in order when every channel of `model` failed.
    pub fallback: Vec<String>,
}

/// A page of routes, by model.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteList {
    /// The routes.
    pub data: Vec<RouteView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn view(r: &schemas::RouteSet) -> RouteView {
    RouteView { model: r.model.clone(), strategy: r.strategy.as_str().to_owned(), fallback: r.fallback.clone() }
}

/// Lists the routes (every role but billing).
#[utoipa::path(get, path = "/api/routes", tag = "routes", operation_id = "list_routes", params(Page),
    responses((status = 200, body = RouteList), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<Page>,
) -> Result<Json<RouteList>, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = page.limit() as usize;
    let after = page.after.unwrap_or_default();
    let snapshot = admin.live.snapshot();
    // The routes are a `BTreeMap` by model: already in cursor order.
    let mut data: Vec<RouteView> =
        snapshot.routes().filter(|r| after.is_empty() || r.model > after).take(limit + 1).map(view).collect();
    let more = data.len() > limit;
    data.truncate(limit);
    let next_cursor = if more { data.last().map(|r| r.model.clone()) } else { None };
    Ok(Json(RouteList { data, next_cursor }))
}

/// `PUT /api/routes/{model}` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRoute {
    /// `priority`, `least-latency` or `lowest-cost`.
    pub strategy: String,
    /// Other models to try in order (at most 8; they need not have channels yet).
    #[serde(default)]
    pub fallback: Vec<String>,
}

/// The longest model name accepted.
const MAX_MODEL: usize = 256;

/// Replaces a model's route (owners and admins without a tenant).
#[utoipa::path(put, path = "/api/routes/{model}", tag = "routes", operation_id = "set_route",
    params(("model" = String, Path, description = "the model")), request_body = SetRoute,
    responses((status = 200, body = RouteView), (status = 403), (status = 422)))]
pub async fn set(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    model: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<SetRoute>,
) -> Result<Json<RouteView>, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden("Routes are shared by every tenant; a tenant-scoped user cannot set them."));
    }
    let Path(model) = model.map_err(|_| ApiError::not_found("model"))?;
    let model = model.trim().to_owned();
    if model.len() > MAX_MODEL || body.fallback.len() > 64 || body.fallback.iter().any(|m| m.len() > MAX_MODEL) {
        return Err(ApiError::unprocessable("invalid_value", format!("model names: at most {MAX_MODEL} bytes")));
    }
    caller.admin(admin).set_route(&model, &body.strategy, body.fallback).await?;
    admin.settle(state.log(), state.store()).await;
    let snapshot = admin.live.snapshot();
    let route =
        snapshot.routes().find(|r| r.model == model).map(view).ok_or_else(|| {
            ApiError::unavailable("live_view_lagging", "The route was set; the list shows it shortly.")
        })?;
    Ok(Json(route))
}

/// Removes a model's route (owners and admins without a tenant): the model is routed by the
/// default (priority, no fallback) from the next request on.
#[utoipa::path(delete, path = "/api/routes/{model}", tag = "routes", operation_id = "remove_route",
    params(("model" = String, Path, description = "the model")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    model: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden("Routes are shared by every tenant; a tenant-scoped user cannot remove them."));
    }
    let Path(model) = model.map_err(|_| ApiError::not_found("route"))?;
    let model = model.trim().to_owned();
    if model.is_empty() || model.len() > MAX_MODEL {
        return Err(ApiError::not_found("route"));
    }
    caller.admin(admin).remove_route(&model).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}
