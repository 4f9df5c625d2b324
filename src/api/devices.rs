//! `/devices`: register (the secret is shown once), list, show with target and recent
//! downloads, disable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Viewer};
use super::downloads::DownloadView;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery};
use crate::catalog;
use crate::db::Page;
use crate::db::devices::DeviceRow;
use crate::db::downloads::DownloadFilter;
use crate::domain::{DeviceId, Model, format_ms};
use crate::secret::Secret;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", post(create).get(list))
        .route("/devices/{id}", get(show))
        .route("/devices/{id}/disable", post(disable))
}

const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 64;
const RECENT_DOWNLOADS: u32 = 10;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    id: String,
    model: String,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Created {
    id: DeviceId,
    model: String,
    labels: Vec<String>,
    /// Shown once; only its hash is stored.
    secret: String,
}

#[derive(Debug, Serialize)]
pub struct DeviceView {
    id: DeviceId,
    model: String,
    labels: Vec<String>,
    enabled: bool,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Option<TargetView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    downloads: Option<Vec<DownloadView>>,
    /// FTPS failures counted for this device since the server started (see `/diagnostics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    diagnostics: Option<crate::diagnostics::Counts>,
}

#[derive(Debug, Serialize)]
struct TargetView {
    rollout: i64,
    version: String,
}

impl DeviceView {
    fn new(d: &DeviceRow) -> Self {
        DeviceView {
            id: d.id,
            model: d.model.to_string(),
            labels: d.labels.clone(),
            enabled: d.enabled,
            created_at: format_ms(d.created_at),
            target: None,
            downloads: None,
            diagnostics: None,
        }
    }
}

/// Path ids are any MAC form; a malformed one cannot name a device.
pub fn parse_path_id(s: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(s).map_err(|e| ApiError::NotFound(format!("no such device: {e}")))
}

async fn create(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let id = DeviceId::parse(&body.id)?;
    let model = Model::parse(&body.model)?;
    if body.labels.len() > MAX_LABELS
        || body
            .labels
            .iter()
            .any(|l| l.is_empty() || l.len() > MAX_LABEL_LEN)
    {
        return Err(ApiError::Unprocessable(format!(
            "labels: at most {MAX_LABELS}, each 1-{MAX_LABEL_LEN} characters"
        )));
    }
    let secret = Secret::generate("").map_err(|e| ApiError::Internal(e.to_string().into()))?;
    let row = match st
        .db
        .insert_device(&id, &model, &body.labels, &secret.hash())
        .await
    {
        Ok(r) => r,
        Err(e) if e.is_unique_violation() => {
            return Err(ApiError::Conflict(format!("device {id} already exists")));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(device = %id, model = %model, "device registered");
    let created = Created {
        id: row.id,
        model: row.model.to_string(),
        labels: row.labels,
        secret: secret.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    model: Option<String>,
    #[serde(flatten)]
    page: PageQuery,
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<DeviceView>>, ApiError> {
    let model = q.model.as_deref().map(Model::parse).transpose()?;
    let page = q.page.page()?;
    let rows = st.db.list_devices(model.as_ref(), page).await?;
    let (rows, next) = page.finish(rows, |d| d.seq);
    Ok(Json(Listing {
        items: rows.iter().map(DeviceView::new).collect(),
        next,
    }))
}

async fn show(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st
        .db
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no such device: {id}")))?;
    let target = catalog::target_of(&st.db, &d.id, &d.model).await?;
    let filter = DownloadFilter {
        device: Some(d.id),
        ..Default::default()
    };
    let recent = st
        .db
        .list_downloads(
            &filter,
            Page {
                limit: RECENT_DOWNLOADS,
                after: None,
            },
        )
        .await?;
    let mut view = DeviceView::new(&d);
    view.target = Some(target.map(|t| TargetView {
        rollout: t.rollout,
        version: t.version.to_string(),
    }));
    view.downloads = Some(
        recent
            .iter()
            .take(RECENT_DOWNLOADS as usize)
            .map(DownloadView::new)
            .collect(),
    );
    view.diagnostics = Some(st.diagnostics.device(&d.id));
    Ok(Json(view))
}

async fn disable(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    if !st.db.disable_device(&id).await? {
        return Err(ApiError::NotFound(format!("no such device: {id}")));
    }
    let d = st
        .db
        .device(&id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no such device: {id}")))?;
    let closed = st.sessions.close_device(id);
    tracing::info!(device = %id, sessions_closed = closed, "device disabled");
    Ok(Json(DeviceView::new(&d)))
}
