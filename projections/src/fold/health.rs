//! The `health` projection: one `health_check` row per `health.checked`, the resource's last
//! result and last known balance (`health_latest`), and its hour in the availability rollup
//! (`health_hour`), all in the caller's transaction. Exactly-once is the runner's
//! (`applied_event`); a worker's probe and an admin's check are different events (different
//! ids) and both count.

use schemas::{Envelope, EventBody};
use sqlx::AnyConnection;

use super::rollup::{HEALTH_HOUR, Pending};
use super::{Folded, to_i64};

/// Microseconds per hour of the availability rollup.
pub(crate) const HOUR_US: i64 = 3_600_000_000;

/// What a probe result does to its resource's count of failed probes in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streak {
    /// Left as it was: an admin's check (only the schedule counts), or a key's probe whose
    /// proxies failed (that says nothing about the key).
    Keep = 0,
    /// Back to zero: the resource answered.
    Reset = 1,
    /// One more failure.
    Add = 2,
}

impl Streak {
    /// The move `h` makes (the health worker's own rule, `workers::health`).
    pub(crate) fn of(h: &schemas::HealthChecked) -> Streak {
        let key = !h.resource_id.starts_with("px_");
        match h.outcome.as_str() {
            _ if h.on_demand => Streak::Keep,
            "ok" => Streak::Reset,
            "proxy_failed" if key => Streak::Keep,
            _ => Streak::Add,
        }
    }
}

pub(super) async fn apply(
    conn: &mut AnyConnection,
    pending: &mut Pending,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    let EventBody::HealthChecked(h) = &env.body else {
        return Ok(Folded::Ignored);
    };
    let latency = match to_i64(h.latency_us, "latency_us") {
        Ok(v) => v,
        Err(reason) => return Ok(Folded::Rejected(reason)),
    };
    let ok = h.outcome == "ok";
    let at = env.occurred_at_us;
    let (balance_nanos, balance_currency) = match &h.balance {
        Some(b) => (Some(b.nanos), Some(b.currency.clone())),
        None => (None, None),
    };
    sqlx::query(
        "INSERT INTO health_check (generation, seq, resource_id, channel_id, tenant, checked_at_us, slot_us, outcome, \
         latency_us, attempts, balance_nanos, balance_currency, reason, on_demand) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(generation)
    .bind(seq)
    .bind(&h.resource_id)
    .bind(h.channel_id.clone())
    .bind(&env.tenant)
    .bind(at)
    .bind(h.slot_us)
    .bind(&h.outcome)
    .bind(latency)
    .bind(i64::from(h.attempts))
    .bind(balance_nanos)
    .bind(balance_currency.clone())
    .bind(h.reason.clone())
    .bind(i64::from(h.on_demand))
    .execute(&mut *conn)
    .await?;
    // The log's order decides which result is the last one; a probe without a balance keeps the
    // one read before. The streak of failed probes moves as the health worker counts it.
    let streak = Streak::of(h);
    sqlx::query(
        "INSERT INTO health_latest (generation, resource_id, channel_id, tenant, seq, checked_at_us, outcome, \
         latency_us, reason, on_demand, balance_nanos, balance_currency, balance_at_us, failures) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
         CASE WHEN $14 = 2 THEN 1 ELSE 0 END) \
         ON CONFLICT (generation, resource_id) DO UPDATE SET channel_id = excluded.channel_id, \
         tenant = excluded.tenant, seq = excluded.seq, checked_at_us = excluded.checked_at_us, \
         outcome = excluded.outcome, latency_us = excluded.latency_us, reason = excluded.reason, \
         on_demand = excluded.on_demand, \
         balance_nanos = COALESCE(excluded.balance_nanos, health_latest.balance_nanos), \
         balance_currency = COALESCE(excluded.balance_currency, health_latest.balance_currency), \
         balance_at_us = COALESCE(excluded.balance_at_us, health_latest.balance_at_us), \
         failures = CASE WHEN $14 = 0 THEN health_latest.failures WHEN $14 = 1 THEN 0 \
         ELSE health_latest.failures + 1 END",
    )
    .bind(generation)
    .bind(&h.resource_id)
    .bind(h.channel_id.clone())
    .bind(&env.tenant)
    .bind(seq)
    .bind(at)
    .bind(&h.outcome)
    .bind(latency)
    .bind(h.reason.clone())
    .bind(i64::from(h.on_demand))
    .bind(balance_nanos)
    .bind(balance_currency)
    .bind(balance_nanos.map(|_| at))
    .bind(streak as i64)
    .execute(&mut *conn)
    .await?;
    pending.add(
        &HEALTH_HOUR,
        vec![h.resource_id.as_str().into(), at.div_euclid(HOUR_US).into()],
        &[i64::from(ok), i64::from(!ok), latency],
    );
    Ok(Folded::Applied)
}
