//! Rollups summed per batch. A fold adds an event's counters to [`Pending`] instead of upserting
//! each rollup row itself; the runner writes every touched row once, in key order, just before
//! the batch's transaction commits. Under load a batch holds hundreds of events of a few tenants,
//! so the rollups cost a few statements per batch instead of one per event and rollup.
//!
//! The per-request rows (`ledger`, `request_log`) are staged the same way: a fold hands its row
//! and the rollup counters that go with it to [`Pending::stage`], and the flush inserts a batch's
//! rows of a table with one multi-row `INSERT … ON CONFLICT DO NOTHING RETURNING key`. Only the
//! rows that went in add their counters, so a repeated request id is counted once, exactly as
//! with one insert per event (rows are inserted in event order, so the first event still wins).
//!
//! Nothing here changes what the rows hold: the sums are the same, they land in the same
//! transaction as the events' rows, and a batch that rolls back takes its `Pending` with it.

use std::collections::{BTreeMap, HashSet};

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

/// The rollup deltas of one batch, by table and key, and the rows staged for insertion.
#[derive(Default)]
pub(crate) struct Pending {
    rows: BTreeMap<(&'static str, Vec<Key>), Row>,
    staged: Vec<Staged>,
}

/// A table of per-event rows inserted once per batch: its name, the column its rows are unique
/// by within a generation (returned by the insert) and every column after `generation`.
pub(crate) struct RowTable {
    pub(crate) name: &'static str,
    pub(crate) key: &'static str,
    pub(crate) columns: &'static [&'static str],
}

/// A column value of a staged row.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Int(i64),
    OptInt(Option<i64>),
    Text(String),
    OptText(Option<String>),
}

/// The rollup counters that go with one staged row, added only if the row is inserted.
#[derive(Default)]
pub(crate) struct Rollups(Vec<(&'static Table, Vec<Key>, Vec<i64>)>);

impl Rollups {
    /// As [`Pending::add`], held back until the row is known to be new.
    pub(crate) fn add(&mut self, table: &'static Table, keys: Vec<Key>, counters: &[i64]) {
        self.0.push((table, keys, counters.to_vec()));
    }
}

/// One event's row, staged for its table's multi-row insert.
pub(crate) struct Staged {
    pub(crate) table: &'static RowTable,
    /// The value of `table.key` (also among `values`).
    pub(crate) key: String,
    /// One value per `table.columns`.
    pub(crate) values: Vec<Val>,
    pub(crate) rollups: Rollups,
    /// Why a repeat of `key` is rejected (recorded as a poison event), or `None` to drop it.
    pub(crate) repeat: Option<String>,
    /// The staging event's stream sequence.
    pub(crate) seq: i64,
}

/// A staged row that was not inserted and whose table rejects repeats: the event's sequence and
/// the reason.
pub(crate) struct RejectedRow {
    pub(crate) seq: i64,
    pub(crate) reason: String,
}

/// The row counts of the multi-row statements, largest first. A batch's rows go in chunks of
/// these sizes only, so each table has a handful of statement texts, prepared once and cached;
/// a statement per batch size would be prepared (and cached, at up to a megabyte each) anew.
pub(crate) const CHUNK_ROWS: [usize; 4] = [64, 16, 4, 1];

/// Splits `rows` into chunks of [`CHUNK_ROWS`] sizes, largest first.
pub(crate) fn chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = CHUNK_ROWS.into_iter().find(|&n| n <= rows.len())?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
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

    /// Stages `row` for its table's insert at [`Pending::flush`].
    pub(crate) fn stage(&mut self, row: Staged) {
        debug_assert_eq!(row.values.len(), row.table.columns.len(), "{}", row.table.name);
        self.staged.push(row);
    }

    /// Inserts the staged rows of `generation` (one multi-row statement per table and chunk, in
    /// staging order), adds the counters of the rows that went in, then upserts every touched
    /// rollup row, once each, in key order (so two writers of one table always lock rows in the
    /// same order), and empties `self`. Returns the staged rows that were repeats their table
    /// rejects.
    pub(crate) async fn flush(
        &mut self,
        conn: &mut AnyConnection,
        generation: i64,
    ) -> Result<Vec<RejectedRow>, sqlx::Error> {
        let mut rejected = Vec::new();
        let mut staged = std::mem::take(&mut self.staged);
        while let Some(first) = staged.first() {
            let table = first.table;
            let (now, later): (Vec<Staged>, Vec<Staged>) = staged.into_iter().partition(|r| r.table.name == table.name);
            staged = later;
            for chunk in chunks(&now) {
                let mut inserted = insert_rows(conn, table, generation, chunk).await?;
                for row in chunk {
                    // `remove`: a later row of the same key in this chunk is a repeat.
                    if inserted.remove(&row.key) {
                        for (t, keys, counters) in &row.rollups.0 {
                            self.add(t, keys.clone(), counters);
                        }
                    } else if let Some(reason) = &row.repeat {
                        rejected.push(RejectedRow { seq: row.seq, reason: reason.clone() });
                    }
                }
            }
        }
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
        Ok(rejected)
    }
}

/// Inserts `rows` of `table` in one statement and returns the keys that went in.
async fn insert_rows(
    conn: &mut AnyConnection,
    table: &RowTable,
    generation: i64,
    rows: &[Staged],
) -> Result<HashSet<String>, sqlx::Error> {
    let sql = insert_sql(table, rows.len(), Placeholders::of(conn));
    let mut q = sqlx::query(&sql);
    for row in rows {
        q = q.bind(generation);
        for v in &row.values {
            q = match v {
                Val::Int(v) => q.bind(*v),
                Val::OptInt(v) => q.bind(*v),
                Val::Text(v) => q.bind(v.as_str()),
                Val::OptText(v) => q.bind(v.as_deref()),
            };
        }
    }
    let mut inserted = HashSet::with_capacity(rows.len());
    for r in q.fetch_all(&mut *conn).await? {
        inserted.insert(sqlx::Row::try_get::<String, _>(&r, 0)?);
    }
    Ok(inserted)
}

/// How a multi-row statement numbers its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placeholders {
    /// `$1, $2, …` (Postgres).
    Numbered,
    /// `?, ?, …` in order (SQLite). The SQLite driver looks up the name of every numbered
    /// parameter with a linear search, which makes binding a statement of n numbered parameters
    /// cost n²; anonymous ones have no name to look up.
    Anonymous,
}

impl Placeholders {
    pub(crate) fn of(conn: &AnyConnection) -> Placeholders {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Placeholders::Anonymous
        } else {
            Placeholders::Numbered
        }
    }

    /// `(p, p, …), (…)`: `rows` tuples of `per_row` parameters.
    pub(crate) fn tuples(self, rows: usize, per_row: usize) -> String {
        use std::fmt::Write as _;
        let mut sql = String::with_capacity(rows * per_row * 5);
        for r in 0..rows {
            sql.push_str(if r == 0 { "(" } else { ", (" });
            for c in 0..per_row {
                let sep = if c == 0 { "" } else { ", " };
                match self {
                    Placeholders::Numbered => {
                        let _ = write!(sql, "{sep}${}", r * per_row + c + 1);
                    }
                    Placeholders::Anonymous => {
                        let _ = write!(sql, "{sep}?");
                    }
                }
            }
            sql.push(')');
        }
        sql
    }
}

/// `INSERT INTO t (generation, columns…) VALUES (…), (…) ON CONFLICT DO NOTHING RETURNING key`
/// for `rows` rows. Within one statement a later row with the key of an earlier one is skipped
/// like a row already in the table.
fn insert_sql(t: &RowTable, rows: usize, p: Placeholders) -> String {
    format!(
        "INSERT INTO {} (generation, {}) VALUES {} ON CONFLICT DO NOTHING RETURNING {}",
        t.name,
        t.columns.join(", "),
        p.tuples(rows, t.columns.len() + 1),
        t.key
    )
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
    fn the_row_insert_numbers_every_parameter_once() {
        const T: RowTable = RowTable { name: "t", key: "k", columns: &["k", "v"] };
        assert_eq!(
            insert_sql(&T, 2, Placeholders::Numbered),
            "INSERT INTO t (generation, k, v) VALUES ($1, $2, $3), ($4, $5, $6) ON CONFLICT DO NOTHING RETURNING k"
        );
        assert_eq!(
            insert_sql(&T, 2, Placeholders::Anonymous),
            "INSERT INTO t (generation, k, v) VALUES (?, ?, ?), (?, ?, ?) ON CONFLICT DO NOTHING RETURNING k"
        );
    }

    #[test]
    fn rows_go_in_chunks_of_the_fixed_sizes_in_order() {
        let rows: Vec<u32> = (0..87).collect();
        let sizes: Vec<usize> = chunks(&rows).map(<[u32]>::len).collect();
        assert_eq!(sizes, [64, 16, 4, 1, 1, 1]);
        assert_eq!(chunks(&rows).flatten().copied().collect::<Vec<_>>(), rows);
        assert_eq!(chunks::<u32>(&[]).count(), 0);
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
