//! Bearer-key authentication against the in-memory key table. Every failure gets the same 401;
//! the presented key is hashed and never logged or echoed.

use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::error::ApiError;
use crate::state::{ControlState, KeyEntry};

/// Keys longer than this are refused without hashing (a 10 KB header costs nothing).
const MAX_KEY_LEN: usize = 256;

/// The caller's key from `Authorization: Bearer sk-…`.
pub fn authenticate(headers: &HeaderMap, state: &ControlState) -> Result<Arc<KeyEntry>, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or(ApiError::InvalidApiKey)?;
    let value = value.to_str().map_err(|_| ApiError::InvalidApiKey)?;
    let (scheme, key) = value.split_once(' ').ok_or(ApiError::InvalidApiKey)?;
    let key = key.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiError::InvalidApiKey);
    }
    match state.keys.get(&schemas::keys::hash(key)) {
        Some(k) if !k.revoked => Ok(k.clone()),
        _ => Err(ApiError::InvalidApiKey),
    }
}
