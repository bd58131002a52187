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
