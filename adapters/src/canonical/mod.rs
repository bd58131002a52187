//! The canonical shape every client protocol and every upstream converts to and from when the two
//! sides speak different protocols: requests, responses and stream deltas. Pure data and pure
//! conversions; no I/O, no HTTP, no billing. A same-protocol call (OpenAI → OpenAI, Anthropic →
//! Anthropic) never goes through here: it is a pass-through.
//!
//! [`openai_chat`] holds OpenAI's chat-completions wire types and their conversions. They live here
//! rather than in `crate::openai` because that adapter is deliberately translation-free; OpenAI
//! chat is only *translated* when the other side is another vendor.

pub mod openai_chat;

use serde_json::Value;

pub use crate::usage::TokenCounts;

/// `max_tokens` sent to an upstream that requires one (Anthropic) when the client gave none
/// (stated in the crate docs). OpenAI's default is "up to the context window", which has no
/// portable equivalent; 4096 fits the output limit of every current Claude model.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// Who said a message. System text is kept apart in [`Request::system`]; tool results are parts
/// of a user message (Anthropic's model, which OpenAI's `tool` role maps onto losslessly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The end user (and tool results).
    User,
    /// The model.
    Assistant,
}

/// An image, inline or by URL.
#[derive(Debug, Clone, PartialEq)]
pub enum Image {
    /// Base64 bytes with their media type, e.g. `image/png`.
    Base64 {
        /// `image/png`, `image/jpeg`, …
        media_type: String,
        /// Base64 text without the `data:` prefix.
        data: String,
    },
    /// A URL the upstream fetches itself.
    Url(String),
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Plain text.
    Text(String),
    /// An image.
    Image(Image),
    /// A tool call made by the assistant; `input` is a JSON object.
    ToolUse {
        /// Call id, echoed by the matching [`Part::ToolResult`].
        id: String,
        /// Tool name.
        name: String,
        /// Arguments.
        input: Value,
    },
    /// The result of a tool call, sent back by the user side.
    ToolResult {
        /// The call it answers.
        tool_use_id: String,
        /// Text and images.
        content: Vec<Part>,
        /// Whether the tool failed.
        is_error: bool,
    },
    /// Visible reasoning, with the upstream's signature when it has one (Anthropic needs it back).
    Thinking {
        /// The reasoning text.
        text: String,
        /// Anthropic's signature.
        signature: Option<String>,
    },
    /// Reasoning the upstream encrypted (Anthropic `redacted_thinking`).
    RedactedThinking(String),
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: Vec<Part>,
}

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    /// Name.
    pub name: String,
    /// What it does.
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
}

/// How the model must use tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// The model decides.
    Auto,
    /// No tool calls.
    None,
    /// At least one tool call (OpenAI `required`, Anthropic `any`).
    Required,
    /// This tool.
    Tool(String),
}

/// The output format asked for.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema.
    JsonSchema {
        /// Schema name.
        name: String,
        /// The schema.
        schema: Value,
    },
}

/// Extended thinking / reasoning effort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reasoning {
    /// Anthropic's `budget_tokens`.
    pub budget_tokens: u64,
}

impl Reasoning {
    /// From OpenAI's `reasoning_effort` (`minimal`/`low`/`medium`/`high`). The budgets are
    /// Anthropic's documented minimum (1024) and its guide's "medium" and "large" examples.
    pub fn from_effort(effort: &str) -> Option<Reasoning> {
        let budget_tokens = match effort {
            "minimal" | "low" => 1024,
            "medium" => 8192,
            "high" => 24576,
            _ => return None,
        };
        Some(Reasoning { budget_tokens })
    }

    /// The OpenAI `reasoning_effort` closest to this budget.
    pub fn effort(self) -> &'static str {
        match self.budget_tokens {
            0..4096 => "low",
            4096..16384 => "medium",
            _ => "high",
        }
    }
}

/// A chat request in canonical form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    /// The model asked for.
    pub model: String,
    /// System prompt pieces, in order.
    pub system: Vec<String>,
    /// The conversation.
    pub messages: Vec<Message>,
    /// Callable tools.
    pub tools: Vec<Tool>,
    /// Tool policy.
    pub tool_choice: Option<ToolChoice>,
    /// `false` = at most one tool call per turn.
    pub parallel_tool_calls: Option<bool>,
    /// Output cap.
    pub max_tokens: Option<u64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling (Anthropic only).
    pub top_k: Option<u64>,
    /// Stop sequences.
    pub stop: Vec<String>,
    /// Output format.
    pub response_format: ResponseFormat,
    /// Extended thinking.
    pub reasoning: Option<Reasoning>,
    /// Streamed answer.
    pub stream: bool,
    /// End-user id for the upstream's abuse tracking.
    pub user: Option<String>,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Natural end of turn.
    Stop,
    /// Hit `max_tokens`.
    Length,
    /// Hit one of the stop sequences.
    StopSequence,
    /// Wants tool results.
    ToolCalls,
    /// Refused or filtered.
    ContentFilter,
}

/// A complete (non-stream) answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// Upstream id.
    pub id: String,
    /// Model served.
    pub model: String,
    /// Text, thinking and tool calls, in order.
    pub content: Vec<Part>,
    /// Why it stopped.
    pub finish: Option<FinishReason>,
    /// The stop sequence hit, when known.
    pub stop_sequence: Option<String>,
    /// Usage as the upstream billed it.
    pub usage: Option<TokenCounts>,
}

/// One step of a streamed answer. Tool calls are numbered 0, 1, … in the order they start
/// (OpenAI's `tool_calls[].index`), whatever block numbering the upstream uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Delta {
    /// The answer's id and model, once at the start.
    Start {
        /// Upstream id.
        id: String,
        /// Model served.
        model: String,
    },
    /// More text.
    Text(String),
    /// More reasoning.
    Thinking(String),
    /// The signature closing a thinking block.
    ThinkingSignature(String),
    /// A tool call begins.
    ToolCallStart {
        /// Tool-call number.
        index: usize,
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// More JSON of a tool call's arguments.
    ToolCallArgs {
        /// Tool-call number.
        index: usize,
        /// A fragment of the arguments' JSON text.
        json: String,
    },
    /// Generation stopped.
    Finish {
        /// Why.
        reason: FinishReason,
        /// The stop sequence hit.
        stop_sequence: Option<String>,
    },
    /// Usage so far; later values replace earlier ones (cumulative, never added).
    Usage(TokenCounts),
}

/// A request a target protocol cannot carry, named by the client's field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    /// The client's field path.
    pub param: String,
    /// Why.
    pub message: String,
}

impl Unsupported {
    /// A field the upstream cannot honour.
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Unsupported { param: param.into(), message: message.into() }
    }
}

/// Splits a `data:` URL (`data:image/png;base64,AAAA`) into an inline image; other URLs stay URLs.
pub fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:")
        && let Some((meta, data)) = rest.split_once(',')
        && let Some(media_type) = meta.strip_suffix(";base64")
    {
        return Image::Base64 { media_type: media_type.to_owned(), data: data.to_owned() };
    }
    Image::Url(url.to_owned())
}

/// The `data:` URL of an inline image, or the URL itself.
pub fn image_to_url(image: &Image) -> String {
    match image {
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        Image::Url(u) => u.clone(),
    }
}

/// The text of parts, joined (tool results carried as text to protocols without rich results).
pub fn joined_text(parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
    }
    out
}
