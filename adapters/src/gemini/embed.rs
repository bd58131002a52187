//! OpenAI `/v1/embeddings` ⇄ Gemini `batchEmbedContents`: one Gemini request per input text,
//! `dimensions` as `outputDimensionality`, and the answer in OpenAI's list shape, as floats or
//! (`encoding_format: "base64"`, what the `openai` SDK asks for by default) as base64 of
//! little-endian `f32`s. Gemini reports no usage for embeddings, so the caller estimates it.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::canonical::Unsupported;

/// A Gemini embedding request, and how the client wants the vectors back.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedRequest {
    /// The `batchEmbedContents` body.
    pub body: Value,
    /// Base64 rather than float arrays.
    pub base64: bool,
}

/// OpenAI embeddings request → Gemini `batchEmbedContents` body.
pub fn request(openai: &Value, model: &str) -> Result<EmbedRequest, Unsupported> {
    let obj = openai.as_object().cloned().unwrap_or_default();
    let mut texts = Vec::new();
    let mut base64 = false;
    let mut dims = None;
    for (k, v) in obj.iter().filter(|(_, v)| !v.is_null()) {
        match k.as_str() {
            "model" | "user" => {}
            "input" => {
                texts = match v {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        items.iter().filter_map(Value::as_str).map(str::to_owned).collect()
                    }
                    _ => {
                        return Err(Unsupported::new(
                            "input",
                            "Token arrays are not supported by this model's provider; send text.",
                        ));
                    }
                }
            }
            "encoding_format" => match v.as_str() {
                Some("float") => {}
                Some("base64") => base64 = true,
                _ => return Err(Unsupported::new("encoding_format", "'encoding_format' must be 'float' or 'base64'.")),
            },
            "dimensions" => dims = v.as_u64(),
            _ => return Err(Unsupported::new(k.clone(), format!("'{k}' is not supported by this model's provider."))),
        }
    }
    let requests: Vec<Value> = texts
        .into_iter()
        .map(|t| {
            let mut r = Map::new();
            r.insert("model".into(), json!(format!("models/{model}")));
            r.insert("content".into(), json!({"parts": [{"text": t}]}));
            if let Some(d) = dims {
                r.insert("outputDimensionality".into(), json!(d));
            }
            Value::Object(r)
        })
        .collect();
    Ok(EmbedRequest { body: json!({"requests": requests}), base64 })
}

/// Gemini `batchEmbedContents` answer → OpenAI's embedding list; `None` when it is not one.
pub fn response(gemini: &Value, model: &str, base64: bool, prompt_tokens: u64) -> Option<Value> {
    let answer = super::wire::BatchEmbedContentsResponse::deserialize(gemini).ok()?;
    let mut data = Vec::new();
    for (i, e) in answer.embeddings.into_iter().enumerate() {
        let values = e.values;
        let embedding = if base64 {
            let bytes: Vec<u8> = values.iter().flat_map(|v| (*v as f32).to_le_bytes()).collect();
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        } else {
            json!(values)
        };
        data.push(json!({"object": "embedding", "index": i, "embedding": embedding}));
    }
    Some(json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_become_one_request_each_and_vectors_come_back_as_floats_or_base64() -> Result<(), String> {
        let r = request(&json!({"model": "m", "input": ["a", "b"], "dimensions": 3, "encoding_format": "base64"}), "m")
            .map_err(|e| e.message)?;
        assert!(r.base64);
        assert_eq!(
            r.body["requests"][1],
            json!({"model": "models/m", "content": {"parts": [{"text": "b"}]},
            "outputDimensionality": 3})
        );
        assert_eq!(request(&json!({"input": [1, 2]}), "m").map_err(|e| e.param), Err("input".to_owned()));
        assert_eq!(request(&json!({"input": "a", "x": 1}), "m").map_err(|e| e.param), Err("x".to_owned()));

        let g = json!({"embeddings": [{"values": [0.5, -1.0]}]});
        let floats = response(&g, "m", false, 4).unwrap_or_default();
        assert_eq!(floats["data"][0]["embedding"], json!([0.5, -1.0]));
        assert_eq!(floats["usage"]["prompt_tokens"], 4);
        let b64 = response(&g, "m", true, 4).unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][0]["embedding"].as_str().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(bytes, [0.5f32.to_le_bytes(), (-1.0f32).to_le_bytes()].concat());
        assert!(response(&json!({"error": {}}), "m", false, 0).is_none());
        Ok(())
    }
}
