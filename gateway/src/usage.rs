//! Turning an upstream usage object (or an estimate) into token counts, a price and the
//! `usage.recorded` / `request.logged` events. No I/O except the appends in [`AppState`] helpers.

use std::sync::Arc;

use schemas::{AppliedPrice, StreamOutcome, UsageRecorded, UsageSource};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Disjoint token counts as billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Uncached input.
    pub input: u64,
    /// Cached input.
    pub cached: u64,
    /// Cache writes.
    pub cache_write: u64,
    /// Output, reasoning included.
    pub output: u64,
    /// Reasoning (part of output).
    pub reasoning: u64,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    /// DeepSeek: the cached part of `prompt_tokens` (`prompt_cache_miss_tokens` is the rest).
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
    #[serde(default)]
    prompt_cache_miss_tokens: Option<u64>,
    /// Moonshot: the cached part of `prompt_tokens`, at the top level.
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// Reads an OpenAI usage object. OpenAI counts cached tokens inside `prompt_tokens` and reasoning
/// tokens inside `completion_tokens`; so do the compatible vendors, which only name the cached
/// part differently (DeepSeek `prompt_cache_hit_tokens`, Moonshot top-level `cached_tokens`).
/// The first name present wins, so a vendor sending two of them is never counted twice.
/// `None` when there is no usable `prompt_tokens`.
pub fn from_openai(raw: &RawValue) -> Option<(TokenCounts, serde_json::Value)> {
    let u: OpenAiUsage = serde_json::from_str(raw.get()).ok()?;
    // Saturating: an upstream's numbers must not wrap (or panic in a debug build).
    let prompt =
        u.prompt_tokens.or_else(|| Some(u.prompt_cache_hit_tokens?.saturating_add(u.prompt_cache_miss_tokens?)))?;
    let cached = u
        .prompt_tokens_details
        .and_then(|d| d.cached_tokens)
        .or(u.prompt_cache_hit_tokens)
        .or(u.cached_tokens)
        .unwrap_or(0)
        .min(prompt);
    let output = u.completion_tokens.unwrap_or(0);
    let reasoning = u.completion_tokens_details.and_then(|d| d.reasoning_tokens).unwrap_or(0).min(output);
    let value = serde_json::from_str(raw.get()).ok()?;
    Some((TokenCounts { input: prompt - cached, cached, cache_write: 0, output, reasoning }, value))
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_split_out_of_prompt_tokens_and_zero_stays_zero() -> Result<(), serde_json::Error> {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"{"prompt_tokens":25,"completion_tokens":12,"prompt_tokens_details":{"cached_tokens":5},
                "completion_tokens_details":{"reasoning_tokens":2}}"#,
        )?;
        let (t, _) = from_openai(&raw).unwrap_or_default();
        assert_eq!(t, TokenCounts { input: 20, cached: 5, cache_write: 0, output: 12, reasoning: 2 });
        let zero: Box<RawValue> = serde_json::from_str(r#"{"prompt_tokens":0,"completion_tokens":0}"#)?;
        assert_eq!(from_openai(&zero).map(|x| x.0), Some(TokenCounts::default()));
        let none: Box<RawValue> = serde_json::from_str(r#"{"total_tokens":3}"#)?;
        assert!(from_openai(&none).is_none());
        Ok(())
    }

    #[test]
    fn deepseek_and_moonshot_cache_fields_are_cached_input_and_never_counted_twice() -> Result<(), serde_json::Error> {
        let deepseek: Box<RawValue> = serde_json::from_str(
            r#"{"prompt_tokens":100,"completion_tokens":40,"total_tokens":140,"prompt_cache_hit_tokens":64,
                "prompt_cache_miss_tokens":36,"completion_tokens_details":{"reasoning_tokens":30}}"#,
        )?;
        let want = TokenCounts { input: 36, cached: 64, cache_write: 0, output: 40, reasoning: 30 };
        assert_eq!(from_openai(&deepseek).map(|x| x.0), Some(want));
        // Newer DeepSeek responses carry both names for the same tokens.
        let both: Box<RawValue> = serde_json::from_str(
            r#"{"prompt_tokens":100,"completion_tokens":40,"prompt_cache_hit_tokens":64,
                "prompt_cache_miss_tokens":36,"prompt_tokens_details":{"cached_tokens":64},
                "completion_tokens_details":{"reasoning_tokens":30}}"#,
        )?;
        assert_eq!(from_openai(&both).map(|x| x.0), Some(want));
        let split_only: Box<RawValue> = serde_json::from_str(
            r#"{"prompt_cache_hit_tokens":4,"prompt_cache_miss_tokens":6,"completion_tokens":1}"#,
        )?;
        assert_eq!(from_openai(&split_only).map(|x| (x.0.input, x.0.cached)), Some((6, 4)));
        let moonshot: Box<RawValue> =
            serde_json::from_str(r#"{"prompt_tokens":50,"completion_tokens":5,"total_tokens":55,"cached_tokens":20}"#)?;
        assert_eq!(from_openai(&moonshot).map(|x| (x.0.input, x.0.cached)), Some((30, 20)));
        Ok(())
    }
}
