//! Per-test Postgres databases on the local server (`postgres://postgres@127.0.0.1:5432`, trust
//! auth; `LLMR_TEST_POSTGRES_URL` overrides the admin URL). Each test gets a database of its own
//! so tests run in parallel; it is dropped (`WITH (FORCE)`) when the handle is dropped.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::{Connection, Executor, PgConnection};

/// The maintenance database the test databases are created from.
const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database created for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// The database's connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn admin_url() -> String {
    std::env::var("LLMR_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned())
}

/// The admin URL with its database path replaced by `name`.
fn url_for(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, _db) = admin_url.rsplit_once('/').context("The Postgres URL has no database path")?;
    Ok(format!("{base}/{name}"))
}

/// Creates an empty, uniquely named database and returns its handle.
pub async fn fresh_database() -> anyhow::Result<TestDb> {
    let admin_url = admin_url();
    // Identifiers cannot be bound; the name is built only from a UUID and the time, never input.
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
    let name = format!("llmr_test_{stamp}_{}", uuid::Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(&admin_url)
        .await
        .with_context(|| format!("Failed to connect to the test Postgres server at {admin_url}"))?;
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
        .await
        .with_context(|| format!("Failed to create database {name}"))?;
    let _ = conn.close().await;
    let url = url_for(&admin_url, &name)?;
    Ok(TestDb { name, url, admin_url })
}

/// Drops the database, closing connections still open to it.
async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(admin_url).await?;
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await?;
    let _ = conn.close().await;
    Ok(())
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which must not be blocked on; a short-lived thread
        // with its own runtime does the work. Best effort: a leftover database is only clutter
        // (they share the `llmr_test_` prefix for cleanup).
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let worker = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                let _ = rt.block_on(drop_database(&admin_url, &name));
            }
        });
        let _ = worker.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_keep_the_server_and_replace_the_database() -> anyhow::Result<()> {
        assert_eq!(
            url_for("postgres://postgres@127.0.0.1:5432/postgres", "x")?,
            "postgres://postgres@127.0.0.1:5432/x"
        );
        Ok(())
    }
}
