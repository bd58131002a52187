//! Every read and admin route, path → handler. Authentication: `/v1/usage` takes a virtual key;
//! `/api/health` and `/api/auth/login` are open (health shows no tenant data; `/api/health/*` needs a
//! session); every other
//! `/api/*` route needs an admin session (`auth::require_session`), and an unknown `/api/*` path
//! is 401 without one and 404 with one, so paths cannot be probed anonymously. A known `/api/*`
//! path with a method it does not take is 405 in the API's error shape. The dashboard (`/`) needs
//! a session cookie; `/login` and `/logout` are its forms (`pages`).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};

use crate::api_error::ApiError;
use crate::{
    WebState, audit, auth, channels, health, health_keys, idempotency, keys, openapi, pages, prices, proxies, reports,
    requests, routing, usage, users,
};

/// Largest admin API request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// The read and admin routes, to be merged with the gateway's.
pub fn router(state: WebState) -> Router {
    let open = Router::new()
        .route("/api/health", get(health::health))
        .route("/v1/usage", get(usage::usage))
        .route("/", get(pages::overview));
    if state.admin().is_none() {
        return open.with_state(state);
    }
    let authenticated = Router::new()
        .route("/api/auth/logout", post(auth::logout))
        .route("/api/auth/me", get(auth::me))
        .route("/api/users", get(users::list).post(users::create))
        .route("/api/users/{id}", patch(users::update).delete(users::disable))
        .route("/api/audit", get(audit::list))
        .route("/api/api-keys", get(keys::list_keys).post(keys::create_key))
        .route("/api/api-keys/{id}", axum::routing::delete(keys::revoke_key))
        .route("/api/tenants", get(keys::list_tenants).post(keys::create_tenant))
        .route("/api/tenants/{name}", patch(keys::update_tenant))
        .route("/api/openapi.json", get(openapi::openapi_json))
        .route("/api/prices", get(prices::list).put(prices::set))
        .route("/api/reports/usage", get(reports::usage))
        .route("/api/channels", get(channels::list).post(channels::create))
        .route("/api/channels/{id}", get(channels::get_one).patch(channels::update).delete(channels::remove))
        .route("/api/channels/{id}/keys", post(channels::add_key))
        .route(
            "/api/channels/{id}/keys/{key_id}",
            axum::routing::delete(channels::remove_key).patch(channels::update_key),
        )
        .route("/api/channels/{id}/keys/{key_id}/enable", post(channels::enable_key))
        .route("/api/channels/{id}/keys/{key_id}/disable", post(channels::disable_key))
        .route("/api/routes", get(routing::list))
        .route("/api/routes/{model}", axum::routing::put(routing::set).delete(routing::remove))
        .route("/api/proxies", get(proxies::list).post(proxies::create))
        .route("/api/proxies/{id}", axum::routing::delete(proxies::remove))
        .route("/api/reports/billing", get(reports::billing))
        .route("/api/requests", get(requests::list))
        .route("/api/dashboard/stats", get(requests::stats))
        .route("/api/health/api-keys", get(health_keys::list))
        .route("/api/health/api-keys/{id}", get(health_keys::get_one))
        .route("/api/health/api-keys/{id}/check", post(health_keys::check))
        .route("/api/health/history", get(health_keys::history))
        .route("/api/health/proxies", get(crate::health_proxies::list))
        .route("/api/health/proxies/{id}/check", post(crate::health_proxies::check))
        .route("/api/{*rest}", axum::routing::any(|| async { ApiError::not_found("route") }))
        // The last layer runs first: the session, then the idempotency check (which needs the
        // caller).
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), idempotency::layer))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_session));
    open.route("/api/auth/login", post(auth::login))
        .route("/login", get(pages::login_page).post(pages::login_submit))
        .route("/logout", post(pages::logout_submit))
        .merge(authenticated)
        .layer(axum::middleware::from_fn(json_method_not_allowed))
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .with_state(state)
}

/// Replaces the router's plain 405 on an `/api/*` path with the API's JSON error, keeping the
/// `Allow` header.
async fn json_method_not_allowed(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let res = next.run(req).await;
    if !api || res.status() != StatusCode::METHOD_NOT_ALLOWED {
        return res;
    }
    let allow = res.headers().get(header::ALLOW).cloned();
    let mut out = ApiError::method_not_allowed().into_response();
    if let Some(allow) = allow {
        out.headers_mut().insert(header::ALLOW, allow);
    }
    out
}
