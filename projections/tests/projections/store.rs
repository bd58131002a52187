//! The read store itself: URLs, migrations applied once per database.

use anyhow::ensure;
use projections::{Backend as StoreBackend, ProjectionError, ReadStore};

use crate::helpers::{BACKENDS, Backend, Harness};

#[tokio::test]
async fn connecting_again_to_a_migrated_store_applies_nothing_twice() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let again = ReadStore::connect(&h.store_url).await?;
        let expected = match backend {
            Backend::Sqlite => StoreBackend::Sqlite,
            Backend::Postgres => StoreBackend::Postgres,
        };
        // Re-running a migration would fail here: its CREATE TABLEs have no IF NOT EXISTS.
        ensure!(again.backend() == expected);
        ensure!(projections::read::checkpoints(&again).await?.is_empty(), "{backend:?}");
        again.close().await;
    }
    Ok(())
}

#[tokio::test]
async fn an_unknown_url_scheme_is_refused_without_echoing_the_url() -> anyhow::Result<()> {
    match ReadStore::connect("mysql://user:secret@localhost/db").await {
        Err(ProjectionError::UnsupportedUrl(scheme)) => {
            ensure!(scheme == "mysql");
            Ok(())
        }
        other => anyhow::bail!("expected UnsupportedUrl, got {other:?}"),
    }
}

/// The shared `Idempotency-Key` table: a claim runs once, a retry finds the answer, another body
/// is a reuse, a running claim is in use until it goes stale, rows expire, and a user's count is
/// bounded; on both stores.
#[tokio::test]
async fn idempotency_claims_run_once_and_expire() -> anyhow::Result<()> {
    use projections::idempotency::{Claim, Claimed, claim, finish, release};
    const KEEP: i64 = 1_000;
    const STALE: i64 = 100;
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let s = &h.store;
        let c = Claim { user_id: "usr_1", path: "/api/api-keys", key: "k1", body_hash: "aa" };
        ensure!(claim(s, c, 0, KEEP, STALE, 10).await? == Claimed::Fresh, "{backend:?}");
        ensure!(claim(s, c, 10, KEEP, STALE, 10).await? == Claimed::InUse, "{backend:?}: running");
        let other = Claim { body_hash: "bb", ..c };
        ensure!(claim(s, other, 10, KEEP, STALE, 10).await? == Claimed::Reused, "{backend:?}: another body");
        // A claim nobody finished is taken over once it is stale, by one retry only.
        ensure!(claim(s, c, 150, KEEP, STALE, 10).await? == Claimed::Fresh, "{backend:?}: stale");
        ensure!(claim(s, c, 151, KEEP, STALE, 10).await? == Claimed::InUse, "{backend:?}: taken over");
        finish(s, c, 201, Some("application/json"), "sealed").await?;
        let done = claim(s, c, 200, KEEP, STALE, 10).await?;
        let want =
            Claimed::Done { status: 201, content_type: Some("application/json".into()), sealed_body: "sealed".into() };
        ensure!(done == want, "{backend:?}: {done:?}");
        // Released (a 5xx): the next retry runs again.
        let c2 = Claim { key: "k2", ..c };
        ensure!(claim(s, c2, 200, KEEP, STALE, 10).await? == Claimed::Fresh);
        release(s, c2).await?;
        ensure!(claim(s, c2, 201, KEEP, STALE, 10).await? == Claimed::Fresh, "{backend:?}: released");
        // At most `max_per_user` live keys per user; others are not counted.
        ensure!(claim(s, Claim { key: "k3", ..c }, 202, KEEP, STALE, 2).await? == Claimed::Full);
        ensure!(claim(s, Claim { user_id: "usr_2", ..c }, 202, KEEP, STALE, 2).await? == Claimed::Fresh);
        // After `keep` the answer is gone and the key is new again.
        ensure!(claim(s, c, 150 + KEEP + 1, KEEP, STALE, 10).await? == Claimed::Fresh, "{backend:?}: expired");
    }
    Ok(())
}
