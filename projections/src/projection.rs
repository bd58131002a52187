//! The projections this crate knows: their names, the stream each folds, and the read-model
//! tables each owns (used by rebuild to clear a generation). A new projection needs its
//! `projection_generation` row inserted by the migration that creates its tables.

use std::str::FromStr;

use schemas::Stream;

use crate::ProjectionError;

/// A read model folded from one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Projection {
    /// Tenants, API keys, channels and prices from `LLMR_CONTROL`.
    Control,
    /// The billing ledger and its daily rollups from `LLMR_BILLING`.
    Ledger,
    /// The request log and its quarter-hour rollup from `LLMR_REQUESTS`.
    Requests,
    /// Health probe results, the last one per resource and the hourly availability rollup
    /// from `LLMR_OPS`.
    Health,
}

impl Projection {
    /// Every projection, in a fixed order.
    pub const ALL: [Projection; 4] =
        [Projection::Control, Projection::Ledger, Projection::Requests, Projection::Health];

    /// The stable name used in bookkeeping tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Projection::Control => "control",
            Projection::Ledger => "ledger",
            Projection::Requests => "requests",
            Projection::Health => "health",
        }
    }

    /// The stream this projection folds.
    pub fn stream(self) -> Stream {
        match self {
            Projection::Control => Stream::Control,
            Projection::Ledger => Stream::Billing,
            Projection::Requests => Stream::Requests,
            Projection::Health => Stream::Ops,
        }
    }

    /// Statements deleting every read-model row whose generation is not `$1`. Static text per
    /// table: table names cannot be bound parameters.
    pub(crate) fn delete_other_generations(self) -> &'static [&'static str] {
        match self {
            Projection::Control => &[
                "DELETE FROM tenants WHERE generation <> $1",
                "DELETE FROM api_keys WHERE generation <> $1",
                "DELETE FROM channels WHERE generation <> $1",
                "DELETE FROM prices WHERE generation <> $1",
                "DELETE FROM users WHERE generation <> $1",
                "DELETE FROM audit WHERE generation <> $1",
            ],
            Projection::Ledger => &[
                "DELETE FROM ledger WHERE generation <> $1",
                "DELETE FROM usage_daily WHERE generation <> $1",
                "DELETE FROM usage_daily_key WHERE generation <> $1",
                "DELETE FROM usage_slot_key WHERE generation <> $1",
                "DELETE FROM usage_daily_channel WHERE generation <> $1",
                "DELETE FROM usage_slot WHERE generation <> $1",
                "DELETE FROM usage_month_key WHERE generation <> $1",
            ],
            Projection::Requests => &[
                "DELETE FROM request_log WHERE generation <> $1",
                "DELETE FROM request_slot WHERE generation <> $1",
                "DELETE FROM request_slot_latency WHERE generation <> $1",
                "DELETE FROM request_day WHERE generation <> $1",
                "DELETE FROM request_day_latency WHERE generation <> $1",
            ],
            Projection::Health => &[
                "DELETE FROM health_check WHERE generation <> $1",
                "DELETE FROM health_latest WHERE generation <> $1",
                "DELETE FROM health_hour WHERE generation <> $1",
            ],
        }
    }

    /// A small number distinguishing this projection in advisory lock keys.
    pub(crate) fn lock_index(self) -> i64 {
        match self {
            Projection::Control => 1,
            Projection::Ledger => 2,
            Projection::Requests => 3,
            Projection::Health => 4,
        }
    }
}

impl FromStr for Projection {
    type Err = ProjectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Projection::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| ProjectionError::UnknownProjection(s.to_owned()))
    }
}

impl std::fmt::Display for Projection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
