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
use crate::db::Page;
use crate::db::devices::DeviceRow;
use crate::db::downloads::DownloadFilter;
use crate::domain::{DeviceId, Model, format_ms};
use crate::services::devices::NewDevice as Registration;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", post(create).get(list))
        .route("/devices/{id}", get(show))
        .route("/devices/{id}/disable", post(disable))
}

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
    /// The version of its latest `installed` report.
    installed_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<Option<TargetView>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reports: Option<Vec<super::reports::ReportView>>,
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
            installed_version: d.installed_version.clone(),
            target: None,
            reports: None,
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
    let reg = Registration {
        id: DeviceId::parse(&body.id)?,
        model: Model::parse(&body.model)?,
        labels: body.labels,
    };
    let (row, secret) = st.services.devices.register(&reg).await?;
    let created = Created {
        id: row.id,
        model: row.model.to_string(),
        labels: row.labels,
        secret: secret.expose().to_owned(),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    model: Option<String>,
    label: Option<String>,
    limit: Option<String>,
    after: Option<String>,
}

async fn list(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<DeviceView>>, ApiError> {
    let model = q
        .model
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(Model::parse)
        .transpose()?;
    let page = PageQuery {
        limit: q.limit,
        after: q.after,
    }
    .page()?;
    let label = q.label.as_deref().filter(|s| !s.is_empty());
    let rows = st.db.list_devices(model.as_ref(), label, page).await?;
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
    let (d, target) = st.services.devices.show(&id).await?;
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
    let reports = st.db.reports_of_device(&d.id, RECENT_DOWNLOADS).await?;
    view.reports = Some(reports.iter().map(super::reports::ReportView::new).collect());
    Ok(Json(view))
}

async fn disable(
    _: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st.services.devices.disable(&id).await?;
    Ok(Json(DeviceView::new(&d)))
}
