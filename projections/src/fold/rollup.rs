//! Rollups summed per batch. A fold adds an event's counters to [`Pending`] instead of upserting
//! each rollup row itself; the runner writes every touched row once, in key order, just before
//! the batch's transaction commits. Under load a batch holds hundreds of events of a few tenants,
//! so the rollups cost a few statements per batch instead of one per event and rollup.
//!
//! Nothing here changes what the rows hold: the sums are the same, they land in the same
//! transaction as the events' rows, and a batch that rolls back takes its `Pending` with it.

use std::collections::BTreeMap;

use sqlx::AnyConnection;

/// One rollup table: its key columns (after `generation`) and its counter columns.
pub(crate) struct Table {
    name: &'static str,
    keys: &'static [&'static str],
    counters: &'static [&'static str],
}

/// The counters of the three usage rollups, in this order in [`Pending::add`]'s `counters`.
const USAGE_COUNTERS: &[&str] = &[
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cost_nanos",
];

/// Daily usage per tenant and model.
pub(crate) const USAGE_DAILY: Table =
    Table { name: "usage_daily", keys: &["tenant", "day", "model", "currency"], counters: USAGE_COUNTERS };
/// Daily usage per key and model.
pub(crate) const USAGE_DAILY_KEY: Table = Table {
    name: "usage_daily_key",
    keys: &["tenant", "key_id", "day", "model", "currency"],
    counters: USAGE_COUNTERS,
};
/// Quarter-hour usage per key and model.
pub(crate) const USAGE_SLOT_KEY: Table = Table {
    name: "usage_slot_key",
    keys: &["tenant", "slot", "key_id", "model", "currency"],
    counters: USAGE_COUNTERS,
};
/// Quarter-hour usage per tenant (and [`ALL_TENANTS`]) and model.
pub(crate) const USAGE_SLOT: Table =
    Table { name: "usage_slot", keys: &["tenant", "slot", "model", "currency"], counters: USAGE_COUNTERS };
/// Monthly usage per key and model (`month` is `YYYY-MM`, UTC).
pub(crate) const USAGE_MONTH_KEY: Table = Table {
    name: "usage_month_key",
    keys: &["tenant", "month", "key_id", "model", "currency"],
    counters: USAGE_COUNTERS,
};
/// Daily requests and cost per channel (the spend shown for keys whose vendor reports no balance).
pub(crate) const USAGE_DAILY_CHANNEL: Table = Table {
    name: "usage_daily_channel",
    keys: &["channel_id", "day", "currency"],
    counters: &["requests", "cost_nanos"],
};
/// Hourly probe outcomes and latency per health-checked resource.
pub(crate) const HEALTH_HOUR: Table =
    Table { name: "health_hour", keys: &["resource_id", "hour"], counters: &["ok", "failed", "latency_us_sum"] };
/// Quarter-hour request counts per tenant.
pub(crate) const REQUEST_SLOT: Table = Table {
    name: "request_slot",
    keys: &["tenant", "slot"],
    counters: &["requests", "succeeded", "client_errors", "server_errors"],
};
/// Quarter-hour latency histogram per tenant.
pub(crate) const REQUEST_SLOT_LATENCY: Table =
    Table { name: "request_slot_latency", keys: &["tenant", "slot", "bucket"], counters: &["requests"] };

/// Daily request counts per tenant (`day` = `slot / 96`).
pub(crate) const REQUEST_DAY: Table = Table {
    name: "request_day",
    keys: &["tenant", "day"],
    counters: &["requests", "succeeded", "client_errors", "server_errors"],
};
/// Daily latency histogram per tenant.
pub(crate) const REQUEST_DAY_LATENCY: Table =
    Table { name: "request_day_latency", keys: &["tenant", "day", "bucket"], counters: &["requests"] };

/// The tenant whose rows of `usage_daily`, `usage_slot`, `request_slot`, `request_slot_latency`,
/// `request_day` and `request_day_latency` sum every tenant's (no tenant name holds `*`).
pub(crate) const ALL_TENANTS: &str = "*";

/// Quarter-hours in a UTC day: a slot's day is `slot.div_euclid(SLOTS_PER_DAY)`.
pub(crate) const SLOTS_PER_DAY: i64 = 96;

/// A key column's value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Key {
    Text(String),
    Int(i64),
}

impl From<&str> for Key {
    fn from(v: &str) -> Key {
        Key::Text(v.to_owned())
    }
}

impl From<i64> for Key {
    fn from(v: i64) -> Key {
        Key::Int(v)
    }
}

/// The rollup deltas of one batch, by table and key.
#[derive(Default)]
pub(crate) struct Pending {
    rows: BTreeMap<(&'static str, Vec<Key>), Row>,
}

struct Row {
    table: &'static Table,
    counters: Vec<i64>,
}

impl Pending {
    /// Adds `counters` (in the table's counter order) to the row of `table` at `keys` (in the
    /// table's key order).
    pub(crate) fn add(&mut self, table: &'static Table, keys: Vec<Key>, counters: &[i64]) {
        debug_assert_eq!(keys.len(), table.keys.len(), "{}", table.name);
        debug_assert_eq!(counters.len(), table.counters.len(), "{}", table.name);
        let row = self
            .rows
            .entry((table.name, keys))
            .or_insert_with(|| Row { table, counters: vec![0; table.counters.len()] });
        for (sum, c) in row.counters.iter_mut().zip(counters) {
            *sum = sum.saturating_add(*c);
        }
    }

    /// Upserts every touched row of `generation`, once each, in key order (so two writers of one
    /// table always lock rows in the same order), and empties `self`.
    pub(crate) async fn flush(&mut self, conn: &mut AnyConnection, generation: i64) -> Result<(), sqlx::Error> {
        for ((_, keys), row) in std::mem::take(&mut self.rows) {
            let sql = upsert_sql(row.table);
            let mut q = sqlx::query(&sql).bind(generation);
            for k in keys {
                q = match k {
                    Key::Text(v) => q.bind(v),
                    Key::Int(v) => q.bind(v),
                };
            }
            for c in row.counters {
                q = q.bind(c);
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }
}

/// `INSERT … ON CONFLICT (generation, keys…) DO UPDATE SET c = t.c + excluded.c, …`, the same
/// text on SQLite and Postgres.
fn upsert_sql(t: &Table) -> String {
    let columns: Vec<&str> =
        std::iter::once("generation").chain(t.keys.iter().copied()).chain(t.counters.iter().copied()).collect();
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let sums: Vec<String> = t.counters.iter().map(|c| format!("{c} = {}.{c} + excluded.{c}", t.name)).collect();
    format!(
        "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (generation, {}) DO UPDATE SET {}",
        t.name,
        columns.join(", "),
        params.join(", "),
        t.keys.join(", "),
        sums.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_names_every_column_once_and_adds_each_counter() {
        assert_eq!(
            upsert_sql(&REQUEST_SLOT_LATENCY),
            "INSERT INTO request_slot_latency (generation, tenant, slot, bucket, requests) VALUES ($1, $2, $3, $4, \
             $5) ON CONFLICT (generation, tenant, slot, bucket) DO UPDATE SET requests = \
             request_slot_latency.requests + excluded.requests"
        );
    }

    #[test]
    fn deltas_of_one_row_are_summed_and_rows_stay_apart() {
        let mut p = Pending::default();
        p.add(&REQUEST_SLOT, vec!["acme".into(), 7.into()], &[1, 1, 0, 0]);
        p.add(&REQUEST_SLOT, vec!["acme".into(), 7.into()], &[1, 0, 1, 0]);
        p.add(&REQUEST_SLOT, vec!["acme".into(), 8.into()], &[1, 0, 0, 1]);
        p.add(&REQUEST_SLOT_LATENCY, vec!["acme".into(), 7.into(), 3.into()], &[1]);
        let rows: Vec<_> = p.rows.iter().map(|((t, k), r)| (*t, k.clone(), r.counters.clone())).collect();
        assert_eq!(
            rows,
            [
                ("request_slot", vec![Key::from("acme"), Key::Int(7)], vec![2, 1, 1, 0]),
                ("request_slot", vec![Key::from("acme"), Key::Int(8)], vec![1, 0, 0, 1]),
                ("request_slot_latency", vec![Key::from("acme"), Key::Int(7), Key::Int(3)], vec![1]),
            ]
        );
    }
}
