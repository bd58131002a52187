//! The admin API through the real binary: users from the CLI and the API, login, sessions,
//! revocation on every gateway, roles, tenant isolation, CSRF, throttling.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Backend, Env, Serve};

impl Serve {
    /// The first-start owner's password, printed once on stdout.
    pub fn admin_password(&self) -> Option<String> {
        let lines = self.stdout.lock().ok()?;
        let at = lines.iter().position(|l| l.contains("created owner admin@localhost"))?;
        lines.get(at + 1).cloned()
    }

    /// [`Serve::admin_password`], waiting up to 5 s for the stdout reader to catch up (the
    /// process is healthy before a loaded test machine has read its output).
    pub async fn wait_admin_password(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(p) = self.admin_password() {
                return Some(p);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Logs in; returns (status, body, set-cookie headers).
async fn login(env: &Env, base: &str, email: &str, password: &str) -> anyhow::Result<(StatusCode, Value, Vec<String>)> {
    let r = env
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?;
    let status = r.status();
    let cookies = r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
    Ok((status, r.json().await.unwrap_or_default(), cookies))
}

pub(crate) async fn token(env: &Env, base: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let (status, body, _) = login(env, base, email, password).await?;
    ensure!(status == 200, "login of {email}: {status} {body}");
    body["token"].as_str().map(str::to_owned).context("no token")
}

pub(crate) async fn call(
    env: &Env,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> anyhow::Result<(StatusCode, Value)> {
    let mut req = env.http.request(method.parse()?, url).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status();
    Ok((status, r.json().await.unwrap_or_default()))
}

/// Waits until `token` gets 401 from `base`, at most `within`.
async fn refused_within(env: &Env, base: &str, token: &str, within: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let (status, _) = call(env, "GET", &format!("{base}/api/auth/me"), token, None).await?;
        if status == 401 {
            return Ok(start.elapsed());
        }
        ensure!(start.elapsed() < within, "token still accepted after {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli_password(out: &str) -> anyhow::Result<String> {
    out.lines().last().map(str::to_owned).filter(|p| p.len() == 24).context(format!("no password in {out}"))
}

/// First start prints the owner's password; it logs in (token, RFC 3339 expiry, HttpOnly
/// SameSite=Strict cookie); a wrong password and an unknown email get the same 401; users made
/// with the CLI log in; `users disable` and logout end sessions at once.
async fn users_log_in_and_lose_their_sessions_when_disabled_or_logged_out(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    let base = serve.base.clone();
    let password = serve.wait_admin_password().await.context("no owner password printed")?;
    ensure!(!serve.log().contains(&password), "the password must never be logged");

    let (status, body, cookies) = login(&env, &base, "Admin@Localhost", &password).await?;
    ensure!(status == 200, "{status} {body}");
    let expires = body["expires_at"].as_str().unwrap_or_default();
    ensure!(chrono::DateTime::parse_from_rfc3339(expires).is_ok(), "expires_at {expires:?}");
    let session = cookies.iter().find(|c| c.starts_with("llmr_session=")).context("no session cookie")?;
    ensure!(
        session.contains("HttpOnly") && session.contains("SameSite=Strict") && !session.contains("Secure"),
        "{session}"
    );
    let owner = body["token"].as_str().unwrap_or_default().to_owned();
    let (status, me) = call(&env, "GET", &format!("{base}/api/auth/me"), &owner, None).await?;
    ensure!(status == 200 && me["role"] == "owner" && me["email"] == "admin@localhost", "{status} {me}");

    let (s1, wrong, _) = login(&env, &base, "admin@localhost", "not-the-password").await?;
    let (s2, unknown, _) = login(&env, &base, "nobody@localhost", "not-the-password").await?;
    ensure!(s1 == 401 && s2 == 401 && wrong == unknown, "{s1} {wrong} / {s2} {unknown}");
    ensure!(wrong["error"]["code"] == "invalid_credentials" && wrong["error"]["type"] == "authentication_error");

    env.cli(&["tenants", "create", "acme"])?;
    let out = env.cli(&["users", "create", "--email", "ops@acme.example", "--role", "admin", "--tenant", "acme"])?;
    let ops_password = cli_password(&out)?;
    let ops = token(&env, &base, "ops@acme.example", &ops_password).await?;
    let list = env.cli(&["users", "list"])?;
    ensure!(
        list.contains("admin@localhost\towner\t*\tactive") && list.contains("ops@acme.example\tadmin\tacme\tactive"),
        "{list}"
    );
    let err = env.cli_fails(&["users", "create", "--email", "OPS@acme.example", "--role", "viewer"])?;
    ensure!(err.contains("exists"), "{err}");

    env.cli(&["users", "disable", "ops@acme.example"])?;
    refused_within(&env, &base, &ops, Duration::from_secs(1)).await?;
    let (status, _, _) = login(&env, &base, "ops@acme.example", &ops_password).await?;
    ensure!(status == 401, "a disabled user logs in: {status}");

    let (status, _) = call(&env, "POST", &format!("{base}/api/auth/logout"), &owner, None).await?;
    ensure!(status == 204, "logout {status}");
    refused_within(&env, &base, &owner, Duration::from_secs(1)).await?;
    let again = token(&env, &base, "admin@localhost", &password).await?;
    let (status, _) = call(&env, "GET", &format!("{base}/api/auth/me"), &again, None).await?;
    ensure!(status == 200, "a new login after logout works: {status}");
    Ok(())
}

#[tokio::test]
async fn users_log_in_and_lose_their_sessions_when_disabled_or_logged_out_embedded() -> anyhow::Result<()> {
    users_log_in_and_lose_their_sessions_when_disabled_or_logged_out(Backend::Embedded).await
}

#[tokio::test]
async fn users_log_in_and_lose_their_sessions_when_disabled_or_logged_out_cluster() -> anyhow::Result<()> {
    users_log_in_and_lose_their_sessions_when_disabled_or_logged_out(Backend::Cluster).await
}

/// How many times two owners race to disable each other: once may not overlap; without the
/// compare-and-append, some round lets both through.
const OWNER_RACE_ROUNDS: usize = 8;

/// The last two enabled owners disable each other at the same instant, round after round:
/// exactly one request succeeds, the other gets 409 `last_owner`, and one owner stays enabled
/// and working.
async fn two_owners_disabling_each_other_at_once_leave_one_owner(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let mut survivor = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let (status, me) = call(&env, "GET", &format!("{base}/api/auth/me"), &survivor, None).await?;
    ensure!(status == 200, "{status} {me}");
    let mut survivor_id = me["id"].as_str().context("the first owner's id")?.to_owned();
    for round in 0..OWNER_RACE_ROUNDS {
        let email = format!("owner{round}@example.com");
        let body = json!({"email": email, "role": "owner", "password": "another-owner-password"});
        let (status, created) = call(&env, "POST", &format!("{base}/api/users"), &survivor, Some(body)).await?;
        ensure!(status == 201, "{status} {created}");
        let other_id = created["id"].as_str().context("id")?.to_owned();
        let other = token(&env, &base, &email, "another-owner-password").await?;
        let (other_url, survivor_url) =
            (format!("{base}/api/users/{other_id}"), format!("{base}/api/users/{survivor_id}"));
        let (a, b) = tokio::join!(
            call(&env, "DELETE", &other_url, &survivor, None),
            call(&env, "DELETE", &survivor_url, &other, None),
        );
        let (a, b) = (a?, b?);
        let succeeded = [a.0, b.0].iter().filter(|s| **s == StatusCode::NO_CONTENT).count();
        ensure!(succeeded == 1, "{backend:?} round {round}: {} {} / {} {}", a.0, a.1, b.0, b.1);
        let refused = if a.0 == StatusCode::NO_CONTENT { &b } else { &a };
        ensure!(refused.0 == 409 && refused.1["error"]["code"] == "last_owner", "{} {}", refused.0, refused.1);
        if b.0 == StatusCode::NO_CONTENT {
            (survivor, survivor_id) = (other, other_id);
        }
    }
    let (status, users) = call(&env, "GET", &format!("{base}/api/users?limit=200"), &survivor, None).await?;
    ensure!(status == 200, "the surviving owner still works: {status}");
    let owners: Vec<&Value> = users["data"]
        .as_array()
        .context("users")?
        .iter()
        .filter(|u| u["role"] == "owner" && u["disabled_at"].is_null())
        .collect();
    ensure!(owners.len() == 1 && owners[0]["id"] == survivor_id.as_str(), "{backend:?}: {owners:?}");
    Ok(())
}

#[tokio::test]
async fn two_owners_disabling_each_other_at_once_leave_one_owner_embedded() -> anyhow::Result<()> {
    two_owners_disabling_each_other_at_once_leave_one_owner(Backend::Embedded).await
}

#[tokio::test]
async fn two_owners_disabling_each_other_at_once_leave_one_owner_cluster() -> anyhow::Result<()> {
    two_owners_disabling_each_other_at_once_leave_one_owner(Backend::Cluster).await
}

/// Each role against each endpoint, and tenant isolation both ways: a tenant admin sees and
/// changes only its tenant's users; another tenant's user is 404 to it, never 403.
async fn roles_and_tenants_decide_what_each_user_may_do(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    ensure!(
        serve.admin_password().is_none_or(|l| !l.contains("owner-password-123")),
        "the given password is not printed"
    );
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    for t in ["acme", "beta"] {
        env.cli(&["tenants", "create", t])?;
    }
    let mut tokens = vec![("owner", owner.clone())];
    let mut ids = std::collections::BTreeMap::new();
    for (name, role, tenant) in [
        ("admin", "admin", None),
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("acme-admin", "admin", Some("acme")),
        ("beta-admin", "admin", Some("beta")),
        ("acme-viewer", "viewer", Some("acme")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let (status, created) = call(&env, "POST", &format!("{base}/api/users"), &owner, Some(body)).await?;
        ensure!(status == 201, "create {name}: {status} {created}");
        let password = created["password"].as_str().context("a generated password is returned once")?;
        ids.insert(name, created["id"].as_str().unwrap_or_default().to_owned());
        tokens.push((name, token(&env, &base, &format!("{name}@x.example"), password).await?));
    }
    let token_of = |n: &str| tokens.iter().find(|(k, _)| *k == n).map(|(_, t)| t.clone()).unwrap_or_default();

    // (caller, method, path, body) → status.
    let new_viewer = |tenant: Option<&str>| json!({"email": format!("n{}@x.example", rand_suffix()), "role": "viewer", "tenant": tenant});
    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("owner", "GET", "/api/users".into(), None, 200),
        ("admin", "GET", "/api/users".into(), None, 200),
        ("viewer", "GET", "/api/users".into(), None, 200),
        ("billing", "GET", "/api/users".into(), None, 403),
        ("acme-admin", "GET", "/api/users".into(), None, 200),
        ("viewer", "POST", "/api/users".into(), Some(new_viewer(None)), 403),
        ("billing", "POST", "/api/users".into(), Some(new_viewer(None)), 403),
        ("admin", "POST", "/api/users".into(), Some(json!({"email": "o2@x.example", "role": "owner"})), 403),
        ("admin", "POST", "/api/users".into(), Some(new_viewer(Some("beta"))), 201),
        ("acme-admin", "POST", "/api/users".into(), Some(new_viewer(None)), 201),
        ("acme-admin", "POST", "/api/users".into(), Some(new_viewer(Some("beta"))), 404),
        ("beta-admin", "POST", "/api/users".into(), Some(new_viewer(Some("acme"))), 404),
        ("acme-admin", "PATCH", format!("/api/users/{}", ids["beta-admin"]), Some(json!({"role": "viewer"})), 404),
        ("beta-admin", "DELETE", format!("/api/users/{}", ids["acme-viewer"]), None, 404),
        ("acme-admin", "DELETE", format!("/api/users/{}", ids["viewer"]), None, 404),
        ("admin", "PATCH", format!("/api/users/{}", ids["viewer"]), Some(json!({"role": "owner"})), 403),
        ("viewer", "DELETE", format!("/api/users/{}", ids["acme-viewer"]), None, 403),
        ("admin", "PATCH", format!("/api/users/{}", ids["acme-viewer"]), Some(json!({"role": "billing"})), 204),
        ("acme-admin", "DELETE", format!("/api/users/{}", ids["acme-viewer"]), None, 204),
        ("admin", "DELETE", "/api/users/usr_nope".into(), None, 404),
        ("admin", "DELETE", "/api/users/%00%ff".into(), None, 404),
        ("admin", "GET", "/api/nothing-here".into(), None, 404),
        ("viewer", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": 2})), 403),
        ("billing", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": 2})), 403),
        ("acme-admin", "PATCH", "/api/tenants/beta".into(), Some(json!({"max_n": 2})), 404),
        ("acme-admin", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": 2})), 403),
        ("admin", "PATCH", "/api/tenants/nope".into(), Some(json!({"max_n": 2})), 404),
        ("admin", "PATCH", "/api/tenants/Not%20A%20Slug".into(), Some(json!({"max_n": 2})), 404),
        ("owner", "PATCH", "/api/tenants/acme".into(), Some(json!({})), 422),
        ("owner", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": 129})), 422),
        ("owner", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": "2"})), 422),
        ("admin", "PATCH", "/api/tenants/acme".into(), Some(json!({"max_n": 2, "time_zone": "Asia/Shanghai"})), 200),
        (
            "owner",
            "POST",
            "/api/users".into(),
            Some(json!({"email": "x@y.example", "role": "viewer", "colour": "red"})),
            422,
        ),
        ("owner", "POST", "/api/users".into(), Some(json!({"email": "x@y.example", "role": "emperor"})), 422),
        ("owner", "POST", "/api/users".into(), Some(json!({"email": "admin@localhost", "role": "viewer"})), 409),
        ("owner", "GET", "/api/users?limit=5&colour=red".into(), None, 400),
    ];
    for (who, method, path, body, want) in cases {
        let (status, answer) = call(&env, method, &format!("{base}{path}"), &token_of(who), body).await?;
        ensure!(status.as_u16() == want, "{who} {method} {path}: {status} {answer}, want {want}");
        if status.as_u16() >= 400 {
            ensure!(answer["error"]["code"].is_string() && answer["error"]["type"].is_string(), "{answer}");
        }
        if want == 422 && answer.to_string().contains("colour") {
            ensure!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("colour")), "{answer}");
        }
    }
    // Tenant admins list only their own tenant's users; nobody's password or hash is listed.
    for (who, tenant) in [("acme-admin", "acme"), ("beta-admin", "beta")] {
        let (_, list) = call(&env, "GET", &format!("{base}/api/users?limit=500"), &token_of(who), None).await?;
        let users = list["data"].as_array().context("data")?;
        ensure!(!users.is_empty() && users.iter().all(|u| u["tenant"] == tenant), "{who}: {list}");
        ensure!(!list.to_string().contains("argon2") && !list.to_string().contains("password"), "{list}");
    }
    // Cursor paging: pages of 2 cover every user once, in id order.
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let q = if after.is_empty() { "limit=2".to_owned() } else { format!("limit=2&after={after}") };
        let (_, page) = call(&env, "GET", &format!("{base}/api/users?{q}"), &owner, None).await?;
        seen.extend(page["data"].as_array().into_iter().flatten().filter_map(|u| u["id"].as_str().map(str::to_owned)));
        match page["next_cursor"].as_str() {
            Some(c) => after = c.to_owned(),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    ensure!(seen == sorted && seen.len() == 9, "owner, six users, two viewers made by admins: {seen:?}");
    // A disabled user's session is gone at once.
    let (status, _) = call(&env, "GET", &format!("{base}/api/auth/me"), &token_of("acme-viewer"), None).await?;
    ensure!(status == 401, "disabled user: {status}");
    Ok(())
}

fn rand_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

#[tokio::test]
async fn roles_and_tenants_decide_what_each_user_may_do_embedded() -> anyhow::Result<()> {
    roles_and_tenants_decide_what_each_user_may_do(Backend::Embedded).await
}

#[tokio::test]
async fn roles_and_tenants_decide_what_each_user_may_do_cluster() -> anyhow::Result<()> {
    roles_and_tenants_decide_what_each_user_may_do(Backend::Cluster).await
}

/// A write with the session cookie needs the CSRF header from the same origin; a bearer token
/// does not. Without a session every `/api/*` path but health and login is 401.
#[tokio::test]
async fn cookie_writes_need_the_csrf_header_and_anonymous_calls_are_refused() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    for path in ["/api/users", "/api/auth/me", "/api/anything"] {
        let status = env.http.get(format!("{base}{path}")).send().await?.status();
        ensure!(status == 401, "{path} without a session: {status}");
    }
    ensure!(env.http.get(format!("{base}/api/health")).send().await?.status() == 200);
    let (_, _, cookies) = login(&env, &base, "admin@localhost", "owner-password-123").await?;
    let value = |name: &str| {
        cookies
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .and_then(|c| c.split(';').next())
            .unwrap_or_default()
            .to_owned()
    };
    let (session, csrf) = (value("llmr_session"), value("llmr_csrf"));
    ensure!(!session.is_empty() && !csrf.is_empty(), "{cookies:?}");
    let jar = format!("llmr_session={session}; llmr_csrf={csrf}");
    let post = |csrf_header: Option<&str>, site: Option<&str>| {
        let mut r = env
            .http
            .post(format!("{base}/api/users"))
            .header("cookie", &jar)
            .json(&json!({"email": format!("c{}@x.example", rand_suffix()), "role": "viewer"}));
        if let Some(h) = csrf_header {
            r = r.header("x-csrf-token", h);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        r.send()
    };
    let r = post(None, None).await?;
    ensure!(r.status() == 403, "no header: {}", r.status());
    let body: Value = r.json().await?;
    ensure!(body["error"]["code"] == "csrf_failed", "{body}");
    ensure!(post(Some("wrong"), None).await?.status() == 403);
    ensure!(post(Some(&csrf), Some("cross-site")).await?.status() == 403);
    ensure!(post(Some(&csrf), Some("same-origin")).await?.status() == 201);
    // Reads with the cookie need no header.
    let r = env.http.get(format!("{base}/api/auth/me")).header("cookie", &jar).send().await?;
    ensure!(r.status() == 200, "{}", r.status());
    Ok(())
}

/// Repeated failures for one email are refused with 429 and Retry-After before any password is
/// checked; an unknown email's failure takes about as long as a known one's.
#[tokio::test]
async fn failed_logins_are_throttled_and_take_as_long_for_unknown_emails() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let timed = |email: &'static str| {
        let (env, base) = (&env, base.clone());
        async move {
            let start = Instant::now();
            let (status, _, _) = login(env, &base, email, "wrong-password-1").await?;
            anyhow::Ok((status, start.elapsed()))
        }
    };
    let mut known = Duration::ZERO;
    let mut unknown = Duration::ZERO;
    for _ in 0..4 {
        let (s, d) = timed("admin@localhost").await?;
        ensure!(s == 401);
        known += d;
        let (s, d) = timed("ghost@localhost").await?;
        ensure!(s == 401);
        unknown += d;
    }
    let ratio = known.as_secs_f64() / unknown.as_secs_f64();
    ensure!((0.5..2.0).contains(&ratio), "known {known:?} vs unknown {unknown:?}");
    let _ = timed("admin@localhost").await?;
    let r = env
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": "owner-password-123"}))
        .send()
        .await?;
    ensure!(r.status() == 429, "the sixth try, even with the right password: {}", r.status());
    let retry: u64 =
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
    ensure!((1..=900).contains(&retry), "Retry-After {retry}");
    // Another email from the same address is still let through (the address limit is higher).
    let (status, _, _) = login(&env, &base, "someone@localhost", "wrong-password-1").await?;
    ensure!(status == 401, "{status}");
    Ok(())
}

/// Sessions expire after `LLM_ROUTER_SESSION_TTL`.
#[tokio::test]
async fn a_session_expires_after_its_lifetime() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env
        .serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123"), ("LLM_ROUTER_SESSION_TTL", "2")])
        .await?;
    let t = token(&env, &serve.base, "admin@localhost", "owner-password-123").await?;
    let (status, _) = call(&env, "GET", &format!("{}/api/auth/me", serve.base), &t, None).await?;
    ensure!(status == 200);
    refused_within(&env, &serve.base, &t, Duration::from_secs(4)).await?;
    Ok(())
}

/// In a cluster, a token from one gateway works on another (the session secret travels in the
/// log), and a user disabled through one stops working on the other within a second.
#[tokio::test]
async fn a_disabled_users_token_stops_working_on_every_gateway_within_a_second() -> anyhow::Result<()> {
    let env = Env::new(Backend::Cluster).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let master = std::fs::read_to_string(env.data.path().join("master.key"))?;
    let dir = tempfile::tempdir()?;
    let other = env
        .http_service(
            "gateway",
            &[("LLM_ROUTER_MASTER_KEY", master.trim())],
            &["--data-dir", dir.path().to_str().unwrap_or_default()],
        )
        .await?;
    let owner = token(&env, &serve.base, "admin@localhost", "owner-password-123").await?;
    let (status, created) = call(
        &env,
        "POST",
        &format!("{}/api/users", other.base),
        &owner,
        Some(json!({"email": "v@x.example", "role": "viewer"})),
    )
    .await?;
    ensure!(status == 201, "a token from the first gateway works on the second: {status} {created}");
    let viewer = token(&env, &other.base, "v@x.example", created["password"].as_str().unwrap_or_default()).await?;
    for base in [&serve.base, &other.base] {
        let (status, _) = call(&env, "GET", &format!("{base}/api/auth/me"), &viewer, None).await?;
        ensure!(status == 200, "{base}: {status}");
    }
    let (status, _) = call(
        &env,
        "DELETE",
        &format!("{}/api/users/{}", serve.base, created["id"].as_str().unwrap_or_default()),
        &owner,
        None,
    )
    .await?;
    ensure!(status == 204, "{status}");
    for base in [&serve.base, &other.base] {
        refused_within(&env, base, &viewer, Duration::from_secs(1)).await?;
    }
    Ok(())
}

/// Tenants and keys over the API: a key issued over HTTP works on the first request after the
/// answer and is listed by prefix only; revoking it ends it; a tenant-scoped admin sees only its
/// tenant's keys (another's is 404); and every write is in the audit trail with the acting user
/// and its address (CLI writes with source `cli`).
async fn keys_and_tenants_over_http_are_audited(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    env.add_fake_channel()?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let me = call(&env, "GET", &format!("{base}/api/auth/me"), &owner, None).await?.1;
    let owner_id = me["id"].as_str().unwrap_or_default().to_owned();
    for t in ["acme", "beta"] {
        let (status, body) =
            call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(json!({"name": t}))).await?;
        ensure!(status == 201, "{status} {body}");
    }
    let (status, _) = call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(json!({"name": "acme"}))).await?;
    ensure!(status == 409, "a second acme: {status}");
    // Display names in any script beside the ASCII slug; time zones by IANA name.
    let east = json!({"name": "east", "display_name": "华东分公司", "time_zone": "Asia/Shanghai"});
    let (status, body) = call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(east)).await?;
    ensure!(
        status == 201 && body["display_name"] == "华东分公司" && body["time_zone"] == "Asia/Shanghai",
        "{status} {body}"
    );
    let bad_zone = json!({"name": "west", "time_zone": "Mars/Olympus"});
    let (status, body) = call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(bad_zone)).await?;
    ensure!(status == 422 && body.to_string().contains("Mars/Olympus"), "{status} {body}");
    let (status, _) =
        call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(json!({"name": "华东分公司"}))).await?;
    ensure!(status == 422, "a slug stays ASCII: {status}");
    env.cli(&["tenants", "create", "north", "--display-name", "华北分公司", "--time-zone", "Asia/Shanghai"])?;
    let listed = env.cli(&["tenants", "list"])?;
    ensure!(listed.contains("north\t华北分公司\tAsia/Shanghai") && listed.contains("acme"), "{listed}");
    let err = env.cli_fails(&["tenants", "create", "south", "--time-zone", "Nowhere/Town"])?;
    ensure!(err.contains("unknown time zone"), "{err}");
    let (status, _) =
        call(&env, "POST", &format!("{base}/api/tenants"), &owner, Some(json!({"name": "Not A Slug"}))).await?;
    ensure!(status == 422, "{status}");

    let (status, issued) =
        call(&env, "POST", &format!("{base}/api/api-keys"), &owner, Some(json!({"tenant": "acme", "name": "ci"})))
            .await?;
    ensure!(status == 201, "{status} {issued}");
    let key = issued["key"].as_str().unwrap_or_default().to_owned();
    ensure!(key.starts_with(issued["prefix"].as_str().unwrap_or("?")) && issued["tenant"] == "acme", "{issued}");
    let (status, body) = env.chat(&serve, &key, false).await?;
    ensure!(status == 200, "a key issued over HTTP on its first request: {status} {body}");
    let (_, beta_key) =
        call(&env, "POST", &format!("{base}/api/api-keys"), &owner, Some(json!({"tenant": "beta"}))).await?;
    let (status, _) =
        call(&env, "POST", &format!("{base}/api/api-keys"), &owner, Some(json!({"tenant": "nope"}))).await?;
    ensure!(status == 404, "a key for an unknown tenant: {status}");

    let (_, list) = call(&env, "GET", &format!("{base}/api/api-keys"), &owner, None).await?;
    ensure!(
        list["data"].as_array().map(Vec::len) == Some(3) && !list.to_string().contains(&key),
        "the first-start key and two: {list}"
    );

    let created = call(
        &env,
        "POST",
        &format!("{base}/api/users"),
        &owner,
        Some(json!({"email": "t@acme.example", "role": "admin", "tenant": "acme", "password": "tenant-password-1"})),
    )
    .await?;
    ensure!(created.0 == 201, "{created:?}");
    let acme = token(&env, &base, "t@acme.example", "tenant-password-1").await?;
    let (_, mine) = call(&env, "GET", &format!("{base}/api/api-keys"), &acme, None).await?;
    ensure!(mine["data"].as_array().is_some_and(|d| d.len() == 1 && d[0]["tenant"] == "acme"), "{mine}");
    let (status, _) = call(&env, "GET", &format!("{base}/api/api-keys?tenant=beta"), &acme, None).await?;
    ensure!(status == 404, "another tenant's keys: {status}");
    let beta_id = beta_key["id"].as_str().unwrap_or_default();
    let (status, _) = call(&env, "DELETE", &format!("{base}/api/api-keys/{beta_id}"), &acme, None).await?;
    ensure!(status == 404, "another tenant's key: {status}");
    let (_, tenants) = call(&env, "GET", &format!("{base}/api/tenants"), &acme, None).await?;
    ensure!(tenants["data"].as_array().is_some_and(|d| d.len() == 1 && d[0]["name"] == "acme"), "{tenants}");
    let (status, _) = call(&env, "POST", &format!("{base}/api/tenants"), &acme, Some(json!({"name": "gamma"}))).await?;
    ensure!(status == 403, "{status}");

    let acme_id = issued["id"].as_str().unwrap_or_default();
    let (status, _) = call(&env, "DELETE", &format!("{base}/api/api-keys/{acme_id}"), &acme, None).await?;
    ensure!(status == 204, "{status}");
    let (status, _) = env.chat(&serve, &key, false).await?;
    ensure!(status == 401, "a revoked key on the next request: {status}");
    let (status, _) = call(&env, "DELETE", &format!("{base}/api/api-keys/{acme_id}"), &owner, None).await?;
    ensure!(status == 409, "{status}");

    // Prices: published over HTTP, in force for the next call, listed with exact nanos.
    let price = json!({"model": crate::helpers::MODEL, "input": "9", "output": "9.5"});
    let (status, set) = call(&env, "PUT", &format!("{base}/api/prices"), &owner, Some(price.clone())).await?;
    ensure!(status == 200, "{status} {set}");
    let version = set["version"].as_str().unwrap_or_default().to_owned();
    let (status, _) = call(&env, "PUT", &format!("{base}/api/prices"), &acme, Some(price)).await?;
    ensure!(status == 403, "a tenant admin sets shared prices: {status}");
    let bad = json!({"model": "m", "input": "nine", "output": "1"});
    ensure!(call(&env, "PUT", &format!("{base}/api/prices"), &owner, Some(bad)).await?.0 == 422);
    let no_channel = json!({"model": "m", "channel": "nope", "input": "1", "output": "1"});
    ensure!(call(&env, "PUT", &format!("{base}/api/prices"), &owner, Some(no_channel)).await?.0 == 404);
    let (_, prices) = call(&env, "GET", &format!("{base}/api/prices?limit=200"), &acme, None).await?;
    let row = prices["data"].as_array().into_iter().flatten().find(|p| p["version"] == version.as_str()).cloned();
    ensure!(
        row.as_ref().is_some_and(|r| r["nanos"]
            == json!([9_000_000_000_i64, 9_500_000_000_i64, 9_000_000_000_i64, 9_000_000_000_i64])
            && r["output"] == "9.500000000"),
        "{prices}"
    );
    let (_, second) =
        call(&env, "POST", &format!("{base}/api/api-keys"), &owner, Some(json!({"tenant": "acme"}))).await?;
    let r = env
        .http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(second["key"].as_str().unwrap_or_default())
        .json(&json!({"model": crate::helpers::MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    let request_id = r.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    ensure!(r.status() == 200, "{}", r.status());
    let rows = env.ledger_rows(&request_id).await?;
    ensure!(
        rows.len() == 1 && rows[0].price_version.as_deref() == Some(version.as_str()),
        "charged {rows:?}, set {version}"
    );

    env.cli(&["tenants", "create", "from-cli"])?;
    // The CLI waits for the gateway, not the read model: wait for its entry to be projected.
    let deadline = Instant::now() + Duration::from_secs(10);
    let audit = loop {
        let (_, audit) = call(&env, "GET", &format!("{base}/api/audit?limit=200"), &owner, None).await?;
        if audit.to_string().contains("from-cli") {
            break audit;
        }
        ensure!(Instant::now() < deadline, "the CLI's change never reached the audit trail: {audit}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let entries = audit["data"].as_array().context("data")?;
    let find = |action: &str, entity: &str| {
        entries.iter().find(|e| e["action"] == action && e["entity_id"] == entity).cloned().unwrap_or_default()
    };
    for (action, entity, actor) in [
        ("tenant.created", "acme", owner_id.as_str()),
        ("api_key.issued", acme_id, owner_id.as_str()),
        ("api_key.revoked", acme_id, created.1["id"].as_str().unwrap_or("?")),
        ("price.published", crate::helpers::MODEL, owner_id.as_str()),
    ] {
        let e = find(action, entity);
        ensure!(e["actor"] == actor && e["actor_addr"] == "127.0.0.1", "{action} {entity}: {e} in {audit}");
    }
    let cli = find("tenant.created", "from-cli");
    ensure!(cli["source"] == "cli" && cli["actor_addr"].is_null(), "{cli}");
    let seqs: Vec<i64> = entries.iter().filter_map(|e| e["seq"].as_i64()).collect();
    ensure!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    let (_, acme_audit) = call(&env, "GET", &format!("{base}/api/audit"), &acme, None).await?;
    ensure!(
        acme_audit["data"].as_array().is_some_and(|d| !d.is_empty() && d.iter().all(|e| e["tenant"] == "acme")),
        "{acme_audit}"
    );
    Ok(())
}

#[tokio::test]
async fn keys_and_tenants_over_http_are_audited_embedded() -> anyhow::Result<()> {
    keys_and_tenants_over_http_are_audited(Backend::Embedded).await
}

#[tokio::test]
async fn keys_and_tenants_over_http_are_audited_cluster() -> anyhow::Result<()> {
    keys_and_tenants_over_http_are_audited(Backend::Cluster).await
}

/// `GET /api/openapi.json` (behind a session like every `/api` route) is a valid OpenAPI 3.1
/// document by `openapi-spec-validator`, and names the session routes.
#[tokio::test]
async fn the_openapi_document_is_valid_and_lists_the_routes() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let url = format!("{}/api/openapi.json", serve.base);
    ensure!(env.http.get(&url).send().await?.status() == 401);
    let owner = token(&env, &serve.base, "admin@localhost", "owner-password-123").await?;
    let (status, doc) = call(&env, "GET", &url, &owner, None).await?;
    ensure!(status == 200 && doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{status} {doc}");
    for path in ["/api/auth/login", "/api/users/{id}", "/api/api-keys", "/api/audit", "/api/tenants"] {
        ensure!(doc["paths"][path].is_object(), "{path} missing");
    }
    let file = env.data.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec(&doc)?)?;
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))",
        ])
        .arg(&file)
        .output()?;
    ensure!(out.status.success(), "the document is not valid OpenAPI: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// A POST retried with the same `Idempotency-Key` returns the first answer and appends no second
/// event; the same key with another body is 422.
#[tokio::test]
async fn a_retried_post_with_an_idempotency_key_returns_the_first_answer() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    env.cli(&["tenants", "create", "acme"])?;
    let post = |body: Value| {
        env.http
            .post(format!("{base}/api/api-keys"))
            .bearer_auth(&owner)
            .header("idempotency-key", "retry-1")
            .json(&body)
            .send()
    };
    let first = post(json!({"tenant": "acme", "name": "once"})).await?;
    ensure!(first.status() == 201);
    let first: Value = first.json().await?;
    let again = post(json!({"tenant": "acme", "name": "once"})).await?;
    ensure!(again.status() == 201 && again.headers().get("idempotent-replayed").is_some());
    let again: Value = again.json().await?;
    ensure!(again == first, "{again} != {first}");
    let other = post(json!({"tenant": "acme", "name": "twice"})).await?;
    ensure!(other.status() == 422, "{}", other.status());
    let (_, list) = call(&env, "GET", &format!("{base}/api/api-keys?tenant=acme"), &owner, None).await?;
    ensure!(list["data"].as_array().map(Vec::len) == Some(1), "one key, not two: {list}");
    let (_, audit) = call(&env, "GET", &format!("{base}/api/audit?limit=200"), &owner, None).await?;
    let issued = audit["data"].as_array().into_iter().flatten().filter(|e| e["action"] == "api_key.issued").count();
    ensure!(issued == 2, "the first-start key and one more: {audit}");
    Ok(())
}

/// In a cluster the kept answers are shared: a retry sent to another gateway replays the first
/// answer (the key is issued once), another body is 422 there too, and the stored answer is
/// sealed (the new key is not in the database in plain text).
#[tokio::test]
async fn a_retry_to_another_gateway_replays_the_first_answer() -> anyhow::Result<()> {
    use sqlx::{Connection as _, Row as _};
    let env = Env::new(Backend::Cluster).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let master = std::fs::read_to_string(env.data.path().join("master.key"))?;
    let dir = tempfile::tempdir()?;
    let other = env
        .http_service(
            "gateway",
            &[("LLM_ROUTER_MASTER_KEY", master.trim())],
            &["--data-dir", dir.path().to_str().unwrap_or_default()],
        )
        .await?;
    let owner = token(&env, &serve.base, "admin@localhost", "owner-password-123").await?;
    env.cli(&["tenants", "create", "acme"])?;
    let post = |base: &str, body: Value| {
        env.http
            .post(format!("{base}/api/api-keys"))
            .bearer_auth(&owner)
            .header("idempotency-key", "cluster-retry-1")
            .json(&body)
            .send()
    };
    let first = post(&serve.base, json!({"tenant": "acme", "name": "label-once"})).await?;
    ensure!(first.status() == 201, "{}", first.status());
    let first: Value = first.json().await?;
    let again = post(&other.base, json!({"tenant": "acme", "name": "label-once"})).await?;
    ensure!(again.status() == 201 && again.headers().get("idempotent-replayed").is_some(), "{}", again.status());
    let again: Value = again.json().await?;
    ensure!(again == first, "{again} != {first}");
    let other_body = post(&other.base, json!({"tenant": "acme", "name": "twice"})).await?;
    ensure!(other_body.status() == 422, "{}", other_body.status());
    let (_, list) = call(&env, "GET", &format!("{}/api/api-keys?tenant=acme", other.base), &owner, None).await?;
    ensure!(list["data"].as_array().map(Vec::len) == Some(1), "one key, not two: {list}");

    let key = first["key"].as_str().context("the key")?;
    let db = env.db.as_ref().context("a database")?;
    let mut conn = sqlx::PgConnection::connect(db.url()).await?;
    let rows = sqlx::query("SELECT sealed_body FROM idempotency").fetch_all(&mut conn).await?;
    ensure!(rows.len() == 1, "{} rows", rows.len());
    let stored: String = rows[0].try_get("sealed_body")?;
    ensure!(!stored.contains(key) && !stored.contains("label-once"), "the answer is stored sealed");
    Ok(())
}

/// `GET /api/reports/usage` gives the CLI's report byte for byte (CSV and JSON), with a BOM on
/// request, `X-As-Of-Seq`, the same bytes again at that `as_of`, and tenant isolation.
#[tokio::test]
async fn the_usage_report_over_http_matches_the_clis() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    env.add_fake_channel()?;
    let key = env.tenant_key("acme")?;
    env.cli(&["tenants", "create", "beta"])?;
    ensure!(env.chat(&serve, &key, false).await?.0 == 200);
    env.wait_for_usage(&serve, &key, 1).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let today = chrono::Utc::now().date_naive();
    let (from, to) = ((today - chrono::Days::new(3)).to_string(), (today + chrono::Days::new(1)).to_string());
    let cli = env.cli(&["reports", "usage", "--tenant", "acme", "--from", &from, "--to", &to, "--format", "csv"])?;
    let get = |q: String, accept: Option<&str>| {
        let mut r = env.http.get(format!("{base}/api/reports/usage?{q}")).bearer_auth(&owner);
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };
    let r = get(format!("tenant=acme&from={from}&to={to}&format=csv"), None).await?;
    ensure!(r.status() == 200);
    let as_of = r.headers().get("x-as-of-seq").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let csv = r.text().await?;
    ensure!(csv == cli && csv.contains("\r\n") && csv.contains(crate::helpers::MODEL), "{csv}\n!=\n{cli}");
    let r = get(format!("tenant=acme&from={from}&to={to}&bom=true"), Some("text/csv")).await?;
    let bytes = r.bytes().await?;
    ensure!(bytes.starts_with(&[0xEF, 0xBB, 0xBF]) && bytes[3..] == *cli.as_bytes(), "BOM + the same CSV");
    let r = get(format!("tenant=acme&from={from}&to={to}&as_of={as_of}&format=csv"), None).await?;
    ensure!(r.text().await? == cli, "the same bytes at the same as_of");
    let json: Value = get(format!("tenant=acme&from={from}&to={to}"), None).await?.json().await?;
    ensure!(
        json["as_of_seq"].as_u64().map(|s| s.to_string()).as_deref() == Some(as_of.as_str())
            && json["tenant"] == "acme",
        "{json}"
    );
    for (q, want) in [
        (format!("tenant=acme&from={from}&to={to}&colour=red"), 400),
        (format!("tenant=acme&from={to}&to={from}"), 400),
        (format!("tenant=acme&from={from}&to={to}&group_by=year"), 400),
        (format!("tenant=nope&from={from}&to={to}"), 404),
        (format!("tenant=acme&from=2026-02-30&to={to}"), 400),
    ] {
        let status = get(q.clone(), None).await?.status();
        ensure!(status == want, "{q}: {status}, want {want}");
    }
    let (_, created) = call(&env, "POST", &format!("{base}/api/users"), &owner, Some(json!({"email": "money@beta.example", "role": "billing", "tenant": "beta", "password": "billing-password-1"}))).await?;
    ensure!(created["id"].is_string(), "{created}");
    let billing = token(&env, &base, "money@beta.example", "billing-password-1").await?;
    let url = format!("{base}/api/reports/usage?tenant=acme&from={from}&to={to}");
    ensure!(call(&env, "GET", &url, &billing, None).await?.0 == 404, "another tenant's report");
    let own = format!("{base}/api/reports/usage?from={from}&to={to}");
    let (status, body) = call(&env, "GET", &own, &billing, None).await?;
    ensure!(status == 200 && body["tenant"] == "beta", "{status} {body}");
    Ok(())
}

/// `group_by=day|week|month|model|key` in the tenant's time zone: the API and the CLI give the
/// same bytes, rows fall on the tenant's local day and ISO week, every grouping totals the same
/// requests and nanos, and a bad grouping is a 400. The billing report over the same usage.
async fn usage_report_groupings_follow_the_tenants_zone(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    env.add_fake_channel()?;
    env.cli(&["tenants", "create", "east", "--display-name", "华东分公司", "--time-zone", "Asia/Shanghai"])?;
    let out = env.cli(&["keys", "create", "--tenant", "east", "--name", "test"])?;
    let key = out.lines().last().map(str::to_owned).filter(|k| k.starts_with("sk-")).context("no key")?;
    env.wait_for_model(&serve, &key, crate::helpers::MODEL).await?;
    for _ in 0..2 {
        ensure!(env.chat(&serve, &key, false).await?.0 == 200);
    }
    env.wait_for_usage(&serve, &key, 2).await?;
    let shanghai = (chrono::Utc::now() + chrono::Duration::hours(8)).date_naive();
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let (from, to) = ((shanghai - chrono::Days::new(40)).to_string(), (shanghai + chrono::Days::new(1)).to_string());
    let mut totals = Vec::new();
    for group_by in ["day", "week", "month", "model", "key"] {
        let url = format!("{base}/api/reports/usage?tenant=east&from={from}&to={to}&group_by={group_by}&format=csv");
        let r = env.http.get(url).bearer_auth(&owner).send().await?;
        ensure!(r.status() == 200, "{group_by}: {}", r.status());
        let as_of = r.headers().get("x-as-of-seq").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let csv = r.text().await?;
        let args = ["reports", "usage", "--tenant", "east", "--from", &from, "--to", &to, "--group-by", group_by];
        let cli = env.cli(&[&args[..], &["--as-of", &as_of]].concat())?;
        ensure!(csv == cli, "{group_by}: API\n{csv}\n!= CLI\n{cli}");
        let lines: Vec<&str> = csv.split("\r\n").collect();
        let header = if group_by == "model" { "model,currency," } else { &format!("{group_by},model,currency,") };
        ensure!(lines[0].starts_with(header), "{group_by}: {csv}");
        let label = match group_by {
            "day" => shanghai.to_string(),
            "week" => {
                use chrono::Datelike as _;
                format!("{}-W{:02}", shanghai.iso_week().year(), shanghai.iso_week().week())
            }
            "month" => shanghai.format("%Y-%m").to_string(),
            "model" => crate::helpers::MODEL.to_owned(),
            _ => "key_".to_owned(),
        };
        ensure!(lines.get(1).is_some_and(|l| l.starts_with(&label)), "{group_by}: want {label}: {csv}");
        let total = lines.iter().find(|l| l.starts_with("total,")).map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols[cols.len() - 7].to_owned(), cols[cols.len() - 1].to_owned())
        });
        totals.push(total.context("no totals row")?);
    }
    ensure!(totals.iter().all(|t| *t == totals[0] && t.0 == "2"), "every grouping, the same totals: {totals:?}");
    let json: Value = env
        .http
        .get(format!("{base}/api/reports/usage?tenant=east&from={from}&to={to}&group_by=week"))
        .bearer_auth(&owner)
        .send()
        .await?
        .json()
        .await?;
    ensure!(json["group_by"] == "week" && json["time_zone"] == "Asia/Shanghai", "{json}");
    ensure!(json["rows"][0]["week"].as_str().is_some_and(|w| w.contains("-W")) && json["rows"][0]["day"].is_null());
    let bad = format!("{base}/api/reports/usage?tenant=east&from={from}&to={to}&group_by=hour");
    ensure!(call(&env, "GET", &bad, &owner, None).await?.0 == 400);

    // The billing report: every tenant for the owner, the display name beside the slug, the
    // same requests and nanos as the usage report, the same bytes at its as_of.
    env.cli(&["tenants", "create", "west", "--display-name", "West, \"Ltd\""])?;
    let billing_url = |q: &str| format!("{base}/api/reports/billing?from={from}&to={to}{q}");
    let (status, all) = call(&env, "GET", &billing_url("&period=week"), &owner, None).await?;
    ensure!(status == 200 && all["period"] == "week", "{status} {all}");
    let rows = all["rows"].as_array().context("rows")?;
    ensure!(
        rows.iter()
            .any(|r| r["tenant"] == "east" && r["display_name"] == "华东分公司" && r["time_zone"] == "Asia/Shanghai"),
        "{all}"
    );
    let east: Vec<&Value> = rows.iter().filter(|r| r["tenant"] == "east").collect();
    let requests: i64 = east.iter().filter_map(|r| r["requests"].as_i64()).sum();
    let nanos: i64 = east.iter().filter_map(|r| r["cost_nanos"].as_i64()).sum();
    let usage: Value = env
        .http
        .get(format!("{base}/api/reports/usage?tenant=east&from={from}&to={to}&group_by=model"))
        .bearer_auth(&owner)
        .send()
        .await?
        .json()
        .await?;
    let usage_cost = usage["totals"][0]["cost"].as_str().unwrap_or_default().replace('.', "");
    ensure!(requests == 2 && usage_cost.trim_start_matches('0') == nanos.to_string(), "{all}\n{usage}");
    let r = env.http.get(billing_url("&format=csv&bom=true")).bearer_auth(&owner).send().await?;
    let as_of = r.headers().get("x-as-of-seq").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let csv = r.bytes().await?;
    ensure!(csv.starts_with(&[0xEF, 0xBB, 0xBF]), "BOM");
    let text = String::from_utf8(csv[3..].to_vec())?;
    ensure!(text.starts_with("tenant,display_name,") && text.contains("\r\neast,华东分公司,Asia/Shanghai,"), "{text}");
    let again =
        env.http.get(billing_url(&format!("&format=csv&bom=true&as_of={as_of}"))).bearer_auth(&owner).send().await?;
    ensure!(again.bytes().await? == csv, "the same bytes at the same as_of");
    // Without a tenant the report is paged by tenant name: one tenant a page here, each once,
    // in order, the cursor in the body and the header, and together the whole report's rows.
    let mut paged: Vec<Value> = Vec::new();
    let mut pages = 0;
    let mut after = String::new();
    loop {
        let r = env.http.get(billing_url(&format!("&period=week&limit=1{after}"))).bearer_auth(&owner).send().await?;
        let header = r.headers().get("x-next-cursor").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let page: Value = r.json().await?;
        let rows = page["rows"].as_array().context("rows")?;
        let names: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r["tenant"].as_str()).collect();
        ensure!(names.len() <= 1, "one tenant a page: {page}");
        ensure!(header.as_deref() == page["next_cursor"].as_str(), "{header:?} {page}");
        paged.extend(rows.iter().cloned());
        pages += 1;
        ensure!(pages < 50, "the pages end");
        match page["next_cursor"].as_str() {
            Some(c) => after = format!("&after={c}"),
            None => break,
        }
    }
    ensure!(pages > 1 && &paged == all["rows"].as_array().context("rows")?, "paged {paged:?} != {all}");
    let cli = env.cli(&["reports", "billing", "--from", &from, "--to", &to, "--bom", "--as-of", &as_of])?;
    ensure!(cli.as_bytes() == &csv[..], "the CLI's billing report, byte for byte:\n{cli}\n{text}");
    for (q, want) in [("&period=year", 400), ("&tenant=nope", 404), ("&colour=red", 400), ("&as_of=999999999", 409)] {
        let status = call(&env, "GET", &billing_url(q), &owner, None).await?.0;
        ensure!(status == want, "{q}: {status}, want {want}");
    }
    // Roles: a viewer may not; a billing user of one tenant sees only that tenant.
    for (email, role, tenant) in [("v@x.example", "viewer", None), ("b@east.example", "billing", Some("west"))] {
        let body = json!({"email": email, "role": role, "tenant": tenant, "password": "long-enough-password"});
        ensure!(call(&env, "POST", &format!("{base}/api/users"), &owner, Some(body)).await?.0 == 201);
    }
    let viewer = token(&env, &base, "v@x.example", "long-enough-password").await?;
    ensure!(call(&env, "GET", &billing_url(""), &viewer, None).await?.0 == 403, "a viewer reads billing");
    let west = token(&env, &base, "b@east.example", "long-enough-password").await?;
    ensure!(call(&env, "GET", &billing_url("&tenant=east"), &west, None).await?.0 == 404, "another tenant's bill");
    let (status, own) = call(&env, "GET", &billing_url(""), &west, None).await?;
    ensure!(status == 200 && own["rows"].as_array().is_some_and(Vec::is_empty), "{status} {own}");
    Ok(())
}

#[tokio::test]
async fn usage_report_groupings_follow_the_tenants_zone_embedded() -> anyhow::Result<()> {
    usage_report_groupings_follow_the_tenants_zone(Backend::Embedded).await
}

#[tokio::test]
async fn usage_report_groupings_follow_the_tenants_zone_cluster() -> anyhow::Result<()> {
    usage_report_groupings_follow_the_tenants_zone(Backend::Cluster).await
}

/// `users create --password-stdin` takes the password from stdin and prints none; a short one
/// is refused.
#[tokio::test]
async fn users_create_reads_a_password_from_stdin() -> anyhow::Result<()> {
    use std::io::Write as _;
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let run = |password: &str| -> anyhow::Result<std::process::Output> {
        let mut child = env
            .command()
            .args(["users", "create", "--email", "ops@x.example", "--role", "viewer", "--password-stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(format!("{password}\n").as_bytes())?;
        Ok(child.wait_with_output()?)
    };
    let short = run("short")?;
    ensure!(!short.status.success() && String::from_utf8_lossy(&short.stderr).contains("12 to 256"));
    let out = run("a-long-enough-password")?;
    let stdout = String::from_utf8(out.stdout)?;
    ensure!(
        out.status.success() && !stdout.contains("a-long-enough-password") && !stdout.contains("shown once"),
        "{stdout}"
    );
    token(&env, &serve.base, "ops@x.example", "a-long-enough-password").await?;
    Ok(())
}

/// `/api/channels` over HTTP, the same operations as `channels …`: owners and admins write,
/// viewers read, billing is refused; a tenant-scoped user sees no global channel (404) and
/// cannot write one; unknown fields are named; the egress policy refuses metadata addresses
/// and plain http to a public host without `insecure_http`; the upstream keys are write-only
/// (never in an answer, the log or the audit trail); a channel added over HTTP serves the next
/// request; keys are added, disabled, enabled and removed by id.
async fn channels_over_http_keep_their_keys_write_only(backend: Backend) -> anyhow::Result<()> {
    const SECRET_1: &str = "sk-upstream-http-secret-1";
    const SECRET_2: &str = "sk-upstream-http-secret-2";
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    let (_, me) = call(&env, "GET", &format!("{base}/api/auth/me"), &owner, None).await?;
    let owner_id = me["id"].as_str().unwrap_or_default().to_owned();
    env.cli(&["tenants", "create", "acme"])?;
    let mut tokens = std::collections::BTreeMap::new();
    for (name, role, tenant) in [
        ("admin", "admin", None),
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("acme-admin", "admin", Some("acme")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let (status, created) = call(&env, "POST", &format!("{base}/api/users"), &owner, Some(body)).await?;
        ensure!(status == 201, "create {name}: {status} {created}");
        let password = created["password"].as_str().context("password")?;
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), password).await?);
    }
    let url = |p: &str| format!("{base}{p}");

    let add = json!({
        "name": "fake-http", "provider": "openai", "base_url": env.fake.base_url(), "api_key": SECRET_1,
        "models": [crate::helpers::MODEL], "priority": 3, "weight": 2
    });
    let (status, ch) = call(&env, "POST", &url("/api/channels"), &tokens["admin"], Some(add.clone())).await?;
    ensure!(status == 201, "{status} {ch}");
    let id = ch["id"].as_str().context("id")?.to_owned();
    let key1 = ch["keys"][0]["id"].as_str().context("key id")?.to_owned();
    ensure!(
        ch["key_set"] == true
            && ch["priority"] == 3
            && ch["weight"] == 2
            && ch["enabled"] == true
            && ch["tenant"].is_null()
            && ch["keys"][0]["fingerprint"].as_str().is_some_and(|f| f.starts_with("sha256:"))
            && ch["keys"][0]["state"] == "active",
        "{ch}"
    );
    // Read-your-writes: the gateway serves the channel on the next request.
    env.cli(&["prices", "set", "--model", crate::helpers::MODEL, "--input", "1", "--output", "2"])?;
    let key = env.tenant_key("chat")?;
    let r = env
        .http
        .post(url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": crate::helpers::MODEL, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await?;
    ensure!(r.status() == 200, "a channel added over HTTP serves at once: {}", r.status());

    let cases: Vec<(&str, &str, String, Option<Value>, u16)> = vec![
        ("viewer", "GET", "/api/channels".into(), None, 200),
        ("viewer", "GET", format!("/api/channels/{id}"), None, 200),
        ("billing", "GET", "/api/channels".into(), None, 403),
        ("billing", "GET", format!("/api/channels/{id}"), None, 403),
        (
            "viewer",
            "POST",
            "/api/channels".into(),
            Some(json!({"name": "v", "provider": "openai", "models": ["m"]})),
            403,
        ),
        ("viewer", "PATCH", format!("/api/channels/{id}"), Some(json!({"priority": 1})), 403),
        ("viewer", "DELETE", format!("/api/channels/{id}"), None, 403),
        ("viewer", "POST", format!("/api/channels/{id}/keys/{key1}/disable"), None, 403),
        ("billing", "POST", format!("/api/channels/{id}/keys"), Some(json!({"api_key": "sk-x"})), 403),
        ("acme-admin", "GET", format!("/api/channels/{id}"), None, 404),
        ("acme-admin", "PATCH", format!("/api/channels/{id}"), Some(json!({"priority": 1})), 404),
        ("acme-admin", "DELETE", format!("/api/channels/{id}"), None, 404),
        ("acme-admin", "POST", format!("/api/channels/{id}/keys"), Some(json!({"api_key": "sk-x"})), 404),
        ("acme-admin", "POST", format!("/api/channels/{id}/keys/{key1}/disable"), None, 404),
        (
            "acme-admin",
            "POST",
            "/api/channels".into(),
            Some(json!({"name": "a", "provider": "openai", "models": ["m"]})),
            403,
        ),
        ("owner", "GET", "/api/channels/ch_nope".into(), None, 404),
        ("owner", "GET", "/api/channels/%00%ff".into(), None, 404),
        ("owner", "DELETE", "/api/channels/usr_x".into(), None, 404),
        ("owner", "POST", format!("/api/channels/{id}/keys/ukey_nope/enable"), None, 404),
        ("owner", "POST", format!("/api/channels/{id}/keys/nope/enable"), None, 404),
        ("owner", "POST", "/api/channels".into(), Some(add.clone()), 409),
        ("owner", "PATCH", format!("/api/channels/{id}"), Some(json!({})), 422),
        ("owner", "PATCH", format!("/api/channels/{id}"), Some(json!({"weight": 0})), 422),
        ("owner", "PATCH", format!("/api/channels/{id}"), Some(json!({"api_key_plain": "x"})), 422),
        ("owner", "POST", format!("/api/channels/{id}/keys"), Some(json!({"api_key": SECRET_1})), 409),
        (
            "owner",
            "POST",
            "/api/channels?limit=5".into(),
            Some(json!({"name": "x", "provider": "openai", "models": ["m"], "colour": "red"})),
            422,
        ),
        ("owner", "POST", "/api/channels".into(), Some(json!({"name": "x", "provider": "nope", "models": ["m"]})), 422),
        ("owner", "POST", "/api/channels".into(), Some(json!({"name": "x", "provider": "openai", "models": []})), 422),
        ("owner", "GET", "/api/channels?colour=red".into(), None, 400),
    ];
    for (who, method, path, body, want) in cases {
        let t = if who == "owner" { owner.clone() } else { tokens[who].clone() };
        let (status, answer) = call(&env, method, &url(&path), &t, body).await?;
        ensure!(status.as_u16() == want, "{who} {method} {path}: {status} {answer}, want {want}");
        if status.as_u16() >= 400 {
            ensure!(answer["error"]["code"].is_string(), "{answer}");
        }
        if answer.to_string().contains("colour") || path.contains("colour") {
            ensure!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("colour")), "{answer}");
        }
    }
    let (_, acme_list) = call(&env, "GET", &url("/api/channels"), &tokens["acme-admin"], None).await?;
    ensure!(acme_list["data"].as_array().is_some_and(Vec::is_empty), "global channels are hidden: {acme_list}");

    // The egress policy, as on the CLI; nothing refused is stored.
    for (base_url, insecure, want, why) in [
        ("http://169.254.169.254/v1", false, 422, "cloud metadata"),
        ("http://8.8.8.8/v1", false, 422, "insecure"),
        ("http://8.8.8.8/v1", true, 201, ""),
    ] {
        let body = json!({"name": "egress", "provider": "openai", "base_url": base_url, "api_key": SECRET_2,
            "models": ["m"], "insecure_http": insecure});
        let (status, answer) = call(&env, "POST", &url("/api/channels"), &owner, Some(body)).await?;
        ensure!(status.as_u16() == want, "{base_url}: {status} {answer}");
        ensure!(answer["error"]["message"].as_str().is_none_or(|m| m.contains(why)), "{answer}");
        ensure!(!answer.to_string().contains(SECRET_2), "{answer}");
    }

    let change =
        json!({"priority": 7, "enabled": false, "models": [crate::helpers::MODEL, "m2"], "anthropic_beta": []});
    let (status, ch) = call(&env, "PATCH", &url(&format!("/api/channels/{id}")), &owner, Some(change)).await?;
    ensure!(status == 200 && ch["priority"] == 7 && ch["enabled"] == false && ch["models"][1] == "m2", "{status} {ch}");
    let list = env.cli(&["channels", "list"])?;
    ensure!(list.contains(&format!("{id}\tfake-http")) && list.contains("m2"), "the CLI sees the change: {list}");

    let add_key = json!({"api_key": SECRET_2});
    let (status, ch) = call(&env, "POST", &url(&format!("/api/channels/{id}/keys")), &owner, Some(add_key)).await?;
    ensure!(status == 201 && ch["keys"].as_array().is_some_and(|k| k.len() == 2), "{status} {ch}");
    let key2 = ch["keys"][1]["id"].as_str().context("second key")?.to_owned();
    let path = |k: &str, what: &str| url(&format!("/api/channels/{id}/keys/{k}/{what}"));
    let (status, ch) = call(&env, "POST", &path(&key2, "disable"), &owner, None).await?;
    ensure!(status == 200 && ch["keys"][1]["state"] == "disabled" && ch["keys"][1]["manual"] == true, "{status} {ch}");
    ensure!(call(&env, "POST", &path(&key2, "disable"), &owner, None).await?.0 == 409, "disabled twice");
    let (status, ch) = call(&env, "POST", &path(&key2, "enable"), &owner, None).await?;
    ensure!(status == 200 && ch["keys"][1]["state"] == "active", "{status} {ch}");
    let (status, _) = call(&env, "DELETE", &url(&format!("/api/channels/{id}/keys/{key1}")), &owner, None).await?;
    ensure!(status == 204, "remove the first key: {status}");
    let (status, last) = call(&env, "DELETE", &url(&format!("/api/channels/{id}/keys/{key2}")), &owner, None).await?;
    ensure!(status == 409, "the only key stays: {status} {last}");

    // Paging: pages of 1 cover both channels once, in id order.
    let (mut seen, mut after) = (Vec::new(), String::new());
    loop {
        let q = if after.is_empty() { "limit=1".to_owned() } else { format!("limit=1&after={after}") };
        let (_, page) = call(&env, "GET", &url(&format!("/api/channels?{q}")), &tokens["viewer"], None).await?;
        ensure!(!page.to_string().contains("sk-upstream"), "{page}");
        seen.extend(page["data"].as_array().into_iter().flatten().filter_map(|c| c["id"].as_str().map(str::to_owned)));
        match page["next_cursor"].as_str() {
            Some(c) => after = c.to_owned(),
            None => break,
        }
    }
    ensure!(seen.len() == 2 && seen[0] == id && seen[0] < seen[1], "{seen:?}");

    let (status, _) = call(&env, "DELETE", &url(&format!("/api/channels/{id}")), &owner, None).await?;
    ensure!(status == 204, "remove: {status}");
    ensure!(call(&env, "GET", &url(&format!("/api/channels/{id}")), &owner, None).await?.0 == 404, "removed");

    // Several keys at once: each its own id and fingerprint, checked before anything is stored.
    let many = |keys: Vec<String>| json!({"name": "many", "provider": "openai", "api_keys": keys, "models": ["m"]});
    let (status, answer) =
        call(&env, "POST", &url("/api/channels"), &owner, Some(many(vec![SECRET_1.into(), SECRET_1.into()]))).await?;
    ensure!(status == 422 && !answer.to_string().contains(SECRET_1), "a repeated key: {status} {answer}");
    let too_many: Vec<String> = (0..65).map(|i| format!("sk-many-{i:02}-0123456789")).collect();
    let (status, answer) = call(&env, "POST", &url("/api/channels"), &owner, Some(many(too_many))).await?;
    ensure!(status == 422, "65 keys: {status} {answer}");
    let (status, ch) =
        call(&env, "POST", &url("/api/channels"), &owner, Some(many(vec![SECRET_1.into(), SECRET_2.into()]))).await?;
    let keys = ch["keys"].as_array().cloned().unwrap_or_default();
    ensure!(status == 201 && keys.len() == 2, "{status} {ch}");
    ensure!(keys[0]["id"] != keys[1]["id"] && keys[0]["fingerprint"] != keys[1]["fingerprint"], "{ch}");
    ensure!(!ch.to_string().contains(SECRET_1) && !ch.to_string().contains(SECRET_2), "{ch}");
    let list = env.cli(&["channels", "list"])?;
    ensure!(list.matches("many").count() == 1, "one channel, nothing stored twice: {list}");

    let (_, audit) = call(&env, "GET", &url("/api/audit?limit=200"), &owner, None).await?;
    let entries = audit["data"].as_array().context("data")?;
    for action in
        ["channel.added", "channel.updated", "channel.key_added", "upstream_key.state_changed", "channel.removed"]
    {
        let e = entries.iter().find(|e| e["action"] == action).cloned().unwrap_or_default();
        ensure!(e["actor"].is_string() && e["actor_addr"] == "127.0.0.1", "{action}: {e} in {audit}");
    }
    let removed = entries.iter().find(|e| e["action"] == "channel.removed").cloned().unwrap_or_default();
    ensure!(removed["actor"] == owner_id.as_str(), "the owner removed it: {removed}");
    for text in [audit.to_string(), serve.log()] {
        ensure!(!text.contains(SECRET_1) && !text.contains(SECRET_2), "an upstream key leaked: {text}");
    }
    Ok(())
}

#[tokio::test]
async fn channels_over_http_keep_their_keys_write_only_embedded() -> anyhow::Result<()> {
    channels_over_http_keep_their_keys_write_only(Backend::Embedded).await
}

#[tokio::test]
async fn channels_over_http_keep_their_keys_write_only_cluster() -> anyhow::Result<()> {
    channels_over_http_keep_their_keys_write_only(Backend::Cluster).await
}

/// `/api/routes` over HTTP, the same operations as `routes set|remove|list`: owners and unscoped
/// admins set and remove, viewers and tenant users read, billing is refused; bad strategies,
/// self-fallbacks and unknown fields are 422, removing a route that does not exist is 404; a
/// route set or removed over HTTP is what the CLI lists, and is audited.
async fn routes_over_http_are_the_clis(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let owner = token(&env, &base, "admin@localhost", "owner-password-123").await?;
    env.cli(&["tenants", "create", "acme"])?;
    let mut tokens = std::collections::BTreeMap::new();
    tokens.insert("owner", owner.clone());
    for (name, role, tenant) in [
        ("admin", "admin", None),
        ("viewer", "viewer", None),
        ("billing", "billing", None),
        ("acme-admin", "admin", Some("acme")),
    ] {
        let body = json!({"email": format!("{name}@x.example"), "role": role, "tenant": tenant});
        let (status, created) = call(&env, "POST", &format!("{base}/api/users"), &owner, Some(body)).await?;
        ensure!(status == 201, "create {name}: {status} {created}");
        let password = created["password"].as_str().context("password")?;
        tokens.insert(name, token(&env, &base, &format!("{name}@x.example"), password).await?);
    }
    let set = |s: &str, f: &[&str]| Some(json!({"strategy": s, "fallback": f}));
    let cases: Vec<(&str, &str, &str, Option<Value>, u16)> = vec![
        ("admin", "PUT", "/api/routes/gpt-4o", set("least-latency", &["gpt-4o-mini", "m3"]), 200),
        ("owner", "PUT", "/api/routes/m3", set("lowest-cost", &[]), 200),
        ("viewer", "PUT", "/api/routes/gpt-4o", set("priority", &[]), 403),
        ("billing", "PUT", "/api/routes/gpt-4o", set("priority", &[]), 403),
        ("acme-admin", "PUT", "/api/routes/gpt-4o", set("priority", &[]), 403),
        ("billing", "GET", "/api/routes", None, 403),
        ("viewer", "GET", "/api/routes", None, 200),
        ("acme-admin", "GET", "/api/routes", None, 200),
        ("owner", "PUT", "/api/routes/gpt-4o", set("fastest", &[]), 422),
        ("owner", "PUT", "/api/routes/gpt-4o", set("priority", &["gpt-4o"]), 422),
        ("owner", "PUT", "/api/routes/%20", set("priority", &[]), 422),
        ("owner", "PUT", "/api/routes/gpt-4o", Some(json!({"strategy": "priority", "colour": "red"})), 422),
        ("owner", "PUT", "/api/routes/gpt-4o", set("priority", &["a", "b", "c", "d", "e", "f", "g", "h", "i"]), 422),
        ("viewer", "DELETE", "/api/routes/m3", None, 403),
        ("acme-admin", "DELETE", "/api/routes/m3", None, 403),
        ("owner", "DELETE", "/api/routes/no-such-route", None, 404),
        ("owner", "POST", "/api/routes/gpt-4o", None, 405),
    ];
    for (who, method, path, body, want) in cases {
        let (status, answer) = call(&env, method, &format!("{base}{path}"), &tokens[who], body).await?;
        ensure!(status.as_u16() == want, "{who} {method} {path}: {status} {answer}, want {want}");
        if answer.to_string().contains("colour") {
            ensure!(answer["error"]["message"].as_str().is_some_and(|m| m.contains("colour")), "{answer}");
        }
    }
    let (_, routes) = call(&env, "GET", &format!("{base}/api/routes?limit=1"), &tokens["viewer"], None).await?;
    ensure!(
        routes["data"][0] == json!({"model": "gpt-4o", "strategy": "least-latency", "fallback": ["gpt-4o-mini", "m3"]})
            && routes["next_cursor"] == "gpt-4o",
        "{routes}"
    );
    let (_, next) = call(&env, "GET", &format!("{base}/api/routes?limit=1&after=gpt-4o"), &owner, None).await?;
    ensure!(next["data"][0]["model"] == "m3" && next["next_cursor"].is_null(), "{next}");
    let list = env.cli(&["routes", "list"])?;
    ensure!(list.contains("gpt-4o\tleast-latency\tgpt-4o-mini,m3") && list.contains("m3\tlowest-cost"), "{list}");
    env.cli(&["routes", "set", "--model", "m4", "--strategy", "priority"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, all) = call(&env, "GET", &format!("{base}/api/routes"), &owner, None).await?;
        if all["data"].as_array().is_some_and(|d| d.iter().any(|r| r["model"] == "m4")) {
            break;
        }
        ensure!(Instant::now() < deadline, "a route set with the CLI never showed: {all}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Removal: over HTTP and with the CLI, the same `route.removed`.
    let (status, _) = call(&env, "DELETE", &format!("{base}/api/routes/gpt-4o"), &tokens["admin"], None).await?;
    ensure!(status == 204, "remove over HTTP: {status}");
    let (_, all) = call(&env, "GET", &format!("{base}/api/routes"), &owner, None).await?;
    ensure!(!all.to_string().contains("\"gpt-4o\""), "a removed route is still listed: {all}");
    ensure!(call(&env, "DELETE", &format!("{base}/api/routes/gpt-4o"), &owner, None).await?.0 == 404, "twice");
    env.cli(&["routes", "remove", "--model", "m4"])?;
    let err = env.cli_fails(&["routes", "remove", "--model", "m4"])?;
    ensure!(err.contains("no route for model"), "{err}");
    let list = env.cli(&["routes", "list"])?;
    ensure!(!list.contains("gpt-4o\t") && !list.contains("m4\t") && list.contains("m3\tlowest-cost"), "{list}");
    let (_, audit) = call(&env, "GET", &format!("{base}/api/audit?limit=200"), &owner, None).await?;
    let e = audit["data"].as_array().into_iter().flatten().find(|e| e["action"] == "route.set").cloned();
    ensure!(e.is_some_and(|e| e["actor_addr"] == "127.0.0.1" || e["source"] == "cli"), "{audit}");
    let e = audit["data"].as_array().into_iter().flatten().find(|e| e["action"] == "route.removed").cloned();
    ensure!(e.is_some_and(|e| e["actor"].is_string()), "route.removed is audited: {audit}");
    Ok(())
}

#[tokio::test]
async fn routes_over_http_are_the_clis_embedded() -> anyhow::Result<()> {
    routes_over_http_are_the_clis(Backend::Embedded).await
}

#[tokio::test]
async fn routes_over_http_are_the_clis_cluster() -> anyhow::Result<()> {
    routes_over_http_are_the_clis(Backend::Cluster).await
}
