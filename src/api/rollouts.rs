//! `/rollouts`: create (by device list and/or percent), change percent or state, show with
//! status counts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Viewer};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::db::rollouts::RolloutRow;
use crate::domain::{DeviceId, Model, RolloutState, Version, format_ms};
use crate::services::rollouts::{self, Status};
use crate::services::targeting::policy;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/rollouts", post(create).get(list))
        .route("/rollouts/{id}", get(show).patch(update))
}

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

async fn view(st: &AppState, r: RolloutRow) -> Result<RolloutView, ApiError> {
    let status = st.services.rollouts.status(&r).await?;
    Ok(RolloutView {
        id: r.id,
        model: r.model.to_string(),
        version: r.version.to_string(),
        percent: policy::bp_to_percent(r.percent_bp),
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
        model: Model::parse(&body.model)?,
        version: Version::parse(&body.version)?,
        percent: body.percent,
        devices,
    };
    let row = st.services.rollouts.create(&new).await?;
    Ok((StatusCode::CREATED, Json(view(&st, row).await?)))
}
async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Listing<RolloutView>>, ApiError> {
    let page = q.page()?;
    let rows = st.services.rollouts.list(page).await?;
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
    let r = st.services.rollouts.get(parse_id(&id)?).await?;
    Ok(Json(view(&st, r).await?))
}

async fn update(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(change): ApiJson<Change>,
) -> Result<Json<RolloutView>, ApiError> {
    let id = parse_id(&id)?;
    let change = rollouts::Change {
        percent: change.percent,
        state: change.state.as_deref().map(RolloutState::parse).transpose()?,
    };
    let r = st.services.rollouts.change(id, &change).await?;
    Ok(Json(view(&st, r).await?))
}
