//! Reads of the `health` projection: each resource's last probe and last known balance, its
//! availability over 24 h / 7 d / 30 d from the hourly rollup (never from per-probe rows), the
//! probe history newest first with a keyset cursor, and a channel's spend from the ledger's
//! daily channel rollup.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{ProjectionError, ReadStore};

const ACTIVE: &str = "(SELECT active_generation FROM projection_generation WHERE projection = 'health')";
const ACTIVE_LEDGER: &str = "(SELECT active_generation FROM projection_generation WHERE projection = 'ledger')";

/// Microseconds per hour of the rollup.
const HOUR_US: i64 = 3_600_000_000;

/// Most ids one query binds; longer lists are read in chunks.
const IDS_PER_QUERY: usize = 200;

/// A balance read from a vendor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KnownBalance {
    /// Nanos of `currency`.
    pub nanos: i64,
    /// ISO 4217.
    pub currency: String,
    /// When it was read (µs).
    pub at_us: i64,
}

/// The last probe of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatestCheck {
    /// `ukey_…`
    pub resource_id: String,
    /// Its channel, for keys.
    pub channel_id: Option<String>,
    /// The tenant of the event (the channel's).
    pub tenant: String,
    /// When it ran (µs).
    pub checked_at_us: i64,
    /// `ok` or a failure class.
    pub outcome: String,
    /// Latency of its last try (µs).
    pub latency_us: i64,
    /// Our reason, when not plainly ok.
    pub reason: Option<String>,
    /// Run on an admin's request.
    pub on_demand: bool,
    /// The last balance read, by this probe or an earlier one.
    pub balance: Option<KnownBalance>,
    /// Failed scheduled probes in a row (an admin's check does not count; for a key, neither
    /// does a probe whose proxies failed).
    pub failures: i64,
}

/// Probe counts of a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProbeCounts {
    /// Probes that answered.
    pub ok: i64,
    /// Probes that failed.
    pub failed: i64,
    /// Sum of their latencies (µs).
    pub latency_us_sum: i64,
}

impl ProbeCounts {
    /// The share of probes that answered, `None` without probes.
    pub fn availability(&self) -> Option<f64> {
        let n = self.ok + self.failed;
        (n > 0).then(|| self.ok as f64 / n as f64)
    }
}

/// A resource's probe counts over the last 24 hours, 7 days and 30 days (whole hours: the
/// current hour and the ones before it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// The last 24 hours.
    pub day: ProbeCounts,
    /// The last 7 days.
    pub week: ProbeCounts,
    /// The last 30 days.
    pub month: ProbeCounts,
}

fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

fn latest_row(r: &AnyRow) -> Result<LatestCheck, sqlx::Error> {
    let nanos: Option<i64> = r.try_get("balance_nanos")?;
    let currency: Option<String> = r.try_get("balance_currency")?;
    let at: Option<i64> = r.try_get("balance_at_us")?;
    Ok(LatestCheck {
        resource_id: r.try_get("resource_id")?,
        channel_id: r.try_get("channel_id")?,
        tenant: r.try_get("tenant")?,
        checked_at_us: r.try_get("checked_at_us")?,
        outcome: r.try_get("outcome")?,
        latency_us: r.try_get("latency_us")?,
        reason: r.try_get("reason")?,
        on_demand: r.try_get::<i64, _>("on_demand")? != 0,
        balance: match (nanos, currency, at) {
            (Some(nanos), Some(currency), Some(at_us)) => Some(KnownBalance { nanos, currency, at_us }),
            _ => None,
        },
        failures: r.try_get("failures")?,
    })
}

const LATEST_COLUMNS: &str = "resource_id, channel_id, tenant, checked_at_us, outcome, latency_us, reason, on_demand, \
     balance_nanos, balance_currency, balance_at_us, failures";

/// The last probe of each resource in `ids` that has one.
pub async fn latest_checks(
    store: &ReadStore,
    ids: &[String],
) -> Result<BTreeMap<String, LatestCheck>, ProjectionError> {
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let sql = format!(
            "SELECT {LATEST_COLUMNS} FROM health_latest WHERE generation = {ACTIVE} AND resource_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for id in chunk {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            let l = latest_row(&r)?;
            out.insert(l.resource_id.clone(), l);
        }
    }
    Ok(out)
}

/// The availability of each resource in `ids` as of `now_us`, from the hourly rollup: at most
/// 720 rows per resource are summed.
pub async fn availability(
    store: &ReadStore,
    ids: &[String],
    now_us: i64,
) -> Result<BTreeMap<String, Availability>, ProjectionError> {
    let hour = now_us.div_euclid(HOUR_US);
    let (day, week, month) = (hour - 23, hour - 7 * 24 + 1, hour - 30 * 24 + 1);
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let sum = |col: &str, since: &str| {
            format!(
                "CAST(COALESCE(SUM(CASE WHEN hour >= {since} THEN {col} ELSE 0 END), 0) AS BIGINT) AS {col}_{since_name}",
                since_name = &since[1..]
            )
        };
        let mut cols = Vec::new();
        for since in ["$1", "$2", "$3"] {
            for col in ["ok", "failed", "latency_us_sum"] {
                cols.push(sum(col, since));
            }
        }
        let sql = format!(
            "SELECT resource_id, {} FROM health_hour WHERE generation = {ACTIVE} AND hour >= $3 AND hour <= $4 \
             AND resource_id IN ({}) GROUP BY resource_id",
            cols.join(", "),
            placeholders(5, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(day).bind(week).bind(month).bind(hour);
        for id in chunk {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            let counts = |n: &str| -> Result<ProbeCounts, sqlx::Error> {
                Ok(ProbeCounts {
                    ok: r.try_get(format!("ok_{n}").as_str())?,
                    failed: r.try_get(format!("failed_{n}").as_str())?,
                    latency_us_sum: r.try_get(format!("latency_us_sum_{n}").as_str())?,
                })
            };
            let a = Availability { day: counts("1")?, week: counts("2")?, month: counts("3")? };
            out.insert(r.try_get("resource_id")?, a);
        }
    }
    Ok(out)
}

/// Every resource's last probe (one row per resource ever probed).
pub async fn all_latest_checks(store: &ReadStore) -> Result<Vec<LatestCheck>, ProjectionError> {
    let sql = format!("SELECT {LATEST_COLUMNS} FROM health_latest WHERE generation = {ACTIVE} ORDER BY resource_id");
    let rows = sqlx::query(&sql).fetch_all(store.pool()).await?;
    rows.iter().map(latest_row).collect::<Result<_, sqlx::Error>>().map_err(Into::into)
}

/// Each probed resource's count of failed scheduled probes in a row, as folded so far: where a
/// restarted health worker takes its streaks up again.
pub async fn failure_streaks(store: &ReadStore) -> Result<BTreeMap<String, u32>, ProjectionError> {
    Ok(all_latest_checks(store)
        .await?
        .into_iter()
        .filter(|l| l.failures > 0)
        .map(|l| (l.resource_id, u32::try_from(l.failures).unwrap_or(u32::MAX)))
        .collect())
}

/// One probe result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckRecord {
    /// The position in the ops stream (a cursor tie-breaker).
    pub seq: i64,
    /// `ukey_…`
    pub resource_id: String,
    /// Its channel, for keys.
    pub channel_id: Option<String>,
    /// The tenant of the event.
    pub tenant: String,
    /// When it ran (µs).
    pub checked_at_us: i64,
    /// `ok` or a failure class.
    pub outcome: String,
    /// Latency of its last try (µs).
    pub latency_us: i64,
    /// Tries made.
    pub attempts: i64,
    /// The balance it read.
    pub balance: Option<(i64, String)>,
    /// Our reason.
    pub reason: Option<String>,
    /// Run on an admin's request.
    pub on_demand: bool,
}

/// History filters; `None` is "any".
#[derive(Debug, Clone, Default)]
pub struct CheckFilter {
    /// Only this resource.
    pub resource_id: Option<String>,
    /// Only events of these tenants (a tenant-scoped reader's own).
    pub tenant: Option<String>,
    /// At or after this time (µs).
    pub from_us: Option<i64>,
    /// Before this time (µs).
    pub to_us: Option<i64>,
}

enum Arg {
    Int(i64),
    Text(String),
}

/// One page of probe results, newest first by (time, sequence), after the `(time, seq)` of the
/// previous page's last row.
pub async fn check_history_page(
    store: &ReadStore,
    filter: &CheckFilter,
    after: Option<(i64, i64)>,
    limit: u32,
) -> Result<Vec<CheckRecord>, ProjectionError> {
    let mut sql = format!(
        "SELECT seq, resource_id, channel_id, tenant, checked_at_us, outcome, latency_us, attempts, balance_nanos, \
         balance_currency, reason, on_demand FROM health_check WHERE generation = {ACTIVE}"
    );
    let mut args: Vec<Arg> = Vec::new();
    let mut push = |sql: &mut String, column: &str, arg: Arg| {
        args.push(arg);
        sql.push_str(&format!(" AND {column} ${}", args.len()));
    };
    if let Some(r) = &filter.resource_id {
        push(&mut sql, "resource_id =", Arg::Text(r.clone()));
    }
    if let Some(t) = &filter.tenant {
        push(&mut sql, "tenant =", Arg::Text(t.clone()));
    }
    if let Some(f) = filter.from_us {
        push(&mut sql, "checked_at_us >=", Arg::Int(f));
    }
    if let Some(t) = filter.to_us {
        push(&mut sql, "checked_at_us <", Arg::Int(t));
    }
    if let Some((at, seq)) = after {
        args.push(Arg::Int(at));
        args.push(Arg::Int(seq));
        let (a, b) = (args.len() - 1, args.len());
        sql.push_str(&format!(" AND (checked_at_us < ${a} OR (checked_at_us = ${a} AND seq < ${b}))"));
    }
    args.push(Arg::Int(i64::from(limit)));
    sql.push_str(&format!(" ORDER BY checked_at_us DESC, seq DESC LIMIT ${}", args.len()));
    let mut query = sqlx::query(&sql);
    for a in args {
        query = match a {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
        };
    }
    let rows = query.fetch_all(store.pool()).await?;
    rows.iter()
        .map(|r| {
            let nanos: Option<i64> = r.try_get("balance_nanos")?;
            let currency: Option<String> = r.try_get("balance_currency")?;
            Ok(CheckRecord {
                seq: r.try_get("seq")?,
                resource_id: r.try_get("resource_id")?,
                channel_id: r.try_get("channel_id")?,
                tenant: r.try_get("tenant")?,
                checked_at_us: r.try_get("checked_at_us")?,
                outcome: r.try_get("outcome")?,
                latency_us: r.try_get("latency_us")?,
                attempts: r.try_get("attempts")?,
                balance: nanos.zip(currency),
                reason: r.try_get("reason")?,
                on_demand: r.try_get::<i64, _>("on_demand")? != 0,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// A channel's spend in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSpend {
    /// ISO 4217.
    pub currency: String,
    /// Billed requests.
    pub requests: i64,
    /// Nanos of `currency`.
    pub cost_nanos: i64,
}

/// The spend of each channel in `channel_ids` on UTC days `from_day..=to_day` (`YYYY-MM-DD`),
/// from the ledger's daily channel rollup.
pub async fn channel_spend(
    store: &ReadStore,
    channel_ids: &[String],
    from_day: &str,
    to_day: &str,
) -> Result<BTreeMap<String, Vec<ChannelSpend>>, ProjectionError> {
    let mut out: BTreeMap<String, Vec<ChannelSpend>> = BTreeMap::new();
    for chunk in channel_ids.chunks(IDS_PER_QUERY) {
        let sql = format!(
            "SELECT channel_id, currency, CAST(SUM(requests) AS BIGINT) AS requests, \
             CAST(SUM(cost_nanos) AS BIGINT) AS cost_nanos FROM usage_daily_channel \
             WHERE generation = {ACTIVE_LEDGER} AND day >= $1 AND day <= $2 AND channel_id IN ({}) \
             GROUP BY channel_id, currency ORDER BY channel_id, currency",
            placeholders(3, chunk.len())
        );
        let mut q = sqlx::query(&sql).bind(from_day.to_owned()).bind(to_day.to_owned());
        for id in chunk {
            q = q.bind(id.clone());
        }
        for r in q.fetch_all(store.pool()).await? {
            out.entry(r.try_get("channel_id")?).or_default().push(ChannelSpend {
                currency: r.try_get("currency")?,
                requests: r.try_get("requests")?,
                cost_nanos: r.try_get("cost_nanos")?,
            });
        }
    }
    Ok(out)
}
