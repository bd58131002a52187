//! Admin passwords: argon2id hashes in PHC form (the salt and parameters travel in the string),
//! random passwords for new users, and a dummy hash so a login for an unknown email costs the
//! same work as one for a known email. CPU-heavy: callers run these off the async runtime.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::Rng as _;

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted: argon2 takes any length, but a client must not choose the cost.
pub const MAX_LEN: usize = 256;

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password must be {MIN_LEN} to {MAX_LEN} characters long")]
    Length,
}

/// The hasher: argon2id v1.3 with the OWASP-recommended 19 MiB, 2 passes, 1 lane.
fn argon2() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks a password's length (in characters).
pub fn check(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) { Ok(()) } else { Err(PasswordError::Length) }
}

/// Hashes a password (after [`check`]) to a PHC string.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|_| PasswordError::Length)
}

/// Whether `password` matches `phc`. A malformed hash matches nothing. A password over
/// [`MAX_LEN`] is checked against the dummy hash instead, so it costs the same and fails.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.chars().count() > MAX_LEN {
        let _ = verify_inner("", dummy_hash());
        return false;
    }
    verify_inner(password, phc)
}

fn verify_inner(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password nobody knows, made once: an unknown email is checked against it
/// so that its failure takes as long as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash(&generate()).unwrap_or_default())
}

/// A random password: 24 characters of letters and digits (about 143 bits).
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..24).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_hash_only() -> Result<(), PasswordError> {
        let h = hash("correct horse battery")?;
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse batterY", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert!(!verify("correct horse battery", dummy_hash()));
        assert_ne!(hash("correct horse battery")?, h, "a fresh salt each time");
        Ok(())
    }

    #[test]
    fn short_and_oversized_passwords_are_refused() {
        assert_eq!(hash("short"), Err(PasswordError::Length));
        assert_eq!(hash(&"x".repeat(MAX_LEN + 1)), Err(PasswordError::Length));
        assert!(!verify(&"x".repeat(10_000), dummy_hash()));
        let p = generate();
        assert_eq!(p.len(), 24);
        assert!(check(&p).is_ok());
    }
}
