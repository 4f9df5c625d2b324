//! `/rollouts`: create (by device list and/or percent), change percent or state, show with
//! status counts.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Viewer};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::rollouts::RolloutRow;
use crate::domain::{DeviceId, Model, Version, format_ms};
use crate::rollout::{self, RolloutState, Rule};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rollouts", post(create).get(list))
        .route("/rollouts/{id}", get(show).patch(update))
}

const MAX_LISTED: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRollout {
    model: String,
    version: String,
    percent: Option<f64>,
    devices: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    percent: Option<f64>,
    state: Option<String>,
}

#[derive(Debug, Serialize)]
struct RolloutView {
    id: i64,
    model: String,
    version: String,
    percent: f64,
    devices: Vec<DeviceId>,
    state: RolloutState,
    created_at: String,
    updated_at: String,
    status: Status,
}

#[derive(Debug, Default, Serialize)]
struct Status {
    targeted: u64,
    started: u64,
    completed: u64,
    aborted_only: u64,
}

/// Counts over the devices this rollout selects (by its rule, whatever its state):
/// `started` = fetched any bytes of the image, `completed` = has a complete image download,
/// `aborted_only` = started but never completed.
async fn view(st: &AppState, r: RolloutRow) -> Result<RolloutView, ApiError> {
    let release = st.db.release(&r.model, &r.version).await?;
    let listed: HashSet<DeviceId> = r.devices.iter().copied().collect();
    let mut status = Status::default();
    let progress = match &release {
        Some(rel) => st.db.image_progress(&r.model, &r.version, &rel.file).await?,
        None => Default::default(),
    };
    for d in st.db.device_ids_of_model(&r.model).await? {
        let rule = Rule {
            id: r.id,
            percent_bp: r.percent_bp,
            listed: listed.contains(&d),
        };
        if !rollout::selects(&rule, &d) {
            continue;
        }
        status.targeted += 1;
        if let Some(p) = progress.get(&d) {
            status.started += 1;
            if p.completed {
                status.completed += 1;
            } else {
                status.aborted_only += 1;
            }
        }
    }
    Ok(RolloutView {
        id: r.id,
        model: r.model.to_string(),
        version: r.version.to_string(),
        percent: rollout::bp_to_percent(r.percent_bp),
        devices: r.devices,
        state: r.state,
        created_at: format_ms(r.created_at),
        updated_at: format_ms(r.updated_at),
        status,
    })
}

async fn create(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NewRollout>,
) -> Result<(StatusCode, Json<RolloutView>), ApiError> {
    let model = Model::parse(&body.model)?;
    let version = Version::parse(&body.version)?;
    if body.percent.is_none() && body.devices.is_none() {
        return Err(ApiError::Unprocessable("give percent, devices, or both".into()));
    }
    let percent_bp = body.percent.map(rollout::percent_to_bp).transpose()?.unwrap_or(0);
    let raw = body.devices.unwrap_or_default();
    if raw.len() > MAX_LISTED {
        return Err(ApiError::Unprocessable(format!(
            "at most {MAX_LISTED} devices per rollout"
        )));
    }
    let devices = raw
        .iter()
        .map(|s| DeviceId::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let release = st.db.release(&model, &version).await?;
    match release {
        None => return Err(ApiError::Unprocessable(format!("no release {model} {version}"))),
        Some(r) if r.yanked_at.is_some() => {
            return Err(ApiError::Unprocessable(format!(
                "release {model} {version} is yanked"
            )));
        }
        Some(_) => {}
    }
    for d in &devices {
        match st.db.device(d).await? {
            None => return Err(ApiError::Unprocessable(format!("no such device: {d}"))),
            Some(row) if row.model != model => {
                return Err(ApiError::Unprocessable(format!(
                    "device {d} is a {}, not a {model}",
                    row.model
                )));
            }
            Some(_) => {}
        }
    }
    let row = st
        .db
        .insert_rollout(&model, &version, percent_bp, &devices)
        .await?;
    tracing::info!(rollout = row.id, model = %model, version = %version, percent_bp, listed = devices.len(), "rollout created");
    Ok((StatusCode::CREATED, Json(view(&st, row).await?)))
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Listing<RolloutView>>, ApiError> {
    let page = q.page()?;
    let rows = st.db.list_rollouts(None, page).await?;
    let (rows, next) = page.finish(rows, |r| r.id);
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        items.push(view(&st, r).await?);
    }
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
    let id = parse_id(&id)?;
    let r = st
        .db
        .rollout(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    Ok(Json(view(&st, r).await?))
}

async fn update(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<Change>,
) -> Result<Json<RolloutView>, ApiError> {
    let id = parse_id(&id)?;
    if change.percent.is_none() && change.state.is_none() {
        return Err(ApiError::Unprocessable("give percent and/or state".into()));
    }
    let percent = change.percent.map(rollout::percent_to_bp).transpose()?;
    let state = change.state.as_deref().map(RolloutState::parse).transpose()?;
    let current = st
        .db
        .rollout(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    if current.state == RolloutState::Aborted && state != Some(RolloutState::Aborted) {
        return Err(ApiError::Conflict(format!(
            "rollout {id} is aborted; create a new rollout instead"
        )));
    }
    st.db.update_rollout(id, percent, state).await?;
    let r = st
        .db
        .rollout(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no rollout {id}")))?;
    tracing::info!(
        rollout = id,
        percent_bp = r.percent_bp,
        state = r.state.as_str(),
        "rollout changed"
    );
    Ok(Json(view(&st, r).await?))
}
