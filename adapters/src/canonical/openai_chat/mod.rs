//! OpenAI chat completions as a *translated* protocol: typed requests, conversions to and from
//! the canonical types, and stream chunk decoding/encoding. Used only when the other side of a
//! call is not OpenAI; the OpenAI → OpenAI path never parses this far.

pub mod convert;
pub mod stream;
pub mod wire;
