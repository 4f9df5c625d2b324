//! When a rollout's counts are sampled for the dashboard's progress plot (issue 13): at the
//! first look, whenever its state, phase or percent changes, and when its counts changed and
//! at least [`gap`] has passed since the last sample — a gap that grows with the rollout's
//! age (age / [`POINTS_PER_AGE`], at least [`MIN_GAP_MS`]), so a week-long rollout keeps a
//! few thousand rows, not one per second. A rollout whose counts stand still writes nothing.
//!
//! The rule is the pure [`due`]; [`Sampler`] keeps each rollout's last sample in memory (a
//! restart writes one new sample per open rollout) and appends through `db::samples`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::db::Db;
use crate::db::rollouts::RolloutRow;
use crate::db::samples::Sample;

use super::ServiceResult;
use super::rollouts::{Status, shown_state};

/// The smallest gap between two samples whose only difference is the counts.
pub const MIN_GAP_MS: i64 = 2_000;
/// The gap is the rollout's age divided by this.
pub const POINTS_PER_AGE: i64 = 500;

/// The least time between samples that differ only in their counts, for a rollout created
/// at `created_at`.
pub fn gap(created_at: i64, now: i64) -> i64 {
    (now.saturating_sub(created_at) / POINTS_PER_AGE).max(MIN_GAP_MS)
}

fn same_counts(a: &Sample, b: &Sample) -> bool {
    (a.pending, a.downloading, a.downloaded, a.installed, a.failed)
        == (b.pending, b.downloading, b.downloaded, b.installed, b.failed)
}

/// Whether `next` is written, given the last sample written (if any).
pub fn due(last: Option<&Sample>, next: &Sample, created_at: i64) -> bool {
    let Some(last) = last else {
        return true;
    };
    if (&last.state, last.phase, last.percent_bp) != (&next.state, next.phase, next.percent_bp) {
        return true;
    }
    !same_counts(last, next) && next.at.saturating_sub(last.at) >= gap(created_at, next.at)
}

/// The sample of `r` with `status` at `now`.
pub fn sample_of(r: &RolloutRow, status: &Status, now: i64) -> Sample {
    Sample {
        at: now,
        state: shown_state(r, now).to_owned(),
        phase: r.phase,
        percent_bp: r.percent_bp,
        pending: status.states.pending,
        downloading: status.states.downloading,
        downloaded: status.states.downloaded,
        installed: status.states.installed,
        failed: status.states.failed,
    }
}

/// Appends the samples that are due; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sampler {
    db: Db,
    last: Arc<Mutex<HashMap<i64, Sample>>>,
}

impl Sampler {
    pub fn new(db: Db) -> Self {
        Sampler {
            db,
            last: Arc::default(),
        }
    }

    /// Writes the samples of `rows` (with their `statuses`) that are due at `now`.
    ///
    /// # Errors
    /// Database failure (the samples before it are kept).
    pub async fn record(&self, rows: &[RolloutRow], statuses: &[Status], now: i64) -> ServiceResult<()> {
        for (r, status) in rows.iter().zip(statuses) {
            let next = sample_of(r, status, now);
            let write = {
                let last = self
                    .last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                due(last.get(&r.id), &next, r.created_at)
            };
            if write {
                self.db.insert_sample(r.id, &next).await?;
                self.last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(r.id, next);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: i64, phase: usize, installed: u64) -> Sample {
        Sample {
            at,
            state: "active".into(),
            phase: Some(phase),
            percent_bp: 1000,
            pending: 10 - installed,
            downloading: 0,
            downloaded: 0,
            installed,
            failed: 0,
        }
    }

    #[test]
    fn the_first_sample_and_every_phase_or_state_change_are_written() {
        assert!(due(None, &s(0, 0, 0), 0));
        assert!(due(Some(&s(0, 0, 0)), &s(1, 1, 0), 0));
        let mut paused = s(1, 0, 0);
        paused.state = "paused".into();
        assert!(due(Some(&s(0, 0, 0)), &paused, 0));
    }

    #[test]
    fn counts_that_stand_still_write_nothing_and_changes_wait_for_the_gap() {
        assert!(!due(Some(&s(0, 0, 3)), &s(3_600_000, 0, 3), 0));
        assert!(!due(Some(&s(0, 0, 3)), &s(1_000, 0, 4), 0));
        assert!(due(Some(&s(0, 0, 3)), &s(2_000, 0, 4), 0));
    }

    #[test]
    fn the_gap_grows_with_age_so_a_week_keeps_a_few_thousand_points() {
        assert_eq!(gap(0, 10_000), MIN_GAP_MS);
        assert_eq!(gap(0, 3_600_000), 7_200);
        // Counts changing every second for a week: count the samples written.
        let week = 7 * 24 * 3_600_000;
        let mut last = s(0, 0, 0);
        let mut written = 1;
        let mut t = 0;
        while t < week {
            t += 1_000;
            let mut next = s(t, 0, 0);
            next.downloading = u64::try_from(t).unwrap_or(0);
            if due(Some(&last), &next, 0) {
                written += 1;
                last = next;
            }
        }
        assert!((1_000..5_000).contains(&written), "{written}");
    }
}
