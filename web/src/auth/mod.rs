//! Admin sessions: login, logout, and the middleware every authenticated `/api/*` route sits
//! behind. A session is a signed token (bearer header or HttpOnly cookie) naming a user; on each
//! request the user is looked up in the live control view and must exist, be enabled, and not
//! have logged out since the token was issued. Cookie-authenticated writes also need the CSRF
//! header (double submit). Password checks run on the blocking pool, a few at a time.

pub mod throttle;
pub mod token;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use schemas::Role;
use schemas::control::User;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::WebState;
use crate::api_error::ApiError;
use crate::json::StrictJson;
use crate::live::Live;

/// The session cookie (HttpOnly).
pub const SESSION_COOKIE: &str = "llmr_session";
/// The CSRF cookie, readable by the dashboard's script, echoed in [`CSRF_HEADER`].
pub const CSRF_COOKIE: &str = "llmr_csrf";
/// The header a cookie-authenticated write repeats the CSRF cookie in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// How the admin API is set up.
#[derive(Clone)]
pub struct AdminConfig {
    /// The admin operations (their actor is replaced by the caller on each write).
    pub admin: control::Admin,
    /// Opens the session secret found in the log.
    pub master: schemas::secret::MasterKey,
    /// `JWT_SECRET`: signs tokens instead of the secret in the log.
    pub jwt_secret: Option<String>,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Login throttling.
    pub throttle: throttle::Limits,
    /// The local gateway's applied control sequence: a write returns once it is in force there.
    pub gateway_applied: Option<tokio::sync::watch::Receiver<u64>>,
    /// Password checks at once (default: the cores).
    pub verify_slots: usize,
    /// Runs `POST /api/health/api-keys/{id}/check` (absent: the route answers 503).
    pub health_checks: Option<workers::health::Prober>,
}

impl AdminConfig {
    /// Defaults: 12 h sessions, the default throttle, one password check per core.
    pub fn new(admin: control::Admin, master: schemas::secret::MasterKey) -> AdminConfig {
        AdminConfig {
            admin,
            master,
            jwt_secret: None,
            session_ttl: DEFAULT_SESSION_TTL,
            throttle: throttle::Limits::default(),
            gateway_applied: None,
            verify_slots: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            health_checks: None,
        }
    }
}

/// Default session lifetime.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Logins that may wait for a password-check slot; past it a login gets 503 at once.
const MAX_WAITING: usize = 64;
/// How long a write waits for this process (and its gateway) to apply it.
const SETTLE: Duration = Duration::from_secs(5);

/// The admin API's state.
pub struct AdminState {
    pub(crate) cfg: AdminConfig,
    pub(crate) live: Arc<Live>,
    throttle: throttle::Throttle,
    slots: Semaphore,
    waiting: AtomicUsize,
    signer: std::sync::OnceLock<token::Signer>,
    pub(crate) checks: Option<crate::health_keys::Checks>,
}

impl AdminState {
    /// Starts the live view and builds the state.
    pub async fn start(cfg: AdminConfig, log: &nats::EventLog) -> AdminState {
        let live = Live::start(log, Duration::from_secs(10)).await;
        let signer = std::sync::OnceLock::new();
        if let Some(s) = &cfg.jwt_secret {
            let _ = signer.set(token::Signer::new(s.as_bytes()));
        }
        AdminState {
            throttle: throttle::Throttle::new(cfg.throttle),
            slots: Semaphore::new(cfg.verify_slots.max(1)),
            waiting: AtomicUsize::new(0),
            signer,
            checks: cfg.health_checks.clone().map(crate::health_keys::Checks::new),
            live,
            cfg,
        }
    }

    /// The token signer: `JWT_SECRET`, else the secret in the log (the first one generated).
    fn signer(&self) -> Option<&token::Signer> {
        if let Some(s) = self.signer.get() {
            return Some(s);
        }
        let snapshot = self.live.snapshot();
        let sealed = snapshot.session_secret()?;
        match self.cfg.master.open(sealed, schemas::SESSION_SECRET_CONTEXT) {
            Ok(secret) => Some(self.signer.get_or_init(|| token::Signer::new(secret.as_bytes()))),
            Err(e) => {
                tracing::error!(error = %e, "The session secret in the log cannot be opened with this master key.");
                None
            }
        }
    }

    /// Waits until this process's live view, the local gateway and the control read model hold
    /// everything the control log holds now, so the next request — a call with a new key, a
    /// list — sees what was just written. Each wait is bounded by [`SETTLE`].
    pub(crate) async fn settle(&self, log: &nats::EventLog, store: &projections::ReadStore) {
        let Ok(target) = log.last_seq(schemas::Stream::Control).await else { return };
        let deadline = tokio::time::Instant::now() + SETTLE;
        let mut live = self.live.applied();
        let _ = tokio::time::timeout_at(deadline, live.wait_for(|s| *s >= target)).await;
        if let Some(mut gw) = self.cfg.gateway_applied.clone() {
            let _ = tokio::time::timeout_at(deadline, gw.wait_for(|s| *s >= target)).await;
        }
        let control = projections::Projection::Control.name();
        while tokio::time::Instant::now() < deadline {
            let applied = projections::read::checkpoints(store)
                .await
                .ok()
                .and_then(|c| c.into_iter().find(|c| c.projection == control))
                .map_or(0, |c| c.seq);
            if applied >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(seq = target, "An admin write is not in the read model yet; it will be shortly.");
    }
}

/// The authenticated caller of an `/api/*` route.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user, as the live view had it.
    pub user: User,
    /// Where the request came from.
    pub addr: Option<IpAddr>,
}

impl Caller {
    /// The admin operations acting as this caller.
    pub fn admin(&self, state: &AdminState) -> control::Admin {
        state.cfg.admin.acting_as(&self.user.user_id, self.addr.map(|a| a.to_string()))
    }

    /// Whether the caller may see `tenant`'s objects.
    pub fn sees(&self, tenant: &str) -> bool {
        self.user.sees(tenant)
    }

    /// Refuses unless the role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.user.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("The {} role may not do this.", self.user.role)))
        }
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn client_addr(req_ext: &axum::http::Extensions) -> Option<IpAddr> {
    req_ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).map(str::trim)
}

/// Constant-time comparison of two short strings.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a session token belongs to, when the token is valid now: signed by this router,
/// not expired, its user enabled and not logged out since it was issued.
pub(crate) fn session_user(admin: &AdminState, token: &str) -> Option<User> {
    let claims = admin.signer().and_then(|s| s.verify(token, now_us() / 1_000_000))?;
    let snapshot = admin.live.snapshot();
    snapshot.user(&claims.sub).filter(|u| !u.disabled() && claims.iat_us >= u.sessions_not_before_us).cloned()
}

/// The user the request's session cookie belongs to (the dashboard's pages read only the cookie).
pub(crate) fn cookie_user(admin: &AdminState, headers: &HeaderMap) -> Option<User> {
    session_user(admin, cookie(headers, SESSION_COOKIE)?)
}

/// The request's CSRF cookie, which the dashboard's forms repeat in a hidden field.
pub(crate) fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie(headers, CSRF_COOKIE).filter(|c| !c.is_empty())
}

/// Middleware: authenticates the session and puts the [`Caller`] in the request's extensions.
pub async fn require_session(State(state): State<WebState>, mut req: Request, next: Next) -> Response {
    let Some(admin) = state.admin() else { return ApiError::not_found("route").into_response() };
    let headers = req.headers();
    let (token, via_cookie) = match bearer(headers) {
        Some(t) => (Some(t), false),
        None => (cookie(headers, SESSION_COOKIE), true),
    };
    let Some(token) = token else { return ApiError::unauthenticated().into_response() };
    let Some(user) = session_user(admin, token) else {
        return ApiError::unauthenticated().into_response();
    };
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if via_cookie && unsafe_method && !csrf_ok(headers) {
        return ApiError::csrf().into_response();
    }
    let caller = Caller { user, addr: client_addr(req.extensions()) };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// A form post of the dashboard must come from its own pages: a browser says where a request
/// comes from in `Sec-Fetch-Site` and `Origin`, and either one naming another site (or an opaque
/// `null` origin) refuses it. This guards the login form against login CSRF (another site
/// logging the browser in as its own user), where no session or CSRF cookie exists yet. A client
/// that sends neither header is not a browser acting for another site.
pub(crate) fn same_origin_form(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").map(|v| v.to_str().unwrap_or("invalid"));
    if site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host =
        origin.to_str().ok().and_then(|o| o.strip_prefix("https://").or_else(|| o.strip_prefix("http://")));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// A cookie-authenticated write must come from a same-origin page (when the browser says) and
/// repeat the CSRF cookie in the header.
fn csrf_ok(headers: &HeaderMap) -> bool {
    let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if site.is_some_and(|s| s != "same-origin") {
        return false;
    }
    match (cookie(headers, CSRF_COOKIE), headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok())) {
        (Some(c), Some(h)) => !c.is_empty() && same(c, h),
        _ => false,
    }
}

/// `POST /api/auth/login` body.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email.
    pub email: String,
    /// The password.
    pub password: String,
}

/// The user a session belongs to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionUser {
    /// `usr_…`
    pub id: String,
    /// Login email.
    pub email: String,
    /// Role.
    pub role: String,
    /// The one tenant the user sees (absent: every tenant).
    pub tenant: Option<String>,
}

impl From<&User> for SessionUser {
    fn from(u: &User) -> Self {
        SessionUser {
            id: u.user_id.clone(),
            email: u.email.clone(),
            role: u.role.to_string(),
            tenant: u.tenant.clone(),
        }
    }
}

/// `POST /api/auth/login` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// The session token, for `Authorization: Bearer`.
    pub token: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// Who logged in.
    pub user: SessionUser,
}

fn is_https(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(res: &mut Response, name: &str, value: &str, max_age: i64, http_only: bool, secure: bool) {
    let mut c = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A new session: its token, lifetime and user.
pub(crate) struct Session {
    pub(crate) token: String,
    ttl_secs: i64,
    exp: i64,
    pub(crate) user: User,
}

/// Checks an email and password and issues a session: the one login path of the API and the
/// dashboard's form. Throttled per email and address before any password is checked; a wrong
/// password, an unknown email and a disabled user get the same answer after the same work.
pub(crate) async fn authenticate(
    admin: &AdminState,
    addr: Option<IpAddr>,
    email: &str,
    password: String,
) -> Result<Session, ApiError> {
    let email = email.trim().to_lowercase();
    if email.is_empty() || email.len() > 254 || password.len() > 4 * schemas::password::MAX_LEN {
        return Err(ApiError::bad_credentials());
    }
    if let Some(wait) = admin.throttle.check(&email, addr) {
        return Err(ApiError::throttled(wait));
    }
    let signer =
        admin.signer().ok_or_else(|| ApiError::unavailable("no_session_secret", "Sessions are not set up yet."))?;
    let user = admin.live.snapshot().user_by_email(&email).cloned();
    let ok = verify(admin, password, user.as_ref().map(|u| u.password_hash.clone())).await?;
    let user = match user {
        Some(u) if ok && !u.disabled() => u,
        _ => {
            admin.throttle.failed(&email, addr);
            return Err(ApiError::bad_credentials());
        }
    };
    admin.throttle.succeeded(&email);
    let now = now_us();
    let ttl_secs = i64::try_from(admin.cfg.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let claims =
        token::Claims { sub: user.user_id.clone(), iat: now / 1_000_000, exp: now / 1_000_000 + ttl_secs, iat_us: now };
    let token = signer.sign(&claims);
    tracing::info!(user = %user.user_id, "Admin login.");
    Ok(Session { token, ttl_secs, exp: claims.exp, user })
}

/// Sets the session cookie (HttpOnly) and a fresh CSRF cookie on `res`.
pub(crate) fn set_session_cookies(res: &mut Response, headers: &HeaderMap, session: &Session) {
    let secure = is_https(headers);
    set_cookie(res, SESSION_COOKIE, &session.token, session.ttl_secs, true, secure);
    set_cookie(res, CSRF_COOKIE, &schemas::keys::random_token(), session.ttl_secs, false, secure);
}

/// Clears both session cookies on `res`.
pub(crate) fn clear_session_cookies(res: &mut Response, headers: &HeaderMap) {
    let secure = is_https(headers);
    set_cookie(res, SESSION_COOKIE, "", 0, true, secure);
    set_cookie(res, CSRF_COOKIE, "", 0, false, secure);
}

/// Logs in: a token in the body, the same token in an HttpOnly cookie, and a CSRF cookie.
#[utoipa::path(post, path = "/api/auth/login", request_body = LoginRequest, tag = "auth", security(()),
    responses((status = 200, body = LoginResponse), (status = 401), (status = 429)))]
pub async fn login(
    State(state): State<WebState>,
    ConnectInfoOpt(addr): ConnectInfoOpt,
    headers: HeaderMap,
    StrictJson(body): StrictJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    let session = authenticate(admin, addr, &body.email, body.password).await?;
    let expires_at = chrono::DateTime::from_timestamp(session.exp, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let mut res =
        Json(LoginResponse { token: session.token.clone(), expires_at, user: SessionUser::from(&session.user) })
            .into_response();
    set_session_cookies(&mut res, &headers, &session);
    Ok(res)
}

/// Checks a password on the blocking pool, a bounded number at a time. An unknown user is
/// checked against the dummy hash, so the answer takes as long either way.
async fn verify(admin: &AdminState, password: String, hash: Option<String>) -> Result<bool, ApiError> {
    if admin.waiting.fetch_add(1, Ordering::AcqRel) >= MAX_WAITING {
        admin.waiting.fetch_sub(1, Ordering::AcqRel);
        return Err(ApiError::unavailable("login_busy", "Too many logins at once; try again in a second."));
    }
    let permit = admin.slots.acquire().await;
    admin.waiting.fetch_sub(1, Ordering::AcqRel);
    let Ok(_permit) = permit else { return Err(ApiError::unavailable("login_busy", "Logins are shutting down.")) };
    let checked = tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| schemas::password::dummy_hash());
        schemas::password::verify(&password, hash)
    })
    .await;
    checked.map_err(|_| ApiError::unavailable("login_busy", "The password check failed to run."))
}

/// Logs out: every token of the caller stops working (on every gateway), and the cookies are
/// cleared.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", responses((status = 204), (status = 401)))]
pub async fn logout(
    State(state): State<WebState>,
    axum::Extension(caller): axum::Extension<Caller>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let admin = state.admin().ok_or_else(|| ApiError::not_found("route"))?;
    end_sessions(&state, admin, &caller).await?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    clear_session_cookies(&mut res, &headers);
    Ok(res)
}

/// Ends every session of the caller (on every gateway) and waits until that is in force here.
pub(crate) async fn end_sessions(state: &WebState, admin: &AdminState, caller: &Caller) -> Result<(), ApiError> {
    caller.admin(admin).revoke_sessions(&caller.user.user_id).await?;
    admin.settle(state.log(), state.store()).await;
    Ok(())
}

/// Who the session belongs to.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth", responses((status = 200, body = SessionUser), (status = 401)))]
pub async fn me(axum::Extension(caller): axum::Extension<Caller>) -> Json<SessionUser> {
    Json(SessionUser::from(&caller.user))
}

/// The client address when the server recorded one (`ConnectInfo`), without failing when not.
pub struct ConnectInfoOpt(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ConnectInfoOpt {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ConnectInfoOpt(client_addr(&parts.extensions)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_header_must_repeat_the_cookie_from_the_same_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=b; llmr_csrf=tok123; llmr_session=s"));
        assert!(!csrf_ok(&h), "no header");
        h.insert(CSRF_HEADER, HeaderValue::from_static("tok124"));
        assert!(!csrf_ok(&h), "wrong value");
        h.insert(CSRF_HEADER, HeaderValue::from_static("tok123"));
        assert!(csrf_ok(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!csrf_ok(&h), "another site");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(csrf_ok(&h));
    }

    #[test]
    fn a_login_form_from_another_site_is_refused() {
        let mut h = HeaderMap::new();
        assert!(same_origin_form(&h), "no browser headers");
        h.insert(header::HOST, HeaderValue::from_static("router.example:8080"));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://router.example:8080"));
        assert!(same_origin_form(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin_form(&h), "another origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin_form(&h), "an opaque origin");
        h.insert(header::ORIGIN, HeaderValue::from_static("http://router.example:8080"));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin_form(&h), "another site");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(!same_origin_form(&h), "a sibling subdomain");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin_form(&h));
    }
}
