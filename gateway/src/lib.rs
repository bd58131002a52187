//! The hot path: `/v1` chat completions, completions, embeddings and models; bearer-key auth from
//! in-memory state folded from `LLMR_CONTROL`; routing to OpenAI-compatible upstream channels;
//! streaming relay; usage capture appended to the log before the client gets the final byte.
//! Never imports `projections`, `workers` or `web`.

mod app;
mod auth;
mod call;
pub mod config;
pub mod error;
mod handlers;
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
