//! The hot path: `/v1` chat completions, completions, embeddings and models; bearer-key auth from
//! in-memory state folded from `LLMR_CONTROL`; routing to OpenAI-compatible upstream channels;
//! streaming relay; usage capture appended to the log before the client gets the final byte.
//! Never imports `projections`, `workers` or `web`.
//!
//! Policies a reader would otherwise have to reverse-engineer:
//! - A bad key is a 401 with `type: "authentication_error"`, `code: "invalid_api_key"` (OpenAI
//!   says `invalid_request_error`; see [`ApiError`]). Unknown and forbidden models are the same 404.
//! - Failover to the next channel happens only before anything reached the client, on connection
//!   errors, upstream 5xx/429/401/403/408, and streams that end before their first event. A
//!   first-byte timeout is not retried (it would multiply the wait); it answers 504.
//! - Once a stream has started, exactly one `usage.recorded` is appended, whatever the ending:
//!   `completed`, `upstream_error` (then one in-band error event, no `[DONE]`), or
//!   `client_disconnected` (the upstream is drained up to `drain_timeout` / `drain_max_bytes`).
//!   Without upstream usage the counts are estimated and marked `estimated`.
//! - Non-stream calls run in their own task: a client that leaves is still billed. If the usage
//!   event cannot be made durable the answer is withheld (503).
//! - Accepted sockets should have `TCP_NODELAY`; the binary sets it when it binds
//!   (`axum::serve::ListenerExt::tap_io`), as the tests do.

mod app;
mod auth;
mod call;
pub mod config;
pub mod error;
mod handlers;
pub mod prices;
mod providers;
mod request;
mod routes;
mod routing;
pub mod state;
mod tokenizer;
mod usage;

pub use app::Gateway;
pub use config::{DEFAULT_BODY_LIMIT_BYTES, GatewayConfig};
pub use error::{ApiError, GatewayError};
pub use providers::openai::presets;
pub use routes::unknown_route;
