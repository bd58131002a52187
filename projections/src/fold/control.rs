//! The `control` projection: tenants, API keys (hash and display prefix only), channels and the
//! price history (model-wide prices and per-channel overrides). A channel's sealed credential is
//! deliberately not stored: the gateway reads it from the log, and a read model is no place for
//! secrets, even sealed ones.
//!
//! The rules are the control model's (`schemas::control`): each event loads the rows it touches
//! into a partial [`ControlModel`], the model applies the event, and what it changed is written
//! back. No rule is decided here.

use schemas::ProxyState;
use schemas::control::{Change, Channel, ControlModel, Key, Outcome, Proxy, Tenant, User};
use schemas::secret::Sealed;
use schemas::{Envelope, EventBody};
use sqlx::{AnyConnection, Row as _};

use super::Folded;

pub(super) async fn apply(
    conn: &mut AnyConnection,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    let mut model = touched(conn, generation, env).await?;
    match model.apply(u64::try_from(seq).unwrap_or(0), env) {
        Outcome::NotControl => Ok(Folded::Ignored),
        Outcome::Rejected(reason) => Ok(Folded::Rejected(reason)),
        Outcome::Unchanged => {
            audit(conn, generation, seq, env).await?;
            Ok(Folded::Applied)
        }
        Outcome::Changed(change) => {
            write(conn, generation, seq, env, &model, &change).await?;
            audit(conn, generation, seq, env).await?;
            Ok(Folded::Applied)
        }
    }
}

/// The id of the entity a control event is about.
fn entity_id(body: &EventBody) -> Option<&str> {
    match body {
        EventBody::TenantCreated(t) => Some(&t.name),
        EventBody::TenantUpdated(t) => Some(&t.name),
        EventBody::ApiKeyIssued(k) => Some(&k.key_id),
        EventBody::ApiKeyRevoked(k) => Some(&k.key_id),
        EventBody::ChannelAdded(c) => Some(&c.channel_id),
        EventBody::ChannelUpdated(c) => Some(&c.channel_id),
        EventBody::ChannelRemoved(c) => Some(&c.channel_id),
        EventBody::PricePublished(p) => Some(&p.model),
        EventBody::UserCreated(u) => Some(&u.user_id),
        EventBody::UserUpdated(u) => Some(&u.user_id),
        EventBody::UserDisabled(u) => Some(&u.user_id),
        EventBody::UserSessionsRevoked(u) => Some(&u.user_id),
        EventBody::ChannelKeyAdded(k) => Some(&k.key_id),
        EventBody::ChannelKeyRemoved(k) => Some(&k.key_id),
        EventBody::ChannelKeyUpdated(k) => Some(&k.key_id),
        EventBody::UpstreamKeyStateChanged(k) => Some(&k.key_id),
        EventBody::RouteSet(r) => Some(&r.model),
        EventBody::RouteRemoved(r) => Some(&r.model),
        EventBody::ProxyAdded(p) => Some(&p.proxy_id),
        EventBody::ProxyRemoved(p) => Some(&p.proxy_id),
        EventBody::ProxyStateChanged(p) => Some(&p.proxy_id),
        EventBody::SessionSecretGenerated(_)
        | EventBody::UsageRecorded(_)
        | EventBody::RequestLogged(_)
        | EventBody::AuthFailuresCounted(_)
        | EventBody::HealthChecked(_) => None,
    }
}

/// One audit row per applied control event (who, what, when, from where); no event data.
async fn audit(conn: &mut AnyConnection, generation: i64, seq: i64, env: &Envelope) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit (generation, seq, event_id, event_type, entity_id, tenant, actor, actor_addr, source, \
         occurred_at_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
    )
    .bind(generation)
    .bind(seq)
    .bind(env.id.to_string())
    .bind(env.body.type_name())
    .bind(entity_id(&env.body).map(str::to_owned))
    .bind(&env.tenant)
    .bind(env.actor.clone())
    .bind(env.actor_addr.clone())
    .bind(&env.source)
    .bind(env.occurred_at_us)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

fn encode(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Encode(Box::new(e))
}

fn decode(e: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

/// The part of the model `env` reads: the rows of the entities it names.
async fn touched(conn: &mut AnyConnection, generation: i64, env: &Envelope) -> Result<ControlModel, sqlx::Error> {
    let mut model = ControlModel::default();
    match &env.body {
        EventBody::TenantCreated(t) => load_tenant(conn, generation, &t.name, &mut model).await?,
        EventBody::TenantUpdated(t) => load_tenant(conn, generation, &t.name, &mut model).await?,
        EventBody::ApiKeyIssued(k) => load_keys(conn, generation, &k.key_id, &k.hash, &mut model).await?,
        EventBody::ApiKeyRevoked(k) => load_keys(conn, generation, &k.key_id, "", &mut model).await?,
        EventBody::ChannelAdded(c) => load_channel(conn, generation, &c.channel_id, &mut model).await?,
        EventBody::ChannelUpdated(c) => load_channel(conn, generation, &c.channel_id, &mut model).await?,
        EventBody::ChannelRemoved(c) => load_channel(conn, generation, &c.channel_id, &mut model).await?,
        EventBody::UserCreated(u) => load_users(conn, generation, &u.user_id, &u.email, &mut model).await?,
        EventBody::UserUpdated(u) => load_users(conn, generation, &u.user_id, "", &mut model).await?,
        EventBody::UserDisabled(u) => load_users(conn, generation, &u.user_id, "", &mut model).await?,
        EventBody::UserSessionsRevoked(u) => load_users(conn, generation, &u.user_id, "", &mut model).await?,
        EventBody::ProxyAdded(p) => load_proxies(conn, generation, &p.proxy_id, &p.name, &mut model).await?,
        EventBody::ProxyRemoved(p) => load_proxies(conn, generation, &p.proxy_id, "", &mut model).await?,
        EventBody::ProxyStateChanged(p) => load_proxies(conn, generation, &p.proxy_id, "", &mut model).await?,
        EventBody::SessionSecretGenerated(_)
        | EventBody::PricePublished(_)
        | EventBody::UsageRecorded(_)
        | EventBody::RequestLogged(_)
        | EventBody::AuthFailuresCounted(_)
        | EventBody::HealthChecked(_) => {}
        // Upstream keys and their states live in the gateways' memory and the log; the channel
        // read model does not list them (yet), so nothing is loaded and nothing written.
        EventBody::ChannelKeyAdded(_)
        | EventBody::ChannelKeyRemoved(_)
        | EventBody::ChannelKeyUpdated(_)
        | EventBody::UpstreamKeyStateChanged(_)
        | EventBody::RouteSet(_)
        | EventBody::RouteRemoved(_) => {}
    }
    Ok(model)
}

async fn load_keys(
    conn: &mut AnyConnection,
    generation: i64,
    key_id: &str,
    hash: &str,
    model: &mut ControlModel,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT key_id, tenant, hash, prefix, name, models, tenant_usage, created_at_us, revoked_at_us, \
         max_output_tokens, max_n, expires_at_us FROM api_keys WHERE generation = $1 AND (key_id = $2 OR hash = $3)",
    )
    .bind(generation)
    .bind(key_id)
    .bind(hash)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let models: Option<String> = r.try_get("models")?;
        model.insert_key(Key {
            key_id: r.try_get("key_id")?,
            tenant: r.try_get("tenant")?,
            hash: r.try_get("hash")?,
            prefix: r.try_get("prefix")?,
            name: r.try_get("name")?,
            models: models.as_deref().map(serde_json::from_str).transpose().map_err(decode)?,
            tenant_usage: r.try_get::<i64, _>("tenant_usage")? != 0,
            created_at_us: r.try_get("created_at_us")?,
            revoked_at_us: r.try_get("revoked_at_us")?,
            max_output_tokens: cap(&r, "max_output_tokens")?,
            max_n: cap(&r, "max_n")?,
            expires_at_us: r.try_get("expires_at_us")?,
        });
    }
    Ok(())
}

/// A nullable cap column.
fn cap(r: &sqlx::any::AnyRow, column: &str) -> Result<Option<u64>, sqlx::Error> {
    Ok(r.try_get::<Option<i64>, _>(column)?.and_then(|v| u64::try_from(v).ok()))
}

async fn load_tenant(
    conn: &mut AnyConnection,
    generation: i64,
    name: &str,
    model: &mut ControlModel,
) -> Result<(), sqlx::Error> {
    let row = sqlx::query(
        "SELECT name, created_at_us, display_name, time_zone, max_output_tokens, max_n FROM tenants \
         WHERE generation = $1 AND name = $2",
    )
    .bind(generation)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(r) = row {
        let tenant = Tenant {
            name: r.try_get("name")?,
            created_at_us: r.try_get("created_at_us")?,
            display_name: r.try_get("display_name")?,
            time_zone: r.try_get("time_zone")?,
            max_output_tokens: cap(&r, "max_output_tokens")?,
            max_n: cap(&r, "max_n")?,
        };
        model.tenants.insert(tenant.name.clone(), tenant);
    }
    Ok(())
}

/// Loads the users with this id or email. The password hash is not stored (the model's rules
/// never compare it), so the loaded users carry none.
async fn load_users(
    conn: &mut AnyConnection,
    generation: i64,
    user_id: &str,
    email: &str,
    model: &mut ControlModel,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT user_id, email, role, tenant, created_at_us, updated_at_us, disabled_at_us, sessions_not_before_us \
         FROM users WHERE generation = $1 AND (user_id = $2 OR email = $3)",
    )
    .bind(generation)
    .bind(user_id)
    .bind(email)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let role: String = r.try_get("role")?;
        let role = schemas::Role::parse(&role)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown role {role:?} in users").into()))?;
        model.insert_user(User {
            user_id: r.try_get("user_id")?,
            email: r.try_get("email")?,
            role,
            tenant: r.try_get("tenant")?,
            password_hash: String::new(),
            created_at_us: r.try_get("created_at_us")?,
            updated_at_us: r.try_get("updated_at_us")?,
            disabled_at_us: r.try_get("disabled_at_us")?,
            sessions_not_before_us: r.try_get("sessions_not_before_us")?,
        });
    }
    Ok(())
}

/// Loads the live proxies with this id or name. Their sealed credentials are not stored: a loaded
/// proxy carries a stand-in when it had some, so [`Proxy::masked_url`] stays right; the model's
/// rules never open it.
async fn load_proxies(
    conn: &mut AnyConnection,
    generation: i64,
    proxy_id: &str,
    name: &str,
    model: &mut ControlModel,
) -> Result<(), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT proxy_id, pool, name, masked_url, has_credentials, from_pool_url, state, until_us, reason, opens, \
         manual, added_at_us FROM proxies WHERE generation = $1 AND removed = 0 AND (proxy_id = $2 OR name = $3)",
    )
    .bind(generation)
    .bind(proxy_id)
    .bind(name)
    .fetch_all(&mut *conn)
    .await?;
    for r in rows {
        let state: String = r.try_get("state")?;
        let state = match state.as_str() {
            "open" => ProxyState::Open,
            "disabled" => ProxyState::Disabled,
            _ => ProxyState::Active,
        };
        let masked: String = r.try_get("masked_url")?;
        let has_credentials = r.try_get::<i64, _>("has_credentials")? != 0;
        let proxy = Proxy {
            proxy_id: r.try_get("proxy_id")?,
            pool: r.try_get("pool")?,
            name: r.try_get("name")?,
            url: masked.replacen("***@", "", 1),
            credentials: has_credentials.then(|| Sealed {
                alg: String::new(),
                nonce: String::new(),
                ct: String::new(),
            }),
            from_pool_url: r.try_get::<i64, _>("from_pool_url")? != 0,
            state,
            until_us: r.try_get("until_us")?,
            reason: r.try_get("reason")?,
            opens: u32::try_from(r.try_get::<i64, _>("opens")?).unwrap_or(0),
            manual: r.try_get::<i64, _>("manual")? != 0,
            added_at_us: r.try_get("added_at_us")?,
        };
        model.proxies.insert(proxy.proxy_id.clone(), proxy);
    }
    Ok(())
}

/// Loads a live channel. Its sealed key and api-version are not stored; the model's rules never
/// read them, and nothing here writes them.
async fn load_channel(
    conn: &mut AnyConnection,
    generation: i64,
    channel_id: &str,
    model: &mut ControlModel,
) -> Result<(), sqlx::Error> {
    let row = sqlx::query(
        "SELECT channel_id, tenant, name, provider, base_url, models, priority, weight, enabled, created_at_us, \
         updated_at_us, proxy_pool FROM channels WHERE generation = $1 AND channel_id = $2 AND removed = 0",
    )
    .bind(generation)
    .bind(channel_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(r) = row else { return Ok(()) };
    let models: String = r.try_get("models")?;
    let channel = Channel {
        channel_id: r.try_get("channel_id")?,
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        provider: r.try_get("provider")?,
        base_url: r.try_get("base_url")?,
        api_key: None,
        keys: Vec::new(),
        models: serde_json::from_str(&models).map_err(decode)?,
        priority: i32::try_from(r.try_get::<i64, _>("priority")?).unwrap_or_default(),
        weight: u32::try_from(r.try_get::<i64, _>("weight")?).unwrap_or(1),
        enabled: r.try_get::<i64, _>("enabled")? != 0,
        api_version: None,
        anthropic_beta: Vec::new(),
        proxy_pool: r.try_get("proxy_pool")?,
        created_at_us: r.try_get("created_at_us")?,
        updated_at_us: r.try_get("updated_at_us")?,
    };
    model.channels.insert(channel.channel_id.clone(), channel);
    Ok(())
}

/// Writes the entity `change` names as the model now has it.
async fn write(
    conn: &mut AnyConnection,
    generation: i64,
    seq: i64,
    env: &Envelope,
    model: &ControlModel,
    change: &Change,
) -> Result<(), sqlx::Error> {
    match change {
        // Routes live in the gateways' memory and the log; no read model lists them yet.
        Change::Route(_) => {}
        Change::Tenant(name) => {
            let Some(t) = model.tenants.get(name) else { return Ok(()) };
            sqlx::query(
                "INSERT INTO tenants (generation, name, created_at_us, display_name, time_zone, max_output_tokens, max_n) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (generation, name) DO UPDATE SET \
                 display_name = excluded.display_name, time_zone = excluded.time_zone, \
                 max_output_tokens = excluded.max_output_tokens, max_n = excluded.max_n",
            )
            .bind(generation)
            .bind(&t.name)
            .bind(t.created_at_us)
            .bind(t.display_name.clone())
            .bind(t.time_zone.clone())
            .bind(t.max_output_tokens.and_then(|m| i64::try_from(m).ok()))
            .bind(t.max_n.and_then(|m| i64::try_from(m).ok()))
            .execute(&mut *conn)
            .await?;
        }
        Change::Key(id) => {
            let Some(k) = model.keys.get(id) else { return Ok(()) };
            let models = k.models.as_ref().map(serde_json::to_string).transpose().map_err(encode)?;
            sqlx::query(
                "INSERT INTO api_keys (generation, key_id, tenant, hash, prefix, name, models, revoked, \
                 created_at_us, revoked_at_us, tenant_usage, max_output_tokens, max_n, expires_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (generation, key_id) DO UPDATE SET revoked = excluded.revoked, \
                 revoked_at_us = excluded.revoked_at_us",
            )
            .bind(generation)
            .bind(&k.key_id)
            .bind(&k.tenant)
            .bind(&k.hash)
            .bind(&k.prefix)
            .bind(k.name.clone())
            .bind(models)
            .bind(i64::from(k.revoked()))
            .bind(k.created_at_us)
            .bind(k.revoked_at_us)
            .bind(i64::from(k.tenant_usage))
            .bind(k.max_output_tokens.and_then(|m| i64::try_from(m).ok()))
            .bind(k.max_n.and_then(|m| i64::try_from(m).ok()))
            .bind(k.expires_at_us)
            .execute(&mut *conn)
            .await?;
        }
        Change::Channel(id) => {
            let Some(c) = model.channels.get(id) else { return Ok(()) };
            let models = serde_json::to_string(&c.models).map_err(encode)?;
            sqlx::query(
                "INSERT INTO channels (generation, channel_id, tenant, name, provider, base_url, models, priority, \
                 weight, enabled, removed, created_at_us, updated_at_us, proxy_pool) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11, $12, $13) \
                 ON CONFLICT (generation, channel_id) DO UPDATE SET tenant = excluded.tenant, name = excluded.name, \
                 provider = excluded.provider, base_url = excluded.base_url, models = excluded.models, \
                 priority = excluded.priority, weight = excluded.weight, enabled = excluded.enabled, removed = 0, \
                 created_at_us = excluded.created_at_us, updated_at_us = excluded.updated_at_us, \
                 proxy_pool = excluded.proxy_pool",
            )
            .bind(generation)
            .bind(&c.channel_id)
            .bind(&c.tenant)
            .bind(&c.name)
            .bind(&c.provider)
            .bind(&c.base_url)
            .bind(models)
            .bind(i64::from(c.priority))
            .bind(i64::from(c.weight))
            .bind(i64::from(c.enabled))
            .bind(c.created_at_us)
            .bind(c.updated_at_us)
            .bind(c.proxy_pool.clone())
            .execute(&mut *conn)
            .await?;
        }
        Change::ChannelRemoved(id) => {
            sqlx::query(
                "UPDATE channels SET removed = 1, enabled = 0, updated_at_us = $1 \
                 WHERE generation = $2 AND channel_id = $3",
            )
            .bind(env.occurred_at_us)
            .bind(generation)
            .bind(id)
            .execute(&mut *conn)
            .await?;
            // The overrides stay in the history (ledger rows name their version) but are no
            // longer in force.
            sqlx::query("UPDATE prices SET retired = 1 WHERE generation = $1 AND channel_id = $2")
                .bind(generation)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
        Change::Price { model: name, channel_id } => {
            let price = match channel_id {
                None => model.prices.get(name),
                Some(ch) => model.channel_prices.get(ch).and_then(|m| m.get(name)),
            };
            let Some(price) = price else { return Ok(()) };
            let applied = price.applied();
            sqlx::query(
                "INSERT INTO prices (generation, version, seq, model, currency, input_per_mtok_nanos, \
                 cached_input_per_mtok_nanos, cache_write_per_mtok_nanos, output_per_mtok_nanos, published_at_us, \
                 channel_id, retired) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 0) ON CONFLICT DO NOTHING",
            )
            .bind(generation)
            .bind(&applied.version)
            .bind(seq)
            .bind(name)
            .bind(&applied.currency)
            .bind(applied.input_per_mtok_nanos)
            .bind(applied.cached_input_per_mtok_nanos)
            .bind(applied.cache_write_per_mtok_nanos)
            .bind(applied.output_per_mtok_nanos)
            .bind(price.published_at_us)
            // '' = every channel (see migration 0002).
            .bind(channel_id.clone().unwrap_or_default())
            .execute(&mut *conn)
            .await?;
        }
        Change::User(id) => {
            let Some(u) = model.users.get(id) else { return Ok(()) };
            sqlx::query(
                "INSERT INTO users (generation, user_id, email, role, tenant, created_at_us, updated_at_us, \
                 disabled_at_us, sessions_not_before_us) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (generation, user_id) DO UPDATE SET role = excluded.role, \
                 updated_at_us = excluded.updated_at_us, disabled_at_us = excluded.disabled_at_us, \
                 sessions_not_before_us = excluded.sessions_not_before_us",
            )
            .bind(generation)
            .bind(&u.user_id)
            .bind(&u.email)
            .bind(u.role.as_str())
            .bind(u.tenant.clone())
            .bind(u.created_at_us)
            .bind(u.updated_at_us)
            .bind(u.disabled_at_us)
            .bind(u.sessions_not_before_us)
            .execute(&mut *conn)
            .await?;
        }
        // The secret stays in the log; a read model holds no secrets.
        Change::SessionSecret => {}
        Change::Proxy(id) => {
            let Some(p) = model.proxies.get(id) else { return Ok(()) };
            sqlx::query(
                "INSERT INTO proxies (generation, proxy_id, pool, name, masked_url, has_credentials, from_pool_url, \
                 state, until_us, reason, opens, manual, removed, added_at_us, updated_at_us) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14) \
                 ON CONFLICT (generation, proxy_id) DO UPDATE SET pool = excluded.pool, name = excluded.name, \
                 masked_url = excluded.masked_url, has_credentials = excluded.has_credentials, \
                 from_pool_url = excluded.from_pool_url, state = excluded.state, until_us = excluded.until_us, \
                 reason = excluded.reason, opens = excluded.opens, manual = excluded.manual, removed = 0, \
                 added_at_us = excluded.added_at_us, updated_at_us = excluded.updated_at_us",
            )
            .bind(generation)
            .bind(&p.proxy_id)
            .bind(&p.pool)
            .bind(&p.name)
            .bind(p.masked_url())
            .bind(i64::from(p.credentials.is_some()))
            .bind(i64::from(p.from_pool_url))
            .bind(p.state.as_str())
            .bind(p.until_us)
            .bind(p.reason.clone())
            .bind(i64::from(p.opens))
            .bind(i64::from(p.manual))
            .bind(p.added_at_us)
            .bind(env.occurred_at_us)
            .execute(&mut *conn)
            .await?;
        }
        Change::ProxyRemoved(id) => {
            sqlx::query("UPDATE proxies SET removed = 1, updated_at_us = $1 WHERE generation = $2 AND proxy_id = $3")
                .bind(env.occurred_at_us)
                .bind(generation)
                .bind(id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}
