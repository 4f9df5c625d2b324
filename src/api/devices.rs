//! `/devices`: register (the secret is shown once), list, show with target, pin, lockouts and
//! recent downloads and reports; the lifecycle (disable, enable, new secret, delete, unlock)
//! and pins (SPEC §6, §9).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{Admin, Authorized, Viewer};
use super::diagnostics::CountsView;
use super::downloads::DownloadView;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::openapi::{DeviceIdSchema, MacAddress, ModelName, VersionName};
use super::{AppState, Listing, PageQuery, filter_bool, filter_model, parse_time};
use crate::db::Page;
use crate::db::devices::DeviceRow;
use crate::db::downloads::DownloadFilter;
use crate::db::pins::PinRow;
use crate::domain::{DeviceId, Model, Version, format_ms, now_ms};
use crate::services::devices::{NewDevice as Registration, NewPin};
use crate::services::targeting::{Target, TargetSource, pin_holds};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_device, list_devices))
        .routes(routes!(show_device, delete_device))
        .routes(routes!(disable_device))
        .routes(routes!(enable_device))
        .routes(routes!(new_device_secret))
        .routes(routes!(unlock_device))
        .routes(routes!(set_pin, clear_pin))
}

const RECENT_DOWNLOADS: u32 = 10;

/// `{id}` of the `/devices/{id}…` paths.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DevicePath {
    /// The device's MAC address in any form: `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or
    /// `aabbccddeeff` (any case).
    #[param(value_type = MacAddress, inline)]
    pub id: String,
}

/// A device to register.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewDevice {
    /// Its MAC address, in any of the three forms.
    #[schema(value_type = MacAddress, examples("aa:bb:cc:dd:ee:ff"))]
    id: String,
    /// `[a-z0-9][a-z0-9-]{0,31}`
    #[schema(value_type = ModelName, examples("iq2"))]
    model: String,
    #[serde(default)]
    labels: Vec<String>,
}

/// A registered device with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeviceCreated)]
struct Created {
    #[schema(value_type = DeviceIdSchema)]
    id: DeviceId,
    model: String,
    labels: Vec<String>,
    /// The FTPS password (`PASS`); shown once, only its hash is stored.
    secret: String,
}

/// A device. `GET /devices/{id}` adds `target`, `pin`, `lockouts`, `reports`, `downloads` and
/// `diagnostics`; lists and lifecycle answers leave them out.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Device)]
pub struct DeviceView {
    #[schema(value_type = DeviceIdSchema)]
    id: DeviceId,
    model: String,
    labels: Vec<String>,
    /// False once disabled: it can no longer log in.
    enabled: bool,
    #[schema(format = DateTime)]
    created_at: String,
    /// The version of its latest `installed` report (null before any).
    #[schema(required = true)]
    installed_version: Option<String>,
    /// What it should fetch now (null: nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<TargetView>, required = false)]
    target: Option<Option<TargetView>>,
    /// Its pin (null: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PinView>, required = false)]
    pin: Option<Option<PinView>>,
    /// Failed-login lockouts in force, per client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<LockoutJson>, required = false)]
    lockouts: Option<Vec<LockoutJson>>,
    /// Its latest install reports, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<super::reports::ReportView>, required = false)]
    reports: Option<Vec<super::reports::ReportView>>,
    /// Its latest download records, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<DownloadView>, required = false)]
    downloads: Option<Vec<DownloadView>>,
    /// FTPS failures counted for this device since the server started (see `/diagnostics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = CountsView, required = false)]
    diagnostics: Option<CountsView>,
}

/// Where a target comes from: a rollout that selects the device, or its pin.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[schema(as = TargetSource)]
#[serde(rename_all = "lowercase")]
enum TargetSourceName {
    Rollout,
    Pin,
}

/// The release a device should fetch now, and why.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Target)]
struct TargetView {
    version: String,
    source: TargetSourceName,
    /// The rollout that selects it (null for a pin).
    #[schema(required = true)]
    rollout: Option<i64>,
}

impl TargetView {
    fn new(t: &Target) -> Self {
        let (source, rollout) = match t.source {
            TargetSource::Rollout(id) => (TargetSourceName::Rollout, Some(id)),
            TargetSource::Pin => (TargetSourceName::Pin, None),
        };
        TargetView {
            version: t.version.to_string(),
            source,
            rollout,
        }
    }
}

/// A device's pin (SPEC §9).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Pin)]
pub struct PinView {
    version: String,
    reason: String,
    /// Null: until removed.
    #[schema(format = DateTime, required = true)]
    expires_at: Option<String>,
    /// The name of the token that set it.
    set_by: String,
    #[schema(format = DateTime)]
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

/// Failed logins locked this device out from this address until then.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Lockout)]
struct LockoutJson {
    client_ip: String,
    #[schema(format = DateTime)]
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

/// Register a device
///
/// Its secret (the FTPS password) is in the answer, this once.
#[utoipa::path(
    post,
    path = "/devices",
    request_body = NewDevice,
    responses(
        (status = 201, description = "Registered.", body = Created),
        (status = 409, description = "A device with this id exists.", body = ErrorBody),
        (status = 413, description = "The body is larger than 256 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "A field is missing, unknown or invalid (the error names it).", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn create_device(
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

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only devices of this model.
    #[param(value_type = Option<ModelName>, inline)]
    model: Option<String>,
    /// Only devices carrying this label.
    label: Option<String>,
    /// Only enabled (`true`) or disabled (`false`) devices.
    #[param(value_type = Option<bool>)]
    enabled: Option<String>,
    #[serde(flatten)]
    #[param(ignore)]
    page: PageQuery,
}

/// List devices, newest first
#[utoipa::path(
    get,
    path = "/devices",
    params(ListQuery, PageQuery),
    responses((status = 200, description = "A page of devices.", body = Listing<DeviceView>)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn list_devices(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Listing<DeviceView>>, ApiError> {
    let model = filter_model(q.model.as_deref())?;
    let enabled = filter_bool("enabled", q.enabled.as_deref())?;
    let page = q.page.page()?;
    let label = q.label.as_deref().filter(|s| !s.is_empty());
    let rows = st.db.list_devices(model.as_ref(), label, enabled, page).await?;
    let (rows, next) = page.finish(rows, |d| d.seq);
    Ok(Json(Listing {
        items: rows.iter().map(DeviceView::new).collect(),
        next,
    }))
}

/// Show a device
///
/// With its current target, pin, lockouts, latest reports and downloads, and its FTPS
/// diagnostics.
#[utoipa::path(
    get,
    path = "/devices/{id}",
    params(DevicePath),
    responses(
        (status = 200, description = "The device.", body = DeviceView),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn show_device(
    _: Authorized<Viewer>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
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
    view.diagnostics = Some(CountsView::new(st.diagnostics.device(&d.id)));
    let reports = st.db.reports_of_device(&d.id, RECENT_DOWNLOADS).await?;
    view.reports = Some(reports.iter().map(super::reports::ReportView::new).collect());
    Ok(Json(view))
}

/// Disable a device
///
/// It can no longer log in; its open sessions are closed.
#[utoipa::path(
    post,
    path = "/devices/{id}/disable",
    params(DevicePath),
    responses(
        (status = 200, description = "Disabled (again, if it was).", body = DeviceView),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn disable_device(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st.services.devices.disable(&id, &who.token.name).await?;
    Ok(Json(DeviceView::new(&d)))
}

/// Enable a device
///
/// It can log in again.
#[utoipa::path(
    post,
    path = "/devices/{id}/enable",
    params(DevicePath),
    responses(
        (status = 200, description = "Enabled (again, if it was).", body = DeviceView),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn enable_device(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<Json<DeviceView>, ApiError> {
    let id = parse_path_id(&id)?;
    let d = st.services.devices.enable(&id, &who.token.name).await?;
    Ok(Json(DeviceView::new(&d)))
}

/// A device's new secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeviceSecret)]
struct NewSecret {
    #[schema(value_type = DeviceIdSchema)]
    id: DeviceId,
    /// Shown once; only its hash is stored.
    secret: String,
}

/// Give a device a new secret
///
/// The old one is refused at once and the device's open sessions are closed.
#[utoipa::path(
    post,
    path = "/devices/{id}/secret",
    params(DevicePath),
    responses(
        (status = 200, description = "The new secret.", body = NewSecret),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn new_device_secret(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<Json<NewSecret>, ApiError> {
    let id = parse_path_id(&id)?;
    let secret = st.services.devices.rotate_secret(&id, &who.token.name).await?;
    Ok(Json(NewSecret {
        id,
        secret: secret.expose().to_owned(),
    }))
}

/// Delete a device
///
/// It can no longer log in; its download records and reports stay.
#[utoipa::path(
    delete,
    path = "/devices/{id}",
    params(DevicePath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn delete_device(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.delete(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Clear a device's lockouts
///
/// Clears its failed-login lockouts from every address (5 failed logins within 5 minutes
/// lock a device and address pair for 5 minutes).
#[utoipa::path(
    delete,
    path = "/devices/{id}/lockout",
    params(DevicePath),
    responses(
        (status = 204, description = "Cleared (also when there were none)."),
        (status = 404, description = "No such device.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn unlock_device(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.unlock(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A pin to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewPin)]
struct PinBody {
    /// An existing, not yanked release of the device's model.
    #[schema(value_type = VersionName)]
    version: String,
    #[serde(default)]
    reason: String,
    /// Null or absent: until removed.
    #[serde(default)]
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Pin a device to a release
///
/// While the pin holds, the device's target is the pinned release, whatever the rollouts
/// say (its own anti-rollback still refuses a lower sequence).
#[utoipa::path(
    put,
    path = "/devices/{id}/pin",
    params(DevicePath),
    request_body = PinBody,
    responses(
        (status = 200, description = "Pinned.", body = PinView),
        (status = 404, description = "No such device.", body = ErrorBody),
        (status = 413, description = "The body is larger than 256 KiB.", body = ErrorBody),
        (status = 415, description = "The body is not `application/json`.", body = ErrorBody),
        (status = 422, description = "No such release of the device's model, a yanked one, an expiry not in the future, or a field missing, unknown or invalid.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn set_pin(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
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

/// Remove a device's pin
///
/// The rollouts decide its target again.
#[utoipa::path(
    delete,
    path = "/devices/{id}/pin",
    params(DevicePath),
    responses(
        (status = 204, description = "Removed."),
        (status = 404, description = "No such device, or it has no pin.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("admin"))),
)]
async fn clear_pin(
    who: Authorized<Admin>,
    State(st): State<AppState>,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
) -> Result<StatusCode, ApiError> {
    let id = parse_path_id(&id)?;
    st.services.devices.unpin(&id, &who.token.name).await?;
    Ok(StatusCode::NO_CONTENT)
}
