//! The usage report finance exports. Its bytes depend only on the ledger's contents: fixed
//! column order, rows sorted by day, model and currency, money rendered by
//! `schemas::format_nanos`, one totals row per currency. The same events therefore give the same
//! bytes, before and after a rebuild.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, Offset, TimeZone};
use schemas::format_nanos;
use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{UsageDay, fetch_usage, to_u64, usage_day};
use crate::fold::rollup::SLOTS_PER_DAY;
use crate::store::Backend;
use crate::{ProjectionError, ReadStore};

/// The CSV header after the first column, in column order.
const CSV_HEADER_TAIL: &str = "model,currency,requests,input_tokens,cached_input_tokens,cache_write_tokens,\
                               output_tokens,reasoning_tokens,cost";

/// What one report row stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// A local day (`2026-11-30`) and model.
    #[default]
    Day,
    /// An ISO week (`2026-W48`) and model.
    Week,
    /// A month (`2026-11`) and model.
    Month,
    /// A model over the whole range.
    Model,
    /// An API key and model over the whole range.
    Key,
}

impl GroupBy {
    /// Parses `day|week|month|model|key`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(GroupBy::Day),
            "week" => Some(GroupBy::Week),
            "month" => Some(GroupBy::Month),
            "model" => Some(GroupBy::Model),
            "key" => Some(GroupBy::Key),
            _ => None,
        }
    }

    /// The name of the first column (and JSON row field); none when rows are by model alone.
    pub fn column(self) -> Option<&'static str> {
        match self {
            GroupBy::Day => Some("day"),
            GroupBy::Week => Some("week"),
            GroupBy::Month => Some("month"),
            GroupBy::Model => None,
            GroupBy::Key => Some("key"),
        }
    }
}
/// What the `day` column of a totals row says.
const TOTAL_LABEL: &str = "total";

/// The sums of one currency over a report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageTotal {
    /// Currency of `cost_nanos`.
    pub currency: String,
    /// Billable requests.
    pub requests: i64,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Cached input tokens.
    pub cached_input_tokens: i64,
    /// Cache-write tokens.
    pub cache_write_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Charge in nanos.
    pub cost_nanos: i64,
}

/// A tenant's usage over a range of days, as of a ledger sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The tenant.
    pub tenant: String,
    /// First day, inclusive.
    pub from_day: String,
    /// Last day, inclusive.
    pub to_day: String,
    /// What a row is: its first column (none for [`GroupBy::Model`]).
    pub group_by: GroupBy,
    /// The IANA zone whose local days bound the report and its periods.
    pub time_zone: String,
    /// The billing stream sequence the ledger had applied when the report was read.
    pub as_of_seq: u64,
    /// Rows by period (or key), model, currency; `day` holds the period label (`2026-11-30`,
    /// `2026-W48`, `2026-11`), the key id, or nothing for [`GroupBy::Model`].
    pub rows: Vec<UsageDay>,
    /// One row per currency, by currency.
    pub totals: Vec<UsageTotal>,
}

/// Reads the report of `tenant` from `from_day` to `to_day` (inclusive, `YYYY-MM-DD`) from the
/// daily rollups, with the ledger checkpoint of the same snapshot as its `as_of_seq`.
pub async fn usage_report(
    store: &ReadStore,
    tenant: &str,
    from_day: &str,
    to_day: &str,
) -> Result<Report, ProjectionError> {
    let mut tx = begin_snapshot(store).await?;
    let rows = fetch_usage(&mut *tx, tenant, None, from_day, to_day).await?;
    let seq = ledger_checkpoint(&mut tx).await?;
    tx.commit().await?;
    Ok(Report::new(tenant, from_day, to_day, seq, rows))
}

/// The usage report grouped by `group_by`, with days, ISO weeks and months taken in `zone`.
/// Read from rollups only: whole UTC months (by key) and days inside one period from the
/// monthly and daily rollups, the UTC days a period boundary of `zone` cuts from the
/// quarter-hour rollups folded into local days (exact: every zone offset in use is a whole
/// number of quarter-hours). With `as_of_seq`, summed from the ledger rows up to that sequence
/// instead, so the same `as_of` gives the same bytes after a rebuild.
pub async fn grouped_usage_report(
    store: &ReadStore,
    tenant: &str,
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    as_of_seq: Option<u64>,
) -> Result<Report, ProjectionError> {
    let mut tx = begin_snapshot(store).await?;
    let seq = snapshot_seq(&mut tx, as_of_seq).await?;
    let rows = grouped_rows(&mut tx, tenant, zone, group_by, from, to, as_of_seq).await?;
    tx.commit().await?;
    let mut report = Report::new(tenant, &from.to_string(), &to.to_string(), seq, rows);
    report.group_by = group_by;
    report.time_zone = zone.name().to_owned();
    Ok(report)
}

/// The sequence a report read in `tx` reflects: `as_of_seq` when the ledger has reached it
/// (else [`ProjectionError::NotCaughtUp`]), the ledger's checkpoint without one.
pub(super) async fn snapshot_seq(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    as_of_seq: Option<u64>,
) -> Result<u64, ProjectionError> {
    let applied = ledger_checkpoint(tx).await?;
    match as_of_seq {
        Some(want) if applied < want => Err(ProjectionError::NotCaughtUp { as_of_seq: want, applied }),
        Some(want) => Ok(want),
        None => Ok(applied),
    }
}

/// The rows of [`grouped_usage_report`], read inside `tx`, by label, model and currency.
pub(super) async fn grouped_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenant: &str,
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    as_of_seq: Option<u64>,
) -> Result<Vec<UsageDay>, ProjectionError> {
    let Some(want) = as_of_seq else {
        let mut by_tenant = grouped_rows_of(tx, &[tenant], zone, group_by, from, to).await?;
        return Ok(by_tenant.remove(tenant).unwrap_or_default());
    };
    // The UTC window that holds every local day of the range in any zone (offsets stay within
    // ±14 h); slots outside the range's local days are dropped in the fold.
    let (window_from, window_to) = (from - chrono::Days::new(1), to + chrono::Days::new(1));
    let rows = sqlx::query(&format!(
        "SELECT tenant, CAST(occurred_at_us / {SLOT_US} AS BIGINT) AS slot, '' AS day, key_id, \
         model_requested AS model, currency, CAST(COUNT(*) AS BIGINT) AS requests, {SUMS} FROM ledger \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
         AND tenant = $1 AND day >= $2 AND day <= $3 AND seq <= $4 \
         GROUP BY tenant, CAST(occurred_at_us / {SLOT_US} AS BIGINT), key_id, model_requested, currency"
    ))
    .bind(tenant)
    .bind(window_from.to_string())
    .bind(window_to.to_string())
    .bind(i64::try_from(want).unwrap_or(i64::MAX))
    .fetch_all(&mut **tx)
    .await?;
    let periods = Periods { zone, group_by, from, to };
    let mut by_tenant = fold(&periods, &HashMap::new(), rows.iter().map(|r| (r, 1)))?;
    Ok(by_tenant.remove(tenant).unwrap_or_default())
}

/// The live rows of several tenants sharing one zone, by tenant: each tier's rows of every
/// tenant in one statement (`tenant IN (…)`, one index range per tenant), so a page of tenants
/// costs a few statements, not a few per tenant.
pub(super) async fn grouped_rows_of(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    tenants: &[&str],
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> Result<BTreeMap<String, Vec<UsageDay>>, ProjectionError> {
    let periods = Periods { zone, group_by, from, to };
    let plan = periods.plan();
    let (month_sql, day_sql, slot_sql) = if group_by == GroupBy::Key {
        (Some(MONTHS_BY_KEY), DAYS_BY_KEY, SLOTS_BY_KEY)
    } else {
        (None, DAYS_BY_MODEL, SLOTS_BY_MODEL)
    };
    // Whole months and days map their `day` column (`2026-11`, `2026-11-30`) to a label; slot
    // rows (`day` empty) are labelled by their quarter-hour.
    let mut labels: HashMap<String, Option<String>> = HashMap::new();
    labels.extend(plan.months.iter().map(|(m, p)| (m.clone(), p.clone())));
    labels.extend(plan.days.iter().map(|(d, p)| (d.to_string(), p.clone())));
    let (mut rows, mut minus) = (Vec::new(), Vec::new());
    if let Some(sql) = month_sql {
        for (first, last) in runs(&plan.months, |a, b| next_month(a) == *b) {
            let sql = ranged(sql, "month", tenants.len(), "<=");
            rows.extend(bind_tenants(&sql, tenants).bind(first).bind(last).fetch_all(&mut **tx).await?);
        }
    }
    // Whole days: when every day is its own period (by day), one statement for each run of
    // consecutive days; otherwise one per run of consecutive days of one period, summed in SQL
    // (a month of one tenant's days is one row per model, not thirty).
    let per_day = plan.days.windows(2).all(|w| w[0].1 != w[1].1);
    let day_runs = if per_day { runs(&plan.days, |a, b| a.succ_opt() == Some(*b)) } else { label_runs(&plan.days) };
    for (first, last) in day_runs {
        let (first, last) = (first.to_string(), last.to_string());
        let sql = if per_day {
            ranged(day_sql, "day", tenants.len(), "<=")
        } else {
            summed(day_sql, "day", tenants.len(), "<=", group_by, "MIN(day)", "")
        };
        rows.extend(bind_tenants(&sql, tenants).bind(first).bind(last).fetch_all(&mut **tx).await?);
    }
    // Quarter-hours: summed in SQL per local day (`(slot + offset) / 96`), one statement per
    // range of one UTC offset, so a zone that cuts every UTC day reads a row per local day and
    // model rather than 96. The group's first slot stands for it: every slot of a group lies in
    // the same local day.
    for (ranges, out) in [(&plan.slots, &mut rows), (&plan.minus, &mut minus)] {
        for (lo, hi, offset) in periods.constant_offsets(ranges) {
            let group = format!("(slot + ${}) / {SLOTS_PER_DAY}", tenants.len() + 3);
            let sql = summed(slot_sql, "slot", tenants.len(), "<", group_by, "MIN(slot)", &group);
            out.extend(bind_tenants(&sql, tenants).bind(lo).bind(hi).bind(offset).fetch_all(&mut **tx).await?);
        }
    }
    let signed = rows.iter().map(|r| (r, 1)).chain(minus.iter().map(|r| (r, -1)));
    fold(&periods, &labels, signed)
}

/// `sql` (a tier's statement up to its generation condition) with the tenant list and the range
/// of `column` as bound parameters: `$1…$n` the tenants, then the range's two ends. Only the
/// count of placeholders varies; every value is bound.
fn ranged(sql: &str, column: &str, tenants: usize, upper: &str) -> String {
    let list: Vec<String> = (1..=tenants).map(|i| format!("${i}")).collect();
    let (lo, hi) = (tenants + 1, tenants + 2);
    format!("{sql} AND tenant IN ({}) AND {column} >= ${lo} AND {column} {upper} ${hi}", list.join(", "))
}

/// As [`ranged`], with the tier's counters summed per tenant, key (by key only), model and
/// currency and `extra` (a grouping expression, or empty): `first` (`MIN(day)` or `MIN(slot)`)
/// stands for the summed rows.
fn summed(sql: &str, column: &str, tenants: usize, upper: &str, group_by: GroupBy, first: &str, extra: &str) -> String {
    // The tier's table and generation condition, after its column list.
    let (_, from_where) = sql.split_once(" FROM ").unwrap_or(("", sql));
    let condition = ranged(from_where, column, tenants, upper);
    let (key, grouping) = if group_by == GroupBy::Key {
        ("key_id", "tenant, key_id, model, currency")
    } else {
        ("'' AS key_id", "tenant, model, currency")
    };
    let (day, slot) = if column == "day" {
        (format!("{first} AS day"), "CAST(0 AS BIGINT) AS slot".to_owned())
    } else {
        ("'' AS day".to_owned(), format!("CAST({first} AS BIGINT) AS slot"))
    };
    let extra = if extra.is_empty() { String::new() } else { format!(", {extra}") };
    format!(
        "SELECT tenant, {day}, {slot}, {key}, model, currency, CAST(SUM(requests) AS BIGINT) AS requests, {SUMS} \
         FROM {condition} GROUP BY {grouping}{extra}"
    )
}

/// Runs of consecutive days of one period, as `(first, last)`.
fn label_runs(days: &[(chrono::NaiveDate, Option<String>)]) -> Vec<(chrono::NaiveDate, chrono::NaiveDate)> {
    let mut out: Vec<(chrono::NaiveDate, chrono::NaiveDate, &Option<String>)> = Vec::new();
    for (day, label) in days {
        match out.last_mut() {
            Some((_, last, l)) if last.succ_opt() == Some(*day) && *l == label => *last = *day,
            _ => out.push((*day, *day, label)),
        }
    }
    out.into_iter().map(|(a, b, _)| (a, b)).collect()
}

fn bind_tenants<'q>(sql: &'q str, tenants: &[&str]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    tenants.iter().fold(sqlx::query(sql), |q, t| q.bind((*t).to_owned()))
}

/// Sums `rows` (each with its sign) into report rows by tenant, label, model and currency.
fn fold<'r>(
    periods: &Periods,
    labels: &HashMap<String, Option<String>>,
    rows: impl Iterator<Item = (&'r AnyRow, i64)>,
) -> Result<BTreeMap<String, Vec<UsageDay>>, ProjectionError> {
    let mut buckets: BTreeMap<(String, String, String, String), UsageDay> = BTreeMap::new();
    for (r, sign) in rows {
        let day_text: String = r.try_get("day")?;
        let period = if day_text.is_empty() {
            periods.of_slot(r.try_get("slot")?)
        } else {
            labels.get(&day_text).cloned().flatten()
        };
        // A subtracted quarter-hour counts only outside the range (inside, its month holds it).
        let period = if sign < 0 { if period.is_some() { None } else { Some(String::new()) } } else { period };
        let Some(period) = period else { continue };
        let label = if periods.group_by == GroupBy::Key { r.try_get("key_id")? } else { period };
        let tenant: String = r.try_get("tenant")?;
        let mut part = usage_day(r)?;
        if sign < 0 {
            for c in [
                &mut part.requests,
                &mut part.input_tokens,
                &mut part.cached_input_tokens,
                &mut part.cache_write_tokens,
                &mut part.output_tokens,
                &mut part.reasoning_tokens,
                &mut part.cost_nanos,
            ] {
                *c = c.saturating_neg();
            }
        }
        let key = (tenant, label.clone(), part.model.clone(), part.currency.clone());
        let b = buckets.entry(key).or_insert_with(|| UsageDay {
            day: label,
            model: part.model.clone(),
            currency: part.currency.clone(),
            requests: 0,
            input_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 0,
            reasoning_tokens: 0,
            cost_nanos: 0,
        });
        b.requests = b.requests.saturating_add(part.requests);
        b.input_tokens = b.input_tokens.saturating_add(part.input_tokens);
        b.cached_input_tokens = b.cached_input_tokens.saturating_add(part.cached_input_tokens);
        b.cache_write_tokens = b.cache_write_tokens.saturating_add(part.cache_write_tokens);
        b.output_tokens = b.output_tokens.saturating_add(part.output_tokens);
        b.reasoning_tokens = b.reasoning_tokens.saturating_add(part.reasoning_tokens);
        b.cost_nanos = b.cost_nanos.saturating_add(part.cost_nanos);
    }
    let mut out: BTreeMap<String, Vec<UsageDay>> = BTreeMap::new();
    for ((tenant, ..), b) in buckets {
        // Every ledger row is a request: a key whose month was all subtracted has none left here.
        if b.requests != 0 {
            out.entry(tenant).or_default().push(b);
        }
    }
    Ok(out)
}

/// The periods of a report: local days from `from` to `to` in `zone`, labelled per `group_by`.
struct Periods {
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
}

/// Which rollup tier each part of a report's UTC window is read from.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    /// UTC months (`YYYY-MM`) inside the range but for the cut days at its ends, with their
    /// label: `usage_month_key` (reports by key only).
    months: Vec<(String, Option<String>)>,
    /// Whole UTC days inside one period and not in a month above: the daily rollups.
    days: Vec<(chrono::NaiveDate, Option<String>)>,
    /// Quarter-hours `lo..hi` of the UTC days a period boundary cuts: the slot rollups.
    slots: Vec<(i64, i64)>,
    /// Quarter-hours `lo..hi` of the cut days inside a month above: those outside the range are
    /// subtracted from the month's rows (by key only).
    minus: Vec<(i64, i64)>,
}

impl Periods {
    /// The period label of a local day, or `None` outside the range (by key and by model every
    /// day of the range is one period, labelled later by key or not at all).
    fn of_day(&self, local: chrono::NaiveDate) -> Option<String> {
        if local < self.from || local > self.to {
            return None;
        }
        Some(match self.group_by {
            GroupBy::Day => local.format("%Y-%m-%d").to_string(),
            GroupBy::Week => {
                let w = local.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            GroupBy::Month => local.format("%Y-%m").to_string(),
            GroupBy::Model | GroupBy::Key => String::new(),
        })
    }

    /// The period of a quarter-hour: every zone offset in use is a whole number of quarter-hours,
    /// so the slot lies in one local day.
    fn of_slot(&self, slot: i64) -> Option<String> {
        let at = chrono::DateTime::from_timestamp_micros(slot.saturating_mul(SLOT_US))?;
        self.of_day(at.with_timezone(&self.zone).date_naive())
    }

    /// `ranges` (quarter-hours `lo..hi`) split where the zone's offset changes, each piece with
    /// its offset in quarter-hours. A zone changes its offset at most once a day, so a day's
    /// change is found by halving within it.
    fn constant_offsets(&self, ranges: &[(i64, i64)]) -> Vec<(i64, i64, i64)> {
        let quarters = |slot: i64| self.offset(slot).map_or(0, |o| i64::from(o.local_minus_utc()) / 900);
        let mut out = Vec::new();
        for &(lo, hi) in ranges {
            let (mut start, mut offset) = (lo, quarters(lo));
            let mut at = lo;
            while at < hi {
                let next = (at + SLOTS_PER_DAY).min(hi);
                if quarters(next - 1) != offset {
                    // quarters(a) == offset, quarters(b) != offset
                    let (mut a, mut b) = (at, next - 1);
                    while b - a > 1 {
                        let mid = a + (b - a) / 2;
                        if quarters(mid) == offset {
                            a = mid;
                        } else {
                            b = mid;
                        }
                    }
                    out.push((start, b, offset));
                    (start, offset) = (b, quarters(b));
                }
                at = next;
            }
            out.push((start, hi, offset));
        }
        out
    }

    fn offset(&self, slot: i64) -> Option<chrono::FixedOffset> {
        let at = chrono::DateTime::from_timestamp_micros(slot.saturating_mul(SLOT_US))?;
        Some(self.zone.offset_from_utc_datetime(&at.naive_utc()).fix())
    }

    /// Splits the UTC window holding the range's local days (a day either side: offsets stay
    /// within ±14 h) into whole months, whole days and quarter-hours. A UTC day is whole when
    /// its first and last quarter-hour have the same period and the same offset (no zone in the
    /// database changes its offset twice within a day, so the period holds for the whole day);
    /// whole days outside the range are left out. A month is whole when all of its days are
    /// whole and in one period.
    fn plan(&self) -> Plan {
        let mut plan = Plan::default();
        let (first, last) = (self.from - chrono::Days::new(1), self.to + chrono::Days::new(1));
        // Each UTC day of the window: `Some(period)` when whole, `None` when a boundary cuts it.
        let mut days: Vec<(chrono::NaiveDate, Option<Option<String>>)> = Vec::new();
        let mut day = first;
        while day <= last {
            let s0 = slot_of(midnight_us(day));
            let s1 = s0 + SLOTS_PER_DAY - 1;
            let period = self.of_slot(s0);
            let whole = period == self.of_slot(s1) && self.offset(s0) == self.offset(s1);
            days.push((day, whole.then_some(period)));
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        let mut i = 0;
        while i < days.len() {
            let (d, kind) = &days[i];
            // By key the range is one period: a UTC month of the window with no day wholly
            // outside the range is read as its month rows, less the quarter-hours of its cut
            // days that fall outside the range.
            if self.group_by == GroupBy::Key && d.day() == 1 {
                let n = usize::try_from(month_days(*d)).unwrap_or(usize::MAX);
                if let Some(month) = days.get(i..i.saturating_add(n))
                    && month.iter().all(|(e, k)| e.month() == d.month() && !matches!(k, Some(None)))
                {
                    plan.months.push((d.format("%Y-%m").to_string(), Some(String::new())));
                    for (e, k) in month {
                        if k.is_none() {
                            push_day_slots(&mut plan.minus, *e);
                        }
                    }
                    i += n;
                    continue;
                }
            }
            match kind {
                Some(Some(period)) => plan.days.push((*d, Some(period.clone()))),
                Some(None) => {}
                None => push_day_slots(&mut plan.slots, *d),
            }
            i += 1;
        }
        plan
    }
}

/// Adds the quarter-hours of UTC day `day` to `ranges`, joining a range it follows.
fn push_day_slots(ranges: &mut Vec<(i64, i64)>, day: chrono::NaiveDate) {
    let lo = slot_of(midnight_us(day));
    match ranges.last_mut() {
        Some((_, hi)) if *hi == lo => *hi = lo + SLOTS_PER_DAY,
        _ => ranges.push((lo, lo + SLOTS_PER_DAY)),
    }
}

/// The number of days in the month of `d`.
fn month_days(d: chrono::NaiveDate) -> u32 {
    let first = d.with_day(1).unwrap_or(d);
    let next = first.checked_add_months(chrono::Months::new(1)).unwrap_or(first);
    u32::try_from((next - first).num_days()).unwrap_or(0)
}

/// `YYYY-MM` of the month after `m` (`YYYY-MM`).
fn next_month(m: &str) -> String {
    chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.checked_add_months(chrono::Months::new(1)))
        .map(|d| d.format("%Y-%m").to_string())
        .unwrap_or_default()
}

/// Runs of consecutive items (`next(a, b)` when `b` follows `a`) as `(first, last)`: one
/// index range each.
fn runs<T: Clone>(items: &[(T, Option<String>)], next: impl Fn(&T, &T) -> bool) -> Vec<(T, T)> {
    let mut out: Vec<(T, T)> = Vec::new();
    for (item, _) in items {
        match out.last_mut() {
            Some((_, last)) if next(last, item) => *last = item.clone(),
            _ => out.push((item.clone(), item.clone())),
        }
    }
    out
}

/// The tiers' statements up to their generation condition ([`ranged`] adds the tenants and the
/// range): each selects `tenant`, `day` (the month or day; empty for a quarter-hour), `slot`,
/// `key_id`, `model`, `currency` and the counters, one row per rollup row (the rows are unique
/// by their key already, so nothing is grouped in SQL).
const MONTHS_BY_KEY: &str = "SELECT tenant, month AS day, CAST(0 AS BIGINT) AS slot, key_id, model, currency, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos \
     FROM usage_month_key \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";
const DAYS_BY_KEY: &str = "SELECT tenant, day, CAST(0 AS BIGINT) AS slot, key_id, model, currency, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos \
     FROM usage_daily_key \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";
const SLOTS_BY_KEY: &str = "SELECT tenant, '' AS day, slot, key_id, model, currency, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos \
     FROM usage_slot_key \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";
const DAYS_BY_MODEL: &str = "SELECT tenant, day, CAST(0 AS BIGINT) AS slot, '' AS key_id, model, currency, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos \
     FROM usage_daily \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";
const SLOTS_BY_MODEL: &str = "SELECT tenant, '' AS day, slot, '' AS key_id, model, currency, requests, \
     input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_nanos \
     FROM usage_slot \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";

/// The report the CLI and the admin API both give: by day in UTC from the daily rollups
/// ([`usage_report`], [`usage_report_as_of`]), any other grouping or zone through
/// [`grouped_usage_report`].
pub async fn report_in_zone(
    store: &ReadStore,
    tenant: &str,
    zone: chrono_tz::Tz,
    group_by: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    as_of_seq: Option<u64>,
) -> Result<Report, ProjectionError> {
    if group_by != GroupBy::Day || zone != chrono_tz::UTC {
        return grouped_usage_report(store, tenant, zone, group_by, from, to, as_of_seq).await;
    }
    let (from, to) = (from.to_string(), to.to_string());
    match as_of_seq {
        None => usage_report(store, tenant, &from, &to).await,
        Some(seq) => usage_report_as_of(store, tenant, &from, &to, seq).await,
    }
}

/// Microseconds in one rollup slot (a quarter-hour).
const SLOT_US: i64 = 900_000_000;

/// The summed token and cost columns every grouped query selects.
const SUMS: &str = "CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
                    CAST(SUM(cached_input_tokens) AS BIGINT) AS cached_input_tokens, \
                    CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
                    CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
                    CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
                    CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos";

/// The quarter-hour slot (since the epoch, UTC) holding `occurred_at_us`.
pub fn slot_of(occurred_at_us: i64) -> i64 {
    occurred_at_us.div_euclid(SLOT_US)
}

fn midnight_us(day: chrono::NaiveDate) -> i64 {
    day.and_time(chrono::NaiveTime::MIN).and_utc().timestamp_micros()
}

/// The report as it was when the ledger had applied the billing stream up to `as_of_seq`:
/// summed from the ledger rows with a sequence up to it, so asking again later (or after a
/// rebuild) gives the same bytes as [`usage_report`] gave at that sequence. Fails with
/// [`ProjectionError::NotCaughtUp`] when the ledger has not reached `as_of_seq` yet.
pub async fn usage_report_as_of(
    store: &ReadStore,
    tenant: &str,
    from_day: &str,
    to_day: &str,
    as_of_seq: u64,
) -> Result<Report, ProjectionError> {
    let mut tx = begin_snapshot(store).await?;
    let applied = ledger_checkpoint(&mut tx).await?;
    if applied < as_of_seq {
        return Err(ProjectionError::NotCaughtUp { as_of_seq, applied });
    }
    // CAST: Postgres sums BIGINTs into NUMERIC, which the Any driver cannot decode.
    let rows = sqlx::query(
        "SELECT day, model_requested AS model, currency, CAST(COUNT(*) AS BIGINT) AS requests, \
         CAST(SUM(input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(cached_input_tokens) AS BIGINT) AS cached_input_tokens, \
         CAST(SUM(cache_write_tokens) AS BIGINT) AS cache_write_tokens, \
         CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, \
         CAST(SUM(reasoning_tokens) AS BIGINT) AS reasoning_tokens, \
         CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos FROM ledger \
         WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') \
         AND tenant = $1 AND day >= $2 AND day <= $3 AND seq <= $4 \
         GROUP BY day, model_requested, currency ORDER BY day, model_requested, currency",
    )
    .bind(tenant)
    .bind(from_day)
    .bind(to_day)
    .bind(i64::try_from(as_of_seq).unwrap_or(i64::MAX))
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let rows = rows.iter().map(usage_day).collect::<Result<_, _>>()?;
    Ok(Report::new(tenant, from_day, to_day, as_of_seq, rows))
}

/// A read transaction whose statements all see one snapshot: Postgres needs REPEATABLE READ for
/// that; a SQLite read transaction is one snapshot already.
pub(super) async fn begin_snapshot(
    store: &ReadStore,
) -> Result<sqlx::Transaction<'static, sqlx::Any>, ProjectionError> {
    let mut tx = store.pool().begin().await?;
    if store.backend() == Backend::Postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut *tx).await?;
    }
    Ok(tx)
}

/// The sequence the active ledger generation has applied (0 before the first event).
async fn ledger_checkpoint(tx: &mut sqlx::Transaction<'static, sqlx::Any>) -> Result<u64, ProjectionError> {
    let seq: Option<i64> = sqlx::query(
        "SELECT c.seq FROM projection_checkpoint c JOIN projection_generation g \
         ON g.projection = c.projection AND g.active_generation = c.generation WHERE c.projection = 'ledger'",
    )
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.try_get("seq"))
    .transpose()?;
    Ok(to_u64(seq.unwrap_or(0)))
}

impl Report {
    /// Builds a report from its rows, sorting them and computing the totals.
    pub fn new(tenant: &str, from_day: &str, to_day: &str, as_of_seq: u64, mut rows: Vec<UsageDay>) -> Self {
        rows.sort_by(|a, b| (&a.day, &a.model, &a.currency).cmp(&(&b.day, &b.model, &b.currency)));
        let mut totals: BTreeMap<&str, UsageTotal> = BTreeMap::new();
        for r in &rows {
            let t = totals
                .entry(r.currency.as_str())
                .or_insert_with(|| UsageTotal { currency: r.currency.clone(), ..UsageTotal::default() });
            // Saturating: a sum past i64 is not a real bill, and a report must not panic.
            t.requests = t.requests.saturating_add(r.requests);
            t.input_tokens = t.input_tokens.saturating_add(r.input_tokens);
            t.cached_input_tokens = t.cached_input_tokens.saturating_add(r.cached_input_tokens);
            t.cache_write_tokens = t.cache_write_tokens.saturating_add(r.cache_write_tokens);
            t.output_tokens = t.output_tokens.saturating_add(r.output_tokens);
            t.reasoning_tokens = t.reasoning_tokens.saturating_add(r.reasoning_tokens);
            t.cost_nanos = t.cost_nanos.saturating_add(r.cost_nanos);
        }
        let totals = totals.into_values().collect();
        Report {
            tenant: tenant.to_owned(),
            from_day: from_day.to_owned(),
            to_day: to_day.to_owned(),
            group_by: GroupBy::Day,
            time_zone: "UTC".to_owned(),
            as_of_seq,
            rows,
            totals,
        }
    }

    /// RFC 4180 CSV: a header, the rows, then a `total` row per currency; `\r\n` line ends.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut out = String::new();
        let first = self.group_by.column();
        if let Some(c) = first {
            out.push_str(c);
            out.push(',');
        }
        out.push_str(CSV_HEADER_TAIL);
        out.push_str("\r\n");
        for r in &self.rows {
            if first.is_some() {
                out.push_str(&csv_field(&r.day));
                out.push(',');
            }
            let fields = [
                csv_field(&r.model),
                csv_field(&r.currency),
                r.requests.to_string(),
                r.input_tokens.to_string(),
                r.cached_input_tokens.to_string(),
                r.cache_write_tokens.to_string(),
                r.output_tokens.to_string(),
                r.reasoning_tokens.to_string(),
                format_nanos(r.cost_nanos),
            ];
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        for t in &self.totals {
            // The totals row names itself in the first column, or in the model column when
            // rows are by model alone.
            let fields = [
                if first.is_some() { format!("{TOTAL_LABEL},") } else { TOTAL_LABEL.to_owned() },
                csv_field(&t.currency),
                t.requests.to_string(),
                t.input_tokens.to_string(),
                t.cached_input_tokens.to_string(),
                t.cache_write_tokens.to_string(),
                t.output_tokens.to_string(),
                t.reasoning_tokens.to_string(),
                format_nanos(t.cost_nanos),
            ];
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out.into_bytes()
    }

    /// Pretty JSON with a fixed key order; money as decimal strings (`"1.250000000"`).
    pub fn to_json(&self) -> Vec<u8> {
        let doc = JsonReport {
            tenant: &self.tenant,
            from_day: &self.from_day,
            to_day: &self.to_day,
            group_by: self.group_by.column().unwrap_or("model"),
            time_zone: &self.time_zone,
            as_of_seq: self.as_of_seq,
            rows: self.rows.iter().map(|r| JsonRow::of(r, self.group_by)).collect(),
            totals: self
                .totals
                .iter()
                .map(|t| JsonTotal {
                    currency: &t.currency,
                    requests: t.requests,
                    input_tokens: t.input_tokens,
                    cached_input_tokens: t.cached_input_tokens,
                    cache_write_tokens: t.cache_write_tokens,
                    output_tokens: t.output_tokens,
                    reasoning_tokens: t.reasoning_tokens,
                    cost: format_nanos(t.cost_nanos),
                })
                .collect(),
        };
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(&doc).unwrap_or_default()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[derive(Serialize)]
struct JsonReport<'a> {
    tenant: &'a str,
    from_day: &'a str,
    to_day: &'a str,
    group_by: &'a str,
    time_zone: &'a str,
    as_of_seq: u64,
    rows: Vec<JsonRow<'a>>,
    totals: Vec<JsonTotal<'a>>,
}

#[derive(Serialize)]
struct JsonRow<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    day: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    week: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    month: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    model: &'a str,
    currency: &'a str,
    requests: i64,
    input_tokens: i64,
    cached_input_tokens: i64,
    cache_write_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cost: String,
}

impl<'a> JsonRow<'a> {
    /// The row with its label under the field `group_by` names.
    fn of(r: &'a UsageDay, group_by: GroupBy) -> Self {
        let label = |g: GroupBy| (group_by == g).then_some(r.day.as_str());
        JsonRow {
            day: label(GroupBy::Day),
            week: label(GroupBy::Week),
            month: label(GroupBy::Month),
            key: label(GroupBy::Key),
            model: &r.model,
            currency: &r.currency,
            requests: r.requests,
            input_tokens: r.input_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cache_write_tokens: r.cache_write_tokens,
            output_tokens: r.output_tokens,
            reasoning_tokens: r.reasoning_tokens,
            cost: format_nanos(r.cost_nanos),
        }
    }
}

#[derive(Serialize)]
struct JsonTotal<'a> {
    currency: &'a str,
    requests: i64,
    input_tokens: i64,
    cached_input_tokens: i64,
    cache_write_tokens: i64,
    output_tokens: i64,
    reasoning_tokens: i64,
    cost: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(day: &str, model: &str, cost: i64) -> UsageDay {
        UsageDay {
            day: day.into(),
            model: model.into(),
            currency: "USD".into(),
            requests: 1,
            input_tokens: 10,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            output_tokens: 5,
            reasoning_tokens: 0,
            cost_nanos: cost,
        }
    }

    fn plan(zone: chrono_tz::Tz, group_by: GroupBy, from: &str, to: &str) -> Plan {
        let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap_or_default();
        Periods { zone, group_by, from: d(from), to: d(to) }.plan()
    }

    fn day_slots(day: &str) -> (i64, i64) {
        let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap_or_default();
        let lo = slot_of(midnight_us(d));
        (lo, lo + SLOTS_PER_DAY)
    }

    #[test]
    fn utc_reads_months_and_days_and_no_quarter_hours() {
        let p = plan(chrono_tz::UTC, GroupBy::Key, "2026-11-01", "2026-11-30");
        assert_eq!(p.months, [("2026-11".to_owned(), Some(String::new()))]);
        assert!(p.days.is_empty() && p.slots.is_empty() && p.minus.is_empty(), "{p:?}");
        let p = plan(chrono_tz::UTC, GroupBy::Week, "2026-11-01", "2026-11-30");
        assert_eq!(p.days.len(), 30);
        assert_eq!(p.days[1].1.as_deref(), Some("2026-W45"));
        assert!(p.months.is_empty() && p.slots.is_empty());
        let p = plan(chrono_tz::UTC, GroupBy::Key, "2026-11-05", "2026-12-02");
        assert!(p.months.is_empty() && p.days.len() == 28 && p.slots.is_empty(), "{p:?}");
    }

    #[test]
    fn a_zone_reads_quarter_hours_only_where_its_boundaries_cut_a_utc_day() {
        // Kolkata (+5:30): Nov 1..30 local is Oct 31 18:30 .. Nov 30 18:30 UTC.
        let p = plan(chrono_tz::Asia::Kolkata, GroupBy::Key, "2026-11-01", "2026-11-30");
        assert_eq!(p.months, [("2026-11".to_owned(), Some(String::new()))]);
        assert_eq!(p.slots, [day_slots("2026-10-31")]);
        assert_eq!(p.minus, [day_slots("2026-11-30")]);
        let p = plan(chrono_tz::Asia::Kolkata, GroupBy::Month, "2026-11-01", "2026-11-30");
        assert_eq!(p.days.len(), 29);
        assert!(p.days.iter().all(|(_, l)| l.as_deref() == Some("2026-11")));
        assert_eq!(p.slots, [day_slots("2026-10-31"), day_slots("2026-11-30")]);
        // By day every UTC day is cut: one run of quarter-hours, no days.
        let p = plan(chrono_tz::Asia::Kolkata, GroupBy::Day, "2026-11-01", "2026-11-30");
        assert!(p.days.is_empty() && p.slots == [(day_slots("2026-10-31").0, day_slots("2026-11-30").1)], "{p:?}");
        // A DST change cuts its UTC day even where no period boundary falls.
        let p = plan(chrono_tz::Europe::London, GroupBy::Model, "2026-10-01", "2026-10-31");
        assert!(p.slots.contains(&day_slots("2026-10-25")) || p.minus.contains(&day_slots("2026-10-25")), "{p:?}");
    }

    #[test]
    fn quarter_hours_are_split_where_the_offset_changes_and_nowhere_else() {
        let periods = |zone| Periods {
            zone,
            group_by: GroupBy::Day,
            from: "2026-03-01".parse().unwrap_or_default(),
            to: "2026-03-31".parse().unwrap_or_default(),
        };
        // New York moves from −5:00 to −4:00 at 2026-03-08 07:00 UTC.
        let (lo, _) = day_slots("2026-03-01");
        let (_, hi) = day_slots("2026-03-31");
        let change = slot_of(
            chrono::NaiveDate::from_ymd_opt(2026, 3, 8)
                .and_then(|d| d.and_hms_opt(7, 0, 0))
                .map_or(0, |t| t.and_utc().timestamp_micros()),
        );
        assert_eq!(
            periods(chrono_tz::America::New_York).constant_offsets(&[(lo, hi)]),
            [(lo, change, -20), (change, hi, -16)]
        );
        assert_eq!(
            periods(chrono_tz::Asia::Kolkata).constant_offsets(&[(lo, hi), (hi + 5, hi + 9)]),
            [(lo, hi, 22), (hi + 5, hi + 9, 22)]
        );
    }

    #[test]
    fn csv_is_sorted_quoted_and_totalled() {
        let r = Report::new(
            "acme",
            "2026-01-01",
            "2026-01-31",
            7,
            vec![day("2026-01-02", "b", 1_500_000_000), day("2026-01-01", "a,\"x\"", 1)],
        );
        let csv = String::from_utf8(r.to_csv()).unwrap_or_default();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], format!("day,{CSV_HEADER_TAIL}"));
        assert_eq!(lines[1], "2026-01-01,\"a,\"\"x\"\"\",USD,1,10,0,0,5,0,0.000000001");
        assert_eq!(lines[2], "2026-01-02,b,USD,1,10,0,0,5,0,1.500000000");
        assert_eq!(lines[3], "total,,USD,2,20,0,0,10,0,1.500000001");
        assert_eq!(lines[4], "");
    }

    #[test]
    fn json_has_a_fixed_key_order_and_decimal_money() {
        let r = Report::new("acme", "2026-01-01", "2026-01-31", 3, vec![day("2026-01-01", "m", 2_500_000_000)]);
        let json = String::from_utf8(r.to_json()).unwrap_or_default();
        let keys = ["\"tenant\"", "\"from_day\"", "\"to_day\"", "\"as_of_seq\"", "\"rows\"", "\"totals\""];
        let positions: Vec<usize> = keys.iter().filter_map(|k| json.find(k)).collect();
        assert_eq!(positions.len(), keys.len(), "{json}");
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{json}");
        assert!(json.contains("\"cost\": \"2.500000000\""), "{json}");
        assert_eq!(r.to_json(), r.clone().to_json());
    }
}
