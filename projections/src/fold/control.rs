//! The `control` projection: tenants, API keys (hash and display prefix only), channels and the
//! price history (model-wide prices and per-channel overrides). A channel's sealed credential is deliberately not stored: the gateway reads
//! it from the log, and a read model is no place for secrets, even sealed ones.

use schemas::{AppliedPrice, Envelope, EventBody};
use sqlx::AnyConnection;

use super::Folded;

pub(super) async fn apply(
    conn: &mut AnyConnection,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    let at = env.occurred_at_us;
    match &env.body {
        EventBody::TenantCreated(t) => {
            sqlx::query(
                "INSERT INTO tenants (generation, name, created_at_us) VALUES ($1, $2, $3) \
                 ON CONFLICT (generation, name) DO NOTHING",
            )
            .bind(generation)
            .bind(&t.name)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(Folded::Applied)
        }
        EventBody::ApiKeyIssued(k) => {
            let models = match &k.models {
                Some(m) => Some(serde_json::to_string(m).map_err(|e| sqlx::Error::Encode(Box::new(e)))?),
                None => None,
            };
            // No conflict target: a clash on either the key id or the hash is refused.
            let inserted = sqlx::query(
                "INSERT INTO api_keys (generation, key_id, tenant, hash, prefix, name, models, revoked, \
                 created_at_us, revoked_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, NULL) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(generation)
            .bind(&k.key_id)
            .bind(&env.tenant)
            .bind(&k.hash)
            .bind(&k.prefix)
            .bind(k.name.clone())
            .bind(models)
            .bind(at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if inserted == 1 {
                Ok(Folded::Applied)
            } else {
                Ok(Folded::Rejected(format!("api key {} clashes with an existing key id or hash", k.key_id)))
            }
        }
        EventBody::ApiKeyRevoked(k) => {
            // Revoking twice keeps the first revocation time.
            sqlx::query(
                "UPDATE api_keys SET revoked = 1, revoked_at_us = $1 \
                 WHERE generation = $2 AND key_id = $3 AND revoked = 0",
            )
            .bind(at)
            .bind(generation)
            .bind(&k.key_id)
            .execute(&mut *conn)
            .await?;
            Ok(Folded::Applied)
        }
        EventBody::ChannelAdded(c) => {
            let models = serde_json::to_string(&c.models).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            // Adding an existing id again (e.g. after a removal) replaces it.
            sqlx::query(
                "INSERT INTO channels (generation, channel_id, tenant, name, provider, base_url, models, priority, \
                 weight, enabled, removed, created_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, 0, $10, $10) \
                 ON CONFLICT (generation, channel_id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name, \
                 provider = excluded.provider, base_url = excluded.base_url, models = excluded.models, \
                 priority = excluded.priority, weight = excluded.weight, enabled = 1, removed = 0, \
                 updated_at_us = excluded.updated_at_us",
            )
            .bind(generation)
            .bind(&c.channel_id)
            .bind(&env.tenant)
            .bind(&c.name)
            .bind(&c.provider)
            .bind(&c.base_url)
            .bind(models)
            .bind(i64::from(c.priority))
            .bind(i64::from(c.weight))
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(Folded::Applied)
        }
        EventBody::ChannelUpdated(c) => {
            let models = match &c.models {
                Some(m) => Some(serde_json::to_string(m).map_err(|e| sqlx::Error::Encode(Box::new(e)))?),
                None => None,
            };
            sqlx::query(
                "UPDATE channels SET name = COALESCE($1, name), base_url = COALESCE($2, base_url), \
                 models = COALESCE($3, models), priority = COALESCE($4, priority), weight = COALESCE($5, weight), \
                 enabled = COALESCE($6, enabled), updated_at_us = $7 WHERE generation = $8 AND channel_id = $9",
            )
            .bind(c.name.clone())
            .bind(c.base_url.clone())
            .bind(models)
            .bind(c.priority.map(i64::from))
            .bind(c.weight.map(i64::from))
            .bind(c.enabled.map(i64::from))
            .bind(at)
            .bind(generation)
            .bind(&c.channel_id)
            .execute(&mut *conn)
            .await?;
            Ok(Folded::Applied)
        }
        EventBody::ChannelRemoved(c) => {
            sqlx::query(
                "UPDATE channels SET removed = 1, enabled = 0, updated_at_us = $1 \
                 WHERE generation = $2 AND channel_id = $3",
            )
            .bind(at)
            .bind(generation)
            .bind(&c.channel_id)
            .execute(&mut *conn)
            .await?;
            // The gateway forgets a removed channel's price overrides; they stay in the history
            // (ledger rows name their version) but are no longer in force.
            sqlx::query("UPDATE prices SET retired = 1 WHERE generation = $1 AND channel_id = $2")
                .bind(generation)
                .bind(&c.channel_id)
                .execute(&mut *conn)
                .await?;
            Ok(Folded::Applied)
        }
        EventBody::PricePublished(p) => {
            // The same defaults the gateway applies when it charges (absent cached = input price).
            let version = env.id.to_string();
            let price = AppliedPrice::from((version.as_str(), p));
            sqlx::query(
                "INSERT INTO prices (generation, version, seq, model, currency, input_per_mtok_nanos, \
                 cached_input_per_mtok_nanos, cache_write_per_mtok_nanos, output_per_mtok_nanos, published_at_us, \
                 channel_id, retired) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0) ON CONFLICT DO NOTHING",
            )
            .bind(generation)
            .bind(&price.version)
            .bind(seq)
            .bind(&p.model)
            .bind(&price.currency)
            .bind(price.input_per_mtok_nanos)
            .bind(price.cached_input_per_mtok_nanos)
            .bind(price.cache_write_per_mtok_nanos)
            .bind(price.output_per_mtok_nanos)
            .bind(at)
            // '' = every channel (see migration 0002).
            .bind(p.channel_id.clone().unwrap_or_default())
            .execute(&mut *conn)
            .await?;
            Ok(Folded::Applied)
        }
        EventBody::UsageRecorded(_) | EventBody::RequestLogged(_) | EventBody::AuthFailuresCounted(_) => {
            Ok(Folded::Ignored)
        }
    }
}
