//! `downloads`: one row per RETR by a device (SPEC §5), written in batches (each batch also
//! adds to the per-hour counts the dashboard charts, `fleet::bump_activity`).

use sqlx::FromRow;

use super::members::{MemberRules, Progress};
use super::{Db, DbError, DbResult, Page, to_i64, to_u64};
use crate::domain::{DeviceId, Model, Outcome, Version};

/// One finished (or cut-off) RETR.
#[derive(Debug, Clone, PartialEq)]
pub struct DownloadRecord {
    pub device: DeviceId,
    pub model: Model,
    pub version: Version,
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub size: u64,
    pub outcome: Outcome,
    pub started_at: i64,
    pub finished_at: i64,
    pub client_ip: String,
    pub data_port: Option<u16>,
    pub node: String,
}

/// Filters of `GET /downloads`.
#[derive(Debug, Clone, Default)]
pub struct DownloadFilter {
    pub device: Option<DeviceId>,
    pub model: Option<Model>,
    pub version: Option<Version>,
    pub outcome: Option<Outcome>,
}

#[derive(FromRow)]
struct Raw {
    id: i64,
    device: String,
    model: String,
    version: String,
    file: String,
    start_offset: i64,
    bytes: i64,
    size: i64,
    outcome: String,
    started_at: i64,
    finished_at: i64,
    client_ip: String,
    data_port: Option<i64>,
    node: String,
}

impl TryFrom<Raw> for (i64, DownloadRecord) {
    type Error = DbError;
    fn try_from(r: Raw) -> DbResult<Self> {
        let c = |e: crate::domain::InvalidInput| DbError::Corrupt(e.0);
        let outcome = match r.outcome.as_str() {
            "complete" => Outcome::Complete,
            "aborted" => Outcome::Aborted,
            o => return Err(DbError::Corrupt(format!("outcome {o}"))),
        };
        Ok((
            r.id,
            DownloadRecord {
                device: DeviceId::parse(&r.device).map_err(c)?,
                model: Model::parse(&r.model).map_err(c)?,
                version: Version::parse(&r.version).map_err(c)?,
                file: r.file,
                offset: to_u64(r.start_offset, "offset")?,
                bytes: to_u64(r.bytes, "bytes")?,
                size: to_u64(r.size, "size")?,
                outcome,
                started_at: r.started_at,
                finished_at: r.finished_at,
                client_ip: r.client_ip,
                data_port: r.data_port.and_then(|p| u16::try_from(p).ok()),
                node: r.node,
            },
        ))
    }
}

impl Db {
    /// Inserts a batch in one transaction (one fsync for many records), applying each record
    /// to the device's standing in the rollouts of its release (`rules`).
    ///
    /// # Errors
    /// Database failure; nothing of the batch is written then.
    pub async fn insert_downloads(&self, batch: &[DownloadRecord], rules: &MemberRules) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        // The batch's member rows are locked first, in one order, before any count is
        // touched: a report of one of these devices stored meanwhile (which locks its member
        // rows, then the counts) then waits for this batch or this batch for it, never both.
        let mut devices: Vec<String> = batch.iter().map(|r| r.device.to_string()).collect();
        devices.sort();
        devices.dedup();
        super::members::lock_devices(&mut tx, &devices).await?;
        // The dashboard's per-hour counts, one upsert per hour the batch touches.
        let mut hours: std::collections::BTreeMap<i64, (u64, u64)> = std::collections::BTreeMap::new();
        for r in batch {
            let h = hours
                .entry(r.finished_at.div_euclid(super::fleet::HOUR))
                .or_default();
            match r.outcome {
                Outcome::Complete => h.0 += 1,
                Outcome::Aborted => h.1 += 1,
            }
        }
        for (hour, (complete, aborted)) in hours {
            super::fleet::bump_activity(&mut tx, hour, complete, aborted, 0).await?;
        }
        for r in batch {
            let (id,): (i64,) = sqlx::query_as(
                "INSERT INTO downloads (device, model, version, file, start_offset, bytes, size, outcome,
                 started_at, finished_at, client_ip, data_port, node)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
            )
            .bind(r.device.to_string())
            .bind(r.model.as_str())
            .bind(r.version.as_str())
            .bind(&r.file)
            .bind(to_i64(r.offset))
            .bind(to_i64(r.bytes))
            .bind(to_i64(r.size))
            .bind(r.outcome.as_str())
            .bind(r.started_at)
            .bind(r.finished_at)
            .bind(&r.client_ip)
            .bind(r.data_port.map(i64::from))
            .bind(&r.node)
            .fetch_one(&mut *tx)
            .await?;
            let progress = Progress::Download {
                id,
                file: r.file.clone(),
                complete: r.outcome == Outcome::Complete && r.offset + r.bytes == r.size,
            };
            super::members::apply(&mut tx, &r.device, &r.model, &r.version, &progress, rules).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The records with these ids (one query per 500).
    ///
    /// # Errors
    /// Database failure.
    pub async fn downloads_by_ids(
        &self,
        ids: &[i64],
    ) -> DbResult<std::collections::HashMap<i64, DownloadRecord>> {
        let mut out = std::collections::HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, device, model, version, file, start_offset, bytes, size, outcome, started_at,
                        finished_at, client_ip, data_port, node FROM downloads WHERE id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query_as::<_, Raw>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for raw in q.fetch_all(self.pool()).await? {
                let (id, r) = <(i64, DownloadRecord)>::try_from(raw)?;
                out.insert(id, r);
            }
        }
        Ok(out)
    }

    /// # Errors
    /// Database failure.
    pub async fn download(&self, id: i64) -> DbResult<Option<DownloadRecord>> {
        let raw: Option<Raw> = sqlx::query_as(
            "SELECT id, device, model, version, file, start_offset, bytes, size, outcome, started_at,
                    finished_at, client_ip, data_port, node FROM downloads WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        raw.map(|r| <(i64, DownloadRecord)>::try_from(r).map(|x| x.1))
            .transpose()
    }

    /// Newest first, with the id of each record (the pagination cursor).
    ///
    /// # Errors
    /// Database failure.
    pub async fn list_downloads(
        &self,
        f: &DownloadFilter,
        page: Page,
    ) -> DbResult<Vec<(i64, DownloadRecord)>> {
        // Only the filters given go into the statement: `($1 IS NULL OR device = $1)` keeps
        // SQLite from using `downloads_device`, and a device's page then scanned the whole
        // table newest first (0.5 s at 10 M records; bench/status.sh).
        let mut values: Vec<String> = Vec::new();
        let mut cond = Vec::new();
        for (column, value) in [
            ("device", f.device.map(|d| d.to_string())),
            ("model", f.model.as_ref().map(|m| m.as_str().to_owned())),
            ("version", f.version.as_ref().map(|v| v.as_str().to_owned())),
            ("outcome", f.outcome.map(|o| o.as_str().to_owned())),
        ] {
            if let Some(v) = value {
                values.push(v);
                cond.push(format!("{column} = ${}", values.len()));
            }
        }
        let sql = format!(
            "SELECT id, device, model, version, file, start_offset, bytes, size, outcome, started_at,
                    finished_at, client_ip, data_port, node
             FROM downloads
             WHERE {} id < ${} ORDER BY id DESC LIMIT ${}",
            cond.iter()
                .map(|c| format!("{c} AND"))
                .collect::<Vec<_>>()
                .join(" "),
            values.len() + 1,
            values.len() + 2,
        );
        let mut q = sqlx::query_as::<_, Raw>(&sql);
        for v in values {
            q = q.bind(v);
        }
        let raws = q
            .bind(page.before_id())
            .bind(page.fetch_limit())
            .fetch_all(self.pool())
            .await?;
        raws.into_iter().map(TryInto::try_into).collect()
    }
}
