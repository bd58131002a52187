//! Given control events, when the control projection runs, then tenants, keys, channels and
//! prices read back as the events say.

use anyhow::{Context as _, ensure};
use projections::Projection;
use projections::read;
use schemas::{ChannelAdded, ChannelRemoved, ChannelUpdated, Envelope, EventBody, GLOBAL_TENANT, PricePublished};

use crate::helpers::{BACKENDS, BASE_US, Harness, key_issued, tenant_created};

fn channel_events() -> Vec<Envelope> {
    vec![
        Envelope::new(
            GLOBAL_TENANT,
            "test",
            BASE_US + 10,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_1".into(),
                name: "openai main".into(),
                provider: "openai".into(),
                base_url: "https://api.openai.com/v1".into(),
                api_key: None,
                models: vec!["gpt-4o".into()],
                priority: 5,
                weight: 2,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ),
        Envelope::new(
            GLOBAL_TENANT,
            "test",
            BASE_US + 11,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: "ch_2".into(),
                name: "spare".into(),
                provider: "openai".into(),
                base_url: "https://example.test/v1".into(),
                api_key: None,
                models: vec![],
                priority: 0,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ),
        Envelope::new(
            GLOBAL_TENANT,
            "test",
            BASE_US + 12,
            EventBody::ChannelUpdated(ChannelUpdated {
                channel_id: "ch_1".into(),
                models: Some(vec!["gpt-4o".into(), "gpt-4o-mini".into()]),
                enabled: Some(false),
                ..ChannelUpdated::default()
            }),
        ),
        Envelope::new(
            GLOBAL_TENANT,
            "test",
            BASE_US + 13,
            EventBody::ChannelRemoved(ChannelRemoved { channel_id: "ch_2".into() }),
        ),
    ]
}

fn price_published(model: &str, input: i64, at: i64) -> Envelope {
    channel_price_published(model, None, input, at)
}

fn channel_price_published(model: &str, channel_id: Option<&str>, input: i64, at: i64) -> Envelope {
    Envelope::new(
        GLOBAL_TENANT,
        "test",
        at,
        EventBody::PricePublished(PricePublished {
            model: model.into(),
            channel_id: channel_id.map(str::to_owned),
            currency: "USD".into(),
            input_per_mtok_nanos: input,
            output_per_mtok_nanos: input * 4,
            cached_input_per_mtok_nanos: None,
            cache_write_per_mtok_nanos: Some(input * 2),
        }),
    )
}

#[tokio::test]
async fn control_events_fold_into_tenants_keys_channels_and_prices() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let revoke = Envelope::new(
            "acme",
            "test",
            BASE_US + 500,
            EventBody::ApiKeyRevoked(schemas::ApiKeyRevoked { key_id: "key_1".into() }),
        );
        let old_price = price_published("gpt-4o", 2_000_000_000, BASE_US + 20);
        let new_price = price_published("gpt-4o", 2_500_000_000, BASE_US + 30);
        let mut events = vec![
            tenant_created("acme"),
            tenant_created("beta"),
            key_issued("acme", "key_1", "aaaa1111", BASE_US + 1),
            key_issued("beta", "key_2", "bbbb2222", BASE_US + 2),
            revoke,
            old_price.clone(),
            new_price.clone(),
            price_published("claude-sonnet", 3_000_000_000, BASE_US + 40),
        ];
        events.extend(channel_events());
        h.append_all(&events).await?;
        h.catch_up(Projection::Control).await?;

        let tenants: Vec<String> = read::tenants(&h.store).await?.into_iter().map(|t| t.name).collect();
        ensure!(tenants == ["acme", "beta"], "{backend:?}: tenants {tenants:?}");

        let k1 = read::key_by_hash(&h.store, "aaaa1111").await?;
        ensure!(k1.as_ref().is_some_and(|k| k.key_id == "key_1" && k.tenant == "acme" && k.revoked), "{k1:?}");
        let k2 = read::key_by_hash(&h.store, "bbbb2222").await?;
        ensure!(k2.as_ref().is_some_and(|k| k.tenant == "beta" && !k.revoked && k.prefix == "sk-bbbb"), "{k2:?}");
        ensure!(read::key_by_hash(&h.store, "nope").await?.is_none());
        let acme_keys = read::api_keys(&h.store, Some("acme")).await?;
        ensure!(acme_keys.len() == 1 && acme_keys[0].revoked_at_us == Some(BASE_US + 500), "{acme_keys:?}");
        ensure!(read::api_keys(&h.store, None).await?.len() == 2);

        let channels = read::channels(&h.store).await?;
        ensure!(channels.len() == 2, "{channels:?}");
        ensure!(channels[0].channel_id == "ch_1" && !channels[0].enabled && !channels[0].removed);
        ensure!(
            channels[0].models == ["gpt-4o", "gpt-4o-mini"] && channels[0].priority == 5 && channels[0].weight == 2
        );
        ensure!(channels[0].name == "openai main", "an absent field must keep its value");
        ensure!(channels[1].removed && !channels[1].enabled);

        let latest = read::latest_prices(&h.store).await?;
        ensure!(latest.len() == 2, "{latest:?}");
        ensure!(latest[1].model == "gpt-4o" && latest[1].version == new_price.id.to_string());
        ensure!(latest[1].cached_input_per_mtok_nanos == 2_500_000_000, "absent cached price = input price");
        ensure!(latest[1].cache_write_per_mtok_nanos == 5_000_000_000);
        let history = read::price_history(&h.store, "gpt-4o").await?;
        ensure!(
            history.iter().map(|p| p.version.clone()).collect::<Vec<_>>()
                == [old_price.id.to_string(), new_price.id.to_string()]
        );
    }
    Ok(())
}

#[tokio::test]
async fn channel_price_overrides_stay_apart_from_the_model_price_and_end_with_their_channel() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let model_wide = price_published("gpt-4o", 2_000_000_000, BASE_US + 20);
        let on_ch1_old = channel_price_published("gpt-4o", Some("ch_1"), 1_000_000_000, BASE_US + 21);
        let on_ch1 = channel_price_published("gpt-4o", Some("ch_1"), 1_500_000_000, BASE_US + 22);
        let on_ch2 = channel_price_published("gpt-4o", Some("ch_2"), 1_800_000_000, BASE_US + 23);
        let mut events = channel_events(); // ch_1 updated and kept, ch_2 removed at BASE_US + 13.
        let removal = events.pop().context("no removal event")?;
        events.extend([model_wide.clone(), on_ch1_old.clone(), on_ch1.clone(), on_ch2.clone()]);
        h.append_all(&events).await?;
        h.catch_up(Projection::Control).await?;

        let latest = read::latest_prices(&h.store).await?;
        let seen: Vec<(Option<&str>, &str)> =
            latest.iter().map(|p| (p.channel_id.as_deref(), p.version.as_str())).collect();
        let want_before = [
            (None, model_wide.id.to_string()),
            (Some("ch_1"), on_ch1.id.to_string()),
            (Some("ch_2"), on_ch2.id.to_string()),
        ];
        let want: Vec<(Option<&str>, &str)> = want_before.iter().map(|(c, v)| (*c, v.as_str())).collect();
        ensure!(seen == want, "{backend:?}: latest {latest:?}");
        ensure!(latest[0].input_per_mtok_nanos == 2_000_000_000, "an override leaves the model price");

        // Removing ch_2 ends its override; the history keeps it, and ch_1's stays in force.
        h.append_all(&[removal]).await?;
        h.catch_up(Projection::Control).await?;
        let latest = read::latest_prices(&h.store).await?;
        let channels: Vec<Option<&str>> = latest.iter().map(|p| p.channel_id.as_deref()).collect();
        ensure!(channels == [None, Some("ch_1")], "{backend:?}: latest {latest:?}");
        let history = read::price_history(&h.store, "gpt-4o").await?;
        ensure!(history.len() == 4, "{backend:?}: history {history:?}");
        ensure!(history[3].channel_id.as_deref() == Some("ch_2"));
    }
    Ok(())
}

#[tokio::test]
async fn a_key_reusing_another_keys_hash_is_recorded_as_poison_not_applied() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let clash = key_issued("beta", "key_2", "same-hash", BASE_US + 2);
        h.append_all(&[key_issued("acme", "key_1", "same-hash", BASE_US + 1), clash.clone()]).await?;
        h.catch_up(Projection::Control).await?;
        let key = read::key_by_hash(&h.store, "same-hash").await?;
        ensure!(key.is_some_and(|k| k.key_id == "key_1"), "{backend:?}: the first key keeps the hash");
        let poison = read::poison_events(&h.store, Projection::Control).await?;
        ensure!(poison.len() == 1 && poison[0].event_id == Some(clash.id.to_string()), "{backend:?}: {poison:?}");
    }
    Ok(())
}

fn at(tenant: &str, t: i64, body: EventBody) -> Envelope {
    Envelope::new(tenant, "test", BASE_US + t, body)
}

fn added(id: &str, t: i64, priority: i32) -> Envelope {
    at(
        GLOBAL_TENANT,
        t,
        EventBody::ChannelAdded(ChannelAdded {
            channel_id: id.into(),
            name: format!("{id} name"),
            provider: "openai".into(),
            base_url: format!("https://{id}.test/v1"),
            api_key: None,
            models: vec!["m".into()],
            priority,
            weight: 2,
            api_version: None,
            insecure_http: false,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }),
    )
}

fn updated(t: i64, u: ChannelUpdated) -> Envelope {
    at(GLOBAL_TENANT, t, EventBody::ChannelUpdated(u))
}

fn revoked(tenant: &str, key_id: &str, t: i64) -> Envelope {
    at(tenant, t, EventBody::ApiKeyRevoked(schemas::ApiKeyRevoked { key_id: key_id.into() }))
}

fn removed(id: &str, t: i64) -> Envelope {
    at(GLOBAL_TENANT, t, EventBody::ChannelRemoved(ChannelRemoved { channel_id: id.into() }))
}

/// Every control event type, and every case where the gateway, the CLI and the projection used
/// to disagree: a re-issued key id, a duplicate hash, a revived key, partial channel updates
/// (priority, weight, enabled, name), a channel added twice, overrides of a removed channel, an
/// override for an unknown channel, and removals of unknown entities.
fn fixture() -> Vec<Envelope> {
    let mut acme_again = tenant_created("acme");
    acme_again.occurred_at_us = BASE_US + 2;
    vec![
        tenant_created("acme"),
        acme_again,
        tenant_created("beta"),
        key_issued("acme", "key_1", "h1h1", BASE_US + 4),
        key_issued("acme", "key_1", "h9h9", BASE_US + 5),
        key_issued("beta", "key_2", "h1h1", BASE_US + 6),
        key_issued("acme", "key_3", "h3h3", BASE_US + 7),
        revoked("acme", "key_1", 8),
        revoked("acme", "key_1", 9),
        revoked("acme", "key_unknown", 10),
        key_issued("acme", "key_1", "h1h1", BASE_US + 11),
        added("ch_a", 12, 5),
        added("ch_b", 13, 0),
        updated(
            14,
            ChannelUpdated {
                channel_id: "ch_a".into(),
                name: Some("renamed".into()),
                weight: Some(7),
                enabled: Some(false),
                ..ChannelUpdated::default()
            },
        ),
        updated(
            15,
            ChannelUpdated {
                channel_id: "ch_a".into(),
                priority: Some(-1),
                base_url: Some("https://elsewhere.test/v1".into()),
                ..ChannelUpdated::default()
            },
        ),
        updated(16, ChannelUpdated { channel_id: "ch_x".into(), weight: Some(3), ..ChannelUpdated::default() }),
        price_published("m", 100, BASE_US + 17),
        channel_price_published("m", Some("ch_a"), 70, BASE_US + 18),
        channel_price_published("m", Some("ch_b"), 80, BASE_US + 19),
        added("ch_a", 20, 9),
        removed("ch_b", 21),
        removed("ch_y", 22),
        updated(23, ChannelUpdated { channel_id: "ch_b".into(), weight: Some(9), ..ChannelUpdated::default() }),
        added("ch_b", 24, 1),
        channel_price_published("m2", Some("ch_z"), 5, BASE_US + 25),
        price_published("m", 110, BASE_US + 26),
        added("ch_c", 27, 0),
        updated(28, ChannelUpdated { channel_id: "ch_c".into(), enabled: Some(false), ..ChannelUpdated::default() }),
        // Caps and expiry (the events above carry none, as logs written before them do).
        {
            let mut e = key_issued("beta", "key_4", "h4h4", BASE_US + 29);
            if let EventBody::ApiKeyIssued(k) = &mut e.body {
                k.max_output_tokens = Some(4096);
                k.max_n = Some(2);
                k.expires_at_us = Some(BASE_US + 1_000_000);
            }
            e
        },
        at("beta", 30, tenant_caps("beta", Some(800), Some(3))),
        at("beta", 31, tenant_caps("beta", Some(0), None)),
        at(GLOBAL_TENANT, 40, proxy_added("px_a", "eu-1", true)),
        at(GLOBAL_TENANT, 41, proxy_added("px_b", "eu-2", false)),
        // The name of a live proxy is refused (seq 34).
        at(GLOBAL_TENANT, 42, proxy_added("px_c", "eu-1", false)),
        at(
            GLOBAL_TENANT,
            43,
            EventBody::ProxyStateChanged(schemas::ProxyStateChanged {
                proxy_id: "px_a".into(),
                state: schemas::ProxyState::Open,
                until_us: Some(BASE_US + 99),
                reason: "proxy_failed".into(),
                opens: 2,
                manual: false,
            }),
        ),
        at(GLOBAL_TENANT, 44, EventBody::ProxyRemoved(schemas::ProxyRemoved { proxy_id: "px_b".into() })),
        // A removed id comes back whole.
        at(GLOBAL_TENANT, 45, proxy_added("px_b", "eu-2b", true)),
        updated(46, ChannelUpdated { channel_id: "ch_a".into(), proxy_pool: Some("eu".into()), ..Default::default() }),
    ]
}

fn proxy_added(id: &str, name: &str, credentials: bool) -> EventBody {
    EventBody::ProxyAdded(schemas::ProxyAdded {
        proxy_id: id.into(),
        pool: "eu".into(),
        name: name.into(),
        url: format!("socks5h://{name}.example:1080"),
        credentials: credentials.then(|| schemas::secret::Sealed {
            alg: "x".into(),
            nonce: "n".into(),
            ct: "c".into(),
        }),
        origin: None,
    })
}

fn tenant_caps(name: &str, max_output_tokens: Option<u64>, max_n: Option<u64>) -> EventBody {
    EventBody::TenantUpdated(schemas::TenantUpdated {
        name: name.into(),
        max_output_tokens,
        max_n,
        ..Default::default()
    })
}

#[tokio::test]
async fn the_sql_projection_and_the_control_model_agree_on_one_fixture_log() -> anyhow::Result<()> {
    use schemas::control::{ControlModel, Outcome};

    let events = fixture();
    let mut model = ControlModel::default();
    let mut rejected = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Outcome::Rejected(_) = model.apply(i as u64 + 1, e) {
            rejected.push(i as u64 + 1);
        }
    }
    ensure!(rejected == [5, 6, 11, 34], "the fixture's refused events: {rejected:?}");

    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        h.append_all(&events).await?;
        h.catch_up(Projection::Control).await?;

        let tenants: Vec<_> = read::tenants(&h.store)
            .await?
            .into_iter()
            .map(|t| (t.name, t.created_at_us, t.max_output_tokens, t.max_n))
            .collect();
        let want: Vec<_> =
            model.tenants.values().map(|t| (t.name.clone(), t.created_at_us, t.max_output_tokens, t.max_n)).collect();
        ensure!(
            model.tenants["beta"].max_output_tokens.is_none() && model.tenants["beta"].max_n == Some(3),
            "{:?}",
            model.tenants["beta"]
        );
        ensure!(tenants == want, "{backend:?}: tenants {tenants:?} != {want:?}");

        let keys: Vec<_> = read::api_keys(&h.store, None)
            .await?
            .into_iter()
            .map(|k| {
                let caps = (k.max_output_tokens, k.max_n, k.expires_at_us);
                (k.key_id, k.tenant, k.prefix, k.name, k.models, k.revoked, k.created_at_us, k.revoked_at_us, caps)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let want: Vec<_> = model
            .keys
            .values()
            .map(|k| {
                let k = k.clone();
                let revoked = k.revoked();
                let caps = (k.max_output_tokens, k.max_n, k.expires_at_us);
                (k.key_id, k.tenant, k.prefix, k.name, k.models, revoked, k.created_at_us, k.revoked_at_us, caps)
            })
            .collect();
        ensure!(keys == want, "{backend:?}: keys\n{keys:?}\n!=\n{want:?}");
        for k in model.keys.values() {
            let by_hash = read::key_by_hash(&h.store, &k.hash).await?;
            ensure!(by_hash.is_some_and(|r| r.key_id == k.key_id), "{backend:?}: hash of {}", k.key_id);
        }

        let channels: Vec<_> = read::channels(&h.store)
            .await?
            .into_iter()
            .filter(|c| !c.removed)
            .map(|c| {
                (
                    c.channel_id,
                    c.tenant,
                    c.name,
                    c.provider,
                    c.base_url,
                    c.models,
                    c.priority,
                    c.weight,
                    c.enabled,
                    c.created_at_us,
                    c.updated_at_us,
                    c.proxy_pool,
                )
            })
            .collect();
        let want: Vec<_> = model
            .channels
            .values()
            .map(|c| {
                let c = c.clone();
                (
                    c.channel_id,
                    c.tenant,
                    c.name,
                    c.provider,
                    c.base_url,
                    c.models,
                    i64::from(c.priority),
                    i64::from(c.weight),
                    c.enabled,
                    c.created_at_us,
                    c.updated_at_us,
                    c.proxy_pool,
                )
            })
            .collect();
        ensure!(channels == want, "{backend:?}: channels\n{channels:?}\n!=\n{want:?}");

        let proxies: Vec<_> = read::proxies(&h.store)
            .await?
            .into_iter()
            .map(|p| (p.proxy_id, p.pool, p.name, p.url, p.state, p.until_us, p.opens, p.added_at_us))
            .collect();
        let want: Vec<_> = model
            .proxies
            .values()
            .map(|p| {
                let opens = i64::from(p.opens);
                let state = p.state.as_str().to_owned();
                (
                    p.proxy_id.clone(),
                    p.pool.clone(),
                    p.name.clone(),
                    p.masked_url(),
                    state,
                    p.until_us,
                    opens,
                    p.added_at_us,
                )
            })
            .collect();
        ensure!(want.len() == 2 && want[0].3 == "socks5h://***@eu-1.example:1080", "{want:?}");
        ensure!(proxies == want, "{backend:?}: proxies\n{proxies:?}\n!=\n{want:?}");

        let prices: Vec<_> = read::latest_prices(&h.store)
            .await?
            .into_iter()
            .map(|p| (p.model, p.channel_id, p.version, p.input_per_mtok_nanos, p.cache_write_per_mtok_nanos))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let model_wide = model.prices.values().map(|p| (p, None));
        let overrides = model
            .channel_prices
            .iter()
            .flat_map(|(ch, by_model)| by_model.values().map(move |p| (p, Some(ch.clone()))));
        let want: Vec<_> = model_wide
            .chain(overrides)
            .map(|(p, ch)| {
                let a = p.applied();
                (p.published.model.clone(), ch, a.version, a.input_per_mtok_nanos, a.cache_write_per_mtok_nanos)
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        ensure!(prices == want, "{backend:?}: prices\n{prices:?}\n!=\n{want:?}");

        let poison: Vec<u64> =
            read::poison_events(&h.store, Projection::Control).await?.into_iter().map(|p| p.seq).collect();
        ensure!(poison == rejected, "{backend:?}: refused events {poison:?} != {rejected:?}");
    }
    Ok(())
}

fn user_event(t: i64, body: EventBody) -> Envelope {
    Envelope::new(GLOBAL_TENANT, "test", BASE_US + t, body)
}

fn user_created(id: &str, email: &str, role: schemas::Role, tenant: Option<&str>, t: i64) -> Envelope {
    user_event(
        t,
        EventBody::UserCreated(schemas::UserCreated {
            user_id: id.into(),
            email: email.into(),
            role,
            tenant: tenant.map(str::to_owned),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        }),
    )
}

/// Users: a duplicate id or email is refused, updates and logouts change what they carry,
/// disabling is final; the SQL projection reads back what the control model holds, and tenant
/// filters and cursor paging hold.
#[tokio::test]
async fn users_fold_like_the_control_model_and_page_by_id() -> anyhow::Result<()> {
    use schemas::control::{ControlModel, Outcome};
    use schemas::{Role, UserDisabled, UserSessionsRevoked, UserUpdated};

    let events = vec![
        user_created("usr_1", "owner@x", Role::Owner, None, 1),
        user_created("usr_2", "ops@acme", Role::Admin, Some("acme"), 2),
        user_created("usr_3", "owner@x", Role::Viewer, None, 3),
        user_created("usr_2", "again@acme", Role::Viewer, Some("acme"), 4),
        user_created("usr_4", "money@beta", Role::Billing, Some("beta"), 5),
        user_event(
            6,
            EventBody::UserUpdated(UserUpdated {
                user_id: "usr_2".into(),
                role: Some(Role::Viewer),
                password_hash: Some("$argon2id$new".into()),
            }),
        ),
        user_event(7, EventBody::UserSessionsRevoked(UserSessionsRevoked { user_id: "usr_1".into() })),
        user_event(8, EventBody::UserDisabled(UserDisabled { user_id: "usr_4".into() })),
        user_event(9, EventBody::UserDisabled(UserDisabled { user_id: "usr_4".into() })),
        user_event(
            10,
            EventBody::UserUpdated(UserUpdated {
                user_id: "usr_4".into(),
                role: Some(Role::Owner),
                ..Default::default()
            }),
        ),
    ];
    let mut model = ControlModel::default();
    let mut rejected = Vec::new();
    for (i, e) in events.iter().enumerate() {
        if let Outcome::Rejected(_) = model.apply(i as u64 + 1, e) {
            rejected.push(i as u64 + 1);
        }
    }
    ensure!(rejected == [3, 4], "refused creations: {rejected:?}");
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        h.append_all(&events).await?;
        h.catch_up(Projection::Control).await?;
        let users = read::users(&h.store, None, None, 100).await?;
        let got: Vec<_> =
            users.iter().map(|u| (u.user_id.clone(), u.email.clone(), u.role.clone(), u.tenant.clone())).collect();
        let want: Vec<_> = model
            .users
            .values()
            .map(|u| (u.user_id.clone(), u.email.clone(), u.role.as_str().to_owned(), u.tenant.clone()))
            .collect();
        ensure!(got == want, "{backend:?}: {got:?} != {want:?}");
        let times: Vec<_> = users.iter().map(|u| (u.created_at_us, u.updated_at_us, u.disabled_at_us)).collect();
        let want: Vec<_> = model.users.values().map(|u| (u.created_at_us, u.updated_at_us, u.disabled_at_us)).collect();
        ensure!(times == want, "{backend:?}: {times:?} != {want:?}");
        ensure!(users[2].disabled_at_us == Some(BASE_US + 8) && users[2].role == "billing", "{users:?}");

        let acme: Vec<_> =
            read::users(&h.store, Some("acme"), None, 100).await?.into_iter().map(|u| u.user_id).collect();
        ensure!(acme == ["usr_2"], "{backend:?}: {acme:?}");
        let first = read::users(&h.store, None, None, 2).await?;
        let rest = read::users(&h.store, None, first.last().map(|u| u.user_id.as_str()), 2).await?;
        let paged: Vec<_> = first.iter().chain(&rest).map(|u| u.user_id.as_str()).collect();
        ensure!(paged == ["usr_1", "usr_2", "usr_4"], "{backend:?}: {paged:?}");
    }
    Ok(())
}
