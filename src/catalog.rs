//! What a device should fetch now: its model's active rollouts (from the database) run
//! through the pure rollout policy. Shared by the FTPS tree and the admin API.

use crate::db::{Db, DbResult};
use crate::domain::{DeviceId, Model, Version};
use crate::rollout::{Rule, choose_target};

/// The rollout that targets a device now, and its release version.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub rollout: i64,
    pub version: Version,
}

/// # Errors
/// Database failure.
pub async fn target_of(db: &Db, device: &DeviceId, model: &Model) -> DbResult<Option<Target>> {
    let rules = db.active_rules(model, device).await?;
    let plain: Vec<Rule> = rules.iter().map(|(r, _)| r.clone()).collect();
    Ok(choose_target(device, &plain).map(|i| Target {
        rollout: rules[i].0.id,
        version: rules[i].1.clone(),
    }))
}
