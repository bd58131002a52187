//! The event log. One [`EventLog`] with two backends: JetStream (with a local durable spool the
//! gateway writes first) and an embedded append-only SQLite table. Everything above this crate
//! appends and tails through [`EventLog`] and never sees which backend it has.
//! Only this crate touches `async-nats`.

mod embedded;
mod group_commit;
mod jetstream;
mod spool;

use std::path::Path;
use std::time::Duration;

use futures::stream::BoxStream;
use schemas::{DecodeError, Envelope, Stream};

pub use embedded::EmbeddedLog;
pub use group_commit::{create_private_dir, make_private};
pub use jetstream::{DEFAULT_REQUESTS_MAX_AGE, JetStreamLog, JetStreamOptions};

/// Counts and reports an event refused for its size, and returns the error for the caller. The
/// log line names the event (id, type, size), never its content.
fn refuse_oversize(env: &Envelope, size: usize, limit: usize, refused: &std::sync::atomic::AtomicU64) -> LogError {
    let total = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let event_type = env.body.type_name();
    tracing::error!(event_id = %env.id, event_type, size, limit, refused = total,
        "Event over the size limit refused; it can never be published.");
    LogError::TooLarge { event_type, size, limit }
}

/// An event as stored, with its position in its stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The stream it belongs to.
    pub stream: Stream,
    /// Its sequence number: increasing within `stream`, starting at 1 (on the embedded backend
    /// the global sequence, which is increasing within every stream too).
    pub seq: u64,
    /// The stored JSON envelope.
    pub payload: bytes::Bytes,
}

impl StoredEvent {
    /// Decodes the envelope; an error marks a poison event.
    pub fn decode(&self) -> Result<Envelope, DecodeError> {
        Envelope::from_json(&self.payload)
    }
}

/// The largest event (its JSON envelope, in bytes) either backend takes. NATS refuses a message
/// over the server's `max_payload` (1 MiB by default) by closing the connection, so an event over
/// it could never be published and would hold up every event behind it; the embedded log applies
/// the same bound so that both backends accept the same events. 1 KiB is left for the headers
/// (`Nats-Msg-Id`). The gateway bounds every client-supplied field, so real events stay far below
/// this (a few KiB); reaching it is a bug, answered with [`LogError::TooLarge`].
pub const MAX_EVENT_BYTES: usize = 1024 * 1024 - NATS_HEADER_ROOM;

/// Room kept below a NATS server's `max_payload` for the message headers.
pub const NATS_HEADER_ROOM: usize = 1024;

/// Why the log could not take or give an event.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The local spool holds its maximum of unpublished events; billable requests get 503.
    #[error("the event spool is full ({0} events waiting); refusing new billable work")]
    SpoolFull(u64),
    /// SQLite failed (embedded log or spool).
    #[error("local event store failed: {0}")]
    Sqlite(String),
    /// NATS failed or timed out.
    #[error("NATS: {0}")]
    Nats(String),
    /// The writer thread is gone (shutting down).
    #[error("the event writer has stopped")]
    Closed,
    /// A wait ran out.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A conditional append found the stream past the sequence it was read at: another event
    /// came first, and nothing was appended. Read again and retry.
    #[error("the stream has moved past sequence {0} since it was read; nothing was appended")]
    Conflict(u64),
    /// The event is larger than the log can ever publish; it was refused, not stored. Retrying
    /// cannot help.
    #[error("the {event_type} event is {size} bytes, over the limit of {limit} bytes; refused")]
    TooLarge {
        /// The event's type (`usage.recorded`, …).
        event_type: &'static str,
        /// Its JSON size in bytes.
        size: usize,
        /// The limit it is over.
        limit: usize,
    },
}

/// What `/api/health` shows about the log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LogHealth {
    /// `embedded` or `jetstream`.
    pub backend: &'static str,
    /// Whether the log answered just now.
    pub reachable: bool,
    /// Events written locally but not yet acknowledged by the log (0 on the embedded backend).
    pub spool_depth: u64,
    /// Events refused or set aside because they can never be published (over the size limit, or
    /// permanently rejected by JetStream); each was logged at ERROR with its id, type and size.
    /// Set-aside events stay in the spool's `poison` table (the newest 1,000). Never counts
    /// toward `reachable`.
    pub poison_events: u64,
    /// Last error seen, if the log is unreachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The event log, cheap to clone.
#[derive(Clone)]
pub enum EventLog {
    /// `data/events.db`.
    Embedded(EmbeddedLog),
    /// NATS JetStream with a local spool.
    JetStream(JetStreamLog),
}

impl EventLog {
    /// Opens (creating if needed) the embedded log at `dir/events.db`.
    pub async fn open_embedded(dir: &Path) -> Result<Self, LogError> {
        Ok(EventLog::Embedded(EmbeddedLog::open(&dir.join("events.db")).await?))
    }

    /// Connects to JetStream, creating the streams idempotently; the spool lives at `spool_dir/spool.db`.
    pub async fn connect_jetstream(url: &str, spool_dir: &Path, opts: JetStreamOptions) -> Result<Self, LogError> {
        Ok(EventLog::JetStream(JetStreamLog::connect(url, &spool_dir.join("spool.db"), opts).await?))
    }

    /// Appends and waits until the event is durable locally (embedded commit, or spool commit
    /// for JetStream). Group-committed with concurrent appends. Use for billable facts.
    pub async fn append(&self, env: &Envelope) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(l) => l.append(env).await,
            EventLog::JetStream(l) => l.append(env).await,
        }
    }

    /// Appends without waiting for the commit (request logs). Still durable soon after; never
    /// blocks the caller.
    pub fn append_nowait(&self, env: &Envelope) {
        match self {
            EventLog::Embedded(l) => l.append_nowait(env),
            EventLog::JetStream(l) => l.append_nowait(env),
        }
    }

    /// Appends and waits for the log itself to acknowledge (the NATS PubAck, not just the spool).
    /// For admin commands, which run as short-lived processes.
    pub async fn append_acked(&self, env: &Envelope) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(l) => l.append(env).await,
            EventLog::JetStream(l) => l.append_acked(env).await,
        }
    }

    /// Appends only if the last sequence of the event's stream is still `last_seq` (the one a
    /// decision was read at), and waits for the log's acknowledgement; else
    /// [`LogError::Conflict`] and nothing is appended. Compare-and-append, for the few admin
    /// writes whose check must hold at the moment they land (the last enabled owner): JetStream
    /// checks `Nats-Expected-Last-Sequence` (the stream's, which NATS 2.9 honours for any value
    /// above 0, unlike the per-subject header at 0); the embedded log checks and inserts in one
    /// SQLite write transaction. Not spooled: the caller is waiting for the answer.
    pub async fn append_if_last(&self, env: &Envelope, last_seq: u64) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(l) => l.append_if_last(env, last_seq).await,
            EventLog::JetStream(l) => l.append_if_last(env, last_seq).await,
        }
    }

    /// Every event of `stream` with a sequence greater than `after`, then live events as they
    /// arrive, in order. The stream ends only on an unrecoverable error.
    pub fn tail(&self, stream: Stream, after: u64) -> BoxStream<'static, Result<StoredEvent, LogError>> {
        match self {
            EventLog::Embedded(l) => l.tail(stream, after),
            EventLog::JetStream(l) => l.tail(stream, after),
        }
    }

    /// The last sequence of `stream` (0 when empty).
    pub async fn last_seq(&self, stream: Stream) -> Result<u64, LogError> {
        match self {
            EventLog::Embedded(l) => l.last_seq(stream).await,
            EventLog::JetStream(l) => l.last_seq(stream).await,
        }
    }

    /// Reachability and spool depth.
    pub async fn health(&self) -> LogHealth {
        match self {
            EventLog::Embedded(l) => l.health().await,
            EventLog::JetStream(l) => l.health().await,
        }
    }

    /// Waits until everything appended so far is acknowledged by the log (spool drained).
    pub async fn flush(&self, timeout: Duration) -> Result<(), LogError> {
        match self {
            EventLog::Embedded(_) => Ok(()),
            EventLog::JetStream(l) => l.flush(timeout).await,
        }
    }

    /// Drops request-log and ops events (`LLMR_REQUESTS`, `LLMR_OPS`) older than `max_age` from the embedded log;
    /// JetStream does this itself (the stream's `max_age`, see [`JetStreamOptions`]). Billing and
    /// control events are never dropped. Returns how many events were dropped.
    pub async fn enforce_request_retention(&self, max_age: Duration) -> Result<u64, LogError> {
        match self {
            EventLog::Embedded(l) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                let age = i64::try_from(max_age.as_micros()).unwrap_or(i64::MAX);
                l.purge_requests_before(now.saturating_sub(age)).await
            }
            EventLog::JetStream(_) => Ok(0),
        }
    }

    /// `embedded` or `jetstream`.
    pub fn backend(&self) -> &'static str {
        match self {
            EventLog::Embedded(_) => "embedded",
            EventLog::JetStream(_) => "jetstream",
        }
    }
}
