//! Gemini `streamGenerateContent?alt=sse` ⇄ canonical deltas. Every SSE event is a whole
//! `GenerateContentResponse`; there is no `[DONE]`: the stream ends when the connection closes,
//! after a chunk with a `finishReason`. `usageMetadata` is cumulative (the last one counts).
//! Function calls arrive whole, never as argument fragments.

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

use super::convert::{
    call_id_prefix, candidate_parts, finish_from, finish_str, part_json, prompt_blocked, usage_from, usage_json,
};
use crate::canonical::{Delta, FinishReason, Part, TokenCounts};

/// What a chunk meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Keep reading.
    More,
    /// An in-band `{"error":…}`, with its status (`RESOURCE_EXHAUSTED`, …).
    Error(Option<String>),
    /// Not a Gemini chunk.
    Invalid,
}

/// Reads Gemini chunks into deltas.
#[derive(Debug)]
pub struct Decoder {
    started: bool,
    calls: usize,
    id_prefix: String,
    finish: Option<String>,
    blocked: bool,
    /// The last usage seen: counts and the object as sent.
    pub usage: Option<(TokenCounts, Value)>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder { started: false, calls: 0, id_prefix: call_id_prefix(), finish: None, blocked: false, usage: None }
    }
}

impl Decoder {
    /// Appends the deltas of one chunk to `out`. The finish reason is held until [`Decoder::end`],
    /// since Gemini may send usage after it.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Step {
        let Ok(v) = serde_json::from_slice::<Value>(data) else { return Step::Invalid };
        if !v.is_object() {
            return Step::Invalid;
        }
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            return Step::Error(e.get("status").and_then(Value::as_str).map(str::to_owned));
        }
        if !self.started {
            self.started = true;
            // The first usage goes before the start, so that a client protocol announcing usage
            // at the start (Anthropic's `message_start`) has the prompt count.
            if let Some(t) = v.get("usageMetadata").and_then(usage_from) {
                out.push(Delta::Usage(t));
            }
            let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            out.push(Delta::Start { id: s("responseId"), model: s("modelVersion") });
        }
        let mut parts = Vec::new();
        let mut index = self.calls;
        candidate_parts(&v, &mut self.calls, &self.id_prefix, &mut parts);
        for p in parts {
            match p {
                Part::Text(t) if !t.is_empty() => out.push(Delta::Text(t)),
                Part::Thinking { text, signature } => {
                    if !text.is_empty() {
                        out.push(Delta::Thinking(text));
                    }
                    if let Some(s) = signature {
                        out.push(Delta::ThinkingSignature(s));
                    }
                }
                Part::ToolUse { id, name, input } => {
                    out.push(Delta::ToolCallStart { index, id, name });
                    out.push(Delta::ToolCallArgs { index, json: input.to_string() });
                    index += 1;
                }
                _ => {}
            }
        }
        if prompt_blocked(&v) {
            self.blocked = true;
        }
        if let Some(f) = v.pointer("/candidates/0/finishReason").and_then(Value::as_str) {
            self.finish = Some(f.to_owned());
        }
        if let Some(u) = v.get("usageMetadata").filter(|u| !u.is_null())
            && let Some(t) = usage_from(u)
        {
            self.usage = Some((t, u.clone()));
            out.push(Delta::Usage(t));
        }
        Step::More
    }

    /// Whether the answer is complete (a finish reason or a blocked prompt was seen), which is
    /// how a closed connection is told apart from a cut one.
    pub fn finished(&self) -> bool {
        self.finish.is_some() || self.blocked
    }

    /// The final delta, once the connection has closed.
    pub fn end(&mut self, out: &mut Vec<Delta>) {
        let reason = if self.blocked {
            FinishReason::ContentFilter
        } else {
            finish_from(self.finish.as_deref().unwrap_or("STOP"), self.calls > 0)
        };
        out.push(Delta::Finish { reason, stop_sequence: None });
    }
}

/// One SSE frame as Gemini writes them (`data: …` and a CRLF blank line).
pub fn sse_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 10);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\r\n\r\n");
    b.freeze()
}

/// The error a Gemini stream ends with, in Gemini's error shape.
pub fn error_payload(code: u16, status: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"error": {"code": code, "message": message, "status": status}})).unwrap_or_default()
}

/// How chunks reach a Gemini client: SSE (`alt=sse`, what the SDKs ask for) or, without
/// `alt=sse`, one JSON array written element by element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `data: {…}\r\n\r\n` per chunk.
    Sse,
    /// `[{…}\r\n,{…}\r\n]`.
    JsonArray,
}

/// Writes chunks in a client's framing, remembering whether the array has opened.
#[derive(Debug)]
pub struct Framer {
    framing: Framing,
    opened: bool,
}

impl Framer {
    /// A framer for `framing`.
    pub fn new(framing: Framing) -> Self {
        Framer { framing, opened: false }
    }

    /// One chunk.
    pub fn chunk(&mut self, payload: &[u8]) -> Bytes {
        match self.framing {
            Framing::Sse => sse_frame(payload),
            Framing::JsonArray => {
                let mut b = BytesMut::with_capacity(payload.len() + 3);
                b.put_u8(if self.opened { b',' } else { b'[' });
                self.opened = true;
                b.put_slice(payload);
                b.put_slice(b"\r\n");
                b.freeze()
            }
        }
    }

    /// What closes the answer (the array's `]`; nothing for SSE).
    pub fn close(&mut self) -> Option<Bytes> {
        match self.framing {
            Framing::Sse => None,
            Framing::JsonArray if self.opened => Some(Bytes::from_static(b"]")),
            Framing::JsonArray => {
                self.opened = true;
                Some(Bytes::from_static(b"[]"))
            }
        }
    }
}

/// Writes Gemini chunks from deltas. Text and thoughts go out as they come; a function call goes
/// out whole once its arguments are complete (when the next call starts or the answer ends),
/// since Gemini clients expect parsed `args`. The last chunk carries the finish reason and usage.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    model: String,
    /// (call number, id, name, arguments JSON so far)
    pending: Vec<(usize, String, String, String)>,
    finish: Option<FinishReason>,
    usage: Option<TokenCounts>,
    /// The client's framing.
    pub framer: Framer,
}

impl Encoder {
    /// An encoder writing in `framing`.
    pub fn new(framing: Framing) -> Self {
        Encoder {
            id: String::new(),
            model: String::new(),
            pending: Vec::new(),
            finish: None,
            usage: None,
            framer: Framer::new(framing),
        }
    }

    fn chunk(&mut self, parts: Vec<Value>, finish: Option<FinishReason>, out: &mut Vec<Bytes>) {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            candidate["finishReason"] = json!(finish_str(f));
        }
        let mut v = json!({"candidates": [candidate], "modelVersion": self.model, "responseId": self.id});
        if let Some(u) = &self.usage {
            v["usageMetadata"] = usage_json(u);
        }
        let payload = serde_json::to_vec(&v).unwrap_or_default();
        out.push(self.framer.chunk(&payload));
    }

    fn flush_calls(&mut self) -> Vec<Value> {
        self.pending
            .drain(..)
            .filter_map(|(_, id, name, args)| {
                let input = if args.trim().is_empty() {
                    json!({})
                } else {
                    serde_json::from_str(&args).unwrap_or_else(|_| json!({"input": args}))
                };
                part_json(&Part::ToolUse { id, name, input })
            })
            .collect()
    }

    /// Appends the frames for one delta.
    pub fn encode(&mut self, d: Delta, out: &mut Vec<Bytes>) {
        match d {
            Delta::Start { id, model } => {
                self.id = id;
                self.model = model;
            }
            Delta::Text(t) => self.chunk(vec![json!({"text": t})], None, out),
            Delta::Thinking(t) => self.chunk(vec![json!({"text": t, "thought": true})], None, out),
            Delta::ThinkingSignature(_) => {}
            Delta::ToolCallStart { index, id, name } => {
                let ready = self.flush_calls();
                if !ready.is_empty() {
                    self.chunk(ready, None, out);
                }
                self.pending.push((index, id, name, String::new()));
            }
            Delta::ToolCallArgs { index, json } => {
                if let Some(p) = self.pending.iter_mut().find(|p| p.0 == index) {
                    p.3.push_str(&json);
                }
            }
            Delta::Finish { reason, .. } => self.finish = Some(reason),
            Delta::Usage(t) => self.usage = Some(t),
        }
    }

    /// The last chunk: pending calls, the finish reason and the usage.
    pub fn end(&mut self, out: &mut Vec<Bytes>) {
        let parts = self.flush_calls();
        let finish = self.finish.take().unwrap_or(FinishReason::Stop);
        self.chunk(parts, Some(finish), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_become_deltas_with_whole_calls_and_the_last_usage() {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let chunks = [
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Let me","thought":true}]}}],"usageMetadata":{"promptTokenCount":9},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hi"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1}}"#,
            r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{"a":1}}},{"functionCall":{"name":"g","args":{}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":3}}"#,
        ];
        for c in chunks {
            assert_eq!(d.decode(c.as_bytes(), &mut out), Step::More);
        }
        assert!(d.finished());
        d.end(&mut out);
        assert!(matches!(&out[0], Delta::Usage(t) if t.input == 9));
        assert!(matches!(&out[1], Delta::Start { id, model } if id == "r1" && model == "gemini-2.5-flash"));
        assert_eq!(out[2], Delta::Thinking("Let me".into()));
        let calls: Vec<(usize, &str)> = out
            .iter()
            .filter_map(|d| match d {
                Delta::ToolCallStart { index, name, .. } => Some((*index, name.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(calls, [(0, "f"), (1, "g")]);
        assert_eq!(out.last(), Some(&Delta::Finish { reason: FinishReason::ToolCalls, stop_sequence: None }));
        assert_eq!(
            d.usage.as_ref().map(|u| u.0),
            Some(TokenCounts { input: 9, cached: 0, cache_write: 0, output: 7, reasoning: 3 })
        );
        assert_eq!(
            d.decode(br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#, &mut out),
            Step::Error(Some("RESOURCE_EXHAUSTED".into()))
        );
        assert_eq!(d.decode(b"not json", &mut out), Step::Invalid);
    }

    #[test]
    fn streamed_arguments_go_out_as_one_parsed_call() {
        let mut e = Encoder::new(Framing::Sse);
        let mut out = Vec::new();
        for d in [
            Delta::Start { id: "msg_1".into(), model: "claude".into() },
            Delta::Text("ok".into()),
            Delta::ToolCallStart { index: 0, id: "t0".into(), name: "f".into() },
            Delta::ToolCallArgs { index: 0, json: "{\"a\":".into() },
            Delta::ToolCallArgs { index: 0, json: "1}".into() },
            Delta::Finish { reason: FinishReason::ToolCalls, stop_sequence: None },
            Delta::Usage(TokenCounts { input: 5, cached: 2, cache_write: 0, output: 4, reasoning: 0 }),
        ] {
            e.encode(d, &mut out);
        }
        e.end(&mut out);
        let chunks: Vec<Value> = out
            .iter()
            .filter_map(|f| {
                let s = std::str::from_utf8(f).ok()?;
                assert!(s.ends_with("\r\n\r\n"));
                serde_json::from_str(s.trim_start_matches("data: ").trim()).ok()
            })
            .collect();
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[1]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"], json!({"a": 1}));
        assert_eq!(chunks[1]["candidates"][0]["finishReason"], "STOP");
        assert_eq!(chunks[1]["usageMetadata"]["promptTokenCount"], 7);
        assert_eq!(chunks[1]["usageMetadata"]["cachedContentTokenCount"], 2);
    }

    #[test]
    fn array_framing_opens_and_closes_the_array() {
        let mut f = Framer::new(Framing::JsonArray);
        let mut all = Vec::new();
        all.extend_from_slice(&f.chunk(b"{\"a\":1}"));
        all.extend_from_slice(&f.chunk(b"{\"b\":2}"));
        all.extend_from_slice(&f.close().unwrap_or_default());
        let v: Value = serde_json::from_slice(&all).unwrap_or_default();
        assert_eq!(v, json!([{"a": 1}, {"b": 2}]));
        assert_eq!(Framer::new(Framing::JsonArray).close(), Some(Bytes::from_static(b"[]")));
    }
}
