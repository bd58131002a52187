//! The `ledger` projection: one row per `usage.recorded`, and its counters added to the daily
//! rollups by tenant (and every tenant), by key and by channel, the monthly rollup by key and
//! the quarter-hour rollups by tenant (and every tenant) and by key, written once per batch in
//! the same transaction ([`super::rollup`]). Rollups group by the model the client asked for: that
//! is the name tenants know and the one prices are published under. Amounts come from the event
//! (it carries the price it was charged at); nothing is looked up.

use schemas::{Envelope, EventBody, StreamOutcome, UsageRecorded, UsageSource};
use sqlx::AnyConnection;

use super::rollup::{
    ALL_TENANTS, Pending, USAGE_DAILY, USAGE_DAILY_CHANNEL, USAGE_DAILY_KEY, USAGE_MONTH_KEY, USAGE_SLOT,
    USAGE_SLOT_KEY,
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

pub(super) async fn apply(
    conn: &mut AnyConnection,
    pending: &mut Pending,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    let EventBody::UsageRecorded(u) = &env.body else {
        return Ok(Folded::Ignored);
    };
    let c = match Counts::of(u) {
        Ok(c) => c,
        Err(reason) => return Ok(Folded::Rejected(reason)),
    };
    let day = utc_day(env.occurred_at_us);
    let inserted = sqlx::query(
        "INSERT INTO ledger (generation, request_id, event_id, seq, tenant, key_id, end_user, day, occurred_at_us, \
         endpoint, model_requested, model_served, provider, channel_id, input_tokens, cached_input_tokens, \
         cache_write_tokens, output_tokens, reasoning_tokens, usage_source, stream_outcome, streamed, \
         price_version, currency, cost_nanos) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
         $22, $23, $24, $25) ON CONFLICT DO NOTHING",
    )
    .bind(generation)
    .bind(&u.request_id)
    .bind(env.id.to_string())
    .bind(seq)
    .bind(&env.tenant)
    .bind(&u.key_id)
    .bind(u.user.clone())
    .bind(&day)
    .bind(env.occurred_at_us)
    .bind(&u.endpoint)
    .bind(&u.model_requested)
    .bind(&u.model_served)
    .bind(&u.provider)
    .bind(&u.channel_id)
    .bind(c.input)
    .bind(c.cached)
    .bind(c.cache_write)
    .bind(c.output)
    .bind(c.reasoning)
    .bind(usage_source(u.usage_source))
    .bind(stream_outcome(u.stream_outcome))
    .bind(i64::from(u.streamed))
    .bind(u.price.as_ref().map(|p| p.version.clone()))
    .bind(&u.currency)
    .bind(u.cost_nanos)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted != 1 {
        // A different event for a request already billed: bill it once, keep the evidence.
        return Ok(Folded::Rejected(format!("request {} is already in the ledger", u.request_id)));
    }
    let counters = [1, c.input, c.cached, c.cache_write, c.output, c.reasoning, u.cost_nanos];
    let (tenant, model, currency) = (env.tenant.as_str(), u.model_requested.as_str(), u.currency.as_str());
    let key = u.key_id.as_str();
    let slot = crate::read::slot_of(env.occurred_at_us);
    for scope in [tenant, ALL_TENANTS] {
        pending.add(&USAGE_DAILY, vec![scope.into(), day.as_str().into(), model.into(), currency.into()], &counters);
        pending.add(&USAGE_SLOT, vec![scope.into(), slot.into(), model.into(), currency.into()], &counters);
    }
    // `YYYY-MM`: the day's first seven characters.
    let month = day.get(..7).unwrap_or(&day);
    pending.add(
        &USAGE_MONTH_KEY,
        vec![tenant.into(), month.into(), key.into(), model.into(), currency.into()],
        &counters,
    );
    pending.add(
        &USAGE_DAILY_KEY,
        vec![tenant.into(), key.into(), day.as_str().into(), model.into(), currency.into()],
        &counters,
    );
    pending.add(
        &USAGE_SLOT_KEY,
        vec![tenant.into(), slot.into(), key.into(), model.into(), currency.into()],
        &counters,
    );
    pending.add(
        &USAGE_DAILY_CHANNEL,
        vec![u.channel_id.as_str().into(), day.as_str().into(), currency.into()],
        &[1, u.cost_nanos],
    );
    Ok(Folded::Applied)
}
