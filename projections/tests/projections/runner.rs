//! The runner under failure: a batch that fails part way rolls back entirely, a runner killed at
//! arbitrary points resumes exactly, and the result always equals the reference fold.

use std::time::Duration;

use anyhow::{bail, ensure};
use projections::read;
use projections::{Projection, RunOptions};
use schemas::Stream;

use crate::helpers::{BACKENDS, Backend, FROM, Harness, Rng, TO, reference_usage, usage_events};

fn fail_trigger(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite => (
            "CREATE TRIGGER fail_injected BEFORE INSERT ON ledger WHEN NEW.request_id = 'req-37' \
             BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
            "DROP TRIGGER fail_injected",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION fail_injected() RETURNS trigger AS $$ BEGIN \
               IF NEW.request_id = 'req-37' THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; \
             END $$ LANGUAGE plpgsql; \
             CREATE TRIGGER fail_injected BEFORE INSERT ON ledger FOR EACH ROW EXECUTE FUNCTION fail_injected()",
            "DROP TRIGGER fail_injected ON ledger; DROP FUNCTION fail_injected()",
        ),
    }
}

#[tokio::test]
async fn a_batch_failing_part_way_rolls_back_and_the_restart_applies_everything_once() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = usage_events("acme", 120, 11, "req-");
        h.append_all(&events).await?;
        let (install, remove) = fail_trigger(backend);
        h.execute_sql(install).await?;

        let opts = RunOptions { max_batch: 50, ..RunOptions::default() };
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            projections::run_with(&h.store, &h.log, Projection::Ledger, std::future::pending(), opts.clone()),
        )
        .await;
        match outcome {
            Ok(Err(e)) => ensure!(e.to_string().contains("injected failure"), "{backend:?}: {e}"),
            Ok(Ok(())) => bail!("{backend:?}: the runner ignored the failure"),
            Err(_) => bail!("{backend:?}: the runner hung on the failure"),
        }
        // Everything up to the checkpoint is applied, nothing after it: the failed batch left no
        // trace, not even its first 36 events.
        let checkpoint = h.checkpoint(Projection::Ledger).await?;
        let applied = read::ledger_row_count(&h.store, "acme").await?;
        ensure!(
            applied == h.events_up_to(Stream::Billing, checkpoint).await?,
            "{backend:?}: {applied} rows at {checkpoint}"
        );
        ensure!(applied < 38, "{backend:?}: the failing event's batch was committed ({applied} rows)");
        ensure!(read::ledger_rows_for_request(&h.store, "req-36").await?.is_empty() || applied >= 37);

        h.execute_sql(remove).await?;
        h.catch_up_with(Projection::Ledger, opts).await?;
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 120, "{backend:?}: duplicates or losses");
        let got = read::usage_by_day(&h.store, "acme", None, FROM, TO).await?;
        ensure!(got == reference_usage(&events, "acme", None), "{backend:?}: totals differ from the reference");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_runner_killed_at_arbitrary_points_resumes_exactly() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = usage_events("acme", 400, 21, "req-");
        h.append_all(&events).await?;
        let opts = RunOptions { max_batch: 7, max_wait: Duration::from_millis(1), ..RunOptions::default() };
        let mut rng = Rng::new(99);
        for _ in 0..12 {
            let (store, log, opts) = (h.store.clone(), h.log.clone(), opts.clone());
            let task = tokio::spawn(async move {
                projections::run_with(&store, &log, Projection::Ledger, std::future::pending(), opts).await
            });
            tokio::time::sleep(Duration::from_micros(500 + rng.below(15_000))).await;
            task.abort();
            // Wait until the task is gone, so its lock and transaction are released.
            match task.await {
                Err(e) if e.is_cancelled() => {}
                Err(e) => bail!("{backend:?}: runner panicked: {e}"),
                Ok(r) => r?,
            }
        }
        let killed_at = h.checkpoint(Projection::Ledger).await?;
        h.catch_up_with(Projection::Ledger, opts).await?;
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 400, "{backend:?}: duplicates or losses");
        let got = read::usage_by_day(&h.store, "acme", None, FROM, TO).await?;
        ensure!(got == reference_usage(&events, "acme", None), "{backend:?}: totals differ (killed at {killed_at})");
        for key in ["key_a", "key_b"] {
            let got = read::usage_by_day(&h.store, "acme", Some(key), FROM, TO).await?;
            ensure!(got == reference_usage(&events, "acme", Some(key)), "{backend:?}: {key} totals differ");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_second_runner_waits_while_the_first_holds_the_writer_lock() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let (stop_first, first_stopped) = tokio::sync::oneshot::channel::<()>();
        let (store, log) = (h.store.clone(), h.log.clone());
        let first = tokio::spawn(async move {
            projections::run(&store, &log, Projection::Ledger, async move {
                let _ = first_stopped.await;
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let opts = RunOptions { lock_retry: Duration::from_millis(20), ..RunOptions::default() };
        let (store, log) = (h.store.clone(), h.log.clone());
        let second = tokio::spawn(async move {
            projections::run_with(&store, &log, Projection::Ledger, std::future::pending(), opts).await
        });
        h.append_all(&usage_events("acme", 5, 3, "req-")).await?;
        h.catch_up_wait(5).await?;
        ensure!(!second.is_finished(), "{backend:?}: the standby must keep waiting");
        let _ = stop_first.send(());
        first.await??;
        // The standby takes over and applies what arrives next.
        h.append_all(&usage_events("acme", 3, 4, "late-")).await?;
        h.catch_up_wait(8).await?;
        second.abort();
        let _ = second.await;
    }
    Ok(())
}

#[tokio::test]
async fn one_process_at_a_time_holds_a_task_lease_and_another_takes_it_when_freed() -> anyhow::Result<()> {
    use anyhow::Context as _;
    use projections::{Lease, LeaseTask};
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        // A second connection to the same store stands for another process of the cluster.
        let other = projections::ReadStore::connect(&h.store_url).await?;
        let mut first =
            Lease::try_take(&h.store, LeaseTask::ProxyPoolSync).await?.context("the first taker gets the lease")?;
        ensure!(first.still_held().await, "{backend:?}: a fresh lease holds");
        ensure!(
            Lease::try_take(&other, LeaseTask::ProxyPoolSync).await?.is_none(),
            "{backend:?}: a second process must not get a held lease"
        );
        first.release().await;
        let second = Lease::try_take(&other, LeaseTask::ProxyPoolSync).await?;
        ensure!(second.is_some(), "{backend:?}: a freed lease goes to the next taker");
        // Dropping (a process that dies) frees it as well.
        drop(second);
        if backend == Backend::Postgres {
            // The session closes in the background; the server frees the lock when it notices.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while Lease::try_take(&h.store, LeaseTask::ProxyPoolSync).await?.is_none() {
                ensure!(std::time::Instant::now() < deadline, "{backend:?}: a dropped lease was never freed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            ensure!(Lease::try_take(&h.store, LeaseTask::ProxyPoolSync).await?.is_some(), "{backend:?}: not freed");
        }
        other.close().await;
    }
    Ok(())
}
