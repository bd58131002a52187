//! Leaf crate: ids, money, the event envelope and every event type, subjects, and secrets.
//! Nothing here does I/O; no async runtime, database or broker crate may be imported.

pub mod control;
pub mod event;
pub mod ids;
pub mod keys;
pub mod money;
pub mod password;
pub mod secret;

pub use event::{
    ApiKeyIssued, ApiKeyRevoked, AppliedPrice, AuthFailuresCounted, ChannelAdded, ChannelRemoved, ChannelUpdated,
    DecodeError, Envelope, EventBody, GLOBAL_TENANT, PricePublished, RequestLogged, Stream, StreamOutcome,
    TenantCreated, UsageRecorded, UsageSource,
};
pub use event::{AttemptRecord, MAX_LOGGED_ATTEMPTS};
pub use event::{Balance, HealthChecked, MAX_HEALTH_REASON, health_check_id};
pub use event::{
    ChannelKeyAdded, ChannelKeyRemoved, ChannelKeyUpdated, UpstreamKeyState, UpstreamKeyStateChanged, key_seal_context,
    legacy_key_id,
};
pub use event::{
    PROXY_ORIGIN_POOL_URL, ProxyAdded, ProxyRemoved, ProxyState, ProxyStateChanged, RouteRemoved, RouteSet,
    RouteStrategy,
};
pub use event::{
    Role, SESSION_SECRET_CONTEXT, SessionSecretGenerated, TenantUpdated, UserCreated, UserDisabled,
    UserSessionsRevoked, UserUpdated,
};
pub use ids::{IdError, TenantId};
pub use money::{MoneyError, cost_nanos, format_nanos, parse_per_mtok};
