//! Every read route, path → handler. Authentication: `/v1/usage` takes a virtual key; `/api/health`
//! and the dashboard shell are open (they show no tenant data).

use axum::Router;
use axum::routing::get;

use crate::{WebState, health, pages, usage};

/// The read routes, to be merged with the gateway's.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/api/health", get(health::health))
        .route("/v1/usage", get(usage::usage))
        .route("/", get(pages::overview))
        .with_state(state)
}
