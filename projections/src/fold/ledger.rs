//! The `ledger` projection: one row per `usage.recorded`, and its counters added to the daily
//! rollups by tenant (and every tenant), by key and by channel, the monthly rollup by key and
//! the quarter-hour rollups by tenant (and every tenant) and by key. The row and its counters are
//! staged and written once per batch in the same transaction ([`super::rollup`]). Rollups group
//! by the model the client asked for: that
//! is the name tenants know and the one prices are published under. Amounts come from the event
//! (it carries the price it was charged at); nothing is looked up.

use schemas::{Envelope, EventBody, StreamOutcome, UsageRecorded, UsageSource};

use super::rollup::{
    ALL_TENANTS, Pending, Rollups, RowTable, Staged, USAGE_DAILY, USAGE_DAILY_CHANNEL, USAGE_DAILY_KEY,
    USAGE_MONTH_KEY, USAGE_SLOT, USAGE_SLOT_KEY, Val,
};
use super::{Folded, to_i64};
use crate::utc_day;

/// The counters of one usage event, validated before anything is written.
struct Counts {
    input: i64,
    cached: i64,
    cache_write: i64,
    output: i64,
    reasoning: i64,
}

impl Counts {
    fn of(u: &UsageRecorded) -> Result<Self, String> {
        Ok(Counts {
            input: to_i64(u.input_tokens, "input_tokens")?,
            cached: to_i64(u.cached_input_tokens, "cached_input_tokens")?,
            cache_write: to_i64(u.cache_write_tokens, "cache_write_tokens")?,
            output: to_i64(u.output_tokens, "output_tokens")?,
            reasoning: to_i64(u.reasoning_tokens, "reasoning_tokens")?,
        })
    }
}

fn usage_source(s: UsageSource) -> &'static str {
    match s {
        UsageSource::Upstream => "upstream",
        UsageSource::Estimated => "estimated",
    }
}

fn stream_outcome(s: StreamOutcome) -> &'static str {
    match s {
        StreamOutcome::Completed => "completed",
        StreamOutcome::ClientDisconnected => "client_disconnected",
        StreamOutcome::UpstreamError => "upstream_error",
    }
}

/// The ledger's rows, one per billed request.
const LEDGER: RowTable = RowTable {
    name: "ledger",
    key: "request_id",
    columns: &[
        "request_id",
        "event_id",
        "seq",
        "tenant",
        "key_id",
        "end_user",
        "day",
        "occurred_at_us",
        "endpoint",
        "model_requested",
        "model_served",
        "provider",
        "channel_id",
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "usage_source",
        "stream_outcome",
        "streamed",
        "price_version",
        "currency",
        "cost_nanos",
    ],
};

/// Stages the event's ledger row with its rollup counters. A different event for a request
/// already billed is rejected at the flush: billed once, the evidence kept as a poison event.
pub(super) fn apply(pending: &mut Pending, seq: i64, env: &Envelope) -> Folded {
    let EventBody::UsageRecorded(u) = &env.body else {
        return Folded::Ignored;
    };
    let c = match Counts::of(u) {
        Ok(c) => c,
        Err(reason) => return Folded::Rejected(reason),
    };
    let day = utc_day(env.occurred_at_us);
    let values = vec![
        Val::Text(u.request_id.clone()),
        Val::Text(env.id.to_string()),
        Val::Int(seq),
        Val::Text(env.tenant.clone()),
        Val::Text(u.key_id.clone()),
        Val::OptText(u.user.clone()),
        Val::Text(day.clone()),
        Val::Int(env.occurred_at_us),
        Val::Text(u.endpoint.clone()),
        Val::Text(u.model_requested.clone()),
        Val::Text(u.model_served.clone()),
        Val::Text(u.provider.clone()),
        Val::Text(u.channel_id.clone()),
        Val::Int(c.input),
        Val::Int(c.cached),
        Val::Int(c.cache_write),
        Val::Int(c.output),
        Val::Int(c.reasoning),
        Val::Text(usage_source(u.usage_source).to_owned()),
        Val::Text(stream_outcome(u.stream_outcome).to_owned()),
        Val::Int(i64::from(u.streamed)),
        Val::OptText(u.price.as_ref().map(|p| p.version.clone())),
        Val::Text(u.currency.clone()),
        Val::Int(u.cost_nanos),
    ];
    let counters = [1, c.input, c.cached, c.cache_write, c.output, c.reasoning, u.cost_nanos];
    let (tenant, model, currency) = (env.tenant.as_str(), u.model_requested.as_str(), u.currency.as_str());
    let key = u.key_id.as_str();
    let slot = crate::read::slot_of(env.occurred_at_us);
    let mut rollups = Rollups::default();
    for scope in [tenant, ALL_TENANTS] {
        rollups.add(&USAGE_DAILY, vec![scope.into(), day.as_str().into(), model.into(), currency.into()], &counters);
        rollups.add(&USAGE_SLOT, vec![scope.into(), slot.into(), model.into(), currency.into()], &counters);
    }
    // `YYYY-MM`: the day's first seven characters.
    let month = day.get(..7).unwrap_or(&day);
    rollups.add(
        &USAGE_MONTH_KEY,
        vec![tenant.into(), month.into(), key.into(), model.into(), currency.into()],
        &counters,
    );
    rollups.add(
        &USAGE_DAILY_KEY,
        vec![tenant.into(), key.into(), day.as_str().into(), model.into(), currency.into()],
        &counters,
    );
    rollups.add(
        &USAGE_SLOT_KEY,
        vec![tenant.into(), slot.into(), key.into(), model.into(), currency.into()],
        &counters,
    );
    rollups.add(
        &USAGE_DAILY_CHANNEL,
        vec![u.channel_id.as_str().into(), day.as_str().into(), currency.into()],
        &[1, u.cost_nanos],
    );
    pending.stage(Staged {
        table: &LEDGER,
        key: u.request_id.clone(),
        values,
        rollups,
        repeat: Some(format!("request {} is already in the ledger", u.request_id)),
        seq,
    });
    Folded::Applied
}
