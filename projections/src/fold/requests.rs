//! The `requests` projection: one `request_log` row per `request.logged` and the quarter-hour and
//! daily rollups of the dashboard (`request_slot`, `request_slot_latency`, `request_day`,
//! `request_day_latency`, per tenant and for every tenant), written once per batch in the same
//! transaction ([`super::rollup`]).
//! `auth.failures_counted` shares the stream and is ignored. A second event for a request id
//! already logged is dropped (not poison: the log is informational, the first one stands).

use schemas::{Envelope, EventBody};
use sqlx::AnyConnection;

use super::rollup::{
    ALL_TENANTS, Pending, REQUEST_DAY, REQUEST_DAY_LATENCY, REQUEST_SLOT, REQUEST_SLOT_LATENCY, SLOTS_PER_DAY,
};
use super::{Folded, to_i64};
use crate::read::{latency_bucket, slot_of};

pub(super) async fn apply(
    conn: &mut AnyConnection,
    pending: &mut Pending,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    let EventBody::RequestLogged(r) = &env.body else {
        return Ok(Folded::Ignored);
    };
    let latency = match to_i64(r.latency_us, "latency_us") {
        Ok(v) => v,
        Err(reason) => return Ok(Folded::Rejected(reason)),
    };
    let ttft = match r.ttft_us.map(|t| to_i64(t, "ttft_us")).transpose() {
        Ok(v) => v,
        Err(reason) => return Ok(Folded::Rejected(reason)),
    };
    let status = i64::from(r.status);
    let class = status / 100;
    // The per-attempt classes, comma-separated: at most MAX_LOGGED_ATTEMPTS short stable names.
    let attempt_classes = (!r.attempt_log.is_empty())
        .then(|| r.attempt_log.iter().map(|a| a.class.as_str()).collect::<Vec<_>>().join(","));
    let inserted = sqlx::query(
        "INSERT INTO request_log (generation, request_id, seq, occurred_at_us, tenant, key_id, endpoint, model, \
         provider, channel_id, status, status_class, latency_us, ttft_us, attempts, error_class, streamed, \
         attempt_classes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
         ON CONFLICT DO NOTHING",
    )
    .bind(generation)
    .bind(&r.request_id)
    .bind(seq)
    .bind(env.occurred_at_us)
    .bind(&env.tenant)
    .bind(r.key_id.clone())
    .bind(&r.endpoint)
    .bind(r.model.clone())
    .bind(r.provider.clone())
    .bind(r.channel_id.clone())
    .bind(status)
    .bind(class)
    .bind(latency)
    .bind(ttft)
    .bind(i64::from(r.attempts))
    .bind(r.error_class.clone())
    .bind(i64::from(r.streamed))
    .bind(attempt_classes)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted != 1 {
        return Ok(Folded::Applied);
    }
    let slot = slot_of(env.occurred_at_us);
    let (ok, client, server) = (i64::from(status < 400), i64::from(class == 4), i64::from(class >= 5));
    let (day, bucket) = (slot.div_euclid(SLOTS_PER_DAY), latency_bucket(latency));
    for scope in [env.tenant.as_str(), ALL_TENANTS] {
        pending.add(&REQUEST_SLOT, vec![scope.into(), slot.into()], &[1, ok, client, server]);
        pending.add(&REQUEST_SLOT_LATENCY, vec![scope.into(), slot.into(), bucket.into()], &[1]);
        pending.add(&REQUEST_DAY, vec![scope.into(), day.into()], &[1, ok, client, server]);
        pending.add(&REQUEST_DAY_LATENCY, vec![scope.into(), day.into(), bucket.into()], &[1]);
    }
    Ok(Folded::Applied)
}
