//! Parsing a `/v1` request body once: size limit, UTF-8, JSON syntax with the failing field path,
//! the few fields the gateway needs (`model`, `stream`, `stream_options`, `user`), refused fields,
//! the bounds of [`crate::limits`] (identifier lengths, parameter ranges, message counts), and
//! the body to send upstream — the client's own bytes unless `stream_options` must change.
//! No routing, no upstream I/O.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use adapters::openai;
use axum::body::Body;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, de};
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::limits::{self, Limits, MAX_MODEL_BYTES, MAX_USER_BYTES};
use crate::protocol::Protocol;

/// The OpenAI-compatible endpoints the gateway proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/messages` (Anthropic's protocol).
    Messages,
    /// `POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent` (Gemini's).
    GenerateContent,
}

impl Endpoint {
    /// The name used in events.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Messages => "messages",
            Endpoint::GenerateContent => "generate_content",
        }
    }

    /// The client's protocol.
    pub fn protocol(self) -> Protocol {
        match self {
            Endpoint::Messages => Protocol::Anthropic,
            Endpoint::GenerateContent => Protocol::Gemini,
            Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings => Protocol::OpenAi,
        }
    }

    /// The endpoint of an OpenAI channel a call of this endpoint goes to.
    pub fn openai(self) -> openai::Endpoint {
        match self {
            Endpoint::ChatCompletions => openai::Endpoint::ChatCompletions,
            Endpoint::Completions => openai::Endpoint::Completions,
            Endpoint::Embeddings => openai::Endpoint::Embeddings,
            // Never sent to an OpenAI channel as such: these calls are translated to chat.
            Endpoint::Messages | Endpoint::GenerateContent => openai::Endpoint::ChatCompletions,
        }
    }

    fn streams(self) -> bool {
        !matches!(self, Endpoint::Embeddings)
    }
}

/// Fields that would redirect the upstream call or replace its credential in a router that
/// honoured them; never forwarded (CVE-2024-6587 class). No vendor API has them at the top level:
/// the SDKs' `extra_body` / `extra_headers` are unwrapped on the client, so on the wire they are
/// someone's attempt at configuration. Inside objects that carry client data (`metadata`, tool
/// arguments) the same names are only data: forwarded as such, never read by the gateway.
const REFUSED_FIELDS: &[&str] = &[
    "api_base",
    "base_url",
    "api_key",
    "proxy",
    "proxies",
    "http_proxy",
    "https_proxy",
    "extra_headers",
    "extra_body",
];

/// A request, parsed and ready to send.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Which endpoint.
    pub endpoint: Endpoint,
    /// The model asked for.
    pub model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether the client itself asked for the usage chunk (`stream_options.include_usage`).
    pub client_wants_usage: bool,
    /// The `user` field, if any.
    pub user: Option<String>,
    /// The client's body as received (kept for token estimation).
    pub original: Bytes,
    /// What goes upstream.
    pub upstream_body: Bytes,
}

impl Prepared {
    /// The same request for another model (a route's fallback): `model` and the top-level
    /// `model` field of both bodies replaced (bodies without one, as Gemini's, are kept). `None`
    /// when a body that names a model cannot be rewritten.
    pub fn with_model(&self, model: &str) -> Option<Prepared> {
        fn rewrite(body: &Bytes, model: &str) -> Option<Bytes> {
            const FIELD: &[u8] = b"\"model\"";
            if !body.windows(FIELD.len()).any(|w| w == FIELD) {
                return Some(body.clone());
            }
            let mut fields: std::collections::BTreeMap<String, Box<serde_json::value::RawValue>> =
                serde_json::from_slice(body).ok()?;
            if let Some(v) = fields.get_mut("model") {
                *v = serde_json::value::to_raw_value(model).ok()?;
            }
            serde_json::to_vec(&fields).ok().map(Bytes::from)
        }
        Some(Prepared {
            endpoint: self.endpoint,
            model: model.to_owned(),
            stream: self.stream,
            client_wants_usage: self.client_wants_usage,
            user: self.user.clone(),
            original: rewrite(&self.original, model)?,
            upstream_body: rewrite(&self.upstream_body, model)?,
        })
    }

    /// The request for an OpenAI-compatible channel.
    pub fn openai(&self) -> openai::Request<'_> {
        openai::Request {
            endpoint: self.endpoint.openai(),
            model: &self.model,
            upstream_body: &self.upstream_body,
            original: &self.original,
        }
    }
}

/// Reads the body, stopping at `limit` bytes whether or not a `Content-Length` was sent.
pub async fn read_body(body: Body, limit: usize, content_length: Option<u64>) -> Result<Bytes, ApiError> {
    if content_length.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::TooLarge { limit });
    }
    match axum::body::to_bytes(body, limit).await {
        Ok(b) => Ok(b),
        Err(e) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return Err(ApiError::TooLarge { limit });
                }
                if err.is::<crate::server::BodyReadTimeout>() {
                    return Err(ApiError::RequestTimeout);
                }
                source = err.source();
            }
            Err(ApiError::InvalidJson { message: "The request body could not be read.".into(), param: None })
        }
    }
}

/// Parses and validates `body` for `endpoint` within `limits`.
pub fn prepare(endpoint: Endpoint, body: Bytes, limits: &Limits) -> Result<Prepared, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidJson { message: "The request body is not valid UTF-8.".into(), param: None })?;
    let fields = parse_object(text)?;
    check_duplicates(&fields)?;

    let mut model: Option<String> = None;
    let mut stream = false;
    let mut stream_options: Option<&RawValue> = None;
    let mut user = None;
    for (k, v) in &fields {
        match k.as_ref() {
            k if REFUSED_FIELDS.contains(&k) => return Err(ApiError::UnsupportedParameter { param: k.to_owned() }),
            "model" => {
                let m = field::<String>(v, "model", "a string")?;
                limits::identifier(&m, "model", MAX_MODEL_BYTES)?;
                model = Some(m);
            }
            "stream" if endpoint.streams() => {
                stream = field::<Option<bool>>(v, "stream", "a boolean")?.unwrap_or(false)
            }
            "stream_options" if endpoint.streams() && endpoint != Endpoint::Messages => stream_options = Some(v),
            "user" if endpoint != Endpoint::Messages => {
                user = field::<Option<String>>(v, "user", "a string")?;
                if let Some(u) = &user {
                    limits::identifier(u, "user", MAX_USER_BYTES)?;
                }
            }
            "metadata" if endpoint == Endpoint::Messages => {
                user = field::<Option<AnthropicMetadata>>(v, "metadata", "an object")?.and_then(|m| m.user_id);
                if let Some(u) = &user {
                    limits::identifier(u, "metadata.user_id", MAX_USER_BYTES)?;
                }
            }
            "messages" if matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Messages) => {
                limits::entries(check_messages(v)?, "messages", limits.max_messages)?
            }
            k => limits.check_field(endpoint, k, v)?,
        }
    }
    let model = model.ok_or_else(|| ApiError::MissingParameter { param: "model".into() })?;
    let mut client_wants_usage = false;
    let mut options = serde_json::Map::new();
    if let Some(raw) = stream_options {
        if let Some(o) =
            field::<Option<serde_json::Map<String, serde_json::Value>>>(raw, "stream_options", "an object")?
        {
            options = o;
        }
        match options.get("include_usage") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Bool(b)) => client_wants_usage = *b,
            Some(_) => {
                return Err(ApiError::InvalidJson {
                    message: "Invalid type for 'stream_options.include_usage': expected a boolean.".into(),
                    param: Some("stream_options.include_usage".into()),
                });
            }
        }
    }
    // Anthropic streams always carry usage: a `/v1/messages` body goes upstream untouched.
    let upstream_body = if stream && !client_wants_usage && endpoint != Endpoint::Messages {
        options.insert("include_usage".into(), serde_json::Value::Bool(true));
        rewrite(&fields, body.len(), &options)
    } else {
        // Nothing to change: the client's bytes go upstream as they are.
        body.clone()
    };
    Ok(Prepared { endpoint, model, stream, client_wants_usage, user, original: body, upstream_body })
}

/// Parses and validates a Gemini `generateContent` body; the model and streaming come from the
/// URL. The body goes upstream as received (a Gemini stream always carries usage).
pub fn prepare_gemini(model: &str, stream: bool, body: Bytes, limits: &Limits) -> Result<Prepared, ApiError> {
    limits::identifier(model, "model", MAX_MODEL_BYTES)?;
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::InvalidJson { message: "The request body is not valid UTF-8.".into(), param: None })?;
    let fields = parse_object(text)?;
    check_duplicates(&fields)?;
    let mut contents = false;
    for (k, v) in &fields {
        match k.as_ref() {
            k if REFUSED_FIELDS.contains(&k) => return Err(ApiError::UnsupportedParameter { param: k.to_owned() }),
            "contents" => {
                limits::entries(check_contents(v)?, "contents", limits.max_messages)?;
                contents = true;
            }
            "generationConfig" | "generation_config" => limits.check_generation_config(v)?,
            _ => {}
        }
    }
    if !contents {
        return Err(ApiError::MissingParameter { param: "contents".into() });
    }
    if model.is_empty() {
        return Err(ApiError::MissingParameter { param: "model".into() });
    }
    Ok(Prepared {
        endpoint: Endpoint::GenerateContent,
        model: model.to_owned(),
        stream,
        client_wants_usage: true,
        user: None,
        original: body.clone(),
        upstream_body: body,
    })
}

/// The shape every Gemini content must have: an object whose `parts` is an array of objects.
#[derive(Deserialize)]
struct ContentShape<'a> {
    #[serde(borrow)]
    #[expect(dead_code, reason = "only its presence and type are checked")]
    parts: Vec<&'a RawValue>,
}

/// Checks the shape of `contents` and returns how many there are.
fn check_contents(raw: &RawValue) -> Result<usize, ApiError> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize::<_, Vec<ContentShape<'_>>>(&mut de).map(|c| c.len()).map_err(|e| {
        let path = e.path().to_string();
        let param = shown_param(if path == "." { "contents".to_owned() } else { format!("contents{path}") });
        ApiError::InvalidJson {
            message: format!("Invalid '{param}': expected an array of contents, each an object with a 'parts' array."),
            param: Some(param),
        }
    })
}

#[derive(Deserialize)]
struct AnthropicMetadata {
    #[serde(default)]
    user_id: Option<String>,
}

/// Rebuilds the object from its raw fields with a new `stream_options`.
fn rewrite(
    fields: &[(Cow<'_, str>, &RawValue)],
    size_hint: usize,
    options: &serde_json::Map<String, serde_json::Value>,
) -> Bytes {
    let mut out = BytesMut::with_capacity(size_hint + 32);
    out.put_u8(b'{');
    let mut first = true;
    for (k, v) in fields.iter().filter(|(k, _)| k != "stream_options") {
        if !first {
            out.put_u8(b',');
        }
        first = false;
        let _ = serde_json::to_writer((&mut out).writer(), k.as_ref());
        out.put_u8(b':');
        out.put_slice(v.get().as_bytes());
    }
    if !first {
        out.put_u8(b',');
    }
    out.put_slice(b"\"stream_options\":");
    let _ = serde_json::to_writer((&mut out).writer(), options);
    out.put_u8(b'}');
    out.freeze()
}

/// The shape every chat message must have; everything else in a message passes through unread.
#[derive(Deserialize)]
struct MessageShape<'a> {
    #[serde(borrow)]
    #[expect(dead_code, reason = "only its presence and type are checked")]
    role: Cow<'a, str>,
}

/// `messages` must be an array of objects with a string `role`. Checked here so a malformed
/// request gets a 400 naming the field instead of costing an upstream round trip. Nesting deeper
/// than serde_json's recursion limit (128) is refused the same way, never a stack overflow.
/// Returns how many messages there are.
fn check_messages(raw: &RawValue) -> Result<usize, ApiError> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde_path_to_error::deserialize::<_, Vec<MessageShape<'_>>>(&mut de).map(|m| m.len()).map_err(|e| {
        let path = e.path().to_string();
        let param = shown_param(if path == "." { "messages".to_owned() } else { format!("messages{path}") });
        ApiError::InvalidJson {
            message: format!("Invalid '{param}': expected an array of messages, each an object with a string 'role'."),
            param: Some(param),
        }
    })
}

fn field<'a, T: Deserialize<'a>>(raw: &'a RawValue, name: &str, expected: &str) -> Result<T, ApiError> {
    serde_json::from_str(raw.get()).map_err(|_| ApiError::InvalidJson {
        message: format!("Invalid type for '{name}': expected {expected}."),
        param: Some(name.to_owned()),
    })
}

fn check_duplicates(fields: &[(Cow<'_, str>, &RawValue)]) -> Result<(), ApiError> {
    let dup = |k: &str| {
        let k = shown_param(k.to_owned());
        ApiError::InvalidJson { message: format!("Duplicate field '{k}'."), param: Some(k) }
    };
    // Small objects (the usual case) are checked without allocating.
    if fields.len() <= 16 {
        for (i, (k, _)) in fields.iter().enumerate() {
            if fields[..i].iter().any(|(p, _)| p == k) {
                return Err(dup(k));
            }
        }
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(fields.len());
    for (k, _) in fields {
        if !seen.insert(k.as_ref()) {
            return Err(dup(k));
        }
    }
    Ok(())
}

/// Parses the top-level object into borrowed raw fields, reporting the failing path.
fn parse_object(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed: Result<RawObject<'_>, _> = serde_path_to_error::deserialize(&mut de);
    let obj = parsed.map_err(|e| {
        let path = e.path().to_string();
        // A syntax error between fields has no field to name (serde_path_to_error shows the
        // unknown segment as `?`): `param` is then null.
        let param = (path != "." && !path.is_empty() && !path.contains('?')).then(|| shown_param(path));
        let inner = e.into_inner();
        let message = match inner.classify() {
            serde_json::error::Category::Data => "The request body must be a JSON object.".to_owned(),
            _ => format!("We could not parse the JSON body of your request: {inner}."),
        };
        ApiError::InvalidJson { message, param }
    })?;
    de.end().map_err(|e| ApiError::InvalidJson {
        message: format!("We could not parse the JSON body of your request: {e}."),
        param: None,
    })?;
    Ok(obj.0)
}

/// Longest field path shown in an error. A path names the client's keys, and a key can be as long
/// as the body: past this, only its start is shown (at a character boundary), so an error never
/// echoes megabytes of the request.
const MAX_SHOWN_PARAM: usize = 128;

fn shown_param(mut path: String) -> String {
    if path.len() > MAX_SHOWN_PARAM {
        let mut end = MAX_SHOWN_PARAM;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
        path.push('…');
    }
    path
}

struct RawObject<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

/// An object key, borrowed when it has no escapes. Deserialised through `deserialize_str` so that
/// serde_path_to_error sees it and can name the failing field.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(RawObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_stream_body_is_forwarded_byte_for_byte() -> Result<(), ApiError> {
        let body = Bytes::from_static(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"x":{"y":1}}"#);
        let p = prepare(Endpoint::ChatCompletions, body.clone(), &Limits::default())?;
        assert_eq!(p.upstream_body, body);
        assert!(!p.stream);
        Ok(())
    }

    #[test]
    fn stream_body_gets_include_usage_and_keeps_other_fields() -> Result<(), ApiError> {
        let body = Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"x":1},"t\"k":[1, 2]}"#);
        let p = prepare(Endpoint::ChatCompletions, body, &Limits::default())?;
        let v: serde_json::Value = serde_json::from_slice(&p.upstream_body).unwrap_or_default();
        assert_eq!(v["stream_options"], serde_json::json!({"x": 1, "include_usage": true}));
        assert_eq!(v["t\"k"], serde_json::json!([1, 2]));
        assert!(!p.client_wants_usage);
        Ok(())
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (br#"{"model": 5}"#, Some("model"), "invalid_json"),
            (br#"{"model":"m","messages":[{"a":}]}"#, Some("messages"), "invalid_json"),
            (br#"{"model":"m","messages":"hi"}"#, Some("messages"), "invalid_json"),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, Some("messages[0]"), "invalid_json"),
            (br#"{"model":"m","messages":[{"role":"user"},{"role":7}]}"#, Some("messages[1].role"), "invalid_json"),
            (br#"{"model":"m","model":"n"}"#, Some("model"), "invalid_json"),
            (br#"{"model":"m","api_base":"http://x"}"#, Some("api_base"), "unsupported_parameter"),
            (br#"[1]"#, None, "invalid_json"),
            (br#"{"model":"m"} x"#, None, "invalid_json"),
            (b"{\"model\":\"\xff\"}", None, "invalid_json"),
        ];
        for (body, param, code) in cases {
            match prepare(Endpoint::ChatCompletions, Bytes::copy_from_slice(body), &Limits::default()) {
                Err(e) => {
                    assert_eq!(e.code(), Some(*code), "{}", String::from_utf8_lossy(body));
                    let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap_or_default();
                    assert_eq!(v["error"]["param"].as_str(), *param, "{}", String::from_utf8_lossy(body));
                }
                Ok(_) => unreachable!("accepted {}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // Raw values are skipped without recursion, so depth costs nothing here; only the
        // estimator parses deeply, and serde_json's recursion limit stops it.
        let mut s = String::from(r#"{"model":"m","messages":"#);
        s.push_str(&"[".repeat(100_000));
        s.push_str(&"]".repeat(100_000));
        s.push('}');
        let body = Bytes::from(s);
        // Refused with a 400 (serde_json's recursion limit), not a stack overflow.
        assert!(prepare(Endpoint::ChatCompletions, body.clone(), &Limits::default()).is_err());
        // The estimator cannot parse it either, and counts it by bytes rather than as free.
        assert!(crate::tokenizer::prompt_tokens(Endpoint::ChatCompletions, "m", &body) > 0);
        let unbalanced = Bytes::from(format!("{{\"model\":\"m\",\"x\":{}}}", "[".repeat(100_000)));
        assert!(prepare(Endpoint::ChatCompletions, unbalanced, &Limits::default()).is_err());
    }
}

#[cfg(test)]
mod openai_body_tests {
    use adapters::openai::body_for;
    use adapters::{Channel, presets};

    use super::*;

    #[test]
    fn stream_options_reach_only_vendors_that_accept_them() -> Result<(), ApiError> {
        let preset = |name: &str| Channel { preset: presets::for_provider(name), ..tests_channel() };
        let limits = crate::limits::Limits::default();
        let plain = prepare(Endpoint::ChatCompletions, Bytes::from_static(br#"{"model":"m","stream":true}"#), &limits)?;
        let v = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap_or_default();
        assert_eq!(v(body_for(&preset("deepseek"), &plain.openai()))["stream_options"]["include_usage"], true);
        assert_eq!(body_for(&preset("mistral"), &plain.openai()), plain.original);
        let asked = prepare(
            Endpoint::ChatCompletions,
            Bytes::from_static(br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"x":[1, 2]}"#),
            &limits,
        )?;
        let sent = v(body_for(&preset("zhipu"), &asked.openai()));
        assert!(sent.get("stream_options").is_none(), "{sent}");
        assert_eq!(sent["x"], serde_json::json!([1, 2]));
        assert_eq!(body_for(&preset("openai"), &asked.openai()), asked.original);
        Ok(())
    }

    fn tests_channel() -> Channel {
        Channel {
            id: "ch_t".into(),
            tenant: schemas::GLOBAL_TENANT.into(),
            provider: "openai".into(),
            preset: presets::for_provider("openai"),
            api_version: None,
            base_url: "http://127.0.0.1:1/v1".into(),
            api_key: None,
            key_unusable: false,
            models: vec![],
            priority: 0,
            weight: 1,
            enabled: true,
            egress_refused: None,
            anthropic_beta: Vec::new(),
            proxy_pool: None,
        }
    }
}
