//! Release signing keys and manifest signatures (SPEC §3): ed25519, keys as standard PEM
//! (PKCS#8 private, SPKI public), `keyid` = hex SHA-256 of the SPKI DER public key.
//!
//! Pure apart from reading the trusted-key directory. No FTP or HTTP types.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::MAX_MANIFEST_BYTES;

/// The key types of this module's API.
pub use ed25519_dalek::{SigningKey as Ed25519SigningKey, VerifyingKey as Ed25519VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("not an ed25519 key in PEM form: {0}")]
    Key(String),
    #[error("signature file is not valid: {0}")]
    Envelope(String),
    #[error("no signature by a trusted key (keyids: {0})")]
    Untrusted(String),
    #[error("signature by key {0} does not verify")]
    BadSignature(String),
    #[error("no trusted release keys are configured")]
    NoTrustedKeys,
    #[error("cannot read trusted keys: {0}")]
    Io(#[from] std::io::Error),
}

/// The `manifest.json.sig` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    pub signatures: Vec<SignatureEntry>,
}

impl SignatureEnvelope {
    /// Parses a `.sig` document (at most [`MAX_MANIFEST_BYTES`]). The signatures in it are
    /// only decoded by [`TrustedKeys::verify`], for the keys it trusts.
    ///
    /// # Errors
    /// Too large, or not a JSON object of exactly `signatures: [{keyid, sig}, …]`.
    pub fn parse(bytes: &[u8]) -> Result<Self, SigningError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(SigningError::Envelope("too large".into()));
        }
        serde_json::from_slice(bytes).map_err(|e| SigningError::Envelope(e.to_string()))
    }

    /// The bytes `fwdist sign` writes: pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// Only if serialisation fails, which it cannot for this type.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = serde_json::to_vec_pretty(self)?;
        out.push(b'\n');
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEntry {
    pub keyid: String,
    pub sig: String,
}

/// A fresh ed25519 key pair.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn generate_key() -> Result<SigningKey, getrandom::Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed)?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `(private PKCS#8 PEM, public SPKI PEM)`.
///
/// # Errors
/// Only if encoding fails, which it does not for a valid key.
pub fn encode_key_pair(key: &SigningKey) -> Result<(String, String), SigningError> {
    // PKCS#8 v1 (RFC 8410, no embedded public key): the form OpenSSL writes and reads. The
    // v2 form ed25519-dalek writes by default is refused by OpenSSL 3.0.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SigningError::Key(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SigningError::Key(e.to_string()))?;
    Ok((private.to_string(), public))
}

/// # Errors
/// When `pem` is not a PKCS#8 ed25519 private key.
pub fn decode_private_key(pem: &str) -> Result<SigningKey, SigningError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| SigningError::Key(e.to_string()))
}

/// # Errors
/// When `pem` is not an SPKI ed25519 public key.
pub fn decode_public_key(pem: &str) -> Result<VerifyingKey, SigningError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| SigningError::Key(e.to_string()))
}

/// Hex SHA-256 of the key's SPKI DER encoding.
pub fn key_id(key: &VerifyingKey) -> String {
    // Encoding a valid ed25519 key into SPKI DER cannot fail; the fallback keeps this total.
    let der = key
        .to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .unwrap_or_default();
    hex::encode(Sha256::digest(der))
}

/// Signs `manifest` (its exact bytes) and returns the `.sig` document bytes.
///
/// # Errors
/// Only if serialisation fails, which it cannot.
pub fn sign_manifest(key: &SigningKey, manifest: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let sig: Signature = key.sign(manifest);
    SignatureEnvelope {
        signatures: vec![SignatureEntry {
            keyid: key_id(&key.verifying_key()),
            sig: base64::engine::general_purpose::STANDARD.encode(sig.to_bytes()),
        }],
    }
    .to_bytes()
}

/// The release keys a server (or an IQ) trusts, by keyid.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        TrustedKeys {
            keys: keys.into_iter().map(|k| (key_id(&k), k)).collect(),
        }
    }

    /// Loads every `*.pub` in `dir`; a missing directory is an empty set.
    ///
    /// # Errors
    /// An unreadable directory or a `.pub` file that is not an ed25519 SPKI PEM key (named).
    pub fn load_dir(dir: &Path) -> Result<Self, SigningError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(e.into()),
        };
        let mut keys = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "pub") {
                let pem = std::fs::read_to_string(&path)?;
                let key = decode_public_key(&pem)
                    .map_err(|e| SigningError::Key(format!("{}: {e}", path.display())))?;
                keys.push(key);
            }
        }
        Ok(Self::from_keys(keys))
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a `.sig` document against the exact manifest bytes. Succeeds with the keyid that
    /// verified. Signatures by unknown keys are ignored (key rotation); a signature by a trusted
    /// key that does not verify fails the whole check.
    ///
    /// # Errors
    /// Malformed envelope, no trusted signature, or a trusted signature that fails.
    pub fn verify(&self, envelope: &[u8], manifest: &[u8]) -> Result<String, SigningError> {
        if self.keys.is_empty() {
            return Err(SigningError::NoTrustedKeys);
        }
        let env = SignatureEnvelope::parse(envelope)?;
        let mut verified = None;
        for entry in &env.signatures {
            let Some(key) = self.keys.get(&entry.keyid) else {
                continue;
            };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(&entry.sig)
                .map_err(|e| SigningError::Envelope(format!("sig is not base64: {e}")))?;
            let sig = Signature::from_slice(&raw)
                .map_err(|_| SigningError::Envelope("sig is not 64 bytes".into()))?;
            key.verify_strict(manifest, &sig)
                .map_err(|_| SigningError::BadSignature(entry.keyid.clone()))?;
            verified = Some(entry.keyid.clone());
        }
        verified.ok_or_else(|| {
            let ids: Vec<&str> = env.signatures.iter().map(|s| s.keyid.as_str()).collect();
            SigningError::Untrusted(ids.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn pem_round_trip_and_keyid() -> R {
        let k = generate_key()?;
        let (private, public) = encode_key_pair(&k)?;
        // (The marker is split so no tracked file looks like it holds a private key.)
        assert!(private.starts_with(concat!("-----BEGIN ", "PRIVATE KEY-----")));
        // RFC 8410 v1 DER: a fixed 16-byte prefix and the 32-byte seed, nothing else.
        let body: String = private.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(body)?;
        assert_eq!(hex::encode(&der[..16]), "302e020100300506032b657004220420");
        assert_eq!(&der[16..], &k.to_bytes()[..]);
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(decode_private_key(&private)?.to_bytes(), k.to_bytes());
        let vk = decode_public_key(&public)?;
        assert_eq!(vk, k.verifying_key());
        // SPKI DER for ed25519 is a fixed 12-byte prefix followed by the 32-byte key.
        let mut der = hex::decode("302a300506032b6570032100")?;
        der.extend_from_slice(vk.as_bytes());
        assert_eq!(key_id(&vk), hex::encode(Sha256::digest(&der)));
        Ok(())
    }

    #[test]
    fn verify_accepts_trusted_and_refuses_the_rest() -> R {
        let k = generate_key()?;
        let other = generate_key()?;
        let manifest = b"{\"x\":1}\n";
        let sig = sign_manifest(&k, manifest)?;
        let trusted = TrustedKeys::from_keys([k.verifying_key()]);
        assert_eq!(trusted.verify(&sig, manifest)?, key_id(&k.verifying_key()));
        assert!(matches!(
            trusted.verify(&sig, b"{\"x\":2}\n"),
            Err(SigningError::BadSignature(_))
        ));
        let foreign = TrustedKeys::from_keys([other.verifying_key()]);
        assert!(matches!(
            foreign.verify(&sig, manifest),
            Err(SigningError::Untrusted(_))
        ));
        assert!(matches!(
            TrustedKeys::default().verify(&sig, manifest),
            Err(SigningError::NoTrustedKeys)
        ));
        assert!(matches!(
            trusted.verify(b"{}", manifest),
            Err(SigningError::Envelope(_))
        ));
        Ok(())
    }

    #[test]
    fn rotation_ignores_unknown_signers() -> R {
        let old = generate_key()?;
        let new = generate_key()?;
        let manifest = b"m";
        let mut env: SignatureEnvelope = serde_json::from_slice(&sign_manifest(&new, manifest)?)?;
        let old_env: SignatureEnvelope = serde_json::from_slice(&sign_manifest(&old, manifest)?)?;
        env.signatures.extend(old_env.signatures);
        let bytes = serde_json::to_vec(&env)?;
        assert!(
            TrustedKeys::from_keys([old.verifying_key()])
                .verify(&bytes, manifest)
                .is_ok()
        );
        Ok(())
    }
}
