//! The gateway value the binary holds: builds the control state and the single upstream HTTP
//! client into the [`AppState`] every handler gets (defined in [`crate::ctx`]).

use nats::EventLog;
use schemas::Stream;

use crate::config::GatewayConfig;
use crate::ctx::AppState;
use crate::error::GatewayError;
use crate::state::Control;

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
            .build()
            .map_err(|e| GatewayError::HttpClient(e.without_url().to_string()))?;
        tracing::info!(control_seq = control.seq(), "Gateway control state caught up.");
        Ok(Gateway { state: AppState::new(log, cfg, control, http) })
    }

    /// The `/v1` routes (chat completions, completions, embeddings, models).
    pub fn router(&self) -> axum::Router {
        crate::routes::router(self.state.clone())
    }

    /// The last `LLMR_CONTROL` sequence folded into the in-memory state.
    pub fn control_seq(&self) -> u64 {
        self.state.control.seq()
    }

    /// Ready = the control state is caught up and still following the stream.
    pub fn is_ready(&self) -> bool {
        self.state.control.following()
    }
}
