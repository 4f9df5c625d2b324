//! Targeting: what a device should fetch now (SPEC §6, §9). A pin that holds (not expired,
//! its release still served) wins; otherwise the newest active rollout of its model that
//! selects it and whose release is still served. The one place that decides it: the FTPS
//! tree, the API's device view and rollout status all ask this module.
//!
//! `policy` is the pure part (stable buckets, percent, explicit lists, newest wins); this
//! file reads the candidates from the database and applies the policy.

pub mod policy;

use crate::db::pins::PinRow;
use crate::db::releases::ReleaseRow;
use crate::db::{Db, DbResult};
use crate::domain::{DeviceId, Model, RolloutState, Version, now_ms};
use policy::{Rule, choose_target};

/// What a device should fetch now, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub version: Version,
    pub source: TargetSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSource {
    /// This rollout selects the device.
    Rollout(i64),
    /// Its pin holds.
    Pin,
}

/// Whether a pin decides the target at `now` (unix ms).
pub fn pin_holds(pin: &PinRow, now: i64) -> bool {
    holds(pin.expires_at, pin.release_yanked, now)
}

/// A pin holds until it expires (exclusive) and while its release is served.
fn holds(expires_at: Option<i64>, release_yanked: bool, now: i64) -> bool {
    !release_yanked && expires_at.is_none_or(|t| t > now)
}

/// What a device may read (SPEC §4): every release of its model that is still served, by
/// sequence, and which of them it should fetch now.
#[derive(Debug, Clone)]
pub struct DeviceReleases {
    pub releases: Vec<ReleaseRow>,
    pub target: Option<Version>,
}

/// What a device should fetch now.
#[derive(Debug, Clone)]
pub struct Targeting {
    db: Db,
}

impl Targeting {
    pub fn new(db: Db) -> Self {
        Targeting { db }
    }

    /// The releases `device` may read, and its target among them.
    ///
    /// # Errors
    /// Database failure.
    pub async fn releases_for(&self, device: &DeviceId, model: &Model) -> DbResult<DeviceReleases> {
        // A yanked release is never served, to any device.
        let releases = self.db.unyanked_releases(model).await?;
        let target = self.target_of(device, model).await?.map(|t| t.version);
        Ok(DeviceReleases { releases, target })
    }

    /// The target of `device` (of `model`): its pin if one holds, else the rollout that
    /// selects it, if any.
    ///
    /// # Errors
    /// Database failure.
    pub async fn target_of(&self, device: &DeviceId, model: &Model) -> DbResult<Option<Target>> {
        let now = now_ms();
        // One query for the pin and the rollouts: this runs for every file an IQ opens.
        let found = self
            .db
            .target_candidates(model, device, RolloutState::Active)
            .await?;
        if let Some(pin) = found.pin
            && holds(pin.expires_at, pin.release_yanked, now)
        {
            return Ok(Some(Target {
                version: pin.version,
                source: TargetSource::Pin,
            }));
        }
        // Only active rollouts that have started target; a yanked release is never served
        // (SPEC §6, §8). The candidates are the rollouts the device is a member of: eligible
        // by model and labels, or listed.
        let candidates: Vec<_> = found
            .rollouts
            .into_iter()
            .filter(|c| !c.release_yanked && c.start_at.is_none_or(|t| t <= now))
            .collect();
        let rules: Vec<Rule> = candidates
            .iter()
            .map(|c| Rule {
                id: c.id,
                percent_bp: c.percent_bp,
                listed: c.bucket < 0,
            })
            .collect();
        Ok(choose_target(device, &rules).map(|i| Target {
            version: candidates[i].version.clone(),
            source: TargetSource::Rollout(candidates[i].id),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(expires_at: Option<i64>, release_yanked: bool) -> PinRow {
        PinRow {
            device: DeviceId::parse("aa:bb:cc:00:00:01").unwrap(),
            model: Model::parse("iq2").unwrap(),
            version: Version::parse("1.0.0").unwrap(),
            reason: String::new(),
            expires_at,
            set_by: "ops".into(),
            set_at: 0,
            release_yanked,
        }
    }

    #[test]
    fn a_pin_holds_until_it_expires_or_its_release_is_yanked() {
        assert!(pin_holds(&pin(None, false), 1_000));
        assert!(pin_holds(&pin(Some(1_001), false), 1_000));
        assert!(
            !pin_holds(&pin(Some(1_000), false), 1_000),
            "expired at that very ms"
        );
        assert!(
            !pin_holds(&pin(None, true), 1_000),
            "a yanked release is never served"
        );
    }
}
