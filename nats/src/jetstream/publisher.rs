//! The background task that drains the spool into JetStream: unacked rows in local order, each
//! with `Nats-Msg-Id` = event id, up to `max_in_flight` publishes awaiting their PubAck at once.
//! On any failure it lets the in-flight acks settle, backs off, and starts again from the first
//! unacked row with the same ids, so JetStream drops the copies it already stored. A retried
//! row can therefore land after rows that were behind it in the spool; nothing downstream relies
//! on cross-event order beyond the stream sequence.
//!
//! A row that can never be published — larger than the server's `max_payload` (NATS would close
//! the connection over it, every time) or refused by JetStream for good (over the stream's
//! maximum message size) — is a poison row: it is moved to the spool's `poison` table, reported
//! at ERROR (id, type, size, never the content), counted in the health report, and the rows
//! behind it are published as usual.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::oneshot;

use super::{Shared, streams};
use crate::spool::SpoolRow;
use crate::{LogError, NATS_HEADER_ROOM};

/// Rows read from the spool per query; a few windows' worth so the pipeline stays full.
const READ_BATCH: usize = 1024;
/// Acked rows marked in one spool write.
const ACK_BATCH: usize = 512;
/// First pause after a failure; doubles up to `max_retry_backoff`.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
/// How often acked rows older than the retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(10);
/// Idle wake-up, in case a commit notification was missed (another process wrote the file).
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Why a pass over the spool stopped early.
enum Failure {
    Publish(PublishError),
    Log(LogError),
    Disconnected,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Publish(e) => write!(f, "publish failed: {e}"),
            Failure::Log(e) => write!(f, "{e}"),
            Failure::Disconnected => write!(f, "not connected to NATS"),
        }
    }
}

/// Runs until the log is dropped (`stop` resolves or `shared` is gone).
pub(super) async fn run(shared: Weak<Shared>, mut stop: oneshot::Receiver<()>) {
    let mut backoff = MIN_BACKOFF;
    // Whether the last pass failed: the first failure and the recovery are logged, not every retry.
    let mut failing = false;
    let mut next_prune = Instant::now();
    let Some(s) = shared.upgrade() else { return };
    let mut commits = s.spool.commits();
    let mut connects = s.connects.clone();
    drop(s);
    loop {
        let Some(s) = shared.upgrade() else { return };
        if Instant::now() >= next_prune {
            s.spool.prune_nowait(s.opts.acked_retention);
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        commits.borrow_and_update();
        let result = pass(&s).await;
        let max_backoff = s.opts.max_retry_backoff;
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!("Spool drained; publishing to NATS again.");
                    failing = false;
                }
                backoff = MIN_BACKOFF;
                drop(s);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = commits.changed() => {}
                    _ = tokio::time::sleep(IDLE_POLL) => {}
                }
            }
            Err(failure) => {
                if !failing {
                    tracing::warn!(error = %failure, depth = s.spool.depth(), "Cannot publish to NATS; spooling and retrying.");
                    failing = true;
                } else {
                    tracing::debug!(error = %failure, depth = s.spool.depth(), "Publish retry failed.");
                }
                s.set_error(&failure);
                drop(s);
                tokio::select! {
                    _ = &mut stop => return,
                    _ = tokio::time::sleep(backoff) => {}
                    // A reconnect is the moment to try again, whatever the backoff says.
                    _ = connects.changed() => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// One pass: ensure the streams if needed, then publish every unacked row in order.
async fn pass(s: &Arc<Shared>) -> Result<(), Failure> {
    if !s.connected() {
        return Err(Failure::Disconnected);
    }
    if !s.streams_ready.load(Ordering::SeqCst) {
        streams::ensure(&s.js, &s.opts).await.map_err(Failure::Log)?;
        s.streams_ready.store(true, Ordering::SeqCst);
        tracing::info!("NATS streams ensured.");
    }
    let (acked, result) = publish_unacked(s).await;
    // Make the ack marks durable before the next pass reads "unacked" rows again, so rows
    // acked in this pass are not published twice. Only when there were marks: a barrier is a
    // commit, which wakes this task, and an idle pass must not wake itself forever.
    if acked > 0 {
        s.spool.barrier().await.map_err(Failure::Log)?;
    }
    match &result {
        Ok(()) => s.clear_error(),
        Err(Failure::Publish(e)) if e.kind() == PublishErrorKind::StreamNotFound => {
            // Someone deleted a stream (or NATS lost its store): create it again before retrying.
            s.streams_ready.store(false, Ordering::SeqCst);
        }
        Err(_) => {}
    }
    result
}

/// Publishes every unacked row; returns how many were acked, and the first failure.
async fn publish_unacked(s: &Shared) -> (usize, Result<(), Failure>) {
    let max_in_flight = s.opts.max_in_flight.max(1);
    let mut buffer: VecDeque<SpoolRow> = VecDeque::new();
    let mut cursor = 0i64;
    let mut exhausted = false;
    let mut in_flight = FuturesUnordered::new();
    let mut acked = Vec::with_capacity(ACK_BATCH);
    let mut failure: Option<Failure> = None;
    let mut total = 0usize;
    loop {
        // Fill the window, unless a failure means we are only letting in-flight acks settle.
        while failure.is_none() && in_flight.len() < max_in_flight {
            if buffer.is_empty() && !exhausted {
                match s.spool.unacked_after(cursor, READ_BATCH).await {
                    Ok(rows) => {
                        exhausted = rows.is_empty();
                        buffer.extend(rows);
                    }
                    Err(e) => failure = Some(Failure::Log(e)),
                }
            }
            let Some(row) = buffer.pop_front() else { break };
            cursor = row.seq;
            if let Some(reason) = over_max_payload(s, &row) {
                if let Err(e) = set_aside(s, &row, reason).await {
                    failure = Some(Failure::Log(e));
                }
                continue;
            }
            let mut headers = HeaderMap::new();
            headers.insert("Nats-Msg-Id", row.id.as_str());
            match s.js.publish_with_headers(row.subject.clone(), headers, row.payload.clone()).await {
                Ok(ack) => in_flight.push(async move { (row, ack.await) }),
                Err(e) => failure = Some(Failure::Publish(e)),
            }
        }
        let Some((row, result)) = in_flight.next().await else { break };
        match result {
            Ok(_) => {
                total += 1;
                acked.push(row.seq);
                if acked.len() >= ACK_BATCH {
                    s.spool.mark_acked_nowait(std::mem::take(&mut acked));
                }
            }
            Err(e) => match permanent_rejection(&e) {
                Some(reason) => {
                    if let Err(e) = set_aside(s, &row, reason).await
                        && failure.is_none()
                    {
                        failure = Some(Failure::Log(e));
                    }
                }
                None => {
                    if failure.is_none() {
                        failure = Some(Failure::Publish(e));
                    }
                }
            },
        }
    }
    s.spool.mark_acked_nowait(acked);
    match failure {
        None => (total, Ok(())),
        Some(f) => (total, Err(f)),
    }
}

/// Why `row` can never be published to the connected server, if it is over its `max_payload`
/// (headers included). The server would answer such a message by closing the connection.
fn over_max_payload(s: &Shared, row: &SpoolRow) -> Option<String> {
    let max = s.server_max_payload();
    (max > 0 && row.payload.len().saturating_add(NATS_HEADER_ROOM) > max)
        .then(|| format!("larger than the NATS server's max_payload of {max} bytes"))
}

/// Why JetStream refused a publish for good, if it did: a message over the stream's maximum
/// message size is refused again however often it is retried. Everything else (timeouts, no
/// stream, a full stream, a lost connection) may pass and is retried.
fn permanent_rejection(e: &PublishError) -> Option<String> {
    let api = std::error::Error::source(e)?.downcast_ref::<async_nats::jetstream::Error>()?;
    (api.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM).then(|| format!("refused by JetStream: {api}"))
}

/// Moves `row` to the spool's `poison` table and reports it (never its content).
async fn set_aside(s: &Shared, row: &SpoolRow, reason: String) -> Result<(), LogError> {
    tracing::error!(
        event_id = %row.id,
        event_type = %event_type(&row.payload),
        size = row.payload.len(),
        %reason,
        "Event can never be published; set aside in the spool's poison table, publishing continues."
    );
    s.spool.set_aside(row.seq, reason).await
}

/// The `type` of a spooled envelope, for the report; never more of its content.
fn event_type(payload: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_slice::<Typed>(payload) {
        Ok(t) if t.kind.len() <= 64 => t.kind,
        _ => "unknown".to_owned(),
    }
}
