//! Health checks through the real binary: the worker in `serve` probes each upstream key of the
//! fake upstream, disables a key the upstream refuses after the threshold (the next calls skip
//! it), enables it again once the upstream answers, and never undoes an admin's disable.

use std::time::{Duration, Instant};

use testkit::fake_openai::Scenario;

use crate::helpers::{Backend, Env, MODEL};

const K1: &str = "sk-upstream-probed-key-111";
const K2: &str = "sk-upstream-probed-key-222";

/// The `channels keys list` rows: (key id, state, by admin).
fn rows(list: &str) -> Vec<(String, String, String)> {
    list.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c.len() == 6).then(|| (c[0].to_owned(), c[2].to_owned(), c[5].to_owned()))
        })
        .collect()
}

/// Waits until key `index` of channel `probed` is in `state`; returns the rows.
async fn wait_for_state(env: &Env, index: usize, state: &str) -> anyhow::Result<Vec<(String, String, String)>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let list = env.cli(&["channels", "keys", "list", "probed"])?;
        let now = rows(&list);
        if now.get(index).is_some_and(|r| r.1 == state) {
            return Ok(now);
        }
        anyhow::ensure!(Instant::now() < deadline, "key {index} never became {state}:\n{list}");
        // The fake upstream runs on this test's runtime: never block it.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn a_refused_key_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays(
    backend: Backend,
) -> anyhow::Result<()> {
    let env = Env::new(backend).await?;
    let serve = env
        .serve_with_env(&[
            ("HEALTH_CHECK_ENABLED", "true"),
            ("HEALTH_CHECK_INTERVAL", "1"),
            ("HEALTH_CHECK_TIMEOUT", "2"),
            ("HEALTH_CHECK_RETRY_COUNT", "0"),
            ("HEALTH_CHECK_FAILURE_THRESHOLD", "2"),
        ])
        .await?;
    env.fake.set_recording(true);
    let base = env.fake.base_url();
    env.cli(&[
        "channels",
        "add",
        "--name",
        "probed",
        "--base-url",
        &base,
        "--api-key",
        K1,
        "--api-key",
        K2,
        "--models",
        MODEL,
    ])?;
    let key = env.tenant_key("acme")?;
    env.wait_for_model(&serve, &key, MODEL).await?;

    // The upstream refuses the first key: after two failed probes it is out of rotation.
    env.fake.set_key_scenario(K1, Some(Scenario::FailStatus { status: 401, retry_after: None }));
    let keys = wait_for_state(&env, 0, "disabled").await?;
    assert_eq!(keys[0].2, "no", "disabled by a probe, not an admin: {keys:?}");
    let paths: Vec<String> = env.fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(paths.iter().any(|p| p.ends_with("/models")), "probes list models: {paths:?}\n{}", serve.log());
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.fake.clear_requests();
    for _ in 0..4 {
        assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    }
    let chats_with = |k: &str| {
        env.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/chat/completions") && r.authorization() == Some(&format!("Bearer {k}")))
            .count()
    };
    assert_eq!((chats_with(K1), chats_with(K2)), (0, 4), "the disabled key is skipped");

    // The upstream takes it again: the next successful probe puts it back in rotation.
    env.fake.set_key_scenario(K1, None);
    wait_for_state(&env, 0, "active").await?;

    // An admin's disable is never undone by successful probes.
    env.cli(&["channels", "keys", "disable", "probed", &keys[1].0])?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let list = env.cli(&["channels", "keys", "list", "probed"])?;
    let now = rows(&list);
    assert_eq!((now[1].1.as_str(), now[1].2.as_str()), ("disabled", "yes"), "{list}");
    Ok(())
}

#[tokio::test]
async fn a_refused_key_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays_embedded() -> anyhow::Result<()>
{
    a_refused_key_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays(Backend::Embedded).await
}

#[tokio::test]
async fn a_refused_key_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays_cluster() -> anyhow::Result<()> {
    a_refused_key_is_disabled_by_probes_and_comes_back_and_a_manual_disable_stays(Backend::Cluster).await
}
