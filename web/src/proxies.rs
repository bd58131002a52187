//! `/api/proxies`: the same operations as `proxies add|remove|list` (the `control` crate: the URL's
//! scheme and shape, the outbound-address policy on its host, its credentials sealed under the
//! proxy's id). A proxy's URL is shown masked (`scheme://***@host:port`) in every answer, the
//! answer to the `POST` included; the password is never returned. Proxies are shared by every
//! tenant, as channels are: a tenant-scoped user sees none (404) and cannot write them.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemas::Role;
use schemas::control::Proxy;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{AdminState, Caller};
use crate::json::StrictJson;
use crate::query::{StrictQuery, rfc3339};

fn admin(state: &WebState) -> Result<&AdminState, ApiError> {
    state.admin().ok_or_else(|| ApiError::not_found("route"))
}

/// A proxy as listed: never its credentials.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyView {
    /// `px_…`
    pub id: String,
    /// The pool channels name.
    pub pool: String,
    /// Unique display name.
    pub name: String,
    /// `scheme://host:port`, or `scheme://***@host:port` when it has credentials.
    pub url: String,
    /// `active` or `open` (its breaker).
    pub state: String,
    /// Why it is in its state (`recovered`, the failure that opened it).
    pub reason: Option<String>,
    /// RFC 3339: the end of an open breaker.
    pub until: Option<String>,
    /// `admin`, or `pool_url` for a proxy synced from `PROXY_POOL_URL`.
    pub origin: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of proxies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProxyList {
    /// In id (creation) order.
    pub data: Vec<ProxyView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn view(p: &Proxy) -> ProxyView {
    ProxyView {
        id: p.proxy_id.clone(),
        pool: p.pool.clone(),
        name: p.name.clone(),
        url: p.masked_url(),
        state: p.state.as_str().to_owned(),
        reason: p.reason.clone(),
        until: p.until_us.map(rfc3339),
        origin: if p.from_pool_url { "pool_url" } else { "admin" }.to_owned(),
        created_at: rfc3339(p.added_at_us),
    }
}

/// Proxies belong to no tenant: a tenant-scoped user sees them as it sees global channels.
fn sees_proxies(caller: &Caller) -> bool {
    caller.sees(schemas::GLOBAL_TENANT)
}

/// Refuses writes by anyone but unscoped owners and admins.
fn require_writer(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden(
            "Proxies are shared by every tenant; a tenant-scoped user cannot change them.",
        ));
    }
    Ok(())
}

/// `GET /api/proxies` query: cursor paging and an optional pool.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProxyQuery {
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
    /// Only this pool's proxies.
    pub pool: Option<String>,
}

/// Lists proxies (owners, admins and viewers; masked URLs).
#[utoipa::path(get, path = "/api/proxies", tag = "proxies", operation_id = "list_proxies", params(ProxyQuery),
    responses((status = 200, body = ProxyList), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<ProxyQuery>,
) -> Result<Json<ProxyList>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let page = crate::query::Page { limit: q.limit, after: None };
    let limit = page.limit() as usize;
    let after = q.after.unwrap_or_default();
    let snapshot = admin.live.snapshot();
    let mut data: Vec<ProxyView> = snapshot
        .proxies()
        .filter(|p| sees_proxies(&caller) && p.proxy_id > after && q.pool.as_ref().is_none_or(|pool| p.pool == *pool))
        .take(limit + 1)
        .map(view)
        .collect();
    let more = data.len() > limit;
    data.truncate(limit);
    let next_cursor = if more { data.last().map(|p| p.id.clone()) } else { None };
    Ok(Json(ProxyList { data, next_cursor }))
}

/// The longest proxy URL accepted.
const MAX_URL: usize = 2048;
/// The longest pool or proxy name accepted before the control checks (which allow 64).
const MAX_NAME: usize = 128;

/// `POST /api/proxies` body. `url` may carry `user:password@`: it is sealed and never returned.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProxy {
    /// The pool (1-64 letters, digits, `-`, `_`, `.`); created by its first proxy.
    pub pool: String,
    /// `http://`, `https://`, `socks5://` or `socks5h://` `[user:password@]host[:port]`; the host
    /// is checked against the outbound-address policy.
    pub url: String,
    /// Unique name (default: the pool's name and a number).
    pub name: Option<String>,
}

/// Adds a proxy to a pool (owners and unscoped admins); the answer shows the URL masked.
#[utoipa::path(post, path = "/api/proxies", tag = "proxies", operation_id = "create_proxy",
    request_body = CreateProxy,
    responses((status = 201, body = ProxyView), (status = 403), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateProxy>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    require_writer(&caller)?;
    if body.url.len() > MAX_URL {
        return Err(ApiError::unprocessable("invalid_value", format!("url: at most {MAX_URL} bytes")));
    }
    if body.pool.len() > MAX_NAME || body.name.as_ref().is_some_and(|n| n.len() > MAX_NAME) {
        return Err(ApiError::unprocessable("invalid_value", "pool, name: 1-64 letters, digits, '-', '_' or '.'"));
    }
    let new = control::NewProxy { pool: body.pool, url: body.url, name: body.name };
    let (id, _) = caller.admin(admin).add_proxy(&admin.cfg.master, new).await?;
    admin.settle(state.log(), state.store()).await;
    let snapshot = admin.live.snapshot();
    let view =
        snapshot.model().proxies.get(&id).map(view).ok_or_else(|| {
            ApiError::unavailable("live_view_lagging", "The proxy was added; the list shows it shortly.")
        })?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Removes a proxy from its pool (owners and unscoped admins). Channels naming the pool keep it;
/// a pool left empty carries no calls until a proxy joins it again.
#[utoipa::path(delete, path = "/api/proxies/{id}", tag = "proxies", operation_id = "remove_proxy",
    params(("id" = String, Path, description = "px_…")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let Path(id) = id.map_err(|_| ApiError::not_found("proxy"))?;
    // Only ids: the control operation also takes names, which are not paths of this API.
    if !id.starts_with("px_") || id.len() > 64 || !sees_proxies(&caller) {
        return Err(ApiError::not_found("proxy"));
    }
    if !admin.live.snapshot().model().proxies.contains_key(&id) {
        return Err(ApiError::not_found("proxy"));
    }
    require_writer(&caller)?;
    caller.admin(admin).remove_proxy(&id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}
