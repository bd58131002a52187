//! The Gemini client protocol: a canonical answer as a `GenerateContentResponse`, stream deltas
//! as chunks in the client's framing (SSE or a JSON array), and Gemini's error payload.

use adapters::canonical::{Delta, FinishReason, Part, Response, TokenCounts};
use adapters::gemini::convert::{finish_str, part_json, usage_json};
use bytes::{BufMut, Bytes, BytesMut};
use serde_json::{Value, json};

/// Gemini's status name for an HTTP status (what its error bodies carry in `status`).
pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

/// Canonical → Gemini response.
pub fn response_from_canonical(r: &Response) -> Value {
    let parts: Vec<Value> = r.content.iter().filter_map(part_json).collect();
    let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
    if let Some(f) = r.finish {
        candidate["finishReason"] = json!(finish_str(f));
    }
    let mut out = json!({"candidates": [candidate], "modelVersion": r.model, "responseId": r.id});
    if let Some(u) = &r.usage {
        out["usageMetadata"] = usage_json(u);
    }
    out
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
    use adapters::gemini;

    use super::*;

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

    #[test]
    fn a_canonical_answer_goes_out_in_geminis_shape() {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hmm", "thought": true}, {"functionCall": {"name": "f", "args": {"x": 1}}}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        let r = gemini::convert::response_to_canonical(&v);
        let back = response_from_canonical(&r);
        assert_eq!(back["candidates"][0]["finishReason"], "STOP");
        assert_eq!(back["candidates"][0]["content"]["parts"][0], json!({"text": "hmm", "thought": true}));
    }
}
