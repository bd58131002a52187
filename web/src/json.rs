//! A JSON body extractor for the admin API whose refusals are admin API errors: a syntax error is
//! 400, a body of the wrong shape (an unknown field, a missing one, a wrong type) is 422 naming
//! the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::api_error::ApiError;

/// `Json<T>` with admin API errors. Body types use `#[serde(deny_unknown_fields)]`.
pub struct StrictJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for StrictJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(StrictJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::unprocessable("invalid_body", e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(ApiError::bad_request("invalid_json", e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::bad_request("invalid_content_type", "Send the body as application/json."))
            }
            Err(e) => Err(ApiError::bad_request("invalid_body", e.body_text())),
        }
    }
}
