//! Upstream usage objects read into disjoint token counts. Only the OpenAI-compatible shape is
//! here (it is shared by the pass-through relay, the translated chat answer and every OpenAI-
//! compatible vendor); Anthropic's and Gemini's are read by their adapters' `convert`.

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
