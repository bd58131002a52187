//! Virtual API keys: generated once, stored only as a SHA-256 hash plus a display prefix.

use rand::Rng;
use sha2::{Digest, Sha256};

/// Length of the random part of a key, in base62 characters (about 238 bits).
const RANDOM_CHARS: usize = 40;
/// Characters of a key shown in listings and logs: `sk-` plus seven random characters.
pub const DISPLAY_PREFIX_LEN: usize = 10;

/// A freshly generated key; the plaintext exists only in this value and is shown once.
pub struct NewKey {
    /// The key itself (`sk-…`).
    pub plaintext: String,
    /// Hex SHA-256 of the plaintext.
    pub hash: String,
    /// The first characters, for display.
    pub prefix: String,
}

/// Generates a random virtual key.
pub fn generate() -> NewKey {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    let random: String = (0..RANDOM_CHARS).map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())])).collect();
    let plaintext = format!("sk-{random}");
    NewKey { hash: hash(&plaintext), prefix: display_prefix(&plaintext), plaintext }
}

/// Hex SHA-256 of a presented key.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The display prefix of a key (safe to log).
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// 32 random bytes as unpadded URL-safe base64: a secret for signing (the session secret).
pub fn random_token() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_hash_to_what_lookup_computes() {
        let k = generate();
        assert!(k.plaintext.starts_with("sk-"));
        assert_eq!(k.plaintext.len(), 3 + RANDOM_CHARS);
        assert_eq!(hash(&k.plaintext), k.hash);
        assert!(k.plaintext.starts_with(&k.prefix));
        assert_ne!(generate().plaintext, k.plaintext);
    }
}
