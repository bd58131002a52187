//! The client-protocol codecs: what the gateway writes to a client in the protocol it speaks
//! (OpenAI, Anthropic, Gemini): a translated answer, stream events from deltas, and in-band and
//! HTTP error payloads. The other half of a translated call, talking to the vendor and decoding
//! its answers, is the upstream adapters' (`adapters`); the two meet at `adapters::canonical`.
//! Pass-through calls (the client and the channel speak the same protocol) use no codec.

pub mod anthropic;
pub mod gemini;
pub mod openai;
