//! The request parser ([`crate::request::prepare`] for the OpenAI and Anthropic surfaces,
//! [`crate::request::prepare_gemini`] for Gemini's) on any body: it never panics, answers either
//! a [`Prepared`] request that keeps the client's bytes or a 400/413 whose body stays small
//! whatever the input (fault catalogue rows 18, 19 and 42).

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::{bytes, config, json_object, json_value, text};
use crate::error::ApiError;
use crate::limits::{Limits, MAX_MODEL_BYTES, MAX_USER_BYTES};
use crate::request::{Endpoint, Prepared, prepare, prepare_gemini};

/// The largest error body any input may produce: the message names a field and a bound, and
/// the `param` is a field path, never the value (nor a client key longer than a name).
const MAX_ERROR_BODY: usize = 1024;

const ENDPOINTS: [Endpoint; 4] =
    [Endpoint::ChatCompletions, Endpoint::Completions, Endpoint::Embeddings, Endpoint::Messages];

/// A body's top-level fields, values left as sent.
type Fields = std::collections::BTreeMap<String, Box<serde_json::value::RawValue>>;

/// What must hold for every outcome of parsing `body`.
fn check(endpoint: Endpoint, body: &[u8], outcome: Result<Prepared, ApiError>) -> Result<(), TestCaseError> {
    match outcome {
        Ok(p) => check_prepared(endpoint, body, &p),
        Err(e) => check_error(&e),
    }
}

fn check_error(e: &ApiError) -> Result<(), TestCaseError> {
    let status = e.status_code().as_u16();
    // Only the start of the error in failure messages: the point is that it may be huge.
    let shown: String = e.body().iter().take(300).map(|&b| char::from(b)).collect();
    prop_assert!(status == 400 || status == 413, "status {status} for {shown}");
    for shaped in [e.body(), e.anthropic_body(), e.gemini_body()] {
        prop_assert!(shaped.len() <= MAX_ERROR_BODY, "error body of {} bytes: {shown}", shaped.len());
        prop_assert!(serde_json::from_slice::<Value>(&shaped).is_ok(), "error body is not JSON: {shown}");
    }
    Ok(())
}

fn check_prepared(endpoint: Endpoint, body: &[u8], p: &Prepared) -> Result<(), TestCaseError> {
    prop_assert_eq!(&p.original[..], body);
    prop_assert!(p.model.len() <= MAX_MODEL_BYTES);
    prop_assert!(p.user.as_ref().is_none_or(|u| u.len() <= MAX_USER_BYTES));
    // Fields compared as raw text: values nested deeper than serde_json's recursion limit pass
    // through unread, and must still arrive byte for byte.
    let sent: Fields = match serde_json::from_slice(&p.upstream_body) {
        Ok(m) => m,
        Err(e) => return Err(TestCaseError::fail(format!("upstream body is not a JSON object: {e}"))),
    };
    let received: Fields = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => return Err(TestCaseError::fail(format!("accepted a body that is not a JSON object: {e}"))),
    };
    let model = received.get("model").and_then(|m| serde_json::from_str::<String>(m.get()).ok());
    prop_assert_eq!(model.as_deref(), Some(p.model.as_str()));
    if p.stream && !p.client_wants_usage && endpoint != Endpoint::Messages {
        // Rewritten only to ask for the usage chunk: every other field as the client sent it.
        let options = sent.get("stream_options").and_then(|o| serde_json::from_str::<Value>(o.get()).ok());
        prop_assert_eq!(options.as_ref().and_then(|o| o.get("include_usage")), Some(&json!(true)));
        let strip = |m: &Fields| {
            m.iter()
                .filter(|(k, _)| *k != "stream_options")
                .map(|(k, v)| (k.clone(), v.get().to_owned()))
                .collect::<Vec<_>>()
        };
        prop_assert_eq!(strip(&sent), strip(&received));
    } else {
        prop_assert_eq!(&p.upstream_body[..], body, "the client's bytes must go upstream unchanged");
    }
    Ok(())
}

/// A message of the right shape, so that bodies get past the message check.
fn message() -> impl Strategy<Value = Value> {
    (text(), prop_oneof![text().prop_map(Value::String), json_value()])
        .prop_map(|(role, content)| json!({"role": role, "content": content}))
}

/// Bodies that are mostly well-formed: arbitrary fields plus, often, the ones the parser reads.
fn body() -> impl Strategy<Value = Map<String, Value>> {
    (
        json_object(),
        proptest::option::weighted(0.9, "[a-z0-9.-]{1,12}"),
        proptest::option::weighted(0.5, prop_oneof![any::<bool>().prop_map(Value::Bool), json_value()]),
        proptest::option::weighted(0.5, proptest::collection::vec(message(), 0..4)),
        proptest::option::weighted(
            0.3,
            prop_oneof![any::<bool>().prop_map(|b| json!({"include_usage": b})), json_value()],
        ),
    )
        .prop_map(|(mut m, model, stream, messages, options)| {
            if let Some(model) = model {
                m.insert("model".into(), Value::String(model));
            }
            if let Some(s) = stream {
                m.insert("stream".into(), s);
            }
            if let Some(msgs) = messages {
                m.insert("messages".into(), Value::Array(msgs));
            }
            if let Some(o) = options {
                m.insert("stream_options".into(), o);
            }
            m
        })
}

fn to_bytes(m: &Map<String, Value>) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

/// Byte sequences that are never valid UTF-8 (a lone continuation byte, an overlong encoding,
/// a surrogate, a truncated sequence).
const INVALID_UTF8: &[&[u8]] = &[b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82"];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_request_parser_survives_arbitrary_bytes(body in bytes(512)) {
        for endpoint in ENDPOINTS {
            check(endpoint, &body, prepare(endpoint, Bytes::from(body.clone()), &Limits::default()))?;
        }
        match prepare_gemini("gemini-2.5-flash", false, Bytes::from(body), &Limits::default()) {
            Ok(p) => prop_assert_eq!(p.upstream_body, p.original),
            Err(e) => check_error(&e)?,
        }
    }

    #[test]
    fn fuzz_request_parser_accepts_or_refuses_any_json_body(m in body()) {
        let body = to_bytes(&m);
        for endpoint in ENDPOINTS {
            check(endpoint, &body, prepare(endpoint, Bytes::from(body.clone()), &Limits::default()))?;
        }
    }

    #[test]
    fn fuzz_request_parser_refuses_invalid_utf8_anywhere(m in body(), at in any::<prop::sample::Index>(),
            bad in prop::sample::select(INVALID_UTF8)) {
        let mut body = to_bytes(&m);
        let at = at.index(body.len() + 1);
        body.splice(at..at, bad.iter().copied());
        for endpoint in ENDPOINTS {
            match prepare(endpoint, Bytes::from(body.clone()), &Limits::default()) {
                Ok(_) => prop_assert!(false, "accepted invalid UTF-8"),
                Err(e) => {
                    check_error(&e)?;
                    prop_assert_eq!(e.code(), Some("invalid_json"));
                }
            }
        }
        prop_assert!(prepare_gemini("m", true, Bytes::from(body), &Limits::default()).is_err());
    }

    #[test]
    fn fuzz_request_parser_refuses_duplicate_keys(m in body(), pick in any::<prop::sample::Index>(),
            value in json_value()) {
        prop_assume!(!m.is_empty());
        let keys: Vec<&String> = m.keys().collect();
        let dup = keys[pick.index(keys.len())].clone();
        // serde_json's map cannot hold a duplicate: write the second field by hand.
        let mut body = to_bytes(&m);
        body.pop();
        body.push(b',');
        body.extend(serde_json::to_vec(&dup).unwrap_or_default());
        body.push(b':');
        body.extend(serde_json::to_vec(&value).unwrap_or_default());
        body.push(b'}');
        for endpoint in ENDPOINTS {
            let outcome = prepare(endpoint, Bytes::from(body.clone()), &Limits::default());
            prop_assert!(outcome.is_err(), "accepted a duplicate '{}'", dup);
            check(endpoint, &body, outcome)?;
        }
        let outcome = prepare_gemini("m", false, Bytes::from(body), &Limits::default());
        prop_assert!(outcome.is_err(), "Gemini accepted a duplicate '{}'", dup);
    }

    #[test]
    fn fuzz_gemini_request_parser_accepts_or_refuses_any_body(model in "\\PC{0,300}", stream in any::<bool>(),
            mut m in json_object(), contents in proptest::option::of(json_value())) {
        if let Some(c) = contents {
            m.insert("contents".into(), c);
        }
        let body = to_bytes(&m);
        match prepare_gemini(&model, stream, Bytes::from(body.clone()), &Limits::default()) {
            Ok(p) => {
                prop_assert_eq!(&p.upstream_body[..], &body[..]);
                prop_assert_eq!(p.model, model);
                prop_assert_eq!(p.stream, stream);
            }
            Err(e) => check_error(&e)?,
        }
    }
}

/// Values nested 10,000 deep, balanced and not, in every field the parser reads.
fn deep_values() -> Vec<String> {
    const DEPTH: usize = 10_000;
    vec![
        format!("{}{}", "[".repeat(DEPTH), "]".repeat(DEPTH)),
        "[".repeat(DEPTH),
        format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH)),
        "{\"a\":".repeat(DEPTH),
        format!("[{{\"role\":\"user\",\"content\":{}{}}}]", "[".repeat(DEPTH), "]".repeat(DEPTH)),
    ]
}

#[test]
fn fuzz_deep_nesting_in_any_field_is_a_400_or_passes_through_never_a_stack_overflow() -> Result<(), TestCaseError> {
    let fields = ["messages", "model", "stream", "stream_options", "user", "metadata", "n", "tools", "x"];
    for value in deep_values() {
        for field in fields {
            let body = format!("{{\"model\":\"m\",\"{field}\":{value}}}");
            for endpoint in ENDPOINTS {
                check(endpoint, body.as_bytes(), prepare(endpoint, Bytes::from(body.clone()), &Limits::default()))?;
            }
        }
        for field in ["contents", "generationConfig", "x"] {
            let body = format!("{{\"contents\":[],\"{field}\":{value}}}");
            if let Err(e) = prepare_gemini("m", false, Bytes::from(body), &Limits::default()) {
                check_error(&e)?;
            }
        }
        // The whole body nested.
        for endpoint in ENDPOINTS {
            check(endpoint, value.as_bytes(), prepare(endpoint, Bytes::from(value.clone()), &Limits::default()))?;
        }
    }
    Ok(())
}

#[test]
fn fuzz_regression_a_huge_key_is_not_echoed_in_the_error() -> Result<(), TestCaseError> {
    let key = "k".repeat(1 << 20);
    let bodies = [
        // A syntax error inside the value of a huge key: the failing path is that key.
        format!("{{\"model\":\"m\",\"{key}\":tru}}"),
        // A huge key twice.
        format!("{{\"model\":\"m\",\"{key}\":1,\"{key}\":2}}"),
        // A type error under a huge key inside a message.
        format!("{{\"model\":\"m\",\"messages\":[{{\"role\":\"user\",\"{key}\":[1,}}]}}"),
    ];
    for body in bodies {
        for endpoint in ENDPOINTS {
            check(endpoint, body.as_bytes(), prepare(endpoint, Bytes::from(body.clone()), &Limits::default()))?;
        }
        if let Err(e) = prepare_gemini("m", false, Bytes::from(body), &Limits::default()) {
            check_error(&e)?;
        }
    }
    Ok(())
}
