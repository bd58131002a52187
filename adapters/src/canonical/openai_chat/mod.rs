//! OpenAI chat completions as a *translated* protocol: typed requests, conversions to and from
//! the canonical types, and stream chunk decoding (the answer's encoding for an OpenAI client is the
//! gateway's codec). Used only when the other side of a
//! call is not OpenAI; the OpenAI → OpenAI path never parses this far.

pub mod convert;
pub mod stream;
pub mod wire;
