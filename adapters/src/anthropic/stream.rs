//! Anthropic's streaming events → canonical deltas. [`Decoder`] reads an Anthropic upstream
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`);
//! writing that event sequence for an Anthropic client is the gateway's codec.
//! `message_delta` usage is cumulative: it *replaces* the counts of `message_start` field by
//! field ([`CumulativeUsage`]), it is never added to them.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::convert::{JSON_TOOL, stop_reason_from, usage_from};
use crate::canonical::{Delta, FinishReason, TokenCounts};
use crate::openai::wire::Text;

/// The usage of a stream so far: `message_start`'s object, with every field that a later
/// `message_delta` carries assigned over it.
#[derive(Debug, Default, Clone)]
pub struct CumulativeUsage {
    fields: Map<String, Value>,
}

impl CumulativeUsage {
    /// Assigns the fields of `usage` (an Anthropic usage object).
    pub fn assign(&mut self, usage: &Value) {
        if let Some(o) = usage.as_object() {
            for (k, v) in o {
                if !v.is_null() {
                    self.fields.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Assigns the fields of a usage object still in its raw form.
    pub fn assign_raw(&mut self, usage: &RawValue) {
        if let Ok(v) = serde_json::from_str::<Value>(usage.get()) {
            self.assign(&v);
        }
    }

    /// Counts and the raw object, once any usage was seen.
    pub fn get(&self) -> Option<(TokenCounts, Value)> {
        let raw = Value::Object(self.fields.clone());
        usage_from(&raw).map(|t| (t, raw))
    }
}

/// One event's data as a pass-through relay reads it: strings borrowed from the event in the
/// usual case, usage objects left raw (only `message_start` and `message_delta` carry one).
#[derive(Deserialize)]
pub struct EventView<'a> {
    /// The event type (equal to the SSE `event:` name).
    #[serde(rename = "type", borrow)]
    pub kind: Text<'a>,
    /// `message_start`'s message.
    #[serde(default, borrow)]
    pub message: Option<MessageView<'a>>,
    /// `message_delta`'s cumulative usage.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
    /// `content_block_delta`'s delta (and `message_delta`'s, whose fields are not read here).
    #[serde(default, borrow)]
    pub delta: Option<DeltaView<'a>>,
    /// `error`'s error.
    #[serde(default, borrow)]
    pub error: Option<ErrorView<'a>>,
}

/// The message of `message_start`.
#[derive(Deserialize)]
pub struct MessageView<'a> {
    /// Model served.
    #[serde(default, borrow)]
    pub model: Option<Text<'a>>,
    /// Usage so far.
    #[serde(default, borrow)]
    pub usage: Option<&'a RawValue>,
}

/// A content delta's generated text, whichever kind.
#[derive(Deserialize)]
pub struct DeltaView<'a> {
    /// `text_delta`.
    #[serde(default, borrow)]
    pub text: Option<Text<'a>>,
    /// `thinking_delta`.
    #[serde(default, borrow)]
    pub thinking: Option<Text<'a>>,
    /// `input_json_delta`.
    #[serde(default, borrow)]
    pub partial_json: Option<Text<'a>>,
}

impl DeltaView<'_> {
    /// The text this delta adds (for token estimates).
    pub fn text(&self) -> Option<&str> {
        self.text.as_deref().or(self.thinking.as_deref()).or(self.partial_json.as_deref())
    }
}

/// The error of an `error` event.
#[derive(Deserialize)]
pub struct ErrorView<'a> {
    /// `overloaded_error`, `api_error`, …
    #[serde(rename = "type", default, borrow)]
    pub kind: Option<Text<'a>>,
}

/// What an event means for the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep reading.
    More,
    /// `message_stop`: the answer is complete.
    Stop,
    /// An in-band `error` event.
    Error,
    /// Not an Anthropic event.
    Invalid,
}

/// The type of an event's data, and the parts the relay needs without translating.
pub fn event_type(v: &Value) -> &str {
    v.get("type").and_then(Value::as_str).unwrap_or_default()
}

/// Reads Anthropic events into deltas.
#[derive(Debug, Default)]
pub struct Decoder {
    /// Usage so far.
    pub usage: CumulativeUsage,
    /// Anthropic block index → canonical tool-call number.
    tool_blocks: Vec<(u64, usize)>,
    /// The block of the JSON-mode tool, whose arguments are the answer's text.
    json_block: Option<u64>,
}

impl Decoder {
    /// Appends the deltas of one event's data to `out`.
    pub fn decode(&mut self, v: &Value, out: &mut Vec<Delta>) -> Step {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        match event_type(v) {
            "message_start" => {
                out.push(Delta::Start { id: s("/message/id"), model: s("/message/model") });
                if let Some(u) = v.pointer("/message/usage") {
                    self.usage.assign(u);
                    if let Some((t, _)) = self.usage.get() {
                        out.push(Delta::Usage(t));
                    }
                }
            }
            "content_block_start" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match v.pointer("/content_block/type").and_then(Value::as_str) {
                    Some("tool_use") if s("/content_block/name") == JSON_TOOL => self.json_block = Some(index),
                    Some("tool_use") => {
                        let n = self.tool_blocks.len();
                        self.tool_blocks.push((index, n));
                        out.push(Delta::ToolCallStart {
                            index: n,
                            id: s("/content_block/id"),
                            name: s("/content_block/name"),
                        });
                    }
                    Some("text") => {
                        let t = s("/content_block/text");
                        if !t.is_empty() {
                            out.push(Delta::Text(t));
                        }
                    }
                    Some("thinking") => {
                        let t = s("/content_block/thinking");
                        if !t.is_empty() {
                            out.push(Delta::Thinking(t));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                match v.pointer("/delta/type").and_then(Value::as_str) {
                    Some("text_delta") => out.push(Delta::Text(s("/delta/text"))),
                    Some("thinking_delta") => out.push(Delta::Thinking(s("/delta/thinking"))),
                    Some("signature_delta") => out.push(Delta::ThinkingSignature(s("/delta/signature"))),
                    Some("input_json_delta") if self.json_block == Some(index) => {
                        out.push(Delta::Text(s("/delta/partial_json")));
                    }
                    Some("input_json_delta") => {
                        let json = s("/delta/partial_json");
                        // Anthropic opens every tool block with an empty fragment; it carries nothing.
                        if json.is_empty() {
                            return Step::More;
                        }
                        if let Some(&(_, n)) = self.tool_blocks.iter().find(|(b, _)| *b == index) {
                            out.push(Delta::ToolCallArgs { index: n, json });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    let stop_sequence = v.pointer("/delta/stop_sequence").and_then(Value::as_str).map(str::to_owned);
                    let reason = match stop_reason_from(r) {
                        // The forced JSON-mode call is the answer, not a request for tool results.
                        FinishReason::ToolCalls if self.json_block.is_some() && self.tool_blocks.is_empty() => {
                            FinishReason::Stop
                        }
                        other => other,
                    };
                    out.push(Delta::Finish { reason, stop_sequence });
                }
                if let Some(u) = v.get("usage") {
                    self.usage.assign(u);
                    if let Some((t, _)) = self.usage.get() {
                        out.push(Delta::Usage(t));
                    }
                }
            }
            "message_stop" => return Step::Stop,
            "error" => return Step::Error,
            "content_block_stop" | "ping" => {}
            // Unknown event types are skipped, as Anthropic's versioning policy asks of clients.
            "" => return Step::Invalid,
            _ => {}
        }
        Step::More
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn message_delta_usage_replaces_message_start_usage_field_by_field() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        d.decode(
            &json!({"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {
                "input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4,
                "output_tokens": 1}}}),
            &mut out,
        );
        d.decode(
            &json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 15}}),
            &mut out,
        );
        d.decode(&json!({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 20}}), &mut out);
        let (t, raw) = d.usage.get().unwrap_or_default();
        assert_eq!(t, TokenCounts { input: 10, cached: 4, cache_write: 3, output: 20, reasoning: 0 });
        assert_eq!(raw["output_tokens"], 20);
        assert_eq!(d.decode(&json!({"type": "message_stop"}), &mut out), Step::Stop);
    }
}
