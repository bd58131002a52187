//! Token counts: `count_tokens` answers, and estimates for responses whose upstream reported no
//! usage. Here: which text of a request counts and which BPE counts it; `bounded` keeps the work
//! bounded whatever the text, `pool` runs it off the runtime. The BPE tables load lazily, once
//! per process, on the first count. Only counting here; no billing decisions.

mod bounded;
mod pool;
#[cfg(test)]
mod sample_text;

use std::sync::atomic::AtomicBool;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

pub use bounded::Cancelled;
pub use bounded::EXACT_BUDGET_BYTES;
use pool::OnDrop;

use crate::request::Endpoint;

/// Tokens OpenAI adds per chat message for the role and separators (their cookbook's figure).
const TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens that prime every chat reply.
const TOKENS_PER_REPLY: u64 = 3;

fn bpe_for(model: &str) -> &'static CoreBPE {
    // o200k for the GPT-4o generation and later; cl100k for everything else (GPT-4, GPT-3.5 and
    // most OpenAI-compatible vendors, whose own tokenizers we cannot load).
    let m = model.to_ascii_lowercase();
    if m.starts_with("gpt-4o") || m.starts_with("gpt-4.1") || m.starts_with("gpt-5") || m.starts_with('o') {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// The prompt tokens of a request body for a `count_tokens` answer, counted on the counting
/// pool. Dropping the future (the client went away) stops the count. `None` only on a bug of ours
/// (the counting task panicked).
pub async fn count_prompt(endpoint: Endpoint, model: String, body: bytes::Bytes) -> Option<u64> {
    pool::run(OnDrop::Cancel, move |cancel| prompt_tokens_cancellable(endpoint, &model, &body, cancel).ok())
        .await
        .flatten()
}

/// Runs `work` — the parse of a body about to be counted — on the counting pool rather than on
/// the async runtime: parsing a 32 MiB body into a JSON tree takes a tenth of a second or more
/// of CPU, which would stall every other request on that runtime thread. Dropping the future
/// (the client went away) does not stop a parse already running, but it is bounded by the body
/// limit. `None` only if the work panicked.
pub async fn on_pool<T, F>(work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    pool::run(OnDrop::Cancel, move |_| work()).await
}

/// Estimated `(input, output)` tokens of a call whose upstream reported no usage: the request
/// body's prompt and the answer's text. Always a number: it is finished even if the client has
/// gone (the client is still billed), and if counting fails the byte bound is used, so a
/// non-empty prompt is never free.
pub async fn estimate(endpoint: Endpoint, model: String, body: bytes::Bytes, output: String) -> (u64, u64) {
    let fallback = (bounded::fallback(body.len()), bounded::fallback(output.len()));
    pool::run(OnDrop::Finish, move |_| (prompt_tokens(endpoint, &model, &body), count(&model, &output)))
        .await
        .unwrap_or(fallback)
}

/// The tokens of `bytes` bytes of text that was not kept, by the documented bytes-per-token bound
/// (four bytes per token, rounded up).
pub fn by_bytes(bytes: usize) -> u64 {
    bounded::fallback(bytes)
}

/// Tokens in `text` for `model`, bounded in work (see `bounded`); never 0 for a non-empty text.
pub fn count(model: &str, text: &str) -> u64 {
    let never = AtomicBool::new(false);
    bounded::count(bpe_for(model), text, &never).unwrap_or_else(|Cancelled| bounded::fallback(text.len()))
}

/// Estimated prompt tokens of a request body (the client's JSON). A body that is not JSON counts
/// by the byte bound.
pub fn prompt_tokens(endpoint: Endpoint, model: &str, body: &[u8]) -> u64 {
    let never = AtomicBool::new(false);
    prompt_tokens_cancellable(endpoint, model, body, &never).unwrap_or_else(|Cancelled| bounded::fallback(body.len()))
}

fn prompt_tokens_cancellable(
    endpoint: Endpoint,
    model: &str,
    body: &[u8],
    cancel: &AtomicBool,
) -> Result<u64, Cancelled> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return Ok(bounded::fallback(body.len())) };
    let mut text = String::new();
    let mut extra = 0u64;
    match endpoint {
        Endpoint::Messages => {
            collect_text(v.get("system"), &mut text);
            if let Some(messages) = v.get("messages").and_then(Value::as_array) {
                extra += TOKENS_PER_REPLY;
                for m in messages {
                    extra += TOKENS_PER_MESSAGE;
                    collect_content(m.get("content"), &mut text);
                }
            }
            if let Some(tools) = v.get("tools") {
                text.push_str(&tools.to_string());
            }
        }
        Endpoint::ChatCompletions => {
            if let Some(messages) = v.get("messages").and_then(Value::as_array) {
                extra += TOKENS_PER_REPLY;
                for m in messages {
                    extra += TOKENS_PER_MESSAGE;
                    collect_text(m.get("content"), &mut text);
                    if let Some(name) = m.get("name").and_then(Value::as_str) {
                        text.push_str(name);
                    }
                }
            }
        }
        Endpoint::GenerateContent => {
            let system = v.get("systemInstruction").or_else(|| v.get("system_instruction"));
            collect_text(system.and_then(|s| s.get("parts")), &mut text);
            for c in v.get("contents").and_then(Value::as_array).into_iter().flatten() {
                extra += TOKENS_PER_MESSAGE;
                for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
                    match p.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        // Function calls and responses count by their JSON.
                        None => text.push_str(&p.to_string()),
                    }
                }
            }
            if let Some(tools) = v.get("tools") {
                text.push_str(&tools.to_string());
            }
        }
        Endpoint::Completions => collect_text(v.get("prompt"), &mut text),
        Endpoint::Embeddings => match v.get("input") {
            // Pre-tokenised input: one token per integer.
            Some(Value::Array(items)) if items.iter().all(Value::is_number) => extra += items.len() as u64,
            Some(Value::Array(items)) if items.iter().all(Value::is_array) => {
                extra += items.iter().filter_map(Value::as_array).map(|a| a.len() as u64).sum::<u64>();
            }
            other => collect_text(other, &mut text),
        },
    }
    Ok(bounded::count(bpe_for(model), &text, cancel)? + extra)
}

/// Like [`collect_text`], also reading tool calls and tool results inside Anthropic blocks.
fn collect_content(v: Option<&Value>, out: &mut String) {
    collect_text(v, out);
    for block in v.and_then(Value::as_array).into_iter().flatten() {
        if let Some(input) = block.get("input") {
            out.push_str(&input.to_string());
        }
        if block.get("type").and_then(Value::as_str) == Some("tool_result") {
            collect_text(block.get("content"), out);
        }
    }
}

/// Appends the text of a string, an array of strings, or an array of content parts.
fn collect_text(v: Option<&Value>, out: &mut String) {
    match v {
        Some(Value::String(s)) => {
            out.push_str(s);
            out.push('\n');
        }
        Some(Value::Array(items)) => {
            for item in items {
                match item {
                    Value::String(s) => {
                        out.push_str(s);
                        out.push('\n');
                    }
                    Value::Object(o) => {
                        if let Some(t) = o.get("text").and_then(Value::as_str) {
                            out.push_str(t);
                            out.push('\n');
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_chat_prompt_with_message_overhead() {
        let body = br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hello world"}]}"#;
        let n = prompt_tokens(Endpoint::ChatCompletions, "gpt-4o", body);
        assert_eq!(n, count("gpt-4o", "Hello world\n") + TOKENS_PER_MESSAGE + TOKENS_PER_REPLY);
        assert!(n > TOKENS_PER_MESSAGE + TOKENS_PER_REPLY);
        assert_eq!(count("gpt-4o", ""), 0);
    }
}

#[cfg(test)]
mod measurements {
    use std::time::Duration;

    use super::*;
    use crate::tokenizer::sample_text::{mixed, thread_cpu};

    /// The whole counting path of a 32 MiB request body (JSON parse, text collection, bounded
    /// count), as `count_tokens` runs it, for BENCHMARKS.md:
    /// `cargo test --release -p gateway --lib -- --ignored --nocapture thirty_two`.
    #[test]
    #[ignore = "a measurement, meaningful only in a release build"]
    fn thirty_two_mib_request_bodies_are_counted_in_under_a_second_of_cpu() {
        let texts =
            [("mixed text", mixed(32 << 20, 21)), ("one word", "a".repeat(32 << 20)), ("spaces", " ".repeat(32 << 20))];
        for (kind, text) in texts {
            let body = serde_json::to_vec(&serde_json::json!({
                "model": "claude-sonnet-4-5", "max_tokens": 1,
                "messages": [{"role": "user", "content": text}],
            }))
            .unwrap_or_default();
            let before = thread_cpu();
            let n = prompt_tokens(Endpoint::Messages, "claude-sonnet-4-5", &body);
            let cpu = thread_cpu() - before;
            eprintln!("body with {kind}: {} bytes -> {n} tokens in {cpu:?} of CPU", body.len());
            assert!(cpu < Duration::from_secs(1), "{kind}: {cpu:?}");
        }
    }
}
