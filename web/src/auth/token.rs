//! Session tokens: compact JWTs signed with HMAC-SHA256 (HS256). A token names its user and
//! when it was issued and expires; whether the user may still act is checked against the live
//! control model on every request, so a token is never trusted on its signature alone.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The longest token accepted (ours are about 200 bytes).
pub const MAX_TOKEN_LEN: usize = 1024;

/// The fixed header `{"alg":"HS256","typ":"JWT"}`, encoded.
const HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expires at, seconds since the epoch.
    pub exp: i64,
    /// Issued at, microseconds (compared with the user's `sessions_not_before_us`).
    pub iat_us: i64,
}

/// The signing key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(<redacted>)")
    }
}

impl Signer {
    /// A signer with `secret` as the HMAC key.
    pub fn new(secret: &[u8]) -> Signer {
        Signer { key: secret.to_vec() }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.key).unwrap_or_else(|_| HmacSha256::new(&Default::default()))
    }

    /// Signs `claims` into a token.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{HEADER}.{payload}");
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{sig}")
    }

    /// The claims of a token this signer made that has not expired at `now_s`; `None` for
    /// anything else (wrong signature, other algorithm, malformed, oversized, expired).
    pub fn verify(&self, token: &str, now_s: i64) -> Option<Claims> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let (signing_input, sig) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        if header != HEADER {
            return None;
        }
        let sig = B64.decode(sig).ok()?;
        let mut mac = self.mac();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&sig).ok()?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (claims.exp > now_s).then_some(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims { sub: "usr_1".into(), iat: 100, exp, iat_us: 100_000_000 }
    }

    #[test]
    fn a_token_verifies_with_its_key_until_it_expires() {
        let s = Signer::new(b"secret");
        let t = s.sign(&claims(200));
        assert_eq!(s.verify(&t, 150), Some(claims(200)));
        assert_eq!(s.verify(&t, 200), None, "expired");
        assert_eq!(Signer::new(b"other").verify(&t, 150), None);
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let s = Signer::new(b"secret");
        let t = s.sign(&claims(200));
        let (head, rest) = t.split_once('.').unwrap_or_default();
        let (_, sig) = rest.split_once('.').unwrap_or_default();
        let forged = format!("{head}.{}.{sig}", B64.encode(br#"{"sub":"usr_owner","iat":100,"exp":999,"iat_us":1}"#));
        assert_eq!(s.verify(&forged, 150), None);
        let none_alg = format!("{}.{}.", B64.encode(br#"{"alg":"none"}"#), rest.split_once('.').unwrap_or_default().0);
        assert_eq!(s.verify(&none_alg, 150), None);
        assert_eq!(s.verify("x", 150), None);
        assert_eq!(s.verify(&"a.b.c".repeat(500), 150), None);
        assert_eq!(B64.decode(HEADER).ok(), Some(br#"{"alg":"HS256","typ":"JWT"}"#.to_vec()));
    }
}
