//! The single exit of a call. Every outcome — answered, failed after N attempts, a stream that
//! completed, was cut by the upstream, or whose client left — ends in [`record`]: it appends
//! `usage.recorded` when the upstream generated something billable and waits until it is durable,
//! then lets the caller deliver (the answer, or the stream's final frames: never before the usage
//! is durable), then appends `request.logged` without waiting. Nothing else in `call` appends
//! either event.
//!
//! This is the seam for whatever must happen exactly once per call, whatever its outcome: budget
//! settlement (the reservation taken at admission settles at the [`Billable`]'s cost, or is
//! released when there is none), rate-limit settlement and session turns (durable next to the
//! usage, before the final frame) go in [`record`], reading its [`Outcome`].

use std::time::Duration;

use schemas::{EventBody, StreamOutcome};

use super::{Attempts, Call};
use crate::ctx::AppState;
use crate::error::ApiError;
use crate::state::Channel;
use crate::usage::Consumption;

/// How a call ended upstream: everything [`record`] needs besides the delivery.
pub(super) struct Outcome<'a> {
    /// The channel that served, or the last one tried; `None` when no channel was tried.
    pub channel: Option<&'a Channel>,
    /// Every attempt, the serving one's class already final.
    pub attempts: Attempts,
    /// What the upstream generated, when the call is billable.
    pub billable: Option<Billable>,
    /// Until the first streamed event, for streams.
    pub ttft: Option<Duration>,
}

/// The billable part of an outcome.
pub(super) struct Billable {
    /// Tokens counted, by the upstream or by us.
    pub consumption: Consumption,
    /// Whether the answer was streamed.
    pub streamed: bool,
    /// How the answer ended (`completed` for every non-stream answer).
    pub ending: StreamOutcome,
}

impl Billable {
    /// A non-stream answer, delivered whole.
    pub fn unary(consumption: Consumption) -> Billable {
        Billable { consumption, streamed: false, ending: StreamOutcome::Completed }
    }
}

/// Whether the usage of a call is durable, handed to the delivery step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Billing {
    /// Nothing billable: the call failed before an upstream answered.
    NotBillable,
    /// `usage.recorded` is in the local log.
    Recorded,
    /// `usage.recorded` could not be made durable: the answer must be withheld.
    NotRecorded,
}

/// How the client was answered, as `request.logged` tells it.
pub(super) struct Delivered {
    /// The HTTP status the client got (200 for every stream, whatever its ending).
    pub status: u16,
    /// Why the call did not end well, if it did not.
    pub error_class: Option<String>,
}

impl Delivered {
    /// A 200 with nothing wrong, or with this class (a filtered answer, an in-band error).
    pub fn ok(class: Option<&str>) -> Delivered {
        Delivered { status: 200, error_class: class.map(str::to_owned) }
    }

    /// An error answer.
    pub fn failed(e: &ApiError) -> Delivered {
        Delivered { status: e.status_code().as_u16(), error_class: Some(e.class().to_owned()) }
    }
}

/// Ends `call`: records the usage of `outcome` (durable before `deliver` runs), delivers, then
/// logs the request. Returns what `deliver` returned after the [`Delivered`].
pub(super) async fn record<T>(
    app: &AppState,
    call: &Call,
    outcome: Outcome<'_>,
    deliver: impl AsyncFnOnce(Billing) -> (Delivered, T),
) -> T {
    let Outcome { channel, attempts, billable, ttft } = outcome;
    let billing = match (billable, channel) {
        (Some(b), Some(channel)) => {
            let record =
                call.billing(channel).record(&channel.provider, &channel.id, b.consumption, b.streamed, b.ending);
            let env = app.envelope(&call.key.tenant, &call.rid.id, EventBody::UsageRecorded(record));
            match app.log.append(&env).await {
                Ok(()) => Billing::Recorded,
                Err(e) => {
                    tracing::error!(error = %e, streamed = b.streamed, "Usage could not be recorded; the answer is withheld.");
                    Billing::NotRecorded
                }
            }
        }
        _ => Billing::NotBillable,
    };
    let (delivered, out) = deliver(billing).await;
    log_request(app, call, channel, delivered, attempts, ttft);
    out
}

/// Appends `request.logged` without waiting.
fn log_request(
    app: &AppState,
    call: &Call,
    channel: Option<&Channel>,
    delivered: Delivered,
    attempts: Attempts,
    ttft: Option<Duration>,
) {
    let key = Some(&*call.key);
    let mut data = call.rid.logged(
        key,
        call.prepared.endpoint.name(),
        Some(&call.client_model),
        delivered.status,
        delivered.error_class,
    );
    data.provider = channel.map(|c| c.provider.clone());
    data.channel_id = channel.map(|c| c.id.clone());
    data.ttft_us = ttft.map(|t| u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
    data.attempts = attempts.count;
    data.streamed = call.prepared.stream;
    data.attempt_log = attempts.log;
    app.log_request(&call.rid, key, data);
}
