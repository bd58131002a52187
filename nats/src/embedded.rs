//! The embedded backend: an append-only SQLite table `events` in `events.db` with a global
//! sequence and a unique event id (a second append of the same id is a no-op). Tails poll the
//! table and are woken at once by appends from this process; appends from other processes (the
//! admin CLI) are seen within [`POLL_INTERVAL`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use rusqlite::{Connection, OptionalExtension, params};
use schemas::{Envelope, Stream};
use tokio::sync::watch;

use crate::group_commit::{GroupCommit, open_durable, sqlite};
use crate::{LogError, LogHealth, MAX_EVENT_BYTES, StoredEvent};

/// How often a tail looks for events appended by another process.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Rows read per query while catching up.
const READ_BATCH: i64 = 1000;
/// Request-log rows deleted per purge step; each step is one short write transaction, so appends
/// (billing included) never wait long behind a purge.
const PURGE_BATCH: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    id       TEXT NOT NULL UNIQUE,
    stream   TEXT NOT NULL,
    subject  TEXT NOT NULL,
    payload  BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_stream ON events (stream, seq);
";

struct Row {
    id: String,
    stream: &'static str,
    subject: String,
    payload: Vec<u8>,
}

/// The embedded log. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedLog {
    path: Arc<PathBuf>,
    writer: GroupCommit<Row>,
    /// Per stream (in [`Stream::ALL`] order): the number of commits that held rows of it, so a
    /// tail wakes only for its own stream's appends.
    appended: Arc<[watch::Receiver<u64>; 4]>,
    /// Wakes this process's tails of a stream after a commit (the writer's, or a conditional
    /// append's).
    notify: Arc<[watch::Sender<u64>; 4]>,
    /// Appends refused since start because the event was over [`MAX_EVENT_BYTES`].
    refused: Arc<AtomicU64>,
}

impl EmbeddedLog {
    /// Opens or creates the log file.
    pub async fn open(path: &Path) -> Result<Self, LogError> {
        let path = path.to_owned();
        let conn = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> Result<Connection, LogError> {
                let conn = open_durable(&path)?;
                conn.execute_batch(SCHEMA).map_err(sqlite)?;
                Ok(conn)
            })
            .await
            .map_err(|e| LogError::Sqlite(e.to_string()))??
        };
        let channels = Stream::ALL.map(|_| watch::channel(0u64));
        let appended = Arc::new(channels.each_ref().map(|(_, rx)| rx.clone()));
        let notify = Arc::new(channels.map(|(tx, _)| tx));
        let wake = notify.clone();
        let writer = GroupCommit::start(
            "llmr-events",
            conn,
            |t, rows: &[Row]| {
                let mut stmt = t.prepare_cached(
                    "INSERT OR IGNORE INTO events (id, stream, subject, payload) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for r in rows {
                    stmt.execute(params![r.id, r.stream, r.subject, r.payload])?;
                }
                Ok(())
            },
            move |rows: &[Row]| {
                for (stream, tx) in Stream::ALL.iter().zip(wake.iter()) {
                    if rows.iter().any(|r| r.stream == stream.name()) {
                        tx.send_modify(|n| *n += 1);
                    }
                }
            },
        )?;
        Ok(Self { path: Arc::new(path), writer, appended, notify, refused: Arc::new(AtomicU64::new(0)) })
    }

    /// The row for `env`, or [`LogError::TooLarge`] (logged, counted) when it is over
    /// [`MAX_EVENT_BYTES`]: the embedded log takes exactly what JetStream could publish.
    fn row(&self, env: &Envelope) -> Result<Row, LogError> {
        let payload = env.to_json();
        if payload.len() > MAX_EVENT_BYTES {
            return Err(crate::refuse_oversize(env, payload.len(), MAX_EVENT_BYTES, &self.refused));
        }
        Ok(Row { id: env.id.to_string(), stream: env.body.stream().name(), subject: env.subject(), payload })
    }

    /// Appends and waits for the commit; [`LogError::TooLarge`] for an event over the limit.
    pub async fn append(&self, env: &Envelope) -> Result<(), LogError> {
        self.writer.write(vec![self.row(env)?]).await
    }

    /// Appends only if the last sequence of the event's stream is `last_seq`: the check and the
    /// insert are one `BEGIN IMMEDIATE` transaction on a connection of its own, so the group
    /// writer (and any other process on the file) waits for it or goes first.
    pub async fn append_if_last(&self, env: &Envelope, last_seq: u64) -> Result<(), LogError> {
        let row = self.row(env)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> Result<(), LogError> {
            let mut conn = open_durable(&path)?;
            let t = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(sqlite)?;
            let last: i64 = t
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream = ?1", [row.stream], |r| r.get(0))
                .map_err(sqlite)?;
            if u64::try_from(last).unwrap_or(0) != last_seq {
                return Err(LogError::Conflict(last_seq));
            }
            t.execute(
                "INSERT OR IGNORE INTO events (id, stream, subject, payload) VALUES (?1, ?2, ?3, ?4)",
                params![row.id, row.stream, row.subject, row.payload],
            )
            .map_err(sqlite)?;
            t.commit().map_err(sqlite)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))??;
        self.notify[stream_index(env.body.stream())].send_modify(|commits| *commits += 1);
        Ok(())
    }

    /// Appends without waiting. An event over the limit is dropped (logged at ERROR, counted in
    /// `poison_events`).
    pub fn append_nowait(&self, env: &Envelope) {
        if let Ok(row) = self.row(env) {
            self.writer.write_nowait(vec![row]);
        }
    }

    fn reader(&self) -> Result<Connection, LogError> {
        let conn = Connection::open_with_flags(
            self.path.as_ref(),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sqlite)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(sqlite)?;
        Ok(conn)
    }

    /// Catch-up then live tail of one stream.
    pub fn tail(&self, stream: Stream, after: u64) -> BoxStream<'static, Result<StoredEvent, LogError>> {
        let this = self.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<StoredEvent, LogError>>(READ_BATCH as usize);
        tokio::spawn(async move {
            let conn = match this.reader() {
                Ok(c) => Arc::new(Mutex::new(c)),
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            let mut appended = this.appended[stream_index(stream)].clone();
            let mut last = after;
            loop {
                let c = conn.clone();
                let batch = tokio::task::spawn_blocking(move || read_batch(&c, stream, last)).await;
                let batch = match batch {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                    Err(_) => return,
                };
                let full = batch.len() as i64 == READ_BATCH;
                for ev in batch {
                    last = ev.seq;
                    if tx.send(Ok(ev)).await.is_err() {
                        return;
                    }
                }
                if !full {
                    tokio::select! {
                        _ = appended.changed() => {}
                        _ = tokio::time::sleep(POLL_INTERVAL) => {}
                        _ = tx.closed() => return,
                    }
                }
            }
        });
        Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The last sequence of `stream`.
    pub async fn last_seq(&self, stream: Stream) -> Result<u64, LogError> {
        let conn = self.reader()?;
        tokio::task::spawn_blocking(move || {
            conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream = ?1", [stream.name()], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0).max(0) as u64)
            .map_err(sqlite)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))?
    }

    /// Deletes request-log events (`LLMR_REQUESTS`) that occurred before `cutoff_us`, oldest
    /// first, in short transactions. Billing and control events are never touched, and neither is
    /// the stream's last event, so its last sequence never goes back. Returns how many were deleted.
    pub async fn purge_requests_before(&self, cutoff_us: i64) -> Result<u64, LogError> {
        let path = self.path.clone();
        // The ops stream (`health.checked`) is kept for the same window.
        tokio::task::spawn_blocking(move || {
            Ok(purge_stream(&path, Stream::Requests, cutoff_us)? + purge_stream(&path, Stream::Ops, cutoff_us)?)
        })
        .await
        .map_err(|e| LogError::Sqlite(e.to_string()))?
    }

    /// The embedded log is reachable when its file can be read.
    pub async fn health(&self) -> LogHealth {
        let poison_events = self.refused.load(Ordering::Relaxed);
        let (reachable, error) = match self.last_seq(Stream::Control).await {
            Ok(_) => (true, None),
            Err(e) => (false, Some(e.to_string())),
        };
        LogHealth { backend: "embedded", reachable, spool_depth: 0, poison_events, error }
    }
}

fn purge_stream(path: &Path, stream: Stream, cutoff_us: i64) -> Result<u64, LogError> {
    let conn = open_durable(path)?;
    let stream = stream.name();
    let mut deleted = 0u64;
    loop {
        let last: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events WHERE stream = ?1", [stream], |r| r.get(0))
            .map_err(sqlite)?;
        // The payload is stored as a BLOB, which SQLite's JSON functions would read as JSONB.
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, json_extract(CAST(payload AS TEXT), '$.occurred_at_us') FROM events \
                 WHERE stream = ?1 AND seq < ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(sqlite)?;
        let rows = stmt
            .query_map(params![stream, last, PURGE_BATCH], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?)))
            .map_err(sqlite)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sqlite)?;
        // Events are appended in time order (up to clock differences between producers); a row
        // whose time cannot be read is an undecodable request log and goes with its neighbours.
        let expired = rows.iter().take_while(|(_, at)| at.is_none_or(|t| t < cutoff_us)).count();
        let Some(&(upto, _)) = expired.checked_sub(1).and_then(|i| rows.get(i)) else { break };
        let n = conn
            .execute("DELETE FROM events WHERE stream = ?1 AND seq <= ?2", params![stream, upto])
            .map_err(sqlite)?;
        deleted += n as u64;
        if expired < rows.len() || rows.len() < PURGE_BATCH as usize {
            break;
        }
    }
    Ok(deleted)
}

/// `stream`'s place in [`Stream::ALL`].
fn stream_index(stream: Stream) -> usize {
    Stream::ALL.iter().position(|s| *s == stream).unwrap_or(0)
}

fn read_batch(conn: &Mutex<Connection>, stream: Stream, after: u64) -> Result<Vec<StoredEvent>, LogError> {
    let conn = conn.lock().map_err(|_| LogError::Closed)?;
    let mut stmt = conn
        .prepare_cached("SELECT seq, payload FROM events WHERE stream = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3")
        .map_err(sqlite)?;
    let rows = stmt
        .query_map(params![stream.name(), after as i64, READ_BATCH], |r| {
            Ok(StoredEvent {
                stream,
                seq: r.get::<_, i64>(0)? as u64,
                payload: bytes::Bytes::from(r.get::<_, Vec<u8>>(1)?),
            })
        })
        .map_err(sqlite)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
}
