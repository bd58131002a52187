//! The read side and the admin API: `/api/health`, `/v1/usage`, the dashboard, and the
//! authenticated `/api/*` routes. Reads go through `projections::read`; writes are admin
//! operations of the `control` crate (control events), with the calling user as their actor.

mod api_error;
mod audit;
pub mod auth;
mod channels;
mod error;
mod health;
mod health_keys;
mod health_proxies;
mod idempotency;
mod json;
mod keys;
pub mod live;
pub mod openapi;
mod pages;
mod prices;
mod proxies;
mod query;
mod reports;
mod requests;
mod routes;
mod routing;
mod usage;
mod users;

use std::sync::Arc;

use nats::EventLog;
use projections::ReadStore;

pub use api_error::ApiError;
pub use auth::AdminConfig;
pub use error::WebError;
pub use routes::router;

/// What the read routes need. Cheap to clone.
#[derive(Clone)]
pub struct WebState {
    inner: Arc<Inner>,
}

struct Inner {
    store: ReadStore,
    log: EventLog,
    instance: String,
    admin: Option<auth::AdminState>,
}

impl WebState {
    /// Builds the state from the read store and the log, without the admin API.
    pub fn new(store: ReadStore, log: EventLog, instance: &str) -> Self {
        WebState { inner: Arc::new(Inner { store, log, instance: instance.to_owned(), admin: None }) }
    }

    /// Builds the state with the admin API: starts its live view of the control log.
    pub async fn with_admin(store: ReadStore, log: EventLog, instance: &str, cfg: AdminConfig) -> Self {
        let admin = auth::AdminState::start(cfg, &log).await;
        WebState { inner: Arc::new(Inner { store, log, instance: instance.to_owned(), admin: Some(admin) }) }
    }

    /// The last control sequence the admin API's live view has read (`None` without the admin
    /// API), so an admin command can wait until a user it created can log in here.
    pub fn control_applied(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.admin().map(|a| a.live.applied())
    }

    pub(crate) fn admin(&self) -> Option<&auth::AdminState> {
        self.inner.admin.as_ref()
    }

    pub(crate) fn store(&self) -> &ReadStore {
        &self.inner.store
    }

    pub(crate) fn log(&self) -> &EventLog {
        &self.inner.log
    }

    pub(crate) fn instance(&self) -> &str {
        &self.inner.instance
    }
}
