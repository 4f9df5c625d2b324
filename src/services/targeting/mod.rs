//! Targeting: what a device should fetch now (SPEC §6). Today that is the newest active
//! rollout of its model that selects it and whose release is still served; device pins
//! (SPEC §9) join here. The one place that decides it: the FTPS tree, the API's device view
//! and rollout status all ask this module.
//!
//! `policy` is the pure part (stable buckets, percent, explicit lists, newest wins); this
//! file reads the candidates from the database and applies the policy.

pub mod policy;

use crate::db::releases::ReleaseRow;
use crate::db::{Db, DbResult};
use crate::domain::{DeviceId, Model, RolloutState, Version, now_ms};
use policy::{Rule, choose_target};

/// The rollout that targets a device now, and its release version.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub rollout: i64,
    pub version: Version,
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

    /// The target of `device` (of `model`), if any rollout selects it.
    ///
    /// # Errors
    /// Database failure.
    pub async fn target_of(&self, device: &DeviceId, model: &Model) -> DbResult<Option<Target>> {
        // Only active rollouts that have started target; a yanked release is never served
        // (SPEC §6, §8). The candidates are the rollouts the device is a member of: eligible
        // by model and labels, or listed.
        let now = now_ms();
        let candidates: Vec<_> = self
            .db
            .rollouts_for_device(model, device, RolloutState::Active)
            .await?
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
            rollout: candidates[i].id,
            version: candidates[i].version.clone(),
        }))
    }
}
