//! The release manifest (SPEC §3): parsing and validation of the exact signed bytes.
//!
//! Pure: no I/O, no FTP or HTTP types.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::id::{Model, Sha256Digest, Version};

/// Names an IQ reads beside the image; the image may not take them.
pub const MANIFEST_NAME: &str = "manifest.json";
pub const SIGNATURE_NAME: &str = "manifest.json.sig";
/// Largest manifest or signature file accepted anywhere.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub schema: u32,
    pub model: Model,
    pub version: Version,
    pub sequence: u64,
    pub file: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest schema {0} is not supported (expected 1)")]
    Schema(u32),
    #[error(
        "manifest file name {0:?} is not allowed: use 1-64 of [A-Za-z0-9._-], not starting with '.', not a manifest name"
    )]
    FileName(String),
    #[error("manifest expires_at is not after created_at")]
    Expiry,
}

impl Manifest {
    /// Parses and validates the exact bytes of a `manifest.json`.
    ///
    /// # Errors
    /// Malformed JSON, unknown fields, wrong schema, a bad model/version/digest, or an image
    /// file name that could not live in a release directory.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let m: Manifest = serde_json::from_slice(bytes)?;
        if m.schema != 1 {
            return Err(ManifestError::Schema(m.schema));
        }
        if !is_valid_file_name(&m.file) {
            return Err(ManifestError::FileName(m.file));
        }
        if m.expires_at.is_some_and(|e| e <= m.created_at) {
            return Err(ManifestError::Expiry);
        }
        Ok(m)
    }

    /// The bytes `fwdist sign` writes: pretty JSON with a trailing newline.
    ///
    /// # Errors
    /// Only if serialisation fails, which it cannot for this type.
    pub fn to_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }
}

/// A name that can sit in a release directory next to the manifest.
pub fn is_valid_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name != MANIFEST_NAME
        && name != SIGNATURE_NAME
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> String {
        format!(
            r#"{{"schema":1,"model":"iq2","version":"2.4.1","sequence":42,"file":"firmware.bin","size":4194304,
            "sha256":"{}","created_at":"2026-11-24T17:00:00Z","expires_at":"2027-11-24T00:00:00Z","notes":"x"}}"#,
            "a".repeat(64)
        )
    }

    #[test]
    fn parses_the_spec_example() -> Result<(), ManifestError> {
        let m = Manifest::parse(sample().as_bytes())?;
        assert_eq!(m.model.as_str(), "iq2");
        assert_eq!(m.sequence, 42);
        assert!(m.expires_at.is_some());
        let again = Manifest::parse(&m.to_bytes()?)?;
        assert_eq!(again, m);
        Ok(())
    }

    #[test]
    fn refuses_bad_manifests() {
        let s = sample();
        let cases = [
            s.replace("\"schema\":1", "\"schema\":2"),
            s.replace("firmware.bin", "../firmware.bin"),
            s.replace("firmware.bin", "manifest.json"),
            s.replace("firmware.bin", ".hidden"),
            s.replace("\"iq2\"", "\"IQ2\""),
            s.replace("2.4.1", "2.4"),
            s.replace(&"a".repeat(64), &"A".repeat(64)),
            s.replace("\"notes\"", "\"extra\":1,\"notes\""),
            s.replace("2027-11-24", "2025-11-24"),
            s.replace("\"sequence\":42", "\"sequence\":-1"),
            "[]".to_owned(),
            String::new(),
        ];
        for c in cases {
            assert!(Manifest::parse(c.as_bytes()).is_err(), "accepted: {c}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = Manifest::parse(&bytes);
        }
    }
}
