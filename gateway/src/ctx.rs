//! What every layer of a request shares, in a module that imports none of them: the gateway's
//! state ([`AppState`]), the request id and the authenticated caller. Routes, handlers and the
//! call pipeline import these from here, so `call` never reaches back into `app` or `handlers`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use nats::EventLog;
use schemas::{Envelope, EventBody, GLOBAL_TENANT, RequestLogged};

use crate::auth_failures::AuthFailures;
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
    /// Failed authentications: the per-address throttle and the counts of this interval.
    pub auth_failures: AuthFailures,
    /// The gateway-wide retry budget.
    pub retries: crate::health::RetryBudget,
    producer_seq: AtomicU64,
}

impl Inner {
    /// A new event from this instance, not about any one request (periodic reports).
    pub fn event(&self, tenant: &str, body: EventBody) -> Envelope {
        let mut env = Envelope::new(tenant, &self.cfg.instance, now_us(), body);
        env.producer_seq = self.producer_seq.fetch_add(1, Ordering::Relaxed) + 1;
        env
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    /// The state of a gateway that appends to `log` and follows `control`.
    pub fn new(
        log: EventLog,
        cfg: GatewayConfig,
        control: Arc<Control>,
        http: reqwest::Client,
        auth_failures: AuthFailures,
    ) -> AppState {
        let retries = crate::health::RetryBudget::new(cfg.retry_budget_ratio, cfg.retry_budget_min);
        AppState(Arc::new(Inner { log, cfg, control, http, auth_failures, retries, producer_seq: AtomicU64::new(0) }))
    }

    /// A handle that does not keep the state alive (for background tasks that end with it).
    pub fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.0)
    }

    /// The current control snapshot.
    pub fn snapshot(&self) -> Arc<ControlState> {
        self.control.snapshot()
    }

    /// Appends `request.logged` for request `rid` of the caller `key` without waiting: logging a
    /// request never holds up its answer. Requests without a key are logged under the global
    /// tenant.
    pub fn log_request(&self, rid: &RequestId, key: Option<&KeyEntry>, data: RequestLogged) {
        let tenant = key.map_or(GLOBAL_TENANT, |k| k.tenant.as_str());
        self.log.append_nowait(&self.envelope(tenant, &rid.id, EventBody::RequestLogged(data)));
    }

    /// A new event from this instance about request `request_id` of `tenant`.
    pub fn envelope(&self, tenant: &str, request_id: &str, body: EventBody) -> Envelope {
        let mut env = self.0.event(tenant, body);
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

impl RequestId {
    /// The `request.logged` data of this request, answered with `status`, built in this one place:
    /// the fields every request has. A proxied call fills in its channel, attempts and timings
    /// (`call::record`); answers the gateway gives itself leave them empty.
    pub fn logged(
        &self,
        key: Option<&KeyEntry>,
        endpoint: &str,
        model: Option<&str>,
        status: u16,
        error_class: Option<String>,
    ) -> RequestLogged {
        RequestLogged {
            request_id: self.id.to_string(),
            key_id: key.map(|k| k.key_id.clone()),
            endpoint: endpoint.to_owned(),
            model: model.map(str::to_owned),
            provider: None,
            channel_id: None,
            status,
            latency_us: u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ttft_us: None,
            attempts: 0,
            error_class,
            streamed: false,
            attempt_log: Vec::new(),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<KeyEntry>);
