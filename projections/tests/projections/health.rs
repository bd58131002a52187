//! Given `health.checked` events, when the `health` projection runs, then each key's last
//! result and last known balance, its availability over 24 h / 7 d / 30 d and the probe history
//! match a fold computed here; a duplicate event counts once, an on-demand check of a slot
//! counts beside the scheduled one; old rows leave after the retention window while the
//! availability (read from the hourly rollup) stays; a rebuild gives the same answers. The
//! ledger's daily channel rollup gives a channel's spend.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use projections::read::{self, CheckFilter, CheckRecord, ProbeCounts};
use projections::{Projection, RunOptions};
use schemas::{Balance, Envelope, EventBody, HealthChecked, health_check_id};

use crate::helpers::{BACKENDS, BASE_US, DAY_US, Harness, Rng, price, usage, usage_events};

const HOUR_US: i64 = 3_600_000_000;

fn checked(key: &str, at: i64, ok: bool, latency_us: u64, balance: Option<i64>, on_demand: bool) -> Envelope {
    let body = EventBody::HealthChecked(HealthChecked {
        resource_id: key.into(),
        channel_id: Some("ch_1".into()),
        slot_us: at - at.rem_euclid(60_000_000),
        outcome: if ok { "ok".into() } else { "key_invalid".into() },
        latency_us,
        attempts: 1,
        balance: balance.map(|nanos| Balance { nanos, currency: "CNY".into() }),
        reason: (!ok).then(|| "the key is refused: key_invalid".into()),
        on_demand,
    });
    let mut e = Envelope::new("_global", "test", at, body);
    if !on_demand {
        e.id = health_check_id(key, at - at.rem_euclid(60_000_000));
    }
    e
}

/// 40 days of probes every three hours of two keys, one failing now and then, balances falling.
fn events() -> Vec<Envelope> {
    let mut rng = Rng::new(5);
    let mut out = Vec::new();
    for i in 0..(40 * 8) {
        let at = BASE_US - 40 * DAY_US + i * 3 * HOUR_US + 7_000_000;
        out.push(checked(
            "ukey_a",
            at,
            true,
            100_000 + rng.below(50_000),
            Some(1_000_000_000_000 - i * 1_000_000),
            false,
        ));
        let ok = rng.below(5) != 0;
        out.push(checked("ukey_b", at + 1, ok, 200_000 + rng.below(90_000), None, false));
    }
    out
}

fn now_us(events: &[Envelope]) -> i64 {
    events.iter().map(|e| e.occurred_at_us).max().unwrap_or(0)
}

/// The reference counts of `key` over hours `since..=now`.
fn counts(events: &[Envelope], key: &str, now: i64, hours: i64) -> ProbeCounts {
    let since = now.div_euclid(HOUR_US) - hours + 1;
    let mut c = ProbeCounts::default();
    for e in events {
        let EventBody::HealthChecked(h) = &e.body else { continue };
        if h.resource_id != key || e.occurred_at_us.div_euclid(HOUR_US) < since {
            continue;
        }
        if h.outcome == "ok" {
            c.ok += 1;
        } else {
            c.failed += 1;
        }
        c.latency_us_sum += h.latency_us as i64;
    }
    c
}

async fn history(h: &Harness, f: &CheckFilter, limit: u32) -> anyhow::Result<Vec<CheckRecord>> {
    let mut out: Vec<CheckRecord> = Vec::new();
    loop {
        let after = out.last().map(|r| (r.checked_at_us, r.seq));
        let page = read::check_history_page(&h.store, f, after, limit).await?;
        ensure!(page.len() <= limit as usize);
        let done = page.len() < limit as usize;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

fn ids() -> Vec<String> {
    vec!["ukey_a".into(), "ukey_b".into(), "ukey_none".into()]
}

#[tokio::test]
async fn last_results_availability_and_history_match_the_events_and_survive_a_rebuild() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let mut events = events();
        let now = now_us(&events);
        // An admin's check in the slot of the last scheduled probe of ukey_b: its own event.
        let on_demand = checked("ukey_b", now + 2, true, 50_000, None, true);
        // The last scheduled probe again (a second worker): stored once.
        let again = events[events.len() - 1].clone();
        h.append_all(&events).await?;
        h.append_all(&[on_demand.clone(), again]).await?;
        events.push(on_demand);
        let now = now_us(&events);
        h.catch_up(Projection::Health).await?;

        let latest = read::latest_checks(&h.store, &ids()).await?;
        ensure!(latest.len() == 2, "{backend:?}: {latest:?}");
        let b = &latest["ukey_b"];
        ensure!(b.outcome == "ok" && b.on_demand && b.latency_us == 50_000 && b.balance.is_none(), "{b:?}");
        let a = &latest["ukey_a"];
        let last_a = events.iter().rev().find_map(|e| match &e.body {
            EventBody::HealthChecked(c) if c.resource_id == "ukey_a" => Some((e.occurred_at_us, c.balance.clone())),
            _ => None,
        });
        ensure!(
            last_a.as_ref().is_some_and(|(at, bal)| a.checked_at_us == *at
                && a.balance.as_ref().map(|x| (x.nanos, x.currency.clone()))
                    == bal.as_ref().map(|x| (x.nanos, x.currency.clone()))),
            "{a:?} vs {last_a:?}"
        );

        let avail = read::availability(&h.store, &ids(), now).await?;
        ensure!(!avail.contains_key("ukey_none"), "no probes, no row");
        for key in ["ukey_a", "ukey_b"] {
            let got = avail[key];
            let want =
                (counts(&events, key, now, 24), counts(&events, key, now, 7 * 24), counts(&events, key, now, 30 * 24));
            ensure!((got.day, got.week, got.month) == want, "{backend:?} {key}: {got:?} want {want:?}");
        }
        ensure!(avail["ukey_b"].month.failed > 0 && avail["ukey_a"].month.failed == 0);

        // History: newest first, every probe once, pages without gaps or repeats.
        let all = history(&h, &CheckFilter::default(), 200).await?;
        ensure!(all.len() == events.len(), "{backend:?}: {} rows for {} events", all.len(), events.len());
        let mut want: Vec<(i64, String)> = events
            .iter()
            .filter_map(|e| match &e.body {
                EventBody::HealthChecked(c) => Some((e.occurred_at_us, c.resource_id.clone())),
                _ => None,
            })
            .collect();
        want.sort_by(|x, y| y.cmp(x));
        let got: Vec<(i64, String)> = all.iter().map(|r| (r.checked_at_us, r.resource_id.clone())).collect();
        ensure!(got == want, "{backend:?}: history order");
        let f = CheckFilter {
            resource_id: Some("ukey_b".into()),
            from_us: Some(now - 2 * DAY_US),
            to_us: Some(now),
            ..Default::default()
        };
        let b_rows = history(&h, &f, 7).await?;
        let b_want = want.iter().filter(|(at, k)| k == "ukey_b" && *at >= now - 2 * DAY_US && *at < now).count();
        ensure!(b_rows.len() == b_want && b_want > 10 && b_rows.iter().all(|r| r.resource_id == "ukey_b"));
        let other = CheckFilter { tenant: Some("acme".into()), ..Default::default() };
        ensure!(history(&h, &other, 50).await?.is_empty(), "another tenant sees none of the global probes");

        let outcome = projections::rebuild(&h.store, &h.log, Projection::Health, |_, _| {}).await?;
        ensure!(outcome.generation > outcome.replaced);
        ensure!(read::latest_checks(&h.store, &ids()).await? == latest, "{backend:?}: latest after rebuild");
        ensure!(read::availability(&h.store, &ids(), now).await? == avail, "{backend:?}: availability after rebuild");
        ensure!(history(&h, &CheckFilter::default(), 200).await?.len() == all.len());
    }
    Ok(())
}

#[tokio::test]
async fn probe_rows_past_the_window_go_and_availability_stays() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = events();
        let now = now_us(&events);
        h.append_all(&events).await?;
        let opts = RunOptions { request_log_retention: Duration::from_secs(5 * 86_400), ..Default::default() };
        // Retention deletes at most 1,000 rows per batch: small batches leave it several passes.
        let opts = RunOptions { max_batch: 50, ..opts };
        h.catch_up_with(Projection::Health, opts).await?;
        let rows = history(&h, &CheckFilter::default(), 200).await?;
        let cutoff = now - 5 * DAY_US;
        ensure!(!rows.is_empty() && rows.iter().all(|r| r.checked_at_us >= cutoff), "{backend:?}");
        let kept = events.iter().filter(|e| e.occurred_at_us >= cutoff).count();
        ensure!(rows.len() == kept, "{backend:?}: {} rows, {kept} in the window", rows.len());
        let avail = read::availability(&h.store, &ids(), now).await?;
        ensure!(avail["ukey_b"].month == counts(&events, "ukey_b", now, 30 * 24), "{backend:?}: the rollup stays");
    }
    Ok(())
}

#[tokio::test]
async fn a_channels_spend_is_read_from_the_daily_channel_rollup() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let events = usage_events("acme", 60, 9, "req-");
        let p = price("USD", 1_000_000_000, 2_000_000_000);
        let far = usage("acme", "key_a", "req-old", "gpt-4o", BASE_US - 60 * DAY_US, (10, 0, 0, 10, 0), &p, false);
        h.append_all(&events).await?;
        h.append_all(std::slice::from_ref(&far)).await?;
        h.catch_up(Projection::Ledger).await?;
        let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for e in &events {
            let EventBody::UsageRecorded(u) = &e.body else { continue };
            let w = want.entry(u.currency.clone()).or_default();
            w.0 += 1;
            w.1 += u.cost_nanos;
        }
        let from = projections::utc_day(BASE_US - 10 * DAY_US);
        let to = projections::utc_day(BASE_US + 10 * DAY_US);
        let spend = read::channel_spend(&h.store, &["ch_1".into(), "ch_none".into()], &from, &to).await?;
        let got: BTreeMap<String, (i64, i64)> =
            spend["ch_1"].iter().map(|s| (s.currency.clone(), (s.requests, s.cost_nanos))).collect();
        ensure!(got == want && !spend.contains_key("ch_none"), "{backend:?}: {got:?} want {want:?}");
    }
    Ok(())
}

fn probe(resource: &str, at: i64, outcome: &str, on_demand: bool) -> Envelope {
    let body = EventBody::HealthChecked(HealthChecked {
        resource_id: resource.into(),
        channel_id: resource.starts_with("ukey_").then(|| "ch_1".into()),
        slot_us: at,
        outcome: outcome.into(),
        latency_us: 1_000,
        attempts: 1,
        balance: None,
        reason: None,
        on_demand,
    });
    let mut e = Envelope::new("_global", "test", at, body);
    if !on_demand {
        e.id = health_check_id(resource, at);
    }
    e
}

#[tokio::test]
async fn the_streak_of_failed_probes_counts_scheduled_failures_and_survives_a_rebuild() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let t = BASE_US;
        let events = vec![
            probe("ukey_a", t, "key_invalid", false),
            probe("ukey_a", t + 1, "key_invalid", false),
            // The key's proxies failed: says nothing about the key.
            probe("ukey_a", t + 2, "proxy_failed", false),
            // An admin's check, failed or not, is not the schedule's count.
            probe("ukey_a", t + 3, "ok", true),
            probe("ukey_a", t + 4, "key_invalid", false),
            probe("px_a", t, "proxy_failed", false),
            probe("px_a", t + 1, "proxy_failed", false),
            probe("px_b", t, "proxy_failed", false),
            probe("px_b", t + 1, "ok", false),
            probe("px_b", t + 2, "connection_failed", true),
        ];
        h.append_all(&events).await?;
        h.catch_up(Projection::Health).await?;
        let want: BTreeMap<String, u32> = [("ukey_a".to_owned(), 3), ("px_a".to_owned(), 2)].into();
        let got = read::failure_streaks(&h.store).await?;
        ensure!(got == want, "{backend:?}: {got:?}");
        projections::rebuild(&h.store, &h.log, Projection::Health, |_, _| {}).await?;
        ensure!(read::failure_streaks(&h.store).await? == want, "{backend:?}: after a rebuild");
    }
    Ok(())
}
