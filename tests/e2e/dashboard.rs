//! The dashboard behind login, through the real binary: `/` sends an anonymous browser to the
//! login form, the form logs in like the API (same failure answer, same cookies) and refuses a
//! post from another site, a tenant-scoped user sees only its tenant, and the logout form ends
//! the session. Also the admin API's JSON 405.

use anyhow::{Context as _, ensure};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::Value;

use crate::helpers::{Backend, Env};

/// A client that shows redirects instead of following them.
pub(crate) fn browser() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()?)
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|c| c.split(';').next().unwrap_or_default().to_owned()))
        .filter(|v| !v.is_empty())
}

fn location(headers: &HeaderMap) -> &str {
    headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Posts the login form as the page itself would (same origin); returns the response.
async fn form_login(
    http: &reqwest::Client,
    base: &str,
    origin: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(http
        .post(format!("{base}/login"))
        .header("origin", origin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("email", email), ("password", password)])
        .send()
        .await?)
}

/// Logs in with the form; returns the cookie header for later requests and the CSRF value.
pub(crate) async fn logged_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<(String, String)> {
    let r = form_login(http, base, base, email, password).await?;
    ensure!(r.status() == StatusCode::SEE_OTHER && location(r.headers()) == "/", "login of {email}: {}", r.status());
    let session = cookie_value(r.headers(), "llmr_session").context("no session cookie")?;
    let csrf = cookie_value(r.headers(), "llmr_csrf").context("no csrf cookie")?;
    Ok((format!("llmr_session={session}; llmr_csrf={csrf}"), csrf))
}

async fn the_dashboard_needs_a_login_and_shows_only_the_users_tenant(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let http = browser()?;

    // Anonymous: `/` is a 303 to the form, which has no external assets.
    let r = http.get(format!("{base}/")).send().await?;
    ensure!(r.status() == StatusCode::SEE_OTHER && location(r.headers()) == "/login", "{}", r.status());
    let r = http.get(format!("{base}/login")).send().await?;
    ensure!(r.status() == 200, "{}", r.status());
    let html = r.text().await?;
    ensure!(html.contains(r#"action="/login""#) && html.contains(r#"name="password""#), "{html}");
    ensure!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"), "external assets");
    ensure!(http.get(format!("{base}/api/health")).send().await?.status() == 200, "health stays open");
    // A forged session cookie is no session.
    let r = http.get(format!("{base}/")).header("cookie", "llmr_session=forged; llmr_csrf=x").send().await?;
    ensure!(r.status() == StatusCode::SEE_OTHER, "forged cookie: {}", r.status());

    // A wrong password and an unknown email get the same page and status, and no cookie.
    let mut pages = Vec::new();
    for (email, password) in [("admin@localhost", "not-the-password"), ("nobody@localhost", "not-the-password")] {
        let r = form_login(&http, &base, &base, email, password).await?;
        ensure!(r.status() == StatusCode::UNAUTHORIZED, "{email}: {}", r.status());
        ensure!(cookie_value(r.headers(), "llmr_session").is_none(), "a failed login sets no session");
        let html = r.text().await?;
        ensure!(html.contains("Invalid email or password."), "{html}");
        pages.push(html);
    }
    ensure!(pages[0] == pages[1], "the two failures must look the same");
    // Login CSRF: a post from another site (by Origin or by Sec-Fetch-Site) is refused with the
    // right password, and sets no cookie.
    for (origin, site) in
        [("https://evil.example", "same-origin"), (base.as_str(), "cross-site"), ("null", "same-origin")]
    {
        let r = http
            .post(format!("{base}/login"))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .form(&[("email", "admin@localhost"), ("password", "owner-password-123")])
            .send()
            .await?;
        ensure!(r.status() == StatusCode::FORBIDDEN, "{origin} {site}: {}", r.status());
        ensure!(cookie_value(r.headers(), "llmr_session").is_none(), "a cross-site login sets no session");
    }
    // A body that is not a form is the page again with 400.
    let r = http.post(format!("{base}/login")).header("content-type", "application/json").body("{}").send().await?;
    ensure!(r.status() == StatusCode::BAD_REQUEST, "json body: {}", r.status());

    // The owner logs in with the form; the session cookie is the API's.
    let r = form_login(&http, &base, &base, "admin@localhost", "owner-password-123").await?;
    ensure!(r.status() == StatusCode::SEE_OTHER && location(r.headers()) == "/", "{}", r.status());
    let set = r.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join("\n");
    ensure!(set.contains("llmr_session=") && set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
    env.cli(&["tenants", "create", "acme"])?;
    env.cli(&["tenants", "create", "beta"])?;
    let (owner_jar, owner_csrf) = logged_in(&http, &base, "admin@localhost", "owner-password-123").await?;
    let r = http.get(format!("{base}/")).header("cookie", &owner_jar).send().await?;
    ensure!(r.status() == 200, "{}", r.status());
    ensure!(r.headers().get("cache-control").is_some_and(|v| v == "no-store"), "the page is not cached");
    let html = r.text().await?;
    ensure!(html.contains("admin@localhost") && html.contains(r#"id="tenants""#), "{html}");
    ensure!(html.contains(&format!(r#"name="csrf" value="{owner_csrf}""#)), "the logout form carries the CSRF token");
    // The session cookie also works on the API.
    let me: Value = http.get(format!("{base}/api/auth/me")).header("cookie", &owner_jar).send().await?.json().await?;
    ensure!(me["role"] == "owner", "{me}");
    // A logged-in user's `/login` goes to `/`.
    let r = http.get(format!("{base}/login")).header("cookie", &owner_jar).send().await?;
    ensure!(r.status() == StatusCode::SEE_OTHER && location(r.headers()) == "/", "{}", r.status());

    // A user of one tenant sees that tenant, not the global counts.
    let out = env.cli(&["users", "create", "--email", "ops@acme.example", "--role", "viewer", "--tenant", "acme"])?;
    let password = out.lines().last().context("no password")?.to_owned();
    let (acme_jar, acme_csrf) = logged_in(&http, &base, "ops@acme.example", &password).await?;
    let html = http.get(format!("{base}/")).header("cookie", &acme_jar).send().await?.text().await?;
    ensure!(html.contains(r#"id="tenant">acme<"#), "{html}");
    ensure!(!html.contains(r#"id="tenants""#) && !html.contains(r#"id="spool""#) && !html.contains("beta"), "{html}");

    // Logout: the form needs the CSRF value and the same origin; then the session is over.
    for (csrf, site) in [("wrong", "same-origin"), (acme_csrf.as_str(), "cross-site"), ("", "same-origin")] {
        let r = http
            .post(format!("{base}/logout"))
            .header("cookie", &acme_jar)
            .header("sec-fetch-site", site)
            .form(&[("csrf", csrf)])
            .send()
            .await?;
        ensure!(r.status() == StatusCode::FORBIDDEN, "logout with {csrf:?} {site}: {}", r.status());
    }
    ensure!(http.get(format!("{base}/")).header("cookie", &acme_jar).send().await?.status() == 200);
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", &acme_jar)
        .header("origin", &base)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", acme_csrf.as_str())])
        .send()
        .await?;
    ensure!(r.status() == StatusCode::SEE_OTHER && location(r.headers()) == "/login", "logout: {}", r.status());
    ensure!(r.headers().get_all(SET_COOKIE).iter().any(|c| c.to_str().is_ok_and(|c| c.contains("Max-Age=0"))));
    let r = http.get(format!("{base}/")).header("cookie", &acme_jar).send().await?;
    ensure!(r.status() == StatusCode::SEE_OTHER, "the old cookie after logout: {}", r.status());
    // The owner's session is untouched by another user's logout.
    ensure!(http.get(format!("{base}/")).header("cookie", &owner_jar).send().await?.status() == 200);
    Ok(())
}

#[tokio::test]
async fn the_dashboard_needs_a_login_and_shows_only_the_users_tenant_embedded() -> anyhow::Result<()> {
    the_dashboard_needs_a_login_and_shows_only_the_users_tenant(Backend::Embedded).await
}

#[tokio::test]
async fn the_dashboard_needs_a_login_and_shows_only_the_users_tenant_cluster() -> anyhow::Result<()> {
    the_dashboard_needs_a_login_and_shows_only_the_users_tenant(Backend::Cluster).await
}

/// A known `/api/*` path with a method it does not take is 405 in the API's JSON shape, with
/// `Allow`; an open one too.
#[tokio::test]
async fn an_unsupported_method_on_an_api_path_is_a_json_405() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    let base = serve.base.clone();
    let login: Value = env
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": "owner-password-123"}))
        .send()
        .await?
        .json()
        .await?;
    let token = login["token"].as_str().context("no token")?;
    for (method, path, auth) in
        [("DELETE", "/api/users", true), ("PUT", "/api/health", false), ("GET", "/api/auth/login", false)]
    {
        let mut req = env.http.request(method.parse()?, format!("{base}{path}"));
        if auth {
            req = req.bearer_auth(token);
        }
        let r = req.send().await?;
        ensure!(r.status() == StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {}", r.status());
        ensure!(r.headers().contains_key("allow"), "{method} {path}: no Allow");
        let body: Value = r.json().await.context("a JSON body")?;
        ensure!(
            body["error"]["code"] == "method_not_allowed" && body["error"]["type"] == "invalid_request_error",
            "{body}"
        );
        ensure!(body["error"]["message"].is_string(), "{body}");
    }
    Ok(())
}
