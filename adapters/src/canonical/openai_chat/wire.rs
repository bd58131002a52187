//! The parts of OpenAI's chat-completions request that a translation must understand. Unknown
//! top-level fields are collected in `extra` so that the converter can refuse the ones another
//! vendor cannot honour instead of dropping them silently.

use serde::Deserialize;
use serde_json::{Map, Value};

/// `POST /v1/chat/completions` body.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model.
    pub model: String,
    /// Conversation.
    pub messages: Vec<ChatMessage>,
    /// Tools.
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type":"function","function":{"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Whether several tool calls may come in one turn.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    /// Legacy output cap.
    #[serde(default)]
    pub max_tokens: Option<u64>,
    /// Output cap (reasoning included).
    #[serde(default)]
    pub max_completion_tokens: Option<u64>,
    /// Temperature.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default)]
    pub top_p: Option<f64>,
    /// One stop string or several.
    #[serde(default)]
    pub stop: Option<Stop>,
    /// `{"type":"text"|"json_object"|"json_schema",…}`.
    #[serde(default)]
    pub response_format: Option<Value>,
    /// `low`/`medium`/`high`.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Stream.
    #[serde(default)]
    pub stream: Option<bool>,
    /// End-user id.
    #[serde(default)]
    pub user: Option<String>,
    /// Number of choices.
    #[serde(default)]
    pub n: Option<u64>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `stop`: a string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// A message by role.
#[derive(Debug, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    /// System prompt.
    System {
        /// Text.
        content: Content,
    },
    /// System prompt (o-series name).
    Developer {
        /// Text.
        content: Content,
    },
    /// User turn.
    User {
        /// Text and images.
        content: Content,
    },
    /// Assistant turn.
    Assistant {
        /// Text (null when only tool calls).
        #[serde(default)]
        content: Option<Content>,
        /// Tool calls made.
        #[serde(default)]
        tool_calls: Option<Vec<ToolCall>>,
    },
    /// A tool result.
    Tool {
        /// Result text.
        content: Content,
        /// The call answered.
        tool_call_id: String,
    },
}

/// Message content: a string or parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<ContentPart>),
}

/// One content part.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// Image by URL or `data:` URL.
    ImageUrl {
        /// `{"url": …}`.
        image_url: ImageUrl,
    },
    /// Audio, files, …: not translatable.
    #[serde(other)]
    Other,
}

/// `image_url` object.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    /// `https://…` or `data:image/png;base64,…`.
    pub url: String,
}

/// An assistant tool call.
#[derive(Debug, Deserialize)]
pub struct ToolCall {
    /// Call id.
    pub id: String,
    /// The function.
    pub function: FunctionCall,
}

/// Name and JSON-text arguments.
#[derive(Debug, Deserialize)]
pub struct FunctionCall {
    /// Name.
    pub name: String,
    /// Arguments as JSON text.
    #[serde(default)]
    pub arguments: String,
}

/// A tool definition.
#[derive(Debug, Deserialize)]
pub struct ToolDef {
    /// The function.
    pub function: FunctionDef,
}

/// A function definition.
#[derive(Debug, Deserialize)]
pub struct FunctionDef {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema.
    #[serde(default)]
    pub parameters: Option<Value>,
}
