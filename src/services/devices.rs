//! Devices: registering IQs (one through the API, a fleet through `fwdist devices import`,
//! under the same rules), disabling them (which also ends their open FTPS sessions), and
//! showing one with its current target.

use std::collections::HashSet;
use std::sync::Arc;

use super::rollouts::Rollouts;
use super::targeting::{Target, Targeting};
use super::{ServiceError, ServiceResult};
use crate::db::Db;
use crate::db::devices::DeviceRow;
use crate::domain::{DeviceId, Model};
use crate::secret::Secret;

pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_LEN: usize = 64;

/// Ends the open sessions of a device; the FTPS front implements it.
pub trait DeviceSessions: Send + Sync + std::fmt::Debug {
    /// Returns how many sessions were closed.
    fn close_device(&self, id: DeviceId) -> usize;
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub id: DeviceId,
    pub model: Model,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Devices {
    db: Db,
    targeting: Targeting,
    rollouts: Rollouts,
    sessions: Option<Arc<dyn DeviceSessions>>,
}

/// Labels: at most [`MAX_LABELS`], each 1 to [`MAX_LABEL_LEN`] bytes.
///
/// # Errors
/// [`ServiceError::Invalid`] naming the limits.
pub fn check_labels(labels: &[String]) -> ServiceResult<()> {
    if labels.len() > MAX_LABELS || labels.iter().any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN) {
        return Err(ServiceError::Invalid(format!(
            "labels: at most {MAX_LABELS}, each 1-{MAX_LABEL_LEN} characters"
        )));
    }
    Ok(())
}

fn new_secret() -> ServiceResult<Secret> {
    Secret::generate("")
        .map_err(|e| ServiceError::Internal(format!("no randomness for a device secret: {e}")))
}

impl Devices {
    pub fn new(
        db: Db,
        targeting: Targeting,
        rollouts: Rollouts,
        sessions: Option<Arc<dyn DeviceSessions>>,
    ) -> Self {
        Devices {
            db,
            targeting,
            rollouts,
            sessions,
        }
    }

    /// Registers one device; returns it with its secret (shown once, stored hashed).
    ///
    /// # Errors
    /// Bad labels, an id already registered (conflict), database failure.
    pub async fn register(&self, d: &NewDevice) -> ServiceResult<(DeviceRow, Secret)> {
        check_labels(&d.labels)?;
        let secret = new_secret()?;
        match self
            .db
            .insert_device(&d.id, &d.model, &d.labels, &secret.hash())
            .await
        {
            Ok(row) => {
                tracing::info!(device = %d.id, model = %d.model, "device registered");
                self.rollouts
                    .enroll(&[(d.id, d.model.clone(), d.labels.clone())])
                    .await?;
                Ok((row, secret))
            }
            Err(e) if e.is_unique_violation() => {
                Err(ServiceError::Conflict(format!("device {} already exists", d.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Registers a fleet: all or nothing. Returns each device's secret, in input order.
    ///
    /// # Errors
    /// A device listed twice or with bad labels (naming its position, 1-based), one already
    /// registered (conflict; nothing is written), database failure.
    pub async fn import(&self, fleet: &[NewDevice]) -> ServiceResult<Vec<(DeviceId, Secret)>> {
        let mut seen = HashSet::with_capacity(fleet.len());
        let mut batch = Vec::with_capacity(fleet.len());
        let mut secrets = Vec::with_capacity(fleet.len());
        for (i, d) in fleet.iter().enumerate() {
            if !seen.insert(d.id) {
                return Err(ServiceError::Invalid(format!(
                    "device {} is listed twice (entry {})",
                    d.id,
                    i + 1
                )));
            }
            check_labels(&d.labels).map_err(|e| ServiceError::Invalid(format!("device {}: {e}", d.id)))?;
            let secret = new_secret()?;
            batch.push((d.id, d.model.clone(), d.labels.clone(), secret.hash()));
            secrets.push((d.id, secret));
        }
        match self.db.insert_devices(&batch).await {
            Ok(()) => {
                tracing::info!(devices = batch.len(), "devices imported");
                let enrolled: Vec<_> = fleet
                    .iter()
                    .map(|d| (d.id, d.model.clone(), d.labels.clone()))
                    .collect();
                self.rollouts.enroll(&enrolled).await?;
                Ok(secrets)
            }
            Err(e) if e.is_unique_violation() => Err(ServiceError::Conflict(
                "a device is already registered; nothing was imported".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// The device and what it should fetch now.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn show(&self, id: &DeviceId) -> ServiceResult<(DeviceRow, Option<Target>)> {
        let d = self
            .db
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no such device: {id}")))?;
        let target = self.targeting.target_of(&d.id, &d.model).await?;
        Ok((d, target))
    }

    /// Disables a device: it can no longer log in, and its open sessions end now.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn disable(&self, id: &DeviceId) -> ServiceResult<DeviceRow> {
        if !self.db.disable_device(id).await? {
            return Err(ServiceError::NotFound(format!("no such device: {id}")));
        }
        let d = self
            .db
            .device(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no such device: {id}")))?;
        let closed = self.sessions.as_ref().map_or(0, |s| s.close_device(*id));
        tracing::info!(device = %id, sessions_closed = closed, "device disabled");
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_limits() {
        assert!(check_labels(&[]).is_ok());
        assert!(check_labels(&vec!["site-a".to_owned(); MAX_LABELS]).is_ok());
        assert!(check_labels(&vec!["x".to_owned(); MAX_LABELS + 1]).is_err());
        assert!(check_labels(&[String::new()]).is_err());
        assert!(check_labels(&["a".repeat(MAX_LABEL_LEN)]).is_ok());
        assert!(check_labels(&["a".repeat(MAX_LABEL_LEN + 1)]).is_err());
    }
}
