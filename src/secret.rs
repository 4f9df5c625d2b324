//! Server-generated secrets (device secrets, API tokens): creation, hashing, comparison.
//!
//! Secrets are 256 random bits, so a single SHA-256 is the right hash: there is nothing to
//! brute-force, and a slow password hash would cap logins per second. Only the hash is
//! stored; comparison is constant-time. `Secret` never prints its value through `Debug`.

use std::fmt;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret as typed by a client or just generated. Redacted in `Debug`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// A new random secret: `prefix` + 43 characters of URL-safe base64 (256 bits).
    ///
    /// # Errors
    /// When the operating system has no randomness to give.
    pub fn generate(prefix: &str) -> Result<Self, getrandom::Error> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)?;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        Ok(Secret(format!("{prefix}{body}")))
    }

    pub fn from_client(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The value, for showing once to its owner. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0.as_bytes()).into())
    }
}

/// Read from configuration (`store.secret_access_key`). There is deliberately no
/// `Serialize`: a secret is never written back out.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The stored form of a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// Constant-time check of a candidate secret against this hash.
    pub fn matches(&self, candidate: &Secret) -> bool {
        self.0.ct_eq(&candidate.hash().0).into()
    }

    /// Bytes as stored in the database; `None` for a malformed column.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(b).ok().map(SecretHash)
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_long() -> Result<(), getrandom::Error> {
        let a = Secret::generate("fwd_")?;
        let b = Secret::generate("fwd_")?;
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.expose().len(), 4 + 43);
        assert!(a.expose().starts_with("fwd_"));
        Ok(())
    }

    #[test]
    fn hash_matches_only_its_secret() -> Result<(), getrandom::Error> {
        let a = Secret::generate("")?;
        let h = a.hash();
        assert!(h.matches(&Secret::from_client(a.expose())));
        assert!(!h.matches(&Secret::from_client(format!("{}x", a.expose()))));
        assert!(!h.matches(&Secret::from_client("")));
        Ok(())
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::from_client("hunter2-very-secret");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
