//! The `requests` projection: one `request_log` row per `request.logged` and the quarter-hour and
//! daily rollups of the dashboard (`request_slot`, `request_slot_latency`, `request_day`,
//! `request_day_latency`, per tenant and for every tenant), staged and written once per batch in
//! the same transaction ([`super::rollup`]).
//! `auth.failures_counted` shares the stream and is ignored. A second event for a request id
//! already logged is dropped (not poison: the log is informational, the first one stands).

use schemas::{Envelope, EventBody};

use super::rollup::{
    ALL_TENANTS, Pending, REQUEST_DAY, REQUEST_DAY_LATENCY, REQUEST_SLOT, REQUEST_SLOT_LATENCY, Rollups, RowTable,
    SLOTS_PER_DAY, Staged, Val,
};
use super::{Folded, to_i64};
use crate::read::{latency_bucket, slot_of};

/// The request log's rows, one per logged request.
const REQUEST_LOG: RowTable = RowTable {
    name: "request_log",
    key: "request_id",
    columns: &[
        "request_id",
        "seq",
        "occurred_at_us",
        "tenant",
        "key_id",
        "endpoint",
        "model",
        "provider",
        "channel_id",
        "status",
        "status_class",
        "latency_us",
        "ttft_us",
        "attempts",
        "error_class",
        "streamed",
        "attempt_classes",
    ],
};

/// Stages the event's `request_log` row with its rollup counters.
pub(super) fn apply(pending: &mut Pending, seq: i64, env: &Envelope) -> Folded {
    let EventBody::RequestLogged(r) = &env.body else {
        return Folded::Ignored;
    };
    let latency = match to_i64(r.latency_us, "latency_us") {
        Ok(v) => v,
        Err(reason) => return Folded::Rejected(reason),
    };
    let ttft = match r.ttft_us.map(|t| to_i64(t, "ttft_us")).transpose() {
        Ok(v) => v,
        Err(reason) => return Folded::Rejected(reason),
    };
    let status = i64::from(r.status);
    let class = status / 100;
    // The per-attempt classes, comma-separated: at most MAX_LOGGED_ATTEMPTS short stable names.
    let attempt_classes = (!r.attempt_log.is_empty())
        .then(|| r.attempt_log.iter().map(|a| a.class.as_str()).collect::<Vec<_>>().join(","));
    let values = vec![
        Val::Text(r.request_id.clone()),
        Val::Int(seq),
        Val::Int(env.occurred_at_us),
        Val::Text(env.tenant.clone()),
        Val::OptText(r.key_id.clone()),
        Val::Text(r.endpoint.clone()),
        Val::OptText(r.model.clone()),
        Val::OptText(r.provider.clone()),
        Val::OptText(r.channel_id.clone()),
        Val::Int(status),
        Val::Int(class),
        Val::Int(latency),
        Val::OptInt(ttft),
        Val::Int(i64::from(r.attempts)),
        Val::OptText(r.error_class.clone()),
        Val::Int(i64::from(r.streamed)),
        Val::OptText(attempt_classes),
    ];
    let slot = slot_of(env.occurred_at_us);
    let (ok, client, server) = (i64::from(status < 400), i64::from(class == 4), i64::from(class >= 5));
    let (day, bucket) = (slot.div_euclid(SLOTS_PER_DAY), latency_bucket(latency));
    let mut rollups = Rollups::default();
    for scope in [env.tenant.as_str(), ALL_TENANTS] {
        rollups.add(&REQUEST_SLOT, vec![scope.into(), slot.into()], &[1, ok, client, server]);
        rollups.add(&REQUEST_SLOT_LATENCY, vec![scope.into(), slot.into(), bucket.into()], &[1]);
        rollups.add(&REQUEST_DAY, vec![scope.into(), day.into()], &[1, ok, client, server]);
        rollups.add(&REQUEST_DAY_LATENCY, vec![scope.into(), day.into(), bucket.into()], &[1]);
    }
    pending.stage(Staged { table: &REQUEST_LOG, key: r.request_id.clone(), values, rollups, repeat: None, seq });
    Folded::Applied
}
