//! Every protocol conversion on any input: OpenAI chat, Anthropic Messages and Gemini requests →
//! canonical → each upstream's request; any upstream answer → canonical → each client's answer;
//! any upstream stream event → canonical deltas → each client's stream. None may panic (usage
//! numbers up to `u64::MAX` included). Round trips keep what they promise: text, tool-call ids,
//! names and arguments, and usage counts (cache writes fold into input where a protocol has no
//! field for them; Anthropic does not report reasoning apart).

use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::{config, json_object, json_value, number, text};
use adapters::anthropic::{convert as anthropic, stream as astream, wire::MessagesRequest};
use adapters::canonical::openai_chat::{convert as openai, stream as ostream, wire::ChatRequest};
use adapters::canonical::{Delta, FinishReason, Part, Request, Response, TokenCounts};
use adapters::gemini::{convert as gemini, stream as gstream};
use adapters::sse::{SseEvent, SseParser};

use crate::codec::{anthropic as acodec, gemini as gcodec, openai as ocodec};

/// The typed parse the call path does before translating (`call::vendor::parse`).
fn parse<T: DeserializeOwned>(v: &Value) -> Option<T> {
    let bytes = serde_json::to_vec(v).ok()?;
    let mut de = serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(&mut de).ok()
}

/// A canonical request in every upstream's shape; none may panic, each must serialise.
fn to_every_upstream(c: &Request) -> Result<(), TestCaseError> {
    for out in
        [openai::request_from_canonical(c), anthropic::request_from_canonical(c), gemini::request_from_canonical(c)]
            .into_iter()
            .flatten()
    {
        prop_assert!(serde_json::to_vec(&out).is_ok());
    }
    Ok(())
}

fn tool_ids(c: &Request) -> Vec<String> {
    let mut ids = Vec::new();
    for p in c.messages.iter().flat_map(|m| &m.content) {
        match p {
            Part::ToolUse { id, .. } => ids.push(id.clone()),
            Part::ToolResult { tool_use_id, .. } => ids.push(tool_use_id.clone()),
            _ => {}
        }
    }
    ids
}

/// Sometimes a field nobody knows, which a translation must refuse or drop, never trip on.
fn maybe_extra(mut m: Map<String, Value>, extra: Option<(String, Value)>) -> Value {
    if let Some((k, v)) = extra {
        m.entry(k).or_insert(v);
    }
    Value::Object(m)
}

fn extra() -> impl Strategy<Value = Option<(String, Value)>> {
    proptest::option::weighted(0.1, (super::key(), json_value()))
}

fn call_id() -> impl Strategy<Value = String> {
    "[a-z0-9_]{1,6}"
}

fn arguments() -> impl Strategy<Value = String> {
    prop_oneof![4 => json_object().prop_map(|o| Value::Object(o).to_string()), 1 => text()]
}

/// An OpenAI chat body: every role, text and image parts, tool calls and their results.
fn openai_body() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        text().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u}})),
    ];
    let content =
        prop_oneof![text().prop_map(Value::String), proptest::collection::vec(part, 0..3).prop_map(Value::Array)];
    let call = (call_id(), "[a-z_]{1,8}", arguments())
        .prop_map(|(id, n, a)| json!({"id": id, "type": "function", "function": {"name": n, "arguments": a}}));
    let message = prop_oneof![
        (prop::sample::select(&["system", "developer", "user"][..]), content.clone())
            .prop_map(|(r, c)| json!({"role": r, "content": c})),
        (proptest::option::of(content.clone()), proptest::collection::vec(call, 0..3))
            .prop_map(|(c, t)| json!({"role": "assistant", "content": c, "tool_calls": t})),
        (call_id(), content).prop_map(|(id, c)| json!({"role": "tool", "tool_call_id": id, "content": c})),
    ];
    let tool = ("[a-z_]{1,8}", proptest::option::of(json_object()))
        .prop_map(|(n, p)| json!({"type": "function", "function": {"name": n, "parameters": p}}));
    (
        proptest::collection::vec(message, 0..6),
        proptest::collection::vec(tool, 0..3),
        proptest::option::of(prop_oneof![
            prop::sample::select(&["auto", "none", "required", "other"][..]).prop_map(|c| json!(c)),
            "[a-z_]{1,8}".prop_map(|n| json!({"type": "function", "function": {"name": n}})),
        ]),
        proptest::option::of(prop::sample::select(&["text", "json_object", "json_schema"][..])),
        proptest::option::of(prop::sample::select(&["low", "medium", "high"][..])),
        (proptest::option::of(0u64..5000), proptest::option::of(0.0f64..2.0), any::<bool>()),
        extra(),
    )
        .prop_map(|(messages, tools, choice, format, effort, (max, temp, stream), extra)| {
            let mut m = Map::new();
            m.insert("model".into(), json!("m"));
            m.insert("messages".into(), Value::Array(messages));
            m.insert("tools".into(), Value::Array(tools));
            m.insert("tool_choice".into(), choice.unwrap_or(Value::Null));
            m.insert("response_format".into(), format.map_or(Value::Null, |f| json!({"type": f})));
            m.insert("reasoning_effort".into(), json!(effort));
            m.insert("max_tokens".into(), json!(max));
            m.insert("temperature".into(), json!(temp));
            m.insert("stream".into(), json!(stream));
            maybe_extra(m, extra)
        })
}

/// An Anthropic Messages body: text, image, tool-use, tool-result and thinking blocks.
fn anthropic_body() -> impl Strategy<Value = Value> {
    let block = prop_oneof![
        text().prop_map(|t| json!({"type": "text", "text": t})),
        text()
            .prop_map(|d| json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": d}})),
        text().prop_map(|u| json!({"type": "image", "source": {"type": "url", "url": u}})),
        (call_id(), "[a-z_]{1,8}", json_object())
            .prop_map(|(id, n, i)| json!({"type": "tool_use", "id": id, "name": n, "input": i})),
        (call_id(), text(), any::<bool>())
            .prop_map(|(id, t, e)| json!({"type": "tool_result", "tool_use_id": id, "content": t, "is_error": e})),
        (text(), text()).prop_map(|(t, s)| json!({"type": "thinking", "thinking": t, "signature": s})),
    ];
    let content =
        prop_oneof![text().prop_map(Value::String), proptest::collection::vec(block, 0..4).prop_map(Value::Array)];
    let message =
        (prop::sample::select(&["user", "assistant"][..]), content).prop_map(|(r, c)| json!({"role": r, "content": c}));
    let tool = ("[a-z_]{1,8}", json_object()).prop_map(|(n, s)| json!({"name": n, "input_schema": s}));
    (
        proptest::collection::vec(message, 0..6),
        proptest::collection::vec(tool, 0..3),
        proptest::option::of(prop::sample::select(&["auto", "any", "none", "tool"][..])),
        proptest::option::of(text()),
        (1u64..5000, proptest::option::of(1024u64..4096), any::<bool>()),
        extra(),
    )
        .prop_map(|(messages, tools, choice, system, (max, budget, stream), extra)| {
            let mut m = Map::new();
            m.insert("model".into(), json!("m"));
            m.insert("max_tokens".into(), json!(max));
            m.insert("messages".into(), Value::Array(messages));
            m.insert("tools".into(), Value::Array(tools));
            if let Some(c) = choice {
                m.insert("tool_choice".into(), json!({"type": c, "name": "f"}));
            }
            m.insert("system".into(), json!(system));
            if let Some(b) = budget {
                m.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": b}));
            }
            m.insert("stream".into(), json!(stream));
            maybe_extra(m, extra)
        })
}

/// A Gemini `generateContent` body: text, inline data, function calls and responses.
fn gemini_body() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        text().prop_map(|t| json!({"text": t})),
        text().prop_map(|d| json!({"inlineData": {"mimeType": "image/png", "data": d}})),
        (proptest::option::of(call_id()), "[a-z_]{1,8}", json_object())
            .prop_map(|(id, n, a)| json!({"functionCall": {"id": id, "name": n, "args": a}})),
        (proptest::option::of(call_id()), "[a-z_]{1,8}", json_object())
            .prop_map(|(id, n, r)| json!({"functionResponse": {"id": id, "name": n, "response": r}})),
    ];
    let content = (prop::sample::select(&["user", "model"][..]), proptest::collection::vec(part, 0..4))
        .prop_map(|(r, p)| json!({"role": r, "parts": p}));
    let decl = ("[a-z_]{1,8}", json_object()).prop_map(|(n, p)| json!({"name": n, "parameters": p}));
    (
        proptest::collection::vec(content, 0..6),
        proptest::collection::vec(decl, 0..3),
        proptest::option::of(text()),
        (proptest::option::of(1u64..5000), proptest::option::of(0.0f64..2.0)),
        extra(),
    )
        .prop_map(|(contents, decls, system, (max, temp), extra)| {
            let mut m = Map::new();
            m.insert("contents".into(), Value::Array(contents));
            if !decls.is_empty() {
                m.insert("tools".into(), json!([{"functionDeclarations": decls}]));
            }
            if let Some(s) = system {
                m.insert("systemInstruction".into(), json!({"parts": [{"text": s}]}));
            }
            m.insert("generationConfig".into(), json!({"maxOutputTokens": max, "temperature": temp}));
            maybe_extra(m, extra)
        })
}

/// Usage numbers, extremes included.
fn usage_object() -> impl Strategy<Value = Value> {
    proptest::collection::vec(
        (
            prop::sample::select(
                &[
                    "prompt_tokens",
                    "completion_tokens",
                    "prompt_cache_hit_tokens",
                    "prompt_cache_miss_tokens",
                    "cached_tokens",
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "cache_creation_input_tokens",
                    "promptTokenCount",
                    "candidatesTokenCount",
                    "thoughtsTokenCount",
                    "cachedContentTokenCount",
                    "toolUsePromptTokenCount",
                ][..],
            ),
            number(),
        ),
        0..6,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
}

/// An upstream answer or stream event of any of the three vendors' shapes, loosely.
fn upstream_event() -> impl Strategy<Value = Value> {
    let part = prop_oneof![
        text().prop_map(|t| json!({"text": t})),
        (text(), text()).prop_map(|(t, s)| json!({"text": t, "thought": true, "thoughtSignature": s})),
        (text(), json_value(), proptest::option::of("[a-z0-9]{1,4}"))
            .prop_map(|(n, a, id)| json!({"functionCall": {"name": n, "args": a, "id": id}})),
    ];
    let delta = (text(), text(), proptest::collection::vec((number(), text(), text(), text()), 0..3)).prop_map(
        |(c, r, calls)| {
            let calls: Vec<Value> = calls
                .into_iter()
                .map(|(i, id, n, a)| json!({"index": i, "id": id, "function": {"name": n, "arguments": a}}))
                .collect();
            json!({"content": c, "reasoning_content": r, "tool_calls": calls})
        },
    );
    prop_oneof![
        // OpenAI chunks and answers.
        (delta, text(), proptest::option::of(usage_object()), number()).prop_map(|(d, f, u, i)| json!({
            "id": "c", "model": "m", "choices": [{"index": i, "delta": d, "message": d, "finish_reason": f}],
            "usage": u})),
        // Anthropic events and answers.
        (text(), number(), text(), text(), json_value(), proptest::option::of(usage_object()), text()).prop_map(
            |(kind, index, block, dtype, content, usage, s)| json!({
                "type": kind, "index": index, "message": {"id": "msg", "model": "claude", "usage": usage},
                "content_block": {"type": block, "id": s, "name": s, "text": s, "thinking": s},
                "delta": {"type": dtype, "text": s, "thinking": s, "partial_json": s, "signature": s,
                    "stop_reason": s}, "usage": usage, "content": content, "error": {"type": s}})
        ),
        // Gemini chunks and answers.
        (proptest::collection::vec(part, 0..4), text(), proptest::option::of(usage_object())).prop_map(
            |(p, f, u)| json!({
            "candidates": [{"content": {"role": "model", "parts": p}, "finishReason": f}],
            "usageMetadata": u, "modelVersion": "g", "responseId": "r"})
        ),
        json_object().prop_map(Value::Object),
    ]
}

/// Deltas through every client encoder, to the end of the stream.
fn encode_everywhere(deltas: &[Delta]) {
    let mut out = Vec::new();
    let mut o = ocodec::ChunkEncoder::new(0, true);
    let mut a = acodec::Encoder::default();
    let mut g = gcodec::Encoder::new(gcodec::Framing::Sse);
    let mut j = gcodec::Encoder::new(gcodec::Framing::JsonArray);
    for d in deltas {
        o.encode(d.clone(), &mut out);
        a.encode(d.clone(), &mut out);
        g.encode(d.clone(), &mut out);
        j.encode(d.clone(), &mut out);
    }
    out.extend(o.usage_frame());
    a.end(&mut out);
    out.push(acodec::Encoder::stop_frame());
    g.end(&mut out);
    j.end(&mut out);
    out.extend(j.framer.close());
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_openai_requests_convert_and_round_trip(body in prop_oneof![openai_body(), json_value()]) {
        if let Some(req) = parse::<ChatRequest>(&body)
            && let Ok(c) = openai::request_to_canonical(req)
        {
            to_every_upstream(&c)?;
            // OpenAI → canonical → OpenAI → canonical keeps every tool-call id.
            let back = openai::request_from_canonical(&c).ok().and_then(|v| parse::<ChatRequest>(&v));
            let again = back.map(openai::request_to_canonical);
            prop_assert!(matches!(again, Some(Ok(_))), "the OpenAI body made from canonical does not read back");
            if let Some(Ok(again)) = again {
                prop_assert_eq!(tool_ids(&again), tool_ids(&c));
            }
            // Across protocols too: what we send Anthropic or Gemini names the same calls.
            let via = anthropic::request_from_canonical(&c).ok().and_then(|v| parse::<MessagesRequest>(&v));
            if let Some(Ok(via)) = via.map(anthropic::request_to_canonical) {
                prop_assert_eq!(tool_ids(&via), tool_ids(&c));
            }
            if let Ok(Ok(via)) = gemini::request_from_canonical(&c).map(|v| gemini::request_to_canonical(&v, "m", false)) {
                prop_assert_eq!(tool_ids(&via), tool_ids(&c));
            }
        }
    }

    #[test]
    fn fuzz_anthropic_requests_convert_and_round_trip(body in prop_oneof![anthropic_body(), json_value()]) {
        if let Some(req) = parse::<MessagesRequest>(&body)
            && let Ok(c) = anthropic::request_to_canonical(req)
        {
            to_every_upstream(&c)?;
            let back = anthropic::request_from_canonical(&c).ok().and_then(|v| parse::<MessagesRequest>(&v));
            let again = back.map(anthropic::request_to_canonical);
            prop_assert!(matches!(again, Some(Ok(_))), "the Anthropic body made from canonical does not read back");
            if let Some(Ok(again)) = again {
                prop_assert_eq!(tool_ids(&again), tool_ids(&c));
            }
        }
    }

    #[test]
    fn fuzz_gemini_requests_convert_and_round_trip(body in prop_oneof![gemini_body(), json_value()],
            stream in any::<bool>()) {
        if let Ok(c) = gemini::request_to_canonical(&body, "m", stream) {
            to_every_upstream(&c)?;
            // A refusal (a tool result without its call) is a typed answer; a body we wrote must read back.
            if let Ok(out) = gemini::request_from_canonical(&c) {
                let again = gemini::request_to_canonical(&out, "m", stream);
                prop_assert!(again.is_ok(), "the Gemini body made from canonical does not read back: {:?}", again);
            }
        }
    }

    #[test]
    fn fuzz_response_conversions_never_panic(v in upstream_event()) {
        let mut answers = vec![
            openai::response_to_canonical(&v),
            anthropic::response_to_canonical(&v),
            gemini::response_to_canonical(&v),
        ];
        let mut one = answers[0].clone();
        anthropic::json_tool_to_text(&mut one);
        answers.push(one);
        for r in &answers {
            let _ = ocodec::response_from_canonical(r, 0);
            let _ = acodec::response_from_canonical(r);
            let _ = gcodec::response_from_canonical(r);
        }
    }

    #[test]
    fn fuzz_stream_conversions_never_panic(events in proptest::collection::vec(upstream_event(), 0..8)) {
        let mut o = ostream::ChunkDecoder::default();
        let mut a = astream::Decoder::default();
        let mut g = gstream::Decoder::default();
        let mut deltas = Vec::new();
        for e in &events {
            let bytes = serde_json::to_vec(e).unwrap_or_default();
            let _ = o.decode(&bytes, &mut deltas);
            let _ = a.decode(e, &mut deltas);
            let _ = g.decode(&bytes, &mut deltas);
            let _ = a.usage.get();
        }
        g.end(&mut deltas);
        encode_everywhere(&deltas);
    }
}

// --- Round trips -------------------------------------------------------------------------

/// Counts small enough that no protocol's sums overflow.
fn counts() -> impl Strategy<Value = TokenCounts> {
    let n = || 0u64..(1 << 40);
    (n(), n(), n(), n(), n()).prop_map(|(input, cached, cache_write, output, r)| TokenCounts {
        input,
        cached,
        cache_write,
        output,
        reasoning: r.min(output),
    })
}

/// Tool arguments without floats: serde_json reads a float back to the nearest value, not always
/// the same bits, which is its business and not a translation's.
fn plain_object() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-z_]{1,6}", value, 0..4).prop_map(|m| m.into_iter().collect())
}

#[derive(Debug, Clone)]
enum Item {
    Text(String),
    Thinking(String),
    Tool { id: String, name: String, args: Map<String, Value> },
}

fn items() -> impl Strategy<Value = Vec<Item>> {
    let item = prop_oneof![
        3 => "\\PC{0,12}".prop_map(Item::Text),
        1 => "\\PC{1,8}".prop_map(Item::Thinking),
        2 => ("call_[a-z0-9]{1,6}", "[a-z_]{1,8}", plain_object())
            .prop_map(|(id, name, args)| Item::Tool { id, name, args }),
    ];
    proptest::collection::vec(item, 0..6)
}

/// What a round trip must keep: the text, and each tool call's id, name and arguments.
#[derive(Debug, PartialEq, Default)]
struct Kept {
    text: String,
    tools: Vec<(String, String, Value)>,
    usage: Option<TokenCounts>,
}

/// The usage a protocol can carry: cache writes count as input where it has no field for them,
/// and Anthropic does not report reasoning apart.
fn carried(t: TokenCounts, cache_writes: bool, reasoning: bool) -> TokenCounts {
    TokenCounts {
        input: if cache_writes { t.input } else { t.input + t.cache_write },
        cache_write: if cache_writes { t.cache_write } else { 0 },
        reasoning: if reasoning { t.reasoning } else { 0 },
        ..t
    }
}

fn kept_of_items(items: &[Item], usage: Option<TokenCounts>) -> Kept {
    let mut k = Kept { usage, ..Kept::default() };
    for i in items {
        match i {
            Item::Text(t) => k.text.push_str(t),
            Item::Thinking(_) => {}
            Item::Tool { id, name, args } => k.tools.push((id.clone(), name.clone(), Value::Object(args.clone()))),
        }
    }
    k
}

fn kept_of_response(r: &Response) -> Kept {
    let mut k = Kept { usage: r.usage, ..Kept::default() };
    for p in &r.content {
        match p {
            Part::Text(t) => k.text.push_str(t),
            Part::ToolUse { id, name, input } => k.tools.push((id.clone(), name.clone(), input.clone())),
            _ => {}
        }
    }
    k
}

fn kept_of_deltas(deltas: &[Delta]) -> Kept {
    let mut k = Kept::default();
    let mut args: Vec<(usize, String)> = Vec::new();
    for d in deltas {
        match d {
            Delta::Text(t) => k.text.push_str(t),
            Delta::ToolCallStart { index, id, name } => {
                k.tools.push((id.clone(), name.clone(), Value::Null));
                args.push((*index, String::new()));
            }
            Delta::ToolCallArgs { index, json } => {
                if let Some((_, a)) = args.iter_mut().find(|(i, _)| i == index) {
                    a.push_str(json);
                }
            }
            Delta::Usage(t) => k.usage = Some(*t),
            _ => {}
        }
    }
    for (tool, (_, a)) in k.tools.iter_mut().zip(args) {
        tool.2 = if a.trim().is_empty() { json!({}) } else { serde_json::from_str(&a).unwrap_or(Value::String(a)) };
    }
    k
}

/// The deltas of a stream that says `items`, with usage and a finish.
fn deltas_of(items: &[Item], usage: TokenCounts, cuts: usize) -> Vec<Delta> {
    let mut out = vec![Delta::Start { id: "id-1".into(), model: "m".into() }];
    let mut n = 0;
    for i in items {
        match i {
            Item::Text(t) => out.push(Delta::Text(t.clone())),
            Item::Thinking(t) => out.push(Delta::Thinking(t.clone())),
            Item::Tool { id, name, args } => {
                out.push(Delta::ToolCallStart { index: n, id: id.clone(), name: name.clone() });
                // Arguments in fragments, as upstreams stream them.
                let json: Vec<char> = Value::Object(args.clone()).to_string().chars().collect();
                for piece in json.chunks(json.len().div_ceil(cuts.max(1)).max(1)) {
                    out.push(Delta::ToolCallArgs { index: n, json: piece.iter().collect() });
                }
                n += 1;
            }
        }
    }
    out.push(Delta::Usage(usage));
    let reason = if n > 0 { FinishReason::ToolCalls } else { FinishReason::Stop };
    out.push(Delta::Finish { reason, stop_sequence: None });
    out
}

fn sse_data(frames: &[bytes::Bytes]) -> Vec<bytes::Bytes> {
    let mut p = SseParser::default();
    let mut out = Vec::new();
    for f in frames {
        p.push(f);
        while let Ok(Some(e)) = p.next_event() {
            if let SseEvent::Data(d) = e {
                out.push(d);
            }
        }
    }
    if let Some(SseEvent::Data(d)) = p.finish() {
        out.push(d);
    }
    out
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_responses_keep_text_tool_calls_and_usage_through_every_protocol(items in items(),
            usage in proptest::option::of(counts())) {
        let content = items.iter().map(|i| match i {
            Item::Text(t) => Part::Text(t.clone()),
            Item::Thinking(t) => Part::Thinking { text: t.clone(), signature: None },
            Item::Tool { id, name, args } =>
                Part::ToolUse { id: id.clone(), name: name.clone(), input: Value::Object(args.clone()) },
        }).collect();
        let r = Response { id: "id-1".into(), model: "m".into(), content, finish: Some(FinishReason::Stop),
            stop_sequence: None, usage };
        let via_openai = openai::response_to_canonical(&ocodec::response_from_canonical(&r, 0));
        prop_assert_eq!(kept_of_response(&via_openai), kept_of_items(&items, usage.map(|u| carried(u, false, true))));
        let via_anthropic = anthropic::response_to_canonical(&acodec::response_from_canonical(&r));
        prop_assert_eq!(kept_of_response(&via_anthropic),
            kept_of_items(&items, Some(carried(usage.unwrap_or_default(), true, false))));
        let via_gemini = gemini::response_to_canonical(&gcodec::response_from_canonical(&r));
        prop_assert_eq!(kept_of_response(&via_gemini), kept_of_items(&items, usage.map(|u| carried(u, false, true))));
    }

    #[test]
    fn fuzz_streams_keep_text_tool_calls_and_usage_through_every_protocol(items in items(), usage in counts(),
            cuts in 1usize..4) {
        let deltas = deltas_of(&items, usage, cuts);

        let mut enc = ocodec::ChunkEncoder::new(0, true);
        let mut frames = Vec::new();
        for d in deltas.clone() {
            enc.encode(d, &mut frames);
        }
        frames.extend(enc.usage_frame());
        let mut dec = ostream::ChunkDecoder::default();
        let mut back = Vec::new();
        for data in sse_data(&frames) {
            prop_assert!(dec.decode(&data, &mut back).is_ok());
        }
        prop_assert_eq!(kept_of_deltas(&back), kept_of_items(&items, Some(carried(usage, false, true))));

        let mut enc = acodec::Encoder::default();
        let mut frames = Vec::new();
        for d in deltas.clone() {
            enc.encode(d, &mut frames);
        }
        enc.end(&mut frames);
        frames.push(acodec::Encoder::stop_frame());
        let mut dec = astream::Decoder::default();
        let mut back = Vec::new();
        for data in sse_data(&frames) {
            let v: Value = serde_json::from_slice(&data).unwrap_or_default();
            prop_assert_ne!(dec.decode(&v, &mut back), astream::Step::Invalid);
        }
        prop_assert_eq!(kept_of_deltas(&back), kept_of_items(&items, Some(carried(usage, true, false))));

        let mut enc = gcodec::Encoder::new(gcodec::Framing::Sse);
        let mut frames = Vec::new();
        for d in deltas {
            enc.encode(d, &mut frames);
        }
        enc.end(&mut frames);
        let mut dec = gstream::Decoder::default();
        let mut back = Vec::new();
        for data in sse_data(&frames) {
            prop_assert_eq!(dec.decode(&data, &mut back), gstream::Step::More);
        }
        prop_assert!(dec.finished());
        prop_assert_eq!(kept_of_deltas(&back), kept_of_items(&items, Some(carried(usage, false, true))));
    }
}

/// Found by `fuzz_stream_conversions_never_panic`: usage sums overflowed (a panic in a debug
/// build, wrapped counts in a release one) on an upstream's huge numbers. They saturate now.
#[test]
fn fuzz_regression_huge_usage_numbers_saturate() {
    let max = u64::MAX;
    let huge = TokenCounts { input: max, cached: max, cache_write: max, output: max, reasoning: max };
    assert_eq!(openai::usage_json(&huge)["total_tokens"], json!(max));
    assert_eq!(gemini::usage_json(&huge)["totalTokenCount"], json!(max));
    let gemini_usage = json!({"promptTokenCount": max, "toolUsePromptTokenCount": 1,
        "candidatesTokenCount": max, "thoughtsTokenCount": 1});
    assert_eq!(gemini::usage_from(&gemini_usage).map(|t| (t.input, t.output)), Some((max, max)));
    let deepseek = serde_json::value::to_raw_value(&json!({"prompt_cache_hit_tokens": max,
        "prompt_cache_miss_tokens": 1, "completion_tokens": 1}));
    let counts = deepseek.ok().and_then(|raw| crate::usage::from_openai(&raw)).map(|(t, _)| (t.input, t.cached));
    assert_eq!(counts, Some((0, max)));
}
