//! Request caps and key expiry through the real binary (FAULTS rows 22 and 24): `tenants
//! create|update --max-output-tokens --max-n`, `keys create --max-output-tokens --max-n
//! --expires-in|--expires-at`; a running `serve` enforces them and the listings show them.

use std::time::{Duration, Instant};

use crate::helpers::{Backend, Env, MODEL, Serve};

/// The status of a chat completion asking for `max_tokens` output tokens and `n` choices.
async fn chat(env: &Env, serve: &Serve, key: &str, max_tokens: u64, n: u64) -> anyhow::Result<(u16, String)> {
    let body = serde_json::json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens, "n": n});
    let r = env.http.post(format!("{}/v1/chat/completions", serve.base)).bearer_auth(key).json(&body).send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

fn last_line(out: &str) -> String {
    out.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed_embedded() -> anyhow::Result<()> {
    row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed(Backend::Embedded).await
}

#[tokio::test]
async fn row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed_cluster() -> anyhow::Result<()> {
    row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed(Backend::Cluster).await
}

async fn row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve().await?;
    env.add_fake_channel()?;
    env.cli(&["tenants", "create", "acme", "--max-output-tokens", "800", "--max-n", "3"])?;
    let capped = last_line(&env.cli(&["keys", "create", "--tenant", "acme", "--max-output-tokens", "200"])?);
    let expiring = last_line(&env.cli(&["keys", "create", "--tenant", "acme", "--expires-in", "2s"])?);
    env.wait_for_model(&serve, &capped, MODEL).await?;

    // The key's cap is tighter than the tenant's; the tenant's `n` cap applies to the key.
    let (status, body) = chat(&env, &serve, &capped, 201, 1).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("max_tokens") && body.contains("<= 200"), "{body}");
    assert_eq!(chat(&env, &serve, &capped, 200, 3).await?.0, 200);
    let (status, body) = chat(&env, &serve, &capped, 10, 4).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("'n'") && body.contains("<= 3"), "{body}");

    // `tenants update` tightens the tenant's cap for its keys.
    env.cli(&["tenants", "update", "acme", "--max-output-tokens", "100"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while chat(&env, &serve, &capped, 150, 1).await?.0 != 400 {
        anyhow::ensure!(Instant::now() < deadline, "the tenant's new cap never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tenants = env.cli(&["tenants", "list"])?;
    assert!(tenants.contains("max_output_tokens=100") && tenants.contains("max_n=3"), "{tenants}");
    let keys = env.cli(&["keys", "list", "--tenant", "acme"])?;
    assert!(keys.contains("max_output_tokens=200"), "{keys}");
    assert!(keys.contains("expires_at="), "{keys}");

    // The expiring key works, then gets 401 without an event or a restart.
    assert_eq!(chat(&env, &serve, &expiring, 10, 1).await?.0, 200);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = chat(&env, &serve, &expiring, 10, 1).await?;
    assert_eq!(status, 401, "{body}");
    assert!(env.cli(&["keys", "list", "--tenant", "acme"])?.contains("\texpired\t"));

    // Nonsense is refused before anything is written.
    let err = env.cli_fails(&["keys", "create", "--tenant", "acme", "--expires-at", "2020-01-01T00:00:00Z"])?;
    assert!(err.contains("expiry must be in the future"), "{err}");
    let err = env.cli_fails(&["keys", "create", "--tenant", "acme", "--expires-in", "soon"])?;
    assert!(err.contains("--expires-in"), "{err}");
    let err = env.cli_fails(&["keys", "create", "--tenant", "acme", "--max-n", "0"])?;
    assert!(err.contains("max_n must be between 1 and 128"), "{err}");
    // A zero cap on a new tenant is refused as on a key; on `tenants update` it removes the cap.
    let err = env.cli_fails(&["tenants", "create", "zero", "--max-n", "0"])?;
    assert!(err.contains("max_n must be between 1 and 128"), "{err}");
    assert!(!env.cli(&["tenants", "list"])?.contains("zero"), "nothing was written");
    env.cli(&["tenants", "update", "acme", "--max-output-tokens", "0"])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while env.cli(&["tenants", "list"])?.contains("max_output_tokens=100") {
        anyhow::ensure!(Instant::now() < deadline, "the tenant's cap was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// A POST (with a body) or GET on the admin API with the owner's token; returns (status, JSON body).
async fn admin_call(
    env: &Env,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let req = match body {
        Some(b) => env.http.post(url).bearer_auth(token).json(&b),
        None => env.http.get(url).bearer_auth(token),
    };
    send(req).await
}

/// A PATCH on the admin API with the owner's token; returns (status, JSON body).
async fn admin_patch(
    env: &Env,
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    send(env.http.patch(url).bearer_auth(token).json(&body)).await
}

async fn send(req: reqwest::RequestBuilder) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.json().await.unwrap_or_default()))
}

#[tokio::test]
async fn row22_row24_the_admin_api_sets_and_lists_caps_and_expiry_embedded() -> anyhow::Result<()> {
    row22_row24_the_admin_api_sets_and_lists_caps_and_expiry(Backend::Embedded).await
}

#[tokio::test]
async fn row22_row24_the_admin_api_sets_and_lists_caps_and_expiry_cluster() -> anyhow::Result<()> {
    row22_row24_the_admin_api_sets_and_lists_caps_and_expiry(Backend::Cluster).await
}

async fn row22_row24_the_admin_api_sets_and_lists_caps_and_expiry(backend: Backend) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env.serve_with_env(&[("LLM_ROUTER_ADMIN_PASSWORD", "owner-password-123")]).await?;
    env.add_fake_channel()?;
    let base = serve.base.clone();
    let login = env
        .http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "admin@localhost", "password": "owner-password-123"}))
        .send()
        .await?;
    let login: serde_json::Value = login.json().await?;
    let token = login["token"].as_str().unwrap_or_default().to_owned();

    let (status, t) = admin_call(
        &env,
        &format!("{base}/api/tenants"),
        &token,
        Some(serde_json::json!({"name": "acme", "max_output_tokens": 700, "max_n": 2})),
    )
    .await?;
    assert_eq!(status, 201, "{t}");
    assert_eq!((t["max_output_tokens"].as_u64(), t["max_n"].as_u64()), (Some(700), Some(2)), "{t}");

    let expires_at =
        (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (status, k) = admin_call(
        &env,
        &format!("{base}/api/api-keys"),
        &token,
        Some(serde_json::json!({"tenant": "acme", "max_output_tokens": 300, "expires_at": expires_at})),
    )
    .await?;
    assert_eq!(status, 201, "{k}");
    assert_eq!(k["max_output_tokens"].as_u64(), Some(300), "{k}");
    assert_eq!(k["expires_at"].as_str(), Some(expires_at.as_str()), "{k}");
    let key = k["key"].as_str().unwrap_or_default().to_owned();

    let (_, list) = admin_call(&env, &format!("{base}/api/api-keys?tenant=acme"), &token, None).await?;
    let listed = list["data"].as_array().and_then(|d| d.iter().find(|x| x["id"] == k["id"])).cloned();
    let listed = listed.unwrap_or_default();
    assert_eq!(listed["max_output_tokens"].as_u64(), Some(300), "{list}");
    assert_eq!(listed["expires_at"].as_str(), Some(expires_at.as_str()), "{list}");
    let (_, tenants) = admin_call(&env, &format!("{base}/api/tenants"), &token, None).await?;
    assert!(
        tenants["data"].as_array().into_iter().flatten().any(|t| t["name"] == "acme" && t["max_n"] == 2),
        "{tenants}"
    );

    // The key works within its caps and is refused above them.
    env.wait_for_model(&serve, &key, MODEL).await?;
    assert_eq!(chat(&env, &serve, &key, 300, 2).await?.0, 200);
    let (status, body) = chat(&env, &serve, &key, 301, 1).await?;
    assert!(status == 400 && body.contains("<= 300"), "{status} {body}");

    // PATCH tightens the tenant's caps for the key at once (read your own writes) ...
    let (status, t) =
        admin_patch(&env, &format!("{base}/api/tenants/acme"), &token, serde_json::json!({"max_output_tokens": 250}))
            .await?;
    assert_eq!(status, 200, "{t}");
    assert_eq!((t["max_output_tokens"].as_u64(), t["max_n"].as_u64()), (Some(250), Some(2)), "{t}");
    let (status, body) = chat(&env, &serve, &key, 251, 1).await?;
    assert!(status == 400 && body.contains("<= 250"), "{status} {body}");
    // ... and `null` removes a cap, leaving the key's own.
    let (status, t) = admin_patch(
        &env,
        &format!("{base}/api/tenants/acme"),
        &token,
        serde_json::json!({"max_output_tokens": null, "max_n": 0}),
    )
    .await?;
    assert_eq!(status, 200, "{t}");
    assert!(t["max_output_tokens"].is_null() && t["max_n"].is_null(), "{t}");
    assert_eq!(chat(&env, &serve, &key, 300, 3).await?.0, 200);
    let (status, body) = chat(&env, &serve, &key, 301, 1).await?;
    assert!(status == 400 && body.contains("<= 300"), "{status} {body}");

    // A past expiry is a 400, a zero cap a 422, and the OpenAPI document lists the fields.
    let (status, body) = admin_call(
        &env,
        &format!("{base}/api/api-keys"),
        &token,
        Some(serde_json::json!({"tenant": "acme", "expires_at": "2020-01-01T00:00:00Z"})),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    let (status, _) = admin_call(
        &env,
        &format!("{base}/api/api-keys"),
        &token,
        Some(serde_json::json!({"tenant": "acme", "max_n": 0})),
    )
    .await?;
    assert_eq!(status, 422);
    let (_, doc) = admin_call(&env, &format!("{base}/api/openapi.json"), &token, None).await?;
    for schema in ["CreateKey", "KeyView", "IssuedKey"] {
        let props = &doc["components"]["schemas"][schema]["properties"];
        for field in ["max_output_tokens", "max_n", "expires_at"] {
            assert!(props[field].is_object(), "{schema}.{field} missing from the OpenAPI document");
        }
    }
    for schema in ["CreateTenant", "UpdateTenant", "TenantView"] {
        let props = &doc["components"]["schemas"][schema]["properties"];
        assert!(props["max_output_tokens"].is_object() && props["max_n"].is_object(), "{schema}");
    }
    Ok(())
}
