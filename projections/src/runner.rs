//! The projection runner: one writer per projection reads the log from its checkpoint + 1 and
//! applies what is available in batches, each batch in ONE transaction together with its
//! `applied_event` dedup rows and the checkpoint. A crash anywhere rolls the whole batch back,
//! and the restart re-reads it from the committed checkpoint, so nothing is applied twice or
//! skipped. Poison events are recorded in `poison_event` and skipped. Database and log errors end
//! `run` with an error: the supervisor in `workers` restarts it with backoff.
//!
//! The single-writer lock keeps writers from doing the same work twice; correctness does not
//! rest on it. Were two writers ever to overlap (a Postgres session lost under a live runner),
//! the `applied_event` primary key still lets each event through once, and the rows written at
//! the start of every batch (generation, checkpoint) serialise their transactions.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use nats::{EventLog, StoredEvent};
use sqlx::AnyConnection;
use sqlx::Row;

use crate::fold::{self, Folded};
use crate::locks::{self, Purpose};
use crate::{Projection, ProjectionError, ReadStore};

/// Tuning of the runner.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most events applied in one transaction: large enough to amortise the commit during a
    /// catch-up, small enough to keep transactions short.
    pub max_batch: usize,
    /// How long to gather more events after the first one of a batch: bounds the added lag.
    pub max_wait: Duration,
    /// How often a standby runner retries the single-writer lock.
    pub lock_retry: Duration,
    /// How long the request log and the health-check history keep a row (the Requests and Ops
    /// streams' retention window): after each batch the `requests` and `health` projections
    /// delete rows older than their newest row minus this, a bounded number per batch.
    pub request_log_retention: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_batch: 500,
            max_wait: Duration::from_millis(20),
            lock_retry: Duration::from_millis(500),
            request_log_retention: nats::DEFAULT_REQUESTS_MAX_AGE,
        }
    }
}

/// Runs `projection` with default options until `shutdown` completes.
pub async fn run(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProjectionError> {
    run_with(store, log, projection, shutdown, RunOptions::default()).await
}

/// Runs `projection` until `shutdown` completes. Waits (as a standby) while another process
/// holds the projection's writer lock. Follows a rebuild's swap to the new generation.
pub async fn run_with(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    shutdown: impl Future<Output = ()>,
    opts: RunOptions,
) -> Result<(), ProjectionError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let lock = loop {
        if let Some(lock) = locks::try_lock(store, projection, Purpose::Writer).await? {
            break lock;
        }
        tracing::info!(%projection, "Waiting for the projection writer lock.");
        tokio::select! {
            _ = tokio::time::sleep(opts.lock_retry) => {}
            _ = &mut shutdown => return Ok(()),
        }
    };
    let result = follow(store, log, projection, &mut shutdown, &opts).await;
    lock.release().await;
    result
}

async fn follow(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    opts: &RunOptions,
) -> Result<(), ProjectionError> {
    let max_batch = opts.max_batch.max(1);
    loop {
        let generation = active_generation(store, projection).await?;
        let after = checkpoint(store, projection, generation).await?;
        tracing::info!(%projection, generation, after, "Projection following the log.");
        let mut tail = log.tail(projection.stream(), after);
        loop {
            let first = tokio::select! {
                ev = tail.next() => ev,
                _ = &mut *shutdown => return Ok(()),
            };
            let Some(first) = first else {
                return Err(ProjectionError::TailEnded(projection.stream().name()));
            };
            let mut batch = vec![first?];
            let deadline = tokio::time::Instant::now() + opts.max_wait;
            while batch.len() < max_batch {
                match tokio::time::timeout_at(deadline, tail.next()).await {
                    Ok(Some(ev)) => batch.push(ev?),
                    // The tail's end is reported on the next read, after this batch is saved.
                    Ok(None) | Err(_) => break,
                }
            }
            match apply_batch(store, projection, generation, Mode::Live, &batch).await? {
                BatchOutcome::Committed => match projection {
                    Projection::Requests => {
                        expire(store, generation, opts.request_log_retention, &REQUEST_LOG).await?;
                    }
                    Projection::Health => {
                        expire(store, generation, opts.request_log_retention, &HEALTH_CHECKS).await?;
                    }
                    Projection::Control | Projection::Ledger => {}
                },
                BatchOutcome::GenerationChanged => break,
            }
        }
    }
}

/// A table whose rows are kept for a retention window: its name, its row key within a
/// generation and its time column (µs).
struct Retained {
    table: &'static str,
    key: &'static str,
    time: &'static str,
    what: &'static str,
}

/// The request log (`request.logged` rows).
const REQUEST_LOG: Retained =
    Retained { table: "request_log", key: "request_id", time: "occurred_at_us", what: "Request-log" };
/// The probe history (the ops stream is kept for the request-log window too).
const HEALTH_CHECKS: Retained =
    Retained { table: "health_check", key: "seq", time: "checked_at_us", what: "Health-check" };

/// Most rows one retention pass deletes, so a pass after a long pause (or a shorter window) stays
/// a short transaction; the next batches delete the rest.
pub(crate) const RETENTION_ROWS_PER_PASS: i64 = 1000;

/// Deletes rows of `r` in `generation` older than its newest row minus `window`, at most
/// [`RETENTION_ROWS_PER_PASS`], oldest first. The cutoff comes from the rows, not the clock, so
/// a replay of the same log keeps the same rows. Returns how many went.
async fn expire(store: &ReadStore, generation: i64, window: Duration, r: &Retained) -> Result<u64, ProjectionError> {
    let newest: Option<i64> =
        sqlx::query(&format!("SELECT MAX({}) AS newest FROM {} WHERE generation = $1", r.time, r.table))
            .bind(generation)
            .fetch_one(store.pool())
            .await?
            .try_get("newest")?;
    let Some(newest) = newest else { return Ok(0) };
    let window_us = i64::try_from(window.as_micros()).unwrap_or(i64::MAX);
    let sql = format!(
        "DELETE FROM {t} WHERE generation = $1 AND {k} IN (SELECT {k} FROM {t} \
         WHERE generation = $1 AND {c} < $2 ORDER BY {c} LIMIT $3)",
        t = r.table,
        k = r.key,
        c = r.time
    );
    let deleted = sqlx::query(&sql)
        .bind(generation)
        .bind(newest.saturating_sub(window_us))
        .bind(RETENTION_ROWS_PER_PASS)
        .execute(store.pool())
        .await?
        .rows_affected();
    if deleted > 0 {
        tracing::info!(deleted, "{} rows past the retention window deleted.", r.what);
    }
    Ok(deleted)
}

/// Whether a batch goes to the serving generation or to one being rebuilt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The live runner: the batch commits only while `generation` is still the active one.
    Live,
    /// A rebuild writing a generation nobody reads yet.
    Rebuild,
}

/// What happened to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchOutcome {
    /// Applied and checkpointed.
    Committed,
    /// A rebuild swapped generations; nothing was written, the runner must restart from the
    /// new generation's checkpoint.
    GenerationChanged,
}

/// Applies `events` (in sequence order) to `generation` in one transaction with their dedup rows
/// and the checkpoint.
pub(crate) async fn apply_batch(
    store: &ReadStore,
    projection: Projection,
    generation: i64,
    mode: Mode,
    events: &[StoredEvent],
) -> Result<BatchOutcome, ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(BatchOutcome::Committed);
    };
    let name = projection.name();
    let mut tx = store.pool().begin().await?;
    if mode == Mode::Live {
        // A write first: it takes SQLite's write lock before any read (a deferred transaction
        // that reads first can fail to upgrade), and on Postgres it locks the generation row, so
        // a rebuild's swap waits for this batch and the batch never lands in a retired generation.
        let active: i64 = sqlx::query(
            "UPDATE projection_generation SET active_generation = active_generation WHERE projection = $1 \
             RETURNING active_generation",
        )
        .bind(name)
        .fetch_one(&mut *tx)
        .await?
        .try_get("active_generation")?;
        if active != generation {
            tx.rollback().await?;
            return Ok(BatchOutcome::GenerationChanged);
        }
    }
    sqlx::query(
        "INSERT INTO projection_checkpoint (projection, generation, stream, seq) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (projection, generation) DO UPDATE SET stream = excluded.stream, seq = excluded.seq",
    )
    .bind(name)
    .bind(generation)
    .bind(last.stream.name())
    .bind(seq_i64(last.seq))
    .execute(&mut *tx)
    .await?;
    let mut decoded = Vec::with_capacity(events.len());
    for ev in events {
        match ev.decode() {
            Ok(env) => decoded.push((ev, env)),
            Err(e) => {
                let seq = seq_i64(ev.seq);
                tracing::warn!(%projection, seq, error = %e, "Poison event skipped.");
                record_poison(&mut tx, projection, generation, ev, None, &e.to_string()).await?;
            }
        }
    }
    let mut fresh = claim_events(&mut tx, name, generation, &decoded).await?;
    let mut pending = fold::rollup::Pending::default();
    for (ev, env) in &decoded {
        let event_id = env.id.to_string();
        // `remove`: a second copy of an event in one batch is not fresh either.
        if !fresh.remove(&event_id) {
            continue;
        }
        let seq = seq_i64(ev.seq);
        if let Folded::Rejected(reason) = fold::apply(&mut tx, &mut pending, projection, generation, seq, env).await? {
            tracing::warn!(%projection, seq, event_id, reason, "Event rejected by the projection.");
            record_poison(&mut tx, projection, generation, ev, Some(&event_id), &reason).await?;
        }
    }
    for row in pending.flush(&mut tx, generation).await? {
        let Some((ev, env)) = decoded.iter().find(|(ev, _)| seq_i64(ev.seq) == row.seq) else { continue };
        let event_id = env.id.to_string();
        tracing::warn!(%projection, seq = row.seq, event_id, reason = row.reason, "Event rejected by the projection.");
        record_poison(&mut tx, projection, generation, ev, Some(&event_id), &row.reason).await?;
    }
    tx.commit().await?;
    Ok(BatchOutcome::Committed)
}

/// Inserts the `applied_event` rows of `events` (a few multi-row statements per batch, not one
/// per event, in the fixed chunk sizes of [`fold::rollup::CHUNK_ROWS`]) and returns the ids that
/// were new: the events this generation has not applied.
async fn claim_events(
    conn: &mut AnyConnection,
    name: &str,
    generation: i64,
    events: &[(&StoredEvent, schemas::Envelope)],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut fresh = HashSet::with_capacity(events.len());
    let placeholders = fold::rollup::Placeholders::of(conn);
    for chunk in fold::rollup::chunks(events) {
        let sql = format!(
            "INSERT INTO applied_event (projection, generation, event_id, seq) VALUES {} \
             ON CONFLICT DO NOTHING RETURNING event_id",
            placeholders.tuples(chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (ev, env) in chunk {
            q = q.bind(name).bind(generation).bind(env.id.to_string()).bind(seq_i64(ev.seq));
        }
        for row in q.fetch_all(&mut *conn).await? {
            fresh.insert(row.try_get::<String, _>(0)?);
        }
    }
    Ok(fresh)
}

async fn record_poison(
    conn: &mut AnyConnection,
    projection: Projection,
    generation: i64,
    ev: &StoredEvent,
    event_id: Option<&str>,
    reason: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO poison_event (projection, generation, stream, seq, event_id, reason, payload) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(projection.name())
    .bind(generation)
    .bind(ev.stream.name())
    .bind(seq_i64(ev.seq))
    .bind(event_id.map(str::to_owned))
    .bind(reason)
    .bind(String::from_utf8_lossy(&ev.payload).into_owned())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Sequences are `u64` in the log and `BIGINT` in the store; no log reaches 2^63 events.
pub(crate) fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The generation reads are served from.
pub(crate) async fn active_generation(store: &ReadStore, projection: Projection) -> Result<i64, ProjectionError> {
    Ok(sqlx::query("SELECT active_generation FROM projection_generation WHERE projection = $1")
        .bind(projection.name())
        .fetch_one(store.pool())
        .await?
        .try_get("active_generation")?)
}

/// The last sequence applied to `generation` (0 when none).
pub(crate) async fn checkpoint(
    store: &ReadStore,
    projection: Projection,
    generation: i64,
) -> Result<u64, ProjectionError> {
    let seq: Option<i64> =
        sqlx::query("SELECT seq FROM projection_checkpoint WHERE projection = $1 AND generation = $2")
            .bind(projection.name())
            .bind(generation)
            .fetch_optional(store.pool())
            .await?
            .map(|r| r.try_get("seq"))
            .transpose()?;
    Ok(u64::try_from(seq.unwrap_or(0)).unwrap_or(0))
}
