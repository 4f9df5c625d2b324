//! `POST /devices/{id}/reports`: an install report from the KS backend (`reporter`) or an
//! admin (SPEC §7); the same rules as a `STOR /report.json` over FTPS.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::auth::{Authorized, Reporter};
use super::devices::parse_path_id;
use super::error::{ApiError, ApiPath};
use crate::db::reports::ReportRow;
use crate::domain::{DeviceId, ReportOutcome, format_ms};
use crate::services::reports::Source;

pub fn router() -> Router<AppState> {
    Router::new().route("/devices/{id}/reports", post(create))
}

/// A stored report as SPEC §7 shows it.
#[derive(Debug, Serialize)]
pub struct ReportView {
    id: i64,
    device: DeviceId,
    version: String,
    outcome: ReportOutcome,
    detail: Option<String>,
    at: String,
    source: String,
    client_ip: String,
    node: String,
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

async fn create(
    _: Authorized<Reporter>,
    State(st): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiPath(id): ApiPath<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<ReportView>), ApiError> {
    let id = parse_path_id(&id)?;
    let ip = ip.map(|i| i.to_string()).unwrap_or_default();
    let stored = st
        .services
        .reports
        .submit(&id, None, &body, Source::Api, ip)
        .await?;
    Ok((StatusCode::CREATED, Json(ReportView::new(&stored))))
}
