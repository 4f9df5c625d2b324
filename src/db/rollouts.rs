//! `rollouts` and `rollout_devices`: which devices should fetch which release, in which
//! phase. Members and their counts are in [`super::members`]; the rules that move a rollout
//! are the caller's (`services::rollouts`).

use std::collections::HashMap;

use sqlx::FromRow;

use super::audit::{AuditEntry, append_audit};
use super::members::{self, NewMember};
use super::{Db, DbError, DbResult, Flag, Page};
use crate::domain::{DeviceId, Model, RolloutState, Version, now_ms};

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutRow {
    pub id: i64,
    pub model: Model,
    pub version: Version,
    /// The current selection (a phased rollout: its current phase's).
    pub percent_bp: u16,
    pub state: RolloutState,
    pub devices: Vec<DeviceId>,
    pub labels: Vec<String>,
    /// Basis points per phase; `None` for a rollout without phases.
    pub phases: Option<Vec<u16>>,
    pub phase: Option<usize>,
    pub phase_opened_at: Option<i64>,
    pub success_ppm: u32,
    pub failure_ppm: u32,
    pub min_phase_secs: u64,
    pub start_at: Option<i64>,
    pub paused_reason: Option<String>,
    pub members_ready: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A rollout to insert.
#[derive(Debug, Clone)]
pub struct NewRolloutRow<'a> {
    pub model: &'a Model,
    pub version: &'a Version,
    pub percent_bp: u16,
    pub listed: &'a [DeviceId],
    pub labels: &'a [String],
    pub phases: Option<&'a [u16]>,
    pub success_ppm: u32,
    pub failure_ppm: u32,
    pub min_phase_secs: u64,
    pub start_at: Option<i64>,
}

/// A change to a rollout: each `Some` field is set. A new `percent_bp` recounts the totals
/// of the selection in the same transaction.
#[derive(Debug, Clone, Default)]
pub struct RolloutUpdate {
    pub percent_bp: Option<u16>,
    pub state: Option<RolloutState>,
    pub phase: Option<usize>,
    pub phase_opened_at: Option<i64>,
    pub success_ppm: Option<u32>,
    pub failure_ppm: Option<u32>,
    pub min_phase_secs: Option<u64>,
    /// `Some(None)` clears it.
    pub paused_reason: Option<Option<String>>,
}

/// Only apply the update while the rollout is still as the caller saw it (the automatic
/// steps: two nodes, or a PATCH racing them, never apply one twice).
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    pub state: Option<RolloutState>,
    pub phase: Option<usize>,
}

#[derive(FromRow)]
struct Raw {
    id: i64,
    model: String,
    version: String,
    percent_bp: i64,
    state: String,
    labels: String,
    phases: Option<String>,
    phase: Option<i64>,
    phase_opened_at: Option<i64>,
    success_ppm: i64,
    failure_ppm: i64,
    min_phase_secs: i64,
    start_at: Option<i64>,
    paused_reason: Option<String>,
    members_ready: Flag,
    created_at: i64,
    updated_at: i64,
}

fn corrupt(what: &str) -> DbError {
    DbError::Corrupt(what.to_owned())
}

impl Raw {
    fn into_row(self, devices: Vec<DeviceId>) -> DbResult<RolloutRow> {
        let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
        let phases: Option<Vec<u16>> = self
            .phases
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("rollout {} phases: {e}", self.id)))?;
        Ok(RolloutRow {
            id: self.id,
            model: Model::parse(&self.model).map_err(c)?,
            version: Version::parse(&self.version).map_err(c)?,
            percent_bp: u16::try_from(self.percent_bp).map_err(|_| corrupt("percent"))?,
            state: RolloutState::parse(&self.state).map_err(c)?,
            devices,
            labels: serde_json::from_str(&self.labels)
                .map_err(|e| DbError::Corrupt(format!("rollout {} labels: {e}", self.id)))?,
            phases,
            phase: self
                .phase
                .map(usize::try_from)
                .transpose()
                .map_err(|_| corrupt("phase"))?,
            phase_opened_at: self.phase_opened_at,
            success_ppm: u32::try_from(self.success_ppm).map_err(|_| corrupt("success threshold"))?,
            failure_ppm: u32::try_from(self.failure_ppm).map_err(|_| corrupt("failure threshold"))?,
            min_phase_secs: u64::try_from(self.min_phase_secs).map_err(|_| corrupt("min_phase_secs"))?,
            start_at: self.start_at,
            paused_reason: self.paused_reason,
            members_ready: self.members_ready.0,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const COLUMNS: &str = "id, model, version, percent_bp, state, labels, phases, phase, phase_opened_at,
    success_ppm, failure_ppm, min_phase_secs, start_at, paused_reason, members_ready, created_at, updated_at";

/// A rollout as targeting sees it for one device.
#[derive(Debug, Clone)]
pub struct RolloutCandidate {
    pub id: i64,
    pub version: Version,
    pub percent_bp: u16,
    /// The device's stable bucket in this rollout (-1: on its explicit list).
    pub bucket: i32,
    pub start_at: Option<i64>,
    pub release_yanked: bool,
}

/// A device's pin as targeting sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PinCandidate {
    pub version: Version,
    pub expires_at: Option<i64>,
    pub release_yanked: bool,
}

/// [`Db::target_candidates`].
#[derive(Debug, Clone, Default)]
pub struct TargetCandidates {
    pub rollouts: Vec<RolloutCandidate>,
    pub pin: Option<PinCandidate>,
}

/// Per-device download progress on one release's image.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageProgress {
    pub completed: bool,
    /// The device's latest record of the image.
    pub last_id: i64,
}

impl Db {
    /// Inserts a rollout with its listed devices and its members (made by `members` from the
    /// new rollout's id; their counts included), in one transaction.
    ///
    /// # Errors
    /// Database failure (the release must exist: foreign key).
    pub async fn insert_rollout(
        &self,
        r: &NewRolloutRow<'_>,
        members: impl FnOnce(i64) -> Vec<NewMember> + Send,
    ) -> DbResult<RolloutRow> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let labels = serde_json::to_string(r.labels).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let phases = r
            .phases
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| DbError::Corrupt(e.to_string()))?;
        let opened = r.start_at.unwrap_or(now).max(now);
        let raw: Raw = sqlx::query_as(&format!(
            "INSERT INTO rollouts (model, version, percent_bp, state, labels, phases, phase, phase_opened_at,
                 success_ppm, failure_ppm, min_phase_secs, start_at, members_ready, created_at, updated_at)
             VALUES ($1, $2, $3, 'active', $4, $5, $6, $7, $8, $9, $10, $11, 1, $12, $12) RETURNING {COLUMNS}"
        ))
        .bind(r.model.as_str())
        .bind(r.version.as_str())
        .bind(i64::from(r.percent_bp))
        .bind(labels)
        .bind(phases)
        .bind(r.phases.map(|_| 0_i64))
        .bind(opened)
        .bind(i64::from(r.success_ppm))
        .bind(i64::from(r.failure_ppm))
        .bind(i64::try_from(r.min_phase_secs).unwrap_or(i64::MAX))
        .bind(r.start_at)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let mut listed = r.listed.to_vec();
        listed.sort();
        listed.dedup();
        for d in &listed {
            sqlx::query("INSERT INTO rollout_devices (rollout_id, device) VALUES ($1, $2)")
                .bind(raw.id)
                .bind(d.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let members = members(raw.id);
        members::insert_members(&mut tx, raw.id, r.percent_bp, &members).await?;
        tx.commit().await?;
        raw.into_row(listed)
    }

    async fn with_devices(&self, raws: Vec<Raw>) -> DbResult<Vec<RolloutRow>> {
        let mut out = Vec::with_capacity(raws.len());
        for raw in raws {
            let devices = self.rollout_devices(raw.id).await?;
            out.push(raw.into_row(devices)?);
        }
        Ok(out)
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

    /// Newest first, optionally of one model and stored state.
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_rollouts(
        &self,
        model: Option<&Model>,
        state: Option<RolloutState>,
        page: Page,
    ) -> DbResult<Vec<RolloutRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE ($1 IS NULL OR model = $1) AND ($2 IS NULL OR state = $2)
             AND id < $3 ORDER BY id DESC LIMIT $4"
        ))
        .bind(model.map(Model::as_str))
        .bind(state.map(RolloutState::as_str))
        .bind(page.before_id())
        .bind(page.fetch_limit())
        .fetch_all(self.pool())
        .await?;
        self.with_devices(raws).await
    }

    /// Rollouts in `state` (all models), oldest first: what the automatic steps look at
    /// (without their `devices` list, which the steps do not need).
    ///
    /// # Errors
    /// Database failure.
    pub async fn rollouts_in_state(&self, state: RolloutState) -> DbResult<Vec<RolloutRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE state = $1 ORDER BY id"
        ))
        .bind(state.as_str())
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(|r| r.into_row(Vec::new())).collect()
    }

    /// Rollouts not aborted whose members were never made (made before v2).
    ///
    /// # Errors
    /// Database failure.
    pub async fn rollouts_without_members(&self) -> DbResult<Vec<RolloutRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE members_ready = 0 AND state <> 'aborted' ORDER BY id"
        ))
        .fetch_all(self.pool())
        .await?;
        self.with_devices(raws).await
    }

    /// Rollouts of `model` not aborted (for enrolling a new device; without `devices`).
    ///
    /// # Errors
    /// Database failure.
    pub async fn open_rollouts_of_model(&self, model: &Model) -> DbResult<Vec<RolloutRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE model = $1 AND state <> 'aborted' AND members_ready = 1 ORDER BY id"
        ))
        .bind(model.as_str())
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(|r| r.into_row(Vec::new())).collect()
    }

    /// Applies `u` if the rollout is as `expect` says, with an audit entry; returns false
    /// when there is no such rollout or it changed meanwhile.
    ///
    /// # Errors
    /// Database failure.
    pub async fn update_rollout(
        &self,
        id: i64,
        u: &RolloutUpdate,
        expect: Expect,
        audit: Option<&AuditEntry>,
    ) -> DbResult<bool> {
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let r = sqlx::query(
            "UPDATE rollouts SET percent_bp = COALESCE($2, percent_bp), state = COALESCE($3, state),
                 phase = COALESCE($4, phase), phase_opened_at = COALESCE($5, phase_opened_at),
                 success_ppm = COALESCE($6, success_ppm), failure_ppm = COALESCE($7, failure_ppm),
                 min_phase_secs = COALESCE($8, min_phase_secs),
                 paused_reason = CASE WHEN $9 THEN $10 ELSE paused_reason END,
                 updated_at = $11
             WHERE id = $1 AND ($12 IS NULL OR state = $12) AND ($13 IS NULL OR phase = $13)",
        )
        .bind(id)
        .bind(u.percent_bp.map(i64::from))
        .bind(u.state.map(RolloutState::as_str))
        .bind(u.phase.map(|p| i64::try_from(p).unwrap_or(i64::MAX)))
        .bind(u.phase_opened_at)
        .bind(u.success_ppm.map(i64::from))
        .bind(u.failure_ppm.map(i64::from))
        .bind(u.min_phase_secs.map(|s| i64::try_from(s).unwrap_or(i64::MAX)))
        .bind(u.paused_reason.is_some())
        .bind(u.paused_reason.clone().flatten())
        .bind(now)
        .bind(expect.state.map(RolloutState::as_str))
        .bind(expect.phase.map(|p| i64::try_from(p).unwrap_or(i64::MAX)))
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Ok(false);
        }
        if let Some(bp) = u.percent_bp {
            members::reselect(&mut tx, id, bp).await?;
        }
        if let Some(a) = audit {
            append_audit(&mut tx, a, now).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// What targeting needs for one device in one query: the rollouts of `state` it is a
    /// member of (newest first) and its pin, if it has one for `model`.
    ///
    /// # Errors
    /// Database failure or a corrupt row.
    pub async fn target_candidates(
        &self,
        model: &Model,
        device: &DeviceId,
        state: RolloutState,
    ) -> DbResult<TargetCandidates> {
        // (is the pin, rollout id, version, percent, bucket, start_at, release yanked, expires_at)
        type Row = (Flag, i64, String, i64, i32, Option<i64>, Flag, Option<i64>);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT 0, r.id, r.version, r.percent_bp, m.bucket, r.start_at, rel.yanked_at IS NOT NULL, NULL
             FROM rollout_members m
             JOIN rollouts r ON r.id = m.rollout_id
             JOIN releases rel ON rel.model = r.model AND rel.version = r.version
             WHERE m.device = $1 AND r.model = $2 AND r.state = $3
             UNION ALL
             SELECT 1, 0, p.version, 0, -1, NULL, rel.yanked_at IS NOT NULL, p.expires_at
             FROM pins p JOIN releases rel ON rel.model = p.model AND rel.version = p.version
             WHERE p.device = $1 AND p.model = $2
             ORDER BY 1, 2 DESC",
        )
        .bind(device.to_string())
        .bind(model.as_str())
        .bind(state.as_str())
        .fetch_all(self.pool())
        .await?;
        let mut out = TargetCandidates::default();
        for (Flag(is_pin), id, version, bp, bucket, start_at, Flag(release_yanked), expires_at) in rows {
            let version = Version::parse(&version).map_err(|e| DbError::Corrupt(e.0))?;
            if is_pin {
                out.pin = Some(PinCandidate {
                    version,
                    expires_at,
                    release_yanked,
                });
            } else {
                out.rollouts.push(RolloutCandidate {
                    id,
                    version,
                    percent_bp: u16::try_from(bp).map_err(|_| corrupt("percent"))?,
                    bucket,
                    start_at,
                    release_yanked,
                });
            }
        }
        Ok(out)
    }

    /// For each device that fetched any part of this release's image: did it complete it,
    /// and its latest record.
    ///
    /// # Errors
    /// Database failure.
    pub async fn image_progress(
        &self,
        model: &Model,
        version: &Version,
        file: &str,
    ) -> DbResult<HashMap<DeviceId, ImageProgress>> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT device, MAX(CASE WHEN outcome = 'complete' AND start_offset + bytes = size THEN 1 ELSE 0 END), MAX(id)
             FROM downloads WHERE model = $1 AND version = $2 AND file = $3 GROUP BY device",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .bind(file)
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(d, done, last_id)| {
                let id = DeviceId::parse(&d).map_err(|e| DbError::Corrupt(e.0))?;
                Ok((
                    id,
                    ImageProgress {
                        completed: done == 1,
                        last_id,
                    },
                ))
            })
            .collect()
    }

    /// Each device's latest report for this release: (report id, outcome).
    ///
    /// # Errors
    /// Database failure.
    pub async fn latest_reports(
        &self,
        model: &Model,
        version: &Version,
    ) -> DbResult<HashMap<DeviceId, (i64, crate::domain::ReportOutcome)>> {
        let rows: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT device, id, outcome FROM reports WHERE id IN
                 (SELECT MAX(id) FROM reports WHERE model = $1 AND version = $2 GROUP BY device)",
        )
        .bind(model.as_str())
        .bind(version.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(d, id, outcome)| {
                let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
                Ok((
                    DeviceId::parse(&d).map_err(c)?,
                    (id, crate::domain::ReportOutcome::parse(&outcome).map_err(c)?),
                ))
            })
            .collect()
    }

    /// How many rollouts are in each stored state, split by whether `start_at` is after
    /// `now`: `(state, starts_later, n)`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn rollout_state_counts(&self, now: i64) -> DbResult<Vec<(String, bool, i64)>> {
        let rows: Vec<(String, Flag, i64)> = sqlx::query_as(
            "SELECT state, CASE WHEN start_at > $1 THEN 1 ELSE 0 END AS later, COUNT(*) FROM rollouts
             GROUP BY state, later",
        )
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(s, later, n)| (s, later.0, n)).collect())
    }
}
