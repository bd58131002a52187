//! Upstream providers, one folder each. Only the OpenAI-compatible adapter exists so far (every
//! channel speaks it); when a second adapter arrives, calls dispatch through one enum with an
//! exhaustive `match` here.

pub mod openai;
