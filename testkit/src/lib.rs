//! Test support, used only as a dev-dependency: real services started for a test, and fakes for
//! what the project does not own (LLM vendors).

pub mod fake_anthropic;
pub mod fake_gemini;
pub mod fake_openai;
pub mod nats_server;
pub mod postgres;
pub mod proxy;
pub mod tls;
