//! `Idempotency-Key` on admin API POSTs: a retried write returns the first answer, and appends
//! no second event. Answers are kept per user, path and key for 24 hours in the read store's
//! `idempotency` table (`projections::idempotency`), so every gateway of a cluster recognises a
//! retry that another one answered. The answer is sealed with the master key (it may hold a new
//! API key or a generated password). With a hash of the request body: the same key with another
//! body is 422, and the same key while the first request still runs is 409. Answers of 5xx are
//! not kept, so the retry runs again. A claim left by a gateway that died mid-request is taken
//! over after a minute. Without a read store the request is refused (503) rather than run
//! without the guarantee.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use projections::idempotency::{self as store, Claim, Claimed};
use schemas::secret::{MasterKey, Sealed};
use sha2::{Digest, Sha256};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;

/// The header.
pub const HEADER: &str = "idempotency-key";
/// How long an answer is kept.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// After this long a claim that was never finished is taken over by a retry.
const STALE: Duration = Duration::from_secs(60);
/// Most live keys per user.
const MAX_PER_USER: i64 = 10_000;
/// Longest key accepted.
const MAX_KEY: usize = 255;
/// Largest body read (the admin API's body limit).
const MAX_BODY: usize = 64 * 1024;

fn bad(message: &str) -> Response {
    ApiError::bad_request("invalid_idempotency_key", message).into_response()
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sealing context of one answer: a sealed answer opens only as the answer to this claim.
fn context(c: &Claim<'_>) -> String {
    format!("idempotency\u{1f}{}\u{1f}{}\u{1f}{}", c.user_id, c.path, c.key)
}

fn replay(master: &MasterKey, c: &Claim<'_>, status: u16, content_type: Option<String>, sealed: &str) -> Response {
    let opened = serde_json::from_str::<Sealed>(sealed).ok().and_then(|s| master.open(&s, &context(c)).ok());
    let Some(body) = opened else {
        tracing::error!("A kept Idempotency-Key answer cannot be opened with this master key.");
        return ApiError::unavailable("idempotency_unreadable", "The first answer cannot be read here; retry later.")
            .into_response();
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut res = (status, body).into_response();
    if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(&ct).ok()) {
        res.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    res
}

fn store_down(e: &projections::ProjectionError) -> Response {
    tracing::warn!(error = %e, "The Idempotency-Key table is unavailable.");
    ApiError::unavailable("read_store_unavailable", "Idempotency-Keys cannot be checked now; retry later.")
        .into_response()
}

/// Middleware for the authenticated routes (after the session check).
pub async fn layer(State(state): State<WebState>, req: Request, next: Next) -> Response {
    let Some(admin) = state.admin() else { return next.run(req).await };
    if req.method() != Method::POST || !req.headers().contains_key(HEADER) {
        return next.run(req).await;
    }
    let Some(key) = req.headers().get(HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned) else {
        return bad("Idempotency-Key must be printable text.");
    };
    if key.is_empty() || key.len() > MAX_KEY {
        return bad("Idempotency-Key must be 1 to 255 characters.");
    }
    let Some(user) = req.extensions().get::<Caller>().map(|c| c.user.user_id.clone()) else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::bad_request("invalid_body", "The body is too large.").into_response();
    };
    let body_hash = hex(&Sha256::digest(&bytes));
    let path = parts.uri.path().to_owned();
    let claim = Claim { user_id: &user, path: &path, key: &key, body_hash: &body_hash };
    let now = chrono::Utc::now().timestamp_micros();
    let found = store::claim(state.store(), claim, now, micros(KEEP), micros(STALE), MAX_PER_USER).await;
    match found {
        Err(e) => return store_down(&e),
        Ok(Claimed::Fresh) => {}
        Ok(Claimed::Reused) => {
            return ApiError::unprocessable(
                "idempotency_key_reused",
                "This Idempotency-Key was used with another body.",
            )
            .into_response();
        }
        Ok(Claimed::InUse) => {
            return ApiError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still running.",
            )
            .into_response();
        }
        Ok(Claimed::Full) => {
            return ApiError::unavailable("idempotency_table_full", "Too many Idempotency-Keys in use; retry later.")
                .into_response();
        }
        Ok(Claimed::Done { status, content_type, sealed_body }) => {
            return replay(&admin.cfg.master, &claim, status, content_type, &sealed_body);
        }
    }
    let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = res.status();
    if status.is_server_error() {
        if let Err(e) = store::release(state.store(), claim).await {
            tracing::warn!(error = %e, "An Idempotency-Key claim could not be released; it goes stale.");
        }
        return res;
    }
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * MAX_BODY).await else {
        let _ = store::release(state.store(), claim).await;
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let sealed = admin.cfg.master.seal(&String::from_utf8_lossy(&bytes), &context(&claim));
    let kept = match serde_json::to_string(&sealed) {
        Ok(sealed) => store::finish(state.store(), claim, status.as_u16(), content_type.as_deref(), &sealed).await,
        Err(e) => {
            tracing::error!(error = %e, "An answer could not be sealed for its Idempotency-Key.");
            Ok(())
        }
    };
    if let Err(e) = kept {
        // The write happened; only the replay is lost. The claim goes stale and a retry after
        // that would run again, so say so in the operator's log.
        tracing::warn!(error = %e, "An Idempotency-Key answer could not be kept.");
    }
    Response::from_parts(parts, Body::from(bytes))
}
