//! The gateway value the binary holds, and the cheap-to-clone state every handler gets.
//! Builds the control state, the single upstream HTTP client, and the event helpers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nats::EventLog;
use schemas::{Envelope, EventBody, GLOBAL_TENANT, Stream};

use crate::auth_failures::{self, AuthFailures};
use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::state::{Control, ControlState};

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
    producer_seq: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
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

/// Appends the failed-authentication counts once per interval while they are non-zero, and prunes
/// the throttle table; stops when the gateway is dropped.
async fn report_auth_failures(inner: std::sync::Weak<Inner>) {
    let Some(every) = inner.upgrade().map(|i| i.cfg.auth_failure_report_interval) else { return };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        inner.auth_failures.prune();
        let Some(report) = inner.auth_failures.take_report(now_us()) else { continue };
        let failed = report.missing + report.malformed + report.unknown + report.revoked;
        if report.throttled > 0 {
            tracing::warn!(
                failed,
                throttled = report.throttled,
                addresses = report.distinct_addresses,
                "Failed authentications; some client addresses are being throttled."
            );
        } else {
            tracing::info!(failed, addresses = report.distinct_addresses, "Failed authentications.");
        }
        let mut env =
            Envelope::new(GLOBAL_TENANT, &inner.cfg.instance, now_us(), EventBody::AuthFailuresCounted(report));
        env.producer_seq = inner.producer_seq.fetch_add(1, Ordering::Relaxed) + 1;
        inner.log.append_nowait(&env);
    }
}

/// The running gateway: in-memory control state following `LLMR_CONTROL`, and the `/v1` router.
#[derive(Clone)]
pub struct Gateway {
    state: AppState,
}

impl Gateway {
    /// Folds `LLMR_CONTROL` from sequence 0 up to its last sequence at the time of the call, then
    /// returns; a background task keeps following the stream for as long as the gateway (or a
    /// router made from it) is alive.
    pub async fn start(log: EventLog, cfg: GatewayConfig) -> Result<Gateway, GatewayError> {
        let until = log.last_seq(Stream::Control).await?;
        let control = Control::start(&log, cfg.master_key.clone(), until).await?;
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(cfg.connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            // Upstream redirects are not followed: a channel's URL is the only place we send its key.
            .redirect(reqwest::redirect::Policy::none())
            // Every name is checked against the outbound address policy at connect time, each time
            // it is resolved, so a DNS answer that changes after a channel was saved is caught.
            // Literal addresses skip the resolver; `providers::dispatch` checks those.
            .dns_resolver(egress::CheckingResolver::new(cfg.egress.clone(), egress::Trust::Admin, cfg.dns.clone()))
            .build()
            .map_err(|e| GatewayError::HttpClient(e.without_url().to_string()))?;
        tracing::info!(control_seq = control.seq(), "Gateway control state caught up.");
        let auth_failures = AuthFailures::new(auth_failures::Limits {
            limit: cfg.auth_failure_limit,
            window: cfg.auth_failure_window,
            max_addresses: auth_failures::DEFAULT_MAX_ADDRESSES,
        });
        let inner = Arc::new(Inner { log, cfg, control, http, auth_failures, producer_seq: AtomicU64::new(0) });
        tokio::spawn(report_auth_failures(Arc::downgrade(&inner)));
        Ok(Gateway { state: AppState(inner) })
    }

    /// The `/v1` routes (chat completions, completions, embeddings, models).
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.state.clone())
    }

    /// The last `LLMR_CONTROL` sequence folded into the in-memory state.
    pub fn control_seq(&self) -> u64 {
        self.state.control.seq()
    }

    /// How many times an unknown key made the control state read the log's end (bounded by the
    /// catch-up's rate limit, whatever the number of unknown keys).
    pub fn control_catch_ups(&self) -> u64 {
        self.state.control.catch_ups()
    }

    /// The last control sequence folded into the in-memory state, as it changes.
    pub fn control_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.state.control.applied()
    }

    /// Ready = the control state is caught up and still following the stream.
    pub fn is_ready(&self) -> bool {
        self.state.control.following()
    }
}
