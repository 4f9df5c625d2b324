//! Domain types of the server: the release identifiers (shared with the IQ through
//! `fwdist-release`), admin roles, download outcomes, where passive data connections go and
//! the database's time unit.
//!
//! Depends on nothing else in the crate and knows nothing of FTP, HTTP, SQL or the CLI.

pub use fwdist_release::id::{DeviceId, InvalidInput, Model, Sha256Digest, Version};
use serde::{Deserialize, Serialize};
use std::ops::RangeInclusive;

fn invalid(msg: impl Into<String>) -> InvalidInput {
    InvalidInput(msg.into())
}

/// Where passive data connections go (`ftps.passive_ports`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassiveMode {
    /// Ports of their own, `FIRST-LAST`.
    Range(RangeInclusive<u16>),
    /// `"same"`: the control port. One outstanding offer per client address at a time.
    Same,
}

impl PassiveMode {
    /// The spelling of `ftps.passive_ports` for one port.
    pub const SAME: &'static str = "same";

    pub fn range(&self) -> Option<&RangeInclusive<u16>> {
        match self {
            PassiveMode::Range(r) => Some(r),
            PassiveMode::Same => None,
        }
    }
}

/// An admin API role (SPEC §6). `viewer` reads, `publisher` also uploads releases, `admin`
/// does everything; `reporter` (the KS backend's token) can only post install reports, and
/// reads nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Publisher,
    Admin,
    Reporter,
}

impl Role {
    pub const NAMES: [&'static str; 4] = ["viewer", "publisher", "admin", "reporter"];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
            Role::Reporter => "reporter",
        }
    }

    /// Whether a caller holding `self` may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        matches!(
            (self, needed),
            (Role::Admin, _)
                | (Role::Publisher, Role::Publisher | Role::Viewer)
                | (Role::Viewer, Role::Viewer)
                | (Role::Reporter, Role::Reporter)
        )
    }

    /// # Errors
    /// For anything but `viewer`, `publisher`, `admin`, `reporter`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "publisher" => Ok(Role::Publisher),
            "admin" => Ok(Role::Admin),
            "reporter" => Ok(Role::Reporter),
            _ => Err(invalid(format!(
                "invalid role {s:?}: expected viewer, publisher, admin or reporter"
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

/// What an install report says (SPEC §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportOutcome {
    Installed,
    Failed,
}

impl ReportOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportOutcome::Installed => "installed",
            ReportOutcome::Failed => "failed",
        }
    }

    /// # Errors
    /// For anything but `installed` and `failed`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "installed" => Ok(Self::Installed),
            "failed" => Ok(Self::Failed),
            _ => Err(invalid(format!(
                "invalid outcome {s:?}: expected installed or failed"
            ))),
        }
    }
}

/// A selected device's state in a rollout (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// No byte of the image fetched yet.
    Pending,
    /// Image bytes fetched, no complete download.
    Downloading,
    /// A complete image download.
    Downloaded,
    /// Its latest report for this version says installed.
    Installed,
    /// Its latest report for this version says failed.
    Failed,
}

impl MemberState {
    pub const ALL: [MemberState; 5] = [
        MemberState::Pending,
        MemberState::Downloading,
        MemberState::Downloaded,
        MemberState::Installed,
        MemberState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Pending => "pending",
            MemberState::Downloading => "downloading",
            MemberState::Downloaded => "downloaded",
            MemberState::Installed => "installed",
            MemberState::Failed => "failed",
        }
    }

    /// # Errors
    /// For anything but the five state names.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or_else(|| {
            invalid(format!(
                "invalid state {s:?}: expected pending, downloading, downloaded, installed or failed"
            ))
        })
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
    fn roles_parse_and_allow_exactly_their_rights() {
        use Role::*;
        for r in [Viewer, Publisher, Admin, Reporter] {
            assert_eq!(Role::parse(r.as_str()), Ok(r));
        }
        assert!(Role::parse("root").is_err());
        let allowed = |r: Role| -> Vec<Role> {
            [Viewer, Publisher, Admin, Reporter]
                .into_iter()
                .filter(|n| r.allows(*n))
                .collect()
        };
        assert_eq!(allowed(Viewer), [Viewer]);
        assert_eq!(allowed(Publisher), [Viewer, Publisher]);
        assert_eq!(allowed(Admin), [Viewer, Publisher, Admin, Reporter]);
        assert_eq!(allowed(Reporter), [Reporter], "a reporter reads nothing");
    }

    #[test]
    fn times_format_as_rfc3339_utc() {
        assert_eq!(format_ms(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
    }
}
