//! Rebuilds: a fresh generation from sequence 1 gives byte-identical reports, reads keep
//! answering from the old generation until the swap, and the live runner follows the swap.

use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, ensure};
use projections::read::{self, usage_report};
use projections::{Projection, RunOptions};
use schemas::Stream;

use crate::helpers::{BACKENDS, FROM, Harness, TO, reference_usage, usage_events};

#[tokio::test]
async fn a_rebuild_reproduces_the_usage_report_byte_for_byte() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = usage_events("acme", 250, 5, "req-");
        h.append_all(&events).await?;
        h.catch_up(Projection::Ledger).await?;
        let before = usage_report(&h.store, "acme", FROM, TO).await?;
        ensure!(before.as_of_seq == h.log.last_seq(Stream::Billing).await?);
        let generation = read::active_generation(&h.store, Projection::Ledger).await?;

        let mut seen = Vec::new();
        let outcome =
            projections::rebuild(&h.store, &h.log, Projection::Ledger, |done, target| seen.push((done, target)))
                .await?;
        ensure!(outcome.replaced == generation && outcome.generation > generation, "{backend:?}: {outcome:?}");
        ensure!(read::active_generation(&h.store, Projection::Ledger).await? == outcome.generation);
        let last = seen.last().copied();
        ensure!(last == Some((outcome.target_seq, outcome.target_seq)), "{backend:?}: progress {seen:?}");

        let after = usage_report(&h.store, "acme", FROM, TO).await?;
        ensure!(after.to_csv() == before.to_csv(), "{backend:?}: CSV differs after the rebuild");
        ensure!(after.to_json() == before.to_json(), "{backend:?}: JSON differs after the rebuild");
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 250);

        // The live runner continues on the new generation from its checkpoint.
        let more = usage_events("acme", 20, 6, "more-");
        h.append_all(&more).await?;
        h.catch_up(Projection::Ledger).await?;
        let all: Vec<_> = events.iter().chain(&more).cloned().collect();
        ensure!(read::usage_by_day(&h.store, "acme", None, FROM, TO).await? == reference_usage(&all, "acme", None));
        // Asked "as of" the first report's sequence, later and after a rebuild: the same bytes.
        let as_of = read::usage_report_as_of(&h.store, "acme", FROM, TO, before.as_of_seq).await?;
        ensure!(as_of.to_csv() == before.to_csv(), "{backend:?}: as-of CSV differs");
        ensure!(as_of.to_json() == before.to_json(), "{backend:?}: as-of JSON differs");
        let now = usage_report(&h.store, "acme", FROM, TO).await?;
        let as_of_now = read::usage_report_as_of(&h.store, "acme", FROM, TO, now.as_of_seq).await?;
        ensure!(as_of_now.to_csv() == now.to_csv() && now.to_csv() != before.to_csv(), "{backend:?}");
        let ahead = read::usage_report_as_of(&h.store, "acme", FROM, TO, now.as_of_seq + 1).await;
        ensure!(matches!(ahead, Err(projections::ProjectionError::NotCaughtUp { .. })), "{backend:?}: {ahead:?}");
        // A second rebuild works too (generation numbers keep growing, leftovers are cleared).
        let again = projections::rebuild(&h.store, &h.log, Projection::Ledger, |_, _| {}).await?;
        ensure!(again.generation > outcome.generation);
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 270);
    }
    Ok(())
}

#[tokio::test]
async fn a_control_rebuild_keeps_keys_and_prices() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        h.append_all(&[
            crate::helpers::tenant_created("acme"),
            crate::helpers::key_issued("acme", "key_1", "hash-1", 5),
        ])
        .await?;
        h.catch_up(Projection::Control).await?;
        projections::rebuild(&h.store, &h.log, Projection::Control, |_, _| {}).await?;
        ensure!(read::key_by_hash(&h.store, "hash-1").await?.is_some(), "{backend:?}");
        ensure!(read::tenants(&h.store).await?.len() == 1, "{backend:?}");
        // Rebuilding an empty stream swaps in an empty generation.
        projections::rebuild(&h.store, &h.log, Projection::Ledger, |_, _| {}).await?;
        ensure!(read::usage_by_day(&h.store, "acme", None, FROM, TO).await?.is_empty());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_answer_from_the_old_generation_while_a_rebuild_runs() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        // More than one rebuild batch, so the rebuild can be paused half way.
        let events = usage_events("acme", 1500, 9, "req-");
        h.append_all(&events).await?;
        h.catch_up(Projection::Ledger).await?;
        let before = usage_report(&h.store, "acme", FROM, TO).await?;
        let old_generation = read::active_generation(&h.store, Projection::Ledger).await?;

        // The live runner keeps going during the rebuild.
        let (stop_runner, runner_stopped) = tokio::sync::oneshot::channel::<()>();
        let (store, log) = (h.store.clone(), h.log.clone());
        let runner = tokio::spawn(async move {
            let opts = RunOptions { lock_retry: Duration::from_millis(20), ..RunOptions::default() };
            projections::run_with(
                &store,
                &log,
                Projection::Ledger,
                async move {
                    let _ = runner_stopped.await;
                },
                opts,
            )
            .await
        });

        // The progress callback parks the rebuild after its first batch until told to go on.
        let (paused_tx, paused_rx) = mpsc::channel::<(u64, u64)>();
        let (resume_tx, resume_rx) = mpsc::channel::<()>();
        let (store, log) = (h.store.clone(), h.log.clone());
        let rebuild = tokio::spawn(async move {
            let mut parked = false;
            projections::rebuild(&store, &log, Projection::Ledger, move |done, target| {
                if !parked && done > 0 && done < target {
                    parked = true;
                    let _ = paused_tx.send((done, target));
                    // block_in_place hands this worker's other tasks (the live runner) to the
                    // rest of the runtime while the rebuild is parked.
                    let _ = tokio::task::block_in_place(|| resume_rx.recv_timeout(Duration::from_secs(60)));
                }
            })
            .await
        });
        let (done, target) = tokio::task::spawn_blocking(move || paused_rx.recv_timeout(Duration::from_secs(60)))
            .await?
            .context("the rebuild never reported progress")?;
        ensure!(done < target, "{backend:?}: paused at {done}/{target}");

        // Half way: reads still see the complete old generation.
        ensure!(read::active_generation(&h.store, Projection::Ledger).await? == old_generation);
        let during = usage_report(&h.store, "acme", FROM, TO).await?;
        ensure!(during.to_csv() == before.to_csv(), "{backend:?}: a read saw the half-built generation");
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 1500);
        // New events keep flowing into the old generation.
        let more = usage_events("acme", 10, 10, "during-");
        h.append_all(&more).await?;
        h.catch_up_wait(1510).await?;

        resume_tx.send(())?;
        let outcome = rebuild.await??;
        ensure!(outcome.target_seq == target && outcome.generation > old_generation, "{backend:?}: {outcome:?}");
        // The swap waited for the new generation to cover what the old one had served.
        ensure!(outcome.seq > target, "{backend:?}: {outcome:?}");
        ensure!(read::ledger_row_count(&h.store, "acme").await? == 1510, "{backend:?}: the swap lost rows");
        // The runner follows the swap: the next event lands in the new generation.
        let last = usage_events("acme", 1, 12, "after-");
        h.append_all(&last).await?;
        h.catch_up_wait(1511).await?;
        let more: Vec<_> = more.into_iter().chain(last).collect();
        let all: Vec<_> = events.iter().chain(&more).cloned().collect();
        ensure!(
            read::usage_by_day(&h.store, "acme", None, FROM, TO).await? == reference_usage(&all, "acme", None),
            "{backend:?}: totals after the swap differ from the reference"
        );
        let _ = stop_runner.send(());
        runner.await??;
    }
    Ok(())
}
