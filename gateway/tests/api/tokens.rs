//! Token counting under hostile input (FAULTS.md row 41): `count_tokens` in Anthropic's and
//! Gemini's protocol, and the usage estimate for an upstream that reports none, with one long
//! word, a megabyte of spaces and a large mixed body. Before the bound, the word took 13 s of CPU
//! and the spaces overflowed the tokenizer's stack (answered 500, billed 0).

use std::time::{Duration, Instant};

use schemas::UsageSource;
use serde_json::{Value, json};
use testkit::fake_openai::Scenario;

use crate::helpers::{MODEL, TestApp, spawn_with};

/// Room for the 32 MiB bodies the gateway accepts by default.
const BODY_LIMIT: usize = 40 << 20;
/// Generous for a debug build on a busy 2-core machine; the unbounded tokenizer needed 13 s of
/// CPU in a release build for the 256 KB word alone, and crashed on the spaces.
const QUICK: Duration = Duration::from_secs(10);
/// For a 30 MiB body, which a debug build parses twice as JSON besides counting it.
const QUICK_LARGE: Duration = Duration::from_secs(30);

async fn app() -> anyhow::Result<TestApp> {
    spawn_with(|c| c.body_limit_bytes = BODY_LIMIT).await
}

/// `(status, count, time)` of `/v1/messages/count_tokens` for one user message of `text`.
async fn count_anthropic(app: &TestApp, text: &str) -> anyhow::Result<(u16, u64, Duration)> {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": text}]});
    let started = Instant::now();
    let resp =
        app.http.post(app.url("/v1/messages/count_tokens")).header("x-api-key", &app.key).json(&body).send().await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    Ok((status, v["input_tokens"].as_u64().unwrap_or(0), started.elapsed()))
}

/// `(status, count, time)` of Gemini's `:countTokens` for one user turn of `text`.
async fn count_gemini(app: &TestApp, text: &str) -> anyhow::Result<(u16, u64, Duration)> {
    let body = json!({"contents": [{"role": "user", "parts": [{"text": text}]}]});
    let started = Instant::now();
    let resp = app
        .http
        .post(app.url(&format!("/v1beta/models/{MODEL}:countTokens")))
        .header("x-goog-api-key", &app.key)
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let v: Value = resp.json().await?;
    Ok((status, v["totalTokens"].as_u64().unwrap_or(0), started.elapsed()))
}

fn pathological() -> [(&'static str, String); 3] {
    [
        ("a 256 KB word", "a".repeat(256 << 10)),
        ("1 MB of spaces", " ".repeat(1 << 20)),
        ("1 MB of CJK without punctuation", "我们".repeat((1 << 20) / 6)),
    ]
}

/// About `bytes` of normal text of several kinds: numbered paragraphs of prose, code and CJK.
fn mixed(bytes: usize) -> String {
    const PROSE: &str = "The gateway counts the tokens of every prompt before it bills, and it doesn't trust a \
        client's word for it: counts are bounded, sampled when large, and never zero.";
    const CODE: &str = "fn main() -> Result<(), Error> {\n    let total = count(&text[..1024], 0x2a)?;\n    \
        println!(\"{total} tokens\");\n}\n";
    const CJK: &str = "我们的网关在计费之前统计每个请求的令牌数量，然后记录使用情况。これはテストです。";
    let mut s = String::with_capacity(bytes + 512);
    let mut i = 0u64;
    while s.len() < bytes {
        s.push_str(&format!("{i}. {PROSE}\n{CODE}{CJK} {}\n\n", i * 7919 % 10_007));
        i += 1;
    }
    s
}

#[tokio::test]
async fn count_tokens_answers_a_long_word_and_a_megabyte_of_spaces_quickly_and_never_zero() -> anyhow::Result<()> {
    let app = app().await?;
    for (what, text) in pathological() {
        for (protocol, (status, n, took)) in
            [("anthropic", count_anthropic(&app, &text).await?), ("gemini", count_gemini(&app, &text).await?)]
        {
            assert_eq!(status, 200, "{protocol}, {what}");
            assert!(n > 0, "{protocol}, {what}: counted 0");
            assert!(took < QUICK, "{protocol}, {what}: took {took:?}");
        }
    }
    assert!(app.usage().await?.is_empty(), "counting is not billed");
    Ok(())
}

#[tokio::test]
async fn count_tokens_answers_thirty_mib_of_mixed_text_quickly_and_in_proportion() -> anyhow::Result<()> {
    let app = app().await?;
    let part = mixed(256 << 10);
    let (_, one, _) = count_anthropic(&app, &part).await?;
    let copies = 120;
    let big = part.repeat(copies);
    for (protocol, (status, n, took)) in
        [("anthropic", count_anthropic(&app, &big).await?), ("gemini", count_gemini(&app, &big).await?)]
    {
        assert_eq!(status, 200, "{protocol}");
        assert!(took < QUICK_LARGE, "{protocol}: {} MiB took {took:?}", big.len() >> 20);
        // Counted by samples and scaled by bytes: within 1 % of the same text counted exactly.
        let expected = one as f64 * copies as f64;
        let off = (n as f64 - expected).abs() / expected;
        assert!(off < 0.01, "{protocol}: {n} tokens, expected about {expected} ({:.2} % off)", off * 100.0);
    }
    // The same size with the pathological texts inside it.
    let mut hostile = part.repeat(copies - 6);
    for (_, text) in pathological() {
        hostile.push_str(&text);
    }
    for (protocol, (status, n, took)) in
        [("anthropic", count_anthropic(&app, &hostile).await?), ("gemini", count_gemini(&app, &hostile).await?)]
    {
        assert_eq!(status, 200, "{protocol}");
        assert!(n > 0 && took < QUICK_LARGE, "{protocol}: {n} tokens for {} MiB in {took:?}", hostile.len() >> 20);
    }
    Ok(())
}

#[tokio::test]
async fn an_upstream_without_usage_bills_a_pathological_prompt_a_non_zero_estimate_quickly() -> anyhow::Result<()> {
    let app = app().await?;
    app.fake.set_scenario(Scenario::NoUsage);
    for (what, text) in pathological() {
        let body = json!({"model": MODEL, "messages": [{"role": "user", "content": text}]});
        let started = Instant::now();
        let resp = app.post("/v1/chat/completions", &body).await?;
        let took = started.elapsed();
        assert_eq!(resp.status(), 200, "{what}");
        assert!(took < QUICK, "{what}: took {took:?}");
    }
    let usage = app.wait_usage(3).await?;
    assert_eq!(usage.len(), 3);
    for (_, u) in &usage {
        assert_eq!(u.usage_source, UsageSource::Estimated);
        // At least one token per 256 bytes even for the most compressible text: never free.
        assert!(u.input_tokens >= (256 << 10) / 256, "{u:?}");
        assert!(u.cost_nanos > 0, "{u:?}");
    }
    Ok(())
}
