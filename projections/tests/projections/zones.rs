//! Given usage events, when the report is grouped by day, ISO week, month, model or key in a
//! tenant's time zone, then each row equals a fold of the events done here with the zone
//! database, the totals reconcile to the nanos with the ledger rows, and a rebuild or an
//! `as_of` gives the same bytes.

use std::collections::BTreeMap;

use anyhow::ensure;
use chrono::{Datelike, NaiveDate};
use projections::Projection;
use projections::read::{self, GroupBy, grouped_usage_report, report_in_zone, usage_report};
use schemas::{Envelope, EventBody};
use sqlx::{Connection, Row};

use crate::helpers::{BACKENDS, BASE_US, DAY_US, Harness, price, usage, usage_events};

/// Half past eleven at night UTC on 2026-11-20: already the 21st in Shanghai.
const LATE_US: i64 = BASE_US + 23 * 3_600_000_000 + 30 * 60_000_000;

fn date(s: &str) -> anyhow::Result<NaiveDate> {
    Ok(NaiveDate::parse_from_str(s, "%Y-%m-%d")?)
}

/// `(label, model, currency) -> (requests, input tokens, cost nanos)`, folded from the events.
fn reference(
    events: &[Envelope],
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<(String, String, String), (i64, i64, i64)> {
    let mut out = BTreeMap::new();
    for e in events {
        let EventBody::UsageRecorded(u) = &e.body else { continue };
        let Some(at) = chrono::DateTime::from_timestamp_micros(e.occurred_at_us) else { continue };
        let local = at.with_timezone(&zone).date_naive();
        if e.tenant != "acme" || local < from || local > to {
            continue;
        }
        let label = match group_by {
            GroupBy::Day => local.format("%Y-%m-%d").to_string(),
            GroupBy::Week => format!("{}-W{:02}", local.iso_week().year(), local.iso_week().week()),
            GroupBy::Month => local.format("%Y-%m").to_string(),
            GroupBy::Model => String::new(),
            GroupBy::Key => u.key_id.clone(),
        };
        let entry = out.entry((label, u.model_requested.clone(), u.currency.clone())).or_insert((0, 0, 0));
        entry.0 += 1;
        entry.1 += u.input_tokens as i64;
        entry.2 += u.cost_nanos;
    }
    out
}

#[tokio::test]
async fn reports_in_a_tenants_zone_equal_a_fold_of_the_events_and_the_ledger() -> anyhow::Result<()> {
    for backend in BACKENDS {
        let h = Harness::new(backend).await?;
        let mut events = usage_events("acme", 300, 11, "z-");
        events.extend(usage_events("beta", 30, 12, "beta-"));
        let usd = price("USD", 2_500_000_000, 10_000_000_000);
        events.push(usage("acme", "key_a", "late", "late-model", LATE_US, (100, 0, 0, 50, 0), &usd, false));
        h.append_all(&events).await?;
        h.catch_up(Projection::Ledger).await?;
        let (from, to) = (date("2026-11-01")?, date("2026-11-30")?);

        // New York leaves summer time on 2026-11-01 at 06:00 UTC, inside the range's window.
        for zone in [
            chrono_tz::UTC,
            chrono_tz::Asia::Shanghai,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Asia::Kathmandu,
            chrono_tz::America::New_York,
            chrono_tz::America::St_Johns,
        ] {
            for group_by in [GroupBy::Day, GroupBy::Week, GroupBy::Month, GroupBy::Model, GroupBy::Key] {
                let report = grouped_usage_report(&h.store, "acme", zone, group_by, from, to, None).await?;
                let got: BTreeMap<_, _> = report
                    .rows
                    .iter()
                    .map(|r| {
                        (
                            (r.day.clone(), r.model.clone(), r.currency.clone()),
                            (r.requests, r.input_tokens, r.cost_nanos),
                        )
                    })
                    .collect();
                let want = reference(&events, zone, group_by, from, to);
                ensure!(got == want, "{backend:?} {zone} {group_by:?}:\n got {got:?}\nwant {want:?}");
                ensure!(report.time_zone == zone.name() && report.group_by == group_by);
            }
        }
        // The late request is on the 20th in UTC and on the 21st in Shanghai.
        let day_of = |r: &read::Report| r.rows.iter().find(|r| r.model == "late-model").map(|r| r.day.clone());
        let utc = grouped_usage_report(&h.store, "acme", chrono_tz::UTC, GroupBy::Day, from, to, None).await?;
        let sh =
            grouped_usage_report(&h.store, "acme", chrono_tz::Asia::Shanghai, GroupBy::Day, from, to, None).await?;
        ensure!(day_of(&utc).as_deref() == Some("2026-11-20"), "{backend:?}: {:?}", day_of(&utc));
        ensure!(day_of(&sh).as_deref() == Some("2026-11-21"), "{backend:?}: {:?}", day_of(&sh));
        let week =
            grouped_usage_report(&h.store, "acme", chrono_tz::Asia::Shanghai, GroupBy::Week, from, to, None).await?;
        ensure!(week.rows.iter().all(|r| r.day == "2026-W47" || r.day == "2026-W48"), "{backend:?}: {:?}", week.rows);
        // A range that starts on the 21st in Shanghai holds the late request; in UTC it does not.
        let narrow = date("2026-11-21")?;
        let sh =
            grouped_usage_report(&h.store, "acme", chrono_tz::Asia::Shanghai, GroupBy::Model, narrow, to, None).await?;
        let utc = grouped_usage_report(&h.store, "acme", chrono_tz::UTC, GroupBy::Model, narrow, to, None).await?;
        ensure!(sh.rows.iter().any(|r| r.model == "late-model") && !utc.rows.iter().any(|r| r.model == "late-model"));

        // The totals reconcile to the nanos with the ledger rows themselves.
        let mut conn = sqlx::AnyConnection::connect(&h.store_url).await?;
        let ledger = sqlx::query(
            "SELECT currency, CAST(COUNT(*) AS BIGINT) AS n, CAST(SUM(cost_nanos) AS BIGINT) AS cost FROM ledger \
             WHERE tenant = 'acme' AND generation = \
             (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
             GROUP BY currency ORDER BY currency",
        )
        .fetch_all(&mut conn)
        .await?;
        let ledger: Vec<(String, i64, i64)> = ledger
            .iter()
            .map(|r| Ok((r.try_get("currency")?, r.try_get("n")?, r.try_get("cost")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        conn.close().await?;
        for zone in [chrono_tz::Asia::Kathmandu, chrono_tz::America::St_Johns] {
            let r = grouped_usage_report(&h.store, "acme", zone, GroupBy::Month, from, to, None).await?;
            let totals: Vec<(String, i64, i64)> =
                r.totals.iter().map(|t| (t.currency.clone(), t.requests, t.cost_nanos)).collect();
            ensure!(totals == ledger, "{backend:?} {zone}: {totals:?} != ledger {ledger:?}");
        }

        // In UTC by day, the grouped path gives the daily report's bytes.
        let daily = usage_report(&h.store, "acme", "2026-11-01", "2026-11-30").await?;
        let same = report_in_zone(&h.store, "acme", chrono_tz::UTC, GroupBy::Day, from, to, None).await?;
        ensure!(same.to_csv() == daily.to_csv());
        let mut grouped = grouped_usage_report(&h.store, "acme", chrono_tz::UTC, GroupBy::Day, from, to, None).await?;
        grouped.as_of_seq = daily.as_of_seq;
        ensure!(grouped.to_csv() == daily.to_csv(), "{backend:?}: the grouped UTC days differ from the daily rollups");

        // `as_of` and a rebuild give the same bytes.
        let before =
            grouped_usage_report(&h.store, "acme", chrono_tz::Asia::Kolkata, GroupBy::Week, from, to, None).await?;
        projections::rebuild(&h.store, &h.log, Projection::Ledger, |_, _| {}).await?;
        let after =
            grouped_usage_report(&h.store, "acme", chrono_tz::Asia::Kolkata, GroupBy::Week, from, to, None).await?;
        ensure!(after.to_csv() == before.to_csv() && after.to_json() == before.to_json(), "{backend:?}: rebuild");
        let later = usage_events("acme", 10, 13, "later-");
        h.append_all(&later).await?;
        events.extend(later);
        h.catch_up(Projection::Ledger).await?;
        let zone = chrono_tz::Asia::Kolkata;
        let at = grouped_usage_report(&h.store, "acme", zone, GroupBy::Week, from, to, Some(before.as_of_seq)).await?;
        ensure!(at.to_csv() == before.to_csv(), "{backend:?}: as_of\n{}\n{}", at.to_csv().len(), before.to_csv().len());
        let now = grouped_usage_report(&h.store, "acme", zone, GroupBy::Week, from, to, None).await?;
        ensure!(now.to_csv() != before.to_csv());
        let ahead =
            grouped_usage_report(&h.store, "acme", zone, GroupBy::Week, from, to, Some(now.as_of_seq + 1)).await;
        ensure!(matches!(ahead, Err(projections::ProjectionError::NotCaughtUp { .. })), "{backend:?}: {ahead:?}");

        // Usage at the range's edges, each on a key of its own: in Kolkata (+5:30) Nov 30 ends at
        // 18:30 UTC and Nov 1 starts at 18:30 UTC on Oct 31, so both UTC days are cut; by key the
        // month's rows are read less the quarter-hours after the range's end.
        let hour = 3_600_000_000;
        let edges = [
            usage(
                "acme",
                "key_edge_out",
                "edge-out",
                "edge-model",
                BASE_US + 10 * DAY_US + 20 * hour,
                (10, 0, 0, 5, 0),
                &usd,
                false,
            ),
            usage(
                "acme",
                "key_edge_in",
                "edge-in",
                "edge-model",
                BASE_US - 20 * DAY_US + 20 * hour,
                (20, 0, 0, 5, 0),
                &usd,
                false,
            ),
        ];
        h.append_all(&edges).await?;
        h.catch_up(Projection::Ledger).await?;
        events.extend(edges);
        for zone in [chrono_tz::UTC, chrono_tz::Asia::Kolkata, chrono_tz::Asia::Kathmandu, chrono_tz::America::St_Johns]
        {
            for group_by in [GroupBy::Key, GroupBy::Model, GroupBy::Month, GroupBy::Day] {
                let report = grouped_usage_report(&h.store, "acme", zone, group_by, from, to, None).await?;
                let got: BTreeMap<_, _> = report
                    .rows
                    .iter()
                    .map(|r| {
                        (
                            (r.day.clone(), r.model.clone(), r.currency.clone()),
                            (r.requests, r.input_tokens, r.cost_nanos),
                        )
                    })
                    .collect();
                let want = reference(&events, zone, group_by, from, to);
                ensure!(got == want, "{backend:?} {zone} {group_by:?} with edges:\n got {got:?}\nwant {want:?}");
            }
        }

        // The billing report reads tenants of one zone together: each tenant's rows still equal
        // its own report summed over models, with tenants in two zones and in one.
        let record = |name: &str| read::TenantRecord {
            name: name.to_owned(),
            created_at_us: 0,
            display_name: None,
            time_zone: None,
            max_output_tokens: None,
            max_n: None,
        };
        let kolkata = chrono_tz::Asia::Kolkata;
        for zones in [[kolkata, chrono_tz::UTC], [kolkata, kolkata]] {
            let tenants = [(record("acme"), zones[0]), (record("beta"), zones[1])];
            for period in [GroupBy::Day, GroupBy::Week, GroupBy::Month] {
                let bill = read::billing_report(&h.store, &tenants, period, from, to, None).await?;
                let got: BTreeMap<_, _> = bill
                    .rows
                    .iter()
                    .map(|r| ((r.tenant.clone(), r.period.clone(), r.currency.clone()), (r.requests, r.cost_nanos)))
                    .collect();
                let mut want = BTreeMap::new();
                for (t, zone) in &tenants {
                    for r in grouped_usage_report(&h.store, &t.name, *zone, period, from, to, None).await?.rows {
                        let e = want.entry((t.name.clone(), r.day.clone(), r.currency.clone())).or_insert((0, 0));
                        e.0 += r.requests;
                        e.1 += r.cost_nanos;
                    }
                }
                ensure!(got == want, "{backend:?} {zones:?} {period:?}:\n got {got:?}\nwant {want:?}");
            }
        }
    }
    Ok(())
}
