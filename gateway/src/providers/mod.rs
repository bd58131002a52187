//! Upstream providers, one folder each, dispatched through [`Provider`] with an exhaustive
//! `match`. Every provider name other than `anthropic` is served by the OpenAI-compatible adapter
//! (OpenAI itself and the vendors that speak its protocol).

pub mod anthropic;
pub mod openai;

pub use openai::AttemptError;

/// The adapter a channel uses, from its `provider` string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI and every OpenAI-compatible vendor.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

impl Provider {
    /// The adapter for a channel's `provider` name.
    pub fn of(name: &str) -> Provider {
        match name {
            "anthropic" => Provider::Anthropic,
            _ => Provider::OpenAi,
        }
    }
}
