//! Read models folded from the event log: the [`ReadStore`] (SQLite or Postgres through one set
//! of SQL text), the runner that applies each event exactly once, rebuilds, and the [`read`]
//! query API used by `web` and the CLI. Every migration of every read model lives here; no other
//! crate writes read-model SQL. Side effects (notifications) do not belong here: see `workers`.

mod day;
mod error;
mod fold;
pub mod idempotency;
mod locks;
mod migrations;
mod projection;
pub mod read;
mod rebuild;
mod runner;
mod store;

pub use day::{Day, DayError, utc_day};
pub use error::ProjectionError;
pub use locks::{Lease, LeaseTask};
pub use projection::Projection;
pub use rebuild::{RebuildOutcome, rebuild};
pub use runner::{RunOptions, run, run_with};
pub use store::{Backend, ReadStore};

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send<T: Send>(_: T) {}

    /// sqlx's higher-ranked `Executor` bounds easily make a future `!Send`, which only shows up
    /// where a caller spawns it; `workers` spawns these, so check here, at compile time.
    #[test]
    fn public_futures_can_be_spawned() {
        let _ = |store: ReadStore, log: nats::EventLog| {
            is_send(async move {
                let _ = ReadStore::connect("sqlite://x").await;
                let _ = run(&store, &log, Projection::Ledger, std::future::pending()).await;
                let _ = rebuild(&store, &log, Projection::Ledger, |_, _| {}).await;
                let _ = read::usage_report(&store, "t", "2026-01-01", "2026-01-31").await;
                let _ = read::key_by_hash(&store, "h").await;
                let _ = read::usage_report_as_of(&store, "t", "2026-01-01", "2026-01-31", 1).await;
            })
        };
    }
}
