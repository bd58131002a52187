//! The parts of OpenAI responses the gateway reads: the model, the usage object and, only for
//! estimates, the generated text. Everything else passes through untouched.

use std::borrow::Cow;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// A string borrowed from the input when it has no escapes (serde only borrows a bare
/// `Cow<str>`, never one inside an `Option`).
pub struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// The head of a non-stream response (chat, completions, embeddings).
#[derive(Deserialize)]
pub struct ResponseHead<'a> {
    /// The model served.
    #[serde(default, borrow)]
    pub model: Option<Text<'a>>,
    /// The usage object.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
    /// Present on error bodies sent with a 200.
    #[serde(default)]
    pub error: Option<IgnoredAny>,
}

/// One streamed chunk. Parsing it allocates nothing in the usual case (one choice, text without
/// escapes): the text is borrowed from the chunk.
#[derive(Deserialize)]
pub struct ChunkView<'a> {
    /// The model served.
    #[serde(default, borrow)]
    pub model: Option<Text<'a>>,
    /// Choices; empty on the usage-only chunk.
    #[serde(default, borrow)]
    pub choices: Option<Choices<'a>>,
    /// The usage object, on the final chunk when `include_usage` is set.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
    /// An in-band error (OpenAI, OpenRouter: `{"error":{…}}` in a data line after HTTP 200).
    #[serde(default, borrow)]
    pub error: Option<&'a RawValue>,
    /// `"error"` on vLLM's in-band errors (`{"object":"error","message":…}`).
    #[serde(default, borrow)]
    pub object: Option<Text<'a>>,
}

/// What the gateway needs from `choices`: how many, and their generated text.
#[derive(Default)]
pub struct Choices<'a> {
    /// Number of choices in the chunk.
    pub len: usize,
    /// Their text (chat `delta.content` / `delta.reasoning_content`, completions `text`).
    pub text: Option<Cow<'a, str>>,
    /// A usage object inside a choice (Moonshot puts it there on the last chunk).
    pub usage: Option<&'a RawValue>,
}

impl<'a> Choices<'a> {
    fn add(&mut self, piece: Option<Text<'a>>) {
        let Some(Text(piece)) = piece else { return };
        self.text = Some(match self.text.take() {
            None => piece,
            Some(prev) => Cow::Owned(prev.into_owned() + &piece),
        });
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Choices<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Choices::default();
                while let Some(c) = seq.next_element::<ChoiceView<'a>>()? {
                    out.len += 1;
                    if let Some(d) = c.delta {
                        out.add(d.content);
                        out.add(d.reasoning_content);
                    }
                    out.add(c.text);
                    out.usage = out.usage.or(c.usage);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// One choice of a chunk (chat `delta` or completions `text`).
#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaView<'a>>,
    #[serde(default, borrow)]
    text: Option<Text<'a>>,
    #[serde(default, borrow)]
    usage: Option<&'a RawValue>,
}

/// A chat delta.
#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(default, borrow)]
    content: Option<Text<'a>>,
    /// Reasoning text some vendors stream (DeepSeek, Qwen).
    #[serde(default, borrow)]
    reasoning_content: Option<Text<'a>>,
}

impl ChunkView<'_> {
    /// Appends the chunk's generated text to `out` (for estimates).
    pub fn collect_text(&self, out: &mut String) {
        if let Some(t) = self.choices.as_ref().and_then(|c| c.text.as_deref()) {
            out.push_str(t);
        }
    }

    /// Whether the chunk is an in-band error in either shape vendors use.
    pub fn is_error(&self) -> bool {
        self.error.is_some() || self.object.as_deref() == Some("error")
    }

    /// The chunk's usage: top-level (OpenAI), else inside a choice (Moonshot).
    pub fn usage(&self) -> Option<&RawValue> {
        self.usage.or_else(|| self.choices.as_ref().and_then(|c| c.usage))
    }

    /// Whether this is the usage-only chunk (`choices: []` with a usage object).
    pub fn is_usage_only(&self) -> bool {
        self.usage.is_some() && self.choices.as_ref().is_none_or(|c| c.len == 0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_text_is_borrowed_and_usage_only_chunks_are_recognised() -> Result<(), serde_json::Error> {
        let c: ChunkView<'_> =
            serde_json::from_str(r#"{"model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]}"#)?;
        assert!(matches!(c.choices.as_ref().and_then(|c| c.text.as_ref()), Some(Cow::Borrowed("Hi"))));
        assert!(!c.is_usage_only());
        let two: ChunkView<'_> = serde_json::from_str(r#"{"choices":[{"text":"a"},{"text":"b"}]}"#)?;
        let mut out = String::new();
        two.collect_text(&mut out);
        assert_eq!(out, "ab");
        let u: ChunkView<'_> = serde_json::from_str(r#"{"choices":[],"usage":{"prompt_tokens":1}}"#)?;
        assert!(u.is_usage_only());
        Ok(())
    }

    #[test]
    fn vendor_error_shapes_and_usage_inside_a_choice_are_recognised() -> Result<(), serde_json::Error> {
        let openrouter: ChunkView<'_> = serde_json::from_str(r#"{"error":{"code":502,"message":"Provider down"}}"#)?;
        assert!(openrouter.is_error());
        let vllm: ChunkView<'_> = serde_json::from_str(r#"{"object":"error","message":"boom","code":500}"#)?;
        assert!(vllm.is_error());
        let fine: ChunkView<'_> = serde_json::from_str(r#"{"object":"chat.completion.chunk","choices":[]}"#)?;
        assert!(!fine.is_error());
        let moonshot: ChunkView<'_> = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop","usage":{"prompt_tokens":3}}]}"#,
        )?;
        assert_eq!(moonshot.usage().map(RawValue::get), Some(r#"{"prompt_tokens":3}"#));
        assert!(!moonshot.is_usage_only());
        Ok(())
    }
}
