//! `rollouts` and `rollout_devices`: which devices should fetch which release.

use std::collections::HashMap;

use sqlx::FromRow;

use super::{Db, DbError, DbResult, Page};
use crate::domain::{DeviceId, Model, RolloutState, Version, now_ms};

#[derive(Debug, Clone)]
pub struct RolloutRow {
    pub id: i64,
    pub model: Model,
    pub version: Version,
    pub percent_bp: u16,
    pub state: RolloutState,
    pub devices: Vec<DeviceId>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(FromRow)]
struct Raw {
    id: i64,
    model: String,
    version: String,
    percent_bp: i64,
    state: String,
    created_at: i64,
    updated_at: i64,
}

impl Raw {
    fn into_row(self, devices: Vec<DeviceId>) -> DbResult<RolloutRow> {
        let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
        Ok(RolloutRow {
            id: self.id,
            model: Model::parse(&self.model).map_err(c)?,
            version: Version::parse(&self.version).map_err(c)?,
            percent_bp: u16::try_from(self.percent_bp).map_err(|_| DbError::Corrupt("percent".into()))?,
            state: RolloutState::parse(&self.state).map_err(c)?,
            devices,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, model, version, percent_bp, state, created_at, updated_at";

/// A rollout as targeting sees it for one device.
#[derive(Debug, Clone)]
pub struct RolloutCandidate {
    pub id: i64,
    pub version: Version,
    pub percent_bp: u16,
    /// The device is on the rollout's explicit list.
    pub listed: bool,
    pub release_yanked: bool,
}

/// Per-device download progress on one release's image.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageProgress {
    pub completed: bool,
}

impl Db {
    /// # Errors
    /// Database failure (the release must exist: foreign key).
    pub async fn insert_rollout(
        &self,
        model: &Model,
        version: &Version,
        percent_bp: u16,
        devices: &[DeviceId],
    ) -> DbResult<RolloutRow> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let raw: Raw = sqlx::query_as(&format!(
            "INSERT INTO rollouts (model, version, percent_bp, state, created_at, updated_at)
             VALUES ($1, $2, $3, 'active', $4, $4) RETURNING {COLUMNS}"
        ))
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(i64::from(percent_bp))
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut listed = devices.to_vec();
        listed.sort();
        listed.dedup();
        for d in &listed {
            sqlx::query("INSERT INTO rollout_devices (rollout_id, device) VALUES ($1, $2)")
                .bind(raw.id)
                .bind(d.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        raw.into_row(listed)
    }

    async fn rollout_devices(&self, id: i64) -> DbResult<Vec<DeviceId>> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT device FROM rollout_devices WHERE rollout_id = $1 ORDER BY device")
                .bind(id)
                .fetch_all(self.pool())
                .await?;
        rows.into_iter()
            .map(|(s,)| DeviceId::parse(&s).map_err(|e| DbError::Corrupt(e.0)))
            .collect()
    }

    /// # Errors
    /// Database failure.
    pub async fn rollout(&self, id: i64) -> DbResult<Option<RolloutRow>> {
        let raw: Option<Raw> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM rollouts WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        match raw {
            Some(raw) => Ok(Some(raw.into_row(self.rollout_devices(id).await?)?)),
            None => Ok(None),
        }
    }

    /// Newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_rollouts(&self, model: Option<&Model>, page: Page) -> DbResult<Vec<RolloutRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE ($1 IS NULL OR model = $1) AND id < $2
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(model.map(Model::as_str))
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let devices = self.rollout_devices(raw.id).await?;
            out.push(raw.into_row(devices)?);
        }
        Ok(out)
    }

    /// Returns false when there is no such rollout.
    ///
    /// # Errors
    /// Database failure.
    pub async fn update_rollout(
        &self,
        id: i64,
        percent_bp: Option<u16>,
        state: Option<RolloutState>,
    ) -> DbResult<bool> {
        let r = sqlx::query(
            "UPDATE rollouts SET percent_bp = COALESCE($2, percent_bp), state = COALESCE($3, state),
             updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(percent_bp.map(i64::from))
        .bind(state.map(RolloutState::as_str))
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The rollouts of `model` in `state`, newest first, each with whether `device` is on its
    /// explicit list and whether its release is yanked.
    ///
    /// # Errors
    /// Database failure.
    pub async fn rollouts_for_device(
        &self,
        model: &Model,
        device: &DeviceId,
        state: RolloutState,
    ) -> DbResult<Vec<RolloutCandidate>> {
        let rows: Vec<(i64, String, i64, bool, bool)> = sqlx::query_as(
            "SELECT r.id, r.version, r.percent_bp,
                    EXISTS (SELECT 1 FROM rollout_devices d WHERE d.rollout_id = r.id AND d.device = $2),
                    rel.yanked_at IS NOT NULL
             FROM rollouts r JOIN releases rel ON rel.model = r.model AND rel.version = r.version
             WHERE r.model = $1 AND r.state = $3
             ORDER BY r.id DESC",
        )
        .bind(model.as_str())
        .bind(device.to_string())
        .bind(state.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(id, version, bp, listed, release_yanked)| {
                Ok(RolloutCandidate {
                    id,
                    version: Version::parse(&version).map_err(|e| DbError::Corrupt(e.0))?,
                    percent_bp: u16::try_from(bp).map_err(|_| DbError::Corrupt("percent".into()))?,
                    listed,
                    release_yanked,
                })
            })
            .collect()
    }

    /// For each device that fetched any part of this release's image: did it complete it?
    ///
    /// # Errors
    /// Database failure.
    pub async fn image_progress(
        &self,
        model: &Model,
        version: &Version,
        file: &str,
    ) -> DbResult<HashMap<DeviceId, ImageProgress>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT device, MAX(CASE WHEN outcome = 'complete' AND start_offset + bytes = size THEN 1 ELSE 0 END)
             FROM downloads WHERE model = $1 AND version = $2 AND file = $3 GROUP BY device",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(file)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(d, done)| {
                let id = DeviceId::parse(&d).map_err(|e| DbError::Corrupt(e.0))?;
                Ok((id, ImageProgress { completed: done == 1 }))
            })
            .collect()
    }
}
