//! `adapters::models::list` against the fake upstreams over loopback: each vendor's list, the
//! channel's key sent its vendor's way, a refused key or an empty account classified as a call's
//! failure would be, and a refused address never connected to.

use std::sync::Arc;
use std::time::Duration;

use adapters::{Channel, FailureClass, presets};
use testkit::{fake_anthropic, fake_gemini, fake_openai};

fn channel(provider: &str, base_url: &str) -> Channel {
    Channel {
        id: "ch_probe".into(),
        tenant: schemas::GLOBAL_TENANT.into(),
        provider: provider.into(),
        preset: presets::for_provider(provider),
        api_version: None,
        base_url: presets::effective_base_url(provider, base_url),
        api_key: Some(Arc::from("sk-probe-key")),
        key_unusable: false,
        models: vec![],
        priority: 0,
        weight: 1,
        enabled: true,
        egress_refused: None,
        anthropic_beta: Vec::new(),
        proxy_pool: None,
    }
}

async fn list(channel: &Channel) -> Result<Vec<String>, adapters::AttemptError> {
    let http = adapters::http::client(Duration::from_secs(2), egress::Policy::default(), egress::Dns::system())
        .map_err(|_| adapters::AttemptError::new(FailureClass::ConnectionFailed))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    adapters::models::list(&http, channel, deadline, Duration::from_secs(5)).await
}

#[tokio::test]
async fn an_openai_compatible_channel_lists_its_models_with_its_bearer_key() -> anyhow::Result<()> {
    let fake = fake_openai::FakeOpenAi::start().await?;
    let models = list(&channel("openai", &fake.base_url())).await;
    assert_eq!(models, Ok(vec!["gpt-4o-mini".to_owned(), "text-embedding-3-small".to_owned()]));
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/models");
    assert_eq!(seen[0].authorization(), Some("Bearer sk-probe-key"));
    Ok(())
}

#[tokio::test]
async fn a_refused_key_and_an_empty_account_are_classified_as_a_calls_would_be() -> anyhow::Result<()> {
    let fake = fake_openai::FakeOpenAi::start().await?;
    let ch = channel("openai", &fake.base_url());
    fake.set_scenario(fake_openai::Scenario::FailStatus { status: 401, retry_after: None });
    assert_eq!(list(&ch).await.map_err(|e| e.class), Err(FailureClass::KeyInvalid));
    fake.set_scenario(fake_openai::Scenario::ErrorBody {
        status: 429,
        body: r#"{"error":{"message":"You exceeded your current quota.","type":"insufficient_quota","code":"insufficient_quota"}}"#.into(),
    });
    assert_eq!(list(&ch).await.map_err(|e| e.class), Err(FailureClass::QuotaExhausted));
    fake.set_scenario(fake_openai::Scenario::FailStatus { status: 429, retry_after: Some(7) });
    assert_eq!(list(&ch).await.map_err(|e| e.class), Err(FailureClass::RateLimited { retry_after: Some(7) }));
    Ok(())
}

#[tokio::test]
async fn an_anthropic_channel_lists_with_x_api_key_and_the_api_version() -> anyhow::Result<()> {
    let fake = fake_anthropic::FakeAnthropic::start().await?;
    // The SDK's convention, without `/v1`, works as well as with it.
    let without_version = fake.base_url().trim_end_matches("/v1").to_owned();
    let models = list(&channel("anthropic", &without_version)).await;
    assert_eq!(models, Ok(vec!["claude-sonnet-4-5".to_owned(), "claude-haiku-4-5".to_owned()]));
    let seen = fake.requests();
    assert_eq!(seen[0].path, "/v1/models?limit=1000");
    assert_eq!(seen[0].header("x-api-key"), Some("sk-probe-key"));
    assert_eq!(seen[0].header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(seen[0].header("authorization"), None);
    fake.set_scenario(fake_anthropic::Scenario::ErrorBody {
        status: 401,
        body: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#.into(),
    });
    assert_eq!(list(&channel("anthropic", &fake.base_url())).await.map_err(|e| e.class), Err(FailureClass::KeyInvalid));
    Ok(())
}

#[tokio::test]
async fn a_gemini_channel_lists_bare_model_names_with_its_goog_key() -> anyhow::Result<()> {
    let fake = fake_gemini::FakeGemini::start().await?;
    let models = list(&channel("gemini", &fake.base_url())).await;
    assert_eq!(
        models,
        Ok(vec!["gemini-2.5-flash".to_owned(), "gemini-2.5-pro".to_owned(), "gemini-2.5-flash-lite".to_owned()])
    );
    let seen = fake.requests();
    assert_eq!(seen[0].path, "/v1beta/models?pageSize=1000");
    assert_eq!(seen[0].header("x-goog-api-key"), Some("sk-probe-key"));
    fake.set_scenario(fake_gemini::Scenario::ErrorBody {
        status: 400,
        body: r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#.into(),
    });
    assert_eq!(list(&channel("gemini", &fake.base_url())).await.map_err(|e| e.class), Err(FailureClass::KeyInvalid));
    Ok(())
}

#[tokio::test]
async fn a_channel_whose_address_the_policy_refuses_is_never_connected_to() -> anyhow::Result<()> {
    let fake = fake_openai::FakeOpenAi::start().await?;
    let mut ch = channel("openai", &fake.base_url());
    ch.egress_refused = Some(
        egress::Policy::default()
            .check_url("http://169.254.169.254/v1", egress::Trust::Admin, true)
            .err()
            .ok_or_else(|| anyhow::anyhow!("metadata address allowed"))?,
    );
    assert_eq!(list(&ch).await.map_err(|e| e.class), Err(FailureClass::ConnectionFailed));
    assert!(fake.requests().is_empty());
    Ok(())
}
