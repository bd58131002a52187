//! What every layer of a request shares, in a module that imports none of them: the gateway's
//! state ([`AppState`]), the request id and the authenticated caller. Routes, handlers and the
//! call pipeline import these from here, so `call` never reaches back into `app` or `handlers`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nats::EventLog;
use schemas::{Envelope, EventBody};

use crate::config::GatewayConfig;
use crate::state::{Control, ControlState, KeyEntry};

/// Shared by every request; clone is one `Arc` bump.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] points at.
pub struct Inner {
    /// The event log.
    pub log: EventLog,
    /// Settings.
    pub cfg: GatewayConfig,
    /// The live control state.
    pub control: Arc<Control>,
    /// One client for every upstream, so connections are pooled and reused.
    pub http: reqwest::Client,
    producer_seq: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state of a gateway that appends to `log` and follows `control`.
    pub fn new(log: EventLog, cfg: GatewayConfig, control: Arc<Control>, http: reqwest::Client) -> AppState {
        AppState(Arc::new(Inner { log, cfg, control, http, producer_seq: AtomicU64::new(0) }))
    }

    /// The current control snapshot.
    pub fn snapshot(&self) -> Arc<ControlState> {
        self.control.snapshot()
    }

    /// A new event from this instance about request `request_id` of `tenant`.
    pub fn envelope(&self, tenant: &str, request_id: &str, body: EventBody) -> Envelope {
        let mut env = Envelope::new(tenant, &self.cfg.instance, now_us(), body);
        env.producer_seq = self.producer_seq.fetch_add(1, Ordering::Relaxed) + 1;
        env.correlation_id = Some(request_id.to_owned());
        env
    }
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// The request id and arrival time.
#[derive(Debug, Clone)]
pub struct RequestId {
    /// UUIDv7 text.
    pub id: Arc<str>,
    /// When the request arrived.
    pub started: Instant,
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);
