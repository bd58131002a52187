//! Gemini answer types (`GenerateContentResponse`, its stream chunks, `usageMetadata`, error
//! bodies), as far as the adapter reads them. Gemini writes camelCase; its REST API also accepts
//! and some proxies write snake_case, so every field takes both (`alias`). Unknown fields are
//! ignored; a field of the wrong type makes the whole answer unreadable. Requests from Gemini
//! clients are read in [`super::convert`].

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

/// A `generateContent` answer, or one `streamGenerateContent` chunk (each is a whole response).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse {
    /// The candidates; the adapter reads the first.
    #[serde(default)]
    pub candidates: Option<Vec<Candidate>>,
    /// Set when the prompt itself was blocked.
    #[serde(default, alias = "prompt_feedback")]
    pub prompt_feedback: Option<PromptFeedback>,
    /// Token counts, cumulative over a stream. Kept as sent (it goes into the usage event for
    /// audit); read with [`UsageMetadata`].
    #[serde(default, alias = "usage_metadata")]
    pub usage_metadata: Option<Value>,
    /// The model that answered.
    #[serde(default, alias = "model_version")]
    pub model_version: Option<String>,
    /// The answer's id.
    #[serde(default, alias = "response_id")]
    pub response_id: Option<String>,
    /// An in-band error (a stream chunk `{"error": …}`).
    #[serde(default)]
    pub error: Option<InBandError>,
}

impl GenerateContentResponse {
    /// The first candidate.
    pub fn first(&self) -> Option<&Candidate> {
        self.candidates.as_ref().and_then(|c| c.first())
    }

    /// Whether the prompt itself was blocked (`promptFeedback.blockReason` is set).
    pub fn prompt_blocked(&self) -> bool {
        self.prompt_feedback.as_ref().is_some_and(|f| f.block_reason.is_some())
    }

    /// The first candidate's `finishReason`.
    pub fn finish_reason(&self) -> Option<&str> {
        self.first().and_then(|c| c.finish_reason.as_deref())
    }
}

/// One candidate answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// What the model said.
    #[serde(default)]
    pub content: Option<Content>,
    /// `STOP`, `MAX_TOKENS`, `SAFETY`, …
    #[serde(default, alias = "finish_reason")]
    pub finish_reason: Option<String>,
}

/// A candidate's content.
#[derive(Debug, Deserialize)]
pub struct Content {
    /// Its parts, in order.
    #[serde(default)]
    pub parts: Option<Vec<Part>>,
}

/// One part of an answer: text (a thought when `thought` is set), or a function call.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text.
    #[serde(default)]
    pub text: Option<String>,
    /// Whether the text is a thought summary.
    #[serde(default)]
    pub thought: Option<bool>,
    /// The opaque signature of the model's thinking, to be sent back in the next turn.
    #[serde(default, alias = "thought_signature")]
    pub thought_signature: Option<String>,
    /// A function call.
    #[serde(default, alias = "function_call")]
    pub function_call: Option<FunctionCall>,
}

/// A function call, always whole (Gemini never streams argument fragments).
#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    /// The call's id (newer models only).
    #[serde(default)]
    pub id: Option<String>,
    /// The function.
    #[serde(default)]
    pub name: Option<String>,
    /// Its arguments, an object.
    #[serde(default)]
    pub args: Option<Value>,
}

/// A `batchEmbedContents` answer: one embedding per request, in order.
#[derive(Debug, Deserialize)]
pub struct BatchEmbedContentsResponse {
    /// The embeddings.
    pub embeddings: Vec<ContentEmbedding>,
}

/// One embedding.
#[derive(Debug, Deserialize)]
pub struct ContentEmbedding {
    /// The vector.
    pub values: Vec<f64>,
}

/// Why a prompt was blocked.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback {
    /// `SAFETY`, `OTHER`, …; any value means blocked.
    #[serde(default, alias = "block_reason")]
    pub block_reason: Option<IgnoredAny>,
}

/// `usageMetadata`. Gemini counts cached tokens inside `promptTokenCount` and thoughts apart from
/// `candidatesTokenCount`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    /// The prompt, cached part included.
    #[serde(default, alias = "prompt_token_count")]
    pub prompt_token_count: Option<u64>,
    /// The cached part of the prompt.
    #[serde(default, alias = "cached_content_token_count")]
    pub cached_content_token_count: Option<u64>,
    /// The answer, thoughts excluded.
    #[serde(default, alias = "candidates_token_count")]
    pub candidates_token_count: Option<u64>,
    /// Thinking.
    #[serde(default, alias = "thoughts_token_count")]
    pub thoughts_token_count: Option<u64>,
    /// Tool-use prompt tokens, billed as prompt.
    #[serde(default, alias = "tool_use_prompt_token_count")]
    pub tool_use_prompt_token_count: Option<u64>,
}

/// The `error` member of an error body or an in-band stream error: an object, as Gemini writes
/// it, or anything else a broken upstream sends (still an error, without details).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum InBandError {
    /// `{"code": 429, "message": …, "status": "RESOURCE_EXHAUSTED", "details": […]}`.
    Object(ErrorObject),
    /// Any other non-null value.
    Other(IgnoredAny),
}

impl InBandError {
    /// The error object, when it is one.
    pub fn object(&self) -> Option<&ErrorObject> {
        match self {
            InBandError::Object(o) => Some(o),
            InBandError::Other(_) => None,
        }
    }
}

/// A non-2xx answer's body: `{"error": {…}}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// The error.
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

/// Google's error object.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorObject {
    /// The HTTP status, as a number.
    #[serde(default)]
    pub code: Option<Value>,
    /// The message.
    #[serde(default)]
    pub message: Option<String>,
    /// The canonical status name (`INVALID_ARGUMENT`, `RESOURCE_EXHAUSTED`, …).
    #[serde(default)]
    pub status: Option<String>,
    /// Typed details (`ErrorInfo` with a `reason`, `RetryInfo` with a `retryDelay`, …).
    #[serde(default)]
    pub details: Option<Vec<ErrorDetail>>,
}

impl ErrorObject {
    /// The details, none when absent.
    pub fn details(&self) -> &[ErrorDetail] {
        self.details.as_deref().unwrap_or_default()
    }
}

/// One error detail, as far as the adapter reads it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// `ErrorInfo.reason`: `API_KEY_INVALID`, …
    #[serde(default)]
    pub reason: Option<String>,
    /// `RetryInfo.retryDelay`: `"31s"`.
    #[serde(default, alias = "retry_delay")]
    pub retry_delay: Option<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::convert::{response_to_canonical, usage_from};
    use super::super::error::map;
    use super::super::stream::{Decoder, Step};
    use crate::FailureClass;
    use crate::canonical::{FinishReason, Part};

    #[test]
    fn snake_case_answers_read_as_camel_case_ones() {
        let camel = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hm", "thought": true, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "f", "args": {"x": 1}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 4, "candidatesTokenCount": 3,
                "thoughtsTokenCount": 2, "toolUsePromptTokenCount": 1},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        let snake = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hm", "thought": true, "thought_signature": "c2ln"},
            {"function_call": {"name": "f", "args": {"x": 1}}}]}, "finish_reason": "STOP"}],
            "usage_metadata": {"prompt_token_count": 10, "cached_content_token_count": 4, "candidates_token_count": 3,
                "thoughts_token_count": 2, "tool_use_prompt_token_count": 1},
            "model_version": "gemini-2.5-flash", "response_id": "r1"});
        let (a, b) = (response_to_canonical(&camel), response_to_canonical(&snake));
        assert_eq!((a.id.as_str(), a.model.as_str()), ("r1", "gemini-2.5-flash"));
        assert_eq!((&a.id, &a.model, a.finish, a.usage), (&b.id, &b.model, b.finish, b.usage));
        assert_eq!(a.finish, Some(FinishReason::ToolCalls));
        let t = a.usage.unwrap_or_default();
        assert_eq!((t.input, t.cached, t.output, t.reasoning), (7, 4, 5, 2));
        assert!(matches!(&b.content[0], Part::Thinking { signature: Some(s), .. } if s == "c2ln"));
        assert!(matches!(&b.content[1], Part::ToolUse { name, input, .. } if name == "f" && input["x"] == 1));
        assert_eq!(usage_from(&json!({"prompt_token_count": 5})).map(|t| t.input), Some(5));
        let blocked = json!({"prompt_feedback": {"block_reason": "SAFETY"}});
        assert_eq!(response_to_canonical(&blocked).finish, Some(FinishReason::ContentFilter));
    }

    #[test]
    fn stream_chunks_and_errors_read_in_either_case() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let chunk = br#"{"candidates":[{"content":{"parts":[{"text":"hi"}]},"finish_reason":"STOP"}],"usage_metadata":{"prompt_token_count":3,"candidates_token_count":1}}"#;
        assert_eq!(d.decode(chunk, &mut out), Step::More);
        assert!(d.finished());
        assert_eq!(d.usage.as_ref().map(|(t, _)| (t.input, t.output)), Some((3, 1)));
        assert_eq!(
            d.decode(br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#, &mut out),
            Step::Error(Some("RESOURCE_EXHAUSTED".into()))
        );
        assert_eq!(d.decode(br#"{"error":"overloaded"}"#, &mut out), Step::Error(None));
        assert_eq!(d.decode(b"[1]", &mut out), Step::Invalid);
        let retry = br#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retry_delay":"31.2s"}]}}"#;
        assert_eq!(map(429, None, retry).class, FailureClass::RateLimited { retry_after: Some(32) });
        assert_eq!(map(500, None, b"<html>").class, FailureClass::UpstreamServerError);
    }
}
