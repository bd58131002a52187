//! The fake Gemini upstream speaks the Gemini v1beta wire protocol: JSON answers, SSE chunks with
//! CRLF separators and cumulative usage, the JSON-array stream, function calls, thoughts, and
//! Gemini-shaped errors.

use serde_json::{Value, json};
use testkit::fake_gemini::{FakeGemini, GeminiUsage, Scenario};

const MODEL: &str = "gemini-2.5-flash";

fn hello() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "Say hello to the world"}]}]})
}

async fn post(fake: &FakeGemini, action: &str, body: &Value) -> anyhow::Result<reqwest::Response> {
    Ok(reqwest::Client::new()
        .post(format!("{}/models/{MODEL}:{action}", fake.base_url()))
        .header("x-goog-api-key", "gm-key")
        .json(body)
        .send()
        .await?)
}

/// The `data:` payloads of an SSE body, which must use CRLF separators.
fn sse_chunks(text: &str) -> anyhow::Result<Vec<Value>> {
    anyhow::ensure!(text.contains("\r\n\r\n"), "events are not CRLF-separated: {text:?}");
    text.split("\r\n\r\n")
        .filter_map(|e| e.trim().strip_prefix("data: "))
        .map(|d| Ok(serde_json::from_str(d)?))
        .collect()
}

fn text_of(chunks: &[Value]) -> String {
    chunks
        .iter()
        .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
        .filter(|p| p.get("thought").is_none())
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn generate_content_answers_a_gemini_response_and_records_the_key() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let resp = reqwest::Client::new()
        .post(format!("{}/models/{MODEL}:generateContent?key=query-key", fake.base_url()))
        .json(&hello())
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await?;
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(cand["content"]["parts"], json!([{"text": "Hello from Gemini."}]));
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(cand["index"], 0);
    assert!(cand["safetyRatings"].is_array());
    assert_eq!(v["modelVersion"], MODEL);
    assert!(v["responseId"].is_string());
    let u = &v["usageMetadata"];
    assert_eq!(u["promptTokenCount"], 20);
    assert_eq!(u["candidatesTokenCount"], 12);
    assert_eq!(u["cachedContentTokenCount"], 5);
    assert_eq!(u["totalTokenCount"], 32);
    assert!(u.get("thoughtsTokenCount").is_none(), "zero thoughts are omitted");
    assert_eq!(u["promptTokensDetails"][0]["modality"], "TEXT");

    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, format!("/v1beta/models/{MODEL}:generateContent?key=query-key"));
    assert_eq!(reqs[0].api_key(), Some("query-key"));
    assert_eq!(reqs[0].body, hello());
    Ok(())
}

#[tokio::test]
async fn stream_sends_one_crlf_event_per_piece_with_cumulative_usage_and_no_done() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let resp = post(&fake, "streamGenerateContent?alt=sse", &hello()).await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().await?;
    assert!(!text.contains("[DONE]"));
    let chunks = sse_chunks(&text)?;
    assert_eq!(chunks.len(), 3);
    assert_eq!(text_of(&chunks), "Hello from Gemini.");
    for c in &chunks[..2] {
        assert!(c["candidates"][0].get("finishReason").is_none());
    }
    assert_eq!(chunks[0]["usageMetadata"]["promptTokenCount"], 20);
    assert!(chunks[0]["usageMetadata"].get("candidatesTokenCount").is_none());
    let last = &chunks[2];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 12);
    assert_eq!(last["usageMetadata"]["totalTokenCount"], 32);
    assert!(chunks.iter().all(|c| c["responseId"] == chunks[0]["responseId"]));
    assert_eq!(fake.requests()[0].api_key(), Some("gm-key"));
    Ok(())
}

#[tokio::test]
async fn without_alt_sse_the_stream_is_a_json_array_of_chunks() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    fake.set_pieces(&["a", "b"]);
    let v: Value = post(&fake, "streamGenerateContent", &hello()).await?.json().await?;
    let chunks = v.as_array().cloned().unwrap_or_default();
    assert_eq!(chunks.len(), 2);
    assert_eq!(text_of(&chunks), "ab");
    assert_eq!(chunks[1]["candidates"][0]["finishReason"], "STOP");
    Ok(())
}

#[tokio::test]
async fn function_declarations_get_parallel_calls_whole_in_one_chunk() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let mut body = hello();
    body["tools"] = json!([{"functionDeclarations": [
        {"name": "get_weather", "parameters": {"type": "object"}},
        {"name": "get_time", "parameters": {"type": "object"}}
    ]}]);
    let v: Value = post(&fake, "generateContent", &body).await?.json().await?;
    let parts = &v["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0]["functionCall"], json!({"name": "get_weather", "args": {"location": "City 0"}}));
    assert_eq!(parts[1]["functionCall"]["name"], "get_time");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &body).await?.text().await?)?;
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"].as_array().map(Vec::len), Some(2));
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "STOP");

    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}});
    let v: Value = post(&fake, "generateContent", &body).await?.json().await?;
    assert_eq!(
        v["candidates"][0]["content"]["parts"],
        json!([{"functionCall": {"name": "get_time",
        "args": {"location": "City 0"}}}])
    );

    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "NONE"}});
    let v: Value = post(&fake, "generateContent", &body).await?.json().await?;
    assert_eq!(v["candidates"][0]["content"]["parts"], json!([{"text": "Hello from Gemini."}]));
    Ok(())
}

#[tokio::test]
async fn thoughts_come_first_with_a_signature_and_count_in_the_total() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let mut body = hello();
    body["generationConfig"] = json!({"thinkingConfig": {"includeThoughts": true, "thinkingBudget": 1024}});
    let v: Value = post(&fake, "generateContent", &body).await?.json().await?;
    let parts = &v["candidates"][0]["content"]["parts"];
    assert_eq!(parts[0]["thought"], true);
    assert!(parts[0]["thoughtSignature"].is_string());
    assert_eq!(parts[1], json!({"text": "Hello from Gemini."}));
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 7);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 20 + 12 + 7);

    fake.set_usage(GeminiUsage {
        prompt_token_count: 100,
        candidates_token_count: 40,
        cached_content_token_count: 0,
        thoughts_token_count: 9,
    });
    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &body).await?.text().await?)?;
    assert_eq!(chunks[0]["candidates"][0]["content"]["parts"][0]["thought"], true);
    let last = &chunks[chunks.len() - 1]["usageMetadata"];
    assert_eq!(last["thoughtsTokenCount"], 9);
    assert_eq!(last["totalTokenCount"], 149);
    assert!(last.get("cachedContentTokenCount").is_none());
    Ok(())
}

#[tokio::test]
async fn json_mime_type_gets_a_json_object_as_text() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let mut body = hello();
    body["generationConfig"] = json!({"responseMimeType": "application/json"});
    let v: Value = post(&fake, "generateContent", &body).await?.json().await?;
    let text = v["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap_or_default();
    let parsed: Value = serde_json::from_str(text)?;
    assert!(parsed.is_object());
    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &body).await?.text().await?)?;
    assert_eq!(serde_json::from_str::<Value>(&text_of(&chunks))?, parsed);
    Ok(())
}

#[tokio::test]
async fn failures_have_the_gemini_error_shape() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    fake.set_scenario(Scenario::FailStatus { status: 429, retry_after: Some(7) });
    let resp = post(&fake, "generateContent", &hello()).await?;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["code"], 429);
    assert_eq!(v["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(v["error"]["message"], "Resource has been exhausted (e.g. check quota).");

    let resp = reqwest::Client::new()
        .post(format!("{}/models/{MODEL}:streamGenerateContent?alt=sse", fake.base_url()))
        .header("x-fake-scenario", "fail-status:503")
        .json(&hello())
        .send()
        .await?;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().get("retry-after").is_none());
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["status"], "UNAVAILABLE");

    let resp = post(&fake, "embedEverything", &hello()).await?;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await?;
    assert_eq!(v["error"]["status"], "NOT_FOUND");
    Ok(())
}

#[tokio::test]
async fn error_after_chunks_ends_the_stream_with_an_in_band_error() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    fake.set_scenario(Scenario::ErrorAfterChunks(1));
    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &hello()).await?.text().await?)?;
    assert_eq!(chunks.len(), 2);
    assert_eq!(text_of(&chunks[..1]), "Hello");
    assert_eq!(chunks[1]["error"]["code"], 500);
    assert_eq!(chunks[1]["error"]["status"], "INTERNAL");

    fake.set_scenario(Scenario::NoUsage);
    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &hello()).await?.text().await?)?;
    assert!(chunks.iter().all(|c| c.get("usageMetadata").is_none()));
    Ok(())
}

#[tokio::test]
async fn canned_safety_answers_are_sent_verbatim() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    fake.set_canned_response(FakeGemini::blocked_prompt_response());
    let v: Value = post(&fake, "generateContent", &hello()).await?.json().await?;
    assert_eq!(v["promptFeedback"]["blockReason"], "SAFETY");
    assert!(v.get("candidates").is_none());

    fake.set_canned_stream(vec![FakeGemini::safety_stop_response()]);
    let chunks = sse_chunks(&post(&fake, "streamGenerateContent?alt=sse", &hello()).await?.text().await?)?;
    assert_eq!(chunks, vec![FakeGemini::safety_stop_response()]);
    assert_eq!(chunks[0]["candidates"][0]["finishReason"], "SAFETY");
    Ok(())
}

#[tokio::test]
async fn count_tokens_and_models_answer() -> anyhow::Result<()> {
    let fake = FakeGemini::start().await?;
    let v: Value = post(&fake, "countTokens", &hello()).await?.json().await?;
    assert_eq!(v["totalTokens"], 5);
    let v: Value = reqwest::get(format!("{}/models", fake.base_url())).await?.json().await?;
    assert_eq!(v["models"][0]["name"], "models/gemini-2.5-flash");
    Ok(())
}
