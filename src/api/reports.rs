//! `POST /devices/{id}/reports`: an install report from the KS backend (`reporter`) or an
//! admin (SPEC §7); the same rules as a `STOR /report.json` over FTPS.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Reporter};
use super::devices::{DevicePath, parse_path_id};
use super::error::{ApiError, ApiPath, ErrorBody};
use super::openapi::{DeviceIdSchema, VersionName};
use crate::db::reports::ReportRow;
use crate::domain::{DeviceId, ReportOutcome, format_ms};
use crate::services::reports::Source;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(create_report))
}

/// A stored install report as SPEC §7 shows it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Report)]
pub struct ReportView {
    id: i64,
    #[schema(value_type = DeviceIdSchema)]
    device: DeviceId,
    version: String,
    outcome: ReportOutcome,
    #[schema(required = true)]
    detail: Option<String>,
    #[schema(format = DateTime)]
    at: String,
    /// `ftps` (the IQ's `STOR /report.json`) or `api`.
    #[schema(value_type = ReportSource)]
    source: String,
    /// The IQ's address over FTPS, the caller's over HTTP (empty when unknown).
    client_ip: String,
    node: String,
}

/// Where a report came from.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)] // describes `ReportRow::source`, which is stored as text
enum ReportSource {
    Ftps,
    Api,
}

/// An install report, as the IQ would `STOR` it to `/report.json`: a JSON object of at most
/// 4 KiB with exactly these fields.
#[derive(ToSchema)]
#[schema(as = NewReport)]
#[allow(dead_code)] // describes the body `services::reports` parses from the raw bytes
struct ReportBody {
    /// A release of the device's model, yanked or not.
    #[schema(value_type = VersionName)]
    version: String,
    outcome: ReportOutcome,
    /// At most 1 KiB.
    #[schema(max_length = 1024)]
    detail: Option<String>,
}

impl ReportView {
    pub fn new(r: &ReportRow) -> Self {
        ReportView {
            id: r.id,
            device: r.device,
            version: r.version.to_string(),
            outcome: r.outcome,
            detail: r.detail.clone(),
            at: format_ms(r.at),
            source: r.source.clone(),
            client_ip: r.client_ip.clone(),
            node: r.node.clone(),
        }
    }
}

/// The caller's address, when the server knows it (not through `oneshot`).
pub struct ClientIp(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ))
    }
}

/// Post an install report for a device
///
/// What the KS backend says for an IQ (the same rules as the IQ's own `STOR /report.json`
/// over FTPS). The device's `installed_version` follows its latest `installed` report; a
/// staged rollout counts it.
#[utoipa::path(
    post,
    path = "/devices/{id}/reports",
    params(DevicePath),
    request_body(content = ReportBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored.", body = ReportView),
        (status = 404, description = "No such device.", body = ErrorBody),
        (status = 422, description = "Not a JSON object of exactly `version`, `outcome` and an optional `detail`, over 4 KiB (also one over the 256 KiB body limit), a `detail` over 1 KiB, or a version that is no release of the device's model; nothing is stored.", body = ErrorBody),
    ),
    extensions(("x-fwdist-role" = json!("reporter"))),
)]
async fn create_report(
    _: Authorized<Reporter>,
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(DevicePath { id }): ApiPath<DevicePath>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ReportView>), ApiError> {
    // SPEC §7: a report too large is a 422 over HTTP, whatever layer noticed it.
    let body = body.map_err(|r| match ApiError::from(r) {
        ApiError::PayloadTooLarge(m) => ApiError::Unprocessable(m),
        other => other,
    })?;
    let id = parse_path_id(&id)?;
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let stored = st
        .services
        .reports
        .submit(&id, None, &body, Source::Api, ip)
        .await?;
    Ok((StatusCode::CREATED, Json(ReportView::new(&stored))))
}
