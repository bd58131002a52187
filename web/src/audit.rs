//! `GET /api/audit`: who changed what, when, from which address — newest first, paged by the
//! control stream sequence. A tenant-scoped caller sees its tenant's entries only.

use axum::Extension;
use axum::Json;
use axum::extract::State;
use schemas::Role;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;
use crate::query::{DEFAULT_LIMIT, MAX_LIMIT, StrictQuery, rfc3339};

/// Query: `limit` (clamped to 1..=200) and `before` (the `next_cursor` of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// Entries before this sequence.
    pub before: Option<i64>,
}

/// One audit entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    /// The control stream sequence.
    pub seq: i64,
    /// The event type (`api_key.issued`, `user.disabled`, …).
    pub action: String,
    /// The id of what changed.
    pub entity_id: Option<String>,
    /// The tenant (`_global` for shared objects).
    pub tenant: String,
    /// Who: a user id (over HTTP) or the CLI's user.
    pub actor: Option<String>,
    /// The client address, for changes made over HTTP.
    pub actor_addr: Option<String>,
    /// The producing instance (`cli` or a gateway).
    pub source: String,
    /// RFC 3339.
    pub at: String,
}

/// A page of audit entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub data: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last.
    pub next_cursor: Option<i64>,
}

/// The audit trail.
#[utoipa::path(get, path = "/api/audit", tag = "audit", operation_id = "list_audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(q): StrictQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let mut rows = projections::read::audit(state.store(), caller.user.tenant.as_deref(), q.before, limit + 1).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more { rows.last().map(|r| r.seq) } else { None };
    let data = rows
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            action: r.event_type,
            entity_id: r.entity_id,
            tenant: r.tenant,
            actor: r.actor,
            actor_addr: r.actor_addr,
            source: r.source,
            at: rfc3339(r.occurred_at_us),
        })
        .collect();
    Ok(Json(AuditPage { data, next_cursor }))
}
