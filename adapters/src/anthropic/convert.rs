//! Anthropic Messages ⇄ canonical: requests both ways, responses both ways, usage. Pure
//! functions. Anthropic's `input_tokens` excludes cache reads and cache writes, which are
//! reported beside it; canonical counts are disjoint the same way, so nothing is counted twice.

use serde_json::{Map, Value, json};

use super::wire::{Block, Content, ImageSource, InRole, MessagesRequest, System, Thinking, ToolChoice as WireChoice};
use crate::canonical::{
    DEFAULT_MAX_TOKENS, FinishReason, Image, Message, Part, Reasoning, Request, Response, ResponseFormat, Role,
    TokenCounts, Tool, ToolChoice, Unsupported,
};

/// Top-level fields dropped when translating to OpenAI because they change nothing the client
/// observes (`service_tier` is a scheduling hint).
pub const DROPPED_FIELDS: &[&str] = &["service_tier"];

fn blocks_to_parts(content: Content, param: &str) -> Result<Vec<Part>, Unsupported> {
    let blocks = match content {
        Content::Text(t) => return Ok(vec![Part::Text(t)]),
        Content::Blocks(b) => b,
    };
    let mut out = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.into_iter().enumerate() {
        let unsupported = || {
            Unsupported::new(
                format!("{param}[{i}].type"),
                "This content block is not supported by this model's provider.",
            )
        };
        out.push(match b {
            Block::Text { text } => Part::Text(text),
            Block::Image { source } => Part::Image(match source {
                ImageSource::Base64 { media_type, data } => Image::Base64 { media_type, data },
                ImageSource::Url { url } => Image::Url(url),
                ImageSource::Other => return Err(unsupported()),
            }),
            Block::ToolUse { id, name, input } => Part::ToolUse { id, name, input },
            Block::ToolResult { tool_use_id, content, is_error } => Part::ToolResult {
                tool_use_id,
                content: match content {
                    None => Vec::new(),
                    Some(c) => blocks_to_parts(c, &format!("{param}[{i}].content"))?,
                },
                is_error: is_error.unwrap_or(false),
            },
            Block::Thinking { thinking, signature } => Part::Thinking { text: thinking, signature },
            Block::RedactedThinking { data } => Part::RedactedThinking(data),
            Block::Other => return Err(unsupported()),
        });
    }
    Ok(out)
}

/// Anthropic request → canonical.
pub fn request_to_canonical(req: MessagesRequest) -> Result<Request, Unsupported> {
    if let Some((k, _)) = req.extra.iter().find(|(k, v)| !v.is_null() && !DROPPED_FIELDS.contains(&k.as_str())) {
        return Err(Unsupported::new(k.clone(), format!("'{k}' is not supported by this model's provider.")));
    }
    let system = match req.system {
        None => Vec::new(),
        Some(System::Text(t)) => vec![t],
        Some(System::Blocks(b)) => b.into_iter().map(|b| b.text).collect(),
    };
    let mut messages = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.into_iter().enumerate() {
        let role = match m.role {
            InRole::User => Role::User,
            InRole::Assistant => Role::Assistant,
        };
        messages.push(Message { role, content: blocks_to_parts(m.content, &format!("messages[{i}].content"))? });
    }
    let mut tools = Vec::new();
    for (i, t) in req.tools.into_iter().flatten().enumerate() {
        let Some(parameters) = t.input_schema else {
            return Err(Unsupported::new(
                format!("tools[{i}]"),
                "Server tools are not supported by this model's provider.",
            ));
        };
        tools.push(Tool { name: t.name, description: t.description, parameters });
    }
    let (tool_choice, parallel) = match req.tool_choice {
        None => (None, None),
        Some(WireChoice::Auto { disable_parallel_tool_use: d }) => (Some(ToolChoice::Auto), d),
        Some(WireChoice::Any { disable_parallel_tool_use: d }) => (Some(ToolChoice::Required), d),
        Some(WireChoice::Tool { name, disable_parallel_tool_use: d }) => (Some(ToolChoice::Tool(name)), d),
        Some(WireChoice::None) => (Some(ToolChoice::None), None),
    };
    Ok(Request {
        model: req.model,
        system,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: parallel.map(|d| !d),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req.stop_sequences.unwrap_or_default(),
        response_format: ResponseFormat::Text,
        reasoning: match req.thinking {
            Some(Thinking::Enabled { budget_tokens }) => Some(Reasoning { budget_tokens }),
            _ => None,
        },
        stream: req.stream.unwrap_or(false),
        user: req.metadata.and_then(|m| m.user_id),
    })
}

fn image_json(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        Image::Url(url) => json!({"type": "image", "source": {"type": "url", "url": url}}),
    }
}

pub fn part_json(p: &Part) -> Value {
    match p {
        Part::Text(t) => json!({"type": "text", "text": t}),
        Part::Image(img) => image_json(img),
        Part::ToolUse { id, name, input } => {
            // Anthropic wants an object; arguments that were not JSON are wrapped, not lost.
            let input = if input.is_object() { input.clone() } else { json!({"input": input}) };
            json!({"type": "tool_use", "id": id, "name": name, "input": input})
        }
        Part::ToolResult { tool_use_id, content, is_error } => {
            let mut v = json!({"type": "tool_result", "tool_use_id": tool_use_id,
                "content": content.iter().map(part_json).collect::<Vec<_>>()});
            if *is_error {
                v["is_error"] = json!(true);
            }
            v
        }
        Part::Thinking { text, signature } => {
            json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()})
        }
        Part::RedactedThinking(data) => json!({"type": "redacted_thinking", "data": data}),
    }
}

/// The tool through which JSON mode is emulated (Anthropic's documented technique for JSON
/// output: one tool whose input schema is the wanted schema, forced with `tool_choice`). Its call
/// is turned back into plain text content by [`json_tool_to_text`] and the stream decoder.
pub const JSON_TOOL: &str = "llmr_json_response";

fn json_mode_tool(r: &Request) -> Result<Option<Value>, Unsupported> {
    let schema = match &r.response_format {
        ResponseFormat::Text => return Ok(None),
        ResponseFormat::JsonObject => json!({"type": "object"}),
        ResponseFormat::JsonSchema { schema, .. } => schema.clone(),
    };
    // A forced tool cannot be combined with the client's own tools, nor with extended thinking
    // (Anthropic refuses forced tool use while thinking).
    if !r.tools.is_empty() || r.reasoning.is_some() {
        return Err(Unsupported::new(
            "response_format",
            "JSON mode together with tools or reasoning is not supported by this model's provider.",
        ));
    }
    Ok(Some(json!({"name": JSON_TOOL, "description": "Respond with the answer as JSON.", "input_schema": schema})))
}

/// Anthropic's `temperature` range; OpenAI's goes up to 2.
const MAX_TEMPERATURE: f64 = 1.0;

/// Whether Anthropic would refuse this part as an empty text block ("text content blocks must be
/// non-empty", and likewise for whitespace alone). OpenAI clients send `"content": ""`, e.g. for
/// an assistant turn that only called tools.
fn is_blank_text(p: &Part) -> bool {
    matches!(p, Part::Text(t) if t.trim().is_empty())
}

/// The part without blank text blocks inside a tool result (which Anthropic refuses the same way).
fn without_blank_text(p: &Part) -> Part {
    match p {
        Part::ToolResult { tool_use_id, content, is_error } => Part::ToolResult {
            tool_use_id: tool_use_id.clone(),
            content: content.iter().filter(|c| !is_blank_text(c)).cloned().collect(),
            is_error: *is_error,
        },
        other => other.clone(),
    }
}

/// Canonical → Anthropic request body. JSON mode (`response_format`) is emulated with a forced
/// tool ([`JSON_TOOL`]). What Anthropic would refuse but OpenAI accepts is adjusted rather than
/// passed on to fail: blank text parts (`"content": ""`) are dropped, then messages left with no
/// content and blank system prompts; `temperature` is clamped to Anthropic's range `[0, 1]`
/// (OpenAI allows up to 2, so 1.5 is sent as 1.0).
pub fn request_from_canonical(r: &Request) -> Result<Value, Unsupported> {
    let json_tool = json_mode_tool(r)?;
    let messages: Vec<Value> = r
        .messages
        .iter()
        .filter_map(|m| {
            let role = match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            let content: Vec<Value> =
                m.content.iter().filter(|p| !is_blank_text(p)).map(|p| part_json(&without_blank_text(p))).collect();
            (!content.is_empty()).then(|| json!({"role": role, "content": content}))
        })
        .collect();
    let mut max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let mut out = json!({"model": r.model, "messages": messages});
    let system: Vec<&str> = r.system.iter().map(String::as_str).filter(|s| !s.trim().is_empty()).collect();
    if !system.is_empty() {
        out["system"] = json!(system.join("\n\n"));
    }
    if !r.tools.is_empty() {
        out["tools"] = r
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = json!(d);
                }
                v
            })
            .collect();
    }
    let disable_parallel = r.parallel_tool_calls.map(|p| !p);
    let choice = match (&r.tool_choice, disable_parallel) {
        (None, None) => None,
        (None | Some(ToolChoice::Auto), _) => Some(json!({"type": "auto"})),
        (Some(ToolChoice::Required), _) => Some(json!({"type": "any"})),
        (Some(ToolChoice::Tool(n)), _) => Some(json!({"type": "tool", "name": n})),
        (Some(ToolChoice::None), _) => Some(json!({"type": "none"})),
    };
    if let Some(mut c) = choice.filter(|_| !r.tools.is_empty() || r.tool_choice == Some(ToolChoice::None)) {
        if let (Some(d), Some(obj)) = (disable_parallel, c.as_object_mut())
            && obj.get("type").and_then(Value::as_str) != Some("none")
        {
            obj.insert("disable_parallel_tool_use".into(), json!(d));
        }
        out["tool_choice"] = c;
    }
    if let Some(tool) = json_tool {
        out["tools"] = json!([tool]);
        out["tool_choice"] = json!({"type": "tool", "name": JSON_TOOL});
    }
    if let Some(reasoning) = r.reasoning {
        // Anthropic requires max_tokens > budget_tokens.
        if max_tokens <= reasoning.budget_tokens {
            max_tokens = reasoning.budget_tokens + DEFAULT_MAX_TOKENS;
        }
        out["thinking"] = json!({"type": "enabled", "budget_tokens": reasoning.budget_tokens});
    }
    out["max_tokens"] = json!(max_tokens);
    if let Some(t) = r.temperature {
        out["temperature"] = json!(t.clamp(0.0, MAX_TEMPERATURE));
    }
    if let Some(p) = r.top_p {
        out["top_p"] = json!(p);
    }
    if let Some(k) = r.top_k {
        out["top_k"] = json!(k);
    }
    if !r.stop.is_empty() {
        out["stop_sequences"] = json!(r.stop);
    }
    if r.stream {
        out["stream"] = json!(true);
    }
    if let Some(u) = &r.user {
        out["metadata"] = json!({"user_id": u});
    }
    Ok(out)
}

/// Anthropic's `stop_reason`.
pub fn stop_reason_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::StopSequence => "stop_sequence",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// A finish reason from Anthropic's `stop_reason`.
pub fn stop_reason_from(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "stop_sequence" => FinishReason::StopSequence,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

/// Token counts from an Anthropic usage object (all four fields are disjoint).
pub fn usage_from(v: &Value) -> Option<TokenCounts> {
    let n = |k: &str| v.get(k).and_then(Value::as_u64);
    Some(TokenCounts {
        input: n("input_tokens")?,
        cached: n("cache_read_input_tokens").unwrap_or(0),
        cache_write: n("cache_creation_input_tokens").unwrap_or(0),
        output: n("output_tokens").unwrap_or(0),
        // Anthropic bills thinking as output and does not report it apart.
        reasoning: 0,
    })
}

/// Usage in Anthropic's shape.
pub fn usage_json(t: &TokenCounts) -> Value {
    json!({"input_tokens": t.input, "output_tokens": t.output,
        "cache_creation_input_tokens": t.cache_write, "cache_read_input_tokens": t.cached})
}

/// Anthropic response → canonical.
pub fn response_to_canonical(v: &Value) -> Response {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let mut content = Vec::new();
    for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        let g = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        match b.get("type").and_then(Value::as_str) {
            Some("text") => content.push(Part::Text(g("text"))),
            Some("thinking") => content.push(Part::Thinking {
                text: g("thinking"),
                signature: b.get("signature").and_then(Value::as_str).map(str::to_owned),
            }),
            Some("redacted_thinking") => content.push(Part::RedactedThinking(g("data"))),
            Some("tool_use") => content.push(Part::ToolUse {
                id: g("id"),
                name: g("name"),
                input: b.get("input").cloned().unwrap_or_else(|| Value::Object(Map::new())),
            }),
            _ => {}
        }
    }
    let mut r = Response {
        id: s("id").unwrap_or_default(),
        model: s("model").unwrap_or_default(),
        content,
        finish: s("stop_reason").map(|r| stop_reason_from(&r)),
        stop_sequence: s("stop_sequence"),
        usage: v.get("usage").and_then(usage_from),
    };
    json_tool_to_text(&mut r);
    r
}

/// Undoes the JSON-mode emulation in an answer: the [`JSON_TOOL`] call becomes text content
/// holding its input, and the turn ends normally rather than "wants tool results".
pub fn json_tool_to_text(r: &mut Response) {
    let mut found = false;
    for p in &mut r.content {
        if let Part::ToolUse { name, input, .. } = p
            && name == JSON_TOOL
        {
            *p = Part::Text(input.to_string());
            found = true;
        }
    }
    if found && r.finish == Some(FinishReason::ToolCalls) {
        r.finish = Some(FinishReason::Stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_anthropic_request_survives_the_round_trip_through_canonical() -> Result<(), serde_json::Error> {
        let original = json!({
            "model": "claude-sonnet-4-5", "max_tokens": 2048, "system": "Be brief.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Use the tool.", "signature": "sig"},
                    {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"location": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": true,
                    "content": [{"type": "text", "text": "timeout"}]}]}
            ],
            "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "stop_sequences": ["END"], "temperature": 1.0, "top_k": 5, "stream": true,
            "metadata": {"user_id": "u1"}
        });
        let req: MessagesRequest = serde_json::from_value(original.clone())?;
        let canonical =
            request_to_canonical(req).map_err(|e| serde_json::Error::io(std::io::Error::other(e.message)))?;
        let back =
            request_from_canonical(&canonical).map_err(|e| serde_json::Error::io(std::io::Error::other(e.message)))?;
        assert_eq!(back, original);
        Ok(())
    }

    fn text(t: &str) -> Part {
        Part::Text(t.to_owned())
    }

    #[test]
    fn blank_text_parts_and_the_messages_they_leave_empty_are_not_sent_to_anthropic() -> Result<(), String> {
        let call = Part::ToolUse { id: "t1".into(), name: "f".into(), input: json!({}) };
        let result =
            Part::ToolResult { tool_use_id: "t1".into(), content: vec![text(""), text("42")], is_error: false };
        let r = Request {
            model: "claude-sonnet-4-5".into(),
            system: vec![String::new(), "Be brief.".into()],
            messages: vec![
                Message { role: Role::User, content: vec![text("hi"), text("")] },
                // What an OpenAI client sends for a turn that only called tools: `"content": ""`.
                Message { role: Role::Assistant, content: vec![text(""), call] },
                Message { role: Role::User, content: vec![result] },
                Message { role: Role::Assistant, content: vec![text(" ")] },
                Message { role: Role::User, content: vec![text("and?")] },
            ],
            ..Request::default()
        };
        let out = request_from_canonical(&r).map_err(|e| e.message)?;
        assert_eq!(out["system"], json!("Be brief."));
        assert_eq!(
            out["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                    "content": [{"type": "text", "text": "42"}]}]},
                {"role": "user", "content": [{"type": "text", "text": "and?"}]}
            ])
        );
        Ok(())
    }

    #[test]
    fn temperature_is_clamped_to_anthropics_range() -> Result<(), String> {
        let with = |t: f64| Request { model: "m".into(), temperature: Some(t), ..Request::default() };
        for (given, sent) in [(1.5, 1.0), (2.0, 1.0), (0.7, 0.7), (0.0, 0.0), (-0.5, 0.0)] {
            let out = request_from_canonical(&with(given)).map_err(|e| e.message)?;
            assert_eq!(out["temperature"], json!(sent), "temperature {given}");
        }
        let out =
            request_from_canonical(&Request { model: "m".into(), ..Request::default() }).map_err(|e| e.message)?;
        assert!(out.get("temperature").is_none());
        Ok(())
    }

    #[test]
    fn usage_counts_are_disjoint_and_shaped_back_the_same() {
        let raw = json!({"input_tokens": 10, "cache_creation_input_tokens": 3, "cache_read_input_tokens": 4,
            "output_tokens": 7});
        let t = usage_from(&raw).unwrap_or_default();
        assert_eq!(t, TokenCounts { input: 10, cached: 4, cache_write: 3, output: 7, reasoning: 0 });
        assert_eq!(usage_json(&t), raw);
        assert!(usage_from(&json!({"output_tokens": 7})).is_none());
    }
}
