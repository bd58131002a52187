//! Dashboard pages, server-rendered with askama. Only the overview shell exists so far.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

use crate::WebState;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview<'a> {
    instance: &'a str,
    backend: &'a str,
    reachable: bool,
    spool_depth: u64,
    tenants: usize,
    channels: usize,
}

/// `GET /`: the overview.
pub async fn overview(State(state): State<WebState>) -> Response {
    let log = state.log().health().await;
    let tenants = projections::read::tenants(state.store()).await.map(|t| t.len()).unwrap_or(0);
    let channels = projections::read::channels(state.store()).await.map(|c| c.len()).unwrap_or(0);
    let page = Overview {
        instance: state.instance(),
        backend: log.backend,
        reachable: log.reachable,
        spool_depth: log.spool_depth,
        tenants,
        channels,
    };
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "Overview page failed to render.");
            (StatusCode::INTERNAL_SERVER_ERROR, "The page could not be rendered.").into_response()
        }
    }
}
