//! `GET /api/health`: is the log reachable, how deep is the spool, how far behind is each
//! projection, and how many upstream keys and egress proxies are healthy, degraded, down or not
//! yet probed (counts only). 200 when the log is reachable and the read store answers, else 503.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use schemas::Stream;
use serde_json::json;

use crate::WebState;

/// Health report (open: no tenant data).
#[utoipa::path(get, path = "/api/health", tag = "meta", security(()),
    responses((status = 200, description = "The log and the read store answer"), (status = 503, description = "Degraded")))]
pub async fn health(State(state): State<WebState>) -> (StatusCode, Json<serde_json::Value>) {
    let log = state.log().health().await;
    let checkpoints = projections::read::checkpoints(state.store()).await;
    let mut projections_json = Vec::new();
    let store_ok = checkpoints.is_ok();
    let checkpoints = checkpoints.unwrap_or_default();
    for p in projections::Projection::ALL {
        let stream = p.stream();
        let applied = checkpoints.iter().find(|c| c.projection == p.name()).map(|c| c.seq).unwrap_or(0);
        let last = if log.reachable { state.log().last_seq(stream).await.ok() } else { None };
        projections_json.push(json!({
            "name": p.name(),
            "stream": stream.name(),
            "applied_seq": applied,
            "stream_seq": last,
            "lag": last.map(|l| l.saturating_sub(applied)),
        }));
    }
    let ok = log.reachable && store_ok;
    let upstream_keys = if store_ok { crate::health_keys::summary(&state).await } else { None };
    let proxies = if store_ok { crate::health_proxies::summary(&state).await } else { None };
    let body = json!({
        "status": if ok { "ok" } else { "degraded" },
        "instance": state.instance(),
        "log": log,
        "read_store": if store_ok { "ok" } else { "unavailable" },
        "projections": projections_json,
        "streams": Stream::ALL.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "upstream_keys": upstream_keys,
        "proxies": proxies,
    });
    (if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, Json(body))
}
