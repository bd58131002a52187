//! The JetStream backend's local durable spool: a SQLite table of events written before NATS
//! sees them, read back in order by the publisher and marked acked when the PubAck arrives.
//! It owns the table, the unacked-depth counter and the spool-full check, and the `poison` table
//! where rows that can never be published are set aside; no NATS code here.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};
use schemas::Envelope;
use tokio::sync::watch;

use crate::LogError;
use crate::group_commit::{GroupCommit, open_durable, sqlite};

// `acked_at_ms` NULL means not yet acknowledged by JetStream. The partial index keeps the
// publisher's "next unacked rows" query cheap however many acked rows await pruning.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    subject      TEXT NOT NULL,
    payload      BLOB NOT NULL,
    acked_at_ms  INTEGER
);
CREATE INDEX IF NOT EXISTS spool_unacked ON spool (seq) WHERE acked_at_ms IS NULL;
CREATE INDEX IF NOT EXISTS spool_acked ON spool (acked_at_ms) WHERE acked_at_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS poison (
    seq              INTEGER PRIMARY KEY,
    id               TEXT NOT NULL,
    subject          TEXT NOT NULL,
    payload          BLOB NOT NULL,
    reason           TEXT NOT NULL,
    set_aside_at_ms  INTEGER NOT NULL
);
";

/// How many set-aside rows the `poison` table keeps: the newest ones. A poison event is a bug to
/// investigate, and a few hundred examples are plenty; a bug that poisons every event must not
/// fill the disk with copies (each row may hold up to 1 MiB).
pub(crate) const MAX_POISON_ROWS: i64 = 1_000;

/// A spooled event waiting for its PubAck.
#[derive(Debug, Clone)]
pub(crate) struct SpoolRow {
    /// Local sequence: the publish order.
    pub seq: i64,
    /// The event id, sent as `Nats-Msg-Id`.
    pub id: String,
    pub subject: String,
    pub payload: bytes::Bytes,
}

/// One change to the spool; all of them go through the single writer thread.
enum Op {
    Insert {
        id: String,
        subject: String,
        payload: Vec<u8>,
    },
    Ack {
        seqs: Vec<i64>,
        at_ms: i64,
    },
    Prune {
        before_ms: i64,
    },
    /// Moves an unacked row to the `poison` table: it can never be published.
    SetAside {
        seq: i64,
        reason: String,
        at_ms: i64,
        /// Rows the `poison` table keeps after this one is added (the newest).
        keep: i64,
    },
    /// Writes nothing; awaiting it proves every earlier op is committed.
    Barrier,
}

/// The spool, cheap to clone.
#[derive(Clone)]
pub(crate) struct Spool {
    writer: GroupCommit<Op>,
    reader: Arc<Mutex<Connection>>,
    /// Committed rows not yet acked.
    depth: Arc<AtomicU64>,
    /// Request-log events refused because the spool was full.
    dropped: Arc<AtomicU64>,
    /// Rows in the `poison` table.
    poisoned: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
    max: u64,
    /// [`MAX_POISON_ROWS`], lowered by tests.
    poison_keep: i64,
}

impl Spool {
    /// Opens or creates the spool file; rows left unacked by an earlier process count toward the
    /// depth and will be published again.
    pub async fn open(path: &Path, max: u64) -> Result<Self, LogError> {
        let path = path.to_owned();
        let (conn, reader, depth, poisoned) = tokio::task::spawn_blocking(move || -> Result<_, LogError> {
            let conn = open_durable(&path)?;
            conn.execute_batch(SCHEMA).map_err(sqlite)?;
            let depth: i64 = conn
                .query_row("SELECT COUNT(*) FROM spool WHERE acked_at_ms IS NULL", [], |r| r.get(0))
                .map_err(sqlite)?;
            let poisoned: i64 = conn.query_row("SELECT COUNT(*) FROM poison", [], |r| r.get(0)).map_err(sqlite)?;
            let reader = open_durable(&path)?;
            Ok((conn, reader, depth.max(0) as u64, poisoned.max(0) as u64))
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))??;

        let depth = Arc::new(AtomicU64::new(depth));
        // Rows inserted minus rows acked by the transaction being written; applied to `depth`
        // only once it commits, so a failed commit leaves the counter true.
        let pending = Arc::new(AtomicI64::new(0));
        let (notify, committed) = watch::channel(0u64);
        let writer = GroupCommit::start(
            "llmr-spool",
            conn,
            {
                let pending = pending.clone();
                move |t, ops: &[Op]| {
                    let mut delta = 0i64;
                    let mut insert =
                        t.prepare_cached("INSERT OR IGNORE INTO spool (id, subject, payload) VALUES (?1, ?2, ?3)")?;
                    let mut ack =
                        t.prepare_cached("UPDATE spool SET acked_at_ms = ?1 WHERE seq = ?2 AND acked_at_ms IS NULL")?;
                    for op in ops {
                        match op {
                            Op::Insert { id, subject, payload } => {
                                delta += insert.execute(params![id, subject, payload])? as i64;
                            }
                            Op::Ack { seqs, at_ms } => {
                                for seq in seqs {
                                    delta -= ack.execute(params![at_ms, seq])? as i64;
                                }
                            }
                            Op::Prune { before_ms } => {
                                t.execute(
                                    "DELETE FROM spool WHERE acked_at_ms IS NOT NULL AND acked_at_ms < ?1",
                                    [before_ms],
                                )?;
                            }
                            Op::SetAside { seq, reason, at_ms, keep } => {
                                t.execute(
                                    "INSERT OR IGNORE INTO poison (seq, id, subject, payload, reason, set_aside_at_ms) \
                                     SELECT seq, id, subject, payload, ?2, ?3 FROM spool \
                                     WHERE seq = ?1 AND acked_at_ms IS NULL",
                                    params![seq, reason, at_ms],
                                )?;
                                // Spool sequences only grow: the oldest rows have the lowest.
                                t.execute(
                                    "DELETE FROM poison WHERE seq <= \
                                     (SELECT seq FROM poison ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
                                    [keep],
                                )?;
                                delta -= t.execute("DELETE FROM spool WHERE seq = ?1 AND acked_at_ms IS NULL", [seq])?
                                    as i64;
                            }
                            Op::Barrier => {}
                        }
                    }
                    pending.store(delta, Ordering::SeqCst);
                    Ok(())
                }
            },
            {
                let depth = depth.clone();
                let mut commits = 0u64;
                move |_: &[_]| {
                    let delta = pending.swap(0, Ordering::SeqCst);
                    let _ = depth.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |d| {
                        Some(if delta >= 0 {
                            d.saturating_add(delta as u64)
                        } else {
                            d.saturating_sub(delta.unsigned_abs())
                        })
                    });
                    commits += 1;
                    notify.send_replace(commits);
                }
            },
        )?;
        Ok(Spool {
            writer,
            reader: Arc::new(Mutex::new(reader)),
            depth,
            dropped: Arc::new(AtomicU64::new(0)),
            poisoned: Arc::new(AtomicU64::new(poisoned)),
            committed,
            max,
            poison_keep: MAX_POISON_ROWS,
        })
    }

    fn insert(env: &Envelope, payload: Vec<u8>) -> Op {
        Op::Insert { id: env.id.to_string(), subject: env.subject(), payload }
    }

    /// Writes the event and waits for the commit. Refuses with [`LogError::SpoolFull`] when
    /// `max` events are waiting. The check runs before the write, so concurrent appends can
    /// overshoot `max` by at most their number; it protects the disk, not an exact count.
    pub async fn append(&self, env: &Envelope, payload: Vec<u8>) -> Result<(), LogError> {
        let depth = self.depth();
        if depth >= self.max {
            return Err(LogError::SpoolFull(depth));
        }
        self.writer.write(vec![Self::insert(env, payload)]).await
    }

    /// Queues the event without waiting. When the spool is full the event is refused with a
    /// warning and counted in [`Spool::dropped`]: request logs must not grow the spool without
    /// bound during a long outage, and billable appends are already being refused then.
    pub fn append_nowait(&self, env: &Envelope, payload: Vec<u8>) {
        let depth = self.depth();
        if depth >= self.max {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(depth, dropped, event_type = env.body.type_name(), "Spool full; event not spooled.");
            return;
        }
        self.writer.write_nowait(vec![Self::insert(env, payload)]);
    }

    /// Committed events not yet acknowledged by JetStream.
    pub fn depth(&self) -> u64 {
        self.depth.load(Ordering::SeqCst)
    }

    /// Events refused by [`Spool::append_nowait`] since start.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Rows set aside since start, plus those found in the `poison` table at start (which keeps
    /// only the newest [`MAX_POISON_ROWS`]).
    pub fn poisoned(&self) -> u64 {
        self.poisoned.load(Ordering::Relaxed)
    }

    /// Moves the unacked row `seq` to the `poison` table with `reason`, and waits for the commit,
    /// so the publisher's next read no longer sees it. The row leaves the depth count.
    pub async fn set_aside(&self, seq: i64, reason: String) -> Result<(), LogError> {
        self.writer.write(vec![Op::SetAside { seq, reason, at_ms: now_ms(), keep: self.poison_keep }]).await?;
        self.poisoned.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Changes every time the writer commits; the publisher waits on it.
    pub fn commits(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Waits until every op queued before this call is committed.
    pub async fn barrier(&self) -> Result<(), LogError> {
        self.writer.write(vec![Op::Barrier]).await
    }

    /// Up to `limit` unacked rows with a local sequence above `after`, in order.
    pub async fn unacked_after(&self, after: i64, limit: usize) -> Result<Vec<SpoolRow>, LogError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| LogError::Closed)?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, id, subject, payload FROM spool WHERE acked_at_ms IS NULL AND seq > ?1 \
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(sqlite)?;
            let rows = stmt
                .query_map(params![after, limit as i64], |r| {
                    Ok(SpoolRow {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        subject: r.get(2)?,
                        payload: bytes::Bytes::from(r.get::<_, Vec<u8>>(3)?),
                    })
                })
                .map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))?
    }

    /// Marks rows acked without waiting; losing the mark in a crash only means a duplicate
    /// publish, which JetStream and the projections both drop by event id.
    pub fn mark_acked_nowait(&self, seqs: Vec<i64>) {
        if !seqs.is_empty() {
            self.writer.write_nowait(vec![Op::Ack { seqs, at_ms: now_ms() }]);
        }
    }

    /// Deletes rows acked more than `retention` ago, without waiting.
    pub fn prune_nowait(&self, retention: Duration) {
        let before_ms = now_ms().saturating_sub(retention.as_millis().min(i64::MAX as u128) as i64);
        self.writer.write_nowait(vec![Op::Prune { before_ms }]);
    }

    /// The ids in the `poison` table, oldest first (for tests of pruning).
    #[cfg(test)]
    pub async fn poison_ids(&self) -> Result<Vec<String>, LogError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| LogError::Closed)?;
            let mut stmt = conn.prepare("SELECT id FROM poison ORDER BY seq").map_err(sqlite)?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))?
    }

    /// Rows in the spool, acked or not (for tests of pruning).
    #[cfg(test)]
    pub async fn total_rows(&self) -> Result<u64, LogError> {
        let reader = self.reader.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().map_err(|_| LogError::Closed)?;
            conn.query_row("SELECT COUNT(*) FROM spool", [], |r| r.get::<_, i64>(0))
                .map(|n| n.max(0) as u64)
                .map_err(sqlite)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))?
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{EventBody, TenantCreated};

    fn event(name: &str) -> Envelope {
        Envelope::new("t1", "test", 1, EventBody::TenantCreated(TenantCreated { name: name.into() }))
    }

    #[tokio::test]
    async fn depth_counts_unacked_rows_and_survives_reopen() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Sqlite(e.to_string()))?;
        let path = dir.path().join("spool.db");
        let spool = Spool::open(&path, 10).await?;
        let a = event("a");
        spool.append(&a, a.to_json()).await?;
        spool.append(&a, a.to_json()).await?; // same id: ignored
        let b = event("b");
        spool.append(&b, b.to_json()).await?;
        assert_eq!(spool.depth(), 2);
        let rows = spool.unacked_after(0, 10).await?;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, a.id.to_string());
        spool.mark_acked_nowait(vec![rows[0].seq]);
        spool.barrier().await?;
        assert_eq!(spool.depth(), 1);
        assert_eq!(spool.unacked_after(0, 10).await?.len(), 1);
        drop(spool);

        let spool = Spool::open(&path, 10).await?;
        assert_eq!(spool.depth(), 1);
        spool.prune_nowait(Duration::ZERO);
        spool.barrier().await?;
        // Pruning uses a strict "before now", so give the clock a tick.
        tokio::time::sleep(Duration::from_millis(5)).await;
        spool.prune_nowait(Duration::ZERO);
        spool.barrier().await?;
        assert_eq!(spool.total_rows().await?, 1);
        Ok(())
    }

    #[tokio::test]
    async fn the_poison_table_keeps_only_the_newest_rows_and_the_queue_goes_on() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Sqlite(e.to_string()))?;
        let mut spool = Spool::open(&dir.path().join("spool.db"), 100).await?;
        spool.poison_keep = 3;
        let events: Vec<Envelope> = (0..6).map(|i| event(&format!("e{i}"))).collect();
        for e in &events {
            spool.append(e, e.to_json()).await?;
        }
        let good = event("good");
        spool.append(&good, good.to_json()).await?;
        // The first five can never be published; they are set aside one by one.
        for row in spool.unacked_after(0, 5).await? {
            spool.set_aside(row.seq, "too large".into()).await?;
        }
        let ids: Vec<String> = events[2..5].iter().map(|e| e.id.to_string()).collect();
        assert_eq!(spool.poison_ids().await?, ids, "the newest three, in order");
        assert_eq!(spool.poisoned(), 5, "every set-aside event is counted");
        let left: Vec<String> = spool.unacked_after(0, 10).await?.into_iter().map(|r| r.id).collect();
        assert_eq!(left, [events[5].id.to_string(), good.id.to_string()]);
        assert_eq!(spool.depth(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn append_refuses_when_full_and_nowait_drops_with_a_count() -> Result<(), LogError> {
        let dir = tempfile::tempdir().map_err(|e| LogError::Sqlite(e.to_string()))?;
        let spool = Spool::open(&dir.path().join("spool.db"), 2).await?;
        for name in ["a", "b"] {
            let e = event(name);
            spool.append(&e, e.to_json()).await?;
        }
        assert!(matches!(spool.append(&event("c"), Vec::new()).await, Err(LogError::SpoolFull(2))));
        spool.append_nowait(&event("d"), Vec::new());
        assert_eq!(spool.dropped(), 1);
        spool.barrier().await?;
        assert_eq!(spool.depth(), 2);
        Ok(())
    }
}
