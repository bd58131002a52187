//! Bounds on what a client may send: identifier fields that are copied into events (`model`,
//! `user`, metadata), and the parameters that decide how much work the upstream is asked to do
//! (`n`, `max_tokens`, sampling ranges, the number of messages). Checked by [`crate::request`]
//! on the borrowed raw values of its single parse; nothing here re-serialises the body.
//! Errors name the parameter and never echo the value.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::request::Endpoint;

/// `model` is copied into `usage.recorded` and `request.logged`. The longest real model ids
/// (Bedrock inference-profile ARNs, fine-tune ids, OpenRouter `vendor/model:variant`) stay under
/// 150 bytes; 256 leaves room and keeps every event small.
pub const MAX_MODEL_BYTES: usize = 256;
/// `user` (OpenAI) and `metadata.user_id` (Anthropic, which documents 256 as its own maximum)
/// are copied into `usage.recorded`.
pub const MAX_USER_BYTES: usize = 256;
/// OpenAI's documented bounds on chat `metadata`: 16 pairs, keys up to 64 characters, values up
/// to 512. Refused here so an oversized map costs no upstream round trip.
pub const MAX_METADATA_PAIRS: usize = 16;
/// See [`MAX_METADATA_PAIRS`].
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// See [`MAX_METADATA_PAIRS`].
pub const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Choices per request (`n`, Gemini's `candidateCount`): OpenAI's own maximum.
pub const MAX_N: u64 = 128;
/// `best_of` on `/v1/completions`: OpenAI's own maximum.
pub const MAX_BEST_OF: u64 = 20;
/// `top_logprobs` (chat): OpenAI's own maximum.
pub const MAX_TOP_LOGPROBS: u64 = 20;
/// `logprobs` on `/v1/completions` (an integer there): OpenAI's own maximum.
pub const MAX_COMPLETION_LOGPROBS: u64 = 5;
/// Default cap on `max_tokens` / `max_completion_tokens` / `maxOutputTokens`. The largest output
/// any current model documents is 128k tokens; one million leaves room for the next generation
/// while refusing nonsense (`99999999999`) that would otherwise become a budget reservation.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 1_000_000;
/// Default cap on `messages` (OpenAI, Anthropic) and `contents` (Gemini). Every message costs a
/// few tokens of framing, so 10,000 of them fill even a one-million-token context window with
/// little room for content; real agent sessions stay in the low thousands. 50,000 tiny
/// messages is an attack on the tokenizer and the upstream, not a conversation.
pub const DEFAULT_MAX_MESSAGES: usize = 10_000;

/// The configurable request limits (the fixed ones are the constants above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `max_tokens` (and its synonyms) accepted.
    pub max_output_tokens: u64,
    /// Most `messages` / `contents` entries accepted.
    pub max_messages: usize,
    /// Most choices (`n`, `candidateCount`) accepted: [`MAX_N`] unless a key or tenant caps it.
    pub max_n: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_output_tokens: DEFAULT_MAX_OUTPUT_TOKENS, max_messages: DEFAULT_MAX_MESSAGES, max_n: MAX_N }
    }
}

impl Limits {
    /// These limits tightened by a key's (or its tenant's) caps: the smallest cap wins. Two
    /// integer compares on values already in the key entry.
    pub fn capped(mut self, max_output_tokens: Option<u64>, max_n: Option<u64>) -> Limits {
        if let Some(m) = max_output_tokens {
            self.max_output_tokens = self.max_output_tokens.min(m);
        }
        if let Some(m) = max_n {
            self.max_n = self.max_n.min(m);
        }
        self
    }
}

fn invalid(param: &str, code: &'static str, message: String) -> ApiError {
    ApiError::InvalidValue { param: param.to_owned(), code, message }
}

/// Refuses an identifier longer than `max` bytes. The message names the field, not the value.
pub fn identifier(value: &str, param: &str, max: usize) -> Result<(), ApiError> {
    if value.len() > max {
        return Err(invalid(
            param,
            "string_above_max_length",
            format!("Invalid '{param}': string too long. Expected a string with maximum length {max} bytes."),
        ));
    }
    Ok(())
}

/// Refuses more than `max` entries in the array `param`.
pub fn entries(count: usize, param: &str, max: usize) -> Result<(), ApiError> {
    if count > max {
        return Err(invalid(
            param,
            "array_above_max_length",
            format!("Invalid '{param}': array too long. Expected an array with maximum length {max}."),
        ));
    }
    Ok(())
}

/// An integer parameter in `min..=max`; `null` counts as absent.
fn integer(raw: &RawValue, param: &str, min: u64, max: u64) -> Result<(), ApiError> {
    let type_error = || invalid(param, "invalid_type", format!("Invalid type for '{param}': expected an integer."));
    let n = match serde_json::from_str::<Option<serde_json::Number>>(raw.get()).map_err(|_| type_error())? {
        None => return Ok(()),
        Some(n) => n,
    };
    let value = match (n.as_u64(), n.as_i64()) {
        (Some(v), _) => v,
        // A negative integer.
        (None, Some(_)) => return Err(below(param, min)),
        // A float such as `1e308` or `2.5`, or an integer beyond 64 bits.
        (None, None) => return Err(type_error()),
    };
    if value < min {
        return Err(below(param, min));
    }
    if value > max {
        return Err(invalid(
            param,
            "integer_above_max_value",
            format!("Invalid '{param}': integer above maximum value. Expected a value <= {max}."),
        ));
    }
    Ok(())
}

fn below(param: &str, min: u64) -> ApiError {
    invalid(
        param,
        "integer_below_min_value",
        format!("Invalid '{param}': integer below minimum value. Expected a value >= {min}."),
    )
}

/// A number parameter in `min..=max`; `null` counts as absent.
fn number(raw: &RawValue, param: &str, min: f64, max: f64) -> Result<(), ApiError> {
    let value = serde_json::from_str::<Option<f64>>(raw.get())
        .map_err(|_| invalid(param, "invalid_type", format!("Invalid type for '{param}': expected a number.")))?;
    match value {
        Some(v) if v < min => Err(invalid(
            param,
            "decimal_below_min_value",
            format!("Invalid '{param}': decimal below minimum value. Expected a value >= {min}."),
        )),
        Some(v) if v > max => Err(invalid(
            param,
            "decimal_above_max_value",
            format!("Invalid '{param}': decimal above maximum value. Expected a value <= {max}."),
        )),
        _ => Ok(()),
    }
}

impl Limits {
    /// Checks one top-level field of an OpenAI or Anthropic body that the parse step does not
    /// otherwise read. Unknown fields pass: they are the upstream's business.
    pub fn check_field(&self, endpoint: Endpoint, name: &str, raw: &RawValue) -> Result<(), ApiError> {
        let max_out = self.max_output_tokens;
        match (endpoint, name) {
            (Endpoint::ChatCompletions | Endpoint::Completions, "n") => integer(raw, name, 1, self.max_n),
            (Endpoint::ChatCompletions, "max_tokens" | "max_completion_tokens") => integer(raw, name, 1, max_out),
            // `max_tokens: 0` with `echo` asks the legacy endpoint for the prompt's logprobs alone.
            (Endpoint::Completions, "max_tokens") => integer(raw, name, 0, max_out),
            (Endpoint::Completions, "best_of") => integer(raw, name, 1, MAX_BEST_OF),
            (Endpoint::Completions, "logprobs") => integer(raw, name, 0, MAX_COMPLETION_LOGPROBS),
            (Endpoint::ChatCompletions, "top_logprobs") => integer(raw, name, 0, MAX_TOP_LOGPROBS),
            (Endpoint::ChatCompletions | Endpoint::Completions, "temperature") => number(raw, name, 0.0, 2.0),
            (Endpoint::ChatCompletions | Endpoint::Completions, "presence_penalty" | "frequency_penalty") => {
                number(raw, name, -2.0, 2.0)
            }
            (Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Messages, "top_p") => {
                number(raw, name, 0.0, 1.0)
            }
            (Endpoint::ChatCompletions, "metadata") => openai_metadata(raw),
            (Endpoint::Messages, "max_tokens") => integer(raw, name, 1, max_out),
            (Endpoint::Messages, "temperature") => number(raw, name, 0.0, 1.0),
            (Endpoint::Messages, "top_k") => integer(raw, name, 0, u64::from(u32::MAX)),
            _ => Ok(()),
        }
    }

    /// Checks a Gemini `generationConfig` (either spelling of each field, as the converter reads them).
    pub fn check_generation_config(&self, raw: &RawValue) -> Result<(), ApiError> {
        let config: Option<GenerationConfig<'_>> = serde_json::from_str(raw.get()).map_err(|_| {
            invalid(
                "generationConfig",
                "invalid_type",
                "Invalid type for 'generationConfig': expected an object.".to_owned(),
            )
        })?;
        let Some(c) = config else { return Ok(()) };
        let p = |field: &str| format!("generationConfig.{field}");
        let checks: [(Option<&RawValue>, &str, Check); 7] = [
            (c.candidate_count, "candidateCount", Check::Integer(1, self.max_n)),
            (c.max_output_tokens, "maxOutputTokens", Check::Integer(1, self.max_output_tokens)),
            (c.temperature, "temperature", Check::Number(0.0, 2.0)),
            (c.top_p, "topP", Check::Number(0.0, 1.0)),
            (c.top_k, "topK", Check::Number(0.0, f64::from(u32::MAX))),
            (c.presence_penalty, "presencePenalty", Check::Number(-2.0, 2.0)),
            (c.frequency_penalty, "frequencyPenalty", Check::Number(-2.0, 2.0)),
        ];
        for (value, field, check) in checks {
            let Some(value) = value else { continue };
            match check {
                Check::Integer(min, max) => integer(value, &p(field), min, max)?,
                Check::Number(min, max) => number(value, &p(field), min, max)?,
            }
        }
        Ok(())
    }
}

enum Check {
    Integer(u64, u64),
    Number(f64, f64),
}

/// The bounded fields of a Gemini `generationConfig`; the rest pass through unread.
#[derive(Deserialize)]
struct GenerationConfig<'a> {
    #[serde(borrow, default, rename = "candidateCount", alias = "candidate_count")]
    candidate_count: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "maxOutputTokens", alias = "max_output_tokens")]
    max_output_tokens: Option<&'a RawValue>,
    #[serde(borrow, default)]
    temperature: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "topP", alias = "top_p")]
    top_p: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "topK", alias = "top_k")]
    top_k: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "presencePenalty", alias = "presence_penalty")]
    presence_penalty: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "frequencyPenalty", alias = "frequency_penalty")]
    frequency_penalty: Option<&'a RawValue>,
}

/// OpenAI chat `metadata`: at most 16 string pairs of bounded length, or `null`.
fn openai_metadata(raw: &RawValue) -> Result<(), ApiError> {
    let map: Option<Vec<(std::borrow::Cow<'_, str>, std::borrow::Cow<'_, str>)>> =
        serde_json::from_str::<Option<Pairs<'_>>>(raw.get()).map(|p| p.map(|p| p.0)).map_err(|_| {
            invalid(
                "metadata",
                "invalid_type",
                "Invalid type for 'metadata': expected an object of string values.".to_owned(),
            )
        })?;
    let Some(pairs) = map else { return Ok(()) };
    if pairs.len() > MAX_METADATA_PAIRS {
        return Err(invalid(
            "metadata",
            "object_above_max_properties",
            format!("Invalid 'metadata': too many properties. Expected at most {MAX_METADATA_PAIRS}."),
        ));
    }
    for (k, v) in &pairs {
        if k.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(invalid(
                "metadata",
                "string_above_max_length",
                format!("Invalid 'metadata': a key is longer than {MAX_METADATA_KEY_CHARS} characters."),
            ));
        }
        if v.chars().count() > MAX_METADATA_VALUE_CHARS {
            // The key is bounded by now and chosen by the client as a name, so it may be shown.
            let param = format!("metadata.{k}");
            return Err(invalid(
                &param,
                "string_above_max_length",
                format!("Invalid '{param}': string too long. Expected at most {MAX_METADATA_VALUE_CHARS} characters."),
            ));
        }
    }
    Ok(())
}

/// An object's string pairs, borrowed where they have no escapes.
struct Pairs<'a>(Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>);

impl<'de> Deserialize<'de> for Pairs<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pairs<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<CowStr<'de>, CowStr<'de>>()? {
                    out.push((k.0, v.0));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A string, borrowed when it has no escapes.
struct CowStr<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// `model` as it may be shown in an error: as given when within [`MAX_MODEL_BYTES`], else its
/// first bytes (at a character boundary) and an ellipsis, so a 404 never echoes megabytes.
pub fn shown_model(model: &str) -> std::borrow::Cow<'_, str> {
    const SHOWN: usize = 64;
    if model.len() <= MAX_MODEL_BYTES {
        return std::borrow::Cow::Borrowed(model);
    }
    let mut end = SHOWN;
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &model[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(endpoint: Endpoint, name: &str, value: &str) -> Result<(), ApiError> {
        let raw: Box<RawValue> = serde_json::from_str(value).map_err(|_| ApiError::Internal)?;
        Limits::default().check_field(endpoint, name, &raw)
    }

    fn code(r: Result<(), ApiError>) -> Option<String> {
        r.err().and_then(|e| e.code().map(str::to_owned))
    }

    #[test]
    fn integers_are_bounded_and_typed() {
        let chat = Endpoint::ChatCompletions;
        assert!(check(chat, "n", "1").is_ok() && check(chat, "n", "128").is_ok() && check(chat, "n", "null").is_ok());
        assert_eq!(code(check(chat, "n", "1000")).as_deref(), Some("integer_above_max_value"));
        assert_eq!(code(check(chat, "n", "0")).as_deref(), Some("integer_below_min_value"));
        assert_eq!(code(check(chat, "n", "-1")).as_deref(), Some("integer_below_min_value"));
        assert_eq!(code(check(chat, "max_tokens", "1e308")).as_deref(), Some("invalid_type"));
        assert_eq!(code(check(chat, "max_tokens", "99999999999")).as_deref(), Some("integer_above_max_value"));
        assert_eq!(code(check(chat, "max_tokens", "\"5\"")).as_deref(), Some("invalid_type"));
        assert_eq!(code(check(chat, "max_tokens", "184467440737095516150")).as_deref(), Some("invalid_type"));
        assert!(check(Endpoint::Completions, "max_tokens", "0").is_ok());
        assert!(check(Endpoint::Embeddings, "n", "1000").is_ok(), "embeddings have no n");
    }

    #[test]
    fn numbers_are_bounded_per_protocol() {
        assert!(check(Endpoint::ChatCompletions, "temperature", "1.5").is_ok());
        assert_eq!(code(check(Endpoint::Messages, "temperature", "1.5")).as_deref(), Some("decimal_above_max_value"));
        assert_eq!(
            code(check(Endpoint::ChatCompletions, "presence_penalty", "-2.5")).as_deref(),
            Some("decimal_below_min_value")
        );
        assert_eq!(code(check(Endpoint::ChatCompletions, "top_p", "true")).as_deref(), Some("invalid_type"));
    }

    #[test]
    fn metadata_is_bounded_without_echoing_values() {
        let long = format!(r#"{{"k":"{}"}}"#, "v".repeat(513));
        let err = check(Endpoint::ChatCompletions, "metadata", &long).err();
        let body = err.map(|e| String::from_utf8_lossy(&e.body()).into_owned()).unwrap_or_default();
        assert!(body.contains(r#""param":"metadata.k""#) && !body.contains("vvvv"), "{body}");
        let many: String = format!("{{{}}}", (0..17).map(|i| format!(r#""k{i}":"v""#)).collect::<Vec<_>>().join(","));
        assert_eq!(
            code(check(Endpoint::ChatCompletions, "metadata", &many)).as_deref(),
            Some("object_above_max_properties")
        );
        assert!(check(Endpoint::ChatCompletions, "metadata", r#"{"a":"b"}"#).is_ok());
    }

    #[test]
    fn a_long_model_is_shown_cut_at_a_character_boundary() {
        let model = "é".repeat(1000);
        let shown = shown_model(&model);
        assert!(shown.len() <= 64 + "…".len() && shown.ends_with('…'));
        assert_eq!(shown_model("gpt-4o"), "gpt-4o");
    }
}
