//! The hot path: `/v1` chat completions, completions, embeddings and models, and Anthropic's
//! `/v1/messages` (+ `count_tokens`); key auth from in-memory state folded from `LLMR_CONTROL`;
//! routing to OpenAI-compatible and Anthropic channels; streaming relay; usage capture appended to
//! the log before the client gets the final byte.
//! Never imports `projections`, `workers` or `web`.
//!
//! Module layering (an arrow means "may import"; nothing imports upward):
//!
//! ```text
//! app, routes → handlers → call → state
//! ```
//!
//! The upstream adapters (send, decode, read usage, classify a failure) and `canonical`, the
//! protocol-neutral form translations go through, are the `adapters` crate, below all of these.
//!
//! - `routes` pairs paths with handlers; `app` builds the [`Gateway`] and its state.
//! - `handlers` extract, authenticate, parse (`request`) and route (`routing`), then hand a call
//!   to `call`.
//! - `call` is the pipeline of one call: admit → choose attempts → send → finish (unary, or
//!   relay a stream) → record. `call::record` is its single exit: every outcome appends
//!   `usage.recorded` (when billable) and `request.logged` there, and budgets, rate-limit
//!   settlement and session turns hook in there.
//! - `state` is the in-memory control state folded from `LLMR_CONTROL`.
//! - `codec` writes answers, stream events and errors in each client protocol (what the
//!   adapters decode, a codec encodes; `canonical` is between).
//! - Shared by every layer and importing nothing above `state`: `codec`, `ctx` (the app state, request
//!   id, caller), `protocol` (the client protocols), `error`, `config`, `limits`, `usage`,
//!   `prices`, and what handlers use to prepare a call: `auth`, `request`, `routing`, `tokenizer`.
//!
//! Checked by the `layering` test on the source (its `EXCEPTIONS` list must only shrink; it is
//! empty). `limits` and `request` import each other (`Endpoint`): both are shared modules.
//!
//! Policies a reader would otherwise have to reverse-engineer:
//! - A bad key is a 401 with `type: "authentication_error"`, `code: "invalid_api_key"` (OpenAI
//!   says `invalid_request_error`; see [`ApiError`]). Unknown and forbidden models are the same 404.
//! - Failover to the next channel happens only before anything reached the client. Adapters name
//!   a failure class per attempt (`adapters::failure`); one table (`call::policy`) decides: errors
//!   about our channel (key, permission, quota, unknown deployment), connection errors, 5xx,
//!   429/529 and streams that end before their first event go to the next channel; a first-byte
//!   timeout is not retried (it would multiply the wait) and answers 504. Vendor text about our
//!   channel never reaches the client; vendor text about the request is scrubbed of keys, e-mail
//!   addresses and account ids first.
//! - Once a stream has started, exactly one `usage.recorded` is appended, whatever the ending:
//!   `completed`, `upstream_error` (then one in-band error event, no `[DONE]`), or
//!   `client_disconnected` (the upstream is drained up to `drain_timeout` / `drain_max_bytes`).
//!   Without upstream usage the counts are estimated and marked `estimated`.
//! - Non-stream calls run in their own task: a client that leaves is still billed. If the usage
//!   event cannot be made durable the answer is withheld (503).
//! - Any client protocol reaches any upstream. OpenAI → OpenAI and Anthropic → Anthropic are
//!   pass-throughs (the client's bytes); the other two directions translate through `canonical`.
//!   A field the upstream cannot honour is a 400 `unsupported_parameter` naming it (`logprobs`,
//!   `n > 1`, non-zero penalties, `top_k` to OpenAI); fields dropped because they change nothing
//!   observable are listed in `DROPPED_FIELDS` of each converter; a missing `max_tokens` becomes
//!   4096 for Anthropic, which requires one. JSON mode on Anthropic is a forced tool whose input
//!   comes back as the text (refused together with tools or reasoning).
//! - Billing always reads the *upstream's* usage object: Anthropic's `input_tokens` excludes cache
//!   reads and writes, OpenAI's `prompt_tokens` includes cached tokens; both become disjoint
//!   counts. Anthropic's `message_delta` usage is cumulative and replaces, never adds.
//! - On `/v1/messages` the key may come in `x-api-key` or `Authorization: Bearer`, and every error
//!   (401, 404, 413, 400, upstream failures, mid-stream `event: error`) is in Anthropic's shape.
//! - Serve through [`server::serve`]: it sets `TCP_NODELAY` on accepted sockets, bounds header,
//!   body and idle time and the number of connections, and gives handlers the client address
//!   that the failed-authentication throttle keys on.

mod app;
mod auth;
mod auth_failures;
mod call;
mod codec;
pub mod config;
mod ctx;
pub mod error;
#[cfg(test)]
mod fuzz_tests;
mod handlers;
pub mod health;
#[cfg(test)]
mod layering;
pub mod limits;
pub mod prices;
mod protocol;
pub mod proxy;
mod request;
mod routes;
pub mod routing;
pub mod server;
pub mod state;
mod tokenizer;
mod usage;

pub use adapters::presets;
pub use app::Gateway;
pub use config::{DEFAULT_BODY_LIMIT_BYTES, GatewayConfig};
pub use error::{ApiError, GatewayError};
pub use routes::unknown_route;
