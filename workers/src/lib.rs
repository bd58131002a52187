//! Runs the projections (and, later, side effects) until shutdown. A projection that fails —
//! Postgres restarting, say — is restarted with backoff from its checkpoint; it never skips.

pub mod health;

use std::time::Duration;

use nats::EventLog;
use projections::{Projection, ReadStore, RunOptions};
use tokio::sync::watch;

/// First wait before restarting a failed projection; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between restarts, so recovery after an outage is noticed quickly.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs every projection until `shutdown` turns true. The request log keeps
/// `request_log_retention` (the Requests stream's window).
pub async fn run_projections(
    store: ReadStore,
    log: EventLog,
    shutdown: watch::Receiver<bool>,
    request_log_retention: Duration,
) {
    let opts = RunOptions { request_log_retention, ..RunOptions::default() };
    let tasks: Vec<_> = Projection::ALL
        .into_iter()
        .map(|p| tokio::spawn(supervise(store.clone(), log.clone(), p, shutdown.clone(), opts.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

async fn supervise(
    store: ReadStore,
    log: EventLog,
    projection: Projection,
    mut shutdown: watch::Receiver<bool>,
    opts: RunOptions,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let stop = {
            let mut s = shutdown.clone();
            async move {
                let _ = s.wait_for(|v| *v).await;
            }
        };
        match projections::run_with(&store, &log, projection, stop, opts.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(%projection, error = %e, retry_in = ?backoff, "Projection stopped; restarting from its checkpoint.");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.wait_for(|v| *v) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
