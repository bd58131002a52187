//! The embedded SQLite backend through the public `EventLog`: append, tail, dedup by event id,
//! last sequence, live wake-ups, and a second instance on the same file (the admin CLI's case).

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use futures::stream::BoxStream;
use nats::{EventLog, LogError, StoredEvent};
use schemas::{Envelope, EventBody, RequestLogged, Stream, TenantCreated};

type Tail = BoxStream<'static, Result<StoredEvent, LogError>>;

const WAIT: Duration = Duration::from_secs(10);

fn tenant_created(name: &str) -> Envelope {
    Envelope::new("acme", "test", 1, EventBody::TenantCreated(TenantCreated { name: name.into() }))
}

fn request_logged(n: u32) -> Envelope {
    let body = RequestLogged {
        request_id: format!("req_{n}"),
        key_id: None,
        endpoint: "chat.completions".into(),
        model: None,
        provider: None,
        channel_id: None,
        status: 200,
        latency_us: 1,
        ttft_us: None,
        attempts: 1,
        error_class: None,
        streamed: false,
        attempt_log: Vec::new(),
    };
    Envelope::new("acme", "test", 1, EventBody::RequestLogged(body))
}

async fn next_within(tail: &mut Tail, within: Duration) -> anyhow::Result<StoredEvent> {
    match tokio::time::timeout(within, tail.next()).await {
        Ok(Some(ev)) => Ok(ev?),
        Ok(None) => bail!("tail ended"),
        Err(_) => bail!("no event within {within:?}"),
    }
}

async fn assert_quiet(tail: &mut Tail, quiet: Duration) -> anyhow::Result<()> {
    if let Ok(Some(ev)) = tokio::time::timeout(quiet, tail.next()).await {
        bail!("unexpected extra event: {:?}", ev.map(|e| e.seq));
    }
    Ok(())
}

#[tokio::test]
async fn appended_events_are_tailed_in_order_per_stream() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let a = tenant_created("a");
    let r = request_logged(1);
    let b = tenant_created("b");
    log.append(&a).await?;
    log.append(&r).await?;
    log.append(&b).await?;

    let mut control = log.tail(Stream::Control, 0);
    let first = next_within(&mut control, WAIT).await?;
    let second = next_within(&mut control, WAIT).await?;
    assert_eq!((first.stream, first.decode()?), (Stream::Control, a));
    assert_eq!(second.decode()?, b);
    ensure!(first.seq < second.seq, "sequences not increasing: {} then {}", first.seq, second.seq);
    assert_quiet(&mut control, Duration::from_millis(200)).await?;

    let mut requests = log.tail(Stream::Requests, 0);
    assert_eq!(next_within(&mut requests, WAIT).await?.decode()?, r);
    Ok(())
}

#[tokio::test]
async fn the_same_event_appended_twice_is_stored_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let ev = tenant_created("dup");
    log.append(&ev).await?;
    log.append(&ev).await?;
    log.append_acked(&ev).await?;
    let mut tail = log.tail(Stream::Control, 0);
    assert_eq!(next_within(&mut tail, WAIT).await?.decode()?.id, ev.id);
    assert_quiet(&mut tail, Duration::from_millis(200)).await
}

#[tokio::test]
async fn last_seq_is_per_stream_and_zero_when_empty() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    assert_eq!(log.last_seq(Stream::Control).await?, 0);
    log.append(&tenant_created("a")).await?;
    log.append(&request_logged(1)).await?;
    // The embedded backend numbers events globally.
    assert_eq!(log.last_seq(Stream::Control).await?, 1);
    assert_eq!(log.last_seq(Stream::Requests).await?, 2);
    assert_eq!(log.last_seq(Stream::Billing).await?, 0);

    let mut tail = log.tail(Stream::Control, 1);
    assert_quiet(&mut tail, Duration::from_millis(200)).await?;
    let health = log.health().await;
    assert!(health.reachable && health.spool_depth == 0, "{health:?}");
    log.flush(Duration::from_millis(10)).await?;
    Ok(())
}

#[tokio::test]
async fn a_live_tail_wakes_within_200_ms_of_an_append() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let mut tail = log.tail(Stream::Control, 0);
    assert_quiet(&mut tail, Duration::from_millis(300)).await?;
    for i in 0..3 {
        let ev = tenant_created(&format!("live-{i}"));
        log.append_nowait(&ev);
        let got = next_within(&mut tail, Duration::from_millis(200)).await.context("Tail did not wake in time")?;
        assert_eq!(got.decode()?, ev);
    }
    Ok(())
}

#[tokio::test]
async fn a_second_instance_on_the_same_file_sees_appends_by_polling() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let gateway = EventLog::open_embedded(dir.path()).await?;
    // The admin CLI: another process, so no in-process wake-up, only the poll.
    let cli = EventLog::open_embedded(dir.path()).await?;
    let mut tail = gateway.tail(Stream::Control, 0);

    let ev = tenant_created("from-cli");
    cli.append_acked(&ev).await?;
    let got = next_within(&mut tail, Duration::from_secs(1)).await?;
    assert_eq!(got.decode()?, ev);

    // And the other way round, for a tail opened by the second instance after the fact.
    let back = tenant_created("from-gateway");
    gateway.append(&back).await?;
    let mut cli_tail = cli.tail(Stream::Control, got.seq);
    assert_eq!(next_within(&mut cli_tail, Duration::from_secs(1)).await?.decode()?, back);
    assert_eq!(cli.last_seq(Stream::Control).await?, gateway.last_seq(Stream::Control).await?);
    Ok(())
}

#[tokio::test]
async fn an_event_over_the_size_limit_is_refused_and_the_log_goes_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let huge = tenant_created(&"x".repeat(nats::MAX_EVENT_BYTES));
    let refused = log.append(&huge).await;
    ensure!(
        matches!(refused, Err(LogError::TooLarge { event_type: "tenant.created", limit: nats::MAX_EVENT_BYTES, .. })),
        "{refused:?}"
    );
    log.append_nowait(&huge);
    let a = tenant_created("a");
    log.append(&a).await?;
    let got = next_within(&mut log.tail(Stream::Control, 0), WAIT).await?;
    ensure!(got.decode()? == a);
    ensure!(log.last_seq(Stream::Control).await? == got.seq);
    let health = log.health().await;
    ensure!(health.reachable && health.poison_events == 2, "{health:?}");
    Ok(())
}

fn at(mut env: Envelope, occurred_at_us: i64) -> Envelope {
    env.occurred_at_us = occurred_at_us;
    env
}

async fn count(log: &EventLog, stream: Stream) -> anyhow::Result<usize> {
    if log.last_seq(stream).await? == 0 {
        return Ok(0);
    }
    let mut tail = log.tail(stream, 0);
    let mut n = 0;
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), tail.next()).await {
        ev?;
        n += 1;
    }
    Ok(n)
}

#[tokio::test]
async fn retention_drops_old_request_logs_and_never_billing_or_control_events() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_micros() as i64;
    let day = 24 * 3600 * 1_000_000i64;
    log.append(&at(tenant_created("old"), now - 400 * day)).await?;
    // More than one purge batch (1000 rows).
    for n in 0..2500 {
        log.append_nowait(&at(request_logged(n), now - 100 * day));
    }
    let usage = Envelope::from_json(&std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schemas/tests/fixtures/v1/usage.recorded.json"
    ))?)?;
    log.append(&at(usage, now - 400 * day)).await?;
    for n in 0..3 {
        log.append(&at(request_logged(10_000 + n), now - day)).await?;
    }
    let last = log.last_seq(Stream::Requests).await?;

    let dropped = log.enforce_request_retention(Duration::from_secs(90 * 24 * 3600)).await?;
    assert_eq!(dropped, 2500);
    assert_eq!(count(&log, Stream::Requests).await?, 3);
    assert_eq!(count(&log, Stream::Control).await?, 1);
    assert_eq!(count(&log, Stream::Billing).await?, 1);
    assert_eq!(log.last_seq(Stream::Requests).await?, last);

    // A window shorter than every event keeps the last one, so the stream's sequence stays put.
    log.enforce_request_retention(Duration::from_secs(1)).await?;
    assert_eq!(count(&log, Stream::Requests).await?, 1);
    assert_eq!(log.last_seq(Stream::Requests).await?, last);
    Ok(())
}

#[cfg(unix)]
#[tokio::test]
async fn the_log_is_created_owner_only_in_an_owner_only_directory() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let log = EventLog::open_embedded(&data).await?;
    log.append(&tenant_created("a")).await?;
    let mode = |p: &std::path::Path| -> anyhow::Result<u32> { Ok(std::fs::metadata(p)?.permissions().mode() & 0o777) };
    assert_eq!(mode(&data)?, 0o700);
    assert_eq!(mode(&data.join("events.db"))?, 0o600);
    assert_eq!(mode(&data.join("events.db-wal"))?, 0o600);
    Ok(())
}

#[tokio::test]
async fn two_probes_of_the_same_slot_store_one_health_checked() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    let checked = |source: &str, latency_us: u64| {
        let body = schemas::EventBody::HealthChecked(schemas::HealthChecked {
            resource_id: "ukey_1".into(),
            channel_id: Some("ch_1".into()),
            slot_us: 60_000_000,
            outcome: "ok".into(),
            latency_us,
            attempts: 1,
            balance: None,
            reason: None,
            on_demand: false,
        });
        let mut env = schemas::Envelope::new(schemas::GLOBAL_TENANT, source, 61_000_000, body);
        env.id = schemas::health_check_id("ukey_1", 60_000_000);
        env
    };
    log.append(&checked("worker-a", 100)).await?;
    // A second worker probing the same slot: stored once, whether the append says so or not.
    let _ = log.append(&checked("worker-b", 200)).await;
    assert_eq!(count(&log, Stream::Ops).await?, 1);
    assert_eq!(count(&log, Stream::Control).await?, 0, "health facts stay out of the control stream");
    Ok(())
}

#[tokio::test]
async fn a_conditional_append_lands_only_at_the_sequence_it_was_read_at() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log = EventLog::open_embedded(dir.path()).await?;
    log.append(&tenant_created("a")).await?;
    let seen = log.last_seq(Stream::Control).await?;
    // Another stream moving on does not matter; the control stream moving on does.
    log.append(&request_logged(1)).await?;
    let mut tail = log.tail(Stream::Control, seen);
    log.append_if_last(&tenant_created("b"), seen).await?;
    assert_eq!(next_within(&mut tail, WAIT).await?.decode()?.body, tenant_created("b").body);
    let late = log.append_if_last(&tenant_created("c"), seen).await;
    ensure!(matches!(late, Err(LogError::Conflict(s)) if s == seen), "{late:?}");
    assert_quiet(&mut tail, Duration::from_millis(200)).await?;
    // A second instance on the same file (the admin CLI) sees the same last sequence.
    let other = EventLog::open_embedded(dir.path()).await?;
    let now = other.last_seq(Stream::Control).await?;
    other.append_if_last(&tenant_created("d"), now).await?;
    ensure!(matches!(log.append_if_last(&tenant_created("e"), now).await, Err(LogError::Conflict(_))));
    Ok(())
}
