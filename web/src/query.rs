//! Query strings of the admin API: unknown parameters are refused naming the parameter, pages
//! are clamped, times are RFC 3339.

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api_error::ApiError;

/// `Query<T>` with admin API errors (400 naming the parameter). Types use
/// `#[serde(deny_unknown_fields)]`.
pub struct StrictQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for StrictQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(StrictQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(ApiError::bad_request("invalid_parameter", e.body_text()))
            }
            Err(e) => Err(ApiError::bad_request("invalid_parameter", e.body_text())),
        }
    }
}

/// Default page size.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest page; bigger asks are clamped to it.
pub const MAX_LIMIT: u32 = 200;

/// Cursor paging: `limit` (clamped to 1..=200) and `after` (the last id of the previous page).
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Page size (default 50, at most 200).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub after: Option<String>,
}

impl Page {
    /// The page size to use.
    pub fn limit(&self) -> u32 {
        self.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT)
    }
}

/// Microseconds since the epoch as RFC 3339 (UTC, microsecond precision when needed).
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}
