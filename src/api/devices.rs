//! `/devices`: register (the secret is shown once), list, show with target, pin, lockouts and
//! recent downloads and reports; the lifecycle (disable, enable, new secret, delete, unlock)
//! and pins (SPEC §6, §9).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::auth::{Admin, Authorized, Viewer};
use super::downloads::DownloadView;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{AppState, Listing, PageQuery, parse_time};
use crate::db::Page;
use crate::db::devices::DeviceRow;
use crate::db::downloads::DownloadFilter;
use crate::db::pins::PinRow;
use crate::domain::{DeviceId, Model, Version, format_ms, now_ms};
use crate::services::devices::{NewDevice as Registration, NewPin};
use crate::services::targeting::{Target, TargetSource, pin_holds};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/devices", post(create).get(list))
        .route("/devices/{id}", get(show).delete(remove))
        .route("/devices/{id}/disable", post(disable))
        .route("/devices/{id}/enable", post(enable))
        .route("/devices/{id}/secret", post(rotate_secret))
        .route("/devices/{id}/lockout", delete(unlock))
        .route("/devices/{id}/pin", put(set_pin).delete(clear_pin))
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
    pin: Option<Option<PinView>>,
    /// Failed-login lockouts in force, per client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    lockouts: Option<Vec<LockoutJson>>,
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
    version: String,
    /// `rollout` or `pin`.
    source: &'static str,
    rollout: Option<i64>,
}

impl TargetView {
    fn new(t: &Target) -> Self {
        let (source, rollout) = match t.source {
            TargetSource::Rollout(id) => ("rollout", Some(id)),
            TargetSource::Pin => ("pin", None),
        };
        TargetView {
            version: t.version.to_string(),
            source,
            rollout,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct PinView {
    version: String,
    reason: String,
    expires_at: Option<String>,
    set_by: String,
    set_at: String,
    /// False once it expired or its release was yanked: the rollouts decide again.
    holds: bool,
}

impl PinView {
    fn new(p: &PinRow) -> Self {
        PinView {
            version: p.version.to_string(),
            reason: p.reason.clone(),
            expires_at: p.expires_at.map(format_ms),
            set_by: p.set_by.clone(),
            set_at: format_ms(p.set_at),
            holds: pin_holds(p, now_ms()),
        }
    }
}

#[derive(Debug, Serialize)]
struct LockoutJson {
    client_ip: String,
    until: String,
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
            pin: None,
            lockouts: None,
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
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiJson(body): ApiJson<NewDevice>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let reg = Registration {
        id: DeviceId::parse(&body.id)?,
        model: Model::parse(&body.model)?,
        labels: body.labels,
    };
    let (row, secret) = st.services.devices.register(&reg, &who.token.name).await?;
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
    view.target = Some(target.as_ref().map(TargetView::new));
    view.pin = Some(st.db.pin(&d.id).await?.as_ref().map(PinView::new));
    view.lockouts = Some(
        st.services
            .devices
            .lockouts(&d.id)
            .await?
            .into_iter()
            .map(|l| LockoutJson {
                client_ip: l.client_ip.to_string(),
                until: format_ms(l.until),
            })
            .collect(),
    );
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
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st.services.devices.disable(&id, &who.token.name).await?;
    Ok(Json(DeviceView::new(&d)))
}

async fn enable(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st.services.devices.enable(&id, &who.token.name).await?;
    Ok(Json(DeviceView::new(&d)))
}

#[derive(Debug, Serialize)]
struct NewSecret {
    id: DeviceId,
    /// Shown once; only its hash is stored.
    secret: String,
}

async fn rotate_secret(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<NewSecret>, ApiError> {
    let id = parse_path_id(&id)?;
    let secret = st.services.devices.rotate_secret(&id, &who.token.name).await?;
    Ok(Json(NewSecret {
        id,
        secret: secret.expose().to_owned(),
    }))
}

async fn remove(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.delete(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn unlock(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.unlock(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    version: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expires_at: Option<String>,
}

async fn set_pin(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PinBody>,
) -> Result<Json<PinView>, ApiError> {
    let id = parse_path_id(&id)?;
    let expires_at = body
        .expires_at
        .as_deref()
        .map(|t| parse_time("expires_at", t))
        .transpose()?;
    let pin = NewPin {
        version: Version::parse(&body.version)?,
        reason: body.reason,
        expires_at,
    };
    let row = st.services.devices.pin(&id, &pin, &who.token.name).await?;
    Ok(Json(PinView::new(&row)))
}

async fn clear_pin(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.unpin(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}
