//! JetStream backend: placeholder signatures, replaced by the real backend.

use std::path::Path;
use std::time::Duration;

use futures::stream::BoxStream;
use schemas::{Envelope, Stream};

use crate::{LogError, LogHealth, StoredEvent};

/// Tuning for the JetStream backend.
#[derive(Debug, Clone, Default)]
pub struct JetStreamOptions {}

/// The JetStream log.
#[derive(Clone)]
pub struct JetStreamLog {}

impl JetStreamLog {
    /// Connects.
    pub async fn connect(_url: &str, _spool: &Path, _opts: JetStreamOptions) -> Result<Self, LogError> {
        Err(LogError::Nats("not built".into()))
    }
    /// Spools.
    pub async fn append(&self, _env: &Envelope) -> Result<(), LogError> {
        Err(LogError::Closed)
    }
    /// Spools without waiting.
    pub fn append_nowait(&self, _env: &Envelope) {}
    /// Publishes and waits for the ack.
    pub async fn append_acked(&self, _env: &Envelope) -> Result<(), LogError> {
        Err(LogError::Closed)
    }
    /// Tails.
    pub fn tail(&self, _stream: Stream, _after: u64) -> BoxStream<'static, Result<StoredEvent, LogError>> {
        Box::pin(futures::stream::empty())
    }
    /// Last sequence.
    pub async fn last_seq(&self, _stream: Stream) -> Result<u64, LogError> {
        Ok(0)
    }
    /// Health.
    pub async fn health(&self) -> LogHealth {
        LogHealth { backend: "jetstream", reachable: false, spool_depth: 0, error: None }
    }
    /// Drains the spool.
    pub async fn flush(&self, _timeout: Duration) -> Result<(), LogError> {
        Ok(())
    }
}
