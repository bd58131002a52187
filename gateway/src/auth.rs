//! Bearer-key (and, on Anthropic's routes, `x-api-key`; on Gemini's, `x-goog-api-key` or `?key=`) authentication against the in-memory key table. Every failure gets the same 401;
//! the presented key is hashed and never logged or echoed (only a short prefix is sampled into
//! the failure counts, see `auth_failures`).

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::auth_failures::{Failure, Reason};
use crate::state::{Control, KeyEntry};

/// Keys longer than this are refused without hashing (a 10 KB header costs nothing).
const MAX_KEY_LEN: usize = 256;

/// The caller's key from `Authorization: Bearer sk-…`.
pub async fn authenticate(headers: &HeaderMap, state: &Control) -> Result<Arc<KeyEntry>, Failure> {
    let value = headers.get(header::AUTHORIZATION).ok_or(Failure::bare(Reason::Missing))?;
    let value = value.to_str().map_err(|_| Failure::bare(Reason::Malformed))?;
    let (scheme, key) = value.split_once(' ').ok_or(Failure::bare(Reason::Malformed))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Failure::bare(Reason::Malformed));
    }
    lookup(key.trim(), state).await
}

/// The caller's key from `x-api-key` (Anthropic's SDKs), else from `Authorization: Bearer`.
pub async fn authenticate_anthropic(headers: &HeaderMap, state: &Control) -> Result<Arc<KeyEntry>, Failure> {
    match headers.get("x-api-key") {
        Some(v) => lookup(v.to_str().map_err(|_| Failure::bare(Reason::Malformed))?.trim(), state).await,
        None => authenticate(headers, state).await,
    }
}

/// The caller's key from `x-goog-api-key` (Gemini's SDKs), else from the `key` query parameter,
/// else from `Authorization: Bearer`.
pub async fn authenticate_gemini(
    headers: &HeaderMap,
    query: Option<&str>,
    state: &Control,
) -> Result<Arc<KeyEntry>, Failure> {
    if let Some(v) = headers.get("x-goog-api-key") {
        return lookup(v.to_str().map_err(|_| Failure::bare(Reason::Malformed))?.trim(), state).await;
    }
    let from_query = query.and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key"));
    match from_query {
        Some((_, key)) => lookup(key.trim(), state).await,
        None => authenticate(headers, state).await,
    }
}

/// An unknown hash makes the control state catch up with the log once (bounded, coalesced and
/// rate-limited in [`Control::key`]) before the 401, so a key works on its first request.
async fn lookup(key: &str, state: &Control) -> Result<Arc<KeyEntry>, Failure> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Failure::bare(Reason::Malformed));
    }
    match state.key(&schemas::keys::hash(key)).await {
        Some(k) if k.revoked => Err(Failure::of(Reason::Revoked, key)),
        // Expiry needs no event: the clock at request time decides.
        // (The clock is read only for keys that have an expiry.)
        Some(k) if k.expires_at_us.is_some() && k.expired(crate::health::now_us()) => {
            Err(Failure::of(Reason::Expired, key))
        }
        Some(k) => Ok(k),
        None => Err(Failure::of(Reason::Unknown, key)),
    }
}
