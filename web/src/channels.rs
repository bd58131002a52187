//! `/api/channels`: the same operations as `channels add|update|remove|list` and `channels keys
//! add|remove|enable|disable` (the `control` crate: presets, the egress policy on base URLs,
//! `insecure_http`, `anthropic_beta`). Upstream credentials are write-only: a channel shows
//! `key_set` and, per key, its id, fingerprint and state — never the key. Listings come from the
//! admin API's live view of the control log, which holds the keys' states as the gateway sees
//! them. Channels carry a tenant; the control operations add global ones, so a tenant-scoped
//! user sees none of them (404) and cannot write them.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use schemas::Role;
use schemas::control::Channel;
use serde::{Deserialize, Serialize};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{AdminState, Caller};
use crate::json::StrictJson;
use crate::query::{Page, StrictQuery, rfc3339};

fn admin(state: &WebState) -> Result<&AdminState, ApiError> {
    state.admin().ok_or_else(|| ApiError::not_found("route"))
}

/// One upstream key of a channel: never the key itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UpstreamKeyView {
    /// `ukey_…`
    pub id: String,
    /// `sha256:…` of the key (`-` for a keyless channel's slot).
    pub fingerprint: String,
    /// `active`, `disabled`, `cooling_down` or `open`.
    pub state: String,
    /// Why, when not active (`admin` for a manual disable).
    pub reason: Option<String>,
    /// RFC 3339: the end of a cool-down or open breaker.
    pub until: Option<String>,
    /// Disabled by an admin (stays out of rotation until enabled).
    pub manual: bool,
    /// The balance under which health reports it `degraded` (decimal, the vendor's currency).
    pub low_balance_threshold: Option<String>,
}

/// A channel as listed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelView {
    /// `ch_…`
    pub id: String,
    /// Unique name.
    pub name: String,
    /// The owning tenant; absent for a global channel.
    pub tenant: Option<String>,
    /// Provider preset.
    pub provider: String,
    /// Base URL.
    pub base_url: String,
    /// Models served.
    pub models: Vec<String>,
    /// Higher is tried first.
    pub priority: i32,
    /// Share among equal priorities.
    pub weight: u32,
    /// A disabled channel serves nothing.
    pub enabled: bool,
    /// `api-version` (Azure).
    pub api_version: Option<String>,
    /// `anthropic-beta` values clients may switch on.
    pub anthropic_beta: Vec<String>,
    /// Whether the channel holds at least one upstream key.
    pub key_set: bool,
    /// Its upstream keys in the order they were added.
    pub keys: Vec<UpstreamKeyView>,
    /// The proxy pool its calls go through (`/api/proxies`); absent: direct.
    pub proxy_pool: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A page of channels.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChannelList {
    /// In id (creation) order.
    pub data: Vec<ChannelView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

fn view(ch: &Channel, master: &schemas::secret::MasterKey) -> ChannelView {
    let keys = control::key_views(ch, Some(master))
        .into_iter()
        .map(|k| UpstreamKeyView {
            id: k.key_id,
            fingerprint: k.fingerprint,
            state: k.state.to_owned(),
            reason: k.reason,
            until: k.until_us.map(rfc3339),
            manual: k.manual,
            low_balance_threshold: k.low_balance_nanos.map(schemas::format_nanos),
        })
        .collect();
    ChannelView {
        id: ch.channel_id.clone(),
        name: ch.name.clone(),
        tenant: (ch.tenant != schemas::GLOBAL_TENANT).then(|| ch.tenant.clone()),
        provider: ch.provider.clone(),
        base_url: ch.base_url.clone(),
        models: ch.models.clone(),
        priority: ch.priority,
        weight: ch.weight,
        enabled: ch.enabled,
        api_version: ch.api_version.clone(),
        anthropic_beta: ch.anthropic_beta.clone(),
        key_set: ch.keys.iter().any(|k| k.sealed.is_some()),
        keys,
        proxy_pool: ch.proxy_pool.clone(),
        created_at: rfc3339(ch.created_at_us),
        updated_at: rfc3339(ch.updated_at_us),
    }
}

/// Whether `id` can name a channel at all (malformed ids are "not found" without a lookup).
fn channel_id(id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::not_found("channel"))?;
    if !id.starts_with("ch_") || id.len() > 64 {
        return Err(ApiError::not_found("channel"));
    }
    Ok(id)
}

/// The channel `id` as the caller may see it, or "not found".
fn visible(admin: &AdminState, caller: &Caller, id: &str) -> Result<ChannelView, ApiError> {
    let snapshot = admin.live.snapshot();
    snapshot
        .channel(id)
        .filter(|ch| caller.sees(&ch.tenant))
        .map(|ch| view(ch, &admin.cfg.master))
        .ok_or_else(|| ApiError::not_found("channel"))
}

/// Refuses writes by anyone but unscoped owners and admins: channels are shared by every tenant.
fn require_writer(caller: &Caller) -> Result<(), ApiError> {
    caller.require(&[Role::Owner, Role::Admin])?;
    if caller.user.tenant.is_some() {
        return Err(ApiError::forbidden(
            "Channels are shared by every tenant; a tenant-scoped user cannot change them.",
        ));
    }
    Ok(())
}

/// Lists channels (a tenant-scoped caller sees its tenant's alone).
#[utoipa::path(get, path = "/api/channels", tag = "channels", operation_id = "list_channels", params(Page),
    responses((status = 200, body = ChannelList), (status = 401), (status = 403)))]
pub async fn list(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictQuery(page): StrictQuery<Page>,
) -> Result<Json<ChannelList>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let limit = page.limit() as usize;
    let after = page.after.unwrap_or_default();
    let snapshot = admin.live.snapshot();
    let mut data: Vec<ChannelView> = snapshot
        .channels()
        .filter(|ch| caller.sees(&ch.tenant) && ch.channel_id > after)
        .take(limit + 1)
        .map(|ch| view(ch, &admin.cfg.master))
        .collect();
    let more = data.len() > limit;
    data.truncate(limit);
    let next_cursor = if more { data.last().map(|c| c.id.clone()) } else { None };
    Ok(Json(ChannelList { data, next_cursor }))
}

/// One channel.
#[utoipa::path(get, path = "/api/channels/{id}", tag = "channels", operation_id = "get_channel",
    params(("id" = String, Path, description = "ch_…")),
    responses((status = 200, body = ChannelView), (status = 403), (status = 404)))]
pub async fn get_one(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ChannelView>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin, Role::Viewer])?;
    let id = channel_id(id)?;
    Ok(Json(visible(admin, &caller, &id)?))
}

/// The longest name, base URL, `api-version` and model name accepted, and the most models.
const MAX_NAME: usize = 128;
const MAX_URL: usize = 2048;
const MAX_VERSION: usize = 64;
const MAX_MODEL: usize = 256;
const MAX_MODELS: usize = 256;
/// The longest upstream key accepted (provider keys are well under 1 KiB).
const MAX_API_KEY: usize = 4096;

fn check_len(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    if value.is_some_and(|v| v.len() > max) {
        return Err(ApiError::unprocessable("invalid_value", format!("{field}: at most {max} bytes")));
    }
    Ok(())
}

fn check_models(models: Option<&[String]>) -> Result<(), ApiError> {
    if models.is_some_and(|m| m.len() > MAX_MODELS || m.iter().any(|x| x.len() > MAX_MODEL)) {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("models: at most {MAX_MODELS} names of at most {MAX_MODEL} bytes"),
        ));
    }
    Ok(())
}

/// `POST /api/channels` body. `api_key` is write-only.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannel {
    /// Unique name.
    pub name: String,
    /// Provider preset (`openai`, `anthropic`, `azure`, …).
    pub provider: String,
    /// Base URL (default: the provider's); checked against the outbound-address policy.
    pub base_url: Option<String>,
    /// `api-version` (Azure; default: the provider's).
    pub api_version: Option<String>,
    /// The upstream API key (write-only: never returned).
    pub api_key: Option<String>,
    /// Several upstream API keys, rotated across (write-only; at most 64 with `api_key`). More can
    /// be added later through `/api/channels/{id}/keys`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// Models served (at least one).
    pub models: Vec<String>,
    /// Higher is tried first (default 0).
    pub priority: Option<i32>,
    /// Share among equal priorities (default 1, not 0).
    pub weight: Option<u32>,
    /// Allow plain `http://` to a public host.
    #[serde(default)]
    pub insecure_http: bool,
    /// `anthropic-beta` values clients may switch on through the channel.
    #[serde(default)]
    pub anthropic_beta: Vec<String>,
    /// The proxy pool its calls go through; it must hold a proxy (else 422 `unknown_pool`).
    pub proxy_pool: Option<String>,
}

/// Adds a channel (owners and unscoped admins).
#[utoipa::path(post, path = "/api/channels", tag = "channels", operation_id = "create_channel",
    request_body = CreateChannel,
    responses((status = 201, body = ChannelView), (status = 403), (status = 409), (status = 422)))]
pub async fn create(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    StrictJson(body): StrictJson<CreateChannel>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    require_writer(&caller)?;
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::unprocessable("invalid_value", format!("name: 1 to {MAX_NAME} characters")));
    }
    check_len("base_url", body.base_url.as_deref(), MAX_URL)?;
    check_len("api_version", body.api_version.as_deref(), MAX_VERSION)?;
    check_len("api_key", body.api_key.as_deref(), MAX_API_KEY)?;
    for k in &body.api_keys {
        check_len("api_keys", Some(k), MAX_API_KEY)?;
    }
    if body.api_keys.len() > control::MAX_KEYS_PER_CHANNEL {
        return Err(ApiError::unprocessable(
            "invalid_value",
            format!("api_keys: at most {} keys", control::MAX_KEYS_PER_CHANNEL),
        ));
    }
    check_len("provider", Some(&body.provider), MAX_MODEL)?;
    check_len("proxy_pool", body.proxy_pool.as_deref(), MAX_NAME)?;
    check_models(Some(&body.models))?;
    let c = control::NewChannel {
        name,
        provider: body.provider,
        base_url: body.base_url,
        api_version: body.api_version,
        api_keys: body.api_key.into_iter().chain(body.api_keys).collect(),
        models: body.models,
        priority: body.priority.unwrap_or(0),
        weight: body.weight.unwrap_or(1),
        insecure_http: body.insecure_http,
        anthropic_beta: body.anthropic_beta,
        proxy_pool: body.proxy_pool,
    };
    let id = caller.admin(admin).add_channel(&admin.cfg.master, c).await?.channel_id;
    admin.settle(state.log(), state.store()).await;
    let view = visible(admin, &caller, &id)
        .map_err(|_| ApiError::unavailable("live_view_lagging", "The channel was added; the list shows it shortly."))?;
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// `PATCH /api/channels/{id}` body: only the fields given change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannel {
    /// New unique name.
    pub name: Option<String>,
    /// New base URL (checked against the outbound-address policy).
    pub base_url: Option<String>,
    /// Allow plain `http://` to a public host for the new `base_url`.
    #[serde(default)]
    pub insecure_http: bool,
    /// Replaces the channel's first upstream key (write-only).
    pub api_key: Option<String>,
    /// New model list.
    pub models: Option<Vec<String>>,
    /// New priority.
    pub priority: Option<i32>,
    /// New weight (not 0).
    pub weight: Option<u32>,
    /// Enable or disable the channel.
    pub enabled: Option<bool>,
    /// New `api-version` (Azure).
    pub api_version: Option<String>,
    /// New `anthropic-beta` allow list (empty clears it).
    pub anthropic_beta: Option<Vec<String>>,
    /// A proxy pool holding a proxy (else 422 `unknown_pool`), or `null` to send the channel
    /// direct again; absent keeps the current one.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub proxy_pool: Option<Option<String>>,
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`, through `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Changes a channel (owners and unscoped admins).
#[utoipa::path(patch, path = "/api/channels/{id}", tag = "channels", operation_id = "update_channel",
    params(("id" = String, Path, description = "ch_…")), request_body = UpdateChannel,
    responses((status = 200, body = ChannelView), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn update(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<UpdateChannel>,
) -> Result<Json<ChannelView>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let id = channel_id(id)?;
    visible(admin, &caller, &id)?;
    require_writer(&caller)?;
    if let Some(n) = &body.name
        && (n.trim().is_empty() || n.chars().count() > MAX_NAME || n.chars().any(char::is_control))
    {
        return Err(ApiError::unprocessable("invalid_value", format!("name: 1 to {MAX_NAME} characters")));
    }
    check_len("base_url", body.base_url.as_deref(), MAX_URL)?;
    check_len("api_version", body.api_version.as_deref(), MAX_VERSION)?;
    check_len("api_key", body.api_key.as_deref(), MAX_API_KEY)?;
    check_models(body.models.as_deref())?;
    let changes = control::ChannelChanges {
        name: body.name,
        base_url: body.base_url,
        api_key: body.api_key.map(|k| k.trim().to_owned()),
        models: body.models,
        priority: body.priority,
        weight: body.weight,
        api_version: body.api_version,
        insecure_http: body.insecure_http,
        anthropic_beta: body.anthropic_beta,
        enabled: body.enabled,
        // The control operation takes "" for "direct"; a pool named "" is refused here, not
        // taken for a removal.
        proxy_pool: match body.proxy_pool {
            None => None,
            Some(None) => Some(String::new()),
            Some(Some(p)) if p.trim().is_empty() || p.len() > MAX_NAME => {
                return Err(ApiError::unprocessable("invalid_value", "proxy_pool: a pool's name, or null"));
            }
            Some(Some(p)) => Some(p),
        },
    };
    caller.admin(admin).update_channel(&admin.cfg.master, &id, changes).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(Json(visible(admin, &caller, &id)?))
}

/// Removes a channel (owners and unscoped admins).
#[utoipa::path(delete, path = "/api/channels/{id}", tag = "channels", operation_id = "remove_channel",
    params(("id" = String, Path, description = "ch_…")),
    responses((status = 204), (status = 403), (status = 404)))]
pub async fn remove(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let id = channel_id(id)?;
    visible(admin, &caller, &id)?;
    require_writer(&caller)?;
    caller.admin(admin).remove_channel(&id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/channels/{id}/keys` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddKey {
    /// The upstream API key (write-only).
    pub api_key: String,
}

/// Adds an upstream key to a channel; answers with the channel (the new key last).
#[utoipa::path(post, path = "/api/channels/{id}/keys", tag = "channels", operation_id = "add_channel_key",
    params(("id" = String, Path, description = "ch_…")), request_body = AddKey,
    responses((status = 201, body = ChannelView), (status = 403), (status = 404), (status = 409), (status = 422)))]
pub async fn add_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    id: Result<Path<String>, PathRejection>,
    StrictJson(body): StrictJson<AddKey>,
) -> Result<Response, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let id = channel_id(id)?;
    visible(admin, &caller, &id)?;
    require_writer(&caller)?;
    check_len("api_key", Some(&body.api_key), MAX_API_KEY)?;
    caller.admin(admin).add_key(&admin.cfg.master, &id, &body.api_key).await?;
    admin.settle(state.log(), state.store()).await;
    Ok((StatusCode::CREATED, Json(visible(admin, &caller, &id)?)).into_response())
}

/// The channel and key ids of a key path, or "not found" for malformed ones.
fn key_path(p: Result<Path<(String, String)>, PathRejection>) -> Result<(String, String), ApiError> {
    let Path((id, key_id)) = p.map_err(|_| ApiError::not_found("channel"))?;
    let id = channel_id(Ok(Path(id)))?;
    if !key_id.starts_with("ukey_") || key_id.len() > 64 {
        return Err(ApiError::not_found("upstream key"));
    }
    Ok((id, key_id))
}

/// Removes an upstream key (the channel's only key stays: 409).
#[utoipa::path(delete, path = "/api/channels/{id}/keys/{key_id}", tag = "channels",
    operation_id = "remove_channel_key",
    params(("id" = String, Path, description = "ch_…"), ("key_id" = String, Path, description = "ukey_…")),
    responses((status = 204), (status = 403), (status = 404), (status = 409)))]
pub async fn remove_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let (id, key_id) = key_path(p)?;
    visible(admin, &caller, &id)?;
    require_writer(&caller)?;
    caller.admin(admin).remove_key(&id, &key_id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_key_enabled(
    state: &WebState,
    caller: &Caller,
    p: Result<Path<(String, String)>, PathRejection>,
    enabled: bool,
) -> Result<Json<ChannelView>, ApiError> {
    let admin = admin(state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let (id, key_id) = key_path(p)?;
    visible(admin, caller, &id)?;
    require_writer(caller)?;
    caller.admin(admin).set_key_enabled(&id, &key_id, enabled).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(Json(visible(admin, caller, &id)?))
}

/// `PATCH /api/channels/{id}/keys/{key_id}` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// The balance under which health reports the key `degraded` (`low_balance`): a decimal
    /// string in the currency its vendor reports (`"5"`, `"2.50"`), or `null` to clear it.
    #[schema(value_type = Option<String>)]
    pub low_balance_threshold: serde_json::Value,
}

/// Sets an upstream key's low-balance threshold, as `channels keys low-balance`.
#[utoipa::path(patch, path = "/api/channels/{id}/keys/{key_id}", tag = "channels",
    operation_id = "update_channel_key",
    params(("id" = String, Path, description = "ch_…"), ("key_id" = String, Path, description = "ukey_…")),
    request_body = UpdateKey,
    responses((status = 200, body = ChannelView), (status = 403), (status = 404), (status = 422)))]
pub async fn update_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<(String, String)>, PathRejection>,
    StrictJson(body): StrictJson<UpdateKey>,
) -> Result<Json<ChannelView>, ApiError> {
    let admin = admin(&state)?;
    caller.require(&[Role::Owner, Role::Admin])?;
    let (id, key_id) = key_path(p)?;
    visible(admin, &caller, &id)?;
    require_writer(&caller)?;
    let bad =
        || ApiError::unprocessable("invalid_value", "low_balance_threshold: a non-negative decimal string or null");
    let amount = match &body.low_balance_threshold {
        serde_json::Value::Null => None,
        serde_json::Value::String(a) if a.len() <= 32 && schemas::parse_per_mtok(a).is_ok() => Some(a.as_str()),
        _ => return Err(bad()),
    };
    caller.admin(admin).set_key_low_balance(&id, &key_id, amount).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(Json(visible(admin, &caller, &id)?))
}

/// Puts an upstream key back in rotation (clears a manual or automatic disable, a cool-down
/// or an open breaker).
#[utoipa::path(post, path = "/api/channels/{id}/keys/{key_id}/enable", tag = "channels",
    operation_id = "enable_channel_key",
    params(("id" = String, Path, description = "ch_…"), ("key_id" = String, Path, description = "ukey_…")),
    responses((status = 200, body = ChannelView), (status = 403), (status = 404), (status = 409)))]
pub async fn enable_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ChannelView>, ApiError> {
    set_key_enabled(&state, &caller, p, true).await
}

/// Takes an upstream key out of rotation until an admin enables it.
#[utoipa::path(post, path = "/api/channels/{id}/keys/{key_id}/disable", tag = "channels",
    operation_id = "disable_channel_key",
    params(("id" = String, Path, description = "ch_…"), ("key_id" = String, Path, description = "ukey_…")),
    responses((status = 200, body = ChannelView), (status = 403), (status = 404), (status = 409)))]
pub async fn disable_key(
    State(state): State<WebState>,
    Extension(caller): Extension<Caller>,
    p: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ChannelView>, ApiError> {
    set_key_enabled(&state, &caller, p, false).await
}
