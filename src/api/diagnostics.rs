//! `GET /diagnostics`: FTPS failures that otherwise look like "the IQ just didn't update" —
//! passive offers that never got a data connection, data-channel TLS failures and `421`
//! refusals — per device and per client IP, since the server started.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::auth::{Authorized, Viewer};
use super::openapi::DeviceIdSchema;
use crate::diagnostics::{Counts, Row, Snapshot};
use crate::domain::{DeviceId, format_ms};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(show_diagnostics))
}

/// FTPS failures counted since the server started, most recent first.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Diagnostics)]
struct DiagnosticsView {
    /// What the counters mean, for whoever reads the JSON without the docs.
    about: &'static str,
    devices: Vec<DeviceRow>,
    client_ips: Vec<AddressRow>,
}

/// The counts of one device.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DeviceDiagnostics)]
struct DeviceRow {
    #[schema(value_type = DeviceIdSchema)]
    key: DeviceId,
    #[serde(flatten)]
    counts: CountsView,
}

/// The counts of one client address.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AddressDiagnostics)]
struct AddressRow {
    /// The client's IP address.
    #[schema(value_type = String)]
    key: std::net::IpAddr,
    #[serde(flatten)]
    counts: CountsView,
}

/// What went wrong, and when it last did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = DiagnosticCounts)]
pub struct CountsView {
    /// `227` sent, but no data connection arrived within `ftps.data_connect_timeout_secs`.
    passive_offers_unused: u64,
    /// A data connection arrived but its TLS handshake failed or never started.
    data_tls_failures: u64,
    /// A data connection from the session's address that did not resume the control
    /// connection's TLS session.
    data_connections_unbound: u64,
    /// Sessions refused at connect with `421` (`ftps.max_sessions_per_ip`).
    sessions_refused: u64,
    /// The last passive port that went unused (the one to check in the site's firewall).
    #[schema(required = true)]
    last_unused_port: Option<u16>,
    /// When the last of these happened (null: never).
    #[schema(format = DateTime, required = true)]
    last_at: Option<String>,
}

impl CountsView {
    pub fn new(c: Counts) -> Self {
        // Destructured whole: a new counter cannot be left out of the answer.
        let Counts {
            passive_offers_unused,
            data_tls_failures,
            data_connections_unbound,
            sessions_refused,
            last_unused_port,
            last_at,
        } = c;
        CountsView {
            passive_offers_unused,
            data_tls_failures,
            data_connections_unbound,
            sessions_refused,
            last_unused_port,
            last_at: last_at.map(format_ms),
        }
    }
}

/// FTPS failures per device and per client address
///
/// Since the server started, most recent first: passive offers the IQ never connected to
/// (with the port: its firewall likely blocks it), data-channel TLS failures, data
/// connections that did not resume the control connection's TLS session, and `421`
/// refusals.
#[utoipa::path(
    get,
    path = "/diagnostics",
    responses((status = 200, description = "The counts.", body = DiagnosticsView)),
    extensions(("x-fwdist-role" = json!("viewer"))),
)]
async fn show_diagnostics(_: Authorized<Viewer>, State(st): State<AppState>) -> Json<DiagnosticsView> {
    let Snapshot { devices, client_ips } = st.diagnostics.snapshot();
    Json(DiagnosticsView {
        about: "since server start, most recent first: passive_offers_unused = a PASV reply the IQ never connected to (its firewall likely blocks last_unused_port); data_tls_failures = data connections whose TLS handshake failed; sessions_refused = connections refused with 421 (too many sessions from one address)",
        devices: devices
            .into_iter()
            .map(|Row { key, counts }| DeviceRow {
                key,
                counts: CountsView::new(counts),
            })
            .collect(),
        client_ips: client_ips
            .into_iter()
            .map(|Row { key, counts }| AddressRow {
                key,
                counts: CountsView::new(counts),
            })
            .collect(),
    })
}
