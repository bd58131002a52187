//! Upstream credentials travel inside events sealed with XChaCha20-Poly1305 under the master key.
//! The plaintext never appears in an event, a log line or a `Debug` rendering.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// Why sealing or opening failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The master key text is not 32 bytes of base64.
    #[error("the master key must be 32 bytes, base64-encoded")]
    BadMasterKey,
    /// Wrong key, tampered ciphertext, or a sealed value made for another purpose.
    #[error("sealed secret could not be opened (wrong master key or tampered value)")]
    Open,
    /// The sealed value's encoding is broken.
    #[error("sealed secret is malformed")]
    Malformed,
}

/// The 256-bit key that seals upstream credentials.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Self {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// Parses base64 text (as found in `LLM_ROUTER_MASTER_KEY` or the key file).
    pub fn from_base64(text: &str) -> Result<Self, SecretError> {
        let bytes = B64.decode(text.trim()).map_err(|_| SecretError::BadMasterKey)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| SecretError::BadMasterKey)?;
        Ok(Self(arr))
    }

    /// The key as base64 text, for writing the key file.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Seals `plaintext`; `context` (e.g. the channel id) is bound as associated data so a sealed
    /// value cannot be moved to another record.
    pub fn seal(&self, plaintext: &str, context: &str) -> Sealed {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let mut nonce = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext.as_bytes(), aad: context.as_bytes() })
            .unwrap_or_default();
        Sealed { alg: ALG.to_owned(), nonce: B64.encode(nonce), ct: B64.encode(ct) }
    }

    /// Opens a sealed value made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, sealed: &Sealed, context: &str) -> Result<String, SecretError> {
        if sealed.alg != ALG {
            return Err(SecretError::Malformed);
        }
        let nonce = B64.decode(&sealed.nonce).map_err(|_| SecretError::Malformed)?;
        if nonce.len() != 24 {
            return Err(SecretError::Malformed);
        }
        let ct = B64.decode(&sealed.ct).map_err(|_| SecretError::Malformed)?;
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let pt = cipher
            .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad: context.as_bytes() })
            .map_err(|_| SecretError::Open)?;
        String::from_utf8(pt).map_err(|_| SecretError::Malformed)
    }
}

const ALG: &str = "xchacha20poly1305";

/// A short digest of an upstream key for listings and logs: `sha256:` and the first 12 hex digits
/// of its SHA-256. Tells two keys apart without revealing either (48 bits of a hash of a secret
/// with far more entropy).
pub fn fingerprint(plaintext: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(plaintext.as_bytes());
    format!("sha256:{}", &hex::encode(digest)[..12])
}

/// A sealed secret as it appears in an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// Always `xchacha20poly1305`.
    pub alg: String,
    /// Base64 24-byte nonce.
    pub nonce: String,
    /// Base64 ciphertext with tag.
    pub ct: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_with_its_key_and_context() -> Result<(), SecretError> {
        let k = MasterKey::generate();
        let s = k.seal("sk-upstream-secret", "ch_1");
        assert!(!serde_json::to_string(&s).unwrap_or_default().contains("upstream-secret"));
        assert_eq!(k.open(&s, "ch_1")?, "sk-upstream-secret");
        assert!(k.open(&s, "ch_2").is_err());
        assert!(MasterKey::generate().open(&s, "ch_1").is_err());
        let k2 = MasterKey::from_base64(&k.to_base64())?;
        assert_eq!(k2.open(&s, "ch_1")?, "sk-upstream-secret");
        Ok(())
    }
}
