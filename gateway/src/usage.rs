//! Turning an upstream usage object (or an estimate) into token counts, a price and the
//! `usage.recorded` / `request.logged` events. No I/O except the appends in [`AppState`] helpers.

use std::sync::Arc;

use schemas::{AppliedPrice, StreamOutcome, UsageRecorded, UsageSource};

pub use adapters::usage::{TokenCounts, from_openai};

/// What a request consumed, ready to become `usage.recorded`.
#[derive(Debug, Clone)]
pub struct Consumption {
    /// Token counts.
    pub tokens: TokenCounts,
    /// The upstream's usage object, when it sent one.
    pub raw: Option<serde_json::Value>,
    /// Upstream or estimated.
    pub source: UsageSource,
    /// Model the upstream says it served.
    pub model_served: Option<String>,
}

/// The billing facts known before the upstream answers.
#[derive(Debug, Clone)]
pub struct BillingContext {
    /// The request id.
    pub request_id: String,
    /// The key's id.
    pub key_id: String,
    /// The `user` field.
    pub user: Option<String>,
    /// Endpoint name.
    pub endpoint: &'static str,
    /// Model asked for.
    pub model_requested: String,
    /// Price in force when the request arrived.
    pub price: Option<Arc<AppliedPrice>>,
}

impl BillingContext {
    /// Builds the `usage.recorded` data for one finished call.
    pub fn record(
        &self,
        provider: &str,
        channel_id: &str,
        c: Consumption,
        streamed: bool,
        outcome: StreamOutcome,
    ) -> UsageRecorded {
        let t = c.tokens;
        let (cost_nanos, currency) = match &self.price {
            Some(p) => (p.cost_nanos(t.input, t.cached, t.cache_write, t.output), p.currency.clone()),
            None => (0, "USD".to_owned()),
        };
        UsageRecorded {
            request_id: self.request_id.clone(),
            key_id: self.key_id.clone(),
            user: self.user.clone(),
            endpoint: self.endpoint.to_owned(),
            model_requested: self.model_requested.clone(),
            model_served: c.model_served.map(bounded_model).unwrap_or_else(|| self.model_requested.clone()),
            provider: provider.to_owned(),
            channel_id: channel_id.to_owned(),
            input_tokens: t.input,
            cached_input_tokens: t.cached,
            cache_write_tokens: t.cache_write,
            output_tokens: t.output,
            reasoning_tokens: t.reasoning,
            raw_usage: c.raw.filter(raw_usage_fits),
            usage_source: c.source,
            streamed,
            stream_outcome: outcome,
            price: self.price.as_deref().cloned(),
            cost_nanos,
            currency,
        }
    }
}

/// The upstream's raw usage object is kept in the event for audit; a real one is a few hundred
/// bytes. One larger than this (a broken or hostile upstream) is left out so the event stays
/// publishable; the token counts read from it are billed all the same.
const MAX_RAW_USAGE_BYTES: usize = 16 * 1024;

fn raw_usage_fits(raw: &serde_json::Value) -> bool {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let fits = serde_json::to_writer(&mut n, raw).is_ok() && n.0 <= MAX_RAW_USAGE_BYTES;
    if !fits {
        tracing::warn!(size = n.0, "Upstream usage object too large to keep in the event; left out.");
    }
    fits
}

/// The model name an upstream reported, cut to [`crate::limits::MAX_MODEL_BYTES`] (at a
/// character boundary) so a broken upstream cannot make the usage event unpublishable.
fn bounded_model(mut served: String) -> String {
    let max = crate::limits::MAX_MODEL_BYTES;
    if served.len() > max {
        let mut end = max;
        while !served.is_char_boundary(end) {
            end -= 1;
        }
        served.truncate(end);
    }
    served
}
