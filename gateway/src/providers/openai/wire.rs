//! The parts of OpenAI responses the gateway reads: the model, the usage object and, only for
//! estimates, the generated text. Everything else passes through untouched.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// The head of a non-stream response (chat, completions, embeddings).
#[derive(Deserialize)]
pub struct ResponseHead<'a> {
    /// The model served.
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// The usage object.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
    /// Present on error bodies sent with a 200.
    #[serde(default)]
    pub error: Option<IgnoredAny>,
}

/// One streamed chunk.
#[derive(Deserialize)]
pub struct ChunkView<'a> {
    /// The model served.
    #[serde(default, borrow)]
    pub model: Option<Cow<'a, str>>,
    /// Choices; empty on the usage-only chunk.
    #[serde(default, borrow)]
    pub choices: Option<Vec<ChoiceView<'a>>>,
    /// The usage object, on the final chunk when `include_usage` is set.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
    /// An in-band error.
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
}

/// One choice of a chunk (chat `delta` or completions `text`).
#[derive(Deserialize)]
pub struct ChoiceView<'a> {
    /// Chat delta.
    #[serde(default, borrow)]
    pub delta: Option<DeltaView<'a>>,
    /// Completions text.
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
}

/// A chat delta.
#[derive(Deserialize)]
pub struct DeltaView<'a> {
    /// Generated text.
    #[serde(default, borrow)]
    pub content: Option<Cow<'a, str>>,
    /// Reasoning text some vendors stream (DeepSeek, Qwen).
    #[serde(default, borrow)]
    pub reasoning_content: Option<Cow<'a, str>>,
}

impl ChunkView<'_> {
    /// Appends the chunk's generated text to `out` (for estimates).
    pub fn collect_text(&self, out: &mut String) {
        for c in self.choices.iter().flatten() {
            if let Some(d) = &c.delta {
                if let Some(t) = &d.content {
                    out.push_str(t);
                }
                if let Some(t) = &d.reasoning_content {
                    out.push_str(t);
                }
            }
            if let Some(t) = &c.text {
                out.push_str(t);
            }
        }
    }

    /// Whether this is the usage-only chunk (`choices: []` with a usage object).
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_none_or(Vec::is_empty)
    }
}

/// The generated text of a non-stream response (for estimates).
pub fn response_text(body: &[u8]) -> String {
    let mut out = String::new();
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else { return out };
    for c in v.get("choices").and_then(serde_json::Value::as_array).into_iter().flatten() {
        for p in ["/message/content", "/message/reasoning_content", "/text"] {
            if let Some(t) = c.pointer(p).and_then(serde_json::Value::as_str) {
                out.push_str(t);
            }
        }
        for tc in c.pointer("/message/tool_calls").and_then(serde_json::Value::as_array).into_iter().flatten() {
            if let Some(t) = tc.pointer("/function/arguments").and_then(serde_json::Value::as_str) {
                out.push_str(t);
            }
        }
    }
    out
}
