//! Schema migrations, per backend, embedded in the binary and applied in order at connect.
//! Applied versions are recorded in `schema_migrations`; a migration and its record commit
//! together, so a failed migration leaves the store at the previous one.

use sqlx::Row;

use crate::ProjectionError;
use crate::store::{Backend, ReadStore};

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// DDL both backends accept (BIGINT, TEXT, composite keys, `ON CONFLICT`) lives once in
/// `migrations/shared/`; a migration only one backend can run goes in `migrations/postgres/` or
/// `migrations/sqlite/` and into that backend's list alone. Versions stay in step across lists.
const INIT: Migration = Migration { version: 1, name: "init", sql: include_str!("../migrations/shared/0001_init.sql") };

const CHANNEL_PRICES: Migration =
    Migration { version: 2, name: "channel_prices", sql: include_str!("../migrations/shared/0002_channel_prices.sql") };

const KEY_TENANT_USAGE: Migration = Migration {
    version: 3,
    name: "key_tenant_usage",
    sql: include_str!("../migrations/shared/0003_key_tenant_usage.sql"),
};

const USERS: Migration =
    Migration { version: 4, name: "users", sql: include_str!("../migrations/shared/0004_users.sql") };

const POSTGRES: &[Migration] = &[INIT, CHANNEL_PRICES, KEY_TENANT_USAGE, USERS];

const SQLITE: &[Migration] = &[INIT, CHANNEL_PRICES, KEY_TENANT_USAGE, USERS];

const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL)";

/// Serialises migrating processes on Postgres (several workers may start at once).
const PG_MIGRATION_LOCK: i64 = 0x4c4c_4d52_0000_0000;

/// Applies every migration not yet recorded.
pub(crate) async fn migrate(store: &ReadStore) -> Result<(), ProjectionError> {
    let migrations = match store.backend() {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    };
    let pool = store.pool();
    for m in migrations {
        let fail = |source| ProjectionError::Migration { version: m.version, name: m.name, source };
        let mut tx = pool.begin().await.map_err(fail)?;
        if store.backend() == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(PG_MIGRATION_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        sqlx::Executor::execute(&mut *tx, CREATE_TABLE).await.map_err(fail)?;
        let applied = sqlx::query("SELECT COUNT(*) AS n FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_one(&mut *tx)
            .await
            .map_err(fail)?
            .try_get::<i64, _>("n")
            .map_err(fail)?;
        if applied > 0 {
            continue;
        }
        sqlx::Executor::execute(&mut *tx, m.sql).await.map_err(fail)?;
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(m.version)
            .bind(m.name)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "Read store migration applied.");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_backends_have_the_same_migrations_in_increasing_order() {
        let pg: Vec<(i64, &str)> = POSTGRES.iter().map(|m| (m.version, m.name)).collect();
        let lite: Vec<(i64, &str)> = SQLITE.iter().map(|m| (m.version, m.name)).collect();
        assert_eq!(pg, lite);
        assert!(pg.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(pg.first().is_some_and(|m| m.0 == 1));
    }
}
