//! Rollouts: creating one (by explicit device list and/or percent), changing its percent or
//! state, and its status counts. Whom a rollout selects is [`super::targeting::policy`].

use std::collections::HashSet;

use super::targeting::policy::{self, Rule};
use super::{ServiceError, ServiceResult};
use crate::db::rollouts::RolloutRow;
use crate::db::{Db, Page};
use crate::domain::{DeviceId, Model, RolloutState, Version};

/// Most devices one rollout may list explicitly.
pub const MAX_LISTED: usize = 100_000;

/// A rollout to create. `percent` is 0–100 with up to two decimals.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub model: Model,
    pub version: Version,
    pub percent: Option<f64>,
    pub devices: Option<Vec<DeviceId>>,
}

/// A change to a rollout; at least one field.
#[derive(Debug, Clone, Default)]
pub struct Change {
    pub percent: Option<f64>,
    pub state: Option<RolloutState>,
}

/// Counts over the devices a rollout selects (by its rule, whatever its state):
/// `started` = fetched any bytes of the image, `completed` = has a complete image download,
/// `aborted_only` = started but never completed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Status {
    pub targeted: u64,
    pub started: u64,
    pub completed: u64,
    pub aborted_only: u64,
}

#[derive(Debug, Clone)]
pub struct Rollouts {
    db: Db,
}

impl Rollouts {
    pub fn new(db: Db) -> Self {
        Rollouts { db }
    }

    /// # Errors
    /// Neither percent nor devices, a bad percent, too many devices, no such (or a yanked)
    /// release, a listed device that is unknown or of another model; database failure.
    pub async fn create(&self, r: &NewRollout) -> ServiceResult<RolloutRow> {
        let (model, version) = (&r.model, &r.version);
        if r.percent.is_none() && r.devices.is_none() {
            return Err(ServiceError::Invalid("give percent, devices, or both".into()));
        }
        let percent_bp = r.percent.map(policy::percent_to_bp).transpose()?.unwrap_or(0);
        let devices = r.devices.as_deref().unwrap_or_default();
        if devices.len() > MAX_LISTED {
            return Err(ServiceError::Invalid(format!(
                "at most {MAX_LISTED} devices per rollout"
            )));
        }
        match self.db.release(model, version).await? {
            None => return Err(ServiceError::Invalid(format!("no release {model} {version}"))),
            Some(rel) if rel.yanked_at.is_some() => {
                return Err(ServiceError::Invalid(format!(
                    "release {model} {version} is yanked"
                )));
            }
            Some(_) => {}
        }
        for d in devices {
            match self.db.device(d).await? {
                None => return Err(ServiceError::Invalid(format!("no such device: {d}"))),
                Some(row) if row.model != *model => {
                    return Err(ServiceError::Invalid(format!(
                        "device {d} is a {}, not a {model}",
                        row.model
                    )));
                }
                Some(_) => {}
            }
        }
        let row = self
            .db
            .insert_rollout(model, version, percent_bp, devices)
            .await?;
        tracing::info!(rollout = row.id, model = %model, version = %version, percent_bp, listed = devices.len(), "rollout created");
        Ok(row)
    }

    /// # Errors
    /// No such rollout.
    pub async fn get(&self, id: i64) -> ServiceResult<RolloutRow> {
        self.db
            .rollout(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no rollout {id}")))
    }

    /// Newest first, with one extra row for the caller's [`Page::finish`].
    ///
    /// # Errors
    /// Database failure.
    pub async fn list(&self, page: Page) -> ServiceResult<Vec<RolloutRow>> {
        Ok(self.db.list_rollouts(None, page).await?)
    }

    /// # Errors
    /// An empty change, a bad percent, no such rollout, resuming an aborted rollout
    /// (conflict: create a new one); database failure.
    pub async fn change(&self, id: i64, c: &Change) -> ServiceResult<RolloutRow> {
        if c.percent.is_none() && c.state.is_none() {
            return Err(ServiceError::Invalid("give percent and/or state".into()));
        }
        let percent = c.percent.map(policy::percent_to_bp).transpose()?;
        let current = self.get(id).await?;
        if current.state == RolloutState::Aborted && c.state != Some(RolloutState::Aborted) {
            return Err(ServiceError::Conflict(format!(
                "rollout {id} is aborted; create a new rollout instead"
            )));
        }
        self.db.update_rollout(id, percent, c.state).await?;
        let r = self.get(id).await?;
        tracing::info!(
            rollout = id,
            percent_bp = r.percent_bp,
            state = r.state.as_str(),
            "rollout changed"
        );
        Ok(r)
    }

    /// The status counts of a rollout.
    ///
    /// # Errors
    /// Database failure.
    pub async fn status(&self, r: &RolloutRow) -> ServiceResult<Status> {
        let release = self.db.release(&r.model, &r.version).await?;
        let listed: HashSet<DeviceId> = r.devices.iter().copied().collect();
        let mut status = Status::default();
        let progress = match &release {
            Some(rel) => self.db.image_progress(&r.model, &r.version, &rel.file).await?,
            None => Default::default(),
        };
        for d in self.db.device_ids_of_model(&r.model).await? {
            let rule = Rule {
                id: r.id,
                percent_bp: r.percent_bp,
                listed: listed.contains(&d),
            };
            if !policy::selects(&rule, &d) {
                continue;
            }
            status.targeted += 1;
            if let Some(p) = progress.get(&d) {
                status.started += 1;
                if p.completed {
                    status.completed += 1;
                } else {
                    status.aborted_only += 1;
                }
            }
        }
        Ok(status)
    }
}
