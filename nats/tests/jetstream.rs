//! The JetStream backend against a real `nats-server` child per test: stream creation, the
//! spool through NATS outages, dedup by `Nats-Msg-Id`, and tails across NATS restarts.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures::StreamExt;
use futures::stream::BoxStream;
use nats::{EventLog, JetStreamOptions, LogError, StoredEvent};
use schemas::{Envelope, EventBody, RequestLogged, Stream, TenantCreated};
use testkit::nats_server::NatsServer;

type Tail = BoxStream<'static, Result<StoredEvent, LogError>>;

const WAIT: Duration = Duration::from_secs(20);

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

fn opts() -> JetStreamOptions {
    JetStreamOptions {
        ack_timeout: Duration::from_secs(1),
        max_retry_backoff: Duration::from_millis(500),
        ..Default::default()
    }
}

async fn connect(nats: &NatsServer, spool_dir: &Path) -> anyhow::Result<EventLog> {
    EventLog::connect_jetstream(&nats.url(), spool_dir, opts()).await.context("Failed to connect the JetStream log")
}

/// Takes exactly `n` events from `tail`, failing after [`WAIT`].
async fn take(tail: &mut Tail, n: usize) -> anyhow::Result<Vec<StoredEvent>> {
    let mut out = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + WAIT;
    while out.len() < n {
        match tokio::time::timeout_at(deadline, tail.next()).await {
            Ok(Some(ev)) => out.push(ev?),
            Ok(None) => bail!("tail ended after {} of {n} events", out.len()),
            Err(_) => bail!("tail gave {} of {n} events within {WAIT:?}", out.len()),
        }
    }
    Ok(out)
}

/// Fails if the tail yields anything within `quiet`.
async fn assert_quiet(tail: &mut Tail, quiet: Duration) -> anyhow::Result<()> {
    if let Ok(Some(ev)) = tokio::time::timeout(quiet, tail.next()).await {
        bail!("unexpected extra event: {:?}", ev.map(|e| e.seq));
    }
    Ok(())
}

fn ids(events: &[StoredEvent]) -> anyhow::Result<Vec<String>> {
    events.iter().map(|e| Ok(e.decode()?.id.to_string())).collect()
}

fn assert_consecutive(events: &[StoredEvent], first: u64) -> anyhow::Result<()> {
    for (i, ev) in events.iter().enumerate() {
        ensure!(ev.seq == first + i as u64, "event {i} has seq {} (expected {})", ev.seq, first + i as u64);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_creates_the_streams_idempotently_with_the_required_settings() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let first = connect(&nats, &dir.path().join("a")).await?;
    first.append_acked(&tenant_created("one")).await?;
    // A second process connecting must neither fail nor reset the streams.
    let second = connect(&nats, &dir.path().join("b")).await?;
    assert_eq!(second.last_seq(Stream::Control).await?, 1);
    assert_eq!(second.last_seq(Stream::Billing).await?, 0);
    assert_eq!(second.last_seq(Stream::Requests).await?, 0);

    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let billing = js.get_stream("LLMR_BILLING").await?.cached_info().config.clone();
    assert_eq!(billing.subjects, vec!["llmr.v1.usage.>".to_owned()]);
    assert!(billing.deny_delete && billing.deny_purge);
    assert_eq!(billing.discard, async_nats::jetstream::stream::DiscardPolicy::New);
    assert_eq!(billing.duplicate_window, Duration::from_secs(600));
    assert_eq!(billing.storage, async_nats::jetstream::stream::StorageType::File);
    let control = js.get_stream("LLMR_CONTROL").await?.cached_info().config.clone();
    assert!(control.deny_delete && control.deny_purge);
    assert_eq!(control.max_age, Duration::ZERO);
    let requests = js.get_stream("LLMR_REQUESTS").await?.cached_info().config.clone();
    assert_eq!(requests.max_age, Duration::from_secs(90 * 24 * 3600));
    assert_eq!(requests.retention, async_nats::jetstream::stream::RetentionPolicy::Limits);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_request_log_window_is_the_configured_max_age_and_billing_keeps_everything() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let week = Duration::from_secs(7 * 24 * 3600);
    let _log =
        EventLog::connect_jetstream(&nats.url(), dir.path(), JetStreamOptions { requests_max_age: week, ..opts() })
            .await?;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    let requests = js.get_stream("LLMR_REQUESTS").await?.cached_info().config.clone();
    assert_eq!(requests.max_age, week);
    for name in ["LLMR_BILLING", "LLMR_CONTROL"] {
        let config = js.get_stream(name).await?.cached_info().config.clone();
        assert_eq!(config.max_age, Duration::ZERO, "{name}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appended_event_is_tailed_with_its_stream_sequence() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    let a = tenant_created("a");
    let b = request_logged(1);
    log.append(&a).await?;
    log.append_nowait(&b);
    log.flush(WAIT).await?;

    let got = take(&mut log.tail(Stream::Control, 0), 1).await?;
    assert_eq!(got[0].seq, 1);
    assert_eq!(got[0].stream, Stream::Control);
    assert_eq!(got[0].decode()?, a);
    let got = take(&mut log.tail(Stream::Requests, 0), 1).await?;
    assert_eq!(got[0].decode()?, b);
    assert_eq!(log.last_seq(Stream::Control).await?, 1);

    let health = log.health().await;
    assert!(health.reachable, "{health:?}");
    assert_eq!(health.spool_depth, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tail_after_a_sequence_starts_after_it_then_follows_live_events() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    for i in 0..5 {
        log.append(&tenant_created(&format!("t{i}"))).await?;
    }
    log.flush(WAIT).await?;
    let mut tail = log.tail(Stream::Control, 3);
    let got = take(&mut tail, 2).await?;
    assert_consecutive(&got, 4)?;
    let live = tenant_created("live");
    log.append(&live).await?;
    let got = take(&mut tail, 1).await?;
    assert_eq!((got[0].seq, got[0].decode()?), (6, live));
    assert_quiet(&mut tail, Duration::from_millis(300)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_published_twice_is_stored_once() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    // Two spools, as two gateways (or a gateway before and after losing its spool) would have.
    let a = connect(&nats, &dir.path().join("a")).await?;
    let b = connect(&nats, &dir.path().join("b")).await?;
    let ev = tenant_created("dup");
    a.append(&ev).await?;
    a.append(&ev).await?;
    a.flush(WAIT).await?;
    b.append(&ev).await?;
    b.flush(WAIT).await?;
    b.append_acked(&ev).await?;
    assert_eq!(a.last_seq(Stream::Control).await?, 1);
    let mut tail = a.tail(Stream::Control, 0);
    assert_eq!(take(&mut tail, 1).await?[0].decode()?.id, ev.id);
    assert_quiet(&mut tail, Duration::from_millis(300)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_while_nats_is_down_are_spooled_and_published_once_after_restart() -> anyhow::Result<()> {
    let mut nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    log.append(&tenant_created("before")).await?;
    log.flush(WAIT).await?;

    nats.stop()?;
    let mut sent = vec![];
    for i in 0..300 {
        let ev = tenant_created(&format!("during-{i}"));
        // The billable path: durable locally, no wait on NATS.
        tokio::time::timeout(Duration::from_secs(2), log.append(&ev)).await??;
        sent.push(ev.id.to_string());
    }
    let health = log.health().await;
    assert!(!health.reachable, "{health:?}");
    assert!(health.spool_depth > 0, "{health:?}");
    assert!(matches!(log.flush(Duration::from_millis(200)).await, Err(LogError::Timeout(_))));

    nats.start()?;
    log.flush(WAIT).await?;
    let got = take(&mut log.tail(Stream::Control, 0), 301).await?;
    assert_consecutive(&got, 1)?;
    // In spool order, each exactly once.
    assert_eq!(ids(&got)?[1..], sent[..]);
    assert_eq!(log.last_seq(Stream::Control).await?, 301);
    let health = log.health().await;
    assert!(health.reachable && health.spool_depth == 0, "{health:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_spool_refuses_billable_appends() -> anyhow::Result<()> {
    let mut nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let opts = JetStreamOptions { max_spool: 3, ..opts() };
    let log = EventLog::connect_jetstream(&nats.url(), dir.path(), opts).await?;
    nats.stop()?;
    for i in 0..3 {
        log.append(&tenant_created(&format!("t{i}"))).await?;
    }
    match log.append(&tenant_created("refused")).await {
        Err(LogError::SpoolFull(3)) => {}
        other => bail!("expected SpoolFull(3), got {other:?}"),
    }
    assert_eq!(log.health().await.spool_depth, 3);

    // Once NATS is back the spool drains and appends are taken again.
    nats.start()?;
    log.flush(WAIT).await?;
    log.append(&tenant_created("accepted")).await?;
    log.flush(WAIT).await?;
    assert_eq!(log.last_seq(Stream::Control).await?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tail_survives_a_nats_restart_without_gap_or_duplicate() -> anyhow::Result<()> {
    let mut nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    for i in 0..10 {
        log.append(&tenant_created(&format!("a{i}"))).await?;
    }
    let mut tail = log.tail(Stream::Control, 0);
    assert_consecutive(&take(&mut tail, 10).await?, 1)?;

    nats.stop()?;
    for i in 0..10 {
        log.append(&tenant_created(&format!("b{i}"))).await?;
    }
    nats.start()?;
    let got = take(&mut tail, 10).await?;
    assert_consecutive(&got, 11)?;

    // And a graceful restart while idle.
    nats.stop_graceful()?;
    nats.start()?;
    log.append(&tenant_created("c")).await?;
    assert_consecutive(&take(&mut tail, 1).await?, 21)?;
    assert_quiet(&mut tail, Duration::from_millis(500)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unacked_rows_left_by_a_previous_process_are_published_by_the_next() -> anyhow::Result<()> {
    let mut nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let mut sent = HashSet::new();
    {
        let log = connect(&nats, dir.path()).await?;
        nats.stop()?;
        for i in 0..5 {
            let ev = tenant_created(&format!("t{i}"));
            log.append(&ev).await?;
            sent.insert(ev.id.to_string());
        }
        assert_eq!(log.health().await.spool_depth, 5);
    }
    nats.start()?;
    let log = connect(&nats, dir.path()).await?;
    log.flush(WAIT).await?;
    let got = take(&mut log.tail(Stream::Control, 0), 5).await?;
    assert_eq!(ids(&got)?.into_iter().collect::<HashSet<_>>(), sent);
    assert_eq!(log.last_seq(Stream::Control).await?, 5);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_fails_when_nats_is_required_and_down() -> anyhow::Result<()> {
    let nats = NatsServer::stopped()?;
    let dir = tempfile::tempdir()?;
    let opts = JetStreamOptions { require_nats_at_start: true, startup_timeout: Duration::from_millis(300), ..opts() };
    let started = Instant::now();
    let result = EventLog::connect_jetstream(&nats.url(), dir.path(), opts).await;
    assert!(matches!(result, Err(LogError::Nats(_))), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_started_while_nats_is_down_spools_then_creates_the_streams() -> anyhow::Result<()> {
    let mut nats = NatsServer::stopped()?;
    let dir = tempfile::tempdir()?;
    let opts = JetStreamOptions { startup_timeout: Duration::from_millis(300), ..opts() };
    let log = EventLog::connect_jetstream(&nats.url(), dir.path(), opts).await?;
    let health = log.health().await;
    assert!(!health.reachable && health.error.is_some(), "{health:?}");
    let ev = request_logged(7);
    log.append(&ev).await?;
    // A tail opened before NATS exists starts delivering once it does.
    let mut tail = log.tail(Stream::Requests, 0);

    nats.start()?;
    log.flush(WAIT).await?;
    assert_eq!(take(&mut tail, 1).await?[0].decode()?, ev);
    let health = log.health().await;
    assert!(health.reachable, "{health:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_appends_are_each_published_exactly_once() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    let events: Vec<Envelope> = (0..3000).map(request_logged).collect();
    let started = Instant::now();
    let appends = events.chunks(300).map(|chunk| {
        let log = log.clone();
        let chunk = chunk.to_vec();
        tokio::spawn(async move {
            for ev in &chunk {
                log.append(ev).await?;
            }
            Ok::<_, LogError>(())
        })
    });
    for handle in futures::future::join_all(appends).await {
        handle??;
    }
    log.flush(WAIT).await?;
    // Pipelined publishes: one round trip per event would take far longer on a loaded runner.
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let got = take(&mut log.tail(Stream::Requests, 0), 3000).await?;
    assert_consecutive(&got, 1)?;
    let unique: HashSet<_> = ids(&got)?.into_iter().collect();
    assert_eq!(unique.len(), 3000);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_killed_during_load_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let mut nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..2000 {
                let ev = request_logged(i);
                log.append(&ev).await?;
                sent.push(ev.id.to_string());
                if i % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Ok::<_, LogError>(sent)
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    nats.stop()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    nats.start()?;
    let sent = writer.await??;
    log.flush(WAIT).await?;

    let got = take(&mut log.tail(Stream::Requests, 0), sent.len()).await?;
    assert_consecutive(&got, 1)?;
    let stored: HashSet<String> = ids(&got)?.into_iter().collect();
    assert_eq!(stored.len(), sent.len(), "an event was stored twice");
    assert_eq!(stored, sent.into_iter().collect::<HashSet<_>>());
    assert_eq!(log.last_seq(Stream::Requests).await?, got.len() as u64);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_deleted_under_a_running_log_is_created_again() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await?);
    js.delete_stream("LLMR_REQUESTS").await?;

    let ev = request_logged(1);
    log.append(&ev).await?;
    log.flush(WAIT).await?;
    assert_eq!(take(&mut log.tail(Stream::Requests, 0), 1).await?[0].decode()?, ev);
    Ok(())
}

/// Events of about `kib` KiB: a tenant name is the simplest field to make large.
fn tenant_created_of_kib(kib: usize) -> Envelope {
    tenant_created(&"x".repeat(kib * 1024))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_event_ahead_of_normal_events_is_set_aside_and_the_events_behind_it_are_published()
-> anyhow::Result<()> {
    // A server with a smaller max_payload than the default, down while the gateway spools: the
    // 200 KiB event is taken (nothing says it is too large yet) and can never be published.
    let mut nats = NatsServer::stopped()?;
    nats.set_config("max_payload: 65536\n")?;
    let dir = tempfile::tempdir()?;
    let log = EventLog::connect_jetstream(
        &nats.url(),
        dir.path(),
        JetStreamOptions { startup_timeout: Duration::from_millis(200), ..opts() },
    )
    .await?;
    let poison = tenant_created_of_kib(200);
    log.append(&poison).await?;
    let control = tenant_created("after");
    log.append(&control).await?;
    let requests: Vec<Envelope> = (0..50).map(request_logged).collect();
    for e in &requests {
        log.append(e).await?;
    }
    ensure!(log.health().await.spool_depth == 52);

    nats.start()?;
    log.flush(WAIT).await.with_context(|| format!("the spool did not drain:\n{}", nats.log()))?;

    let mut tail = log.tail(Stream::Control, 0);
    let got = take(&mut tail, 1).await?;
    ensure!(ids(&got)? == vec![control.id.to_string()], "the control stream holds {:?}", ids(&got)?);
    assert_quiet(&mut tail, Duration::from_millis(300)).await?;
    let got = take(&mut log.tail(Stream::Requests, 0), 50).await?;
    ensure!(ids(&got)? == requests.iter().map(|e| e.id.to_string()).collect::<Vec<_>>());

    let health = log.health().await;
    ensure!(health.reachable && health.spool_depth == 0 && health.poison_events == 1, "{health:?}");
    // The poison event is kept, with its reason, for the operator.
    let spool = rusqlite::Connection::open(dir.path().join("spool.db"))?;
    let (id, size, reason): (String, i64, String) =
        spool.query_row("SELECT id, length(payload), reason FROM poison", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    ensure!(id == poison.id.to_string() && size > 200 * 1024, "{id} {size}");
    ensure!(reason.contains("max_payload of 65536"), "{reason}");
    drop(log);

    // A restarted gateway still reports it, and does not publish it again.
    let log = connect(&nats, dir.path()).await?;
    ensure!(log.health().await.poison_events == 1);
    ensure!(log.last_seq(Stream::Control).await? == 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_over_the_servers_max_payload_is_refused_at_append_and_later_events_flow() -> anyhow::Result<()> {
    let mut nats = NatsServer::stopped()?;
    nats.set_config("max_payload: 65536\n")?;
    nats.start()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    let refused = log.append(&tenant_created_of_kib(100)).await;
    ensure!(
        matches!(refused, Err(LogError::TooLarge { event_type: "tenant.created", limit: 64_512, .. })),
        "{refused:?}"
    );
    ensure!(matches!(log.append_acked(&tenant_created_of_kib(100)).await, Err(LogError::TooLarge { .. })));
    log.append_nowait(&tenant_created_of_kib(100));
    let fits = tenant_created_of_kib(60);
    log.append(&fits).await?;
    log.flush(WAIT).await?;
    let got = take(&mut log.tail(Stream::Control, 0), 1).await?;
    ensure!(ids(&got)? == vec![fits.id.to_string()]);
    ensure!(log.health().await.poison_events == 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_jetstream_refuses_for_good_is_set_aside_and_the_events_behind_it_are_published() -> anyhow::Result<()>
{
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    // An operator limits the stream's message size below what was already accepted locally.
    let client = async_nats::connect(nats.url()).await?;
    let js = async_nats::jetstream::new(client);
    let mut config = js.get_stream("LLMR_CONTROL").await?.cached_info().config.clone();
    config.max_message_size = 4096;
    js.update_stream(config).await?;

    let refused = tenant_created_of_kib(10);
    let after = tenant_created("after");
    log.append(&refused).await?;
    log.append(&after).await?;
    log.flush(WAIT).await.context("the spool did not drain")?;
    let mut tail = log.tail(Stream::Control, 0);
    ensure!(ids(&take(&mut tail, 1).await?)? == vec![after.id.to_string()]);
    assert_quiet(&mut tail, Duration::from_millis(300)).await?;
    let health = log.health().await;
    ensure!(health.poison_events == 1 && health.spool_depth == 0, "{health:?}");
    let spool = rusqlite::Connection::open(dir.path().join("spool.db"))?;
    let reason: String = spool.query_row("SELECT reason FROM poison", [], |r| r.get(0))?;
    ensure!(reason.starts_with("refused by JetStream") && reason.contains("10054"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn a_conditional_append_lands_only_at_the_sequence_it_was_read_at() -> anyhow::Result<()> {
    let nats = NatsServer::start_new()?;
    let dir = tempfile::tempdir()?;
    let log = connect(&nats, dir.path()).await?;
    log.append_acked(&tenant_created("a")).await?;
    let seen = log.last_seq(Stream::Control).await?;
    ensure!(seen == 1, "{seen}");
    log.append_acked(&request_logged(1)).await?;
    log.append_if_last(&tenant_created("b"), seen).await?;
    let late = log.append_if_last(&tenant_created("c"), seen).await;
    ensure!(matches!(late, Err(LogError::Conflict(s)) if s == seen), "{late:?}");
    let mut tail = log.tail(Stream::Control, 0);
    let names: Vec<EventBody> =
        take(&mut tail, 2).await?.iter().map(|e| Ok(e.decode()?.body)).collect::<anyhow::Result<_>>()?;
    ensure!(names == [tenant_created("a").body, tenant_created("b").body], "{names:?}");
    ensure!(log.last_seq(Stream::Control).await? == 2, "nothing more was appended");
    Ok(())
}
