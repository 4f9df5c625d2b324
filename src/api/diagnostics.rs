//! `GET /diagnostics`: FTPS failures that otherwise look like "the IQ just didn't update" —
//! passive offers that never got a data connection, data-channel TLS failures and `421`
//! refusals — per device and per client IP, since the server started.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::AppState;
use super::auth::{Authorized, Viewer};
use crate::diagnostics::{Row, Snapshot};
use crate::domain::DeviceId;

pub fn router() -> Router<AppState> {
    Router::new().route("/diagnostics", get(show))
}

#[derive(Debug, Serialize)]
struct DiagnosticsView {
    /// What the counters mean, for whoever reads the JSON without the docs.
    about: &'static str,
    devices: Vec<Row<DeviceId>>,
    client_ips: Vec<Row<std::net::IpAddr>>,
}

async fn show(_: Authorized<Viewer>, State(st): State<AppState>) -> Json<DiagnosticsView> {
    let Snapshot { devices, client_ips } = st.diagnostics.snapshot();
    Json(DiagnosticsView {
        about: "since server start, most recent first: passive_offers_unused = a PASV reply the IQ never connected to (its firewall likely blocks last_unused_port); data_tls_failures = data connections whose TLS handshake failed; sessions_refused = connections refused with 421 (too many sessions from one address)",
        devices,
        client_ips,
    })
}
