//! The outbound address policy on the request path: a channel whose host is refused — a literal
//! address, a name that resolves to one, or a name that rebinds after it was saved — fails its
//! attempt as a connection failure (502, or the next channel), and nothing is sent to it. Names
//! are answered by a table lookup; no test traffic leaves loopback.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use schemas::{ChannelAdded, EventBody, GLOBAL_TENANT};
use serde_json::{Value, json};
use testkit::fake_openai::FakeOpenAi;

use crate::helpers::{MODEL, TestApp, UPSTREAM_KEY, control, error_of, spawn_with};

/// A model only the channel under test serves.
const ONLY_HERE: &str = "gpt-egress-test";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

async fn add_channel(app: &TestApp, id: &str, base_url: String, models: &[&str], priority: i32) -> anyhow::Result<()> {
    app.log
        .append_acked(&control(
            GLOBAL_TENANT,
            EventBody::ChannelAdded(ChannelAdded {
                channel_id: id.into(),
                name: id.into(),
                provider: "openai".into(),
                base_url,
                api_key: Some(app.master_key.seal("sk-egress-channel-secret", id)),
                models: models.iter().map(|m| (*m).to_owned()).collect(),
                priority,
                weight: 1,
                api_version: None,
                insecure_http: false,
                anthropic_beta: Vec::new(),
                proxy_pool: None,
            }),
        ))
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

/// The refusal is a 502 `upstream_error` that names neither the host nor any key.
fn assert_refused(status: u16, body: &Value, host: &str) {
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    let text = body.to_string();
    assert!(!text.contains(host) && !text.contains("sk-egress") && !text.contains(UPSTREAM_KEY), "{text}");
}

#[tokio::test]
async fn a_channel_whose_name_resolves_to_a_metadata_address_gets_502_and_is_never_called() -> anyhow::Result<()> {
    // The answer lists loopback first: a client that skipped the check would reach the fake
    // (and fail this test) without sending anything off this machine.
    let app = spawn_with(|cfg| {
        cfg.dns = egress::Dns::from_fn(|host| match host {
            "metadata.test" => Ok(vec![ip("127.0.0.1"), ip("169.254.169.254")]),
            "loopback.test" => Ok(vec![ip("127.0.0.1")]),
            _ => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown test host")),
        });
    })
    .await?;
    let target = FakeOpenAi::start().await?;
    let port = target.addr().port();
    add_channel(&app, "ch_metadata", format!("http://metadata.test:{port}/v1"), &[ONLY_HERE], 0).await?;
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(ONLY_HERE)).await?).await?;
    assert_refused(status, &body, "metadata.test");
    assert!(target.requests().is_empty(), "the refused channel was called");

    // The same upstream under a name that resolves to loopback alone is reachable: the lookup
    // above is the one the HTTP client really uses.
    add_channel(&app, "ch_loopback", format!("http://loopback.test:{port}/v1"), &["gpt-loopback"], 0).await?;
    assert_eq!(app.post("/v1/chat/completions", &chat("gpt-loopback")).await?.status(), 200);
    assert_eq!(target.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_name_that_rebinds_to_a_metadata_address_after_it_was_saved_is_refused_at_connect_time() -> anyhow::Result<()>
{
    let lookups = Arc::new(AtomicUsize::new(0));
    let counter = lookups.clone();
    let dns = egress::Dns::from_fn(move |_| {
        // The first answer (the save) is public; every later one (the connection) is not.
        Ok(match counter.fetch_add(1, Ordering::SeqCst) {
            0 => vec![ip("93.184.215.14")],
            _ => vec![ip("127.0.0.1"), ip("169.254.169.254")],
        })
    });
    let gateway_dns = dns.clone();
    let app = spawn_with(move |cfg| cfg.dns = gateway_dns).await?;
    let target = FakeOpenAi::start().await?;
    let url = format!("http://rebind.test:{}/v1", target.addr().port());
    let saved = egress::Policy::default().check_url_resolving(&url, egress::Trust::Admin, true, &dns).await;
    assert!(saved.as_ref().is_ok_and(|t| t.reach == Some(egress::Reach::Public)), "{saved:?}");
    add_channel(&app, "ch_rebind", url, &[ONLY_HERE], 0).await?;
    let (status, body) = error_of(app.post("/v1/chat/completions", &chat(ONLY_HERE)).await?).await?;
    assert_refused(status, &body, "rebind.test");
    assert!(target.requests().is_empty(), "the rebound channel was called");
    assert!(lookups.load(Ordering::SeqCst) >= 2, "the connection looked the name up again");
    Ok(())
}

#[tokio::test]
async fn a_channel_at_a_refused_literal_address_fails_its_attempt_and_the_next_channel_answers() -> anyhow::Result<()> {
    let app = spawn_with(|_| {}).await?;
    // 0.0.0.0 reaches this host on Linux: a check that let it through would call `target`.
    let target = FakeOpenAi::start().await?;
    let port = target.addr().port();
    add_channel(&app, "ch_unspecified", format!("http://0.0.0.0:{port}/v1"), &[MODEL, ONLY_HERE], 10).await?;
    add_channel(&app, "ch_decimal_zero", format!("http://0:{port}/v1"), &["gpt-zero"], 0).await?;

    let resp = app.post("/v1/chat/completions", &chat(MODEL)).await?;
    assert_eq!(resp.status(), 200, "the next channel (the regular fake) answers");
    let logs = app.request_logs(1).await?;
    assert_eq!(logs[0].attempts, 2, "{logs:?}");
    assert_eq!(logs[0].channel_id.as_deref(), Some("ch_fake"));
    assert_eq!(app.fake.requests().len(), 1);

    for model in [ONLY_HERE, "gpt-zero"] {
        let (status, body) = error_of(app.post("/v1/chat/completions", &chat(model)).await?).await?;
        assert_refused(status, &body, "0.0.0.0");
    }
    assert!(target.requests().is_empty(), "a refused literal address was called");
    Ok(())
}
