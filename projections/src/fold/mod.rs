//! Folding one decoded event into a projection's read model, inside the caller's transaction.
//! Folds are deterministic: they read only the envelope (never the clock) and write only their
//! own generation's rows. Exactly-once is the runner's job (`applied_event`), not the fold's.

mod control;
pub(crate) mod health;
mod ledger;
pub(crate) mod requests;
pub(crate) mod rollup;

use schemas::Envelope;
use sqlx::AnyConnection;

use crate::Projection;

/// What a fold did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Folded {
    /// The read model changed (or the event was a no-op by design, e.g. revoking twice).
    Applied,
    /// The event type does not concern this projection.
    Ignored,
    /// The event is well-formed but cannot be applied (e.g. a second key with the same hash);
    /// it is recorded as a poison event so the projection does not stall on it.
    Rejected(String),
}

/// Applies `env` to `projection`'s rows of `generation`. `seq` is the event's stream sequence.
/// Rollup counters go to `pending`, which the caller flushes before its transaction commits.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    pending: &mut rollup::Pending,
    projection: Projection,
    generation: i64,
    seq: i64,
    env: &Envelope,
) -> Result<Folded, sqlx::Error> {
    match projection {
        Projection::Control => control::apply(conn, generation, seq, env).await,
        Projection::Ledger => Ok(ledger::apply(pending, seq, env)),
        Projection::Requests => Ok(requests::apply(pending, seq, env)),
        Projection::Health => health::apply(conn, pending, generation, seq, env).await,
    }
}

/// Token counts are `u64` on the wire and `BIGINT` in the store.
pub(crate) fn to_i64(value: u64, field: &str) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("{field} = {value} does not fit a BIGINT"))
}
