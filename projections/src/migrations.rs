//! Schema migrations, per backend, embedded in the binary and applied in order at connect.
//! Applied versions are recorded in `schema_migrations` with the SHA-256 of their text; a
//! migration and its record commit together, so a failed migration leaves the store at the
//! previous one. A recorded migration whose text has changed since is refused
//! ([`ProjectionError::MigrationChanged`]) before anything is migrated: the store's schema may
//! not be what the text now says. Records from before checksums existed get theirs on the next
//! start (the text they ran is taken to be the one in the binary; there is nothing else to
//! compare with).

use sha2::{Digest, Sha256};
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

const USAGE_SLOTS: Migration =
    Migration { version: 5, name: "usage_slots", sql: include_str!("../migrations/shared/0005_usage_slots.sql") };

const REQUEST_CAPS: Migration =
    Migration { version: 6, name: "request_caps", sql: include_str!("../migrations/shared/0006_request_caps.sql") };

const REQUEST_LOG: Migration =
    Migration { version: 7, name: "request_log", sql: include_str!("../migrations/shared/0007_request_log.sql") };

const HEALTH: Migration =
    Migration { version: 8, name: "health", sql: include_str!("../migrations/shared/0008_health.sql") };

const PROXIES: Migration =
    Migration { version: 9, name: "proxies", sql: include_str!("../migrations/shared/0009_proxies.sql") };

const IDEMPOTENCY: Migration =
    Migration { version: 10, name: "idempotency", sql: include_str!("../migrations/shared/0010_idempotency.sql") };

const ROLLUP_TIERS: Migration =
    Migration { version: 11, name: "rollup_tiers", sql: include_str!("../migrations/shared/0011_rollup_tiers.sql") };

const PROXY_HEALTH: Migration =
    Migration { version: 12, name: "proxy_health", sql: include_str!("../migrations/shared/0012_proxy_health.sql") };

const POSTGRES: &[Migration] = &[
    INIT,
    CHANNEL_PRICES,
    KEY_TENANT_USAGE,
    USERS,
    USAGE_SLOTS,
    REQUEST_CAPS,
    REQUEST_LOG,
    HEALTH,
    PROXIES,
    IDEMPOTENCY,
    ROLLUP_TIERS,
    PROXY_HEALTH,
];

const SQLITE: &[Migration] = POSTGRES;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations \
     (version BIGINT PRIMARY KEY, name TEXT NOT NULL, checksum TEXT)";

/// The checksum column, for a table created before it existed.
const ADD_CHECKSUM_PG: &str = "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum TEXT";
const HAS_CHECKSUM_SQLITE: &str =
    "SELECT COUNT(*) AS n FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'";
const ADD_CHECKSUM_SQLITE: &str = "ALTER TABLE schema_migrations ADD COLUMN checksum TEXT";

/// The hex SHA-256 of a migration's text, as recorded.
fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
}

/// Serialises migrating processes on Postgres (several workers may start at once).
const PG_MIGRATION_LOCK: i64 = 0x4c4c_4d52_0000_0000;

/// Applies every migration not yet recorded.
pub(crate) async fn migrate(store: &ReadStore) -> Result<(), ProjectionError> {
    let migrations = match store.backend() {
        Backend::Postgres => POSTGRES,
        Backend::Sqlite => SQLITE,
    };
    apply(store, migrations).await
}

/// Checks the recorded migrations of `migrations` against their text, then applies the ones not
/// yet recorded, in order.
async fn apply(store: &ReadStore, migrations: &[Migration]) -> Result<(), ProjectionError> {
    let pool = store.pool();
    // Every check before any change: a store with a changed migration is left as it is.
    for m in migrations {
        let fail = |source| ProjectionError::Migration { version: m.version, name: m.name, source };
        let mut tx = pool.begin().await.map_err(fail)?;
        lock_and_prepare(store, &mut tx).await.map_err(fail)?;
        let recorded = sqlx::query("SELECT checksum FROM schema_migrations WHERE version = $1")
            .bind(m.version)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail)?;
        let Some(row) = recorded else { continue };
        let current = checksum(m.sql);
        match row.try_get::<Option<String>, _>("checksum").map_err(fail)? {
            Some(recorded) if recorded == current => {}
            Some(recorded) => {
                return Err(ProjectionError::MigrationChanged { version: m.version, name: m.name, recorded, current });
            }
            None => {
                sqlx::query("UPDATE schema_migrations SET checksum = $1 WHERE version = $2")
                    .bind(&current)
                    .bind(m.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
                tx.commit().await.map_err(fail)?;
                tracing::info!(version = m.version, name = m.name, "Read store migration checksum recorded.");
            }
        }
    }
    for m in migrations {
        let fail = |source| ProjectionError::Migration { version: m.version, name: m.name, source };
        let mut tx = pool.begin().await.map_err(fail)?;
        lock_and_prepare(store, &mut tx).await.map_err(fail)?;
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
        sqlx::query("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)")
            .bind(m.version)
            .bind(m.name)
            .bind(checksum(m.sql))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(version = m.version, name = m.name, "Read store migration applied.");
    }
    Ok(())
}

/// Takes the Postgres migration lock (held until `tx` ends) and makes sure `schema_migrations`
/// exists with its checksum column.
async fn lock_and_prepare(store: &ReadStore, tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), sqlx::Error> {
    match store.backend() {
        Backend::Postgres => {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(PG_MIGRATION_LOCK).execute(&mut **tx).await?;
            sqlx::Executor::execute(&mut **tx, CREATE_TABLE).await?;
            sqlx::Executor::execute(&mut **tx, ADD_CHECKSUM_PG).await?;
        }
        Backend::Sqlite => {
            sqlx::Executor::execute(&mut **tx, CREATE_TABLE).await?;
            let has = sqlx::query(HAS_CHECKSUM_SQLITE).fetch_one(&mut **tx).await?.try_get::<i64, _>("n")?;
            if has == 0 {
                sqlx::Executor::execute(&mut **tx, ADD_CHECKSUM_SQLITE).await?;
            }
        }
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

    /// A SQLite store in a fresh directory and a fresh Postgres database, each migrated.
    async fn stores() -> anyhow::Result<(Vec<ReadStore>, tempfile::TempDir, testkit::postgres::TestDb)> {
        let dir = tempfile::tempdir()?;
        let pg = testkit::postgres::fresh_database().await?;
        let sqlite = ReadStore::connect(&format!("sqlite://{}/read.db?mode=rwc", dir.path().display())).await?;
        let postgres = ReadStore::connect(pg.url()).await?;
        Ok((vec![sqlite, postgres], dir, pg))
    }

    async fn recorded(store: &ReadStore) -> anyhow::Result<Vec<(i64, Option<String>)>> {
        let rows = sqlx::query("SELECT version, checksum FROM schema_migrations ORDER BY version")
            .fetch_all(store.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| Ok((r.try_get("version")?, r.try_get("checksum")?)))
            .collect::<Result<_, sqlx::Error>>()?)
    }

    #[tokio::test]
    async fn every_applied_migration_is_recorded_with_the_sha256_of_its_text() -> anyhow::Result<()> {
        let (stores, _dir, _pg) = stores().await?;
        for store in &stores {
            let want: Vec<(i64, Option<String>)> = SQLITE.iter().map(|m| (m.version, Some(checksum(m.sql)))).collect();
            assert_eq!(recorded(store).await?, want, "{:?}", store.backend());
            // Unchanged text: connecting again checks and applies nothing.
            migrate(store).await?;
            assert_eq!(recorded(store).await?, want);
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_migration_changed_after_it_was_applied_is_refused_by_name_and_nothing_runs() -> anyhow::Result<()> {
        let (stores, _dir, _pg) = stores().await?;
        for store in &stores {
            let edited = Migration { sql: "-- an edit\nCREATE TABLE x (a TEXT);", ..CHANNEL_PRICES };
            let next = Migration { version: 99, name: "next", sql: "CREATE TABLE never_created (a TEXT)" };
            let err = apply(store, &[INIT, edited, KEY_TENANT_USAGE, next]).await;
            match &err {
                Err(ProjectionError::MigrationChanged { version: 2, name: "channel_prices", recorded, current }) => {
                    assert_eq!(recorded, &checksum(CHANNEL_PRICES.sql));
                    assert_ne!(recorded, current);
                }
                other => anyhow::bail!("{:?}: expected MigrationChanged, got {other:?}", store.backend()),
            }
            let message = err.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("0002 channel_prices"), "{message}");
            // The refusal comes before any migration: the new one did not run.
            assert_eq!(recorded(store).await?.len(), SQLITE.len());
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_store_migrated_before_checksums_gets_them_and_is_checked_from_then_on() -> anyhow::Result<()> {
        let (stores, _dir, _pg) = stores().await?;
        for store in &stores {
            // The table as the earlier migrator left it: no checksum column.
            sqlx::query("ALTER TABLE schema_migrations DROP COLUMN checksum").execute(store.pool()).await?;
            migrate(store).await?;
            let want: Vec<(i64, Option<String>)> = SQLITE.iter().map(|m| (m.version, Some(checksum(m.sql)))).collect();
            assert_eq!(recorded(store).await?, want, "{:?}", store.backend());
            let edited = Migration { sql: "SELECT 1", ..INIT };
            assert!(matches!(apply(store, &[edited]).await, Err(ProjectionError::MigrationChanged { version: 1, .. })));
        }
        Ok(())
    }
}
