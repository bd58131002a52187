//! Given `request.logged` events, when the `requests` projection runs, then the request log
//! answers every filter and pages newest first without gaps or repeats, the dashboard rollup
//! matches a hand computation, old rows leave after the retention window, and a rebuild gives
//! the same rows.

use std::time::Duration;

use anyhow::ensure;
use projections::read::{self, RequestFilter, RequestRecord, StatusFilter};
use projections::{Projection, RunOptions};
use schemas::{AttemptRecord, Envelope, EventBody, RequestLogged};

use crate::helpers::{BACKENDS, BASE_US, DAY_US, Harness, Rng, price, usage};

const MINUTE_US: i64 = 60_000_000;

fn logged(tenant: &str, i: usize, at: i64, rng: &mut Rng) -> Envelope {
    let statuses = [200u16, 200, 200, 429, 500, 502, 400];
    let status = statuses[rng.below(statuses.len() as u64) as usize];
    let error_class = match status {
        429 => Some("rate_limited".to_owned()),
        500 | 502 => Some("upstream_server_error".to_owned()),
        400 => Some("client_error".to_owned()),
        _ => None,
    };
    let channel = format!("ch_{}", rng.below(2));
    EventBody::RequestLogged(RequestLogged {
        request_id: format!("{tenant}-req-{i:04}"),
        key_id: Some(format!("key_{tenant}_{}", rng.below(3))),
        endpoint: "chat.completions".into(),
        model: Some(["gpt-4o", "claude-sonnet"][rng.below(2) as usize].into()),
        provider: Some("openai".into()),
        channel_id: Some(channel.clone()),
        status,
        latency_us: 1_000 + rng.below(3_000_000),
        ttft_us: None,
        attempts: 1,
        error_class,
        streamed: rng.below(2) == 1,
        attempt_log: vec![AttemptRecord {
            channel_id: channel,
            class: if status < 400 { "ok".into() } else { "rate_limited".into() },
            status: Some(status),
            duration_ms: 3,
        }],
    })
    .pipe(|body| Envelope::new(tenant, "test", at, body))
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

fn body(e: &Envelope) -> Option<&RequestLogged> {
    match &e.body {
        EventBody::RequestLogged(r) => Some(r),
        _ => None,
    }
}

/// The reference: the events matching `f`, newest first by (time, request id).
fn reference(events: &[Envelope], f: &RequestFilter) -> Vec<String> {
    let mut rows: Vec<(i64, String)> = events
        .iter()
        .filter_map(|e| body(e).map(|r| (e, r)))
        .filter(|(e, r)| {
            f.tenant.as_ref().is_none_or(|t| *t == e.tenant)
                && f.key_id.as_ref().is_none_or(|k| r.key_id.as_ref() == Some(k))
                && f.model.as_ref().is_none_or(|m| r.model.as_ref() == Some(m))
                && f.channel_id.as_ref().is_none_or(|c| r.channel_id.as_ref() == Some(c))
                && f.error_class.as_ref().is_none_or(|c| r.error_class.as_ref() == Some(c))
                && match f.status {
                    None => true,
                    Some(StatusFilter::Exact(s)) => i64::from(r.status) == s,
                    Some(StatusFilter::Class(c)) => i64::from(r.status) / 100 == c,
                }
                && f.from_us.is_none_or(|t| e.occurred_at_us >= t)
                && f.to_us.is_none_or(|t| e.occurred_at_us < t)
        })
        .map(|(e, r)| (e.occurred_at_us, r.request_id.clone()))
        .collect();
    rows.sort_by(|a, b| b.cmp(a));
    rows.into_iter().map(|r| r.1).collect()
}

/// Every page of `f`, `limit` rows at a time, following the cursor.
async fn all_pages(h: &Harness, f: &RequestFilter, limit: u32) -> anyhow::Result<Vec<RequestRecord>> {
    let mut out: Vec<RequestRecord> = Vec::new();
    loop {
        let after = out.last().map(|r| (r.occurred_at_us, r.request_id.clone()));
        let page = read::request_log_page(&h.store, f, after.as_ref().map(|(t, id)| (*t, id.as_str())), limit).await?;
        ensure!(page.len() <= limit as usize);
        let done = page.len() < limit as usize;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

fn events() -> Vec<Envelope> {
    let mut rng = Rng::new(11);
    let mut events = Vec::new();
    for i in 0..150 {
        // Some share a timestamp, so the id breaks ties.
        events.push(logged("acme", i, BASE_US + (i as i64 / 2) * MINUTE_US, &mut rng));
    }
    for i in 0..40 {
        events.push(logged("beta", i, BASE_US + i as i64 * 3 * MINUTE_US, &mut rng));
    }
    events
}

#[tokio::test]
async fn the_request_log_filters_and_pages_newest_first_without_gaps_or_repeats() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = events();
        h.append_all(&events).await?;
        h.catch_up(Projection::Requests).await?;
        let t = |s: &str| Some(s.to_owned());
        let filters = [
            RequestFilter::default(),
            RequestFilter { tenant: t("acme"), ..Default::default() },
            RequestFilter { tenant: t("beta"), ..Default::default() },
            RequestFilter { tenant: t("acme"), key_id: t("key_acme_1"), ..Default::default() },
            RequestFilter { key_id: t("key_beta_2"), ..Default::default() },
            RequestFilter { tenant: t("acme"), model: t("claude-sonnet"), ..Default::default() },
            RequestFilter { tenant: t("acme"), channel_id: t("ch_0"), ..Default::default() },
            RequestFilter { tenant: t("acme"), status: Some(StatusFilter::Exact(429)), ..Default::default() },
            RequestFilter { tenant: t("acme"), status: Some(StatusFilter::Class(5)), ..Default::default() },
            RequestFilter { status: Some(StatusFilter::Class(2)), ..Default::default() },
            RequestFilter { tenant: t("acme"), error_class: t("upstream_server_error"), ..Default::default() },
            RequestFilter {
                tenant: t("acme"),
                from_us: Some(BASE_US + 10 * MINUTE_US),
                to_us: Some(BASE_US + 40 * MINUTE_US),
                ..Default::default()
            },
        ];
        for f in &filters {
            let want = reference(&events, f);
            ensure!(!want.is_empty(), "{f:?} selects nothing: a useless case");
            for limit in [7, 200] {
                let got: Vec<String> = all_pages(&h, f, limit).await?.into_iter().map(|r| r.request_id).collect();
                ensure!(got == want, "{backend:?} {f:?} limit {limit}:\n got {got:?}\nwant {want:?}");
            }
        }
        let beta = all_pages(&h, &RequestFilter { tenant: t("beta"), ..Default::default() }, 50).await?;
        ensure!(beta.iter().all(|r| r.tenant == "beta"), "another tenant's rows never appear");
        let one = &all_pages(&h, &RequestFilter { tenant: t("acme"), ..Default::default() }, 1000).await?[0];
        let src = events.iter().filter_map(body).find(|r| r.request_id == one.request_id);
        ensure!(
            src.is_some_and(|s| i64::from(s.status) == one.status
                && s.latency_us as i64 == one.latency_us
                && s.streamed == one.streamed
                && one.attempt_classes.len() == 1
                && s.model == one.model),
            "{one:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn dashboard_stats_match_a_hand_computation_and_survive_a_rebuild() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = events();
        h.append_all(&events).await?;
        let p = price("USD", 1_000_000_000, 2_000_000_000);
        let usage_events = [
            usage("acme", "key_acme_0", "acme-req-0000", "gpt-4o", BASE_US, (1000, 0, 0, 500, 0), &p, false),
            usage(
                "acme",
                "key_acme_1",
                "acme-req-0001",
                "gpt-4o",
                BASE_US + MINUTE_US,
                (300, 100, 0, 50, 0),
                &p,
                false,
            ),
            usage("beta", "key_beta_0", "beta-req-0000", "gpt-4o", BASE_US, (7, 0, 0, 7, 0), &p, false),
        ];
        h.append_all(&usage_events).await?;
        h.catch_up(Projection::Requests).await?;
        h.catch_up(Projection::Ledger).await?;
        let from = read::slot_of(BASE_US);
        let to = read::slot_of(BASE_US + DAY_US);
        let stats = read::request_stats(&h.store, Some("acme"), from, to).await?;
        let acme: Vec<&RequestLogged> = events.iter().filter(|e| e.tenant == "acme").filter_map(body).collect();
        let mut lat: Vec<i64> = acme.iter().map(|r| r.latency_us as i64).collect();
        lat.sort_unstable();
        let pct = |q: usize| {
            let v = lat[(lat.len() * q).div_ceil(100) - 1];
            read::bucket_upper_us(read::latency_bucket(v))
        };
        ensure!(stats.requests == 150, "{stats:?}");
        ensure!(stats.succeeded == acme.iter().filter(|r| r.status < 400).count() as i64);
        ensure!(stats.client_errors == acme.iter().filter(|r| r.status / 100 == 4).count() as i64);
        ensure!(stats.server_errors == acme.iter().filter(|r| r.status >= 500).count() as i64);
        ensure!(stats.latency_p50_us == Some(pct(50)) && stats.latency_p95_us == Some(pct(95)), "{stats:?}");
        let exact95 = lat[(lat.len() * 95).div_ceil(100) - 1];
        ensure!(
            stats.latency_p95_us.is_some_and(|p| p >= exact95 && (p as f64) <= exact95 as f64 * 1.19 + 1.0),
            "within one bucket"
        );
        ensure!(stats.billed_requests == 2 && stats.input_tokens == 1400 && stats.output_tokens == 550, "{stats:?}");
        let cost: i64 = usage_events[..2]
            .iter()
            .map(|e| match &e.body {
                EventBody::UsageRecorded(u) => u.cost_nanos,
                _ => 0,
            })
            .sum();
        ensure!(stats.cost.len() == 1 && stats.cost[0].currency == "USD" && stats.cost[0].cost_nanos == cost);
        let all = read::request_stats(&h.store, None, from, to).await?;
        ensure!(all.requests == 190 && all.billed_requests == 3, "{all:?}");
        let empty = read::request_stats(&h.store, Some("acme"), to, to + 4).await?;
        ensure!(empty.requests == 0 && empty.latency_p50_us.is_none() && empty.cost.is_empty());

        let rows_before = all_pages(&h, &RequestFilter::default(), 200).await?;
        let outcome = projections::rebuild(&h.store, &h.log, Projection::Requests, |_, _| {}).await?;
        ensure!(outcome.generation > outcome.replaced);
        ensure!(all_pages(&h, &RequestFilter::default(), 200).await? == rows_before, "{backend:?}: rows after rebuild");
        ensure!(read::request_stats(&h.store, Some("acme"), from, to).await? == stats, "{backend:?}: stats");
    }
    Ok(())
}

#[tokio::test]
async fn rows_older_than_the_retention_window_are_deleted() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let mut rng = Rng::new(3);
        let old: Vec<Envelope> =
            (0..5).map(|i| logged("acme", 900 + i, BASE_US - 10 * DAY_US + i as i64, &mut rng)).collect();
        let recent: Vec<Envelope> = (0..5).map(|i| logged("acme", i, BASE_US - DAY_US + i as i64, &mut rng)).collect();
        h.append_all(&old).await?;
        h.append_all(&recent).await?;
        let opts = RunOptions { request_log_retention: Duration::from_secs(5 * 86_400), ..Default::default() };
        h.catch_up_with(Projection::Requests, opts.clone()).await?;
        let rows = all_pages(&h, &RequestFilter::default(), 200).await?;
        ensure!(rows.len() == 5 && rows.iter().all(|r| r.occurred_at_us >= BASE_US - DAY_US), "{backend:?}: {rows:?}");
        // The rollup keeps the period's counts.
        let old_stats =
            read::request_stats(&h.store, None, read::slot_of(BASE_US - 11 * DAY_US), read::slot_of(BASE_US)).await?;
        ensure!(old_stats.requests == 10, "{old_stats:?}");
        // A later event moves the window on: the once-recent rows go too.
        let later = logged("acme", 50, BASE_US + 5 * DAY_US, &mut rng);
        h.append_all(std::slice::from_ref(&later)).await?;
        h.catch_up_with(Projection::Requests, opts).await?;
        let rows = all_pages(&h, &RequestFilter::default(), 200).await?;
        ensure!(rows.len() == 1 && rows[0].request_id == "acme-req-0050", "{backend:?}: {rows:?}");
    }
    Ok(())
}
