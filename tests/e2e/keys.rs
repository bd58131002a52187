//! Several upstream keys per channel through the real binary: `channels add --api-key K1
//! --api-key K2`, `channels keys list|add|remove|disable|enable`; a running `serve` rotates
//! requests across the keys and follows the admin's changes; no output ever shows a key.

use crate::helpers::{Backend, Env, MODEL};

const K1: &str = "sk-upstream-first-key-111";
const K2: &str = "sk-upstream-second-key-222";
const K3: &str = "sk-upstream-third-key-333";

/// The `channels keys list` rows: (key id, fingerprint, state, by admin).
fn rows(list: &str) -> Vec<(String, String, String, String)> {
    list.lines()
        .skip(1)
        .filter_map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c.len() == 6).then(|| (c[0].to_owned(), c[1].to_owned(), c[2].to_owned(), c[5].to_owned()))
        })
        .collect()
}

#[tokio::test]
async fn a_channel_with_several_keys_rotates_across_them_and_admins_see_ids_and_fingerprints_only() -> anyhow::Result<()>
{
    let env = Env::new(Backend::Embedded).await?;
    let serve = env.serve().await?;
    let base = env.fake.base_url();
    let added = env.cli(&[
        "channels",
        "add",
        "--name",
        "multi",
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
    let list = env.cli(&["channels", "keys", "list", "multi"])?;
    let keys = rows(&list);
    assert_eq!(keys.len(), 2, "{list}");
    assert!(
        keys.iter().all(|(id, fp, state, _)| id.starts_with("ukey_") && fp.starts_with("sha256:") && state == "active")
    );
    assert_ne!(keys[0].1, keys[1].1, "two keys, two fingerprints");
    let channels = env.cli(&["channels", "list"])?;
    for out in [&added, &list, &channels] {
        assert!(!out.contains(K1) && !out.contains(K2), "a key in the output: {out}");
    }
    assert!(channels.contains(&format!("{}:active", keys[1].0)), "{channels}");

    for _ in 0..4 {
        assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    }
    assert_eq!((env.fake.requests_with_key(K1), env.fake.requests_with_key(K2)), (2, 2));

    // An admin takes the first key out: it stays out, and the others carry the traffic.
    env.cli(&["channels", "keys", "disable", "multi", &keys[0].0])?;
    let added = env.cli(&["channels", "keys", "add", "multi", "--api-key", K3])?;
    assert!(added.contains("ukey_") && added.contains("sha256:") && !added.contains(K3), "{added}");
    let err = env.cli_fails(&["channels", "keys", "add", "multi", "--api-key", K2])?;
    assert!(err.contains("has this key already") && !err.contains(K2), "{err}");
    env.fake.clear_requests();
    for _ in 0..6 {
        assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    }
    assert_eq!(env.fake.requests_with_key(K1), 0);
    assert_eq!((env.fake.requests_with_key(K2), env.fake.requests_with_key(K3)), (3, 3));
    let list = env.cli(&["channels", "keys", "list", "multi"])?;
    let now = rows(&list);
    assert_eq!((now[0].2.as_str(), now[0].3.as_str()), ("disabled", "yes"), "{list}");

    // Removing keys: not the last one; an unknown id is named, never a key.
    env.cli(&["channels", "keys", "remove", "multi", &keys[1].0])?;
    let third = rows(&env.cli(&["channels", "keys", "list", "multi"])?)[1].0.clone();
    env.cli(&["channels", "keys", "remove", "multi", &keys[0].0])?;
    let err = env.cli_fails(&["channels", "keys", "remove", "multi", &third])?;
    assert!(err.contains("only key"), "{err}");
    let err = env.cli_fails(&["channels", "keys", "disable", "multi", "ukey_nope"])?;
    assert!(err.contains("no key \"ukey_nope\""), "{err}");
    env.fake.clear_requests();
    assert_eq!(env.chat(&serve, &key, false).await?.0, 200);
    assert_eq!(env.fake.requests_with_key(K3), 1);
    Ok(())
}

#[tokio::test]
async fn routes_set_validates_its_input_and_routes_list_shows_it() -> anyhow::Result<()> {
    let env = Env::new(Backend::Embedded).await?;
    let out = env.cli(&["routes", "set", "--model", MODEL, "--strategy", "lowest-cost", "--fallback", "m2,m3,m2"])?;
    assert!(out.contains("set"), "{out}");
    let list = env.cli(&["routes", "list"])?;
    assert!(list.contains(&format!("{MODEL}\tlowest-cost\tm2,m3")), "{list}");
    let err = env.cli_fails(&["routes", "set", "--model", MODEL, "--strategy", "fastest"])?;
    assert!(err.contains("unknown strategy") && err.contains("least-latency"), "{err}");
    let err = env.cli_fails(&["routes", "set", "--model", MODEL, "--fallback", MODEL])?;
    assert!(err.contains("own fallback"), "{err}");
    env.cli(&["routes", "set", "--model", MODEL])?;
    assert!(env.cli(&["routes", "list"])?.contains(&format!("{MODEL}\tpriority\t")));
    Ok(())
}
