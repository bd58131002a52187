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
        proxy_pool: None,
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
    let ok = prober.probe(&c, &k, &[]).await;
    assert_eq!(ok.outcome(), "ok", "{ok:?}");
    assert!(fake.requests().iter().any(|r| r.path.ends_with("/models")));
    fake.set_scenario(Scenario::FailStatus { status: 401, retry_after: None });
    let refused = prober.probe(&c, &k, &[]).await;
    assert_eq!(refused.outcome(), "key_invalid", "{refused:?}");
    Ok(())
}

#[tokio::test]
async fn a_probe_of_a_channel_with_a_pool_goes_through_its_proxy_and_a_pool_without_one_blames_no_key()
-> anyhow::Result<()> {
    use schemas::control::Proxy;
    use testkit::proxy::{Kind, TestProxy};

    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    let (mut c, k) = channel(&fake.base_url(), &master)?;
    c.proxy_pool = Some("eu".into());
    let cfg = HealthConfig { timeout: Duration::from_secs(2), retry_count: 0, ..HealthConfig::default() };
    let prober = Prober::connect(Duration::from_secs(2), egress::Policy::default(), cfg, master.clone())?;
    let proxy = TestProxy::start(Kind::Socks5, Some(("probe", "probe-pass-canary"))).await?;
    let node = Proxy {
        proxy_id: "px_1".into(),
        pool: "eu".into(),
        name: "eu-1".into(),
        url: proxy.url(),
        credentials: Some(master.seal("probe:probe-pass-canary", "px_1")),
        from_pool_url: false,
        state: schemas::ProxyState::Active,
        until_us: None,
        reason: None,
        opens: 0,
        added_at_us: 0,
    };
    let ok = prober.probe(&c, &k, std::slice::from_ref(&node)).await;
    anyhow::ensure!(ok.failure.is_none(), "{ok:?}");
    anyhow::ensure!(proxy.count("GET /v1/models") == 1, "the probe did not go through the proxy");

    // Its only node dead: the probe fails as the proxy's failure, which changes no key.
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dead = prober.probe(&c, &k, std::slice::from_ref(&node)).await;
    anyhow::ensure!(dead.failure == Some(adapters::FailureClass::ProxyFailed), "{dead:?}");
    anyhow::ensure!(workers::health::state_change("ch_1", &k, &dead, 99, 1).is_none());
    // No node at all: never direct.
    let before = fake.requests().len();
    let none = prober.probe(&c, &k, &[]).await;
    anyhow::ensure!(none.failure == Some(adapters::FailureClass::ProxyFailed) && fake.requests().len() == before);
    Ok(())
}
