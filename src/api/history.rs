//! `GET /rollouts/{id}/history`: a rollout's per-state counts over time with its phase
//! boundaries, for the dashboard's progress plot (issue 13). Reads the samples the
//! automatic steps write (`services::samples`): one indexed range, at most [`READ`] rows,
//! thinned to about [`POINTS`] points that always keep every change of state or phase.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::error::{ApiError, ApiPath};
use crate::db::samples::Sample;
use crate::domain::format_ms;
use crate::services::targeting::policy;

/// Samples read per request (a week-long rollout keeps a few thousand).
pub const READ: u32 = 5_000;
/// About this many points are answered.
pub const POINTS: usize = 600;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(rollout_history))
}

/// `{id}` of the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct HistoryPath {
    /// The rollout's id.
    #[param(value_type = i64, minimum = 1)]
    id: String,
}

/// A rollout's counts over time.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutHistory)]
struct HistoryView {
    rollout: i64,
    success_threshold: f64,
    failure_threshold: f64,
    /// Oldest first.
    points: Vec<PointView>,
    /// Where a phase opened (from the points: the first point of each phase).
    phases: Vec<PhaseMark>,
}

/// The selection's per-state counts at one time.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutHistoryPoint)]
struct PointView {
    #[schema(format = DateTime)]
    at: String,
    /// The rollout's state as shown then (scheduled, active, paused).
    state: String,
    #[schema(required = true)]
    phase: Option<usize>,
    percent: f64,
    pending: u64,
    downloading: u64,
    downloaded: u64,
    installed: u64,
    failed: u64,
}

/// The first point of a phase.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RolloutPhaseMark)]
struct PhaseMark {
    phase: usize,
    percent: f64,
    #[schema(format = DateTime)]
    at: String,
}

/// Keeps about `max` of `samples`: every k-th, the last, and each one whose state or phase
/// differs from the one before it (the plot's boundaries).
fn thin(samples: Vec<Sample>, max: usize) -> Vec<Sample> {
    let k = samples.len().div_ceil(max.max(1)).max(1);
    let last = samples.len().saturating_sub(1);
    let mut prev: Option<(String, Option<usize>)> = None;
    let mut out = Vec::new();
    for (i, s) in samples.into_iter().enumerate() {
        let key = (s.state.clone(), s.phase);
        let changed = prev.as_ref() != Some(&key);
        prev = Some(key);
        if changed || i % k == 0 || i == last {
            out.push(s);
        }
    }
    out
}

fn marks(points: &[Sample]) -> Vec<PhaseMark> {
    let mut out: Vec<PhaseMark> = Vec::new();
    for s in points {
        if let Some(p) = s.phase
            && out.last().is_none_or(|m| m.phase != p)
        {
            out.push(PhaseMark {
                phase: p,
                percent: policy::bp_to_percent(s.percent_bp),
                at: format_ms(s.at),
            });
        }
    }
    out
}

/// A rollout's per-state counts over time
///
/// Sampled by the automatic steps while the rollout is active or paused: when its state,
/// phase or percent changes, and when its counts change (at most every 2 s, less often as it
/// ages). Oldest first, thinned to about 600 points; every change of state or phase is kept.
#[utoipa::path(
    get,
    path = "/rollouts/{id}/history",
    params(HistoryPath),
    responses(
        (status = 200, description = "The samples.", body = HistoryView),
        (status = 404, description = "No such rollout.", body = super::error::ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn rollout_history(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(HistoryPath { id }): ApiPath<HistoryPath>,
) -> Result<Json<HistoryView>, ApiError> {
    let id = id
        .parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    let (r, samples) = st.services.rollouts.samples(id, READ).await?;
    let samples = thin(samples, POINTS);
    Ok(Json(HistoryView {
        rollout: r.id,
        success_threshold: f64::from(r.success_ppm) / 1e6,
        failure_threshold: f64::from(r.failure_ppm) / 1e6,
        phases: marks(&samples),
        points: samples
            .into_iter()
            .map(|s| PointView {
                at: format_ms(s.at),
                percent: policy::bp_to_percent(s.percent_bp),
                state: s.state,
                phase: s.phase,
                pending: s.pending,
                downloading: s.downloading,
                downloaded: s.downloaded,
                installed: s.installed,
                failed: s.failed,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(at: i64, phase: usize) -> Sample {
        Sample {
            at,
            state: "active".into(),
            phase: Some(phase),
            percent_bp: 1000,
            pending: 0,
            downloading: 0,
            downloaded: 0,
            installed: 0,
            failed: 0,
        }
    }

    #[test]
    fn thinning_keeps_the_bound_the_last_point_and_every_phase_change() {
        let samples: Vec<Sample> = (0..5000).map(|i| s(i, if i < 3001 { 0 } else { 1 })).collect();
        let out = thin(samples, 600);
        assert!(out.len() <= 602, "{}", out.len());
        assert_eq!(out.last().map(|p| p.at), Some(4999));
        assert!(
            out.iter().any(|p| p.at == 3001),
            "the first point of phase 1 is kept"
        );
        let m = marks(&out);
        assert_eq!(m.iter().map(|m| m.phase).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(thin(vec![s(1, 0)], 600).len(), 1);
    }
}
