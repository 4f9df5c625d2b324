//! `/rollouts`: create (devices, percent or phases, labels, thresholds, schedule), change
//! (percent, phase, state, thresholds), show with status counts and per-state counts, and
//! the devices a rollout selects with their state (SPEC §6, §8).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Viewer};
use super::downloads::DownloadView;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::reports::ReportView;
use super::{AppState, Listing, PageQuery, parse_time};
use crate::db::rollouts::RolloutRow;
use crate::domain::{DeviceId, MemberState, Model, RolloutState, Version, format_ms, now_ms};
use crate::services::rollouts::{self, Status, shown_state};
use crate::services::targeting::policy;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rollouts", post(create).get(list))
        .route("/rollouts/{id}", get(show).patch(update))
        .route("/rollouts/{id}/devices", get(devices))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    model: String,
    version: String,
    percent: Option<f64>,
    devices: Option<Vec<String>>,
    #[serde(default)]
    labels: Vec<String>,
    phases: Option<Vec<f64>>,
    success_threshold: Option<f64>,
    failure_threshold: Option<f64>,
    min_phase_secs: Option<u64>,
    start_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    percent: Option<f64>,
    state: Option<String>,
    phase: Option<usize>,
    success_threshold: Option<f64>,
    failure_threshold: Option<f64>,
    min_phase_secs: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RolloutView {
    id: i64,
    model: String,
    version: String,
    percent: f64,
    devices: Vec<DeviceId>,
    labels: Vec<String>,
    phases: Option<Vec<f64>>,
    phase: Option<usize>,
    success_threshold: f64,
    failure_threshold: f64,
    min_phase_secs: u64,
    start_at: Option<String>,
    state: &'static str,
    paused_reason: Option<String>,
    created_at: String,
    updated_at: String,
    status: Status,
}

fn view(r: RolloutRow, status: Status) -> RolloutView {
    RolloutView {
        state: shown_state(&r, now_ms()),
        id: r.id,
        model: r.model.to_string(),
        version: r.version.to_string(),
        percent: policy::bp_to_percent(r.percent_bp),
        devices: r.devices,
        labels: r.labels,
        phases: r
            .phases
            .map(|p| p.into_iter().map(policy::bp_to_percent).collect()),
        phase: r.phase,
        success_threshold: f64::from(r.success_ppm) / 1e6,
        failure_threshold: f64::from(r.failure_ppm) / 1e6,
        min_phase_secs: r.min_phase_secs,
        start_at: r.start_at.map(format_ms),
        paused_reason: r.paused_reason,
        created_at: format_ms(r.created_at),
        updated_at: format_ms(r.updated_at),
        status,
    }
}

async fn one(st: &AppState, r: RolloutRow) -> Result<RolloutView, ApiError> {
    let status = st.services.rollouts.status(&r).await?;
    Ok(view(r, status))
}

async fn create(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let devices = match &body.devices {
        // Counted before parsing, so a huge list is refused without parsing it.
        Some(raw) if raw.len() > rollouts::MAX_LISTED => {
            return Err(ApiError::Unprocessable(format!(
                "at most {} devices per rollout",
                rollouts::MAX_LISTED
            )));
        }
        Some(raw) => Some(
            raw.iter()
                .map(|s| DeviceId::parse(s))
                .collect::<Result<Vec<_>, _>>()?,
        ),
        None => None,
    };
    let new = rollouts::NewRollout {
        model: Some(Model::parse(&body.model)?),
        version: Some(Version::parse(&body.version)?),
        percent: body.percent,
        devices,
        labels: body.labels,
        phases: body.phases,
        success_threshold: body.success_threshold,
        failure_threshold: body.failure_threshold,
        min_phase_secs: body.min_phase_secs,
        start_at: body
            .start_at
            .as_deref()
            .map(|s| parse_time("start_at", s))
            .transpose()?,
    };
    let row = st.services.rollouts.create(&new, &who.token.name).await?;
    Ok((StatusCode::CREATED, Json(one(&st, row).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    model: Option<String>,
    state: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<RolloutView>>, ApiError> {
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    let model = q
        .model
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(Model::parse)
        .transpose()?;
    // `state` is the state as shown: `scheduled` is a stored `active` whose start is ahead.
    let shown = q.state.as_deref().filter(|s| !s.is_empty());
    let stored = match shown {
        None => None,
        Some("scheduled") => Some(RolloutState::Active),
        Some(s) => Some(RolloutState::parse(s).map_err(|_| {
            ApiError::BadRequest(format!(
                "invalid state {s:?}: expected scheduled, active, paused or aborted"
            ))
        })?),
    };
    let rows = st.services.rollouts.list(model.as_ref(), stored, page).await?;
    let (mut rows, next) = page.finish(rows, |r| r.id);
    if let Some(want) = shown {
        let now = now_ms();
        rows.retain(|r| shown_state(r, now) == want);
    }
    let statuses = st.services.rollouts.statuses(&rows).await?;
    let items = rows.into_iter().zip(statuses).map(|(r, s)| view(r, s)).collect();
    Ok(Json(Listing { items, next }))
}

fn parse_id(s: &str) -> Result<i64, ApiError> {
    s.parse::<i64>()
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {s}")))
}

async fn show(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RolloutView>, ApiError> {
    let r = st.services.rollouts.get(parse_id(&id)?).await?;
    Ok(Json(one(&st, r).await?))
}

async fn update(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<Change>,
) -> Result<Json<RolloutView>, ApiError> {
    let id = parse_id(&id)?;
    let change = rollouts::Change {
        percent: change.percent,
        state: change.state.as_deref().map(RolloutState::parse).transpose()?,
        phase: change.phase,
        success_threshold: change.success_threshold,
        failure_threshold: change.failure_threshold,
        min_phase_secs: change.min_phase_secs,
    };
    let r = st.services.rollouts.change(id, &change, &who.token.name).await?;
    Ok(Json(one(&st, r).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DevicesQuery {
    state: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

#[derive(Debug, Serialize)]
struct MemberView {
    device: DeviceId,
    state: MemberState,
    last_download: Option<DownloadView>,
    last_report: Option<ReportView>,
}

async fn devices(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<DevicesQuery>,
) -> Result<Json<Listing<MemberView>>, ApiError> {
    let id = parse_id(&id)?;
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    let state = q
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(MemberState::parse)
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.0))?;
    let rows = st.services.rollouts.members(id, state, page).await?;
    let (rows, next) = page.finish(rows, |m| m.id);
    let download_ids: Vec<i64> = rows.iter().filter_map(|m| m.last_download_id).collect();
    let report_ids: Vec<i64> = rows.iter().filter_map(|m| m.last_report_id).collect();
    let downloads = st.db.downloads_by_ids(&download_ids).await?;
    let reports = st.db.reports_by_ids(&report_ids).await?;
    let items = rows
        .into_iter()
        .map(|m| MemberView {
            device: m.device,
            state: m.state,
            last_download: m
                .last_download_id
                .and_then(|d| downloads.get(&d).map(|r| DownloadView::new(&(d, r.clone())))),
            last_report: m
                .last_report_id
                .and_then(|r| reports.get(&r))
                .map(ReportView::new),
        })
        .collect();
    Ok(Json(Listing { items, next }))
}
