//! The OpenAI chat-completions client protocol: answers made elsewhere (a translated vendor
//! answer, its stream deltas) written as OpenAI's JSON and `data:` chunks.

use adapters::canonical::openai_chat::convert::{finish_str, usage_json};
use adapters::canonical::{Delta, Part, Response, TokenCounts};
use bytes::Bytes;
use serde_json::{Value, json};

/// Canonical → OpenAI chat response.
pub fn response_from_canonical(r: &Response, created: i64) -> Value {
    let text: String =
        r.content.iter().filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None }).collect();
    let reasoning: String = r
        .content
        .iter()
        .filter_map(|p| if let Part::Thinking { text, .. } = p { Some(text.as_str()) } else { None })
        .collect();
    let calls: Vec<Value> = r
        .content
        .iter()
        .filter_map(|p| match p {
            Part::ToolUse { id, name, input } => Some(json!({"id": id, "type": "function",
                "function": {"name": name, "arguments": input.to_string()}})),
            _ => None,
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() {
        Value::Null } else { Value::String(text) }, "refusal": null});
    if !reasoning.is_empty() {
        message["reasoning_content"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let mut out = json!({"id": r.id, "object": "chat.completion", "created": created, "model": r.model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
            "finish_reason": r.finish.map(finish_str)}]});
    if let Some(u) = &r.usage {
        out["usage"] = usage_json(u);
    }
    out
}

/// Writes OpenAI chunks (`data: {…}\n\n`) from deltas.
#[derive(Debug)]
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: i64,
    role_sent: bool,
    client_wants_usage: bool,
    usage: Option<TokenCounts>,
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

impl ChunkEncoder {
    /// An encoder for a client that did (or did not) ask for the usage chunk.
    pub fn new(created: i64, client_wants_usage: bool) -> Self {
        ChunkEncoder {
            id: String::new(),
            model: String::new(),
            created,
            role_sent: false,
            client_wants_usage,
            usage: None,
        }
    }

    fn chunk(&mut self, mut delta: Value, finish: Option<&str>) -> Bytes {
        if !self.role_sent {
            self.role_sent = true;
            delta["role"] = json!("assistant");
        }
        frame(&json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}))
    }

    /// Appends the frames for one delta.
    pub fn encode(&mut self, d: Delta, out: &mut Vec<Bytes>) {
        match d {
            Delta::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Delta::Text(t) => out.push(self.chunk(json!({"content": t}), None)),
            Delta::Thinking(t) => out.push(self.chunk(json!({"reasoning_content": t}), None)),
            Delta::ThinkingSignature(_) => {}
            Delta::ToolCallStart { index, id, name } => {
                let tc = json!([{"index": index, "id": id, "type": "function",
                    "function": {"name": name, "arguments": ""}}]);
                out.push(self.chunk(json!({"content": null, "tool_calls": tc}), None));
            }
            Delta::ToolCallArgs { index, json } => {
                let tc = json!([{"index": index, "function": {"arguments": json}}]);
                out.push(self.chunk(json!({"tool_calls": tc}), None));
            }
            Delta::Finish { reason, .. } => out.push(self.chunk(json!({}), Some(finish_str(reason)))),
            Delta::Usage(t) => self.usage = Some(t),
        }
    }

    /// The usage-only chunk, when the client asked for it and usage is known.
    pub fn usage_frame(&self) -> Option<Bytes> {
        let u = self.usage.as_ref().filter(|_| self.client_wants_usage)?;
        Some(frame(&json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage_json(u)})))
    }
}
