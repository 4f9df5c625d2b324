//! Devices: registering IQs (one through the API, a fleet through `fwdist devices import`,
//! under the same rules), their lifecycle — disable and enable, a new secret, delete, clearing
//! failed-login lockouts — and pins (SPEC §9); showing one with its current target. Every
//! change is audited (SPEC §10) in the transaction that makes it.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;

use super::rollouts::Rollouts;
use super::targeting::{Target, Targeting};
use super::{ServiceError, ServiceResult};
use crate::db::Db;
use crate::db::audit::AuditEntry;
use crate::db::devices::DeviceRow;
use crate::db::pins::PinRow;
use crate::domain::{DeviceId, Model, Version, now_ms};
use crate::secret::Secret;

pub const MAX_LABELS: usize = 32;
pub const MAX_LABEL_LEN: usize = 64;
/// A pin's reason, in bytes.
pub const MAX_PIN_REASON: usize = 1024;

/// What the FTPS front knows of a device's logins; the front implements it.
pub trait DeviceSessions: Send + Sync + std::fmt::Debug {
    /// Ends the device's open sessions; returns how many were closed.
    fn close_device(&self, id: DeviceId) -> usize;
    /// The client addresses the device is locked out from now (failed logins).
    fn lockouts(&self, id: DeviceId) -> Vec<LockoutView>;
    /// Clears the device's failed logins; returns how many addresses were locked.
    fn unlock(&self, id: DeviceId) -> usize;
}

/// A failed-login lockout of one device from one client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutView {
    pub client_ip: IpAddr,
    /// Unix ms.
    pub until: i64,
}

/// A pin to set.
#[derive(Debug, Clone)]
pub struct NewPin {
    pub version: Version,
    pub reason: String,
    /// Unix ms; None: until removed.
    pub expires_at: Option<i64>,
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
    pub async fn register(&self, d: &NewDevice, actor: &str) -> ServiceResult<(DeviceRow, Secret)> {
        check_labels(&d.labels)?;
        let secret = new_secret()?;
        let audit = AuditEntry::new(
            actor,
            "device.create",
            d.id.to_string(),
            json!({"model": d.model.as_str(), "labels": d.labels}),
        );
        match self
            .db
            .insert_device(&d.id, &d.model, &d.labels, &secret.hash(), &audit)
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
    pub async fn import(&self, fleet: &[NewDevice], actor: &str) -> ServiceResult<Vec<(DeviceId, Secret)>> {
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
        match self.db.insert_devices(&batch, actor).await {
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

    fn not_found(id: &DeviceId) -> ServiceError {
        ServiceError::NotFound(format!("no such device: {id}"))
    }

    async fn row(&self, id: &DeviceId) -> ServiceResult<DeviceRow> {
        self.db.device(id).await?.ok_or_else(|| Self::not_found(id))
    }

    fn close_sessions(&self, id: DeviceId) -> usize {
        self.sessions.as_ref().map_or(0, |s| s.close_device(id))
    }

    /// Disables a device: it can no longer log in, and its open sessions end now.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn disable(&self, id: &DeviceId, actor: &str) -> ServiceResult<DeviceRow> {
        let audit = AuditEntry::new(actor, "device.disable", id.to_string(), json!({"enabled": false}));
        if !self.db.set_device_enabled(id, false, &audit).await? {
            return Err(Self::not_found(id));
        }
        let closed = self.close_sessions(*id);
        tracing::info!(device = %id, sessions_closed = closed, "device disabled");
        self.row(id).await
    }

    /// Enables a device again: it can log in with its secret.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn enable(&self, id: &DeviceId, actor: &str) -> ServiceResult<DeviceRow> {
        let audit = AuditEntry::new(actor, "device.enable", id.to_string(), json!({"enabled": true}));
        if !self.db.set_device_enabled(id, true, &audit).await? {
            return Err(Self::not_found(id));
        }
        // Failures while it was disabled locked it out: enabled means it can log in now.
        if let Some(s) = &self.sessions {
            s.unlock(*id);
        }
        tracing::info!(device = %id, "device enabled");
        self.row(id).await
    }

    /// Gives a device a new secret (returned once): the old one is refused from now on, its
    /// open sessions end and its lockouts are cleared (the IQ is being set up afresh).
    ///
    /// # Errors
    /// No such device, no randomness, database failure.
    pub async fn rotate_secret(&self, id: &DeviceId, actor: &str) -> ServiceResult<Secret> {
        let secret = new_secret()?;
        let audit = AuditEntry::new(actor, "device.secret", id.to_string(), json!({"rotated": true}));
        if !self.db.set_device_secret(id, &secret.hash(), &audit).await? {
            return Err(Self::not_found(id));
        }
        let closed = self.close_sessions(*id);
        let unlocked = self.sessions.as_ref().map_or(0, |s| s.unlock(*id));
        tracing::info!(device = %id, sessions_closed = closed, lockouts_cleared = unlocked, "device secret rotated");
        Ok(secret)
    }

    /// Deletes a device: it can no longer log in, its sessions end, its pin and rollout
    /// memberships go; its download records and reports stay.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn delete(&self, id: &DeviceId, actor: &str) -> ServiceResult<()> {
        let d = self.row(id).await?;
        let audit = AuditEntry::new(
            actor,
            "device.delete",
            id.to_string(),
            json!({"model": d.model.as_str(), "labels": d.labels}),
        );
        if !self.db.delete_device(id, &audit).await? {
            return Err(Self::not_found(id));
        }
        let closed = self.close_sessions(*id);
        if let Some(s) = &self.sessions {
            s.unlock(*id);
        }
        tracing::info!(device = %id, sessions_closed = closed, "device deleted");
        Ok(())
    }

    /// The addresses a device is locked out from now.
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn lockouts(&self, id: &DeviceId) -> ServiceResult<Vec<LockoutView>> {
        self.row(id).await?;
        Ok(self.sessions.as_ref().map_or_else(Vec::new, |s| s.lockouts(*id)))
    }

    /// Clears a device's failed-login lockouts (audited even when there were none: support
    /// acted).
    ///
    /// # Errors
    /// No such device, database failure.
    pub async fn unlock(&self, id: &DeviceId, actor: &str) -> ServiceResult<usize> {
        self.row(id).await?;
        // The entry first: a clear is never left unaudited (should the write fail, nothing
        // is cleared; an address locked between the read and the clear is cleared unnamed).
        let before = self.sessions.as_ref().map_or_else(Vec::new, |s| s.lockouts(*id));
        let ips: Vec<String> = before.iter().map(|l| l.client_ip.to_string()).collect();
        self.db
            .append_audit(&AuditEntry::new(
                actor,
                "device.unlock",
                id.to_string(),
                json!({"client_ips": ips}),
            ))
            .await?;
        let cleared = self.sessions.as_ref().map_or(0, |s| s.unlock(*id));
        tracing::info!(device = %id, lockouts_cleared = cleared, "device lockouts cleared");
        Ok(cleared)
    }

    /// Pins a device to a release of its model that is served (not yanked).
    ///
    /// # Errors
    /// No such device; an unknown or yanked release, a reason too long, an expiry in the past
    /// (invalid); database failure.
    pub async fn pin(&self, id: &DeviceId, p: &NewPin, actor: &str) -> ServiceResult<PinRow> {
        let d = self.row(id).await?;
        if p.reason.len() > MAX_PIN_REASON {
            return Err(ServiceError::Invalid(format!(
                "reason: at most {MAX_PIN_REASON} bytes"
            )));
        }
        let now = now_ms();
        if p.expires_at.is_some_and(|t| t <= now) {
            return Err(ServiceError::Invalid("expires_at is not in the future".into()));
        }
        let release = self.db.release(&d.model, &p.version).await?;
        match release {
            None => {
                return Err(ServiceError::Invalid(format!(
                    "no release {} of model {} to pin to",
                    p.version, d.model
                )));
            }
            Some(r) if r.yanked_at.is_some() => {
                return Err(ServiceError::Invalid(format!(
                    "release {}/{} is yanked: a device cannot be pinned to it",
                    d.model, p.version
                )));
            }
            Some(_) => {}
        }
        let row = PinRow {
            device: *id,
            model: d.model.clone(),
            version: p.version.clone(),
            reason: p.reason.clone(),
            expires_at: p.expires_at,
            set_by: actor.to_owned(),
            set_at: now,
            release_yanked: false,
        };
        let audit = AuditEntry::new(
            actor,
            "pin.set",
            id.to_string(),
            json!({
                "version": p.version.as_str(),
                "reason": p.reason,
                "expires_at": p.expires_at.map(crate::domain::format_ms),
            }),
        );
        self.db.set_pin(&row, &audit).await?;
        tracing::info!(device = %id, version = %p.version, "device pinned");
        Ok(row)
    }

    /// Removes a device's pin.
    ///
    /// # Errors
    /// No such device, or it has no pin (not found); database failure.
    pub async fn unpin(&self, id: &DeviceId, actor: &str) -> ServiceResult<()> {
        self.row(id).await?;
        let old = self.db.pin(id).await?;
        let detail = json!({"version": old.as_ref().map(|p| p.version.as_str())});
        let audit = AuditEntry::new(actor, "pin.clear", id.to_string(), detail);
        if !self.db.clear_pin(id, &audit).await? {
            return Err(ServiceError::NotFound(format!("device {id} has no pin")));
        }
        tracing::info!(device = %id, "device unpinned");
        Ok(())
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
