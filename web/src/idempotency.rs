//! `Idempotency-Key` on admin API POSTs: a retried write returns the first answer, and appends
//! no second event. Answers are kept per user, path and key for 24 hours in this process (a
//! bounded table), with a hash of the request body: the same key with another body is 422, and
//! the same key while the first request still runs is 409. Answers of 5xx are not kept, so the
//! retry runs again. A retry sent to another gateway of a cluster is not recognised.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::WebState;
use crate::api_error::ApiError;
use crate::auth::Caller;

/// The header.
pub const HEADER: &str = "idempotency-key";
/// How long an answer is kept.
const KEEP: Duration = Duration::from_secs(24 * 3600);
/// Most answers kept.
const MAX_ENTRIES: usize = 10_000;
/// Longest key accepted.
const MAX_KEY: usize = 255;
/// Largest body read (the admin API's body limit).
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
enum Entry {
    Running { body_hash: [u8; 32], since: Instant },
    Done { body_hash: [u8; 32], at: Instant, status: StatusCode, content_type: Option<HeaderValue>, body: Bytes },
}

/// The kept answers.
#[derive(Default)]
pub struct Idempotency {
    entries: Mutex<HashMap<(String, String, String), Entry>>,
}

impl Idempotency {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<(String, String, String), Entry>) -> T) -> T {
        let mut g = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

fn bad(message: &str) -> Response {
    ApiError::bad_request("invalid_idempotency_key", message).into_response()
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
    let body_hash: [u8; 32] = Sha256::digest(&bytes).into();
    let id = (user, parts.uri.path().to_owned(), key);
    let table = &admin.idempotency;
    let now = Instant::now();
    let seen = table.with(|m| {
        if m.len() >= MAX_ENTRIES {
            m.retain(|_, e| match e {
                Entry::Done { at, .. } => now.duration_since(*at) < KEEP,
                Entry::Running { since, .. } => now.duration_since(*since) < KEEP,
            });
        }
        match m.get(&id).cloned() {
            Some(Entry::Done { at, .. }) if now.duration_since(at) < KEEP => Ok(m.get(&id).cloned()),
            Some(Entry::Running { .. }) => Ok(m.get(&id).cloned()),
            _ if m.len() >= MAX_ENTRIES => Err(()),
            _ => {
                m.insert(id.clone(), Entry::Running { body_hash, since: now });
                Ok(None)
            }
        }
    });
    let Ok(seen) = seen else {
        return ApiError::unavailable("idempotency_table_full", "Too many Idempotency-Keys in use; retry later.")
            .into_response();
    };
    match seen {
        Some(Entry::Done { body_hash: h, .. } | Entry::Running { body_hash: h, .. }) if h != body_hash => {
            return ApiError::unprocessable(
                "idempotency_key_reused",
                "This Idempotency-Key was used with another body.",
            )
            .into_response();
        }
        Some(Entry::Running { .. }) => {
            return ApiError::conflict(
                "idempotency_key_in_use",
                "A request with this Idempotency-Key is still running.",
            )
            .into_response();
        }
        Some(Entry::Done { status, content_type, body, .. }) => {
            let mut res = (status, body).into_response();
            if let Some(ct) = content_type {
                res.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
            return res;
        }
        None => {}
    }
    let res = next.run(Request::from_parts(parts, Body::from(bytes))).await;
    let status = res.status();
    if status.is_server_error() {
        table.with(|m| m.remove(&id));
        return res;
    }
    let (parts, body) = res.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 4 * MAX_BODY).await else {
        table.with(|m| m.remove(&id));
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).cloned();
    table.with(|m| {
        m.insert(id, Entry::Done { body_hash, at: Instant::now(), status, content_type, body: bytes.clone() })
    });
    Response::from_parts(parts, Body::from(bytes))
}
