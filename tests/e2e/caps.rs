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
async fn row22_row24_cli_caps_and_expiry_are_enforced_by_serve_and_listed() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
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
    Ok(())
}
