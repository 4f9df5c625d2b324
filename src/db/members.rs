//! `rollout_members`, `rollout_counts`, `rollout_totals`: each device's standing in each
//! rollout that may select it, and its counts, kept as records and reports arrive so that a
//! rollout's status is a read of a few rows at any fleet size.
//!
//! The schema defines selection: a member is selected while its `bucket` is below the
//! rollout's `percent_bp` (listed devices have bucket -1). How a standing changes on a
//! download or a report is not decided here: callers pass the rule ([`MemberRules`]).

use std::collections::HashMap;

use sqlx::{Any, Transaction};

use super::{Db, DbError, DbResult, Flag, Page, for_update};
use crate::domain::{DeviceId, MemberState, Model, ReportOutcome, Version};

/// Where a device stands in one rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub state: MemberState,
    /// Fetched image bytes (v1 `started`).
    pub started: bool,
    /// Has a complete image download (v1 `completed`).
    pub completed: bool,
}

impl Standing {
    pub const PENDING: Standing = Standing {
        state: MemberState::Pending,
        started: false,
        completed: false,
    };
}

/// Something a device did that may change its standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A download of the release's image (`complete`: every byte acknowledged).
    Download {
        complete: bool,
    },
    Report {
        outcome: ReportOutcome,
    },
}

/// The rules the caller applies (see `services::rollouts`).
#[derive(Debug, Clone, Copy)]
pub struct MemberRules {
    pub next: fn(Standing, Event) -> Standing,
}

/// A download or report as stored, for [`apply`].
#[derive(Debug, Clone)]
pub enum Progress {
    Download { id: i64, file: String, complete: bool },
    Report { id: i64, outcome: ReportOutcome },
}

/// A member to add.
#[derive(Debug, Clone)]
pub struct NewMember {
    pub device: DeviceId,
    pub bucket: i32,
    pub standing: Standing,
    pub last_download_id: Option<i64>,
    pub last_report_id: Option<i64>,
}

/// One page row of `GET /rollouts/{id}/devices`.
#[derive(Debug, Clone)]
pub struct MemberRow {
    pub id: i64,
    pub device: DeviceId,
    pub state: MemberState,
    pub last_download_id: Option<i64>,
    pub last_report_id: Option<i64>,
}

/// The counter keys a standing adds to: its state, and `started` / `completed`.
fn keys(s: Standing) -> impl Iterator<Item = &'static str> {
    [
        Some(s.state.as_str()),
        s.started.then_some("started"),
        s.completed.then_some("completed"),
    ]
    .into_iter()
    .flatten()
}

/// `(key, delta)` from `old` to `new`.
fn deltas(old: Option<Standing>, new: Standing) -> HashMap<&'static str, i64> {
    let mut d: HashMap<&'static str, i64> = HashMap::new();
    if let Some(old) = old {
        for k in keys(old) {
            *d.entry(k).or_default() -= 1;
        }
    }
    for k in keys(new) {
        *d.entry(k).or_default() += 1;
    }
    d.retain(|_, v| *v != 0);
    d
}

async fn add_counts(
    tx: &mut Transaction<'_, Any>,
    rollout: i64,
    bucket: i32,
    selected: bool,
    d: &HashMap<&'static str, i64>,
) -> DbResult<()> {
    // In one order everywhere: two transactions that add to the same rows (PostgreSQL, nodes
    // storing records at once) then wait for each other instead of deadlocking.
    let mut d: Vec<_> = d.iter().collect();
    d.sort();
    for (key, n) in d {
        sqlx::query(
            "INSERT INTO rollout_counts (rollout_id, bucket, key, n) VALUES ($1, $2, $3, $4)
             ON CONFLICT (rollout_id, bucket, key) DO UPDATE SET n = rollout_counts.n + excluded.n",
        )
        .bind(rollout)
        .bind(bucket)
        .bind(*key)
        .bind(*n)
        .execute(&mut **tx)
        .await?;
        if selected {
            sqlx::query(
                "INSERT INTO rollout_totals (rollout_id, key, n) VALUES ($1, $2, $3)
                 ON CONFLICT (rollout_id, key) DO UPDATE SET n = rollout_totals.n + excluded.n",
            )
            .bind(rollout)
            .bind(*key)
            .bind(*n)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

fn parse_state(s: &str) -> DbResult<MemberState> {
    MemberState::parse(s).map_err(|e| DbError::Corrupt(e.0))
}

/// Applies a stored download or report of `model` `version` by `device` to its standing in
/// every rollout of that release, inside the caller's transaction.
pub(super) async fn apply(
    tx: &mut Transaction<'_, Any>,
    device: &DeviceId,
    model: &Model,
    version: &Version,
    progress: &Progress,
    rules: &MemberRules,
) -> DbResult<()> {
    // (member id, rollout, bucket, state, started, completed, rollout percent, image file)
    type Row = (i64, i64, i32, String, Flag, Flag, i64, String);
    // Two nodes may store records of one device at once: on PostgreSQL the member rows are
    // locked until this transaction ends, so each standing changes from what the other left
    // (SQLite runs one writer at a time).
    let lock = for_update(tx, "m");
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT m.id, m.rollout_id, m.bucket, m.state, m.started, m.completed, r.percent_bp, rel.file
         FROM rollout_members m
         JOIN rollouts r ON r.id = m.rollout_id
         JOIN releases rel ON rel.model = r.model AND rel.version = r.version
         WHERE m.device = $1 AND r.model = $2 AND r.version = $3 ORDER BY m.rollout_id{lock}"
    ))
    .bind(device.to_string())
    .bind(model.as_str())
    .bind(version.as_str())
    .fetch_all(&mut **tx)
    .await?;
    for (id, rollout, bucket, state, started, completed, percent_bp, image) in rows {
        let (event, download_id, report_id) = match progress {
            Progress::Download { id, file, complete } if *file == image => {
                (Event::Download { complete: *complete }, Some(*id), None)
            }
            Progress::Download { .. } => continue,
            Progress::Report { id, outcome } => (Event::Report { outcome: *outcome }, None, Some(*id)),
        };
        let old = Standing {
            state: parse_state(&state)?,
            started: started.0,
            completed: completed.0,
        };
        let new = (rules.next)(old, event);
        sqlx::query(
            "UPDATE rollout_members SET state = $2, started = $3, completed = $4,
                 last_download_id = COALESCE($5, last_download_id),
                 last_report_id = COALESCE($6, last_report_id)
             WHERE id = $1",
        )
        .bind(id)
        .bind(new.state.as_str())
        .bind(i64::from(new.started))
        .bind(i64::from(new.completed))
        .bind(download_id)
        .bind(report_id)
        .execute(&mut **tx)
        .await?;
        if new != old {
            let selected = i64::from(bucket) < percent_bp;
            add_counts(tx, rollout, bucket, selected, &deltas(Some(old), new)).await?;
        }
    }
    Ok(())
}

/// Locks the member rows of `devices` (sorted) until the caller's transaction ends, on
/// PostgreSQL; nothing on SQLite, whose writers take turns anyway.
pub(super) async fn lock_devices(tx: &mut Transaction<'_, Any>, devices: &[String]) -> DbResult<()> {
    let lock = for_update(tx, "rollout_members");
    if lock.is_empty() {
        return Ok(());
    }
    for chunk in devices.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT id FROM rollout_members WHERE device IN ({}) ORDER BY device, rollout_id{lock}",
            marks.join(",")
        );
        let mut q = sqlx::query(&sql);
        for d in chunk {
            q = q.bind(d.as_str());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}

/// Removes `device` from every rollout, taking its standing out of the counts, inside the
/// caller's transaction (a deleted device).
pub(super) async fn remove_device(tx: &mut Transaction<'_, Any>, device: &DeviceId) -> DbResult<()> {
    // (rollout, bucket, state, started, completed, rollout percent)
    type Row = (i64, i32, String, Flag, Flag, i64);
    let lock = for_update(tx, "m");
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT m.rollout_id, m.bucket, m.state, m.started, m.completed, r.percent_bp
         FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id WHERE m.device = $1 ORDER BY m.rollout_id{lock}"
    ))
    .bind(device.to_string())
    .fetch_all(&mut **tx)
    .await?;
    for (rollout, bucket, state, started, completed, percent_bp) in rows {
        let old = Standing {
            state: parse_state(&state)?,
            started: started.0,
            completed: completed.0,
        };
        let mut d: HashMap<&'static str, i64> = HashMap::new();
        for k in keys(old) {
            *d.entry(k).or_default() -= 1;
        }
        add_counts(tx, rollout, bucket, i64::from(bucket) < percent_bp, &d).await?;
    }
    sqlx::query("DELETE FROM rollout_members WHERE device = $1")
        .bind(device.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Adds members to a rollout whose selection is `percent_bp`, inside the caller's
/// transaction: rows, counts per bucket and totals of the selected ones. A device that is
/// already a member is left as it is.
pub(super) async fn insert_members(
    tx: &mut Transaction<'_, Any>,
    rollout: i64,
    percent_bp: u16,
    members: &[NewMember],
) -> DbResult<()> {
    // Several rows per statement: a million members in seconds, not minutes.
    const ROWS: usize = 400;
    let mut added: HashMap<(i32, &'static str), i64> = HashMap::new();
    for chunk in members.chunks(ROWS) {
        let mut sql = String::from(
            "INSERT INTO rollout_members (rollout_id, device, bucket, state, started, completed,
             last_download_id, last_report_id) VALUES ",
        );
        for i in 0..chunk.len() {
            let b = i * 8;
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6,
                b + 7,
                b + 8
            ));
        }
        sql.push_str(" ON CONFLICT (rollout_id, device) DO NOTHING RETURNING device");
        let mut q = sqlx::query_as::<_, (String,)>(&sql);
        let mut by_device: HashMap<String, &NewMember> = HashMap::with_capacity(chunk.len());
        for m in chunk {
            let device = m.device.to_string();
            q = q
                .bind(rollout)
                .bind(device.clone())
                .bind(m.bucket)
                .bind(m.standing.state.as_str())
                .bind(i64::from(m.standing.started))
                .bind(i64::from(m.standing.completed))
                .bind(m.last_download_id)
                .bind(m.last_report_id);
            by_device.insert(device, m);
        }
        // Count only what was inserted: a device already a member keeps its standing.
        for (device,) in q.fetch_all(&mut **tx).await? {
            if let Some(m) = by_device.get(&device) {
                for k in keys(m.standing) {
                    *added.entry((m.bucket, k)).or_default() += 1;
                }
            }
        }
    }
    let mut totals: HashMap<&'static str, i64> = HashMap::new();
    let mut added: Vec<_> = added.into_iter().collect();
    added.sort();
    for ((bucket, key), n) in &added {
        sqlx::query(
            "INSERT INTO rollout_counts (rollout_id, bucket, key, n) VALUES ($1, $2, $3, $4)
             ON CONFLICT (rollout_id, bucket, key) DO UPDATE SET n = rollout_counts.n + excluded.n",
        )
        .bind(rollout)
        .bind(*bucket)
        .bind(*key)
        .bind(*n)
        .execute(&mut **tx)
        .await?;
        if i64::from(*bucket) < i64::from(percent_bp) {
            *totals.entry(key).or_default() += n;
        }
    }
    let mut totals: Vec<_> = totals.into_iter().collect();
    totals.sort();
    for (key, n) in totals {
        sqlx::query(
            "INSERT INTO rollout_totals (rollout_id, key, n) VALUES ($1, $2, $3)
             ON CONFLICT (rollout_id, key) DO UPDATE SET n = rollout_totals.n + excluded.n",
        )
        .bind(rollout)
        .bind(key)
        .bind(n)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Recounts the totals of a rollout's selection for a new `percent_bp` from its per-bucket
/// counts (at most 10,001 buckets), inside the caller's transaction.
pub(super) async fn reselect(tx: &mut Transaction<'_, Any>, rollout: i64, percent_bp: u16) -> DbResult<()> {
    sqlx::query("DELETE FROM rollout_totals WHERE rollout_id = $1")
        .bind(rollout)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO rollout_totals (rollout_id, key, n)
         SELECT rollout_id, key, CAST(SUM(n) AS BIGINT) FROM rollout_counts
         WHERE rollout_id = $1 AND bucket < $2 GROUP BY rollout_id, key",
    )
    .bind(rollout)
    .bind(i64::from(percent_bp))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Db {
    /// The counts of each rollout's current selection, by key (a state, `started`,
    /// `completed`); a rollout without any has an empty map.
    ///
    /// # Errors
    /// Database failure.
    pub async fn rollout_totals(&self, ids: &[i64]) -> DbResult<HashMap<i64, HashMap<String, i64>>> {
        let mut out: HashMap<i64, HashMap<String, i64>> = ids.iter().map(|i| (*i, HashMap::new())).collect();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT rollout_id, key, n FROM rollout_totals WHERE rollout_id IN ({})",
                marks.join(",")
            );
            let mut q = sqlx::query_as::<_, (i64, String, i64)>(&sql);
            for id in chunk {
                q = q.bind(id);
            }
            for (id, key, n) in q.fetch_all(self.pool()).await? {
                out.entry(id).or_default().insert(key, n);
            }
        }
        Ok(out)
    }

    /// Adds members to a rollout (a device registered after it was created).
    ///
    /// # Errors
    /// Database failure.
    pub async fn add_members(&self, rollout: i64, members: &[NewMember]) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        let (bp,): (i64,) = sqlx::query_as("SELECT percent_bp FROM rollouts WHERE id = $1")
            .bind(rollout)
            .fetch_one(&mut *tx)
            .await?;
        let bp = u16::try_from(bp).map_err(|_| DbError::Corrupt("percent".into()))?;
        insert_members(&mut tx, rollout, bp, members).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Gives a rollout made before members existed its members, and marks it ready.
    ///
    /// # Errors
    /// Database failure.
    pub async fn backfill_members(&self, rollout: i64, members: &[NewMember]) -> DbResult<()> {
        let mut tx = self.pool().begin().await?;
        let (bp,): (i64,) = sqlx::query_as("SELECT percent_bp FROM rollouts WHERE id = $1")
            .bind(rollout)
            .fetch_one(&mut *tx)
            .await?;
        let bp = u16::try_from(bp).map_err(|_| DbError::Corrupt("percent".into()))?;
        insert_members(&mut tx, rollout, bp, members).await?;
        sqlx::query("UPDATE rollouts SET members_ready = 1 WHERE id = $1")
            .bind(rollout)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A page of a rollout's selected members (at `percent_bp`), newest member first,
    /// optionally of one state.
    ///
    /// # Errors
    /// Database failure.
    pub async fn selected_members(
        &self,
        rollout: i64,
        percent_bp: u16,
        state: Option<MemberState>,
        page: Page,
    ) -> DbResult<Vec<MemberRow>> {
        type Row = (i64, String, String, Option<i64>, Option<i64>);
        // Two statements, so each uses its index: (rollout_id, state, id) or the row id.
        let rows: Vec<Row> = match state {
            Some(st) => {
                sqlx::query_as(
                    "SELECT id, device, state, last_download_id, last_report_id FROM rollout_members
                     WHERE rollout_id = $1 AND state = $2 AND bucket < $3 AND id < $4
                     ORDER BY id DESC LIMIT $5",
                )
                .bind(rollout)
                .bind(st.as_str())
                .bind(i64::from(percent_bp))
                .bind(page.before_id())
                .bind(page.fetch_limit())
                .fetch_all(self.pool())
                .await?
            }
            None => {
                sqlx::query_as(
                    "SELECT id, device, state, last_download_id, last_report_id FROM rollout_members
                     WHERE rollout_id = $1 AND bucket < $2 AND id < $3
                     ORDER BY id DESC LIMIT $4",
                )
                .bind(rollout)
                .bind(i64::from(percent_bp))
                .bind(page.before_id())
                .bind(page.fetch_limit())
                .fetch_all(self.pool())
                .await?
            }
        };
        rows.into_iter()
            .map(|(id, device, state, last_download_id, last_report_id)| {
                Ok(MemberRow {
                    id,
                    device: DeviceId::parse(&device).map_err(|e| DbError::Corrupt(e.0))?,
                    state: parse_state(&state)?,
                    last_download_id,
                    last_report_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_move_one_count_per_key() {
        let down = Standing {
            state: MemberState::Downloaded,
            started: true,
            completed: true,
        };
        let d = deltas(Some(Standing::PENDING), down);
        assert_eq!(d.get("pending"), Some(&-1));
        assert_eq!(d.get("downloaded"), Some(&1));
        assert_eq!(d.get("started"), Some(&1));
        assert_eq!(d.get("completed"), Some(&1));
        assert!(deltas(Some(down), down).is_empty());
        assert_eq!(deltas(None, Standing::PENDING).get("pending"), Some(&1));
    }
}
