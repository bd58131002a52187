//! `/api/api-keys` and `/api/tenants`: the same operations as `keys create|list|revoke` and
//! `tenants create|list`. A new key is returned once and works on the first request after the
//! answer (the answer waits until the local gateway has applied it). A tenant-scoped caller
//! works in its tenant alone; other tenants and their keys are "not found".

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{AdminState, Caller};
use crate::json::StrictJson;
use crate::query::{DEFAULT_LIMIT, MAX_LIMIT, StrictQuery, rfc3339};

fn admin(state: &WebState) -> Result<&AdminState, ApiError> {
    state.admin().ok_or_else(|| ApiError::not_found("route"))
}

/// The tenant a caller works in: its own when it is scoped (naming another is "not found"),
/// else the one asked for.
fn scoped(caller: &Caller, asked: Option<String>) -> Result<Option<String>, ApiError> {
    match (&caller.user.tenant, asked) {
        (None, t) => Ok(t),
        (Some(mine), None) => Ok(Some(mine.clone())),
        (Some(mine), Some(t)) if *mine == t => Ok(Some(t)),
        (Some(_), Some(_)) => Err(ApiError::not_found("tenant")),
    }
}

/// `GET /api/api-keys` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// Only this tenant's keys.
    pub tenant: Option<String>,
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

/// A key as listed: never the key or its hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyView {
    /// `key_…`
    pub id: String,
    /// The first characters of the key.
    pub prefix: String,
    /// Its tenant.
    pub tenant: String,
    /// The label.
    pub name: Option<String>,
    /// Models it may use (absent: every model).
    pub models: Option<Vec<String>>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when revoked.
    pub revoked_at: Option<String>,
    /// Cap on a request's output tokens (absent: none of the key's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices, `n` (absent: none of the key's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u64>,
    /// RFC 3339, when the key stops working (absent: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A page of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeyList {
    /// In id (creation) order.
    pub data: Vec<KeyView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Lists API keys.
#[utoipa::path(get, path = "/api/api-keys", tag = "api-keys", params(KeyQuery),
    responses((status = 200, body = KeyList), (status = 401), (status = 403), (status = 404)))]
pub async fn list_keys(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<KeyQuery>,
) -> Result<Json<KeyList>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let tenant = scoped(&caller, q.tenant)?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows =
        projections::read::api_keys_page(state.store(), tenant.as_deref(), q.after.as_deref(), limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|k| k.key_id.clone()) } else { None };
    let data = rows
        .into_iter()
        .map(|k| KeyView {
            id: k.key_id,
            prefix: k.prefix,
            tenant: k.tenant,
            name: k.name,
            models: k.models,
            created_at: rfc3339(k.created_at_us),
            revoked_at: k.revoked_at_us.map(rfc3339),
            max_output_tokens: k.max_output_tokens,
            max_n: k.max_n,
            expires_at: k.expires_at_us.map(rfc3339),
        })
        .collect();
    Ok(Json(KeyList { data, next_cursor }))
}

/// `POST /api/api-keys` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// The owning tenant (a tenant-scoped caller's own by default).
    pub tenant: Option<String>,
    /// A label.
    pub name: Option<String>,
    /// Restrict the key to these models.
    pub models: Option<Vec<String>>,
    /// Cap on a request's output tokens (`max_tokens` and its synonyms), 1 to 1,000,000; the
    /// smallest of the gateway's, the tenant's and the key's cap applies.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices (`n`, Gemini's `candidateCount`), 1 to 128.
    pub max_n: Option<u64>,
    /// RFC 3339: the key stops working then (401). Must be in the future.
    pub expires_at: Option<String>,
}

/// A key just issued: the key itself is shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedKey {
    /// `key_…`
    pub id: String,
    /// The key (`sk-…`): store it now, it cannot be shown again.
    pub key: String,
    /// Display prefix.
    pub prefix: String,
    /// Its tenant.
    pub tenant: String,
    /// The label.
    pub name: Option<String>,
    /// Models it may use (absent: every model).
    pub models: Option<Vec<String>>,
    /// RFC 3339.
    pub created_at: String,
    /// Cap on a request's output tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u64>,
    /// RFC 3339, when the key stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// The longest key label, and the most models a key may name.
const MAX_NAME: usize = 128;
const MAX_MODELS: usize = 256;

/// Issues an API key.
#[utoipa::path(post, path = "/api/api-keys", tag = "api-keys", request_body = CreateKey,
    responses((status = 201, body = IssuedKey), (status = 400), (status = 403), (status = 404), (status = 422)))]
pub async fn create_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateKey>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let tenant =
        scoped(&caller, body.tenant)?.ok_or_else(|| ApiError::unprocessable("invalid_value", "tenant is required"))?;
    if body.name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME) {
        return Err(ApiError::unprocessable("invalid_value", format!("name: at most {MAX_NAME} characters")));
    }
    let models =
        body.models.map(|m| m.into_iter().map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect::<Vec<_>>());
    if models.as_ref().is_some_and(|m| m.is_empty() || m.len() > MAX_MODELS || m.iter().any(|x| x.len() > 256)) {
        return Err(ApiError::unprocessable("invalid_value", "models: 1 to 256 names of at most 256 bytes"));
    }
    let expires_at_us = match body.expires_at.as_deref() {
        None => None,
        Some(t) => Some(
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|_| ApiError::bad_request("invalid_value", "expires_at: an RFC 3339 time"))?
                .timestamp_micros(),
        ),
    };
    let limits = control::KeyLimits { max_output_tokens: body.max_output_tokens, max_n: body.max_n, expires_at_us };
    let key = caller.admin(admin).create_key_with(&tenant, body.name.clone(), models.clone(), false, limits).await?;
    admin.settle(state.log(), state.store()).await;
    let created_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = IssuedKey {
        id: key.key_id,
        key: key.key,
        prefix: key.prefix,
        tenant,
        name: body.name,
        models,
        created_at,
        max_output_tokens: body.max_output_tokens,
        max_n: body.max_n,
        expires_at: expires_at_us.map(rfc3339),
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// Revokes an API key (final).
#[utoipa::path(delete, path = "/api/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, description = "key_…")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn revoke_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let Path(id) = id.map_err(|_| ApiError::not_found("key"))?;
    if !id.starts_with("key_") || id.len() > 64 {
        return Err(ApiError::not_found("key"));
    }
    let key = projections::read::api_key(state.store(), &id)
        .await?
        .filter(|k| caller.sees(&k.tenant))
        .ok_or_else(|| ApiError::not_found("key"))?;
    if key.revoked {
        return Err(ApiError::conflict("already_revoked", format!("Key {id} is already revoked.")));
    }
    caller.admin(admin).revoke_key(&key.key_id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// A tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    /// The slug.
    pub name: String,
    /// Display name in any script.
    pub display_name: Option<String>,
    /// IANA time zone of its reports.
    pub time_zone: String,
    /// RFC 3339.
    pub created_at: String,
    /// Cap on a request's output tokens for every key of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices for every key of the tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_n: Option<u64>,
}

impl From<projections::read::TenantRecord> for TenantView {
    fn from(t: projections::read::TenantRecord) -> TenantView {
        TenantView {
            name: t.name,
            display_name: t.display_name,
            time_zone: t.time_zone.unwrap_or_else(|| "UTC".to_owned()),
            created_at: rfc3339(t.created_at_us),
            max_output_tokens: t.max_output_tokens,
            max_n: t.max_n,
        }
    }
}

/// A page of tenants.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantList {
    /// By name.
    pub data: Vec<TenantView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Lists tenants (a tenant-scoped caller sees its own).
#[utoipa::path(get, path = "/api/tenants", tag = "tenants", params(crate::query::Page),
    responses((status = 200, body = TenantList), (status = 401), (status = 403)))]
pub async fn list_tenants(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<crate::query::Page>,
) -> Result<Json<TenantList>, ApiError> {
    let limit = page.limit();
    let mut rows =
        projections::read::tenants_page(state.store(), caller.user.tenant.as_deref(), page.after.as_deref(), limit + 1)
            .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|t| t.name.clone()) } else { None };
    let data = rows.into_iter().map(TenantView::from).collect();
    Ok(Json(TenantList { data, next_cursor }))
}

/// `POST /api/tenants` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The slug: 1-64 of a-z, 0-9, '-', '_'.
    pub name: String,
    /// A display name in any script (1-128 characters).
    pub display_name: Option<String>,
    /// IANA time zone of its reports (default UTC).
    pub time_zone: Option<String>,
    /// Cap on a request's output tokens for every key of the tenant, 1 to 1,000,000.
    pub max_output_tokens: Option<u64>,
    /// Cap on a request's choices (`n`) for every key of the tenant, 1 to 128.
    pub max_n: Option<u64>,
}

/// Creates a tenant (owners and unscoped admins).
#[utoipa::path(post, path = "/api/tenants", tag = "tenants", request_body = CreateTenant,
    responses((status = 201, body = TenantView), (status = 403), (status = 409), (status = 422)))]
pub async fn create_tenant(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateTenant>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden("A tenant-scoped user cannot create tenants."));
    }
    if body.max_output_tokens == Some(0) || body.max_n == Some(0) {
        return Err(ApiError::unprocessable("invalid_value", "a cap must be at least 1"));
    }
    let profile = control::TenantProfile {
        display_name: body.display_name,
        time_zone: body.time_zone,
        max_output_tokens: body.max_output_tokens,
        max_n: body.max_n,
    };
    caller.admin(admin).create_tenant_with(&body.name, profile).await?;
    admin.settle(state.log(), state.store()).await;
    let tenant =
        projections::read::tenants_page(state.store(), Some(&body.name), None, 1).await?.pop().ok_or_else(|| {
            ApiError::unavailable("read_store_lagging", "The tenant was created; the list shows it shortly.")
        })?;
    let view = TenantView::from(tenant);
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `PATCH /api/tenants/{name}` body: only the fields given change.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// A new display name in any script (1-128 characters).
    pub display_name: Option<String>,
    /// A new IANA time zone of its reports.
    pub time_zone: Option<String>,
    /// A new cap on a request's output tokens for every key of the tenant, 1 to 1,000,000;
    /// `null` (or `0`) removes the cap.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_output_tokens: Option<Option<u64>>,
    /// A new cap on a request's choices (`n`), 1 to 128; `null` (or `0`) removes the cap.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    pub max_n: Option<Option<u64>>,
}

/// A field that is present (`Some`), possibly `null` (`Some(None)`); absent fields take the
/// `#[serde(default)]` `None`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Changes a tenant's display name, time zone or request caps (owners and unscoped admins; a
/// tenant-scoped user may not change its own caps, and another tenant is 404 to it).
#[utoipa::path(patch, path = "/api/tenants/{name}", tag = "tenants", operation_id = "update_tenant",
    params(("name" = String, Path, description = "The tenant's slug")), request_body = UpdateTenant,
    responses((status = 200, body = TenantView), (status = 403), (status = 404), (status = 422)))]
pub async fn update_tenant(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    name: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<UpdateTenant>,
) -> Result<Json<TenantView>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let Path(name) = name.map_err(|_| ApiError::not_found("tenant"))?;
    if schemas::TenantId::parse(&name).is_err() {
        return Err(ApiError::not_found("tenant"));
    }
    match caller.user.tenant.as_deref() {
        Some(own) if own != name => return Err(ApiError::not_found("tenant")),
        Some(_) => return Err(ApiError::forbidden("A tenant-scoped user cannot change its tenant.")),
        None => {}
    }
    let profile = control::TenantProfile {
        display_name: body.display_name,
        time_zone: body.time_zone,
        max_output_tokens: body.max_output_tokens.map(|m| m.unwrap_or(0)),
        max_n: body.max_n.map(|m| m.unwrap_or(0)),
    };
    caller.admin(admin).update_tenant(&name, profile).await?;
    admin.settle(state.log(), state.store()).await;
    let tenant =
        projections::read::tenants_page(state.store(), Some(&name), None, 1).await?.pop().ok_or_else(|| {
            ApiError::unavailable("read_store_lagging", "The tenant was changed; the list shows it shortly.")
        })?;
    Ok(Json(TenantView::from(tenant)))
}
