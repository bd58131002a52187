//! `/api/users`: admin users. Owners and admins change them (an admin never touches an owner or
//! makes one); viewers read. A tenant-scoped caller sees and manages only its tenant's users;
//! any other user is "not found" to it.

use axum::Extension;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{AdminState, Caller};
use crate::json::StrictJson;
use crate::query::{Page, StrictQuery, rfc3339};

/// A user as the API shows it (never a password or its hash).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    /// `usr_…`
    pub id: String,
    /// Login email.
    pub email: String,
    /// `owner`, `admin`, `viewer` or `billing`.
    pub role: String,
    /// The one tenant the user sees; absent: every tenant.
    pub tenant: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when disabled.
    pub disabled_at: Option<String>,
}

impl From<projections::read::UserRecord> for UserView {
    fn from(u: projections::read::UserRecord) -> Self {
        UserView {
            id: u.user_id,
            email: u.email,
            role: u.role,
            tenant: u.tenant,
            created_at: rfc3339(u.created_at_us),
            disabled_at: u.disabled_at_us.map(rfc3339),
        }
    }
}

/// A page of users.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserList {
    /// The users, in id (creation) order.
    pub data: Vec<UserView>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `POST /api/users` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Login email.
    pub email: String,
    /// `owner`, `admin`, `viewer` or `billing`.
    #[schema(value_type = String)]
    pub role: Role,
    /// Scope the user to this tenant.
    pub tenant: Option<String>,
    /// The password (12-256 characters); absent: one is generated and returned once.
    pub password: Option<String>,
}

/// `POST /api/users` answer.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedUser {
    /// `usr_…`
    pub id: String,
    /// Login email.
    pub email: String,
    /// Role.
    pub role: String,
    /// Tenant scope.
    pub tenant: Option<String>,
    /// The generated password, shown once (absent when one was given).
    pub password: Option<String>,
}

/// `PATCH /api/users/{id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    #[schema(value_type = Option<String>)]
    pub role: Option<Role>,
    /// New password (ends the user's sessions).
    pub password: Option<String>,
}

fn admin(state: &WebState) -> Result<&AdminState, ApiError> {
    state.admin().ok_or_else(|| ApiError::not_found("route"))
}

/// Lists users.
#[utoipa::path(get, path = "/api/users", tag = "users", operation_id = "list_users", params(Page),
    responses((status = 200, body = UserList), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<Page>,
) -> Result<Json<UserList>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = page.limit();
    let rows = projections::read::users(state.store(), caller.user.tenant.as_deref(), page.after.as_deref(), limit + 1)
        .await?;
    Ok(Json(page_of(rows, limit)))
}

fn page_of(mut rows: Vec<projections::read::UserRecord>, limit: u32) -> UserList {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|u| u.user_id.clone()) } else { None };
    UserList { data: rows.into_iter().map(UserView::from).collect(), next_cursor }
}

/// Creates a user.
#[utoipa::path(post, path = "/api/users", tag = "users", operation_id = "create_user", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateUser>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    if body.role == Role::Owner && caller.user.role != Role::Owner {
        return Err(ApiError::forbidden("Only an owner may create an owner."));
    }
    let tenant = match (&caller.user.tenant, body.tenant) {
        (None, t) => t,
        (Some(mine), None) => Some(mine.clone()),
        (Some(mine), Some(t)) if *mine == t => Some(t),
        (Some(_), Some(_)) => return Err(ApiError::not_found("tenant")),
    };
    let new = control::NewUser { email: body.email, role: body.role, tenant: tenant.clone(), password: body.password };
    let created = caller.admin(admin).create_user(new).await?;
    admin.settle(state.log(), state.store()).await;
    let out = CreatedUser {
        id: created.user_id,
        email: created.email,
        role: body.role.to_string(),
        tenant,
        password: created.generated_password,
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

/// The user `id` (a path that is not even text is 404 too) as the caller may act on it: visible (else 404), and not an owner unless the
/// caller is one (else 403).
fn target(admin: &AdminState, caller: &Caller, id: &str) -> Result<schemas::control::User, ApiError> {
    let snapshot = admin.live.snapshot();
    let user = snapshot
        .user(id)
        .filter(|u| u.tenant.as_deref().is_some_and(|t| caller.sees(t)) || caller.user.tenant.is_none())
        .ok_or_else(|| ApiError::not_found("user"))?;
    if user.role == Role::Owner && caller.user.role != Role::Owner {
        return Err(ApiError::forbidden("Only an owner may change an owner."));
    }
    Ok(user.clone())
}

/// Changes a user's role or password.
#[utoipa::path(patch, path = "/api/users/{id}", tag = "users", operation_id = "update_user", request_body = UpdateUser,
    params(("id" = String, Path, description = "usr_…")),
    responses((status = 204), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<UpdateUser>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let user = target(admin, &caller, &id.map_err(|_| ApiError::not_found("user"))?.0)?;
    if body.role == Some(Role::Owner) && caller.user.role != Role::Owner {
        return Err(ApiError::forbidden("Only an owner may make an owner."));
    }
    let changes = control::UserChanges { role: body.role, password: body.password };
    caller.admin(admin).update_user(&user.user_id, changes).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Disables a user (final): it can no longer log in and its sessions end at once.
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", operation_id = "disable_user",
    params(("id" = String, Path, description = "usr_…")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn disable(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let user = target(admin, &caller, &id.map_err(|_| ApiError::not_found("user"))?.0)?;
    caller.admin(admin).disable_user(&user.user_id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}
