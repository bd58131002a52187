//! OpenAI chat stream chunks → canonical deltas. [`ChunkDecoder`] reads an OpenAI upstream's
//! chunks; writing chunks for an OpenAI client is the gateway's codec.
//! Pure state machines over bytes; the relay owns the I/O.

use serde_json::Value;

use super::convert::finish_from;
use crate::canonical::Delta;

/// Why a chunk could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkError {
    /// Not JSON.
    Invalid,
    /// An in-band `{"error":…}`.
    Upstream,
}

/// Reads OpenAI chunks into deltas, remembering which tool calls have started.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    started: bool,
    tools_started: Vec<usize>,
    /// The last usage object seen, as sent (for `raw_usage`).
    pub usage_raw: Option<Value>,
}

impl ChunkDecoder {
    /// Appends the deltas of one chunk to `out`.
    pub fn decode(&mut self, data: &[u8], out: &mut Vec<Delta>) -> Result<(), ChunkError> {
        let v: Value = serde_json::from_slice(data).map_err(|_| ChunkError::Invalid)?;
        // OpenAI and OpenRouter send `{"error":…}`; vLLM sends `{"object":"error",…}`.
        if v.get("error").is_some_and(|e| !e.is_null()) || v.get("object").and_then(Value::as_str) == Some("error") {
            return Err(ChunkError::Upstream);
        }
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        if !self.started {
            self.started = true;
            out.push(Delta::Start { id: s("/id"), model: s("/model") });
        }
        for choice in v.get("choices").and_then(Value::as_array).into_iter().flatten() {
            // Only the first choice is translated (n > 1 is refused before the call).
            if choice.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            let delta = choice.get("delta").unwrap_or(&Value::Null);
            if let Some(r) = delta.get("reasoning_content").and_then(Value::as_str).filter(|r| !r.is_empty()) {
                out.push(Delta::Thinking(r.to_owned()));
            }
            if let Some(t) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push(Delta::Text(t.to_owned()));
            }
            for tc in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                let index = usize::try_from(tc.get("index").and_then(Value::as_u64).unwrap_or(0)).unwrap_or(0);
                if !self.tools_started.contains(&index) {
                    self.tools_started.push(index);
                    let g = |p: &str| tc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
                    out.push(Delta::ToolCallStart { index, id: g("/id"), name: g("/function/name") });
                }
                if let Some(a) = tc.pointer("/function/arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) {
                    out.push(Delta::ToolCallArgs { index, json: a.to_owned() });
                }
            }
            if let Some(f) = choice.get("finish_reason").and_then(Value::as_str) {
                out.push(Delta::Finish { reason: finish_from(f), stop_sequence: None });
            }
        }
        // Usage is top-level, except Moonshot's, inside the last choice.
        let usage = v.get("usage").filter(|u| !u.is_null()).or_else(|| v.pointer("/choices/0/usage"));
        if let Some(u) = usage.filter(|u| !u.is_null())
            && let Some(t) = super::convert::usage_from(u)
        {
            self.usage_raw = Some(u.clone());
            out.push(Delta::Usage(t));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_tool_arguments_are_tracked_by_index() -> Result<(), ChunkError> {
        let mut d = ChunkDecoder::default();
        let mut out = Vec::new();
        d.decode(br#"{"id":"c","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"t0","type":"function","function":{"name":"a","arguments":""}}]}}]}"#, &mut out)?;
        d.decode(br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"t1","function":{"name":"b","arguments":"{\"y\""}}]}}]}"#, &mut out)?;
        d.decode(
            br#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            &mut out,
        )?;
        assert_eq!(
            out,
            vec![
                Delta::Start { id: "c".into(), model: "m".into() },
                Delta::ToolCallStart { index: 0, id: "t0".into(), name: "a".into() },
                Delta::ToolCallStart { index: 1, id: "t1".into(), name: "b".into() },
                Delta::ToolCallArgs { index: 1, json: "{\"y\"".into() },
                Delta::ToolCallArgs { index: 0, json: "{}".into() },
            ]
        );
        assert_eq!(d.decode(br#"{"error":{"message":"x"}}"#, &mut out), Err(ChunkError::Upstream));
        Ok(())
    }
}
