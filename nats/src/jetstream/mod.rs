//! The JetStream backend: a NATS connection, the three streams, the local spool every append
//! goes through, the publisher that drains it, and tails over ordered consumers. The spool's
//! storage lives in `crate::spool`; this module owns the NATS side.

mod publisher;
mod streams;
mod tail;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::stream::BoxStream;
use schemas::{Envelope, Stream};
use tokio::sync::{oneshot, watch};

use crate::spool::Spool;
use crate::{LogError, LogHealth, MAX_EVENT_BYTES, NATS_HEADER_ROOM, StoredEvent};

/// The longest pause between reconnect attempts; NATS restarts are noticed within this.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);
/// Bound on the health probe's round trip, so `/api/health` answers while NATS hangs.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Tries of [`JetStreamLog::append_acked`] before it gives up; each waits `ack_timeout`.
const ACKED_ATTEMPTS: u32 = 5;

/// Tuning for the JetStream backend.
#[derive(Debug, Clone)]
pub struct JetStreamOptions {
    /// Stream replicas (1 on a single NATS server, 3 in production).
    pub replicas: usize,
    /// Unacked spooled events at which billable appends are refused ([`LogError::SpoolFull`]).
    pub max_spool: u64,
    /// How long [`JetStreamLog::connect`] waits for NATS and the streams.
    pub startup_timeout: Duration,
    /// What happens when the streams cannot be ensured within `startup_timeout`: `true` makes
    /// `connect` fail (admin commands, which cannot spool for later); `false` (the default)
    /// returns a log that spools, reports itself unreachable in `health()`, and creates the
    /// streams and drains the spool once NATS is up (gateways, which must start during an outage).
    pub require_nats_at_start: bool,
    /// Publishes awaiting their PubAck at once.
    pub max_in_flight: usize,
    /// How long a PubAck (or a JetStream API answer) may take before the publish is retried.
    pub ack_timeout: Duration,
    /// Longest pause between publish retries while NATS is failing.
    pub max_retry_backoff: Duration,
    /// How long acked rows stay in the spool before they are deleted. Correctness does not need
    /// them (projections dedup by event id); they are kept briefly for inspection after an incident.
    pub acked_retention: Duration,
    /// Client name shown in NATS monitoring.
    pub client_name: Option<String>,
    /// How long `LLMR_REQUESTS` keeps an event (the stream's `max_age`); billing and control
    /// streams keep everything.
    pub requests_max_age: Duration,
}

/// 90 days: long enough for monthly reports and disputes, short enough that the log of
/// non-billable facts does not grow forever.
pub const DEFAULT_REQUESTS_MAX_AGE: Duration = Duration::from_secs(90 * 24 * 3600);

impl Default for JetStreamOptions {
    fn default() -> Self {
        JetStreamOptions {
            replicas: 1,
            max_spool: 1_000_000,
            startup_timeout: Duration::from_secs(10),
            require_nats_at_start: false,
            max_in_flight: 256,
            ack_timeout: Duration::from_secs(5),
            max_retry_backoff: Duration::from_secs(2),
            acked_retention: Duration::from_secs(120),
            client_name: None,
            requests_max_age: DEFAULT_REQUESTS_MAX_AGE,
        }
    }
}

/// State shared by the handle, the publisher and the tails.
struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    spool: Spool,
    opts: JetStreamOptions,
    streams_ready: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Appends refused since start because the event was over [`Shared::max_event_bytes`].
    refused: AtomicU64,
    /// Counts (re)connections; tails recreate their consumer when it moves.
    connects: watch::Receiver<u64>,
    /// Dropped with the last handle, which stops the publisher.
    _stop: oneshot::Sender<()>,
}

impl Shared {
    fn set_error(&self, e: impl std::fmt::Display) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }

    fn clear_error(&self) {
        if let Ok(mut last) = self.last_error.lock() {
            *last = None;
        }
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The server's `max_payload`, once a server has told us (0 before the first connection).
    fn server_max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// The largest event this log takes: [`MAX_EVENT_BYTES`], or less when the server's
    /// `max_payload` is smaller than the default.
    fn max_event_bytes(&self) -> usize {
        match self.server_max_payload() {
            0 => MAX_EVENT_BYTES,
            max => MAX_EVENT_BYTES.min(max.saturating_sub(NATS_HEADER_ROOM)),
        }
    }

    /// The JSON of `env`, or [`LogError::TooLarge`] (logged, counted) when it can never be published.
    fn payload(&self, env: &Envelope) -> Result<Vec<u8>, LogError> {
        let payload = env.to_json();
        let limit = self.max_event_bytes();
        if payload.len() > limit {
            return Err(crate::refuse_oversize(env, payload.len(), limit, &self.refused));
        }
        Ok(payload)
    }
}

/// The JetStream log. Cheap to clone; the publisher stops when the last clone is dropped.
#[derive(Clone)]
pub struct JetStreamLog {
    shared: Arc<Shared>,
}

impl JetStreamLog {
    /// Opens the spool at `spool`, connects to `url` and ensures the streams.
    ///
    /// The client retries its initial connection in the background, so this never fails just
    /// because NATS is down. It waits up to `opts.startup_timeout` for the streams; if they are
    /// not ensured by then it returns [`LogError::Nats`] when `opts.require_nats_at_start` is
    /// set, and otherwise returns a working log that spools appends, reports `reachable: false`,
    /// and ensures the streams and drains the spool as soon as NATS answers. Rows left unacked in
    /// the spool by an earlier process are published again. One process per spool file: two
    /// logs on the same file would both publish its rows (harmless, deduplicated, but wasteful)
    /// and disagree about its depth.
    pub async fn connect(url: &str, spool: &Path, opts: JetStreamOptions) -> Result<Self, LogError> {
        let spool = Spool::open(spool, opts.max_spool).await?;
        let (connects_tx, connects) = watch::channel(0u64);
        let mut connect = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .request_timeout(Some(opts.ack_timeout))
            .reconnect_delay_callback(|attempts| {
                let ms = 50u64.saturating_mul(1u64 << attempts.min(10));
                Duration::from_millis(ms).min(MAX_RECONNECT_DELAY)
            })
            .event_callback(move |event| {
                let connects_tx = connects_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("Connected to NATS.");
                            connects_tx.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => tracing::warn!("Disconnected from NATS."),
                        other => tracing::debug!(event = %other, "NATS client event."),
                    }
                }
            });
        if let Some(name) = &opts.client_name {
            connect = connect.name(name);
        }
        let client = connect.connect(url).await.map_err(|e| LogError::Nats(format!("cannot connect: {e}")))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(opts.ack_timeout);

        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(Shared {
            client,
            js,
            spool,
            opts,
            streams_ready: AtomicBool::new(false),
            last_error: Mutex::new(None),
            refused: AtomicU64::new(0),
            connects,
            _stop: stop,
        });

        let deadline = Instant::now() + shared.opts.startup_timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(remaining, streams::ensure(&shared.js, &shared.opts));
            let result = attempt.await.unwrap_or_else(|_| {
                Err(LogError::Nats(format!("streams not ensured within {:?}", shared.opts.startup_timeout)))
            });
            match result {
                Ok(()) => {
                    shared.streams_ready.store(true, Ordering::SeqCst);
                    shared.clear_error();
                    break;
                }
                Err(e) => {
                    shared.set_error(&e);
                    if Instant::now() >= deadline {
                        if shared.opts.require_nats_at_start {
                            return Err(e);
                        }
                        tracing::warn!(error = %e, "NATS streams not ready; spooling until NATS is reachable.");
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tokio::spawn(publisher::run(Arc::downgrade(&shared), stopped));
        Ok(JetStreamLog { shared })
    }

    /// Writes the event to the spool and waits for the commit (not for NATS); the publisher
    /// sends it on. [`LogError::SpoolFull`] when `max_spool` events are waiting;
    /// [`LogError::TooLarge`] when the event could never be published.
    pub async fn append(&self, env: &Envelope) -> Result<(), LogError> {
        let payload = self.shared.payload(env)?;
        self.shared.spool.append(env, payload).await
    }

    /// Queues the event for the spool without waiting. Refused with a warning when the spool is
    /// full (see `Spool::append_nowait`), and with an error line when it is over the size limit.
    pub fn append_nowait(&self, env: &Envelope) {
        if let Ok(payload) = self.shared.payload(env) {
            self.shared.spool.append_nowait(env, payload);
        }
    }

    /// Publishes directly (no spool) and waits for the PubAck, retrying with the same
    /// `Nats-Msg-Id` after a timeout: a timeout does not mean the event was not stored.
    pub async fn append_acked(&self, env: &Envelope) -> Result<(), LogError> {
        let payload = bytes::Bytes::from(self.shared.payload(env)?);
        let subject = env.subject();
        let id = env.id.to_string();
        let mut last = LogError::Nats("not attempted".into());
        for attempt in 1..=ACKED_ATTEMPTS {
            let publish = jetstream::context::Publish::build().payload(payload.clone()).message_id(&id);
            let result = match self.shared.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(attempt, error = %e, event_id = %id, "Publish not acknowledged; retrying.");
                    last = LogError::Nats(format!("publish of {id} not acknowledged: {e}"));
                    if matches!(e.kind(), jetstream::context::PublishErrorKind::StreamNotFound) {
                        let _ = streams::ensure(&self.shared.js, &self.shared.opts).await;
                    }
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        Err(last)
    }

    /// Publishes with `Nats-Expected-Last-Sequence: last_seq` and waits for the PubAck;
    /// [`LogError::Conflict`] when the stream has moved on. Retried like [`Self::append_acked`]
    /// on other failures with the same message id, so a publish that landed but whose ack was
    /// lost is answered as a duplicate rather than appended twice.
    pub async fn append_if_last(&self, env: &Envelope, last_seq: u64) -> Result<(), LogError> {
        let payload = bytes::Bytes::from(self.shared.payload(env)?);
        let subject = env.subject();
        let id = env.id.to_string();
        let mut last = LogError::Nats("not attempted".into());
        for attempt in 1..=ACKED_ATTEMPTS {
            let publish = jetstream::context::Publish::build()
                .payload(payload.clone())
                .message_id(&id)
                .expected_last_sequence(last_seq);
            let result = match self.shared.js.send_publish(subject.clone(), publish).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), jetstream::context::PublishErrorKind::WrongLastSequence) => {
                    return Err(LogError::Conflict(last_seq));
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, event_id = %id, "Publish not acknowledged; retrying.");
                    last = LogError::Nats(format!("publish of {id} not acknowledged: {e}"));
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        Err(last)
    }

    /// Every event of `stream` after `after`, then live ones; survives NATS restarts.
    pub fn tail(&self, stream: Stream, after: u64) -> BoxStream<'static, Result<StoredEvent, LogError>> {
        tail::tail(self.shared.client.clone(), self.shared.js.clone(), self.shared.connects.clone(), stream, after)
    }

    /// The stream's last sequence (0 when empty).
    pub async fn last_seq(&self, stream: Stream) -> Result<u64, LogError> {
        let s = self.shared.js.get_stream(stream.name()).await.map_err(|e| LogError::Nats(e.to_string()))?;
        Ok(s.cached_info().state.last_sequence)
    }

    /// Reachable when a PING round trip succeeds and the streams exist; the spool depth; the
    /// last error seen while publishing.
    pub async fn health(&self) -> LogHealth {
        let s = &self.shared;
        let ping = if s.connected() {
            match tokio::time::timeout(HEALTH_TIMEOUT, s.client.flush()).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer from NATS within {HEALTH_TIMEOUT:?}")),
            }
        } else {
            Err("not connected to NATS".to_owned())
        };
        let ready = s.streams_ready.load(Ordering::SeqCst);
        let reachable = ping.is_ok() && ready;
        let mut error = match ping {
            Err(e) => Some(e),
            Ok(()) if !ready => Some(s.last_error().unwrap_or_else(|| "streams not yet ensured".to_owned())),
            Ok(()) => s.last_error(),
        };
        let dropped = s.spool.dropped();
        if dropped > 0 && error.is_none() {
            error = Some(format!("{dropped} request-log events refused while the spool was full"));
        }
        let poison_events = s.spool.poisoned() + s.refused.load(Ordering::Relaxed);
        LogHealth { backend: "jetstream", reachable, spool_depth: s.spool.depth(), poison_events, error }
    }

    /// Waits until every event appended before the call is acknowledged by JetStream.
    pub async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        let spool = &self.shared.spool;
        let wait = async {
            // Queued `append_nowait` rows are not counted until committed.
            spool.barrier().await?;
            let mut commits = spool.commits();
            while spool.depth() > 0 {
                let _ = tokio::time::timeout(Duration::from_millis(50), commits.changed()).await;
            }
            Ok(())
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| LogError::Timeout(timeout))?
    }
}
