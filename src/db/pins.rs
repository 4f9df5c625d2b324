//! `pins`: a device held on one release by support (SPEC §9). At most one per device; set and
//! removed with their audit entry in one transaction. Whether a pin holds now (not expired,
//! release still served) is targeting's rule, not this file's.

use super::audit::{AuditEntry, append_audit, commit_if_changed};
use super::{Db, DbError, DbResult, Flag};
use crate::domain::{DeviceId, Model, Version, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct PinRow {
    pub device: DeviceId,
    pub model: Model,
    pub version: Version,
    pub reason: String,
    pub expires_at: Option<i64>,
    pub set_by: String,
    pub set_at: i64,
    /// The pinned release was yanked since (read only; a pin cannot be set on one).
    pub release_yanked: bool,
}

type Raw = (String, String, String, String, Option<i64>, String, i64, Flag);

fn from_raw(
    (device, model, version, reason, expires_at, set_by, set_at, Flag(release_yanked)): Raw,
) -> DbResult<PinRow> {
    let c = |e: crate::domain::InvalidInput| DbError::Corrupt(format!("pin of {device}: {}", e.0));
    Ok(PinRow {
        device: DeviceId::parse(&device).map_err(c)?,
        model: Model::parse(&model).map_err(c)?,
        version: Version::parse(&version).map_err(c)?,
        reason,
        expires_at,
        set_by,
        set_at,
        release_yanked,
    })
}

impl Db {
    /// Sets (or replaces) the pin of `p.device`, with its audit entry.
    ///
    /// # Errors
    /// Database failure (the release must exist: foreign key).
    pub async fn set_pin(&self, p: &PinRow, audit: &AuditEntry) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO pins (device, model, version, reason, expires_at, set_by, set_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (device) DO UPDATE SET model = excluded.model, version = excluded.version,
                 reason = excluded.reason, expires_at = excluded.expires_at,
                 set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .bind(p.device.to_string())
        .bind(p.model.as_str())
        .bind(p.version.as_str())
        .bind(&p.reason)
        .bind(p.expires_at)
        .bind(&p.set_by)
        .bind(p.set_at)
        .execute(&mut *tx)
        .await?;
        append_audit(&mut tx, audit, now_ms()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes the pin of `device`; false (and no audit entry) when it had none.
    ///
    /// # Errors
    /// Database failure.
    pub async fn clear_pin(&self, device: &DeviceId, audit: &AuditEntry) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query("DELETE FROM pins WHERE device = $1")
            .bind(device.to_string())
            .execute(&mut *tx)
            .await?;
        commit_if_changed(tx, r.rows_affected(), audit).await
    }

    /// The pin of `device`, expired or not.
    ///
    /// # Errors
    /// Database failure.
    pub async fn pin(&self, device: &DeviceId) -> DbResult<Option<PinRow>> {
        let raw: Option<Raw> = sqlx::query_as(
            "SELECT p.device, p.model, p.version, p.reason, p.expires_at, p.set_by, p.set_at,
                    r.yanked_at IS NOT NULL
             FROM pins p JOIN releases r ON r.model = p.model AND r.version = p.version
             WHERE p.device = $1",
        )
        .bind(device.to_string())
        .fetch_optional(self.pool())
        .await?;
        raw.map(from_raw).transpose()
    }
}
