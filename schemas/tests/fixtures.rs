//! Golden fixtures: every historical event version must keep deserializing, and the current
//! version must serialize back to the same JSON.

use std::path::Path;

use schemas::{Envelope, EventBody};

fn fixtures() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    for version in std::fs::read_dir(&dir)? {
        for file in std::fs::read_dir(version?.path())? {
            let path = file?.path();
            out.push((path.display().to_string(), std::fs::read(&path)?));
        }
    }
    out.sort();
    Ok(out)
}

#[test]
fn every_fixture_still_deserializes_and_round_trips() -> anyhow::Result<()> {
    let all = fixtures()?;
    assert!(all.len() >= 9, "fixtures missing: {}", all.len());
    for (name, bytes) in all {
        let env = Envelope::from_json(&bytes).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        let original: serde_json::Value = serde_json::from_slice(&bytes)?;
        let again: serde_json::Value = serde_json::from_slice(&env.to_json())?;
        assert_eq!(original, again, "{name} does not round-trip");
        assert!(name.contains(env.body.type_name()), "{name} holds a {}", env.body.type_name());
    }
    Ok(())
}

#[test]
fn every_event_type_has_a_fixture() -> anyhow::Result<()> {
    let names: Vec<String> = fixtures()?.into_iter().map(|(n, _)| n).collect();
    for t in [
        "tenant.created",
        "api_key.issued",
        "api_key.revoked",
        "channel.added",
        "channel.updated",
        "channel.removed",
        "price.published",
        "usage.recorded",
        "request.logged",
        "auth.failures_counted",
        "user.created",
        "user.updated",
        "user.disabled",
        "user.sessions_revoked",
        "session_secret.generated",
        "tenant.updated",
        "health.checked",
        "channel.key_updated",
        "proxy.added",
        "proxy.removed",
        "proxy.state_changed",
        "route.set",
        "route.removed",
    ] {
        assert!(names.iter().any(|n| n.ends_with(&format!("{t}.json"))), "no fixture for {t}");
    }
    Ok(())
}

#[test]
fn an_unknown_type_or_version_is_a_decode_error_not_a_panic() {
    let v999 = br#"{"id":"01936d8e-7a3c-7000-8000-000000000001","type":"tenant.created","v":999,"occurred_at_us":1,"tenant":"a","source":"s","data":{"name":"a"}}"#;
    assert!(Envelope::from_json(v999).is_err());
    assert!(Envelope::from_json(b"not json").is_err());
    assert!(Envelope::from_json(br#"{"type":"nope"}"#).is_err());
}

#[test]
fn usage_fixture_cost_matches_its_price() -> anyhow::Result<()> {
    let bytes = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1/usage.recorded.json"))?;
    let env = Envelope::from_json(&bytes)?;
    let EventBody::UsageRecorded(u) = env.body else { anyhow::bail!("wrong type") };
    let price = u.price.as_ref().ok_or_else(|| anyhow::anyhow!("no price"))?;
    let cost = price.cost_nanos(u.input_tokens, u.cached_input_tokens, u.cache_write_tokens, u.output_tokens);
    // 1000 * 0.15 + 200 * 0.075 + 50 * 0.6 (USD per 1M) = 150_000 + 15_000 + 30_000 nanos.
    assert_eq!(cost, 195_000);
    assert_eq!(u.cost_nanos, cost);
    Ok(())
}

#[test]
fn subjects_follow_the_stream_layout() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let s = |f: &str| -> anyhow::Result<String> { Ok(Envelope::from_json(&std::fs::read(dir.join(f))?)?.subject()) };
    assert_eq!(s("tenant.created.json")?, "llmr.v1.control.acme.tenant");
    assert_eq!(s("api_key.revoked.json")?, "llmr.v1.control.acme.api_key");
    assert_eq!(s("price.published.json")?, "llmr.v1.control._global.price");
    assert_eq!(s("usage.recorded.json")?, "llmr.v1.usage.acme");
    assert_eq!(s("request.logged.json")?, "llmr.v1.req.acme");
    assert_eq!(s("auth.failures_counted.json")?, "llmr.v1.req._global");
    assert_eq!(s("user.created.json")?, "llmr.v1.control.acme.user");
    assert_eq!(s("session_secret.generated.json")?, "llmr.v1.control._global.session_secret");
    assert_eq!(s("health.checked.json")?, "llmr.v1.ops._global.health");
    Ok(())
}

#[test]
fn a_price_without_a_channel_is_model_wide_and_one_with_a_channel_overrides_it_there() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let price = |f: &str| -> anyhow::Result<schemas::PricePublished> {
        match Envelope::from_json(&std::fs::read(dir.join(f))?)?.body {
            EventBody::PricePublished(p) => Ok(p),
            other => anyhow::bail!("{f} holds a {}", other.type_name()),
        }
    };
    assert_eq!(price("price.published.json")?.channel_id, None);
    let channel = price("price.published.channel.json")?;
    assert_eq!(channel.channel_id.as_deref(), Some("ch_0194"));
    assert_eq!(channel.model, "gpt-4o-mini");
    Ok(())
}

#[test]
fn request_logged_lists_every_attempt_and_old_events_have_none() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let logged = |f: &str| -> anyhow::Result<schemas::RequestLogged> {
        match Envelope::from_json(&std::fs::read(dir.join(f))?)?.body {
            EventBody::RequestLogged(r) => Ok(r),
            other => anyhow::bail!("{f} holds a {}", other.type_name()),
        }
    };
    assert!(logged("request.logged.json")?.attempt_log.is_empty());
    let r = logged("request.logged.attempts.json")?;
    let classes: Vec<&str> = r.attempt_log.iter().map(|a| a.class.as_str()).collect();
    assert_eq!(classes, ["quota_exhausted", "connect_timeout", "ok"]);
    assert_eq!(r.attempt_log[1].status, None);
    assert_eq!(r.attempts as usize, r.attempt_log.len());
    Ok(())
}

#[test]
fn user_events_carry_the_actor_and_its_address_and_never_print_a_password_hash() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    let env = Envelope::from_json(&std::fs::read(dir.join("user.created.json"))?)?;
    assert_eq!((env.actor.as_deref(), env.actor_addr.as_deref()), (Some("usr_0193owner"), Some("203.0.113.7")));
    let EventBody::UserCreated(u) = &env.body else { anyhow::bail!("not a user.created") };
    assert_eq!((u.role, u.tenant.as_deref()), (schemas::Role::Admin, Some("acme")));
    assert!(!format!("{env:?}").contains("argon2"), "the hash is kept out of Debug output");
    Ok(())
}

#[test]
fn a_health_check_id_is_the_same_for_the_same_resource_and_slot_only() {
    let a = schemas::health_check_id("ukey_1", 60_000_000);
    assert_eq!(a, schemas::health_check_id("ukey_1", 60_000_000));
    assert_ne!(a, schemas::health_check_id("ukey_1", 120_000_000));
    assert_ne!(a, schemas::health_check_id("ukey_2", 60_000_000));
    assert_eq!(a.get_version_num(), 5);
}
