//! Gemini `generateContent` ⇄ canonical: requests both ways, responses both ways, usage. Pure
//! functions over JSON values. The REST API accepts request fields in camelCase and in
//! snake_case (proto JSON mapping); both are read, camelCase is written.
//!
//! Usage: `promptTokenCount` *includes* `cachedContentTokenCount`, and the billable output is
//! `candidatesTokenCount + thoughtsTokenCount` (thinking is reported beside the answer, not inside
//! it), so canonical input = prompt − cached and output = candidates + thoughts.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::wire;

use crate::canonical::{
    FinishReason, Image, Message, Part, Reasoning, Request, Response, ResponseFormat, Role, TokenCounts, Tool,
    ToolChoice, Unsupported, joined_text,
};

/// Top-level request fields dropped when translating to another vendor, because no other vendor
/// has them and the answer stays valid: `safetySettings` (Gemini's own filter thresholds; the
/// other vendor applies its own policy) and `labels` (billing labels).
pub const DROPPED_FIELDS: &[&str] = &["safetySettings", "safety_settings", "labels"];

/// `generationConfig` fields that are harmless to drop (`responseModalities` of text only,
/// `candidateCount` of 1 are checked apart).
const DROPPED_CONFIG: &[&str] = &["seed"];

/// A field by its camelCase or snake_case name.
fn get<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake)).filter(|x| !x.is_null())
}

fn str_of<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a str> {
    get(v, camel, snake).and_then(Value::as_str)
}

fn unsupported(param: impl Into<String>) -> Unsupported {
    let param = param.into();
    let message = format!("'{param}' is not supported by this model's provider.");
    Unsupported::new(param, message)
}

/// The id given to a function call that came without one (Gemini before its `id` field): unique
/// within the conversation, derived from the call's position so a later turn finds it again.
fn synthetic_call_id(n: usize) -> String {
    format!("call_gemini_{n}")
}

/// Text of a function response's `response` object, for vendors whose tool results are text:
/// `{"result": "…"}` / `{"output": "…"}` give their string, anything else its JSON.
fn response_text(response: &Value) -> String {
    for k in ["result", "output", "content"] {
        if let Some(s) = response.get(k).and_then(Value::as_str)
            && response.as_object().is_some_and(|o| o.len() == 1)
        {
            return s.to_owned();
        }
    }
    response.to_string()
}

/// Gemini request → canonical. `model` and `stream` come from the URL.
pub fn request_to_canonical(v: &Value, model: &str, stream: bool) -> Result<Request, Unsupported> {
    let Some(obj) = v.as_object() else { return Err(Unsupported::new("contents", "The body must be an object.")) };
    const KNOWN: &[&str] = &[
        "contents",
        "systemInstruction",
        "system_instruction",
        "tools",
        "toolConfig",
        "tool_config",
        "generationConfig",
        "generation_config",
        "model",
    ];
    if let Some((k, _)) =
        obj.iter().find(|(k, x)| !x.is_null() && !KNOWN.contains(&k.as_str()) && !DROPPED_FIELDS.contains(&k.as_str()))
    {
        return Err(unsupported(k.clone()));
    }
    let mut r = Request { model: model.to_owned(), stream, ..Request::default() };
    if let Some(si) = get(v, "systemInstruction", "system_instruction") {
        for p in si.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                r.system.push(t.to_owned());
            }
        }
    }
    // Calls seen so far, to give function responses without an id the id of their call.
    let mut calls: Vec<(String, String, bool)> = Vec::new();
    for (i, c) in v.get("contents").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let role = match c.get("role").and_then(Value::as_str) {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut content = Vec::new();
        for (j, p) in c.get("parts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let param = || format!("contents[{i}].parts[{j}]");
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    let signature = str_of(p, "thoughtSignature", "thought_signature").map(str::to_owned);
                    content.push(Part::Thinking { text: t.to_owned(), signature });
                } else {
                    content.push(Part::Text(t.to_owned()));
                }
            } else if let Some(d) = get(p, "inlineData", "inline_data") {
                let media_type = str_of(d, "mimeType", "mime_type").unwrap_or_default().to_owned();
                if !media_type.starts_with("image/") {
                    return Err(Unsupported::new(
                        param(),
                        "Only images are supported as inline data by this model's provider.",
                    ));
                }
                let data = d.get("data").and_then(Value::as_str).unwrap_or_default().to_owned();
                content.push(Part::Image(Image::Base64 { media_type, data }));
            } else if let Some(f) = get(p, "fileData", "file_data") {
                let uri = str_of(f, "fileUri", "file_uri").unwrap_or_default();
                if !(uri.starts_with("https://") || uri.starts_with("http://")) {
                    return Err(Unsupported::new(
                        param(),
                        "Only http(s) file URIs are supported by this model's provider.",
                    ));
                }
                content.push(Part::Image(Image::Url(uri.to_owned())));
            } else if let Some(f) = get(p, "functionCall", "function_call") {
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                let id =
                    f.get("id").and_then(Value::as_str).map_or_else(|| synthetic_call_id(calls.len()), str::to_owned);
                calls.push((id.clone(), name.clone(), false));
                let input = f.get("args").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                content.push(Part::ToolUse { id, name, input });
            } else if let Some(f) = get(p, "functionResponse", "function_response") {
                let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
                let id = match f.get("id").and_then(Value::as_str) {
                    Some(id) => Some(id.to_owned()),
                    None => calls.iter().find(|(_, n, answered)| !answered && n == name).map(|(id, _, _)| id.clone()),
                };
                let Some(id) = id else {
                    return Err(Unsupported::new(
                        param(),
                        "A function response must follow a function call of the same name.",
                    ));
                };
                if let Some(c) = calls.iter_mut().find(|(cid, _, _)| *cid == id) {
                    c.2 = true;
                }
                let response = f.get("response").cloned().unwrap_or(Value::Null);
                let is_error = response.get("error").is_some() && response.as_object().is_some_and(|o| o.len() == 1);
                let text = match (is_error, response.get("error")) {
                    (true, Some(e)) => e.as_str().map_or_else(|| e.to_string(), str::to_owned),
                    _ => response_text(&response),
                };
                content.push(Part::ToolResult { tool_use_id: id, content: vec![Part::Text(text)], is_error });
            } else {
                return Err(Unsupported::new(param(), "This part is not supported by this model's provider."));
            }
        }
        match r.messages.last_mut() {
            Some(last) if last.role == role => last.content.append(&mut content),
            _ => r.messages.push(Message { role, content }),
        }
    }
    for (i, t) in v.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let Some(obj) = t.as_object() else { continue };
        for (k, decls) in obj {
            if k != "functionDeclarations" && k != "function_declarations" {
                return Err(Unsupported::new(
                    format!("tools[{i}].{k}"),
                    "Only function declarations are supported as tools by this model's provider.",
                ));
            }
            for d in decls.as_array().into_iter().flatten() {
                let parameters = get(d, "parametersJsonSchema", "parameters_json_schema")
                    .or_else(|| d.get("parameters").filter(|p| !p.is_null()))
                    .map_or_else(|| json!({"type": "object", "properties": {}}), schema_to_json_schema);
                r.tools.push(Tool {
                    name: d.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    description: d.get("description").and_then(Value::as_str).map(str::to_owned),
                    parameters,
                });
            }
        }
    }
    if let Some(cfg) =
        get(v, "toolConfig", "tool_config").and_then(|c| get(c, "functionCallingConfig", "function_calling_config"))
    {
        let allowed: Vec<&str> = get(cfg, "allowedFunctionNames", "allowed_function_names")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        r.tool_choice = match (cfg.get("mode").and_then(Value::as_str), allowed.as_slice()) {
            (Some("NONE"), _) => Some(ToolChoice::None),
            (Some("ANY"), [one]) => Some(ToolChoice::Tool((*one).to_owned())),
            (Some("ANY"), []) => Some(ToolChoice::Required),
            (_, [_, ..]) => {
                return Err(Unsupported::new(
                    "toolConfig.functionCallingConfig.allowedFunctionNames",
                    "Restricting calls to several named functions is not supported by this model's provider.",
                ));
            }
            (Some("AUTO" | "MODE_UNSPECIFIED") | None, []) => Some(ToolChoice::Auto),
            (Some(_), _) => return Err(unsupported("toolConfig.functionCallingConfig.mode")),
        };
    }
    if let Some(g) = get(v, "generationConfig", "generation_config") {
        generation_config_to_canonical(g, &mut r)?;
    }
    Ok(r)
}

fn generation_config_to_canonical(g: &Value, r: &mut Request) -> Result<(), Unsupported> {
    let Some(obj) = g.as_object() else { return Ok(()) };
    let mut mime: Option<&str> = None;
    let mut schema: Option<Value> = None;
    for (k, x) in obj.iter().filter(|(_, x)| !x.is_null()) {
        let param = || format!("generationConfig.{k}");
        match k.as_str() {
            "maxOutputTokens" | "max_output_tokens" => r.max_tokens = x.as_u64(),
            "temperature" => r.temperature = x.as_f64(),
            "topP" | "top_p" => r.top_p = x.as_f64(),
            "topK" | "top_k" => r.top_k = x.as_f64().map(|k| k as u64),
            "stopSequences" | "stop_sequences" => {
                r.stop = x.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_owned).collect();
            }
            "candidateCount" | "candidate_count" if x.as_u64() == Some(1) => {}
            "responseMimeType" | "response_mime_type" => mime = x.as_str(),
            "responseSchema" | "response_schema" => schema = Some(schema_to_json_schema(x)),
            "responseJsonSchema" | "response_json_schema" => schema = Some(x.clone()),
            "responseModalities" | "response_modalities" if x == &json!(["TEXT"]) => {}
            "presencePenalty" | "presence_penalty" | "frequencyPenalty" | "frequency_penalty"
                if x.as_f64() == Some(0.0) => {}
            "thinkingConfig" | "thinking_config" => {
                let budget = get(x, "thinkingBudget", "thinking_budget").and_then(Value::as_i64);
                let include = get(x, "includeThoughts", "include_thoughts").and_then(Value::as_bool).unwrap_or(false);
                r.reasoning = match budget {
                    Some(b) if b > 0 => Some(Reasoning { budget_tokens: b as u64 }),
                    // -1 is "dynamic": the medium budget, when the thoughts are wanted at all.
                    Some(-1) | None if include => Reasoning::from_effort("medium"),
                    _ => None,
                };
            }
            k if DROPPED_CONFIG.contains(&k) => {}
            _ => return Err(unsupported(param())),
        }
    }
    r.response_format = match (mime, schema) {
        (None | Some("text/plain"), None) => ResponseFormat::Text,
        (Some("application/json"), None) => ResponseFormat::JsonObject,
        (Some("application/json"), Some(schema)) => ResponseFormat::JsonSchema { name: "response".into(), schema },
        (_, Some(_)) => {
            return Err(Unsupported::new(
                "generationConfig.responseSchema",
                "A response schema needs responseMimeType 'application/json'.",
            ));
        }
        (Some(_), None) => return Err(unsupported("generationConfig.responseMimeType")),
    };
    Ok(())
}

/// Gemini's OpenAPI-subset schema (`type: "OBJECT"`, `nullable`) as JSON Schema: type names
/// lower-cased, `nullable: true` folded into the type. Other keywords are the same in both.
pub fn schema_to_json_schema(s: &Value) -> Value {
    match s {
        Value::Object(o) => {
            let mut out = Map::with_capacity(o.len());
            let nullable = o.get("nullable").and_then(Value::as_bool) == Some(true);
            for (k, v) in o {
                match k.as_str() {
                    "nullable" => {}
                    "type" => {
                        let t = v.as_str().map_or_else(|| v.clone(), |t| json!(t.to_ascii_lowercase()));
                        out.insert(k.clone(), if nullable { json!([t, "null"]) } else { t });
                    }
                    "properties" => {
                        let props = v
                            .as_object()
                            .map(|p| {
                                p.iter().map(|(n, s)| (n.clone(), schema_to_json_schema(s))).collect::<Map<_, _>>()
                            })
                            .map_or_else(|| v.clone(), Value::Object);
                        out.insert(k.clone(), props);
                    }
                    "items" | "anyOf" | "any_of" => {
                        let key = if k == "any_of" { "anyOf".to_owned() } else { k.clone() };
                        out.insert(key, schema_to_json_schema(v));
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(schema_to_json_schema).collect()),
        other => other.clone(),
    }
}

/// The media type of an image URL, from its extension (Gemini needs one for `fileData`).
fn guess_media_type(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or_default().to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else if path.ends_with(".heic") {
        "image/heic"
    } else {
        "image/jpeg"
    }
}

fn image_part(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        Image::Url(url) => json!({"fileData": {"mimeType": guess_media_type(url), "fileUri": url}}),
    }
}

/// A tool result as Gemini's `response` object: a JSON object result is kept as it is, other
/// text goes under `result` (or `error` when the tool failed), as Gemini's docs show.
fn function_response(content: &[Part], is_error: bool) -> Value {
    let text = joined_text(content);
    if !is_error && let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&text) {
        return v;
    }
    if is_error { json!({"error": text}) } else { json!({"result": text}) }
}

/// Canonical → Gemini request body (the model and streaming go in the URL). Thinking parts of
/// earlier turns are not sent back: Gemini ignores them, and another vendor's signatures mean
/// nothing to it. `parallel_tool_calls: false` and `user` are dropped: Gemini has neither.
pub fn request_from_canonical(r: &Request) -> Result<Value, Unsupported> {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for m in &r.messages {
        for p in &m.content {
            if let Part::ToolUse { id, name, .. } = p {
                names.push((id, name));
            }
        }
    }
    let mut contents = Vec::with_capacity(r.messages.len());
    for m in &r.messages {
        let mut parts = Vec::with_capacity(m.content.len());
        for p in &m.content {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => parts.push(json!({"text": t})),
                Part::Image(img) => parts.push(image_part(img)),
                Part::ToolUse { id, name, input } => {
                    let args = if input.is_object() { input.clone() } else { json!({"input": input}) };
                    let (id, signature) = split_signature(id);
                    let mut part = json!({"functionCall": {"id": id, "name": name, "args": args}});
                    if let Some(sig) = signature {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                }
                Part::ToolResult { tool_use_id, content, is_error } => {
                    let name = names.iter().find(|(id, _)| id == tool_use_id).map(|(_, n)| *n).ok_or_else(|| {
                        Unsupported::new(
                            "messages",
                            format!("The tool result for '{tool_use_id}' does not follow a call with that id."),
                        )
                    })?;
                    parts.push(json!({"functionResponse": {"id": split_signature(tool_use_id).0, "name": name,
                        "response": function_response(content, *is_error)}}));
                    for c in content {
                        if let Part::Image(img) = c {
                            parts.push(image_part(img));
                        }
                    }
                }
                Part::Thinking { .. } | Part::RedactedThinking(_) => {}
            }
        }
        if parts.is_empty() {
            continue;
        }
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        match contents.last_mut() {
            Some(Value::Object(last)) if last.get("role").and_then(Value::as_str) == Some(role) => {
                if let Some(Value::Array(existing)) = last.get_mut("parts") {
                    existing.extend(parts);
                }
            }
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    let mut out = json!({"contents": contents});
    if !r.system.is_empty() {
        out["systemInstruction"] = json!({"parts": r.system.iter().map(|s| json!({"text": s})).collect::<Vec<_>>()});
    }
    if !r.tools.is_empty() {
        let decls: Vec<Value> = r
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parametersJsonSchema": t.parameters});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        out["tools"] = json!([{"functionDeclarations": decls}]);
    }
    if let Some(tc) = &r.tool_choice {
        let cfg = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Tool(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        out["toolConfig"] = json!({"functionCallingConfig": cfg});
    }
    let mut g = Map::new();
    if let Some(n) = r.max_tokens {
        g.insert("maxOutputTokens".into(), json!(n));
    }
    if let Some(t) = r.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = r.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(k) = r.top_k {
        g.insert("topK".into(), json!(k));
    }
    if !r.stop.is_empty() {
        g.insert("stopSequences".into(), json!(r.stop));
    }
    match &r.response_format {
        ResponseFormat::Text => {}
        ResponseFormat::JsonObject => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        ResponseFormat::JsonSchema { schema, .. } => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseJsonSchema".into(), schema.clone());
        }
    }
    if let Some(reasoning) = r.reasoning {
        g.insert("thinkingConfig".into(), json!({"thinkingBudget": reasoning.budget_tokens, "includeThoughts": true}));
    }
    if !g.is_empty() {
        out["generationConfig"] = Value::Object(g);
    }
    Ok(out)
}

/// Gemini's `finishReason` for a canonical one.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::StopSequence | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
    }
}

/// A canonical finish reason from Gemini's `finishReason`; `STOP` after function calls means the
/// model wants their results.
pub fn finish_from(s: &str, called: bool) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" | "LANGUAGE" => {
            FinishReason::ContentFilter
        }
        _ if called => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Token counts from a `usageMetadata` object; `None` without `promptTokenCount`.
pub fn usage_from(u: &Value) -> Option<TokenCounts> {
    let u = wire::UsageMetadata::deserialize(u).ok()?;
    // Sums saturate: the counts are the upstream's, and must not wrap.
    let prompt = u.prompt_token_count?.saturating_add(u.tool_use_prompt_token_count.unwrap_or(0));
    let cached = u.cached_content_token_count.unwrap_or(0).min(prompt);
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    Some(TokenCounts {
        input: prompt - cached,
        cached,
        cache_write: 0,
        output: u.candidates_token_count.unwrap_or(0).saturating_add(thoughts),
        reasoning: thoughts,
    })
}

/// Usage in Gemini's shape (cache writes, which Gemini does not have, count as prompt).
pub fn usage_json(t: &TokenCounts) -> Value {
    let prompt = t.input.saturating_add(t.cached).saturating_add(t.cache_write);
    let candidates = t.output.saturating_sub(t.reasoning);
    let mut u = json!({"promptTokenCount": prompt, "candidatesTokenCount": candidates,
        "totalTokenCount": prompt.saturating_add(t.output)});
    if t.cached > 0 {
        u["cachedContentTokenCount"] = json!(t.cached);
    }
    if t.reasoning > 0 {
        u["thoughtsTokenCount"] = json!(t.reasoning);
    }
    u
}

/// The parts of the first candidate, as canonical parts; function calls without an id get a
/// fresh one (`next_call` counts them across a stream).
pub fn candidate_parts(v: wire::GenerateContentResponse, next_call: &mut usize, id_prefix: &str, out: &mut Vec<Part>) {
    let parts = v.candidates.and_then(|c| c.into_iter().next()).and_then(|c| c.content).and_then(|c| c.parts);
    for p in parts.into_iter().flatten() {
        if let Some(t) = p.text {
            if p.thought == Some(true) {
                out.push(Part::Thinking { text: t, signature: p.thought_signature });
            } else {
                out.push(Part::Text(t));
            }
        } else if let Some(f) = p.function_call {
            let mut id = f.id.unwrap_or_else(|| format!("{id_prefix}{}", *next_call));
            if let Some(sig) = &p.thought_signature {
                id = with_signature(&id, sig);
            }
            *next_call += 1;
            out.push(Part::ToolUse {
                id,
                name: f.name.unwrap_or_default(),
                input: f.args.filter(|a| !a.is_null()).unwrap_or_else(|| Value::Object(Map::new())),
            });
        }
    }
}

/// Marks the thought signature carried inside a function-call id.
const SIGNATURE_MARK: &str = "__ts__";

/// A call id carrying Gemini's `thoughtSignature` (URL-safe base64, so the id stays one token).
/// Clients of other protocols have no field for the signature but send the call id back with the
/// tool result; Gemini requires the signature back on the call in the next turn when thinking.
pub fn with_signature(id: &str, signature: &str) -> String {
    let safe: String = signature
        .chars()
        .filter(|c| *c != '=')
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    format!("{id}{SIGNATURE_MARK}{safe}")
}

/// A call id without its carried signature, and the signature in Gemini's base64.
pub fn split_signature(id: &str) -> (&str, Option<String>) {
    let Some((id, safe)) = id.split_once(SIGNATURE_MARK) else { return (id, None) };
    let mut sig: String = safe
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !sig.len().is_multiple_of(4) {
        sig.push('=');
    }
    (id, Some(sig))
}

/// A prefix for function-call ids of one answer: unique per answer, so ids never collide across
/// the turns of a conversation.
pub fn call_id_prefix() -> String {
    format!("call_{}_", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Gemini response → canonical.
/// An answer that does not read as one is an empty answer.
pub fn response_to_canonical(v: &Value) -> Response {
    let mut r = wire::GenerateContentResponse::deserialize(v).unwrap_or_default();
    let blocked = r.prompt_blocked();
    let finish_reason = r.finish_reason().map(str::to_owned);
    let usage = r.usage_metadata.as_ref().and_then(usage_from);
    let (id, model) = (r.response_id.take().unwrap_or_default(), r.model_version.take().unwrap_or_default());
    let mut content = Vec::new();
    let mut n = 0;
    candidate_parts(r, &mut n, &call_id_prefix(), &mut content);
    let called = content.iter().any(|p| matches!(p, Part::ToolUse { .. }));
    let finish =
        if blocked { Some(FinishReason::ContentFilter) } else { finish_reason.map(|f| finish_from(&f, called)) };
    Response { id, model, content, finish, stop_sequence: None, usage }
}

/// One canonical part as a Gemini response part (`None` for parts a model never answers with).
pub fn part_json(p: &Part) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"text": t}),
        Part::Thinking { text, .. } => json!({"text": text, "thought": true}),
        Part::ToolUse { id, name, input } => json!({"functionCall": {"id": id, "name": name, "args": input}}),
        Part::Image(_) | Part::ToolResult { .. } | Part::RedactedThinking(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(v: &Value) -> Request {
        request_to_canonical(v, "gemini-2.5-flash", false).unwrap_or_default()
    }

    #[test]
    fn usage_bills_thoughts_as_output_and_never_counts_cached_prompt_twice() {
        let u = json!({"promptTokenCount": 100, "cachedContentTokenCount": 60, "candidatesTokenCount": 30,
            "thoughtsTokenCount": 20, "totalTokenCount": 150});
        let t = usage_from(&u).unwrap_or_default();
        assert_eq!(t, TokenCounts { input: 40, cached: 60, cache_write: 0, output: 50, reasoning: 20 });
        assert_eq!(usage_json(&t), u);
        assert_eq!(usage_from(&json!({"candidatesTokenCount": 3})), None);
        let snake = json!({"prompt_token_count": 5, "candidates_token_count": 2});
        assert_eq!(usage_from(&snake).map(|t| (t.input, t.output)), Some((5, 2)));
    }

    #[test]
    fn a_gemini_request_survives_the_round_trip_through_canonical() {
        let original = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBO"}}]},
                {"role": "model", "parts": [{"functionCall": {"id": "c1", "name": "get_weather",
                    "args": {"location": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"id": "c1", "name": "get_weather",
                    "response": {"temp": 21}}}]}
            ],
            "systemInstruction": {"parts": [{"text": "Be brief."}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                "parametersJsonSchema": {"type": "object"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"maxOutputTokens": 300, "temperature": 0.5, "topP": 0.9, "topK": 4.0,
                "stopSequences": ["END"], "responseMimeType": "application/json",
                "responseJsonSchema": {"type": "object"},
                "thinkingConfig": {"thinkingBudget": 1024, "includeThoughts": true}}
        });
        let r = canonical(&original);
        let back = request_from_canonical(&r).unwrap_or_default();
        let mut want = original.clone();
        want["generationConfig"]["topK"] = json!(4);
        assert_eq!(back, want);
    }

    #[test]
    fn snake_case_fields_and_openapi_schemas_are_read() {
        let r = canonical(&json!({
            "contents": [{"parts": [{"text": "hi"}]}],
            "system_instruction": {"parts": [{"text": "sys"}]},
            "tools": [{"function_declarations": [{"name": "f", "parameters": {"type": "OBJECT",
                "properties": {"x": {"type": "STRING", "nullable": true}}}}]}],
            "generation_config": {"max_output_tokens": 7}
        }));
        assert_eq!(r.system, ["sys"]);
        assert_eq!(r.max_tokens, Some(7));
        assert_eq!(r.tools[0].parameters, json!({"type": "object", "properties": {"x": {"type": ["string", "null"]}}}));
    }

    #[test]
    fn function_responses_without_ids_answer_the_earliest_open_call_of_that_name() {
        let r = canonical(&json!({"contents": [
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}},
                {"functionCall": {"name": "f", "args": {"a": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": "one"}}},
                {"functionResponse": {"name": "f", "response": {"error": "boom"}}}]}
        ]}));
        let ids: Vec<(&str, bool, String)> = r.messages[1]
            .content
            .iter()
            .filter_map(|p| match p {
                Part::ToolResult { tool_use_id, is_error, content } => {
                    Some((tool_use_id.as_str(), *is_error, joined_text(content)))
                }
                _ => None,
            })
            .collect();
        assert_eq!(ids, [("call_gemini_0", false, "one".into()), ("call_gemini_1", true, "boom".into())]);
    }

    #[test]
    fn unsupported_fields_are_named_and_harmless_ones_dropped() {
        let e = request_to_canonical(&json!({"contents": [], "cachedContent": "cachedContents/x"}), "m", false).err();
        assert_eq!(e.map(|e| e.param), Some("cachedContent".to_owned()));
        let e = request_to_canonical(&json!({"contents": [], "tools": [{"googleSearch": {}}]}), "m", false).err();
        assert_eq!(e.map(|e| e.param), Some("tools[0].googleSearch".to_owned()));
        let e =
            request_to_canonical(&json!({"contents": [], "generationConfig": {"candidateCount": 2}}), "m", false).err();
        assert_eq!(e.map(|e| e.param), Some("generationConfig.candidateCount".to_owned()));
        assert!(
            request_to_canonical(&json!({"contents": [], "safetySettings": [{"category": "x"}]}), "m", false).is_ok()
        );
    }

    #[test]
    fn a_thought_signature_rides_in_the_call_id_and_goes_back_on_the_call() {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "Ab+/c1=="}]}, "finishReason": "STOP"}]});
        let r = response_to_canonical(&v);
        let Some(Part::ToolUse { id, .. }) = r.content.first().cloned() else { unreachable!("no call") };
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'), "{id}");
        let next = Request {
            messages: vec![
                Message { role: Role::Assistant, content: r.content.clone() },
                Message {
                    role: Role::User,
                    content: vec![Part::ToolResult {
                        tool_use_id: id.clone(),
                        content: vec![Part::Text("ok".into())],
                        is_error: false,
                    }],
                },
            ],
            ..Request::default()
        };
        let body = request_from_canonical(&next).unwrap_or_default();
        let call = &body["contents"][0]["parts"][0];
        assert_eq!(call["thoughtSignature"], "Ab+/c1==");
        let plain = split_signature(&id).0.to_owned();
        assert_eq!(call["functionCall"]["id"], json!(plain));
        assert_eq!(body["contents"][1]["parts"][0]["functionResponse"]["id"], json!(plain));
        assert_eq!(split_signature("call_1"), ("call_1", None));
    }

    #[test]
    fn responses_map_finish_reasons_blocks_and_calls() {
        let v = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "hmm", "thought": true}, {"functionCall": {"name": "f", "args": {"x": 1}}}]},
            "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
            "modelVersion": "gemini-2.5-flash", "responseId": "r1"});
        let r = response_to_canonical(&v);
        assert_eq!(r.finish, Some(FinishReason::ToolCalls));
        assert!(matches!(&r.content[1], Part::ToolUse { id, name, .. } if id.starts_with("call_") && name == "f"));
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 8}});
        assert_eq!(response_to_canonical(&blocked).finish, Some(FinishReason::ContentFilter));
    }
}
