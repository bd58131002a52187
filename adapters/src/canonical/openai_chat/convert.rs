//! OpenAI chat ⇄ canonical: requests both ways, responses both ways, usage in OpenAI's shape.
//! Pure functions. Fields another vendor cannot honour are refused with [`Unsupported`] unless
//! dropping them is harmless (listed in [`DROPPED_FIELDS`]).

use serde_json::{Map, Value, json};

use super::wire::{ChatMessage, ChatRequest, Content, ContentPart, Stop};
use crate::canonical::{
    FinishReason, Message, Part, Reasoning, Request, Response, ResponseFormat, Role, TokenCounts, Tool, ToolChoice,
    Unsupported, image_from_url, image_to_url, joined_text,
};

/// Top-level fields dropped when translating, because they change nothing the client can observe
/// in the answer: storage and dashboard hints (`store`, `metadata`, `service_tier`), and `seed`
/// (best-effort determinism that other vendors do not offer; the answer is still valid).
pub const DROPPED_FIELDS: &[&str] = &["store", "metadata", "service_tier", "seed"];

/// Fields that are harmless at their default value and refused otherwise.
fn check_extra(extra: &Map<String, Value>) -> Result<(), Unsupported> {
    for (k, v) in extra {
        // `stream_options` is the gateway's own business (it always reads the upstream's usage).
        let harmless = DROPPED_FIELDS.contains(&k.as_str())
            || k == "stream_options"
            || v.is_null()
            || match k.as_str() {
                "logprobs" => v == &Value::Bool(false),
                "frequency_penalty" | "presence_penalty" => v.as_f64() == Some(0.0),
                "logit_bias" => v.as_object().is_some_and(Map::is_empty),
                "modalities" => v == &json!(["text"]),
                _ => false,
            };
        if !harmless {
            return Err(Unsupported::new(k.clone(), format!("'{k}' is not supported by this model's provider.")));
        }
    }
    Ok(())
}

fn parts_of(content: Content, param: &str) -> Result<Vec<Part>, Unsupported> {
    match content {
        Content::Text(t) => Ok(vec![Part::Text(t)]),
        Content::Parts(parts) => parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| match p {
                ContentPart::Text { text } => Ok(Part::Text(text)),
                ContentPart::ImageUrl { image_url } => Ok(Part::Image(image_from_url(&image_url.url))),
                ContentPart::Other => Err(Unsupported::new(
                    format!("{param}[{i}].type"),
                    "Only text and image content parts are supported by this model's provider.",
                )),
            })
            .collect(),
    }
}

fn push(messages: &mut Vec<Message>, role: Role, mut content: Vec<Part>) {
    // Consecutive turns of one role are merged: Anthropic wants tool results of one assistant turn
    // in a single user message, and OpenAI sends them as separate `tool` messages.
    match messages.last_mut() {
        Some(last) if last.role == role => last.content.append(&mut content),
        _ => messages.push(Message { role, content }),
    }
}

/// OpenAI request → canonical.
pub fn request_to_canonical(req: ChatRequest) -> Result<Request, Unsupported> {
    check_extra(&req.extra)?;
    if req.n.is_some_and(|n| n > 1) {
        return Err(Unsupported::new("n", "Only one choice (n = 1) is supported by this model's provider."));
    }
    let mut system = Vec::new();
    let mut messages = Vec::new();
    for (i, m) in req.messages.into_iter().enumerate() {
        let param = format!("messages[{i}].content");
        match m {
            ChatMessage::System { content } | ChatMessage::Developer { content } => {
                let parts = parts_of(content, &param)?;
                if parts.iter().any(|p| !matches!(p, Part::Text(_))) {
                    return Err(Unsupported::new(param, "A system message may only contain text."));
                }
                system.push(joined_text(&parts));
            }
            ChatMessage::User { content } => push(&mut messages, Role::User, parts_of(content, &param)?),
            ChatMessage::Assistant { content, tool_calls } => {
                // Earlier turns' reasoning is not sent back: Anthropic ignores previous-turn
                // thinking, and a block without its signature would be refused.
                let mut parts = match content {
                    Some(c) => parts_of(c, &param)?,
                    None => Vec::new(),
                };
                parts.retain(|p| !matches!(p, Part::Text(t) if t.is_empty()));
                for (j, tc) in tool_calls.into_iter().flatten().enumerate() {
                    let input = if tc.function.arguments.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&tc.function.arguments).map_err(|_| {
                            Unsupported::new(
                                format!("messages[{i}].tool_calls[{j}].function.arguments"),
                                "Tool call arguments must be a JSON object.",
                            )
                        })?
                    };
                    parts.push(Part::ToolUse { id: tc.id, name: tc.function.name, input });
                }
                push(&mut messages, Role::Assistant, parts);
            }
            ChatMessage::Tool { content, tool_call_id } => {
                let content = parts_of(content, &param)?;
                push(
                    &mut messages,
                    Role::User,
                    vec![Part::ToolResult { tool_use_id: tool_call_id, content, is_error: false }],
                );
            }
        }
    }
    let tools = req
        .tools
        .into_iter()
        .flatten()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t.function.parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    let tool_choice = match req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => return Err(Unsupported::new("tool_choice", "Unknown tool_choice.")),
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Tool(name.to_owned())),
            None => return Err(Unsupported::new("tool_choice", "Unknown tool_choice.")),
        },
    };
    let response_format = match req.response_format {
        None | Some(Value::Null) => ResponseFormat::Text,
        Some(v) => match v.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => ResponseFormat::JsonSchema {
                name: v.pointer("/json_schema/name").and_then(Value::as_str).unwrap_or("response").to_owned(),
                schema: v.pointer("/json_schema/schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            },
            _ => return Err(Unsupported::new("response_format.type", "Unknown response_format type.")),
        },
    };
    let reasoning = match req.reasoning_effort.as_deref() {
        None => None,
        Some(e) => Some(
            Reasoning::from_effort(e)
                .ok_or_else(|| Unsupported::new("reasoning_effort", "Unknown reasoning_effort."))?,
        ),
    };
    Ok(Request {
        model: req.model,
        system,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: None,
        stop: match req.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) => v,
        },
        response_format,
        reasoning,
        stream: req.stream.unwrap_or(false),
        user: req.user,
    })
}

fn content_json(parts: &[&Part]) -> Value {
    if let [Part::Text(t)] = parts {
        return Value::String(t.clone());
    }
    Value::Array(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text(t) => Some(json!({"type": "text", "text": t})),
                Part::Image(img) => Some(json!({"type": "image_url", "image_url": {"url": image_to_url(img)}})),
                _ => None,
            })
            .collect(),
    )
}

/// Canonical → OpenAI request body (always asking for the usage chunk when streaming, since the
/// gateway bills from it).
pub fn request_from_canonical(r: &Request) -> Result<Value, Unsupported> {
    if r.top_k.is_some() {
        return Err(Unsupported::new("top_k", "'top_k' is not supported by this model's provider."));
    }
    let mut messages = Vec::new();
    if !r.system.is_empty() {
        messages.push(json!({"role": "system", "content": r.system.join("\n\n")}));
    }
    for m in &r.messages {
        match m.role {
            Role::User => {
                let mut rest = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult { tool_use_id, content, is_error: _ } => {
                            // OpenAI tool results are text only; images in a result are dropped
                            // with a placeholder rather than refused, since the text is kept.
                            let mut text = joined_text(content);
                            if content.iter().any(|c| matches!(c, Part::Image(_))) {
                                text.push_str("\n[image omitted]");
                            }
                            messages.push(json!({"role": "tool", "tool_call_id": tool_use_id, "content": text}));
                        }
                        Part::Text(_) | Part::Image(_) => rest.push(p),
                        _ => {}
                    }
                }
                if !rest.is_empty() {
                    messages.push(json!({"role": "user", "content": content_json(&rest)}));
                }
            }
            Role::Assistant => {
                let text: Vec<&str> = m
                    .content
                    .iter()
                    .filter_map(|p| if let Part::Text(t) = p { Some(t.as_str()) } else { None })
                    .collect();
                let calls: Vec<Value> = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::ToolUse { id, name, input } => Some(json!({"id": id, "type": "function",
                            "function": {"name": name, "arguments": input.to_string()}})),
                        _ => None,
                    })
                    .collect();
                let mut msg = json!({"role": "assistant",
                    "content": if text.is_empty() { Value::Null } else { Value::String(text.concat()) }});
                if !calls.is_empty() {
                    msg["tool_calls"] = Value::Array(calls);
                }
                messages.push(msg);
            }
        }
    }
    let mut out = json!({"model": r.model, "messages": messages});
    if !r.tools.is_empty() {
        out["tools"] = r
            .tools
            .iter()
            .map(|t| {
                let mut f = json!({"name": t.name, "parameters": t.parameters});
                if let Some(d) = &t.description {
                    f["description"] = json!(d);
                }
                json!({"type": "function", "function": f})
            })
            .collect();
        if let Some(p) = r.parallel_tool_calls {
            out["parallel_tool_calls"] = json!(p);
        }
    }
    if let Some(tc) = &r.tool_choice {
        out["tool_choice"] = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(n) => json!({"type": "function", "function": {"name": n}}),
        };
    }
    if let Some(n) = r.max_tokens {
        out["max_tokens"] = json!(n);
    }
    if let Some(t) = r.temperature {
        out["temperature"] = json!(t);
    }
    if let Some(p) = r.top_p {
        out["top_p"] = json!(p);
    }
    if !r.stop.is_empty() {
        out["stop"] = json!(r.stop);
    }
    match &r.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => out["response_format"] = json!({"type": "json_object"}),
        ResponseFormat::JsonSchema { name, schema } => {
            out["response_format"] = json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema}});
        }
    }
    if let Some(reasoning) = r.reasoning {
        out["reasoning_effort"] = json!(reasoning.effort());
    }
    if r.stream {
        out["stream"] = json!(true);
        out["stream_options"] = json!({"include_usage": true});
    }
    if let Some(u) = &r.user {
        out["user"] = json!(u);
    }
    Ok(out)
}

/// OpenAI's name for a finish reason.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::StopSequence => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

/// A finish reason from OpenAI's name.
pub fn finish_from(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Usage in OpenAI's shape: cached and cache-write tokens are *inside* `prompt_tokens`,
/// reasoning inside `completion_tokens`.
/// Sums saturate: the counts come from an upstream, and a hostile one must not wrap them (or, in a
/// debug build, panic).
pub fn usage_json(t: &TokenCounts) -> Value {
    let prompt = t.input.saturating_add(t.cached).saturating_add(t.cache_write);
    json!({"prompt_tokens": prompt, "completion_tokens": t.output, "total_tokens": prompt.saturating_add(t.output),
        "prompt_tokens_details": {"cached_tokens": t.cached},
        "completion_tokens_details": {"reasoning_tokens": t.reasoning}})
}

/// Usage from an OpenAI usage object.
pub fn usage_from(v: &Value) -> Option<TokenCounts> {
    let raw = serde_json::value::to_raw_value(v).ok()?;
    crate::usage::from_openai(&raw).map(|(t, _)| t)
}

/// Tool-call arguments text → JSON (a non-JSON text is kept as a string so nothing is lost).
pub fn arguments_value(args: &str) -> Value {
    if args.trim().is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.to_owned()))
}

/// OpenAI chat response → canonical (first choice).
pub fn response_to_canonical(v: &Value) -> Response {
    let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
    let mut content = Vec::new();
    if let Some(r) = s("/choices/0/message/reasoning_content").filter(|r| !r.is_empty()) {
        content.push(Part::Thinking { text: r, signature: None });
    }
    if let Some(t) = s("/choices/0/message/content").filter(|t| !t.is_empty()) {
        content.push(Part::Text(t));
    }
    for tc in v.pointer("/choices/0/message/tool_calls").and_then(Value::as_array).into_iter().flatten() {
        let g = |p: &str| tc.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
        content.push(Part::ToolUse {
            id: g("/id"),
            name: g("/function/name"),
            input: arguments_value(&g("/function/arguments")),
        });
    }
    Response {
        id: s("/id").unwrap_or_default(),
        model: s("/model").unwrap_or_default(),
        content,
        finish: s("/choices/0/finish_reason").map(|f| finish_from(&f)),
        stop_sequence: None,
        usage: v.get("usage").and_then(usage_from),
    }
}

#[cfg(test)]
fn image_urls(parts: &[Part]) -> Vec<String> {
    parts.iter().filter_map(|p| if let Part::Image(i) = p { Some(image_to_url(i)) } else { None }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::Image;

    #[test]
    fn tool_messages_merge_into_one_user_turn_and_data_urls_become_inline_images() -> Result<(), serde_json::Error> {
        let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}},
                {"id": "c2", "type": "function", "function": {"name": "b", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"}]}))?;
        let c = request_to_canonical(req).map_err(|e| serde_json::Error::io(std::io::Error::other(e.message)))?;
        assert_eq!(c.system, vec!["Be brief."]);
        assert_eq!(c.messages.len(), 3);
        assert_eq!(image_urls(&c.messages[0].content), vec!["data:image/png;base64,iVBO"]);
        assert!(
            matches!(&c.messages[0].content[1], Part::Image(Image::Base64 { media_type, .. }) if media_type == "image/png")
        );
        assert_eq!(c.messages[2].content.len(), 2);
        Ok(())
    }

    #[test]
    fn an_openai_request_survives_the_round_trip_through_canonical() -> Result<(), serde_json::Error> {
        let original = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "assistant", "content": "Done."}],
            "tools": [{"type": "function", "function": {"name": "a", "description": "A", "parameters": {"type": "object"}}}],
            "parallel_tool_calls": false, "tool_choice": "required", "max_tokens": 100, "temperature": 0.5,
            "top_p": 0.9, "stop": ["END"], "reasoning_effort": "medium", "stream": true, "user": "u1",
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}}}});
        let req: ChatRequest = serde_json::from_value(original.clone())?;
        let c = request_to_canonical(req).map_err(|e| serde_json::Error::io(std::io::Error::other(e.message)))?;
        let back = request_from_canonical(&c).map_err(|e| serde_json::Error::io(std::io::Error::other(e.message)))?;
        let mut expected = original;
        // The gateway always asks for the usage chunk; everything else comes back as sent.
        expected["stream_options"] = json!({"include_usage": true});
        assert_eq!(back, expected);
        Ok(())
    }

    #[test]
    fn fields_another_vendor_cannot_honour_are_refused_by_name() -> Result<(), serde_json::Error> {
        let req: ChatRequest =
            serde_json::from_value(json!({"model": "m", "messages": [], "logprobs": true, "store": true}))?;
        assert_eq!(request_to_canonical(req).err().map(|e| e.param), Some("logprobs".to_owned()));
        let req: ChatRequest = serde_json::from_value(json!({"model": "m", "messages": [], "n": 2}))?;
        assert_eq!(request_to_canonical(req).err().map(|e| e.param), Some("n".to_owned()));
        Ok(())
    }
}
