//! Anthropic Messages API request types (`POST /v1/messages`, version `2023-06-01`), as far as a
//! translation must understand them. Responses and stream events are read as JSON values in
//! [`super::convert`] and [`super::stream`]: they are only parsed when translated.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The `anthropic-version` we speak upstream.
pub const VERSION: &str = "2023-06-01";

/// `POST /v1/messages` body.
#[derive(Debug, Deserialize)]
pub struct MessagesRequest {
    /// Model.
    pub model: String,
    /// Conversation.
    pub messages: Vec<InMessage>,
    /// System prompt.
    #[serde(default)]
    pub system: Option<System>,
    /// Output cap (required by Anthropic; optional when translated to OpenAI).
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// `{"user_id": …}`.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Stop sequences.
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    /// Stream.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Top-k.
    #[serde(default)]
    pub top_k: Option<u64>,
    /// Tools.
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    /// Tool policy.
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    /// Extended thinking.
    #[serde(default)]
    pub thinking: Option<Thinking>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `metadata`.
#[derive(Debug, Deserialize)]
pub struct Metadata {
    /// End-user id.
    #[serde(default)]
    pub user_id: Option<String>,
}

/// `system`: a string or text blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum System {
    /// Plain.
    Text(String),
    /// Blocks (with `cache_control`, ignored when translated).
    Blocks(Vec<TextBlock>),
}

/// A text block of `system`.
#[derive(Debug, Deserialize)]
pub struct TextBlock {
    /// The text.
    pub text: String,
}

/// A message.
#[derive(Debug, Deserialize)]
pub struct InMessage {
    /// `user` or `assistant`.
    pub role: InRole,
    /// Content.
    pub content: Content,
}

/// Roles.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum InRole {
    /// User.
    User,
    /// Assistant.
    Assistant,
}

/// Content: a string or blocks.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain.
    Text(String),
    /// Blocks.
    Blocks(Vec<Block>),
}

/// A content block.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// An image.
    Image {
        /// Where it comes from.
        source: ImageSource,
    },
    /// A tool call.
    ToolUse {
        /// Id.
        id: String,
        /// Name.
        name: String,
        /// Arguments.
        #[serde(default)]
        input: Value,
    },
    /// A tool result.
    ToolResult {
        /// The call answered.
        tool_use_id: String,
        /// Text or blocks.
        #[serde(default)]
        content: Option<Content>,
        /// Failed.
        #[serde(default)]
        is_error: Option<bool>,
    },
    /// Reasoning.
    Thinking {
        /// Text.
        thinking: String,
        /// Signature.
        #[serde(default)]
        signature: Option<String>,
    },
    /// Encrypted reasoning.
    RedactedThinking {
        /// Opaque.
        data: String,
    },
    /// Documents, search results, server tools: not translatable.
    #[serde(other)]
    Other,
}

/// Image source.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    /// Inline.
    Base64 {
        /// `image/png`, …
        media_type: String,
        /// Base64.
        data: String,
    },
    /// By URL.
    Url {
        /// The URL.
        url: String,
    },
    /// Files API and others.
    #[serde(other)]
    Other,
}

/// A tool definition (client tools; server tools have a `type` and no `input_schema`).
#[derive(Debug, Deserialize)]
pub struct ToolDef {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema.
    #[serde(default)]
    pub input_schema: Option<Value>,
}

/// `tool_choice`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    /// Model decides.
    Auto {
        /// One call at most.
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    /// Some tool.
    Any {
        /// One call at most.
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    /// This tool.
    Tool {
        /// Name.
        name: String,
        /// One call at most.
        #[serde(default)]
        disable_parallel_tool_use: Option<bool>,
    },
    /// No tools.
    None,
}

/// `thinking`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    /// On, with a budget.
    Enabled {
        /// Tokens.
        budget_tokens: u64,
    },
    /// Off.
    Disabled,
}
