//! A probe of a key against the fake upstream, through the adapters' own code.

use std::time::Duration;

use schemas::UpstreamKeyState;
use schemas::control::{Channel, UpstreamKey};
use schemas::secret::MasterKey;
use testkit::fake_openai::{FakeOpenAi, Scenario};
use testkit::proxy::{Kind, TestProxy};
use workers::health::{HealthConfig, Prober, ProxyOutcome};

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
        manual: false,
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

fn proxy_node(id: &str, url: String, master: &MasterKey, login: Option<&str>) -> schemas::control::Proxy {
    schemas::control::Proxy {
        proxy_id: id.into(),
        pool: "eu".into(),
        name: id.into(),
        url,
        credentials: login.map(|l| master.seal(l, id)),
        from_pool_url: false,
        state: schemas::ProxyState::Active,
        until_us: None,
        reason: None,
        opens: 0,
        manual: false,
        added_at_us: 0,
    }
}

#[tokio::test]
async fn a_proxy_probe_reaches_the_target_through_the_proxy_and_a_stopped_proxy_fails() -> anyhow::Result<()> {
    let target = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    let loopback = egress::Policy::new(egress::Policy::parse_networks(["127.0.0.0/8"])?);
    let cfg = HealthConfig {
        timeout: Duration::from_secs(2),
        retry_count: 0,
        proxy_target: Some(format!("{}/models", target.base_url())),
        ..HealthConfig::default()
    };
    let prober = Prober::connect(Duration::from_secs(2), loopback, cfg.clone(), master.clone())?;
    for kind in [Kind::Socks5, Kind::Http] {
        let proxy = TestProxy::start(kind, Some(("probe", "probe-pass-canary"))).await?;
        let id = format!("px_{kind:?}");
        let node = proxy_node(&id, proxy.url(), &master, Some("probe:probe-pass-canary"));
        let ok = prober.probe_proxy(&node).await;
        anyhow::ensure!(ok.is_some_and(|r| r.outcome == ProxyOutcome::Ok && r.attempts == 1), "{kind:?}: {ok:?}");
        anyhow::ensure!(proxy.count("/v1/models") == 1, "{kind:?}: the probe did not go through the proxy");
        proxy.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dead = prober.probe_proxy(&node).await;
        anyhow::ensure!(dead.is_some_and(|r| r.outcome == ProxyOutcome::ProxyFailed), "{kind:?}: {dead:?}");
        proxy.restart().await?;
        let back = prober.probe_proxy(&node).await;
        anyhow::ensure!(back.is_some_and(|r| r.outcome == ProxyOutcome::Ok), "{kind:?}: {back:?}");
        // The wrong login: refused by the proxy, not a dead proxy.
        let wrong = proxy_node(&id, proxy.url(), &master, Some("probe:wrong"));
        let wrong = Prober::connect(
            Duration::from_secs(2),
            egress::Policy::new(egress::Policy::parse_networks(["127.0.0.0/8"])?),
            cfg.clone(),
            master.clone(),
        )?
        .probe_proxy(&wrong)
        .await;
        anyhow::ensure!(wrong.is_some_and(|r| r.outcome != ProxyOutcome::Ok), "{kind:?}: {wrong:?}");
    }
    // A loopback target outside the allow list: no probe at all, so no proxy is blamed.
    let strict = Prober::connect(Duration::from_secs(2), egress::Policy::default(), cfg, master.clone())?;
    let proxy = TestProxy::start(Kind::Socks5, None).await?;
    let before = target.requests().len();
    anyhow::ensure!(strict.probe_proxy(&proxy_node("px_open", proxy.url(), &master, None)).await.is_none());
    anyhow::ensure!(target.requests().len() == before && proxy.connections() == 0);
    Ok(())
}

#[tokio::test]
async fn a_key_probe_through_a_dead_forwarding_proxy_blames_the_proxy_not_the_key() -> anyhow::Result<()> {
    let fake = FakeOpenAi::start().await?;
    let master = MasterKey::generate();
    let (mut c, k) = channel(&fake.base_url(), &master)?;
    c.proxy_pool = Some("eu".into());
    let cfg = HealthConfig { timeout: Duration::from_secs(2), retry_count: 0, ..HealthConfig::default() };
    let prober = Prober::connect(Duration::from_secs(2), egress::Policy::default(), cfg, master.clone())?;
    let proxy = TestProxy::start(Kind::Http, None).await?;
    let node = proxy_node("px_fwd", proxy.url(), &master, None);
    let ok = prober.probe(&c, &k, std::slice::from_ref(&node)).await;
    anyhow::ensure!(ok.failure.is_none() && proxy.count("/v1/models") == 1, "{ok:?}");
    // The plain-http request is forwarded: with the proxy gone, the only failed connection is
    // the proxy's.
    proxy.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let dead = prober.probe(&c, &k, std::slice::from_ref(&node)).await;
    anyhow::ensure!(dead.failure == Some(adapters::FailureClass::ProxyFailed), "{dead:?}");
    Ok(())
}
