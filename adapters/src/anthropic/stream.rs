//! Anthropic's streaming events ⇄ canonical deltas. [`Decoder`] reads an Anthropic upstream
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`, `ping`, `error`);
//! [`Encoder`] writes that event sequence for an Anthropic client of another vendor's stream.
//! `message_delta` usage is cumulative: it *replaces* the counts of `message_start` field by
//! field ([`CumulativeUsage`]), it is never added to them.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::convert::{JSON_TOOL, stop_reason_from, stop_reason_str, usage_from, usage_json};
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

/// One SSE frame `event: <type>\ndata: <json>\n\n`.
pub fn frame(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// The in-band error event.
pub fn error_frame(kind: &str, message: &str) -> Bytes {
    frame("error", &json!({"type": "error", "error": {"type": kind, "message": message}}))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

/// Writes Anthropic's event sequence from deltas: one `message_start` (then a `ping`), blocks
/// opened and closed as the kind of content changes, and at the end `message_delta` with the
/// stop reason and the final usage; `message_stop` is left to the caller, after billing.
#[derive(Debug, Default)]
pub struct Encoder {
    started: bool,
    open: Option<(Open, usize)>,
    next_block: usize,
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<(FinishReason, Option<String>)>,
    usage: TokenCounts,
}

impl Encoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<Bytes>) {
        self.started = true;
        out.push(frame(
            "message_start",
            &json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
                "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(&self.usage)}}),
        ));
        out.push(frame("ping", &json!({"type": "ping"})));
    }

    fn close(&mut self, out: &mut Vec<Bytes>) {
        if let Some((_, index)) = self.open.take() {
            out.push(frame("content_block_stop", &json!({"type": "content_block_stop", "index": index})));
        }
    }

    fn open(&mut self, kind: Open, block: Value, out: &mut Vec<Bytes>) -> usize {
        if let Some((k, i)) = self.open
            && k == kind
        {
            return i;
        }
        self.close(out);
        let index = self.next_block;
        self.next_block += 1;
        out.push(frame(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        ));
        self.open = Some((kind, index));
        index
    }

    fn delta(index: usize, delta: Value) -> Bytes {
        frame("content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": delta}))
    }

    /// Appends the frames for one delta.
    pub fn encode(&mut self, d: Delta, out: &mut Vec<Bytes>) {
        if !self.started {
            match &d {
                Delta::Start { id, model } => {
                    let (id, model) = (id.clone(), model.clone());
                    self.start(&id, &model, out);
                    return;
                }
                // Usage known before the start goes into `message_start`.
                Delta::Usage(t) => {
                    self.usage = *t;
                    return;
                }
                _ => self.start("", "", out),
            }
        }
        match d {
            Delta::Start { .. } => {}
            Delta::Text(t) => {
                let i = self.open(Open::Text, json!({"type": "text", "text": ""}), out);
                out.push(Self::delta(i, json!({"type": "text_delta", "text": t})));
            }
            Delta::Thinking(t) => {
                let i = self.open(Open::Thinking, json!({"type": "thinking", "thinking": ""}), out);
                out.push(Self::delta(i, json!({"type": "thinking_delta", "thinking": t})));
            }
            Delta::ThinkingSignature(s) => {
                if let Some((Open::Thinking, i)) = self.open {
                    out.push(Self::delta(i, json!({"type": "signature_delta", "signature": s})));
                }
            }
            Delta::ToolCallStart { index, id, name } => {
                let block = json!({"type": "tool_use", "id": id, "name": name, "input": {}});
                let b = self.open(Open::Tool(index), block, out);
                self.tool_blocks.push((index, b));
            }
            Delta::ToolCallArgs { index, json } => {
                // Arguments for a call whose block was already closed still go to its index; the
                // SDKs accumulate by index.
                if let Some(&(_, b)) = self.tool_blocks.iter().find(|(t, _)| *t == index) {
                    out.push(Self::delta(b, json!({"type": "input_json_delta", "partial_json": json})));
                }
            }
            Delta::Finish { reason, stop_sequence } => self.finish = Some((reason, stop_sequence)),
            Delta::Usage(t) => self.usage = t,
        }
    }

    /// Closes the open block and writes `message_delta` (stop reason and cumulative usage).
    pub fn end(&mut self, out: &mut Vec<Bytes>) {
        if !self.started {
            self.start("", "", out);
        }
        self.close(out);
        let (reason, seq) = self.finish.take().unwrap_or((FinishReason::Stop, None));
        out.push(frame(
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason_str(reason), "stop_sequence": seq},
                "usage": usage_json(&self.usage)}),
        ));
    }

    /// The final event.
    pub fn stop_frame() -> Bytes {
        frame("message_stop", &json!({"type": "message_stop"}))
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn openai_tool_call_deltas_become_one_tool_use_block_each_with_input_json_deltas() {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        for d in [
            Delta::Start { id: "chatcmpl-1".into(), model: "gpt-4o".into() },
            Delta::Text("Checking.".into()),
            Delta::ToolCallStart { index: 0, id: "call_a".into(), name: "get_weather".into() },
            Delta::ToolCallArgs { index: 0, json: "{\"location\":".into() },
            Delta::ToolCallArgs { index: 0, json: "\"Paris\"}".into() },
            Delta::ToolCallStart { index: 1, id: "call_b".into(), name: "get_time".into() },
            Delta::ToolCallArgs { index: 1, json: "{}".into() },
            Delta::Finish { reason: FinishReason::ToolCalls, stop_sequence: None },
            Delta::Usage(TokenCounts { input: 20, cached: 5, cache_write: 0, output: 12, reasoning: 0 }),
        ] {
            e.encode(d, &mut out);
        }
        e.end(&mut out);
        out.push(Encoder::stop_frame());
        let events: Vec<(String, Value)> = out
            .iter()
            .filter_map(|f| {
                let text = std::str::from_utf8(f).ok()?;
                let (head, data) = text.split_once("\ndata: ")?;
                Some((head.trim_start_matches("event: ").to_owned(), serde_json::from_str(data.trim()).ok()?))
            })
            .collect();
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(
            events[5].1["content_block"],
            json!({"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}})
        );
        assert_eq!(events[7].1["delta"], json!({"type": "input_json_delta", "partial_json": "\"Paris\"}"}));
        assert_eq!(events[10].1["index"], 2);
        assert_eq!(events[12].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(
            events[12].1["usage"],
            json!({"input_tokens": 20, "output_tokens": 12, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5})
        );
    }
}
