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
