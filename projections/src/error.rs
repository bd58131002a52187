//! The crate's error type. Messages never carry a database URL (it may hold a password).

/// Why a projection, rebuild, migration or read failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The read store (SQLite or Postgres) failed.
    #[error("read store: {0}")]
    Db(#[from] sqlx::Error),
    /// The event log failed.
    #[error("event log: {0}")]
    Log(#[from] nats::LogError),
    /// The read store URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported read store URL scheme {0:?}: expected sqlite:// or postgres://")]
    UnsupportedUrl(String),
    /// No projection has this name.
    #[error("unknown projection {0:?}; known: control, ledger")]
    UnknownProjection(String),
    /// A migration failed; the store is left at the previous migration.
    #[error("migration {version:04} {name} failed: {source}")]
    Migration {
        /// The migration's number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// What the database said.
        source: sqlx::Error,
    },
    /// A migration recorded as applied no longer has the text it was applied with: the schema in
    /// the store may not be what this binary expects. Nothing was migrated.
    #[error(
        "migration {version:04} {name} was changed after it was applied to this read store (recorded \
         SHA-256 {recorded}, now {current}); restore its original text and add the change as a new migration"
    )]
    MigrationChanged {
        /// The migration's number.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The checksum recorded when it was applied.
        recorded: String,
        /// The checksum of the text in this binary.
        current: String,
    },
    /// Another rebuild of the same projection holds the rebuild lock.
    #[error("a rebuild of projection {0} is already running")]
    RebuildRunning(&'static str),
    /// The generation table changed under a rebuild (a concurrent rebuild or a manual edit).
    #[error("projection {0} changed generation during the rebuild; nothing was swapped")]
    RebuildConflict(&'static str),
    /// An "as of" report asked for a sequence the ledger has not applied yet.
    #[error("the ledger has applied the billing stream up to {applied}, not yet {as_of_seq}")]
    NotCaughtUp {
        /// The sequence asked for.
        as_of_seq: u64,
        /// The sequence applied.
        applied: u64,
    },
    /// The log closed the tail: it ends only on an unrecoverable error.
    #[error("the event log ended the tail of {0}")]
    TailEnded(&'static str),
}
