//! `reports`: install reports (SPEC §7), appended and never edited; a device's
//! `installed_version` follows its latest `installed` one and `last_report_at` its latest.

use sqlx::FromRow;

use super::members::{MemberRules, Progress};
use super::{Db, DbError, DbResult};
use crate::domain::{DeviceId, Model, ReportOutcome, Version};

/// A report to store.
#[derive(Debug, Clone)]
pub struct NewReport {
    pub device: DeviceId,
    pub model: Model,
    pub version: Version,
    pub outcome: ReportOutcome,
    pub detail: Option<String>,
    pub at: i64,
    /// `ftps` or `api`.
    pub source: &'static str,
    pub client_ip: String,
    pub node: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub id: i64,
    pub device: DeviceId,
    pub model: Model,
    pub version: Version,
    pub outcome: ReportOutcome,
    pub detail: Option<String>,
    pub at: i64,
    pub source: String,
    pub client_ip: String,
    pub node: String,
}

#[derive(FromRow)]
struct Raw {
    id: i64,
    device: String,
    model: String,
    version: String,
    outcome: String,
    detail: Option<String>,
    at: i64,
    source: String,
    client_ip: String,
    node: String,
}

impl TryFrom<Raw> for ReportRow {
    type Error = DbError;
    fn try_from(r: Raw) -> DbResult<Self> {
        let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
        Ok(ReportRow {
            id: r.id,
            device: DeviceId::parse(&r.device).map_err(c)?,
            model: Model::parse(&r.model).map_err(c)?,
            version: Version::parse(&r.version).map_err(c)?,
            outcome: ReportOutcome::parse(&r.outcome).map_err(c)?,
            detail: r.detail,
            at: r.at,
            source: r.source,
            client_ip: r.client_ip,
            node: r.node,
        })
    }
}

const COLUMNS: &str = "id, device, model, version, outcome, detail, at, source, client_ip, node";

impl Db {
    /// Stores a report, notes its time on the device and moves the device's
    /// `installed_version` when it says `installed`, and
    /// applies it to the device's standing in every rollout of that release, in one
    /// transaction.
    ///
    /// # Errors
    /// Database failure; nothing is stored then.
    pub async fn insert_report(&self, r: &NewReport, rules: &MemberRules) -> DbResult<ReportRow> {
        let mut attempt = 0;
        loop {
            match self.try_insert_report(r, rules).await {
                Err(e) if e.is_retryable() && attempt < 3 => attempt += 1,
                other => return other,
            }
        }
    }

    async fn try_insert_report(&self, r: &NewReport, rules: &MemberRules) -> DbResult<ReportRow> {
        let mut tx = self.pool().begin().await?;
        // The device's member rows first, as a download batch takes them, before any kept
        // count (fleet, activity, rollout counts) is touched.
        super::members::lock_devices(&mut tx, &[r.device.to_string()]).await?;
        let raw: Raw = sqlx::query_as(&format!(
            "INSERT INTO reports (device, model, version, outcome, detail, at, source, client_ip, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
        ))
        .bind(r.device.to_string())
        .bind(r.model.as_str())
        .bind(r.version.as_str())
        .bind(r.outcome.as_str())
        .bind(&r.detail)
        .bind(r.at)
        .bind(r.source)
        .bind(&r.client_ip)
        .bind(&r.node)
        .fetch_one(&mut *tx)
        .await?;
        if r.outcome == ReportOutcome::Installed {
            // The fleet's per-version counts follow the device's installed version.
            let before: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT model, installed_version FROM devices WHERE id = $1")
                    .bind(r.device.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
            if let Some((model, old)) = before
                && old.as_deref() != Some(r.version.as_str())
            {
                super::fleet::bump_versions(&mut tx, &model, old.as_deref(), -1).await?;
                super::fleet::bump_versions(&mut tx, &model, Some(r.version.as_str()), 1).await?;
            }
        }
        // `last_report_at` for the dashboard's "not reported in N days" (an index range).
        sqlx::query(
            "UPDATE devices SET last_report_at = $1,
                 installed_version = CASE WHEN $2 THEN $3 ELSE installed_version END
             WHERE id = $4",
        )
        .bind(r.at)
        .bind(r.outcome == ReportOutcome::Installed)
        .bind(r.version.as_str())
        .bind(r.device.to_string())
        .execute(&mut *tx)
        .await?;
        if r.outcome == ReportOutcome::Failed {
            super::fleet::bump_activity(&mut tx, r.at.div_euclid(super::fleet::HOUR), 0, 0, 1).await?;
        }
        let progress = Progress::Report {
            id: raw.id,
            outcome: r.outcome,
        };
        super::members::apply(&mut tx, &r.device, &r.model, &r.version, &progress, rules).await?;
        tx.commit().await?;
        raw.try_into()
    }

    /// A device's latest reports, newest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn reports_of_device(&self, device: &DeviceId, limit: u32) -> DbResult<Vec<ReportRow>> {
        let raws: Vec<Raw> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM reports WHERE device = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(device.to_string())
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        raws.into_iter().map(TryInto::try_into).collect()
    }

    /// The reports with these ids (one query per 500).
    ///
    /// # Errors
    /// Database failure.
    pub async fn reports_by_ids(&self, ids: &[i64]) -> DbResult<std::collections::HashMap<i64, ReportRow>> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("SELECT {COLUMNS} FROM reports WHERE id IN ({})", marks.join(","));
            let mut q = sqlx::query_as::<_, Raw>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for raw in q.fetch_all(self.pool()).await? {
                let r = ReportRow::try_from(raw)?;
                out.insert(r.id, r);
            }
        }
        Ok(out)
    }

    /// # Errors
    /// Database failure.
    pub async fn report(&self, id: i64) -> DbResult<Option<ReportRow>> {
        let raw: Option<Raw> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM reports WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        raw.map(TryInto::try_into).transpose()
    }
}
