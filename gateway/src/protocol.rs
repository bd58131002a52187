//! The protocols clients speak. A leaf: the error shapes ([`crate::error`]), request parsing and
//! the call pipeline all import it, and it imports none of them.

/// The protocol a client speaks, which decides the shape of every answer and error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OpenAI's.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Google's Gemini API.
    Gemini,
}
