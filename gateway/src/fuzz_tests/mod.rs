//! Property tests ("fuzz targets") for everything that reads bytes a client or an upstream chose:
//! the request parser, the SSE parser, and every protocol conversion (OpenAI ⇄ canonical ⇄
//! Anthropic ⇄ Gemini, requests, responses and stream events). Each property says what must hold
//! for *any* input: no panic, a typed error with a bounded message, the same events whatever the
//! chunking, and the facts a round trip must keep (text, tool-call ids, usage counts).
//! No I/O here; the HTTP-level cases of the fault catalogue live in `tests/api`.
//!
//! They run with the normal test suite, bounded so the whole set takes a few seconds in a debug
//! build: each property has an explicit case count and a size bound on its inputs. To search
//! longer locally, raise the count with `PROPTEST_CASES`, e.g.
//! `PROPTEST_CASES=20000 cargo nextest run -p gateway -E 'test(/fuzz/)'` (or `--release` for
//! more cases per second). A failure prints the shrunk input; keep it as a plain regression test
//! beside the property before fixing it.

mod convert;
mod request;
mod sse;

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value};

/// The configuration of every property: `default_cases` unless `PROPTEST_CASES` says otherwise.
/// Failures are not persisted to files (this module lives in `src/`); the shrunk case is printed.
fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Keys the parsers and converters look for, so that generated objects reach past the first
/// type check; mixed with arbitrary keys.
const KEYS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "text",
    "type",
    "stream",
    "stream_options",
    "include_usage",
    "user",
    "metadata",
    "user_id",
    "tools",
    "tool_calls",
    "tool_call_id",
    "tool_use_id",
    "tool_choice",
    "function",
    "name",
    "arguments",
    "id",
    "index",
    "input",
    "parameters",
    "max_tokens",
    "n",
    "temperature",
    "top_p",
    "system",
    "image_url",
    "url",
    "source",
    "data",
    "media_type",
    "contents",
    "parts",
    "functionCall",
    "functionResponse",
    "args",
    "response",
    "generationConfig",
    "usage",
    "usageMetadata",
    "choices",
    "delta",
    "finish_reason",
    "candidates",
    "thinking",
    "signature",
    "partial_json",
    "error",
    "status",
    "response_format",
    "stop",
    "prompt_tokens",
    "completion_tokens",
    "input_tokens",
    "output_tokens",
    "promptTokenCount",
    "api_base",
];

/// String values the converters branch on, mixed with arbitrary text.
const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "model",
    "function",
    "text",
    "image",
    "image_url",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "auto",
    "none",
    "required",
    "any",
    "json_object",
    "json_schema",
    "stop",
    "length",
    "tool_calls",
    "end_turn",
    "STOP",
    "MAX_TOKENS",
    "SAFETY",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "message_delta",
    "message_stop",
    "text_delta",
    "input_json_delta",
    "error",
    "data:image/png;base64,AAAA",
    "low",
    "high",
    "base64",
    "url",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => proptest::sample::select(KEYS).prop_map(str::to_owned), 1 => "\\PC{0,6}"]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![2 => proptest::sample::select(WORDS).prop_map(str::to_owned), 3 => "\\PC{0,12}", 1 => "[ \n]{0,3}"]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        (0u64..5000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// Any JSON value of bounded depth and width, biased towards the shapes the code reads.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf =
        prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::Bool), number(), text().prop_map(Value::String),];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A JSON object (what every body and event is meant to be).
fn json_object() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::vec((key(), json_value()), 0..8).prop_map(|kv| kv.into_iter().collect())
}

/// Any byte string; most are not JSON, and many are not UTF-8.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}
