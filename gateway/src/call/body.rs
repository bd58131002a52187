//! The one reader of an upstream's non-stream answer, for every route: the body is read whole,
//! within the idle timeout between chunks and under one size cap. Error bodies (non-2xx) are read
//! by `adapters::read_error` instead, which keeps only their first 64 KiB.

use crate::error::ApiError;

/// Largest upstream answer we buffer, on every route. Embeddings of big batches are the largest
/// answers (2048 inputs × 3072 dimensions written as JSON numbers is about 130 MiB); larger is
/// treated as an invalid answer rather than risk the process's memory.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// What is reserved up front when the upstream announces a length: at most 1 MiB, so that a
/// lying `Content-Length` cannot make us allocate the cap.
const MAX_PREALLOC: u64 = 1 << 20;

/// Reads a 2xx answer whole. A pause longer than `idle` between two chunks is
/// [`ApiError::UpstreamTimeout`], a broken connection [`ApiError::Upstream`], a body over
/// [`MAX_ANSWER_BYTES`] [`ApiError::UpstreamInvalidResponse`].
pub async fn read_answer(resp: &mut reqwest::Response, idle: std::time::Duration) -> Result<Vec<u8>, ApiError> {
    let reserve = resp.content_length().map_or(4096, |n| n.min(MAX_PREALLOC));
    let mut body = Vec::with_capacity(usize::try_from(reserve).unwrap_or(4096));
    loop {
        match tokio::time::timeout(idle, resp.chunk()).await {
            Err(_) => return Err(ApiError::UpstreamTimeout),
            Ok(Err(_)) => return Err(ApiError::Upstream),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > MAX_ANSWER_BYTES {
                    return Err(ApiError::UpstreamInvalidResponse);
                }
                body.extend_from_slice(&c);
            }
        }
    }
}
