//! A probe of a key against the fake upstream, through the adapters' own code.

use std::time::Duration;

use schemas::UpstreamKeyState;
use schemas::control::{Channel, UpstreamKey};
use schemas::secret::MasterKey;
use testkit::fake_openai::{FakeOpenAi, Scenario};
use workers::health::{HealthConfig, Prober};

fn channel(base_url: &str, master: &MasterKey) -> anyhow::Result<(Channel, UpstreamKey)> {
    let sealed = master.seal("sk-probe-key", "ch_1");
    let key = UpstreamKey {
        key_id: schemas::event::legacy_key_id("ch_1"),
        sealed: Some(sealed.clone()),
        fingerprint: None,
        state: UpstreamKeyState::Active,
        until_us: None,
        reason: None,
        manual: false,
        opens: 0,
        added_at_us: 0,
        low_balance_nanos: None,
    };
    let c = Channel {
        channel_id: "ch_1".into(),
        tenant: schemas::GLOBAL_TENANT.into(),
        name: "fake".into(),
        provider: "openai".into(),
        base_url: base_url.into(),
        api_key: Some(sealed),
        keys: vec![key.clone()],
        models: vec!["gpt-4o-mini".into()],
        priority: 0,
        weight: 1,
        enabled: true,
        api_version: None,
        anthropic_beta: Vec::new(),
        created_at_us: 0,
        updated_at_us: 0,
    };
    Ok((c, key))
}

#[tokio::test]
async fn a_probe_lists_models_and_a_refused_key_is_key_invalid() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    let (c, k) = channel(&fake.base_url(), &master)?;
    let cfg = HealthConfig { timeout: Duration::from_secs(2), retry_count: 0, ..HealthConfig::default() };
    let prober = Prober::connect(Duration::from_secs(2), egress::Policy::default(), cfg, master)?;
    let ok = prober.probe(&c, &k).await;
    assert_eq!(ok.outcome(), "ok", "{ok:?}");
    assert!(fake.requests().iter().any(|r| r.path.ends_with("/models")));
    fake.set_scenario(Scenario::FailStatus { status: 401, retry_after: None });
    let refused = prober.probe(&c, &k).await;
    assert_eq!(refused.outcome(), "key_invalid", "{refused:?}");
    Ok(())
}
