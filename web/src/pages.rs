//! Dashboard pages, server-rendered with askama, only for a logged-in user. Without a valid
//! session cookie `/` sends the browser to `/login`, a form that logs in through the same code as
//! `POST /api/auth/login` (same throttle, same answer for every failure, same cookies). The
//! overview shows only what the user's tenant scope may see.

use askama::Template;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::{self, AdminState, Caller, ConnectInfoOpt};

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    instance: &'a str,
    email: &'a str,
    role: String,
    /// The one tenant the user sees; `None`: every tenant, and the global cards with it.
    scope: Option<&'a str>,
    csrf: &'a str,
    backend: &'a str,
    reachable: bool,
    spool_depth: u64,
    /// `None` while the read store is unavailable (the page is then a 503 that says so).
    tenants: Option<usize>,
    channels: Option<usize>,
}

#[derive(Template)]
#[template(path = "login.html")]
struct Login<'a> {
    error: Option<&'a str>,
}

/// The login form's fields.
#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
}

/// The logout form's field: the CSRF cookie's value, which another site cannot read.
#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

/// A rendered page that no cache keeps (it shows one user's view).
fn page(status: StatusCode, template: &impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut res = (status, Html(html)).into_response();
            res.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Err(e) => {
            tracing::error!(error = %e, "A dashboard page failed to render.");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}

/// 303 to `/login` (`Redirect::to` is a See Other, so a form post becomes a GET).
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn admin(state: &WebState) -> Option<&AdminState> {
    state.admin()
}

/// `GET /`: the overview for a logged-in user; anyone else is sent to `/login`. Without the
/// admin API there are no users, so there is no dashboard (404).
pub async fn overview(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let Some(admin) = admin(&state) else { return StatusCode::NOT_FOUND.into_response() };
    let Some(user) = auth::cookie_user(admin, &headers) else { return to_login() };
    let Some(csrf) = auth::csrf_cookie(&headers) else { return to_login() };
    let log = state.log().health().await;
    let tenants =
        projections::read::tenants(state.store()).await.map(|t| t.iter().filter(|t| user.sees(&t.name)).count()).ok();
    let channels = projections::read::channels(state.store())
        .await
        .map(|c| c.iter().filter(|c| !c.removed && user.sees(&c.tenant)).count())
        .ok();
    let store_ok = tenants.is_some() && channels.is_some();
    let view = Overview {
        instance: state.instance(),
        email: &user.email,
        role: user.role.to_string(),
        scope: user.tenant.as_deref(),
        csrf,
        backend: log.backend,
        reachable: log.reachable,
        spool_depth: log.spool_depth,
        tenants,
        channels,
    };
    if store_ok {
        return page(StatusCode::OK, &view);
    }
    // The figures come from the read store: while it is down the page says so, as a 503 that a
    // monitor sees and a browser retries.
    let mut res = page(StatusCode::SERVICE_UNAVAILABLE, &view);
    res.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    res
}

/// `GET /login`: the form (a logged-in user goes straight to `/`).
pub async fn login_page(State(state): State<WebState>, headers: HeaderMap) -> Response {
    let Some(admin) = admin(&state) else { return StatusCode::NOT_FOUND.into_response() };
    if auth::cookie_user(admin, &headers).is_some() && auth::csrf_cookie(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, &Login { error: None })
}

/// The login page again with `message`, the status and `Retry-After` of `error`.
fn failed(error: &ApiError, message: &str) -> Response {
    let mut res = page(error.status(), &Login { error: Some(message) });
    if let Some(wait) = error.retry_after()
        && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
    {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

/// `POST /login` (form-urlencoded): logs in like `POST /api/auth/login`, then 303 to `/`. A
/// failure shows the form again with one message for a wrong email or password, and the API's
/// status (401, 429 with `Retry-After`, 503).
pub async fn login_submit(
    State(state): State<WebState>,
    ConnectInfoOpt(addr): ConnectInfoOpt,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(admin) = admin(&state) else { return StatusCode::NOT_FOUND.into_response() };
    if !auth::same_origin_form(&headers) {
        return failed(&ApiError::forbidden("cross-site login"), "Log in from this site's own login page.");
    }
    let form = match serde_urlencoded::from_bytes::<LoginForm>(&body) {
        Ok(f) if is_form(&headers) => f,
        _ => {
            return failed(&ApiError::bad_request("invalid_form", "bad form"), "Enter an email and a password.");
        }
    };
    match auth::authenticate(admin, addr, &form.email, form.password).await {
        Ok(session) => {
            let mut res = Redirect::to("/").into_response();
            auth::set_session_cookies(&mut res, &headers, &session);
            res
        }
        Err(e) => {
            let message = match e.status() {
                StatusCode::UNAUTHORIZED => "Invalid email or password.",
                StatusCode::TOO_MANY_REQUESTS => "Too many failed logins; try again later.",
                _ => "Logging in is not possible right now; try again shortly.",
            };
            failed(&e, message)
        }
    }
}

/// `POST /logout` (form, with the CSRF cookie's value in `csrf`): ends every session of the
/// user, clears the cookies, 303 to `/login`. Without a valid session it only goes to `/login`.
pub async fn logout_submit(
    State(state): State<WebState>,
    ConnectInfoOpt(addr): ConnectInfoOpt,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(admin) = admin(&state) else { return StatusCode::NOT_FOUND.into_response() };
    let Some(user) = auth::cookie_user(admin, &headers) else { return to_login() };
    let sent = serde_urlencoded::from_bytes::<LogoutForm>(&body).ok();
    let csrf_matches = match (auth::csrf_cookie(&headers), sent) {
        (Some(cookie), Some(form)) => auth::same(cookie, &form.csrf),
        _ => false,
    };
    if !csrf_matches || !auth::same_origin_form(&headers) {
        return (StatusCode::FORBIDDEN, "The logout form must come from this site's own page.").into_response();
    }
    let caller = Caller { user, addr };
    if let Err(e) = auth::end_sessions(&state, admin, &caller).await {
        return e.into_response();
    }
    let mut res = to_login();
    auth::clear_session_cookies(&mut res, &headers);
    res
}
