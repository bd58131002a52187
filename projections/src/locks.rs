//! Single-writer locks, and leases on tasks one process of a cluster runs. Postgres: a
//! session-level advisory lock held on a dedicated connection, so writers in other processes
//! wait; it is freed when the connection ends, even on a crash. SQLite: the single-node mode runs
//! in one process, so an in-process guard keyed by store and purpose is enough.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use sqlx::AnyConnection;
use sqlx::Connection;

use crate::store::{Backend, ReadStore};
use crate::{Projection, ProjectionError};

/// High bits of every advisory lock key of this crate ("LLMR").
const LOCK_NAMESPACE: i64 = 0x4c4c_4d52 << 32;

/// What a lock protects.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// The live runner of a projection.
    Writer,
    /// A rebuild of a projection.
    Rebuild,
}

impl Purpose {
    fn index(self) -> i64 {
        match self {
            Purpose::Writer => 1,
            Purpose::Rebuild => 2,
        }
    }
}

static HELD: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn held() -> MutexGuard<'static, Option<HashSet<String>>> {
    // A panic while holding this mutex cannot leave the set inconsistent (single insert/remove).
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// A held lock; dropping it releases it.
pub(crate) enum Lock {
    /// The connection holding the advisory lock.
    Postgres(AnyConnection),
    /// The key in the in-process set.
    InProcess(InProcessGuard),
}

/// Removes its key from the in-process set when dropped, including when the runner's task is
/// aborted.
pub(crate) struct InProcessGuard(String);

impl Drop for InProcessGuard {
    fn drop(&mut self) {
        if let Some(set) = held().as_mut() {
            set.remove(&self.0);
        }
    }
}

impl Lock {
    /// Releases the lock now (closing the Postgres session cleanly).
    pub(crate) async fn release(self) {
        match self {
            Lock::Postgres(conn) => {
                let _ = conn.close().await;
            }
            Lock::InProcess(guard) => drop(guard),
        }
    }
}

/// Tries once to take the lock; `None` when someone else holds it.
pub(crate) async fn try_lock(
    store: &ReadStore,
    projection: Projection,
    purpose: Purpose,
) -> Result<Option<Lock>, ProjectionError> {
    match store.backend() {
        Backend::Postgres => {
            let key = LOCK_NAMESPACE | (projection.lock_index() << 8) | purpose.index();
            let mut conn = store.dedicated_connection().await?;
            let (got,): (bool,) =
                sqlx::query_as("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut conn).await?;
            if got {
                Ok(Some(Lock::Postgres(conn)))
            } else {
                let _ = conn.close().await;
                Ok(None)
            }
        }
        Backend::Sqlite => {
            let key = format!("{:?}/{}/{}", purpose, projection.name(), store.url());
            let mut guard = held();
            let set = guard.get_or_insert_with(HashSet::new);
            if set.insert(key.clone()) { Ok(Some(Lock::InProcess(InProcessGuard(key)))) } else { Ok(None) }
        }
    }
}

/// A task that one process of a cluster runs at a time, whichever holds its [`Lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseTask {
    /// The `PROXY_POOL_URL` sync: two syncing processes would add each listed proxy twice.
    ProxyPoolSync,
}

impl LeaseTask {
    fn name(self) -> &'static str {
        match self {
            LeaseTask::ProxyPoolSync => "proxy_pool_sync",
        }
    }

    /// The advisory lock key: in this crate's namespace, with a middle part no projection's
    /// index reaches, so it never meets a projection's writer or rebuild lock.
    fn key(self) -> i64 {
        let index = match self {
            LeaseTask::ProxyPoolSync => 1,
        };
        LOCK_NAMESPACE | (0xff_ffff << 8) | index
    }
}

/// The lease on a [`LeaseTask`]: held until dropped or released, or until its Postgres session
/// ends (the process died, or the database restarted; [`Lease::still_held`] tells).
pub struct Lease(Lock);

impl Lease {
    /// Takes the lease on `task` if no process holds it; `None` when one does.
    pub async fn try_take(store: &ReadStore, task: LeaseTask) -> Result<Option<Lease>, ProjectionError> {
        match store.backend() {
            Backend::Postgres => {
                let mut conn = store.dedicated_connection().await?;
                let (got,): (bool,) =
                    sqlx::query_as("SELECT pg_try_advisory_lock($1)").bind(task.key()).fetch_one(&mut conn).await?;
                if got {
                    Ok(Some(Lease(Lock::Postgres(conn))))
                } else {
                    let _ = conn.close().await;
                    Ok(None)
                }
            }
            Backend::Sqlite => {
                let key = format!("lease/{}/{}", task.name(), store.url());
                let mut guard = held();
                let set = guard.get_or_insert_with(HashSet::new);
                if set.insert(key.clone()) { Ok(Some(Lease(Lock::InProcess(InProcessGuard(key))))) } else { Ok(None) }
            }
        }
    }

    /// Whether the lease still holds: on Postgres, whether the session holding the lock still
    /// answers (a session that ended took the lock with it, and another process may hold it now).
    pub async fn still_held(&mut self) -> bool {
        match &mut self.0 {
            Lock::Postgres(conn) => conn.ping().await.is_ok(),
            Lock::InProcess(_) => true,
        }
    }

    /// Gives the lease up now.
    pub async fn release(self) {
        self.0.release().await;
    }
}
