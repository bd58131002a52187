//! Identifiers built at the edge: a tenant id is safe to use as a NATS subject token and a path segment.

use serde::{Deserialize, Serialize};

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// The text is empty, too long, or holds a character outside `[a-z0-9_-]`.
    #[error("invalid tenant name {0:?}: use 1-64 characters of a-z, 0-9, '-' and '_'")]
    Tenant(String),
}

/// A tenant's name: 1-64 characters of `[a-z0-9_-]`, so it can stand in a subject token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(String);

impl TenantId {
    /// Parses and checks a tenant name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok { Ok(Self(s.to_owned())) } else { Err(IdError::Tenant(s.to_owned())) }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0
    }
}

impl std::fmt::Display for TenantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_that_could_break_a_subject_are_refused() {
        for bad in ["", "a.b", "a*", ">", "A", "a b", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(TenantId::parse("acme-01_x").map(|t| t.to_string()), Ok("acme-01_x".into()));
    }
}
