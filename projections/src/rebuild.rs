//! Rebuilding a projection from sequence 1 while the current version keeps serving reads.
//!
//! Design: every read-model table has a `generation` column that leads its primary key, and
//! `projection_generation(projection, active_generation, building_generation)` says which
//! generation reads and the live runner use. A rebuild
//!
//! 1. takes the projection's rebuild lock (one rebuild at a time) and notes `target = last_seq`;
//! 2. deletes leftovers of other generations (an aborted rebuild, a retired generation) and
//!    picks `new = max(every generation seen) + 1`, recorded as `building_generation`;
//! 3. folds the stream from sequence 1 into generation `new` with the same batch code as the
//!    runner (own checkpoint and `applied_event` rows under `new`), reporting progress, until it
//!    has applied `target`;
//! 4. swaps in ONE transaction: `active_generation = new`, once the new generation has applied at
//!    least as far as the old one's checkpoint (checked under the lock of the generation row;
//!    if the live runner moved on, the rebuild folds the difference first). Reads select
//!    `WHERE generation = (active)` in a single statement, so each read sees either the old or
//!    the new generation, never a mix, and never less after the swap than before it;
//! 5. deletes the old generation's rows.
//!
//! The live runner keeps applying new events to the old generation meanwhile. Each of its
//! batches first locks the `projection_generation` row and checks the active generation, so
//! after the swap it writes nothing more to the old one and restarts from the new generation's
//! checkpoint.
//!
//! Why a column rather than per-version tables (`ledger_a`/`ledger_b`) or copy-and-rename: all
//! SQL stays static text with bound parameters, one migration defines the schema for every
//! generation, and the swap is a one-row update that both SQLite and Postgres do atomically.

use futures::StreamExt;
use nats::EventLog;
use sqlx::Row;

use crate::locks::{self, Purpose};
use crate::runner::{self, BatchOutcome, Mode};
use crate::{Projection, ProjectionError, ReadStore};

/// Most events per rebuild transaction.
const REBUILD_BATCH: usize = 1000;

/// What a finished rebuild did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildOutcome {
    /// The generation now serving reads.
    pub generation: i64,
    /// The generation it replaced.
    pub replaced: i64,
    /// The stream's last sequence when the rebuild started; the new generation covers it.
    pub target_seq: u64,
    /// The last sequence the new generation had applied at the swap (at least `target_seq`;
    /// more when the live runner had moved on during the rebuild).
    pub seq: u64,
}

/// Builds a fresh generation of `projection` from sequence 1, then swaps it in. `progress` is
/// called with `(done_seq, target_seq)` after every batch.
pub async fn rebuild(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    mut progress: impl FnMut(u64, u64),
) -> Result<RebuildOutcome, ProjectionError> {
    let Some(lock) = locks::try_lock(store, projection, Purpose::Rebuild).await? else {
        return Err(ProjectionError::RebuildRunning(projection.name()));
    };
    let result = rebuild_locked(store, log, projection, &mut progress).await;
    lock.release().await;
    result
}

async fn rebuild_locked(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    progress: &mut impl FnMut(u64, u64),
) -> Result<RebuildOutcome, ProjectionError> {
    let name = projection.name();
    let target = log.last_seq(projection.stream()).await?;
    let active = runner::active_generation(store, projection).await?;
    delete_generations_except(store, projection, active).await?;
    let newest: i64 =
        sqlx::query("SELECT COALESCE(MAX(generation), 0) AS g FROM projection_checkpoint WHERE projection = $1")
            .bind(name)
            .fetch_one(store.pool())
            .await?
            .try_get("g")?;
    let generation = newest.max(active) + 1;
    sqlx::query("UPDATE projection_generation SET building_generation = $1 WHERE projection = $2")
        .bind(generation)
        .bind(name)
        .execute(store.pool())
        .await?;
    tracing::info!(%projection, generation, target, "Rebuild started.");
    progress(0, target);
    let mut done = fold_range(store, log, projection, generation, 0, target, progress).await?;

    // Swap once the new generation has applied everything the old one has: the live runner may
    // have moved the old generation past `target` meanwhile, and a read after the swap must not
    // see less than a read before it.
    loop {
        let mut tx = store.pool().begin().await?;
        // A write first: it waits for a live batch in flight (Postgres row lock, SQLite write
        // lock) and keeps the next one out until this transaction ends.
        let locked = sqlx::query(
            "UPDATE projection_generation SET building_generation = building_generation \
             WHERE projection = $1 AND active_generation = $2 AND building_generation = $3",
        )
        .bind(name)
        .bind(active)
        .bind(generation)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if locked != 1 {
            tx.rollback().await?;
            return Err(ProjectionError::RebuildConflict(name));
        }
        let live: Option<i64> =
            sqlx::query("SELECT seq FROM projection_checkpoint WHERE projection = $1 AND generation = $2")
                .bind(name)
                .bind(active)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| r.try_get("seq"))
                .transpose()?;
        let live = u64::try_from(live.unwrap_or(0)).unwrap_or(0);
        if live > done {
            tx.rollback().await?;
            done = fold_range(store, log, projection, generation, done, live, progress).await?;
            continue;
        }
        sqlx::query(
            "UPDATE projection_generation SET active_generation = $1, building_generation = NULL \
             WHERE projection = $2",
        )
        .bind(generation)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        break;
    }
    tracing::info!(%projection, generation, replaced = active, target, seq = done, "Rebuild swapped in.");
    delete_generations_except(store, projection, generation).await?;
    Ok(RebuildOutcome { generation, replaced: active, target_seq: target, seq: done })
}

/// Folds the events of `(after, until]` into `generation`, in batches; returns the last
/// sequence applied (`after` when there was nothing).
async fn fold_range(
    store: &ReadStore,
    log: &EventLog,
    projection: Projection,
    generation: i64,
    after: u64,
    until: u64,
    progress: &mut impl FnMut(u64, u64),
) -> Result<u64, ProjectionError> {
    let mut done = after;
    if done >= until {
        return Ok(done);
    }
    let mut tail = log.tail(projection.stream(), after);
    while done < until {
        let mut batch = Vec::new();
        while batch.len() < REBUILD_BATCH {
            // Catch-up events are already buffered; a short wait only ends a batch early.
            let next = if batch.is_empty() {
                tail.next().await
            } else {
                match tokio::time::timeout(std::time::Duration::from_millis(5), tail.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                }
            };
            let Some(ev) = next else {
                return Err(ProjectionError::TailEnded(projection.stream().name()));
            };
            let ev = ev?;
            if ev.seq > until {
                break;
            }
            let at_end = ev.seq == until;
            batch.push(ev);
            if at_end {
                break;
            }
        }
        let Some(last) = batch.last().map(|e| e.seq) else {
            break;
        };
        if runner::apply_batch(store, projection, generation, Mode::Rebuild, &batch).await? != BatchOutcome::Committed {
            return Err(ProjectionError::RebuildConflict(projection.name()));
        }
        done = last;
        progress(done, until);
    }
    Ok(done)
}

/// Deletes every row of `projection` (read model and bookkeeping) outside `keep`, in one
/// transaction.
async fn delete_generations_except(
    store: &ReadStore,
    projection: Projection,
    keep: i64,
) -> Result<(), ProjectionError> {
    let mut tx = store.pool().begin().await?;
    for sql in projection.delete_other_generations() {
        sqlx::query(sql).bind(keep).execute(&mut *tx).await?;
    }
    for sql in [
        "DELETE FROM applied_event WHERE generation <> $1 AND projection = $2",
        "DELETE FROM projection_checkpoint WHERE generation <> $1 AND projection = $2",
        "DELETE FROM poison_event WHERE generation <> $1 AND projection = $2",
    ] {
        sqlx::query(sql).bind(keep).bind(projection.name()).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}
