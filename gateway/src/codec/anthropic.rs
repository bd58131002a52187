//! The Anthropic Messages client protocol: a canonical answer as Anthropic's JSON, stream deltas
//! as its event sequence, and its in-band error event.

use adapters::anthropic::convert::{part_json, stop_reason_str, usage_json};
use adapters::canonical::{Delta, FinishReason, Response, TokenCounts};
use bytes::Bytes;
use serde_json::{Value, json};

/// Canonical → Anthropic response.
pub fn response_from_canonical(r: &Response) -> Value {
    let content: Vec<Value> = r.content.iter().map(part_json).collect();
    json!({"id": r.id, "type": "message", "role": "assistant", "model": r.model, "content": content,
        "stop_reason": r.finish.map(stop_reason_str), "stop_sequence": r.stop_sequence,
        "usage": usage_json(&r.usage.unwrap_or_default())})
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
