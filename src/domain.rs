//! Domain types of the server: the release identifiers (shared with the IQ through
//! `fwdist-release`), admin roles, download outcomes and the database's time unit.
//!
//! Depends on nothing else in the crate and knows nothing of FTP, HTTP, SQL or the CLI.

pub use fwdist_release::id::{DeviceId, InvalidInput, Model, Sha256Digest, Version};
use serde::{Deserialize, Serialize};

fn invalid(msg: impl Into<String>) -> InvalidInput {
    InvalidInput(msg.into())
}

/// An admin API role. Each role includes the rights of the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Publisher,
    Admin,
}

impl Role {
    pub const NAMES: [&'static str; 3] = ["viewer", "publisher", "admin"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
        }
    }

    /// # Errors
    /// For anything but `viewer`, `publisher`, `admin`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "publisher" => Ok(Role::Publisher),
            "admin" => Ok(Role::Admin),
            _ => Err(invalid(format!(
                "invalid role {s:?}: expected viewer, publisher or admin"
            ))),
        }
    }
}

/// How a download ended (SPEC §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Complete,
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::Aborted => "aborted",
        }
    }
}

/// Whether a rollout is running (SPEC §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RolloutState {
    Active,
    Paused,
    Aborted,
}

impl RolloutState {
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Active => "active",
            RolloutState::Paused => "paused",
            RolloutState::Aborted => "aborted",
        }
    }

    /// # Errors
    /// For anything but `active`, `paused`, `aborted`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "active" => Ok(Self::Active),
            "paused" => Ok(Self::Paused),
            "aborted" => Ok(Self::Aborted),
            _ => Err(InvalidInput(format!(
                "invalid state {s:?}: expected active, paused or aborted"
            ))),
        }
    }
}

/// Now, as unix milliseconds (the database's time unit).
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    // i128 milliseconds since 1970 fit i64 for the next 292 million years.
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 UTC (`2026-11-24T17:00:00.123Z`).
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_and_order() {
        for r in [Role::Viewer, Role::Publisher, Role::Admin] {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").is_err());
        assert!(Role::Viewer < Role::Publisher && Role::Publisher < Role::Admin);
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_ms(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }
}
