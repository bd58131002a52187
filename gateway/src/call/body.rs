//! The one reader of an upstream's non-stream answer, for every route: the body is read whole,
//! within the idle timeout between chunks, before the call's duration cap (an upstream dripping
//! one byte at a time cannot hold the call forever) and under one size cap
//! (`[upstream] max_answer_bytes`). Error bodies (non-2xx) are read by `adapters::read_error`
//! instead, which keeps only their first 64 KiB.

use crate::config::GatewayConfig;
use crate::error::ApiError;

/// What is reserved up front when the upstream announces a length: at most 1 MiB, so that a
/// lying `Content-Length` cannot make us allocate the cap.
const MAX_PREALLOC: u64 = 1 << 20;

/// Reads a 2xx answer whole. A pause longer than the idle timeout between two chunks, or an
/// answer not complete by the maximum duration counted from `arrived`, is
/// [`ApiError::UpstreamTimeout`]; a broken connection [`ApiError::Upstream`]; a body over
/// `max_answer_bytes` [`ApiError::UpstreamInvalidResponse`].
pub async fn read_answer(
    resp: &mut reqwest::Response,
    cfg: &GatewayConfig,
    arrived: std::time::Instant,
) -> Result<Vec<u8>, ApiError> {
    let ends_at = tokio::time::Instant::from_std(arrived) + cfg.max_stream_duration;
    let reserve = resp.content_length().map_or(4096, |n| n.min(MAX_PREALLOC));
    let mut body = Vec::with_capacity(usize::try_from(reserve).unwrap_or(4096));
    loop {
        let deadline = (tokio::time::Instant::now() + cfg.idle_timeout).min(ends_at);
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Err(_) => return Err(ApiError::UpstreamTimeout),
            Ok(Err(_)) => return Err(ApiError::Upstream),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(c))) => {
                if body.len() + c.len() > cfg.max_answer_bytes {
                    return Err(ApiError::UpstreamInvalidResponse);
                }
                body.extend_from_slice(&c);
            }
        }
    }
}
