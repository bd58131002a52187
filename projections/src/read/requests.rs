//! Reads of the `requests` projection: the request log with filters and newest-first keyset
//! paging, and the dashboard's period statistics (request counts and latency percentiles from
//! the quarter-hour rollup, tokens and cost from the ledger's slots). Filters are appended as
//! bound parameters only when given, so each query is one index range of migration 0007.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::fold::rollup::{ALL_TENANTS, SLOTS_PER_DAY};
use crate::{ProjectionError, ReadStore};

const ACTIVE: &str = "(SELECT active_generation FROM projection_generation WHERE projection = 'requests')";

/// Latency histogram buckets per doubling: bucket `b` holds `[2^(b/4), 2^((b+1)/4))` µs.
pub const BUCKETS_PER_DOUBLING: i64 = 4;
/// The last bucket (about 2^40 µs, 12 days): longer latencies are counted in it.
pub const MAX_BUCKET: i64 = 160;

/// The histogram bucket of a latency in microseconds.
pub fn latency_bucket(latency_us: i64) -> i64 {
    let us = latency_us.max(1) as f64;
    let b = (us.log2() * BUCKETS_PER_DOUBLING as f64).floor() as i64;
    b.clamp(0, MAX_BUCKET)
}

/// The upper bound of bucket `b` in microseconds (rounded up): what a percentile falling in `b`
/// reports, so it is never below the true value and at most one bucket width (~19%) above.
pub fn bucket_upper_us(bucket: i64) -> i64 {
    2f64.powf((bucket + 1) as f64 / BUCKETS_PER_DOUBLING as f64).ceil() as i64
}

/// A status filter: one code, or a class (`4` for `4xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Exactly this status.
    Exact(i64),
    /// `class`xx.
    Class(i64),
}

/// Request-log filters; `None` is "any".
#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// Only this key.
    pub key_id: Option<String>,
    /// Only this model (as asked for).
    pub model: Option<String>,
    /// Only this channel.
    pub channel_id: Option<String>,
    /// Only this status or class.
    pub status: Option<StatusFilter>,
    /// Only this error class.
    pub error_class: Option<String>,
    /// At or after this time (µs).
    pub from_us: Option<i64>,
    /// Before this time (µs).
    pub to_us: Option<i64>,
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// The request id.
    pub request_id: String,
    /// When it was logged (µs since the epoch).
    pub occurred_at_us: i64,
    /// Its tenant.
    pub tenant: String,
    /// The key, when authenticated.
    pub key_id: Option<String>,
    /// `chat.completions`, …
    pub endpoint: String,
    /// The model asked for.
    pub model: Option<String>,
    /// The provider, when routed.
    pub provider: Option<String>,
    /// The channel, when routed.
    pub channel_id: Option<String>,
    /// HTTP status sent to the client.
    pub status: i64,
    /// Total latency (µs).
    pub latency_us: i64,
    /// Time to first byte of a stream (µs).
    pub ttft_us: Option<i64>,
    /// Upstream attempts.
    pub attempts: i64,
    /// The error class, when it failed.
    pub error_class: Option<String>,
    /// Whether it streamed.
    pub streamed: bool,
    /// Each attempt's class, in order.
    pub attempt_classes: Vec<String>,
}

enum Arg {
    Int(i64),
    Text(String),
}

/// One page of the request log, newest first (time, then request id, both descending), after
/// the `(time, request id)` of the previous page's last row.
pub async fn request_log_page(
    store: &ReadStore,
    filter: &RequestFilter,
    after: Option<(i64, &str)>,
    limit: u32,
) -> Result<Vec<RequestRecord>, ProjectionError> {
    let mut sql = format!(
        "SELECT request_id, occurred_at_us, tenant, key_id, endpoint, model, provider, channel_id, status, \
         latency_us, ttft_us, attempts, error_class, streamed, attempt_classes FROM request_log \
         WHERE generation = {ACTIVE}"
    );
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |sql: &mut String, column: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&format!(" AND {column} ${}", args.len()));
    };
    if let Some(t) = &filter.tenant {
        push(&mut sql, "tenant =", Arg::Text(t.clone()));
    }
    if let Some(k) = &filter.key_id {
        push(&mut sql, "key_id =", Arg::Text(k.clone()));
    }
    if let Some(m) = &filter.model {
        push(&mut sql, "model =", Arg::Text(m.clone()));
    }
    if let Some(c) = &filter.channel_id {
        push(&mut sql, "channel_id =", Arg::Text(c.clone()));
    }
    match filter.status {
        Some(StatusFilter::Exact(s)) => push(&mut sql, "status =", Arg::Int(s)),
        Some(StatusFilter::Class(c)) => push(&mut sql, "status_class =", Arg::Int(c)),
        None => {}
    }
    if let Some(e) = &filter.error_class {
        push(&mut sql, "error_class =", Arg::Text(e.clone()));
    }
    if let Some(f) = filter.from_us {
        push(&mut sql, "occurred_at_us >=", Arg::Int(f));
    }
    if let Some(t) = filter.to_us {
        push(&mut sql, "occurred_at_us <", Arg::Int(t));
    }
    if let Some((at, id)) = after {
        args.push(Arg::Int(at));
        args.push(Arg::Text(id.to_owned()));
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(" AND (occurred_at_us < ${a} OR (occurred_at_us = ${a} AND request_id < ${b}))"));
    }
    args.push(Arg::Int(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY occurred_at_us DESC, request_id DESC LIMIT ${}", args.len()));
    let mut query = sqlx::query(&sql);
    for a in args {
        query = match a {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    let rows = query.fetch_all(store.pool()).await?;
    rows.iter().map(request_record).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

fn request_record(r: &AnyRow) -> Result<RequestRecord, sqlx::Error> {
    let classes: Option<String> = r.try_get("attempt_classes")?;
    Ok(RequestRecord {
        request_id: r.try_get("request_id")?,
        occurred_at_us: r.try_get("occurred_at_us")?,
        tenant: r.try_get("tenant")?,
        key_id: r.try_get("key_id")?,
        endpoint: r.try_get("endpoint")?,
        model: r.try_get("model")?,
        provider: r.try_get("provider")?,
        channel_id: r.try_get("channel_id")?,
        status: r.try_get("status")?,
        latency_us: r.try_get("latency_us")?,
        ttft_us: r.try_get("ttft_us")?,
        attempts: r.try_get("attempts")?,
        error_class: r.try_get("error_class")?,
        streamed: r.try_get::<i64, _>("streamed")? != 0,
        attempt_classes: classes.map(|c| c.split(',').map(str::to_owned).collect()).unwrap_or_default(),
    })
}

/// The cost of a period in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CurrencyCost {
    /// ISO 4217.
    pub currency: String,
    /// Nanos of `currency`.
    pub cost_nanos: i64,
}

/// A period's request and usage statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct RequestStats {
    /// Requests logged.
    pub requests: i64,
    /// Status below 400.
    pub succeeded: i64,
    /// 4xx.
    pub client_errors: i64,
    /// 5xx.
    pub server_errors: i64,
    /// Median latency (µs, bucket upper bound), when there were requests.
    pub latency_p50_us: Option<i64>,
    /// 95th percentile latency (µs, bucket upper bound).
    pub latency_p95_us: Option<i64>,
    /// Billed requests in the ledger.
    pub billed_requests: i64,
    /// Input tokens (uncached + cached + cache writes).
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cost per currency, by currency.
    pub cost: Vec<CurrencyCost>,
}

/// The statistics of quarter-hour slots `from_slot..to_slot` (end exclusive), for one tenant or
/// all (the rollups' [`ALL_TENANTS`] rows). Whole UTC days of the period are read from the daily
/// rollups, the quarter-hours before the first and after the last whole day from the slot
/// rollups, so a period costs at most two days of slots plus one row per day (per latency bucket,
/// per model). Percentiles come from the summed histogram: the smallest bucket whose cumulative
/// count reaches `ceil(q * requests)`.
pub async fn request_stats(
    store: &ReadStore,
    tenant: Option<&str>,
    from_slot: i64,
    to_slot: i64,
) -> Result<RequestStats, ProjectionError> {
    let scope = tenant.unwrap_or(ALL_TENANTS);
    let mut stats = RequestStats::default();
    let mut buckets: BTreeMap<i64, i64> = BTreeMap::new();
    let mut usage: BTreeMap<String, (i64, i64, i64, i64)> = BTreeMap::new();
    for span in spans(from_slot, to_slot) {
        let (counts, latency, spend) = match span {
            Span::Slots(..) => (COUNTS_BY_SLOT, LATENCY_BY_SLOT, USAGE_BY_SLOT),
            Span::Days(..) => (COUNTS_BY_DAY, LATENCY_BY_DAY, USAGE_BY_DAY),
        };
        let (lo, hi) = span.bounds();
        let row = sqlx::query(counts).bind(scope).bind(lo).bind(hi).fetch_one(store.pool()).await?;
        stats.requests += row.try_get::<i64, _>("requests")?;
        stats.succeeded += row.try_get::<i64, _>("succeeded")?;
        stats.client_errors += row.try_get::<i64, _>("client_errors")?;
        stats.server_errors += row.try_get::<i64, _>("server_errors")?;
        for r in sqlx::query(latency).bind(scope).bind(lo).bind(hi).fetch_all(store.pool()).await? {
            *buckets.entry(r.try_get("bucket")?).or_default() += r.try_get::<i64, _>("requests")?;
        }
        let q = sqlx::query(spend).bind(scope);
        let q = match span {
            Span::Slots(..) => q.bind(lo).bind(hi),
            // usage_daily keys its days as `YYYY-MM-DD` text, which sorts as the days do.
            Span::Days(..) => q.bind(day_text(lo)).bind(day_text(hi)),
        };
        for r in q.fetch_all(store.pool()).await? {
            let u = usage.entry(r.try_get("currency")?).or_default();
            u.0 += r.try_get::<i64, _>("requests")?;
            u.1 += r.try_get::<i64, _>("input_tokens")?;
            u.2 += r.try_get::<i64, _>("output_tokens")?;
            u.3 += r.try_get::<i64, _>("cost_nanos")?;
        }
    }
    let buckets: Vec<(i64, i64)> = buckets.into_iter().collect();
    stats.latency_p50_us = percentile(&buckets, 50);
    stats.latency_p95_us = percentile(&buckets, 95);
    for (currency, (requests, input, output, cost)) in usage {
        stats.billed_requests += requests;
        stats.input_tokens += input;
        stats.output_tokens += output;
        stats.cost.push(CurrencyCost { currency, cost_nanos: cost });
    }
    Ok(stats)
}

/// A part of a period read from one tier of the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// Quarter-hours `from..to`.
    Slots(i64, i64),
    /// Whole UTC days `from..to` (days since 1970-01-01).
    Days(i64, i64),
}

impl Span {
    fn bounds(self) -> (i64, i64) {
        match self {
            Span::Slots(a, b) | Span::Days(a, b) => (a, b),
        }
    }
}

/// Splits slots `from..to` into the whole UTC days inside it and the slots around them.
fn spans(from: i64, to: i64) -> Vec<Span> {
    if from >= to {
        return Vec::new();
    }
    let first_day = from.div_euclid(SLOTS_PER_DAY) + i64::from(from.rem_euclid(SLOTS_PER_DAY) != 0);
    let end_day = to.div_euclid(SLOTS_PER_DAY);
    if first_day >= end_day {
        return vec![Span::Slots(from, to)];
    }
    let (day_from, day_to) = (first_day * SLOTS_PER_DAY, end_day * SLOTS_PER_DAY);
    let mut out = Vec::with_capacity(3);
    if from < day_from {
        out.push(Span::Slots(from, day_from));
    }
    out.push(Span::Days(first_day, end_day));
    if day_to < to {
        out.push(Span::Slots(day_to, to));
    }
    out
}

/// `YYYY-MM-DD` of a day counted since 1970-01-01.
fn day_text(day: i64) -> String {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
    let d = u64::try_from(day).map_or(Some(epoch), |d| epoch.checked_add_days(chrono::Days::new(d)));
    d.unwrap_or(chrono::NaiveDate::MAX).format("%Y-%m-%d").to_string()
}

// The statements of each tier, with the generation subqueries of `ACTIVE` (and the ledger's).
const COUNTS_BY_SLOT: &str = "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
     CAST(COALESCE(SUM(succeeded), 0) AS BIGINT) AS succeeded, \
     CAST(COALESCE(SUM(client_errors), 0) AS BIGINT) AS client_errors, \
     CAST(COALESCE(SUM(server_errors), 0) AS BIGINT) AS server_errors FROM request_slot \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'requests') AND tenant = $1 AND slot >= $2 AND slot < $3";
const COUNTS_BY_DAY: &str = "SELECT CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests, \
     CAST(COALESCE(SUM(succeeded), 0) AS BIGINT) AS succeeded, \
     CAST(COALESCE(SUM(client_errors), 0) AS BIGINT) AS client_errors, \
     CAST(COALESCE(SUM(server_errors), 0) AS BIGINT) AS server_errors FROM request_day \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'requests') AND tenant = $1 AND day >= $2 AND day < $3";
const LATENCY_BY_SLOT: &str = "SELECT bucket, CAST(SUM(requests) AS BIGINT) AS requests FROM request_slot_latency \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'requests') AND tenant = $1 AND slot >= $2 AND slot < $3 GROUP BY bucket";
const LATENCY_BY_DAY: &str = "SELECT bucket, CAST(SUM(requests) AS BIGINT) AS requests FROM request_day_latency \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'requests') AND tenant = $1 AND day >= $2 AND day < $3 GROUP BY bucket";
const USAGE_BY_SLOT: &str = "SELECT currency, CAST(SUM(requests) AS BIGINT) AS requests, \
     CAST(SUM(input_tokens + cached_input_tokens + cache_write_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos FROM usage_slot \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') AND tenant = $1 AND slot >= $2 AND slot < $3 GROUP BY currency";
const USAGE_BY_DAY: &str = "SELECT currency, CAST(SUM(requests) AS BIGINT) AS requests, \
     CAST(SUM(input_tokens + cached_input_tokens + cache_write_tokens) AS BIGINT) AS input_tokens, \
     CAST(SUM(output_tokens) AS BIGINT) AS output_tokens, CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos FROM usage_daily \
     WHERE generation = (SELECT active_generation FROM projection_generation WHERE projection = 'ledger') AND tenant = $1 AND day >= $2 AND day < $3 GROUP BY currency";

/// The `q`th percentile (0–100) of a histogram of `(bucket, count)` in bucket order, as the
/// bucket's upper bound.
pub fn percentile(buckets: &[(i64, i64)], q: i64) -> Option<i64> {
    let total: i64 = buckets.iter().map(|b| b.1).sum();
    if total <= 0 {
        return None;
    }
    // The rank of the percentile, 1-based: ceil(q% of total).
    let rank = (total * q + 99) / 100;
    let mut seen = 0;
    for &(bucket, count) in buckets {
        seen += count;
        if seen >= rank.max(1) {
            return Some(bucket_upper_us(bucket));
        }
    }
    buckets.last().map(|b| bucket_upper_us(b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_a_quarter_doubling_wide_and_percentiles_never_read_low() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 0);
        assert_eq!(latency_bucket(1024), 40);
        assert_eq!(latency_bucket(1_000_000), 79);
        for us in [1i64, 7, 999, 1000, 123_456, 2_000_000, 60_000_000] {
            let upper = bucket_upper_us(latency_bucket(us));
            assert!(upper >= us && (upper as f64) <= (us as f64) * 1.19 + 1.0, "{us} -> {upper}");
        }
        assert_eq!(latency_bucket(i64::MAX), MAX_BUCKET);
        assert_eq!(percentile(&[], 50), None);
        let h = [(10, 50), (20, 45), (30, 5)];
        assert_eq!(percentile(&h, 50), Some(bucket_upper_us(10)));
        assert_eq!(percentile(&h, 95), Some(bucket_upper_us(20)));
        assert_eq!(percentile(&h, 96), Some(bucket_upper_us(30)));
    }
}
