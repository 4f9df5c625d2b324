//! The identifiers a release and an IQ are named by: device ids (MACs), models, versions,
//! SHA-256 digests.
//!
//! Everything here is parsed once at the edge (`parse`) and is valid afterwards.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value given by a user was refused. The message is safe to show to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

fn invalid(msg: impl Into<String>) -> InvalidInput {
    InvalidInput(msg.into())
}

/// A device id: the IQ's MAC address, canonical form `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId([u8; 6]);

impl DeviceId {
    pub const fn from_bytes(b: [u8; 6]) -> Self {
        DeviceId(b)
    }
}

impl DeviceId {
    /// Accepts `AA:BB:CC:DD:EE:FF`, `aa-bb-cc-dd-ee-ff` and `aabbccddeeff` (any letter case,
    /// one separator style throughout).
    ///
    /// # Errors
    /// Anything else, with a message naming the accepted forms.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let err = || {
            invalid(format!(
                "invalid device id {s:?}: expected a MAC address like aa:bb:cc:dd:ee:ff"
            ))
        };
        let hex: String = match s.len() {
            12 => s.to_owned(),
            17 => {
                let sep = s.as_bytes()[2];
                if sep != b':' && sep != b'-' {
                    return Err(err());
                }
                let mut out = String::with_capacity(12);
                for (i, part) in s.split(sep as char).enumerate() {
                    if i > 5 || part.len() != 2 {
                        return Err(err());
                    }
                    out.push_str(part);
                }
                out
            }
            _ => return Err(err()),
        };
        let mut bytes = [0u8; 6];
        hex::decode_to_slice(&hex, &mut bytes).map_err(|_| err())?;
        Ok(DeviceId(bytes))
    }

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl Serialize for DeviceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A device model such as `iq2`: `[a-z0-9][a-z0-9-]{0,31}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Model(String);

impl Model {
    /// # Errors
    /// When `s` does not match `[a-z0-9][a-z0-9-]{0,31}`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 32
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
        if ok {
            Ok(Model(s.to_owned()))
        } else {
            Err(invalid(format!(
                "invalid model {s:?}: expected [a-z0-9][a-z0-9-]{{0,31}}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Model {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Model::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A firmware version: a semantic version, kept in the exact spelling it was published with
/// (it names a directory an IQ reads).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    /// # Errors
    /// When `s` is not a semantic version (`1.2.3`, `1.2.3-rc.1`, `1.2.3+build.5`) or is
    /// longer than 64 bytes.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        if s.len() > 64 || semver::Version::parse(s).is_err() {
            return Err(invalid(format!(
                "invalid version {s:?}: expected a semantic version like 2.4.1"
            )));
        }
        Ok(Version(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Version::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A SHA-256 digest, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// # Errors
    /// Unless `s` is exactly 64 lowercase hex digits.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let err = || invalid(format!("invalid sha256 {s:?}: expected 64 lowercase hex digits"));
        if s.len() != 64 || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(err());
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| err())?;
        Ok(Sha256Digest(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Sha256Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mac_forms_canonicalise() {
        for s in [
            "AA:BB:CC:DD:EE:0F",
            "aa-bb-cc-dd-ee-0f",
            "aabbccddee0f",
            "AaBbCcDdEe0F",
        ] {
            assert_eq!(
                DeviceId::parse(s).map(|d| d.to_string()),
                Ok("aa:bb:cc:dd:ee:0f".to_owned()),
                "{s}"
            );
        }
    }

    #[test]
    fn bad_macs_are_refused() {
        for s in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aabbccddeefg",
            "aa::bb:cc:dd:ee:f",
            "aa.bb.cc.dd.ee.ff",
            "+a:bb:cc:dd:ee:ff",
            "ääbbccddee",
        ] {
            assert!(DeviceId::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn models_and_versions() {
        assert!(Model::parse("iq2").is_ok());
        assert!(Model::parse("iq-2-pro").is_ok());
        assert!(Model::parse("-iq").is_err());
        assert!(Model::parse("IQ2").is_err());
        assert!(Model::parse(&"a".repeat(33)).is_err());
        assert!(Version::parse("2.4.1").is_ok());
        assert!(Version::parse("2.4.1-rc.1+b5").is_ok());
        assert!(Version::parse("2.4").is_err());
        assert!(Version::parse("../1.0.0").is_err());
    }

    #[test]
    fn digest_must_be_lowercase() {
        let lower = "ab".repeat(32);
        assert!(Sha256Digest::parse(&lower).is_ok());
        assert!(Sha256Digest::parse(&lower.to_uppercase()).is_err());
        assert!(Sha256Digest::parse(&lower[..62]).is_err());
    }

    proptest! {
        #[test]
        fn any_six_bytes_round_trip_in_every_form(b in proptest::array::uniform6(any::<u8>())) {
            let id = DeviceId(b);
            let canon = id.to_string();
            prop_assert_eq!(DeviceId::parse(&canon), Ok(id));
            prop_assert_eq!(DeviceId::parse(&canon.to_uppercase().replace(':', "-")), Ok(id));
            prop_assert_eq!(DeviceId::parse(&canon.replace(':', "")), Ok(id));
        }

        #[test]
        fn mac_parser_never_panics(s in "\\PC{0,20}") {
            let _ = DeviceId::parse(&s);
        }
    }
}
