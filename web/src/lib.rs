//! The read side: `/api/health`, `/v1/usage` and the dashboard. Reads go through
//! `projections::read`; this crate writes nothing but (later) admin events through `nats`.

mod error;
mod health;
mod pages;
mod routes;
mod usage;

use std::sync::Arc;

use nats::EventLog;
use projections::ReadStore;

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
}

impl WebState {
    /// Builds the state from the read store and the log.
    pub fn new(store: ReadStore, log: EventLog, instance: &str) -> Self {
        WebState { inner: Arc::new(Inner { store, log, instance: instance.to_owned() }) }
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
