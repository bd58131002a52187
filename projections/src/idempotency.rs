//! The shared table of `Idempotency-Key` answers (migration 0010): every gateway on one read store
//! sees the same claims, so a retried admin POST is answered once whichever gateway gets it.
//! The caller seals the answer body; this module stores what it is given.
//!
//! A claim is a row inserted before the handler runs (`done = 0`). The same key again finds the
//! row: another body → a reuse, a finished row → its answer, a running row → in use, unless the
//! claim is older than `stale_us` (its gateway died mid-request), which the new request takes
//! over. Rows go `keep_us` after their claim.

use sqlx::Row;

use crate::{ProjectionError, ReadStore};

/// Who sent which key to which path.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The admin user.
    pub user_id: &'a str,
    /// The request path.
    pub path: &'a str,
    /// The `Idempotency-Key`.
    pub key: &'a str,
    /// Hex SHA-256 of the request body.
    pub body_hash: &'a str,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is new (or its earlier claim went stale): run the request, then [`finish`] or
    /// [`release`].
    Fresh,
    /// The key was used with another body.
    Reused,
    /// A request with this key is still running.
    InUse,
    /// The first request's answer, to send again.
    Done {
        /// HTTP status.
        status: u16,
        /// `Content-Type`, if it had one.
        content_type: Option<String>,
        /// The sealed body, as given to [`finish`].
        sealed_body: String,
    },
    /// The user holds `max_per_user` live keys already.
    Full,
}

/// Claims `c` at `now_us`. Rows older than `keep_us` are deleted first.
pub async fn claim(
    store: &ReadStore,
    c: Claim<'_>,
    now_us: i64,
    keep_us: i64,
    stale_us: i64,
    max_per_user: i64,
) -> Result<Claimed, ProjectionError> {
    let pool = store.pool();
    sqlx::query("DELETE FROM idempotency WHERE claimed_at_us < $1")
        .bind(now_us.saturating_sub(keep_us))
        .execute(pool)
        .await?;
    let row = sqlx::query(
        "SELECT body_hash, claimed_at_us, done, status, content_type, sealed_body FROM idempotency \
         WHERE user_id = $1 AND path = $2 AND idem_key = $3",
    )
    .bind(c.user_id)
    .bind(c.path)
    .bind(c.key)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        let held: i64 = sqlx::query("SELECT COUNT(*) AS n FROM idempotency WHERE user_id = $1")
            .bind(c.user_id)
            .fetch_one(pool)
            .await?
            .try_get("n")?;
        if held >= max_per_user {
            return Ok(Claimed::Full);
        }
        let inserted = sqlx::query(
            "INSERT INTO idempotency (user_id, path, idem_key, body_hash, claimed_at_us, done) \
             VALUES ($1, $2, $3, $4, $5, 0) ON CONFLICT DO NOTHING",
        )
        .bind(c.user_id)
        .bind(c.path)
        .bind(c.key)
        .bind(c.body_hash)
        .bind(now_us)
        .execute(pool)
        .await?
        .rows_affected();
        // Lost a race with another gateway's claim of the same key: that one runs.
        return Ok(if inserted == 1 { Claimed::Fresh } else { Claimed::InUse });
    };
    let body_hash: String = row.try_get("body_hash")?;
    if body_hash != c.body_hash {
        return Ok(Claimed::Reused);
    }
    if row.try_get::<i64, _>("done")? == 1 {
        let status: Option<i64> = row.try_get("status")?;
        let sealed_body: Option<String> = row.try_get("sealed_body")?;
        return Ok(Claimed::Done {
            status: status.and_then(|s| u16::try_from(s).ok()).unwrap_or(200),
            content_type: row.try_get("content_type")?,
            sealed_body: sealed_body.unwrap_or_default(),
        });
    }
    let claimed_at: i64 = row.try_get("claimed_at_us")?;
    if now_us.saturating_sub(claimed_at) < stale_us {
        return Ok(Claimed::InUse);
    }
    // A claim whose gateway never finished it: take it over, unless another retry just did.
    let taken = sqlx::query(
        "UPDATE idempotency SET claimed_at_us = $1 WHERE user_id = $2 AND path = $3 AND idem_key = $4 \
         AND done = 0 AND claimed_at_us = $5",
    )
    .bind(now_us)
    .bind(c.user_id)
    .bind(c.path)
    .bind(c.key)
    .bind(claimed_at)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(if taken == 1 { Claimed::Fresh } else { Claimed::InUse })
}

/// Stores the answer of a [`Claimed::Fresh`] claim.
pub async fn finish(
    store: &ReadStore,
    c: Claim<'_>,
    status: u16,
    content_type: Option<&str>,
    sealed_body: &str,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "UPDATE idempotency SET done = 1, status = $1, content_type = $2, sealed_body = $3 \
         WHERE user_id = $4 AND path = $5 AND idem_key = $6",
    )
    .bind(i64::from(status))
    .bind(content_type.map(str::to_owned))
    .bind(sealed_body)
    .bind(c.user_id)
    .bind(c.path)
    .bind(c.key)
    .execute(store.pool())
    .await?;
    Ok(())
}

/// Forgets a [`Claimed::Fresh`] claim whose request failed on our side, so a retry runs again.
pub async fn release(store: &ReadStore, c: Claim<'_>) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM idempotency WHERE user_id = $1 AND path = $2 AND idem_key = $3 AND done = 0")
        .bind(c.user_id)
        .bind(c.path)
        .bind(c.key)
        .execute(store.pool())
        .await?;
    Ok(())
}
