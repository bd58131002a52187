//! The billing report finance reconciles invoices with: per tenant (its display name beside the
//! slug) and period (local day, ISO week or month in the tenant's own zone), requests, tokens by
//! kind and cost in nanos and as a decimal, per currency. Every tenant is read in one snapshot,
//! from the same rollups as the usage report, so one `as_of_seq` covers the whole document; the
//! tenants of one zone in one statement per rollup tier.

use std::collections::BTreeMap;

use schemas::format_nanos;
use serde::Serialize;

use super::report::{GroupBy, begin_snapshot, grouped_rows, grouped_rows_of, snapshot_seq};
use super::{TenantRecord, UsageDay};
use crate::{ProjectionError, ReadStore};

/// Most tenants bound in one statement: far below SQLite's and Postgres's parameter limits (the
/// CLI reports every tenant at once; the admin API pages by at most 200).
const TENANTS_PER_STATEMENT: usize = 500;

/// The CSV header, in column order.
const CSV_HEADER: &str = "tenant,display_name,time_zone,period,currency,requests,input_tokens,cached_input_tokens,\
                          cache_write_tokens,output_tokens,reasoning_tokens,cost,cost_nanos";

/// One tenant's usage in one period and currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingRow {
    /// The tenant's slug.
    pub tenant: String,
    /// Its display name (the slug when it has none).
    pub display_name: String,
    /// The zone its periods are taken in.
    pub time_zone: String,
    /// `2026-11-30`, `2026-W48` or `2026-11`.
    pub period: String,
    /// Currency of the cost.
    pub currency: String,
    /// Billable requests.
    pub requests: i64,
    /// Uncached input tokens.
    pub input_tokens: i64,
    /// Cached input tokens.
    pub cached_input_tokens: i64,
    /// Cache-write tokens.
    pub cache_write_tokens: i64,
    /// Output tokens (reasoning included).
    pub output_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Decimal cost, nine places.
    pub cost: String,
    /// Cost in nanos.
    pub cost_nanos: i64,
}

/// The billing report as of a ledger sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BillingReport {
    /// First local day, inclusive.
    pub from_day: String,
    /// Last local day, inclusive.
    pub to_day: String,
    /// `day`, `week` or `month`.
    pub period: String,
    /// The billing sequence the report reflects.
    pub as_of_seq: u64,
    /// Rows by tenant, period and currency.
    pub rows: Vec<BillingRow>,
    /// When the report is a page of the tenants: the last tenant of this page, to pass as
    /// `after` for the next; `None` on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Reads the billing report of `tenants` (each with its parsed zone), one row per tenant,
/// period and currency with usage, all in one snapshot. `period` is [`GroupBy::Day`],
/// [`GroupBy::Week`] or [`GroupBy::Month`].
pub async fn billing_report(
    store: &ReadStore,
    tenants: &[(TenantRecord, chrono_tz::Tz)],
    period: GroupBy,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    as_of_seq: Option<u64>,
) -> Result<BillingReport, ProjectionError> {
    let mut tx = begin_snapshot(store).await?;
    let seq = snapshot_seq(&mut tx, as_of_seq).await?;
    let mut usage_of: BTreeMap<String, Vec<UsageDay>> = BTreeMap::new();
    match as_of_seq {
        Some(_) => {
            for (tenant, zone) in tenants {
                let usage = grouped_rows(&mut tx, &tenant.name, *zone, period, from, to, as_of_seq).await?;
                usage_of.insert(tenant.name.clone(), usage);
            }
        }
        None => {
            // Tenants of one zone share a plan: their rows come in one statement per tier.
            let mut by_zone: BTreeMap<&str, (chrono_tz::Tz, Vec<&str>)> = BTreeMap::new();
            for (tenant, zone) in tenants {
                by_zone.entry(zone.name()).or_insert_with(|| (*zone, Vec::new())).1.push(&tenant.name);
            }
            for (zone, names) in by_zone.into_values() {
                for chunk in names.chunks(TENANTS_PER_STATEMENT) {
                    usage_of.extend(grouped_rows_of(&mut tx, chunk, zone, period, from, to).await?);
                }
            }
        }
    }
    let mut rows = Vec::new();
    for (tenant, zone) in tenants {
        let usage = usage_of.remove(&tenant.name).unwrap_or_default();
        let mut periods: BTreeMap<(String, String), UsageDay> = BTreeMap::new();
        for u in usage {
            let p = periods.entry((u.day.clone(), u.currency.clone())).or_insert_with(|| UsageDay {
                requests: 0,
                input_tokens: 0,
                cached_input_tokens: 0,
                cache_write_tokens: 0,
                output_tokens: 0,
                reasoning_tokens: 0,
                cost_nanos: 0,
                ..u.clone()
            });
            p.requests = p.requests.saturating_add(u.requests);
            p.input_tokens = p.input_tokens.saturating_add(u.input_tokens);
            p.cached_input_tokens = p.cached_input_tokens.saturating_add(u.cached_input_tokens);
            p.cache_write_tokens = p.cache_write_tokens.saturating_add(u.cache_write_tokens);
            p.output_tokens = p.output_tokens.saturating_add(u.output_tokens);
            p.reasoning_tokens = p.reasoning_tokens.saturating_add(u.reasoning_tokens);
            p.cost_nanos = p.cost_nanos.saturating_add(u.cost_nanos);
        }
        rows.extend(periods.into_values().map(|p| BillingRow {
            tenant: tenant.name.clone(),
            display_name: tenant.display_name.clone().unwrap_or_else(|| tenant.name.clone()),
            time_zone: zone.name().to_owned(),
            period: p.day,
            currency: p.currency,
            requests: p.requests,
            input_tokens: p.input_tokens,
            cached_input_tokens: p.cached_input_tokens,
            cache_write_tokens: p.cache_write_tokens,
            output_tokens: p.output_tokens,
            reasoning_tokens: p.reasoning_tokens,
            cost: format_nanos(p.cost_nanos),
            cost_nanos: p.cost_nanos,
        }));
    }
    tx.commit().await?;
    rows.sort_by(|a, b| (&a.tenant, &a.period, &a.currency).cmp(&(&b.tenant, &b.period, &b.currency)));
    Ok(BillingReport {
        from_day: from.to_string(),
        to_day: to.to_string(),
        period: period.column().unwrap_or("day").to_owned(),
        as_of_seq: seq,
        rows,
        next_cursor: None,
    })
}

impl BillingReport {
    /// RFC 4180 CSV with `\r\n` line ends; fields with commas, quotes or line breaks quoted.
    pub fn to_csv(&self) -> Vec<u8> {
        let mut out = String::from(CSV_HEADER);
        out.push_str("\r\n");
        for r in &self.rows {
            let fields = [
                csv_field(&r.tenant),
                csv_field(&r.display_name),
                csv_field(&r.time_zone),
                csv_field(&r.period),
                csv_field(&r.currency),
                r.requests.to_string(),
                r.input_tokens.to_string(),
                r.cached_input_tokens.to_string(),
                r.cache_write_tokens.to_string(),
                r.output_tokens.to_string(),
                r.reasoning_tokens.to_string(),
                r.cost.clone(),
                r.cost_nanos.to_string(),
            ];
            out.push_str(&fields.join(","));
            out.push_str("\r\n");
        }
        out.into_bytes()
    }

    /// Pretty JSON with a fixed key order (the structs' field order).
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs of strings and integers cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_display_names_per_rfc_4180() {
        let row = BillingRow {
            tenant: "east".into(),
            display_name: "华东, \"分公司\"".into(),
            time_zone: "Asia/Shanghai".into(),
            period: "2026-W48".into(),
            currency: "USD".into(),
            requests: 2,
            input_tokens: 10,
            cached_input_tokens: 1,
            cache_write_tokens: 0,
            output_tokens: 5,
            reasoning_tokens: 0,
            cost: format_nanos(1_500_000_001),
            cost_nanos: 1_500_000_001,
        };
        let r = BillingReport {
            from_day: "2026-11-01".into(),
            to_day: "2026-11-30".into(),
            period: "week".into(),
            as_of_seq: 9,
            rows: vec![row],
            next_cursor: None,
        };
        let csv = String::from_utf8(r.to_csv()).unwrap_or_default();
        let lines: Vec<&str> = csv.split("\r\n").collect();
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "east,\"华东, \"\"分公司\"\"\",Asia/Shanghai,2026-W48,USD,2,10,1,0,5,0,1.500000001,1500000001"
        );
        assert_eq!(lines[2], "");
    }
}
