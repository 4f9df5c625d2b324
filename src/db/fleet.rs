//! Fleet aggregates the dashboard reads (issue 13): devices per model and installed version,
//! devices that have not reported since a time, and download records and failed reports per
//! time bucket. The per-version counts are kept in `fleet_versions` as devices come, go and
//! report ([`bump_versions`]), the stale ones count a range of `devices_last_report`, and the
//! time buckets read at most 168 rows of `activity`, the per-hour counts kept with each
//! record and report ([`bump_activity`]); none reads the tables' rows except the few stale
//! devices it lists.

use sqlx::{Any, FromRow, Transaction};

use super::{Db, DbResult, to_i64, to_u64};
use crate::domain::DeviceId;

/// Devices of one model with one installed version (None: no `installed` report yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionCount {
    pub model: String,
    pub version: Option<String>,
    pub devices: u64,
}

/// Counts in one time bucket `[start, start + width)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub complete: u64,
    pub aborted: u64,
    pub failed_reports: u64,
}

/// A device that has not reported since the cutoff.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleDevice {
    pub id: DeviceId,
    pub model: String,
    pub last_report_at: Option<i64>,
}

#[derive(FromRow)]
struct StaleRaw {
    id: String,
    model: String,
    last_report_at: Option<i64>,
}

impl Db {
    /// Devices per model and installed version, by model then version (none first).
    ///
    /// # Errors
    /// Database failure.
    pub async fn devices_per_version(&self) -> DbResult<Vec<VersionCount>> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT model, version, n FROM fleet_versions WHERE n > 0 ORDER BY model, version",
        )
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|(model, version, n)| {
                Ok(VersionCount {
                    model,
                    version: (!version.is_empty()).then_some(version),
                    devices: to_u64(n, "count")?,
                })
            })
            .collect()
    }

    /// How many devices have not reported since `cutoff` (unix ms; never counts as not), and
    /// up to `limit` of them, those silent longest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn stale_devices(&self, cutoff: i64, limit: u32) -> DbResult<(u64, Vec<StaleDevice>)> {
        let (n,): (i64,) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM devices WHERE last_report_at IS NULL)
                  + (SELECT COUNT(*) FROM devices WHERE last_report_at < $1)",
        )
        .bind(cutoff)
        .fetch_one(self.pool())
        .await?;
        // Never reported first (NULL sorts first), then the oldest report.
        let raws: Vec<StaleRaw> = sqlx::query_as(
            "SELECT id, model, last_report_at FROM devices
             WHERE last_report_at IS NULL OR last_report_at < $1
             ORDER BY last_report_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        let listed = raws
            .into_iter()
            .filter_map(|r| {
                Some(StaleDevice {
                    id: DeviceId::parse(&r.id).ok()?,
                    model: r.model,
                    last_report_at: r.last_report_at,
                })
            })
            .collect();
        Ok((to_u64(n, "count")?, listed))
    }

    /// Download records (by finish time) and failed reports in `n` buckets of `width` ms
    /// (a whole number of hours) from `since` (an hour's start), oldest first.
    ///
    /// # Errors
    /// Database failure.
    pub async fn activity(&self, since: i64, width: i64, n: usize) -> DbResult<Vec<Bucket>> {
        let width = width.max(HOUR);
        let mut out: Vec<Bucket> = (0..n)
            .map(|i| Bucket {
                start: since + width * i64::try_from(i).unwrap_or(0),
                ..Bucket::default()
            })
            .collect();
        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT hour, complete, aborted, failed_reports FROM activity WHERE hour >= $1 ORDER BY hour",
        )
        .bind(since.div_euclid(HOUR))
        .fetch_all(self.pool())
        .await?;
        for (hour, complete, aborted, failed) in rows {
            let i = (hour * HOUR - since).div_euclid(width);
            let Some(b) = usize::try_from(i).ok().and_then(|i| out.get_mut(i)) else {
                continue;
            };
            b.complete += to_u64(complete, "complete")?;
            b.aborted += to_u64(aborted, "aborted")?;
            b.failed_reports += to_u64(failed, "failed_reports")?;
        }
        Ok(out)
    }
}

/// One unix hour in ms.
pub const HOUR: i64 = 3_600_000;

/// Adds to the counts of unix hour `hour` (ms / [`HOUR`]), in the caller's transaction.
///
/// # Errors
/// Database failure.
pub(crate) async fn bump_activity(
    tx: &mut Transaction<'_, Any>,
    hour: i64,
    complete: u64,
    aborted: u64,
    failed_reports: u64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO activity (hour, complete, aborted, failed_reports) VALUES ($1, $2, $3, $4)
         ON CONFLICT (hour) DO UPDATE SET complete = activity.complete + excluded.complete,
             aborted = activity.aborted + excluded.aborted,
             failed_reports = activity.failed_reports + excluded.failed_reports",
    )
    .bind(hour)
    .bind(to_i64(complete))
    .bind(to_i64(aborted))
    .bind(to_i64(failed_reports))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds `delta` devices to (`model`, `version`; None: none reported) in the caller's
/// transaction.
///
/// # Errors
/// Database failure.
pub(crate) async fn bump_versions(
    tx: &mut Transaction<'_, Any>,
    model: &str,
    version: Option<&str>,
    delta: i64,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO fleet_versions (model, version, n) VALUES ($1, $2, $3)
         ON CONFLICT (model, version) DO UPDATE SET n = fleet_versions.n + excluded.n",
    )
    .bind(model)
    .bind(version.unwrap_or(""))
    .bind(delta)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
