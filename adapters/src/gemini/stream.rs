//! Gemini `streamGenerateContent?alt=sse` → canonical deltas (the encoding for a Gemini client is
//! the gateway's codec). Every SSE event is a whole
//! `GenerateContentResponse`; there is no `[DONE]`: the stream ends when the connection closes,
//! after a chunk with a `finishReason`. `usageMetadata` is cumulative (the last one counts).
//! Function calls arrive whole, never as argument fragments.

use serde_json::Value;

use super::convert::{call_id_prefix, candidate_parts, finish_from, usage_from};
use super::wire::GenerateContentResponse;
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
        let Ok(mut v) = serde_json::from_slice::<GenerateContentResponse>(data) else { return Step::Invalid };
        if let Some(e) = v.error.take() {
            return Step::Error(e.object().and_then(|o| o.status.clone()));
        }
        let usage = v.usage_metadata.take().and_then(|u| usage_from(&u).map(|t| (t, u)));
        if !self.started {
            self.started = true;
            // The first usage goes before the start, so that a client protocol announcing usage
            // at the start (Anthropic's `message_start`) has the prompt count.
            if let Some((t, _)) = &usage {
                out.push(Delta::Usage(*t));
            }
            let id = v.response_id.take().unwrap_or_default();
            out.push(Delta::Start { id, model: v.model_version.take().unwrap_or_default() });
        }
        if v.prompt_blocked() {
            self.blocked = true;
        }
        if let Some(f) = v.finish_reason() {
            self.finish = Some(f.to_owned());
        }
        let mut parts = Vec::new();
        let mut index = self.calls;
        candidate_parts(v, &mut self.calls, &self.id_prefix, &mut parts);
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
        if let Some((t, u)) = usage {
            self.usage = Some((t, u));
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
}
