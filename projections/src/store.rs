//! The read store: one `sqlx::AnyPool` over SQLite (single node) or Postgres (cluster). All SQL
//! in this crate is one text with `$N` placeholders that both backends accept; the backend is
//! consulted only for locking and transaction isolation, never to pick different SQL for data.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Connection};

use crate::ProjectionError;

/// How long a SQLite connection waits for the write lock before failing: the runner, a rebuild
/// and the admin CLI may write at once, and each transaction is short.
const SQLITE_BUSY_TIMEOUT_MS: &str = "PRAGMA busy_timeout = 10000";
/// Readers share the file with one writer at a time; WAL lets them read during a write.
/// `synchronous = NORMAL` may lose the last commits on power loss, but never tears one: the
/// checkpoint lives in the same transaction as the rows, so the runner re-applies what was lost
/// from the log.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000;";
/// Connections per pool: reads from the web crate plus one writer per projection.
const MAX_CONNECTIONS: u32 = 8;

/// Which database a [`ReadStore`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A single-node SQLite file (`data/read.db`).
    Sqlite,
    /// A shared Postgres database.
    Postgres,
}

/// Handle to the read-model database. Cheap to clone.
#[derive(Clone)]
pub struct ReadStore {
    pool: AnyPool,
    backend: Backend,
    /// Kept to open dedicated lock connections and to name in-process guards. Never logged:
    /// it may carry a password.
    url: Arc<str>,
}

impl std::fmt::Debug for ReadStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStore").field("backend", &self.backend).finish_non_exhaustive()
    }
}

impl ReadStore {
    /// Connects to `sqlite://path/read.db?mode=rwc` or `postgres://…` and applies pending
    /// migrations.
    pub async fn connect(url: &str) -> Result<Self, ProjectionError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            let scheme = url.split(':').next().unwrap_or_default().to_owned();
            return Err(ProjectionError::UnsupportedUrl(scheme));
        };
        let mut options = AnyPoolOptions::new().max_connections(MAX_CONNECTIONS);
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, SQLITE_PRAGMAS).await?;
                    Ok(())
                })
            });
        }
        let pool = options.acquire_timeout(Duration::from_secs(30)).connect(url).await?;
        let store = ReadStore { pool, backend, url: Arc::from(url) };
        crate::migrations::migrate(&store).await?;
        Ok(store)
    }

    /// The backend behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for this crate's queries.
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL, only to open dedicated connections and to key in-process guards.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// A connection outside the pool, for holding a Postgres session-level advisory lock: a
    /// pooled connection would go back to the pool still holding the lock if its holder is
    /// dropped, while a dropped dedicated connection ends the session and frees the lock.
    pub(crate) async fn dedicated_connection(&self) -> Result<AnyConnection, ProjectionError> {
        let mut conn = AnyConnection::connect(&self.url).await?;
        if self.backend == Backend::Sqlite {
            sqlx::Executor::execute(&mut conn, SQLITE_BUSY_TIMEOUT_MS).await?;
        }
        Ok(conn)
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}
