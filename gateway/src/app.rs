//! The gateway value the binary holds: builds the control state and the single upstream HTTP
//! client into the [`AppState`] every handler gets (defined in [`crate::ctx`]).

use nats::EventLog;
use schemas::{EventBody, GLOBAL_TENANT, Stream};

use crate::auth_failures::{self, AuthFailures};
use crate::config::GatewayConfig;
use crate::ctx::AppState;
use crate::ctx::Inner;
use crate::error::GatewayError;
use crate::state::Control;

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
        let Some(report) = inner.auth_failures.take_report(chrono::Utc::now().timestamp_micros()) else { continue };
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
        inner.log.append_nowait(&inner.event(GLOBAL_TENANT, EventBody::AuthFailuresCounted(report)));
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
        let http = adapters::http::client(cfg.connect_timeout, cfg.egress.clone(), cfg.dns.clone())
            .map_err(|e| GatewayError::HttpClient(e.without_url().to_string()))?;
        tracing::info!(control_seq = control.seq(), "Gateway control state caught up.");
        let auth_failures = AuthFailures::new(auth_failures::Limits {
            limit: cfg.auth_failure_limit,
            window: cfg.auth_failure_window,
            max_addresses: auth_failures::DEFAULT_MAX_ADDRESSES,
        });
        let state = AppState::new(log, cfg, control, http, auth_failures);
        tokio::spawn(report_auth_failures(state.downgrade()));
        Ok(Gateway { state })
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
