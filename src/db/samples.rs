//! `rollout_samples`: a rollout's per-state counts over time, for the dashboard's progress
//! plot. Rows are appended (when to append is `services::samples`'s rule) and read newest
//! first through `rollout_samples_rollout`; nothing edits them.

use sqlx::FromRow;

use super::{Db, DbResult, to_u64};

/// One sample: when, the rollout's state and phase then, and its selection's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub at: i64,
    pub state: String,
    pub phase: Option<usize>,
    pub percent_bp: u16,
    pub pending: u64,
    pub downloading: u64,
    pub downloaded: u64,
    pub installed: u64,
    pub failed: u64,
}

#[derive(FromRow)]
struct Raw {
    at: i64,
    state: String,
    phase: Option<i64>,
    percent_bp: i64,
    pending: i64,
    downloading: i64,
    downloaded: i64,
    installed: i64,
    failed: i64,
}

impl TryFrom<Raw> for Sample {
    type Error = super::DbError;
    fn try_from(r: Raw) -> DbResult<Self> {
        Ok(Sample {
            at: r.at,
            state: r.state,
            phase: r.phase.and_then(|p| usize::try_from(p).ok()),
            percent_bp: u16::try_from(r.percent_bp).unwrap_or(0),
            pending: to_u64(r.pending, "pending")?,
            downloading: to_u64(r.downloading, "downloading")?,
            downloaded: to_u64(r.downloaded, "downloaded")?,
            installed: to_u64(r.installed, "installed")?,
            failed: to_u64(r.failed, "failed")?,
        })
    }
}

fn count(v: u64) -> i64 {
    super::to_i64(v)
}

impl Db {
    /// Appends a sample of rollout `id`.
    ///
    /// # Errors
    /// Database failure.
    pub async fn insert_sample(&self, id: i64, s: &Sample) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO rollout_samples (rollout_id, at, state, phase, percent_bp, pending,
                 downloading, downloaded, installed, failed)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id)
        .bind(s.at)
        .bind(&s.state)
        .bind(s.phase.and_then(|p| i64::try_from(p).ok()))
        .bind(i64::from(s.percent_bp))
        .bind(count(s.pending))
        .bind(count(s.downloading))
        .bind(count(s.downloaded))
        .bind(count(s.installed))
        .bind(count(s.failed))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The latest `limit` samples of rollout `id`, oldest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn samples(&self, id: i64, limit: u32) -> DbResult<Vec<Sample>> {
        let raws: Vec<Raw> = sqlx::query_as(
            "SELECT at, state, phase, percent_bp, pending, downloading, downloaded, installed, failed
             FROM rollout_samples WHERE rollout_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let mut out = raws
            .into_iter()
            .map(Sample::try_from)
            .collect::<DbResult<Vec<_>>>()?;
        out.reverse();
        Ok(out)
    }
}
